"""Pieces the knowledge-distillation baselines (RD, CD, BD; ALGORITHMS.md section 4) share: ranks and top lists
over each user's unobserved items (training items set to -inf, never multiplied by 0), a frozen copy of the
teacher, a pair sampler that attaches per-pair distillation items to the usual (u, i, j) triples, typed options,
and the training wrapper that selects the epoch on validation and reports test like `train_base_model`.

Ranks here are 0-based (the top item has rank 0), as in the evaluator (ALGORITHMS.md section 6)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from data_owner.config import BATCH_SIZE
from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import DEFAULT_KS, TeacherRun, test_result, validation_result
from shared.interactions import ItemSets
from shared.losses import soft_targets
from shared.models import PairBatch, Recommender
from shared.sampling import sample_negatives
from shared.training import TrainConfig, fit

log = logging.getLogger(__name__)

# Upper bound on the elements of one [users, n_items] score block materialised at once.
SCORE_BLOCK_ELEMENTS = 1 << 22

OptionsT = TypeVar("OptionsT")


def options_from(cls: type[OptionsT], options: dict[str, Any] | None) -> OptionsT:
    """The frozen options dataclass `cls` with its defaults overridden by `options` (unknown keys refused)."""
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; known: {sorted(known)}")
    return cls(**options)


def frozen_copy(model: Recommender, device: torch.device | str) -> Recommender:
    """A deep copy of `model` on `device`, in eval mode, with gradients off: the caller's model is never touched
    (not even moved or switched to eval mode)."""
    twin = copy.deepcopy(model).to(device)
    twin.eval()
    twin.requires_grad_(False)
    return twin


def _block_users(n_items: int) -> int:
    return max(1, SCORE_BLOCK_ELEMENTS // max(1, n_items))


def mask_observed(scores: torch.Tensor, users: np.ndarray, observed: ItemSets) -> torch.Tensor:
    """Set scores[k, i] = -inf for every training item i of users[k] (in place; returns `scores`).

    scores: [B, n_items] float; users: int64 [B]. -inf keeps a masked item below every real score whatever the
    sign of the logits (multiplying by 0 would not: a negative logit would then rank below a masked item)."""
    rows, cols = observed.gather(np.asarray(users, dtype=np.int64))
    scores[torch.as_tensor(rows, device=scores.device), torch.as_tensor(cols, device=scores.device)] = -torch.inf
    return scores


def full_ranks(scores: torch.Tensor) -> torch.Tensor:
    """0-based descending rank of every entry within its row: [B, n] float -> int64 [B, n] (0 = highest score).

    Ties are broken by item index (stable sort), so the ranks of a row are a permutation of 0..n-1."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def min_unobserved(observed: ItemSets) -> int:
    """The smallest number of items any user has not interacted with in training."""
    return int(observed.n_items - observed.lengths().max(initial=0))


