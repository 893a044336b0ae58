"""A small training loop that knows nothing about the model: epochs of batches, a loss, Adam, periodic
validation with early stopping (patience) on one metric, the best weights restored at the end, a NaN guard that
says what to do, a tqdm bar that callers can turn off, and explicit seeds.

With `TrainConfig.checkpoint_dir` set, a run survives interruption: at the end of an epoch, at most every
`checkpoint_every_s` seconds, the loop state is written to `<dir>/<description>-<hash>.pt` (the weights, the
optimiser's moments, the best weights so far, the early-stopping counter, the numpy and torch random states (CPU and
the training device's CUDA generator) and, when the batch source has `state_dict()` / `load_state_dict()`, its
state). The hash keys the file by the description, the settings, the model's shapes and the caller's `identity`
(whatever else decides the result, e.g. the training data's hash). Called again with the same settings, `fit`
continues after the last saved epoch and ends exactly as an uninterrupted run would. A finished run leaves a final
record, so a chain of fits (NeuMF pre-training) repeats none that finished; the caller removes the folder once the
whole stage is kept.

Under `torchrun` (an initialised process group, `shared.distributed`), the loop trains data-parallel: every rank draws
the same batches from the same seed and computes the loss on its rows of each batch, scaled so that the gradients
averaged over the ranks are the whole batch's (`shared.distributed.GradientAverager`); the replicas start from rank
0's weights and stay identical. Rank 0 alone validates (the metrics, and so every early-stopping decision, are
broadcast), reads and writes the checkpoint (the others get its state from it and wait while it writes) and shows the
progress bar. Without a process group nothing of this runs and the loop is the single-process one."""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from shared import distributed
from shared.checkpoint import atomic_torch_save
from shared.optim import LazyAdam

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
    checkpoint_dir: str | None = None  # None: no resumable state is written
    checkpoint_every_s: float = 300.0  # at most this often (0: every epoch); always when the run ends

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.eval_every <= 0 or self.patience < 0:
            raise ValueError("epochs and eval_every must be positive and patience non-negative")
        if self.checkpoint_every_s < 0:
            raise ValueError(f"checkpoint_every_s must be non-negative, got {self.checkpoint_every_s}")
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
    """Lazy Adam (only rows in the batch move, `shared.optim.LazyAdam`) for sparse-gradient embeddings, Adam for the
    rest."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float) -> None:
        sparse_ids = {
            id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse
        }
        sparse = [p for p in model.parameters() if id(p) in sparse_ids and p.requires_grad]
        dense = [p for p in model.parameters() if id(p) not in sparse_ids and p.requires_grad]
        self.parts: list[torch.optim.Optimizer] = []
        if sparse:
            self.parts.append(LazyAdam(sparse, lr=lr))
        if dense:
            self.parts.append(torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [part.state_dict() for part in self.parts]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        if len(states) != len(self.parts):
            raise ValueError(f"the saved optimiser has {len(states)} parts, this one {len(self.parts)}")
        for part, state in zip(self.parts, states, strict=True):
            part.load_state_dict(state)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> Any:
    """Adam for dense parameters plus lazy Adam for embeddings built with `sparse=True` (weight decay applies
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
    identity: str | None = None,
    epoch_fn: Callable[[int, np.random.Generator], float] | None = None,
) -> TrainResult:
    """Train `model` in place and restore the weights of the best validation epoch.

    batches(epoch, rng) yields batch objects with `.to(device)`; loss_fn(batch) -> scalar (default:
    `model.loss`); validate() -> metrics dict containing `config.metric` (None: no selection, keep the last).
    With `config.checkpoint_dir`, continues from a saved state of the same run (see the module's docstring);
    `identity` names what else the run depends on (data, loss weights), so that a change of it starts over.
    `epoch_fn(epoch, rng) -> mean loss`, when given, trains a whole epoch itself (a compiled per-example update that
    keeps no optimiser state, such as the owner's per-triple BPR SGD) in place of the batches, loss and optimiser;
    validation, early stopping and checkpoints are the loop's as usual. It runs in one process only.

    Parameter-free random ops of the model (dropout) draw from torch's default generators, which take no generator
    argument: the loop runs them from `config.seed` inside `torch.random.fork_rng`, so the caller's generators are
    the same after the call as before it (nothing outside the loop is reseeded)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type="cuda"):
        torch.default_generator.manual_seed(config.seed)
        if device.type == "cuda":
            torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()
                                          ].manual_seed(config.seed)
        return _fit(model, batches, validate, config, loss_fn, optimizer, device, description, identity, epoch_fn)


def _fit(
    model: nn.Module,
    batches: Callable[[int, np.random.Generator], Iterable[Batch]],
    validate: Callable[[], dict[str, float]] | None,
    config: TrainConfig,
    loss_fn: Callable[[Any], torch.Tensor] | None,
    optimizer: Any,
    device: torch.device,
    description: str,
    identity: str | None,
    epoch_fn: Callable[[int, np.random.Generator], float] | None = None,
) -> TrainResult:
    if epoch_fn is not None and distributed.is_active():
        raise ValueError(f"{description}: its per-example updates run in one process; train it without torchrun, or "
                         "with optimizer 'adam'")
    model.to(device)
    rng = np.random.default_rng(config.seed)
    loss_fn = loss_fn or model.loss  # type: ignore[assignment]
    assert loss_fn is not None
    optimizer = optimizer or make_optimizer(model, config.lr, config.weight_decay)
    averager = None
    if distributed.is_active():
        distributed.broadcast_module(model)
        averager = distributed.GradientAverager(model)
    main = distributed.is_main()
    started = time.perf_counter()
    result = TrainResult(best_epoch=0, best_metrics={})
    best_value = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    stale, first_epoch, seconds_before = 0, 1, 0.0
    store = _Checkpoint.for_run(config, description, model, identity)
    saved = distributed.on_main(store.load) if store is not None else None
    if saved is not None and saved["finished"]:
        model.load_state_dict(saved["model"])
        log.info("%s: finished before (best epoch %d), restored from %s", description, saved["best_epoch"], store)
        return _result_from(saved, seconds=saved["seconds"])
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if saved["batches"] is not None:
            batches.load_state_dict(saved["batches"])  # type: ignore[attr-defined]
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        _restore_device_rng(saved, device, description)
        result = _result_from(saved, seconds=0.0)
        best_value, best_state, stale = saved["best_value"], saved["best_state"], saved["stale"]
        first_epoch, seconds_before = saved["epoch"] + 1, saved["seconds"]
        log.info(
            "%s: resuming after epoch %d (best so far %d) from %s",
            description,
            saved["epoch"],
            result.best_epoch,
            store,
        )
    elif validate is not None:
        best_metrics = _validated(model, validate, config.metric)
        best_value, result.best_metrics = best_metrics[config.metric], best_metrics
        best_state = copy.deepcopy(model.state_dict())
    last_save = time.perf_counter()
    bar = tqdm(range(first_epoch, config.epochs + 1), desc=description, disable=not (config.progress and main),
               leave=False)
    for epoch in bar:
        model.train()
        total, steps = 0.0, 0
        if epoch_fn is not None:
            total, steps = epoch_fn(epoch, rng), 1
            if not math.isfinite(total):
                raise FloatingPointError(
                    f"{description}: the loss became {total} at epoch {epoch}; the model diverged. Try a lower "
                    f"learning rate (now {config.lr}) or a stronger L2 regularisation.")
        for batch in (() if epoch_fn is not None else batches(epoch, rng)):
            if averager is not None:
                total += _data_parallel_step(batch, loss_fn, optimizer, averager, device, config, description, epoch,
                                             steps + 1)
                steps += 1
                continue
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
            log.log(
                logging.INFO if main else logging.DEBUG,
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
        if store is not None and epoch < config.epochs and distributed.broadcast_object(
                time.perf_counter() - last_save >= config.checkpoint_every_s):
            distributed.on_main(partial(
                store.save,
                {
                    "finished": False,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "batches": batches.state_dict() if hasattr(batches, "state_dict") else None,  # type: ignore[attr-defined]
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "device_type": device.type,
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "best_value": best_value,
                    "best_state": best_state,
                    "stale": stale,
                    "seconds": seconds_before + time.perf_counter() - started,
                    **_result_fields(result),
                },
            ))
            last_save = time.perf_counter()
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = result.epochs_run
    result.seconds = seconds_before + time.perf_counter() - started
    if store is not None:
        final = {"finished": True, "model": model.state_dict(), "seconds": result.seconds, **_result_fields(result)}
        distributed.on_main(partial(store.save, final))
    return result


def _data_parallel_step(batch: Any, loss_fn: Callable[[Any], torch.Tensor], optimizer: Any,
                        averager: distributed.GradientAverager, device: torch.device, config: TrainConfig,
                        description: str, epoch: int, step: int) -> float:
    """One optimiser step of data-parallel training: this rank's rows of `batch`, its loss scaled by its share of the
    rows, gradients averaged over the ranks, the same step on every replica. Returns the whole batch's loss."""
    rank, world = distributed.rank(), distributed.world_size()
    rows = distributed.batch_rows(batch)
    local = distributed.shard_batch(batch, rank, world)
    local_rows = distributed.batch_rows(local)
    optimizer.zero_grad(set_to_none=True)
    loss = None
    if local_rows:
        loss = loss_fn(local.to(device)) * distributed.shard_weight(local_rows, rows, world)
        loss.backward()
    value = averager.average(loss, device)
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{description}: the loss became {value} at epoch {epoch}, step {step}; the model diverged. Try a lower "
            f"learning rate (now {config.lr}) or a stronger L2 regularisation."
        )
    optimizer.step()
    return value


