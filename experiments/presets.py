"""Teacher hyperparameters for the research harness: the owner's presets (chosen on the validation item), one
source of truth in `data_owner.pipeline`."""

from __future__ import annotations

from typing import Any

from data_owner.pipeline import teacher_preset as owner_teacher_preset


def teacher_preset(dataset: str, family: str) -> dict[str, Any]:
    """{"model": architecture kwargs, "lr": learning rate} for a dataset name (or the family default)."""
    settings = owner_teacher_preset(dataset, family)
    return {"model": dict(settings.model), "lr": settings.lr}
