"""Hyperparameters chosen on the validation item (never the test item), per dataset and base model.

Teacher settings come from grids run with `gdrec-owner train-teacher`; see README "Measured so far"."""

from __future__ import annotations

from typing import Any

TEACHERS: dict[tuple[str, str], dict[str, Any]] = {
    ("ml-100k", "bpr"): {"model": {"dim": 64, "reg": 1e-2}, "lr": 5e-3},
    ("citeulike-t", "bpr"): {"model": {"dim": 100, "reg": 1e-2}, "lr": 5e-3},
    ("foursquare", "bpr"): {"model": {"dim": 100, "reg": 1e-2}, "lr": 5e-3},
    ("ml-100k", "neumf"): {"model": {"dim_gmf": 64, "dim_mlp": 64, "hidden": [64, 32], "reg": 1e-4}, "lr": 2e-3},
    ("citeulike-t", "neumf"): {"model": {"dim_gmf": 100, "dim_mlp": 100, "hidden": [32, 16], "reg": 1e-4}, "lr": 2e-3},
    ("foursquare", "neumf"): {"model": {"dim_gmf": 100, "dim_mlp": 100, "hidden": [32, 16], "reg": 1e-4}, "lr": 2e-3},
}


def teacher_preset(dataset: str, family: str) -> dict[str, Any]:
    try:
        return TEACHERS[(dataset, family)]
    except KeyError:
        known = sorted({d for d, _ in TEACHERS})
        raise ValueError(f"no teacher preset for {dataset!r}/{family!r}; known datasets: {known}") from None