@torch.no_grad()
def top_unobserved(
    score_all: Callable[[torch.Tensor], torch.Tensor],
    observed: ItemSets,
    k: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Each user's top-k items outside its training items, best first: int64 [n_users, k].

    score_all: users [B] (int64 on `device`) -> logits [B, n_items]; computed in blocks of users, once."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if k > min_unobserved(observed):
        raise ValueError(
            f"a top-{k} list of unobserved items is impossible: some user has only {min_unobserved(observed)} "
            f"items outside its training set; choose k <= {min_unobserved(observed)}"
        )
    out = np.empty((observed.n_users, k), dtype=np.int64)
    step = _block_users(observed.n_items)
    for start in range(0, observed.n_users, step):
        users = np.arange(start, min(start + step, observed.n_users), dtype=np.int64)
        scores = mask_observed(score_all(torch.as_tensor(users, device=device)).float(), users, observed)
        out[users] = torch.topk(scores, k, dim=1).indices.cpu().numpy()
    return out


def soft_label_bce(learner_logits: torch.Tensor, other_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean BCE between sigmoid(learner_logits) and the soft label q = sigmoid(other_logits / t) (CD's and BD's
    distillation term; the learner's logit is not divided by t). Equal shapes; `other_logits` carry no grad."""
    return F.binary_cross_entropy_with_logits(learner_logits, soft_targets(other_logits.detach(), temperature))


def _move(value: Any, device: torch.device | str) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor | PairBatch) else value


@dataclass(frozen=True)
class KDBatch:
    """A raw training batch (the L_CF triples) plus, aligned with its rows, the tensors a KD term needs.

    raw: (user, positive, uniform negative) int64 [B] each; kd_items: int64 [B, m] items whose KD term is
    computed for raw.users; extra: method-specific tensors with a leading [B] dimension (or None)."""

    raw: PairBatch
    kd_items: torch.Tensor
    extra: dict[str, torch.Tensor | None] = dataclasses.field(default_factory=dict)

    def to(self, device: torch.device | str) -> KDBatch:
        extra = {name: _move(value, device) for name, value in self.extra.items()}
        return KDBatch(self.raw.to(device), self.kd_items.to(device), extra)


class PairKDSampler:
    """Every training pair once per epoch, shuffled, with one uniform negative outside the user's training items
    (the same L_CF batches as `shared.sampling.TripletSampler`), and per pair the items of the KD term.

    Subclasses implement `start_epoch(epoch, rng)` (refresh lists or pools) and `kd_for(pairs, users, epoch,
    rng) -> (kd_items [B, m] int64 array, extra dict)`, where `pairs` are the indices of the batch's pairs in
    CSR order of `train` (pair p belongs to user `train.user_of_each_entry()[p]`). The KD items are separate
    draws from the BPR negative (one of BD's public-code pitfalls is to reuse one for both)."""

    def __init__(self, train: ItemSets, batch_size: int = BATCH_SIZE) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if train.nnz == 0:
            raise ValueError("no training interactions to sample from")
        self.train = train
        self.batch_size = batch_size
        self.pair_users, self.pair_items = train.to_pairs()

    def __len__(self) -> int:
        return -(-self.pair_users.size // self.batch_size)

    def start_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        """Called once before each epoch's batches (epochs count from 1)."""

    def kd_for(
        self, pairs: np.ndarray, users: np.ndarray, epoch: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, torch.Tensor | None]]:
        raise NotImplementedError

    def __call__(self, epoch: int, rng: np.random.Generator) -> Iterator[KDBatch]:
        self.start_epoch(epoch, rng)
        order = rng.permutation(self.pair_users.size)
        users, items = self.pair_users[order], self.pair_items[order]
        negatives = sample_negatives(users, self.train, rng)
        for start in range(0, users.size, self.batch_size):
            sl = slice(start, start + self.batch_size)
            raw = PairBatch(torch.from_numpy(users[sl]), torch.from_numpy(items[sl]), torch.from_numpy(negatives[sl]))
            kd_items, extra = self.kd_for(order[sl], users[sl], epoch, rng)
            yield KDBatch(raw, torch.from_numpy(np.ascontiguousarray(kd_items, dtype=np.int64)), extra)


def fit_and_report(
    model: torch.nn.Module,
    student: Recommender,
    split: LeaveOneOutSplit,
    sampler: Callable[[int, np.random.Generator], Any],
    loss_fn: Callable[[Any], torch.Tensor],
    train_config: TrainConfig,
    device: torch.device | str,
    description: str,
) -> TeacherRun:
    """`fit(model, ...)` with the epoch selected on the student's validation HR/NDCG (full ranking, training items
    excluded), then the student's validation and test metrics, as `train_base_model` reports them.

    `model` is what the optimiser trains: the student itself, or a module holding the student and a teacher copy
    (BD), whose weights are then restored together at the student's best epoch."""
    result = fit(
        model,
        sampler,
        lambda: validation_result(student, split, DEFAULT_KS).metrics,
        train_config,
        loss_fn=loss_fn,
        device=device,
        description=description,
    )
    valid = validation_result(student, split, DEFAULT_KS).metrics
    test = test_result(student, split, DEFAULT_KS).metrics
    log.info("%s: best epoch %d, valid HR@50 %.4f, test HR@50 %.4f NDCG@50 %.4f", description, result.best_epoch,
             valid["HR@50"], test["HR@50"], test["NDCG@50"])
    return TeacherRun(model=student, train=result, valid=valid, test=test)
