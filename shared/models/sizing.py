"""Build a model of the same family at a given fraction of another's parameter count (the paper's 50% / 30%
students), within a tolerance, and report both counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.models.base import Recommender, seeded_module
from shared.models.bpr import BPR
from shared.models.neumf import GMF, MLP, NeuMF

# gmf and mlp are NeuMF's branches alone, trained for its pre-training (teachers and students are bpr or neumf)
MODEL_FAMILIES: dict[str, type[Recommender]] = {"bpr": BPR, "neumf": NeuMF, "gmf": GMF, "mlp": MLP}


def model_class(family: str) -> type[Recommender]:
    try:
        return MODEL_FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(MODEL_FAMILIES)}") from None


def build_model(family: str, n_users: int, n_items: int, generator: torch.Generator | None = None,
                **config: Any) -> Recommender:
    """A `family` model with the architecture `config`, its parameters drawn from `generator` (None: torch's
    default generator; pass a seeded one for a reproducible initialisation)."""
    cls = model_class(family)
    if generator is None:
        return cls(n_users, n_items, **config)
    return seeded_module(lambda: cls(n_users, n_items, **config), generator)


@dataclass(frozen=True)
class SizedConfig:
    family: str
    config: dict[str, Any]
    params: int
    reference_params: int

    @property
    def ratio(self) -> float:
        return self.params / self.reference_params


def config_at_fraction(
    family: str,
    reference_config: dict[str, Any],
    n_users: int,
    n_items: int,
    fraction: float,
    tolerance: float = 0.02,
) -> SizedConfig:
    """The scaled config whose parameter count is closest to `fraction` x the reference's.

    Raises ValueError when no width choice lands within `tolerance` (relative) of the target."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    cls = model_class(family)
    reference = cls.count_parameters(n_users, n_items, **reference_config)
    target = fraction * reference
    best: SizedConfig | None = None
    for factor in np.linspace(0.005, 1.0, 1991):
        for config in cls.config_variants(cls.scaled_config(reference_config, float(factor))):
            params = cls.count_parameters(n_users, n_items, **config)
            if best is None or abs(params - target) < abs(best.params - target):
                best = SizedConfig(family, config, params, reference)
    assert best is not None
    if abs(best.params - target) > tolerance * target:
        raise ValueError(
            f"no {family} width lands within {tolerance:.0%} of {fraction:.0%} of {reference} parameters "
            f"(closest: {best.params}, {best.ratio:.3f}); use a larger reference model"
        )
    return best


def build_at_fraction(
    reference: Recommender, fraction: float, tolerance: float = 0.02
) -> tuple[Recommender, SizedConfig]:
    """A fresh model of `reference`'s family with about `fraction` of its parameters, and the sizing report."""
    sized = config_at_fraction(
        reference.family, reference.config(), reference.n_users, reference.n_items, fraction, tolerance
    )
    model = build_model(reference.family, reference.n_users, reference.n_items, **sized.config)
    return model, sized
