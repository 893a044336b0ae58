"""Generated recommendation lists GF(I)_u: what every generator produces and the export ships, in one format.

A list is the top-L items of a generator's scores for the user, best first. Two switches shape it:
- `include_observed`: whether the user's own training items may appear (the paper lets them; the product's
  default leaves them out, since good generators would otherwise fill a fifth to a third of each list with them);
- a noise temperature tau: with tau > 0 the list is a draw of L items without replacement from softmax(s / tau)
  (the Gumbel-top-L trick: the top-L of s / tau + Gumbel noise), so two draws differ; tau = 0 is the plain top-L.

`GeneratedLists.save` / `GeneratedLists.load` is the one file format of lists (an `.npz` written atomically)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.checkpoint import atomic_save_npz
from shared.interactions import ItemSets

ScoreAll = Callable[[torch.Tensor], torch.Tensor]

LISTS_FILE = "lists.npz"


@dataclass(frozen=True)
class GeneratedLists:
    items: np.ndarray  # int64 [n_users, L], best first
    scores: np.ndarray  # float32 [n_users, L], the generator's score of each listed item (before noise)
    include_observed: bool
    seed: int
    n_items: int

    @property
    def length(self) -> int:
        return int(self.items.shape[1])

    def as_item_sets(self) -> ItemSets:
        n_users, length = self.items.shape
        users = np.repeat(np.arange(n_users, dtype=np.int64), length)
        return ItemSets.from_pairs(users, self.items.ravel(), n_users, self.n_items)

    def observed_share(self, train: ItemSets) -> float:
        """Share of listed items that are the user's own training items (a first privacy number)."""
        n_users, length = self.items.shape
        users = np.repeat(np.arange(n_users, dtype=np.int64), length)
        return float(train.contains(users, self.items.ravel()).mean()) if self.items.size else 0.0

    def statistics(self, train: ItemSets) -> dict[str, float | int]:
        """What a manifest records of the lists: length, users, the share of own training items, how many distinct
        items the lists cover (and their share of the catalog), and the share of list slots taken by the 1% most
        listed items (a concentration number: popularity-like lists score high)."""
        counts = np.bincount(self.items.ravel(), minlength=self.n_items)
        top = max(1, self.n_items // 100)
        covered = int((counts > 0).sum())
        return {"list_length": self.length, "n_users": int(self.items.shape[0]),
                "observed_share": round(self.observed_share(train), 4), "distinct_items": covered,
                "coverage": round(covered / self.n_items, 4),
                "top1pct_share": round(float(np.sort(counts)[-top:].sum() / max(1, counts.sum())), 4)}

    def save(self, folder: Path) -> Path:
        """Write `folder/lists.npz` atomically; returns its path."""
        path = Path(folder) / LISTS_FILE
        atomic_save_npz(path, items=self.items, scores=self.scores, include_observed=self.include_observed,
                        seed=self.seed, n_items=self.n_items)
        return path

    @classmethod
    def load(cls, folder: Path) -> GeneratedLists:
        """Read `folder/lists.npz` (as `save` wrote it)."""
        with np.load(Path(folder) / LISTS_FILE, allow_pickle=False) as data:
            return cls(items=data["items"].astype(np.int64), scores=data["scores"].astype(np.float32),
                       include_observed=bool(data["include_observed"]), seed=int(data["seed"]),
                       n_items=int(data["n_items"]))


def gumbel_like(scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise of `scores`' shape, drawn from `generator` (on the scores' device)."""
    uniform = torch.rand(scores.shape, generator=generator, device=scores.device, dtype=torch.float32)
    return -torch.log(-torch.log(uniform.clamp_(1e-12, 1.0 - 1e-7)))


@torch.no_grad()
def top_lists(
    score_all: ScoreAll,
    train: ItemSets,
    length: int,
    include_observed: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    temperature: float = 0.0,
) -> GeneratedLists:
    """Top-`length` items per user of any scorer `score_all(users) -> [B, n]`; with `include_observed=False` the
    user's training items are left out; with `temperature` > 0 a Gumbel-top-L draw from softmax(scores / tau),
    seeded by `seed` (same seed, same lists). `scores` of the result are the scorer's, without the noise."""
    if not 0 < length <= train.n_items:
        raise ValueError(f"list length must lie in [1, {train.n_items}], got {length}")
    if not temperature >= 0:
        raise ValueError(f"the noise temperature must be non-negative, got {temperature}")
    device = torch.device(device)
    noise = torch.Generator(device=device).manual_seed(seed)
    items_out = np.empty((train.n_users, length), dtype=np.int64)
    scores_out = np.empty((train.n_users, length), dtype=np.float32)
    for start in range(0, train.n_users, batch_size):
        users = np.arange(start, min(start + batch_size, train.n_users), dtype=np.int64)
        scores = score_all(torch.as_tensor(users, device=device)).float()
        ranked = scores / temperature + gumbel_like(scores, noise) if temperature > 0 else scores.clone()
        if not include_observed:
            rows, cols = train.gather(users)
            ranked[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = -torch.inf
        top = torch.topk(ranked, length, dim=1).indices
        items_out[users] = top.cpu().numpy()
        scores_out[users] = scores.gather(1, top).cpu().numpy()
    return GeneratedLists(
        items=items_out, scores=scores_out, include_observed=include_observed, seed=seed, n_items=train.n_items
    )


__all__ = ["LISTS_FILE", "GeneratedLists", "ScoreAll", "gumbel_like", "top_lists"]
