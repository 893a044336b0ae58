"""Presets of the research harness: the teacher hyperparameters (the owner's presets, chosen on the validation
item, one source of truth in `data_owner.pipeline`) and the paper's comparison grid (GD-REC section 4)."""

from __future__ import annotations

from typing import Any

from data_owner.pipeline import teacher_preset as owner_teacher_preset


def teacher_preset(dataset: str, family: str) -> dict[str, Any]:
    """{"model": architecture kwargs, "lr": learning rate, "pretrain": NeuMF pre-training (a
    data_owner.teacher.Pretraining, or None)} for a dataset name (or the family default)."""
    settings = owner_teacher_preset(dataset, family)
    return {"model": dict(settings.model), "lr": settings.lr, "pretrain": settings.pretrain}


FRACTIONS = (0.5, 0.3)  # student sizes M and S as fractions of the teacher's parameter count
KD_WEIGHTS = (1.0, 0.1, 0.01, 0.001)  # RD / CD / BD
TEMPERATURES = (1.0, 2.0, 5.0, 10.0)  # CD / BD / GD
GD_LAMBDA = 0.7  # the paper's lambda; sweep 0..1 for fig4
SELECTION_METRIC = "NDCG@50"  # on the validation item: every cell's epoch and every report's setting
LAMBDA_SWEEP = tuple(round(0.1 * k, 1) for k in range(11))
