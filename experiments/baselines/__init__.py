"""The knowledge-distillation baselines GD-REC is compared with (ALGORITHMS.md section 4), on raw data, for both
base models (BPR, NeuMF): RD (Tang & Wang, KDD 2018), CD (Lee et al., ICDM 2019), BD (Kweon et al., WWW 2021).

Each trains a student of the teacher's family with L_CF (its own base loss on the raw training pairs) plus
kd_weight times the method's distillation term, selects the epoch on the validation item (full ranking, training
items excluded) and reports validation and test metrics as `data_owner.teacher.train_base_model` does."""

from __future__ import annotations

from typing import Any

import torch

from data_owner.config import BATCH_SIZE
from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import TeacherRun
from experiments.baselines.bd import BDOptions, train_bd
from experiments.baselines.cd import CDOptions, train_cd
from experiments.baselines.common import options_from
from experiments.baselines.rd import RDOptions, train_rd
from shared.models import Recommender
from shared.training import TrainConfig

METHODS = ("rd", "cd", "bd")

__all__ = ["METHODS", "BDOptions", "CDOptions", "RDOptions", "train_kd_student"]


def train_kd_student(
    method: str,
    split: LeaveOneOutSplit,
    teacher: Recommender,
    student_config: dict,
    train_config: TrainConfig,
    *,
    kd_weight: float,
    temperature: float,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
    options: dict[str, Any] | None = None,
) -> TeacherRun:
    """Train a student of `teacher.family` built from `student_config` with L_CF + kd_weight * KD term.

    method: "rd" (temperature unused: RD distils the teacher's top-K list, not soft targets), "cd" or "bd" (soft
    targets sigmoid(s_T / temperature)). options: overrides of the method's defaults (`RDOptions`, `CDOptions`,
    `BDOptions`; unknown keys raise ValueError). `teacher` is never modified: RD and CD score with a frozen copy,
    BD trains a deep copy and returns it in `extra["teacher"]` (with `extra["teacher_valid"]`/`["teacher_test"]`).
    Returns `TeacherRun(student, fit result, validation metrics, test metrics)`."""
    if method not in METHODS:
        raise ValueError(f"unknown distillation method {method!r}; choose one of {METHODS}")
    if kd_weight < 0:
        raise ValueError(f"kd_weight must be non-negative, got {kd_weight}")
    if method != "rd" and not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    common = {"kd_weight": kd_weight, "batch_size": batch_size, "device": device}
    if method == "rd":
        return train_rd(split, teacher, student_config, train_config, options=options_from(RDOptions, options),
                        **common)
    if method == "cd":
        return train_cd(split, teacher, student_config, train_config, temperature=temperature,
                        options=options_from(CDOptions, options), **common)
    return train_bd(split, teacher, student_config, train_config, temperature=temperature,
                    options=options_from(BDOptions, options), **common)
