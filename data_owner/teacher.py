"""Teacher training on the owner's raw data (L_CF), model selection on the validation item, test evaluation.

The GD continuation (L_T = L_CF + L_GF on raw + generated pairs, Algorithm 1) builds on these pieces."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from typing import Any

import numpy as np
import torch

from data_owner.config import BATCH_SIZE, Pretraining
from data_owner.data.split import LeaveOneOutSplit
from shared.distributed import is_main
from shared.evaluation import EvalResult, evaluate
from shared.interactions import ItemSets
from shared.models import NeuMF, PairBatch, Recommender, build_model
from shared.sampling import TripletSampler
from shared.training import TrainConfig, TrainResult, fit

log = logging.getLogger(__name__)

DEFAULT_KS = (5, 10, 20, 50)


def validation_result(model: Recommender, split: LeaveOneOutSplit, ks: Sequence[int] = DEFAULT_KS) -> EvalResult:
    """Full ranking of each user's validation item, training items excluded (the test item stays a candidate)."""
    users = split.eval_users
    return evaluate(model.score_all, users, split.valid_item[users], exclude=[split.train], ks=ks, device=model.device)


def test_result(model: Recommender, split: LeaveOneOutSplit, ks: Sequence[int] = DEFAULT_KS) -> EvalResult:
    """Full ranking of each user's test item, training items and the validation item excluded."""
    users = split.eval_users
    return evaluate(
        model.score_all,
        users,
        split.test_item[users],
        exclude=[split.train],
        exclude_items=[split.valid_item],
        ks=ks,
        device=model.device,
    )


@dataclass
class TeacherRun:
    model: Recommender
    train: TrainResult
    valid: dict[str, float]
    test: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


def train_base_model(
    split: LeaveOneOutSplit,
    family: str,
    model_config: dict[str, Any],
    train_config: TrainConfig,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
    ks: Sequence[int] = DEFAULT_KS,
    pretrain: Pretraining | None = None,
    pairs_per_epoch: int | None = None,
    optimizer: str = "adam",
    negatives: str = "uniform",
) -> TeacherRun:
    """Train a BPR/NeuMF model on the raw training pairs, select the epoch on validation, report test.
    `pairs_per_epoch` (None: every pair) caps each epoch at that many pairs drawn afresh (`TripletSampler`).
    `optimizer` "adam" trains on batches of `batch_size` triples, "sgd" by BPR's per-triple SGD with `negatives`
    (`fit_on_pairs`).

    `pretrain` (NeuMF only, see `Pretraining`): the GMF and MLP branches are trained alone first with
    `train_config` and their own early stopping, then NeuMF from them. The branches' metrics are kept in `extra`."""
    extra: dict[str, Any] = {}
    if pretrain is not None:
        if family != "neumf":
            raise ValueError(f"pre-training is defined for NeuMF only, not {family!r}")
        config = dict(model_config)
        reg = config.get("reg", 1e-5)
        branches = {
            "gmf": {"dim": config.get("dim_gmf", 32), "reg": reg if pretrain.gmf_reg is None else pretrain.gmf_reg},
            "mlp": {"dim": config.get("dim_mlp", 32), "hidden": list(config.get("hidden", (32, 16))),
                    "reg": reg if pretrain.mlp_reg is None else pretrain.mlp_reg},
        }
        runs = {name: train_base_model(split, name, cfg, train_config, batch_size, device, ks,
                                       pairs_per_epoch=pairs_per_epoch)
                for name, cfg in branches.items()}
        extra["pretrain"] = {name: {"config": branches[name], "valid": run.valid, "test": run.test,
                                    "best_epoch": run.train.best_epoch, "seconds": run.train.seconds}
                             for name, run in runs.items()}
        model = NeuMF.from_pretrained(runs["gmf"].model, runs["mlp"].model, alpha=pretrain.alpha, reg=reg).to(device)
        if pretrain.finetune_lr is not None:
            train_config = replace(train_config, lr=pretrain.finetune_lr)
    else:
        init = torch.Generator().manual_seed(train_config.seed)
        model = build_model(family, split.n_users, split.n_items, generator=init, **model_config).to(device)
    result = fit_on_pairs(model, split, train_config, batch_size=batch_size, device=device, ks=ks,
                          pairs_per_epoch=pairs_per_epoch, description=f"{family} d={model_config}",
                          optimizer=optimizer, negatives=negatives)
    valid = validation_result(model, split, ks).metrics
    test = test_result(model, split, ks).metrics
    if is_main():
        log.info("%s: best epoch %d, valid %s, test %s", family, result.best_epoch, valid, test)
    return TeacherRun(model=model, train=result, valid=valid, test=test, extra=extra)


def fit_on_pairs(model: Recommender, split: LeaveOneOutSplit, train_config: TrainConfig, *, batch_size: int,
                 device: torch.device | str, ks: Sequence[int] = DEFAULT_KS, pairs_per_epoch: int | None = None,
                 on_evaluation: Callable[[dict[str, float]], None] | None = None,
                 description: str = "train", optimizer: str = "adam", negatives: str = "uniform") -> TrainResult:
    """Train `model` in place on the training pairs (L_CF) with the epoch selected on the validation item;
    `on_evaluation(metrics)` sees each validation (the one before training included) and may raise to stop the
    run. The test items are not read. `optimizer` "adam": the loop's Adam on `TripletSampler` batches; "sgd" (BPR):
    per-triple SGD (`data_owner.bpr_sgd`, `negatives` "uniform" or "popularity"), on the CPU whatever `device` is (the
    model is moved back after)."""

    def validate() -> dict[str, float]:
        metrics = validation_result(model, split, ks).metrics
        if on_evaluation is not None:
            on_evaluation(metrics)
        return metrics

    if optimizer == "sgd":
        return _fit_sgd(model, split.train, validate, train_config, device, description,
                        pairs_per_epoch=pairs_per_epoch, negatives=negatives)
    if optimizer != "adam" or negatives != "uniform":
        raise ValueError(f"optimizer must be 'adam' (uniform negatives) or 'sgd', got {optimizer!r} with {negatives} "
                         "negatives")
    sampler = TripletSampler(split.train, batch_size=batch_size, pairs_per_epoch=pairs_per_epoch)
    return fit(model, sampler, validate, train_config, device=device, description=description)


