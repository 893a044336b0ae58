"""The typed interaction table every loader returns, whatever the file format.

An `InteractionTable` is a DataFrame with int64 columns `user` and `item` (dense internal indices, 0-based),
an optional float64/int64 column `timestamp`, and the external ids kept in `user_ids[user]` / `item_ids[item]`.
Rows are in file order; `has_timestamps` says whether `timestamp` exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class InteractionTable:
    frame: pd.DataFrame  # columns: user, item[, timestamp]; never mutated after construction
    user_ids: np.ndarray  # external user id of each internal user index (object or int array)
    item_ids: np.ndarray  # external item id of each internal item index
    source: str  # file path or dataset name, for messages

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.frame.columns

    @property
    def n_users(self) -> int:
        return int(len(self.user_ids))

    @property
    def n_items(self) -> int:
        return int(len(self.item_ids))

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def from_external(
        cls, users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None, source: str
    ) -> InteractionTable:
        """Index external ids densely. Internal indices follow the sorted order of the external ids, so the
        tie rule "by item id" in the split is the same for external and internal ids."""
        user_ids, user_index = np.unique(np.asarray(users), return_inverse=True)
        item_ids, item_index = np.unique(np.asarray(items), return_inverse=True)
        columns: dict[str, np.ndarray] = {
            "user": user_index.astype(np.int64).ravel(),
            "item": item_index.astype(np.int64).ravel(),
        }
        if timestamps is not None:
            columns["timestamp"] = np.asarray(timestamps)
        return cls(frame=pd.DataFrame(columns), user_ids=user_ids, item_ids=item_ids, source=source)

    def summary(self) -> str:
        return f"{self.source}: {self.n_users} users, {self.n_items} items, {len(self)} interactions"