def _result_fields(result: TrainResult) -> dict[str, Any]:
    return {
        "best_epoch": result.best_epoch,
        "best_metrics": result.best_metrics,
        "history": result.history,
        "stopped_early": result.stopped_early,
    }


def _result_from(saved: dict[str, Any], seconds: float) -> TrainResult:
    return TrainResult(
        best_epoch=saved["best_epoch"],
        best_metrics=dict(saved["best_metrics"]),
        history=[dict(h) for h in saved["history"]],
        seconds=seconds,
        stopped_early=saved["stopped_early"],
    )


def _restore_device_rng(saved: dict[str, Any], device: torch.device, description: str) -> None:
    """The CUDA generator (dropout and other random ops on the GPU) as it was saved; a state saved on another kind
    of device cannot be carried over, so that continuation is valid but not bit-identical to an unbroken run."""
    saved_type = saved.get("device_type")
    if saved_type is not None and saved_type != device.type:
        log.warning("%s: the saved state was trained on %s, this run is on %s; the rest of the run follows other "
                    "random draws than an uninterrupted run would", description, saved_type, device.type)
    elif device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], device)


class _Checkpoint:
    """One run's resumable state in one file, written through a temporary file (an interrupted write leaves the
    previous state whole); a file written by a run with other settings or another model is ignored."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path, self.fingerprint = path, fingerprint

    @classmethod
    def for_run(cls, config: TrainConfig, description: str, model: nn.Module,
                identity: str | None = None) -> _Checkpoint | None:
        if config.checkpoint_dir is None:
            return None
        settings = {
            k: v for k, v in asdict(config).items() if k not in ("progress", "checkpoint_dir", "checkpoint_every_s")
        }
        shapes = [(name, list(t.shape)) for name, t in model.state_dict().items()]
        key: tuple[Any, ...] = (description, sorted(settings.items()), shapes)
        if identity is not None:
            key += (identity,)
        fingerprint = hashlib.sha256(repr(key).encode()).hexdigest()
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", description).strip("-")[:60] or "train"
        return cls(Path(config.checkpoint_dir) / f"{name}-{fingerprint[:12]}.pt", fingerprint)

    def __str__(self) -> str:
        return str(self.path)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file must not stop a run that can start over
            log.warning("%s: unreadable training checkpoint (%s), starting over", self.path, exc)
            return None
        if saved.get("fingerprint") != self.fingerprint:
            log.warning("%s was written by a run with other settings; starting over", self.path)
            return None
        return saved

    def save(self, state: dict[str, Any]) -> None:
        atomic_torch_save(self.path, {"fingerprint": self.fingerprint, **state})


def _validated(model: nn.Module, validate: Callable[[], dict[str, float]], metric: str) -> dict[str, float]:
    """validate() in eval mode; data-parallel, on rank 0, its metrics handed to every rank."""
    model.eval()
    metrics = distributed.on_main(validate)
    if metric not in metrics:
        raise KeyError(f"validation returned {sorted(metrics)}, which lacks the selection metric {metric!r}")
    return metrics