def _fit_sgd(model: Recommender, train: ItemSets, validate: Callable[[], dict[str, float]],
             train_config: TrainConfig, device: torch.device | str, description: str,
             generated: ItemSets | None = None, pairs_per_epoch: int | None = None,
             negatives: str = "uniform") -> TrainResult:
    """`fit` with BPR's per-triple SGD epochs on the CPU; the model ends on `device`."""
    from data_owner.bpr_sgd import BPRSGDEpochs  # numba compiles on first use: only when asked for

    model.to("cpu")
    epochs = BPRSGDEpochs(model, train, train_config.lr, generated=generated,  # type: ignore[arg-type]
                          pairs_per_epoch=pairs_per_epoch, negatives=negatives)
    result = fit(model, None, validate, train_config, device="cpu", description=description,  # type: ignore[arg-type]
                 epoch_fn=epochs)
    model.to(device)
    return result


def popularity_scores(split: LeaveOneOutSplit) -> np.ndarray:
    """Training-set item counts: the popularity reference every recommender must beat."""
    return np.bincount(split.train.indices, minlength=split.n_items).astype(np.float32)


@dataclass(frozen=True)
class JointBatch:
    """A raw-data batch and a generated-list batch, trained together: L_T = L_CF + L_GF (`generated` None: the
    epoch's generated pairs are used up and the raw batch trains alone)."""

    raw: PairBatch
    generated: PairBatch | None

    def to(self, device: torch.device | str) -> JointBatch:
        return JointBatch(self.raw.to(device), None if self.generated is None else self.generated.to(device))


class JointSampler:
    """Every raw training pair once per epoch (or `pairs_per_epoch` of them); the generated pairs spread over at
    most as many batches (their negatives are drawn outside the user's list and training items). Batches of
    ceil(generated / raw batches) pairs can run out a batch or more early; the last raw batches then come alone."""

    def __init__(self, train: ItemSets, generated: ItemSets, batch_size: int,
                 pairs_per_epoch: int | None = None) -> None:
        self.raw = TripletSampler(train, batch_size=batch_size, pairs_per_epoch=pairs_per_epoch)
        exclude = ItemSets.from_pairs(
            np.concatenate([train.user_of_each_entry(), generated.user_of_each_entry()]),
            np.concatenate([train.indices, generated.indices]),
            train.n_users,
            train.n_items,
        )
        gen_batch = -(-generated.nnz // len(self.raw))
        self.generated = TripletSampler(generated, batch_size=max(1, gen_batch), exclude=exclude)

    def __call__(self, epoch: int, rng: np.random.Generator):
        for raw, gen in zip_longest(self.raw(epoch, rng), self.generated(epoch, rng)):
            assert raw is not None, "the generated pairs never take more batches than the raw ones"
            yield JointBatch(raw, gen)


def continue_on_generated(
    teacher: Recommender,
    split: LeaveOneOutSplit,
    generated: ItemSets,
    train_config: TrainConfig,
    batch_size: int = BATCH_SIZE,
    ks: Sequence[int] = DEFAULT_KS,
    pairs_per_epoch: int | None = None,
    optimizer: str = "adam",
    negatives: str = "uniform",
) -> TeacherRun:
    """The GD teacher (Algorithm 1): a copy of the raw-data teacher trained further on raw + generated pairs,
    L_T = L_CF + L_GF, selected on validation. The input teacher is left untouched (it is the KD teacher).
    `pairs_per_epoch` caps the raw pairs of an epoch as in `train_base_model`. `optimizer` "sgd" (BPR) continues by
    per-triple SGD on pairs drawn from the raw and generated ones together (under a cap, an epoch takes
    `pairs_per_epoch` plus the number of generated pairs steps)."""
    model = copy.deepcopy(teacher)
    if optimizer == "sgd":
        device = model.device
        capped = None if pairs_per_epoch is None else pairs_per_epoch + generated.nnz
        result = _fit_sgd(model, split.train, lambda: validation_result(model, split, ks).metrics, train_config,
                          device, "GD teacher", generated=generated, pairs_per_epoch=capped, negatives=negatives)
        return TeacherRun(model=model, train=result, valid=validation_result(model, split, ks).metrics,
                          test=test_result(model, split, ks).metrics)
    sampler = JointSampler(split.train, generated, batch_size, pairs_per_epoch)

    def loss_fn(batch: JointBatch) -> torch.Tensor:
        raw = model.loss(batch.raw)
        return raw if batch.generated is None else raw + model.loss(batch.generated)

    result = fit(model, sampler, lambda: validation_result(model, split, ks).metrics, train_config,
                 loss_fn=loss_fn, device=model.device, description="GD teacher")
    return TeacherRun(model=model, train=result, valid=validation_result(model, split, ks).metrics,
                      test=test_result(model, split, ks).metrics)
