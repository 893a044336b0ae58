"""Generated recommendation lists GF(I)_u: the top-L items of GF_u (GD-REC section 3.1), and GF_u as a scorer.

Whether a user's own training items may appear in the list is a privacy switch: the paper lets them appear
(`include_observed=True`); `include_observed=False` lists only items outside the user's training set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from data_owner.gan.cgan import Generator, _bags, _noise
from shared.interactions import ItemSets


@dataclass(frozen=True)
class GeneratedLists:
    items: np.ndarray  # int64 [n_users, L], best first
    scores: np.ndarray  # float32 [n_users, L], GF_u of each listed item
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


def generator_scorer(G: Generator, train: ItemSets, seed: int = 0):
    """A `score_all(users) -> [B, n]` view of GF_u (seeded noise), for evaluation and list building."""
    device = next(G.parameters()).device
    gen_rng = torch.Generator(device=device).manual_seed(seed)

    @torch.no_grad()
    def score_all(users: torch.Tensor) -> torch.Tensor:
        batch = users.detach().cpu().numpy().astype(np.int64)
        items, offsets = _bags(train, batch, device)
        return G(items, offsets, _noise(batch.size, G.noise_dim, gen_rng, device))

    return score_all


@torch.no_grad()
def generated_lists(
    G: Generator,
    train: ItemSets,
    length: int,
    include_observed: bool = True,
    seed: int = 0,
    batch_size: int = 256,
) -> GeneratedLists:
    """Top-`length` items of GF_u for every user (same seed, same lists)."""
    device = next(G.parameters()).device
    return top_lists(generator_scorer(G, train, seed), train, length, include_observed, seed, device, batch_size)


@torch.no_grad()
def top_lists(
    score_all: Callable[[torch.Tensor], torch.Tensor],
    train: ItemSets,
    length: int,
    include_observed: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> GeneratedLists:
    """Top-`length` items per user of any scorer `score_all(users) -> [B, n]` (GF_u, or a reference model's
    scores); with `include_observed=False` the user's training items are left out."""
    if not 0 < length <= train.n_items:
        raise ValueError(f"list length must lie in [1, {train.n_items}], got {length}")
    device = torch.device(device)
    items_out = np.empty((train.n_users, length), dtype=np.int64)
    scores_out = np.empty((train.n_users, length), dtype=np.float32)
    for start in range(0, train.n_users, batch_size):
        users = np.arange(start, min(start + batch_size, train.n_users), dtype=np.int64)
        scores = score_all(torch.as_tensor(users, device=device)).float()
        if not include_observed:
            rows, cols = train.gather(users)
            scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = -torch.inf
        top = torch.topk(scores, length, dim=1)
        items_out[users] = top.indices.cpu().numpy()
        scores_out[users] = top.values.cpu().numpy()
    return GeneratedLists(
        items=items_out, scores=scores_out, include_observed=include_observed, seed=seed, n_items=train.n_items
    )
