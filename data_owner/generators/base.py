"""The generator contract: every list source the owner can export from.

A generator is fitted on the owner's (model) training split, selects its epoch or settings on the validation item,
and then scores users: `logits(users)` returns a [B, n] tensor whose order is the generator's ranking (a log-scale
preference, so that softmax(logits / tau) is a sensible sampling distribution). Lists are the top-L of those
logits, drawn with Gumbel noise at the generator's noise temperature (`data_owner.lists.top_lists`), or, for
generators with a noise input of their own (the CGAN's z, the VAE's posterior sample), with that noise. Each
generator saves to and loads from a folder like the other checkpoints and reports its own validation numbers."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from data_owner.data import LeaveOneOutSplit
from data_owner.lists import GeneratedLists, top_lists
from shared.checkpoint import atomic_write_text
from shared.evaluation import evaluate
from shared.interactions import ItemSets

SELECTION_K = 50  # generators select their settings on validation HR@50 (ties: NDCG@50)
META_FILE = "generator.json"


@dataclass
class FitReport:
    """What fitting chose and measured: the settings kept, the validation numbers of each setting tried, the
    generator's own validation (and, where computed, test) numbers as a recommender, and the seconds it took."""

    chosen: dict[str, Any]
    tried: list[dict[str, Any]] = field(default_factory=list)
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "tried": self.tried, "valid": self.valid, "test": self.test,
                "seconds": round(self.seconds, 2)}


class ListGenerator(ABC):
    """A fitted list source. Subclasses set `family` and implement `logits`, `_state` / `_from_state`."""

    family: ClassVar[str]
    own_noise: ClassVar[bool] = False  # the generator draws its own noise (lists use it instead of Gumbel noise)
    noise_temperature: float = 0.0  # tau of the Gumbel-top-L draw (0: the plain top-L)
    report: FitReport

    @abstractmethod
    def logits(self, users: torch.Tensor, train: ItemSets, noise: torch.Generator | None = None) -> torch.Tensor:
        """[B, n] scores of `users` given their training sets `train` (rows indexed by user); `noise` feeds the
        generator's own noise input where it has one (None: its noiseless mean)."""


    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The settings that define the fitted generator (JSON)."""

    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]:
        """Tensors to save."""

    @classmethod
    @abstractmethod
    def _from_state(cls, settings: dict[str, Any], state: dict[str, torch.Tensor], n_items: int,
                    device: torch.device) -> ListGenerator:
        """Rebuild from `settings()` and `_state()`."""

    # -- shared behaviour
    def num_parameters(self) -> int:
        """Numbers the generator holds (the teacher family holds none of its own: it is the KD teacher)."""
        return sum(t.numel() for t in self._state().values())

    def scorer(self, train: ItemSets, seed: int | None = None, device: torch.device | str = "cpu"):
        """`score_all(users) -> [B, n]` for evaluation and list building; with `seed`, the generator's own noise is
        drawn from it (None: noiseless)."""
        noise = None if seed is None else torch.Generator(device=device).manual_seed(seed)

        @torch.no_grad()
        def score_all(users: torch.Tensor) -> torch.Tensor:
            return self.logits(users, train, noise)

        return score_all

    def reported_scorer(self, train: ItemSets, seed: int, device: torch.device | str = "cpu"):
        """The scorer its reported validation / test numbers use: with its own noise seeded by `seed` where it has
        a noise input, else noiseless (the lists' Gumbel noise is not part of the ranking it reports)."""
        return self.scorer(train, seed if self.own_noise else None, device)

    def lists(self, train: ItemSets, length: int, include_observed: bool, seed: int,
              device: torch.device | str = "cpu") -> GeneratedLists:
        """A draw of top-`length` lists for every user, seeded by `seed` (same seed, same lists)."""
        if self.own_noise:
            return top_lists(self.scorer(train, seed, device), train, length, include_observed, seed, device)
        return top_lists(self.scorer(train, None, device), train, length, include_observed, seed, device,
                         temperature=self.noise_temperature)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in self._state().items()}, folder / "generator.pt")
        meta = {"family": self.family, "settings": self.settings(), "noise_temperature": self.noise_temperature,
                "n_items": self.n_items, "report": self.report.to_dict()}
        atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2, default=float))

    n_items: int


def load_meta(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / META_FILE).read_text())


def load_state(folder: Path, device: torch.device | str) -> dict[str, torch.Tensor]:
    return torch.load(Path(folder) / "generator.pt", map_location=device, weights_only=True)


def validation_metrics(score_all, split: LeaveOneOutSplit, device: torch.device | str = "cpu",
                       ks: tuple[int, ...] = (SELECTION_K,), test: bool = False) -> dict[str, float]:
    """A scorer's validation (or test) HR@K / NDCG@K on the split's evaluation users, training items excluded (and
    the validation item when testing): how the generators select their settings and report themselves."""
    users = split.eval_users
    if not users.size:
        return {}
    if test:
        return evaluate(score_all, users, split.test_item[users], [split.train], [split.valid_item], ks=ks,
                        device=device).metrics
    return evaluate(score_all, users, split.valid_item[users], [split.train], ks=ks, device=device).metrics


def selection_key(metrics: dict[str, float]) -> tuple[float, float]:
    """Order of settings: validation HR@50, then NDCG@50."""
    return (metrics.get(f"HR@{SELECTION_K}", 0.0), metrics.get(f"NDCG@{SELECTION_K}", 0.0))


def dense_rows(train: ItemSets, users: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """The users' training sets as a dense float32 [B, n] 0/1 matrix."""
    rows, cols = train.gather(users)
    out = torch.zeros((users.size, train.n_items), dtype=torch.float32, device=device)
    out[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = 1.0
    return out


__all__ = [
    "SELECTION_K",
    "FitReport",
    "ListGenerator",
    "dense_rows",
    "load_meta",
    "load_state",
    "selection_key",
    "validation_metrics",
]
