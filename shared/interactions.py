"""Per-user item sets in compressed-sparse-row form, the one sparse structure every room passes around.

`ItemSets` holds, for each user u (0..n_users-1), the sorted, unique item indices
`indices[indptr[u]:indptr[u + 1]]`. It is how training positives, exclusion masks and generated lists travel
between the data pipeline, the samplers and the evaluator, without pulling scipy into `shared/`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ItemSets:
    """CSR item sets: row u is `indices[indptr[u]:indptr[u+1]]`, sorted and unique within the row."""

    indptr: np.ndarray  # int64 [n_users + 1]
    indices: np.ndarray  # int64 [nnz]
    n_items: int

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or self.indptr.size == 0 or self.indptr[0] != 0:
            raise ValueError("indptr must be a 1-d array starting at 0")
        if self.indptr[-1] != self.indices.size:
            raise ValueError(f"indptr[-1]={self.indptr[-1]} does not match len(indices)={self.indices.size}")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= self.n_items):
            raise ValueError(f"item indices must lie in [0, {self.n_items})")

    @property
    def n_users(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def row(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def user_of_each_entry(self) -> np.ndarray:
        """The user index of every stored (user, item) entry, aligned with `indices`."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), self.lengths())

    def keys(self) -> np.ndarray:
        """Sorted int64 keys user * n_items + item, for vectorised membership tests."""
        return self.user_of_each_entry() * self.n_items + self.indices

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean array: is items[k] in the set of users[k]?"""
        keys = self.keys()
        query = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if keys.size == 0:
            return np.zeros(query.shape, dtype=bool)
        pos = np.searchsorted(keys, query)
        pos = np.minimum(pos, keys.size - 1)
        return keys[pos] == query

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> ItemSets:
        """Build from (user, item) pairs; duplicates are merged."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape:
            raise ValueError("users and items must have the same shape")
        if users.size and (users.min() < 0 or users.max() >= n_users):
            raise ValueError(f"user indices must lie in [0, {n_users})")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"item indices must lie in [0, {n_items})")
        keys = np.sort(users * n_items + items)
        if keys.size:
            keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
        rows = keys // n_items
        indices = keys % n_items
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
        return cls(indptr=indptr, indices=indices.astype(np.int64), n_items=n_items)

    @classmethod
    def from_lists(cls, lists: list[np.ndarray] | list[list[int]], n_items: int) -> ItemSets:
        users = np.concatenate(
            [np.full(len(row), u, dtype=np.int64) for u, row in enumerate(lists)] or [np.empty(0, np.int64)]
        )
        items = np.concatenate([np.asarray(row, dtype=np.int64) for row in lists] or [np.empty(0, np.int64)])
        return cls.from_pairs(users, items, len(lists), n_items)

    def to_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.user_of_each_entry(), self.indices.copy()

    def subset_users(self, users: np.ndarray) -> ItemSets:
        """Item sets of the given users, in the given order (row k is users[k])."""
        users = np.asarray(users, dtype=np.int64)
        lengths = self.lengths()[users]
        indptr = np.zeros(users.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        if users.size:
            indices = np.concatenate([self.row(int(u)) for u in users])
        else:
            indices = np.empty(0, dtype=np.int64)
        return ItemSets(indptr=indptr, indices=indices, n_items=self.n_items)

    def gather(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in `users`, item) for every item in the rows of `users`, vectorised."""
        users = np.asarray(users, dtype=np.int64)
        starts = self.indptr[users]
        lengths = self.indptr[users + 1] - starts
        positions = np.repeat(np.arange(users.size, dtype=np.int64), lengths)
        offsets = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return positions, self.indices[np.repeat(starts, lengths) + offsets]
