"""The CGAN's generated lists GF(I)_u: the top-L items of GF_u (GD-REC section 3.1), and GF_u as a scorer. The list
format itself (`GeneratedLists`, `top_lists`) is `data_owner.lists`, shared by every generator."""

from __future__ import annotations

import numpy as np
import torch

from data_owner.gan.cgan import Generator, _bags, _noise
from data_owner.lists import GeneratedLists, top_lists
from shared.interactions import ItemSets


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


__all__ = ["GeneratedLists", "generated_lists", "generator_scorer", "top_lists"]
