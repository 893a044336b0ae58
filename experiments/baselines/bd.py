"""Bidirectional Distillation (Kweon, Kang & Yu, WWW 2021, "Bidirectional Distillation for Top-K Recommender
System"; authors' notebooks WonbinKweon/BD_WWW2021; ALGORITHMS.md section 4).

A copy of the teacher and the student are trained together, each with its own base loss plus a distillation term
towards the other (paper eq. 5-6):

    L_S = L_CF(S) + kd_weight         * BCE(s^S_uj, sigmoid(s^T_uj / t)),   j ~ p_S(j | u)
    L_T = L_CF(T) + teacher_kd_weight * BCE(s^T_uj, sigmoid(s^S_uj / t)),   j ~ p_T(j | u)

(the learner's own logit is not divided by t; the other model's logit is a detached target) with the
rank-discrepancy-aware sampling of eq. 7-8 over the user's unobserved items, recomputed every `refresh_every`
epochs from both models' full 0-based rankings (rank 0 = top):

    p_S(j) ~ tanh(max(eps_s * (rank_S(j) - rank_T(j)), 0))   items the teacher ranks higher than the student
    p_T(j) ~ exp(eps_t * (rank_T(j) - rank_S(j)))             items the student ranks higher, mildly favoured

Unlike the authors' notebook: training items get probability 0 (their scores are set to -inf before ranking,
not multiplied by 0, and their weights are zeroed), each pair's KD items are drawn separately from its BPR/BCE
negative, and the metrics are the harness's (0-based ranks, HR@K counts ranks 0..K-1). Per training pair and
epoch, `kd_items` items are drawn for each direction (the notebook draws a number proportional to the user's
positives, as this does). If a user's student weights are all zero (the two rankings agree on every unobserved
item), its student draws fall back to uniform over its unobserved items. Both models are optimised with the
train config's learning rate (fresh Adam state; the teacher copy keeps its own L2 `reg`); the notebook's separate
pre-training of the student before distillation is not reproduced: the student starts from scratch."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from data_owner.config import BATCH_SIZE
from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import DEFAULT_KS, TeacherRun, test_result, validation_result
from experiments.baselines.common import (
    SCORE_BLOCK_ELEMENTS,
    KDBatch,
    PairKDSampler,
    fit_and_report,
    full_ranks,
    mask_observed,
    soft_label_bce,
)
from shared.interactions import ItemSets
from shared.models import Recommender, build_model
from shared.training import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BDOptions:
    """BD's settings; eps and the refresh period from ALGORITHMS.md section 4 (after the authors' notebooks)."""

    eps_s: float = 1e-2  # sharpness of the student's sampling weight
    eps_t: float = 1e-4  # sharpness of the teacher's sampling weight
    refresh_every: int = 10  # epochs between recomputations of the two rankings and the sampling pools
    kd_items: int = 1  # KD items per training pair and epoch, for each direction
    teacher_kd_weight: float = 0.5  # lambda of the teacher's distillation term (the student's is kd_weight)

    def __post_init__(self) -> None:
        if not (self.eps_s > 0 and self.eps_t > 0):
            raise ValueError(f"eps_s and eps_t must be positive, got {self.eps_s} and {self.eps_t}")
        if self.refresh_every <= 0 or self.kd_items <= 0 or self.teacher_kd_weight < 0:
            raise ValueError("refresh_every and kd_items must be positive and teacher_kd_weight non-negative")


def student_sampling_weights(student_ranks: torch.Tensor, teacher_ranks: torch.Tensor, eps_s: float) -> torch.Tensor:
    """tanh(max(eps_s * (rank_S - rank_T), 0)) elementwise (eq. 7); 0-based ranks of the same items."""
    return torch.tanh(torch.clamp(eps_s * (student_ranks - teacher_ranks).float(), min=0.0))


def teacher_sampling_weights(teacher_ranks: torch.Tensor, student_ranks: torch.Tensor, eps_t: float) -> torch.Tensor:
    """exp(eps_t * (rank_T - rank_S)) elementwise (eq. 8); 0-based ranks of the same items."""
    return torch.exp(eps_t * (teacher_ranks - student_ranks).float())


def draw_per_row(
    weights: torch.Tensor, observed: torch.Tensor, counts: np.ndarray, generator: torch.Generator
) -> np.ndarray:
    """counts[b] items per row b, drawn with replacement with probability proportional to weights[b] over the
    entries where observed[b] is False (observed entries get probability 0; a row whose weights vanish there
    falls back to uniform). weights [B, n] float, observed [B, n] bool -> int64 [counts.sum()], rows in order."""
    w = weights.masked_fill(observed, 0.0)
    empty = w.sum(1) <= 0
    if empty.any():
        w[empty] = (~observed[empty]).float()
    if (w.sum(1) <= 0).any():
        raise ValueError("a user has no unobserved item to draw a distillation item from")
    counts = np.asarray(counts, dtype=np.int64)
    if counts.max(initial=0) == 0:
        return np.empty(0, dtype=np.int64)
    draws = torch.multinomial(w, int(counts.max()), replacement=True, generator=generator).cpu().numpy()
    keep = np.arange(draws.shape[1])[None, :] < counts[:, None]
    return draws[keep]  # row-major: row 0's counts[0] draws, then row 1's, ...


class BDPair(nn.Module):
    """The student and the teacher copy as one module, so that one optimiser step updates both (their losses
    are separate: each model's gradient comes from its own loss only) and the best epoch restores both."""

    def __init__(self, student: Recommender, teacher: Recommender) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher


class BDSampler(PairKDSampler):
    """Raw triples plus, per pair, one pool draw for each direction. Every `refresh_every` epochs both models
    rank all items for every user (in blocks of users), and refresh_every * kd_items * |train_u| items per user
    and direction are drawn at once; epoch o of the period then uses its own slice of each user's pool."""

    def __init__(self, train: ItemSets, pair: BDPair, options: BDOptions, batch_size: int) -> None:
        super().__init__(train, batch_size)
        self.pair, self.options = pair, options
        self.lengths = train.lengths()
        self.pool_start = options.refresh_every * options.kd_items * train.indptr[:-1]  # [n_users]
        self.pool_counts = options.refresh_every * options.kd_items * self.lengths
        self.student_pool = np.empty(0, dtype=np.int64)
        self.teacher_pool = np.empty(0, dtype=np.int64)
        self.period_start = 1

    @torch.no_grad()
    def refresh(self, rng: np.random.Generator) -> None:
        student, teacher = self.pair.student, self.pair.teacher
        device = student.device
        generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
        step = max(1, SCORE_BLOCK_ELEMENTS // self.train.n_items)
        student_parts, teacher_parts = [], []
        for start in range(0, self.train.n_users, step):
            users = np.arange(start, min(start + step, self.train.n_users), dtype=np.int64)
            user_tensor = torch.as_tensor(users, device=device)
            rank_s = full_ranks(mask_observed(student.score_all(user_tensor).float(), users, self.train))
            rank_t = full_ranks(mask_observed(teacher.score_all(user_tensor).float(), users, self.train))
            observed = torch.zeros(rank_s.shape, dtype=torch.bool, device=device)
            rows, cols = self.train.gather(users)
            observed[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = True
            counts = self.pool_counts[users]
            student_parts.append(draw_per_row(student_sampling_weights(rank_s, rank_t, self.options.eps_s), observed,
                                              counts, generator))
            teacher_parts.append(draw_per_row(teacher_sampling_weights(rank_t, rank_s, self.options.eps_t), observed,
                                              counts, generator))
        self.student_pool = np.concatenate(student_parts)
        self.teacher_pool = np.concatenate(teacher_parts)

    def state_dict(self) -> dict[str, Any]:
        """The current period's pools (drawn from the models as they were at its start), for a resumed run."""
        return {"student_pool": torch.from_numpy(self.student_pool),
                "teacher_pool": torch.from_numpy(self.teacher_pool), "period_start": self.period_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student_pool = state["student_pool"].numpy().astype(np.int64, copy=True)
        self.teacher_pool = state["teacher_pool"].numpy().astype(np.int64, copy=True)
        self.period_start = int(state["period_start"])

    def start_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        if (epoch - 1) % self.options.refresh_every == 0 or self.student_pool.size == 0:
            self.refresh(rng)
            self.period_start = epoch

    def kd_for(self, pairs: np.ndarray, users: np.ndarray, epoch: int, rng: np.random.Generator):
        offset = epoch - self.period_start  # 0 .. refresh_every-1
        k = self.options.kd_items
        n_u = self.lengths[users]
        local = pairs - self.train.indptr[users]  # the pair's index within its user's row
        first = self.pool_start[users] + (offset * n_u + local) * k
        slots = first[:, None] + np.arange(k)[None, :]  # [B, k]
        return self.student_pool[slots], {"teacher_items": torch.from_numpy(self.teacher_pool[slots])}


def bd_losses(
    student: Recommender,
    teacher: Recommender,
    batch: KDBatch,
    *,
    kd_weight: float,
    teacher_kd_weight: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's (L_S, L_T) of eq. 5-6 (module docstring): two scalars, L_S with grad for the student only and
    L_T for the teacher only (the other model's logit is a target scored without grad).

    batch.kd_items [B, k]: the student's draws from p_S; batch.extra["teacher_items"] [B, k]: the teacher's
    draws from p_T. L_S = L_CF(S) + kd_weight * BCE(s^S, sigmoid(s^T / t)) on the student's items,
    L_T = L_CF(T) + teacher_kd_weight * BCE(s^T, sigmoid(s^S / t)) on the teacher's items."""
    users = batch.raw.users
    student_items, teacher_items = batch.kd_items, batch.extra["teacher_items"]
    assert teacher_items is not None
    with torch.no_grad():
        teacher_targets = teacher.score(users, student_items)
        student_targets = student.score(users, teacher_items)
    loss_s = student.loss(batch.raw) + kd_weight * soft_label_bce(
        student.score(users, student_items), teacher_targets, temperature)
    loss_t = teacher.loss(batch.raw) + teacher_kd_weight * soft_label_bce(
        teacher.score(users, teacher_items), student_targets, temperature)
    return loss_s, loss_t


def train_bd(
    split: LeaveOneOutSplit,
    teacher: Recommender,
    student_config: dict,
    train_config: TrainConfig,
    *,
    kd_weight: float,
    temperature: float,
    options: BDOptions,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
) -> TeacherRun:
    """Student and teacher copy trained together (see the module docstring); the epoch is selected on the
    student's validation metric and both models are restored to it. The trained teacher copy, with its own
    validation and test metrics, is returned in `extra["teacher"]`, `extra["teacher_valid"]`,
    `extra["teacher_test"]`; the caller's `teacher` is not modified."""
    teacher_copy = copy.deepcopy(teacher).to(device)
    init = torch.Generator().manual_seed(train_config.seed)
    student = build_model(teacher.family, split.n_users, split.n_items, generator=init, **student_config).to(device)
    pair = BDPair(student, teacher_copy)
    sampler = BDSampler(split.train, pair, options, batch_size)

    def loss_fn(batch: KDBatch) -> torch.Tensor:
        loss_s, loss_t = bd_losses(student, teacher_copy, batch, kd_weight=kd_weight,
                                   teacher_kd_weight=options.teacher_kd_weight, temperature=temperature)
        return loss_s + loss_t

    run = fit_and_report(pair, student, split, sampler, loss_fn, train_config, device,
                         f"BD {teacher.family} student + teacher")
    run.extra["teacher"] = teacher_copy
    run.extra["teacher_valid"] = validation_result(teacher_copy, split, DEFAULT_KS).metrics
    run.extra["teacher_test"] = test_result(teacher_copy, split, DEFAULT_KS).metrics
    return run
