"""Ranking Distillation (Tang & Wang, KDD 2018, "Ranking Distillation: Learning Compact Ranking Models With High
Performance for Recommender System"; authors' code graytowne/rank_distill, losses.py and distill_caser.py).

The student minimises L_CF + kd_weight * L_RD with (paper eq. 7-9, ALGORITHMS.md section 4)

    L_RD(u) = sum_{r=0..K-1} w_r * (-log sigmoid(s^S_{u, pi_r}))

over the teacher's top-K unobserved items pi_0..pi_{K-1} of user u (computed once, training items excluded), and
    w_r = w^a_r                    during the first `warmup_epochs` epochs,
    w_r = w^a_r * w^b_r            afterwards (the authors' "hybrid" weight, not renormalised by default),
    w^a_r = exp(-r / lambda_rd) / sum_r' exp(-r' / lambda_rd)                     (position importance, eq. 8)
    w^b_r = max(tanh(mu * (rank_S(pi_r) - r)), 0)                                  (ranking discrepancy, eq. 9)
where r and rank_S are 0-based and rank_S(pi_r) is estimated from `probe_items` items drawn uniformly among the
user's unobserved items: rank_S = floor(n_unobserved(u) * #{probes scored above pi_r} / probe_items). (The
authors scale by the catalog size; we scale by the user's unobserved count, the population the probes come from.)

RD uses no soft targets, so `temperature` does not enter it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data_owner.config import BATCH_SIZE
from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import TeacherRun
from experiments.baselines.common import KDBatch, PairKDSampler, fit_and_report, frozen_copy, top_unobserved
from shared.interactions import ItemSets
from shared.models import Recommender, build_model
from shared.sampling import sample_negatives
from shared.training import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RDOptions:
    """RD's settings; defaults from the authors' distill_caser.py."""

    k: int = 10  # length of the teacher's exemplary top-K list
    lambda_rd: float = 1.0  # sharpness of the position weight (eq. 8)
    mu: float = 0.1  # sharpness of the ranking-discrepancy weight (eq. 9)
    warmup_epochs: int = 10  # epochs with the position weight alone (authors' dynamic_start_epoch)
    probe_items: int = 100  # uniformly sampled unobserved items per pair for estimating the student's ranks
    renormalize: bool = False  # L1-normalise the hybrid weight per row (the authors' code leaves it off)

    def __post_init__(self) -> None:
        if self.k <= 0 or self.probe_items <= 0 or self.warmup_epochs < 0:
            raise ValueError("k and probe_items must be positive and warmup_epochs non-negative")
        if not (self.lambda_rd > 0 and self.mu > 0):
            raise ValueError(f"lambda_rd and mu must be positive, got {self.lambda_rd} and {self.mu}")


def position_weights(k: int, lambda_rd: float) -> torch.Tensor:
    """w^a_r = exp(-r / lambda_rd) normalised to sum 1, r = 0..k-1 (eq. 8): float [k]. (Counting r from 1, as the
    paper writes it, gives the same weights: the common factor cancels in the normalisation.)"""
    w = torch.exp(-torch.arange(k, dtype=torch.float32) / lambda_rd)
    return w / w.sum()


def estimated_ranks(
    candidate_scores: torch.Tensor, probe_scores: torch.Tensor, n_unobserved: torch.Tensor
) -> torch.Tensor:
    """0-based rank estimate of each candidate among the user's unobserved items (authors' sampled estimator).

    candidate_scores [B, K], probe_scores [B, m], n_unobserved [B] -> float [B, K]:
    floor(n_unobserved * #{probes with a strictly higher score} / m)."""
    higher = (probe_scores[:, None, :] > candidate_scores[:, :, None]).sum(-1).float()  # [B, K]
    return torch.floor(n_unobserved.float()[:, None] * higher / probe_scores.shape[1])


def discrepancy_weights(student_ranks: torch.Tensor, mu: float) -> torch.Tensor:
    """w^b_r = max(tanh(mu * (rank_S(pi_r) - r)), 0) (eq. 9): student_ranks [B, K] (0-based) -> [B, K].

    Positive where the student ranks the teacher's r-th item below position r, zero where it already ranks it
    at r or higher."""
    positions = torch.arange(student_ranks.shape[1], device=student_ranks.device, dtype=student_ranks.dtype)
    return torch.clamp(torch.tanh(mu * (student_ranks - positions)), min=0.0)


def rd_distillation_loss(candidate_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_b sum_r weights[b, r] * (-log sigmoid(candidate_logits[b, r])) (the authors' weighted_sigmoid_log_loss,
    distillation part): candidate_logits [B, K] with grad, weights [B, K] or [K] (no grad)."""
    return (weights * F.softplus(-candidate_logits)).sum(-1).mean()


def rd_loss(
    student: Recommender,
    batch: KDBatch,
    position_weight: torch.Tensor,
    *,
    kd_weight: float,
    mu: float,
    renormalize: bool = False,
) -> torch.Tensor:
    """One batch's L_CF + kd_weight * L_RD (module docstring): a scalar with grad for the student only.

    batch.kd_items [B, K]: the teacher's top-K unobserved items of batch.raw.users; position_weight [K]: w^a
    (eq. 8). If batch.extra["probes"] ([B, m], with extra["n_unobserved"] [B]) is set, i.e. after the warm-up,
    the weight is w^a * w^b with the student's ranks estimated from the probes (no grad through the weight),
    L1-normalised per row if `renormalize`; otherwise (warm-up) w^a alone."""
    users = batch.raw.users
    candidate_logits = student.score(users, batch.kd_items)  # [B, K]
    weights = position_weight[None, :]
    probes = batch.extra.get("probes")
    if probes is not None:
        with torch.no_grad():
            ranks = estimated_ranks(candidate_logits.detach(), student.score(users, probes),
                                    batch.extra["n_unobserved"])  # type: ignore[arg-type]
            weights = weights * discrepancy_weights(ranks, mu)
            if renormalize:
                weights = F.normalize(weights, p=1, dim=1)
    return student.loss(batch.raw) + kd_weight * rd_distillation_loss(candidate_logits, weights)


class RDSampler(PairKDSampler):
    """Raw triples plus, per pair, the teacher's top-K unobserved items of its user and (after the warm-up) the
    probe items for the student's rank estimate."""

    def __init__(self, train: ItemSets, teacher_top: np.ndarray, options: RDOptions, batch_size: int) -> None:
        super().__init__(train, batch_size)
        self.teacher_top = teacher_top  # int64 [n_users, K]
        self.options = options
        self.n_unobserved = (train.n_items - train.lengths()).astype(np.int64)

    def kd_for(self, pairs: np.ndarray, users: np.ndarray, epoch: int, rng: np.random.Generator):
        extra: dict[str, torch.Tensor | None] = {"probes": None, "n_unobserved": None}
        if epoch > self.options.warmup_epochs:
            m = self.options.probe_items
            probes = sample_negatives(np.repeat(users, m), self.train, rng).reshape(users.size, m)
            extra = {"probes": torch.from_numpy(probes), "n_unobserved": torch.from_numpy(self.n_unobserved[users])}
        return self.teacher_top[users], extra


def train_rd(
    split: LeaveOneOutSplit,
    teacher: Recommender,
    student_config: dict,
    train_config: TrainConfig,
    *,
    kd_weight: float,
    options: RDOptions,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
) -> TeacherRun:
    """A student of the teacher's family trained with L_CF + kd_weight * L_RD; see the module docstring."""
    teacher_top = top_unobserved(frozen_copy(teacher, device).score_all, split.train, options.k, device)
    init = torch.Generator().manual_seed(train_config.seed)
    student = build_model(teacher.family, split.n_users, split.n_items, generator=init, **student_config).to(device)
    w_pos = position_weights(options.k, options.lambda_rd).to(device)
    sampler = RDSampler(split.train, teacher_top, options, batch_size)

    def loss_fn(batch: KDBatch) -> torch.Tensor:
        return rd_loss(student, batch, w_pos, kd_weight=kd_weight, mu=options.mu, renormalize=options.renormalize)

    return fit_and_report(student, student, split, sampler, loss_fn, train_config, device,
                          f"RD {teacher.family} student")

