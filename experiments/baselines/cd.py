"""Collaborative Distillation (Lee, Choi, Lee & Shim, ICDM 2019, "Collaborative Distillation for Top-N
Recommendation"; no official code, so the choices below are ours and configurable; ALGORITHMS.md section 4).

The student minimises L_CF + kd_weight * L_CD with

    L_CD = mean over (u, j) of BCE(sigmoid(s^S_uj), q_uj),   q_uj = sigmoid(s^T_uj / t)

(the student's logit is not divided by t) on unobserved items j drawn by rank-aware sampling: j is the item at
0-based rank r of the guide model's top-N unobserved list of u, with p(r) = exp(-r / (N * T)) / Z, r = 0..N-1.
The guide is the student (student-guided training, the default; its top-N is recomputed every `refresh_every`
epochs) or the teacher (teacher-guided; computed once). `kd_items` items are drawn per training pair, separately
from the pair's BPR/BCE negative; training items never enter a top-N list (they are set to -inf first)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from data_owner.config import BATCH_SIZE
from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import TeacherRun
from experiments.baselines.common import (
    KDBatch,
    PairKDSampler,
    fit_and_report,
    frozen_copy,
    soft_label_bce,
    top_unobserved,
)
from shared.interactions import ItemSets
from shared.models import Recommender, build_model
from shared.training import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CDOptions:
    """CD's settings (our defaults: the paper ships no code)."""

    top_n: int = 100  # N: length of the guide's ranked list the KD items are drawn from
    rank_decay: float = 0.1  # T in p(r) ~ exp(-r / (N * T)); with N=100 the probability halves every ~7 ranks
    guide: Literal["student", "teacher"] = "student"
    kd_items: int = 1  # KD items drawn per training pair (each epoch)
    refresh_every: int = 10  # epochs between recomputations of the student's top-N (student-guided only)

    def __post_init__(self) -> None:
        if self.top_n <= 0 or self.kd_items <= 0 or self.refresh_every <= 0:
            raise ValueError("top_n, kd_items and refresh_every must be positive")
        if not self.rank_decay > 0:
            raise ValueError(f"rank_decay must be positive, got {self.rank_decay}")
        if self.guide not in ("student", "teacher"):
            raise ValueError(f"guide must be 'student' or 'teacher', got {self.guide!r}")


def rank_probabilities(top_n: int, rank_decay: float) -> np.ndarray:
    """p(r) = exp(-r / (N * T)) / Z for the 0-based ranks r = 0..N-1 of the guide's list: float64 [N]."""
    logits = -np.arange(top_n, dtype=np.float64) / (top_n * rank_decay)
    p = np.exp(logits - logits.max())
    return p / p.sum()


def sample_ranked_items(
    top_lists: np.ndarray, users: np.ndarray, probabilities: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """For each users[b], `count` items of its ranked list top_lists[users[b]] (int64 [n_users, N]) drawn with
    replacement at ranks r ~ probabilities [N]: int64 [B, count]."""
    cdf = np.cumsum(probabilities)
    ranks = np.minimum(np.searchsorted(cdf, rng.random((users.size, count)) * cdf[-1], side="right"),
                       probabilities.size - 1)
    return np.take_along_axis(top_lists[users], ranks, axis=1)


class CDSampler(PairKDSampler):
    """Raw triples plus `kd_items` rank-aware draws per pair from the guide's top-N unobserved list."""

    def __init__(
        self,
        train: ItemSets,
        options: CDOptions,
        batch_size: int,
        guide: Recommender,
        refresh: bool,
        device: torch.device | str,
    ) -> None:
        super().__init__(train, batch_size)
        self.options = options
        self.guide, self.refresh, self.device = guide, refresh, device
        self.probabilities = rank_probabilities(options.top_n, options.rank_decay)
        self.top_lists: np.ndarray | None = None

    def state_dict(self) -> dict[str, Any]:
        """The guide's top lists in use (they may come from an earlier epoch's student), for a resumed run."""
        return {"top_lists": None if self.top_lists is None else torch.from_numpy(self.top_lists)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        lists = state["top_lists"]
        self.top_lists = None if lists is None else lists.numpy().astype(np.int64, copy=True)

    def start_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        if self.top_lists is None or (self.refresh and (epoch - 1) % self.options.refresh_every == 0):
            self.top_lists = top_unobserved(self.guide.score_all, self.train, self.options.top_n, self.device)

    def kd_for(self, pairs: np.ndarray, users: np.ndarray, epoch: int, rng: np.random.Generator):
        assert self.top_lists is not None
        return sample_ranked_items(self.top_lists, users, self.probabilities, self.options.kd_items, rng), {}


def cd_loss(
    student: Recommender, teacher: Recommender, batch: KDBatch, *, kd_weight: float, temperature: float
) -> torch.Tensor:
    """One batch's L_CF + kd_weight * L_CD (module docstring): a scalar with grad for the student only.

    batch.kd_items [B, m]: the rank-aware draws for batch.raw.users. The soft targets sigmoid(s^T / t) come from
    `teacher` (the frozen copy), scored without grad; the student's logit is not divided by t."""
    users = batch.raw.users
    with torch.no_grad():
        teacher_logits = teacher.score(users, batch.kd_items)
    kd = soft_label_bce(student.score(users, batch.kd_items), teacher_logits, temperature)
    return student.loss(batch.raw) + kd_weight * kd


def train_cd(
    split: LeaveOneOutSplit,
    teacher: Recommender,
    student_config: dict,
    train_config: TrainConfig,
    *,
    kd_weight: float,
    temperature: float,
    options: CDOptions,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
) -> TeacherRun:
    """A student of the teacher's family trained with L_CF + kd_weight * L_CD; see the module docstring."""
    frozen = frozen_copy(teacher, device)
    init = torch.Generator().manual_seed(train_config.seed)
    student = build_model(teacher.family, split.n_users, split.n_items, generator=init, **student_config).to(device)
    student_guided = options.guide == "student"
    sampler = CDSampler(split.train, options, batch_size, student if student_guided else frozen, student_guided,
                        device)

    def loss_fn(batch: KDBatch) -> torch.Tensor:
        return cd_loss(student, frozen, batch, kd_weight=kd_weight, temperature=temperature)

    return fit_and_report(student, student, split, sampler, loss_fn, train_config, device,
                          f"CD {teacher.family} student ({options.guide}-guided)")
