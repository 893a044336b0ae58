"""Choosing the generator by the student it produces (`gdrec-owner train --generator auto`).

A generator's own accuracy does not predict the data-free student's (item-item kNN lists beat the teacher's own
top-L through the student on sparse data), so the owner compares candidates the way the consumer will use them:
for each candidate family it fits the generator, draws the lists, builds the export it would ship (the KD
teacher's soft targets), runs the consumer's distillation on it as a dry run (`shared.distillation`, the very code
the consumer runs, with the consumer's default settings), and scores that student on the owner's validation items
(the user's real history excluded). The candidate whose student ranks the validation item best (HR@50, ties
NDCG@50) wins. Nothing of the dry run leaves the owner. Each dry run trains one student, at the middle of the
regularisation factors the consumer chooses among (`DRY_RUN_REG_FACTORS`).

Candidates are fitted in the order given until `budget_s` seconds have passed (at least one always runs); the
report lists every candidate's own validation numbers, its student's, its list statistics and its seconds."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from data_owner.data import LeaveOneOutSplit
from data_owner.export import build_export, user_token
from data_owner.generators import fit_generator
from data_owner.generators.base import ListGenerator, selection_key
from data_owner.lists import GeneratedLists
from shared.distillation import DistillConfig, distill_student
from shared.evaluation import evaluate
from shared.models import Recommender

log = logging.getLogger(__name__)

# one dry-run student per candidate, at the middle of the consumer's regularisation factors (shared.distillation
# REG_FACTORS): the candidates are compared, not the factors, and each candidate then costs one student
DRY_RUN_REG_FACTORS = (0.1,)


@dataclass
class Candidate:
    family: str
    generator: ListGenerator
    lists: GeneratedLists
    student_valid: dict[str, float]
    seconds: float

    def summary(self, train) -> dict[str, Any]:
        return {"family": self.family, "settings": self.generator.settings(),
                "own_valid": self.generator.report.valid, "student_valid": self.student_valid,
                "lists": self.lists.statistics(train), "seconds": round(self.seconds, 1)}


@dataclass
class Selection:
    chosen: Candidate
    candidates: list[Candidate]
    skipped: list[str] = field(default_factory=list)

    def report(self, train) -> dict[str, Any]:
        return {"chosen": self.chosen.family, "candidates": [c.summary(train) for c in self.candidates],
                "skipped_for_time": self.skipped}


def student_validation(lists: GeneratedLists, teacher: Recommender, split: LeaveOneOutSplit, temperature: float,
                       secret: bytes, consumer_id: str, distill: DistillConfig, device: torch.device | str = "cpu"
                       ) -> dict[str, float]:
    """Validation HR@50 / NDCG@50 of the data-free student trained from the export these lists would make: the
    export built with `teacher`'s soft targets, distilled by `shared.distillation`, scored on `split`'s validation
    items with the users' real training items excluded."""
    export = build_export(teacher, lists, split.user_ids, split.item_ids, temperature, secret, consumer_id)
    run = distill_student(export, distill, device)
    row_of = {record.token: row for row, record in enumerate(export.users)}
    rows = torch.as_tensor([row_of[user_token(secret, consumer_id, str(uid))] for uid in split.user_ids],
                           device=device)
    users = split.eval_users
    model = run.model.eval()

    def score_all(batch: torch.Tensor) -> torch.Tensor:
        return model.score_all(rows[batch])

    return evaluate(score_all, users, split.valid_item[users], [split.train], ks=(10, 20, 50), device=device).metrics


def choose_generator(
    families: tuple[str, ...],
    trained_on: LeaveOneOutSplit,
    split: LeaveOneOutSplit,
    teacher: Recommender,
    *,
    list_length: int,
    include_observed: bool,
    temperature: float,
    secret: bytes,
    consumer_id: str,
    seed: int,
    budget_s: float,
    settings: dict[str, dict[str, Any]] | None = None,
    cgan=None,
    distill: DistillConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Selection:
    """Fit each family of `families` on `trained_on`, dry-run the student of its export, keep the best (see the
    module docstring). `split` is the true split (whose validation items and histories score the students)."""
    if not families:
        raise ValueError("generator selection needs at least one candidate family")
    distill = replace(distill or DistillConfig(reg_factors=DRY_RUN_REG_FACTORS), seed=seed, progress=False,
                      checkpoint_dir=None)
    started = time.perf_counter()
    candidates: list[Candidate] = []
    skipped: list[str] = []
    for family in families:
        if candidates and time.perf_counter() - started > budget_s:
            skipped.append(family)
            continue
        began = time.perf_counter()
        generator = fit_generator(family, trained_on, seed=seed, device=device, settings=(settings or {}).get(family),
                                  cgan=cgan, teacher=teacher, progress=progress)
        lists = generator.lists(trained_on.train, min(list_length, trained_on.n_items), include_observed, seed, device)
        student = student_validation(lists, teacher, split, temperature, secret, consumer_id, distill, device)
        candidate = Candidate(family, generator, lists, student, time.perf_counter() - began)
        log.info("generator %s: own valid HR@50 %.4f, student valid HR@50 %.4f (%.0f s)", family,
                 generator.report.valid.get("HR@50", np.nan), student.get("HR@50", np.nan), candidate.seconds)
        candidates.append(candidate)
    best = max(candidates, key=lambda c: selection_key(c.student_valid))
    if skipped:
        log.warning("generator selection: %s not tried, the time budget of %.0f s was spent", ", ".join(skipped),
                    budget_s)
    return Selection(best, candidates, skipped)


__all__ = ["Candidate", "Selection", "choose_generator", "student_validation"]
