"""Negative sampling and (user, positive, negative) batches for pairwise and pointwise CF losses."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from shared.interactions import ItemSets
from shared.models.base import PairBatch


def sample_negatives(
    users: np.ndarray,
    positives: ItemSets,
    rng: np.random.Generator,
    candidates: np.ndarray | None = None,
    max_rounds: int = 50,
) -> np.ndarray:
    """One item per user drawn uniformly from `candidates` (default: the whole catalog) outside the user's
    positives, by vectorised rejection sampling. Users whose positives cover every candidate raise ValueError."""
    users = np.asarray(users, dtype=np.int64)
    pool_size = positives.n_items if candidates is None else int(candidates.size)

    def draw(count: int) -> np.ndarray:
        picks = rng.integers(0, pool_size, size=count)
        return picks if candidates is None else candidates[picks]

    items = draw(users.size)
    bad = np.flatnonzero(positives.contains(users, items))
    for _ in range(max_rounds):
        if bad.size == 0:
            return items
        items[bad] = draw(bad.size)
        bad = bad[positives.contains(users[bad], items[bad])]
    if bad.size:
        user = int(users[bad[0]])
        raise ValueError(
            f"could not sample a negative item for user {user} in {max_rounds} rounds: "
            f"the user has {positives.row(user).size} positives out of {pool_size} candidate items"
        )
    return items


class TripletSampler:
    """Each epoch: every training pair once, shuffled, with one uniform negative outside the user's positives.

    `exclude` (default: the training sets) are the items never drawn as negatives for a user. `pairs_per_epoch`
    (None: all) caps an epoch at that many distinct pairs drawn uniformly at random, afresh every epoch: the same
    objective in expectation, with the cost of an epoch bounded (a randomized-response matrix can hold hundreds of
    times the true pairs)."""

    def __init__(self, train: ItemSets, batch_size: int = 1000, exclude: ItemSets | None = None,
                 pairs_per_epoch: int | None = None) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if pairs_per_epoch is not None and pairs_per_epoch <= 0:
            raise ValueError(f"pairs_per_epoch must be positive (or None for every pair), got {pairs_per_epoch}")
        if train.nnz == 0:
            raise ValueError("no training interactions to sample from")
        self.users, self.items = train.to_pairs()
        self.exclude = exclude if exclude is not None else train
        self.batch_size = batch_size
        self.per_epoch = self.users.size if pairs_per_epoch is None else min(pairs_per_epoch, self.users.size)

    def __len__(self) -> int:
        return -(-self.per_epoch // self.batch_size)

    def __call__(self, epoch: int, rng: np.random.Generator) -> Iterator[PairBatch]:
        if self.per_epoch == self.users.size:
            order = rng.permutation(self.users.size)
        else:
            order = rng.choice(self.users.size, size=self.per_epoch, replace=False)
        users, items = self.users[order], self.items[order]
        negatives = sample_negatives(users, self.exclude, rng)
        for start in range(0, users.size, self.batch_size):
            sl = slice(start, start + self.batch_size)
            yield PairBatch(torch.from_numpy(users[sl]), torch.from_numpy(items[sl]), torch.from_numpy(negatives[sl]))
