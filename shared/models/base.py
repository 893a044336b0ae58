"""The one scorer contract every recommender here follows (teacher, student, baselines).

A model is a pure `nn.Module` built from `(n_users, n_items, **config)`; it returns logits and knows nothing
about datasets, id maps, training or persistence (those live in `shared.training` and `shared.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def seeded_module(build: Callable[[], M], generator: torch.Generator) -> M:
    """`build()` with every parameter drawn from `generator` alone: the module is built on the meta device (no
    draw from torch's default generator, so the caller's random state is untouched), given CPU storage, and
    initialised by its `reset_parameters(generator)`, which must set every parameter."""
    with torch.device("meta"):
        module = build()
    module = module.to_empty(device="cpu")
    module.reset_parameters(generator)  # type: ignore[operator]
    return module


@dataclass(frozen=True)
class PairBatch:
    """One training batch of (user, positive item, sampled negative item) triples, all int64 [B]."""

    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(self.users.to(device), self.pos_items.to(device), self.neg_items.to(device))

    def __len__(self) -> int:
        return int(self.users.shape[0])


class Recommender(nn.Module):
    """Base class: `loss(batch)`, `score(users, items)`, `score_all(users)`; all scores are logits."""

    family: ClassVar[str]

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"n_users and n_items must be positive, got {n_users} and {n_items}")
        self.n_users = n_users
        self.n_items = n_items

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """(Re-)initialise every parameter, drawing from `generator` (None: torch's default generator)."""
        raise NotImplementedError

    def loss(self, batch: PairBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar collaborative-filtering loss L_CF on a batch of triples; `weights` [B] scale each triple's data
        term (None: all 1), the regularisation stays per triple."""
        raise NotImplementedError

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for aligned pairs: users [B], items [B] -> [B]; or users [B], items [B, M] -> [B, M]."""
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every item for each user: users [B] -> [B, n_items]."""
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """A [n_items, d] representation of items (for item-to-item similarity)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments that rebuild this architecture (besides n_users, n_items)."""
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def count_parameters(cls, n_users: int, n_items: int, **config: Any) -> int:
        """Parameter count of the architecture without building it."""
        raise NotImplementedError

    @classmethod
    def scaled_config(cls, config: dict[str, Any], factor: float) -> dict[str, Any]:
        """The config with every width multiplied by `factor` (rounded, at least 1)."""
        raise NotImplementedError

    @classmethod
    def config_variants(cls, config: dict[str, Any]) -> list[dict[str, Any]]:
        """Near neighbours of a scaled config, tried by the sizing search to land closer to a target count."""
        return [config]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def scale_width(width: int, factor: float) -> int:
    return max(1, int(round(width * factor)))
