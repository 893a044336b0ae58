"""A small training loop that knows nothing about the model: epochs of batches, a loss, Adam, periodic
validation with early stopping (patience) on one metric, the best weights restored at the end, a NaN guard that
says what to do, a tqdm bar that callers can turn off, and explicit seeds."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class Batch(Protocol):
    def to(self, device: torch.device | str) -> Any: ...


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 1
    patience: int = 10  # evaluations without improvement before stopping; 0 = never stop early
    metric: str = "NDCG@50"
    min_delta: float = 0.0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.eval_every <= 0 or self.patience < 0:
            raise ValueError("epochs and eval_every must be positive and patience non-negative")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class TrainResult:
    best_epoch: int  # 0 = the weights before training were best
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0


class _Optimizers:
    """SparseAdam (lazy Adam: only rows in the batch move) for sparse-gradient embeddings, Adam for the rest."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float) -> None:
        sparse_ids = {
            id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse
        }
        sparse = [p for p in model.parameters() if id(p) in sparse_ids and p.requires_grad]
        dense = [p for p in model.parameters() if id(p) not in sparse_ids and p.requires_grad]
        self.parts: list[torch.optim.Optimizer] = []
        if sparse:
            self.parts.append(torch.optim.SparseAdam(sparse, lr=lr))
        if dense:
            self.parts.append(torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> Any:
    """Adam for dense parameters plus SparseAdam for embeddings built with `sparse=True` (weight decay applies
    to the dense part only; embeddings are regularised by the models' own L2 term on the batch)."""
    return _Optimizers(model, lr, weight_decay)


def fit(
    model: nn.Module,
    batches: Callable[[int, np.random.Generator], Iterable[Batch]],
    validate: Callable[[], dict[str, float]] | None,
    config: TrainConfig,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: Any = None,
    device: torch.device | str | None = None,
    description: str = "train",
) -> TrainResult:
    """Train `model` in place and restore the weights of the best validation epoch.

    batches(epoch, rng) yields batch objects with `.to(device)`; loss_fn(batch) -> scalar (default:
    `model.loss`); validate() -> metrics dict containing `config.metric` (None: no selection, keep the last)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)  # parameter-free ops only (e.g. dropout); inits are the caller's
    loss_fn = loss_fn or model.loss  # type: ignore[assignment]
    assert loss_fn is not None
    optimizer = optimizer or make_optimizer(model, config.lr, config.weight_decay)
    started = time.perf_counter()
    result = TrainResult(best_epoch=0, best_metrics={})
    best_value = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    if validate is not None:
        best_metrics = _validated(model, validate, config.metric)
        best_value, result.best_metrics = best_metrics[config.metric], best_metrics
        best_state = copy.deepcopy(model.state_dict())
    stale = 0
    bar = tqdm(range(1, config.epochs + 1), desc=description, disable=not config.progress, leave=False)
    for epoch in bar:
        model.train()
        total, steps = 0.0, 0
        for batch in batches(epoch, rng):
            loss = loss_fn(batch.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{description}: the loss became {loss.item()} at epoch {epoch}, step {steps + 1}; the model "
                    f"diverged. Try a lower learning rate (now {config.lr}) or a stronger L2 regularisation."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            steps += 1
        record: dict[str, float] = {"epoch": epoch, "loss": total / max(steps, 1)}
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            metrics = _validated(model, validate, config.metric)
            record.update(metrics)
            if metrics[config.metric] > best_value + config.min_delta:
                best_value, result.best_epoch, result.best_metrics = metrics[config.metric], epoch, metrics
                best_state = copy.deepcopy(model.state_dict())
                stale = 0
            else:
                stale += 1
            bar.set_postfix(loss=f"{record['loss']:.4f}", **{config.metric: f"{metrics[config.metric]:.4f}"})
            log.info(
                "%s epoch %d loss %.4f %s %.4f",
                description,
                epoch,
                record["loss"],
                config.metric,
                metrics[config.metric],
            )
        result.history.append(record)
        if validate is not None and config.patience and stale >= config.patience:
            result.stopped_early = True
            log.info(
                "%s: no %s gain in %d evaluations, stopping at epoch %d (best %d)",
                description,
                config.metric,
                stale,
                epoch,
                result.best_epoch,
            )
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = result.epochs_run
    result.seconds = time.perf_counter() - started
    return result


def _validated(model: nn.Module, validate: Callable[[], dict[str, float]], metric: str) -> dict[str, float]:
    model.eval()
    metrics = validate()
    if metric not in metrics:
        raise KeyError(f"validation returned {sorted(metrics)}, which lacks the selection metric {metric!r}")
    return metrics
