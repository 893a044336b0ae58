"""Leave-one-out split (GD-REC paper protocol, ALGORITHMS.md section 6): per user, the last interaction is
the test item and the second last the validation item; everything before is training data.

The rule, exactly:
1. Duplicate (user, item) rows are merged first, keeping the last occurrence (`filters.deduplicate`), so an
   item can never be both a training item and a held-out item of the same user.
2. With timestamps, each user's interactions are ordered by timestamp ascending, ties broken by item id
   ascending (internal item index order, which is the sorted order of the external ids). Among interactions
   sharing the last timestamp the one with the largest item id is therefore the test item.
3. Without timestamps the file order is used (the last row of the user in the file is the test item) and a
   `UserWarning` says so. For citeulike-t, whose lines are sorted by item id, "last" is the largest item id.
4. Users with fewer than 3 interactions keep everything in training and are not evaluated
   (`valid_item` and `test_item` are -1 for them).
`check_no_leakage` verifies the result before it is returned.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np

from data_owner.data.filters import deduplicate
from data_owner.data.table import InteractionTable
from shared.interactions import ItemSets

logger = logging.getLogger(__name__)

MIN_INTERACTIONS_FOR_EVALUATION = 3


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Training item sets plus one validation and one test item per user (-1 where the user has none)."""

    train: ItemSets  # per-user training items, n_users rows
    valid_item: np.ndarray  # int64 [n_users], -1 = none
    test_item: np.ndarray  # int64 [n_users], -1 = none
    user_ids: np.ndarray  # external id of each internal user index
    item_ids: np.ndarray  # external id of each internal item index
    has_timestamps: bool
    source: str = ""

    @property
    def n_users(self) -> int:
        return int(len(self.user_ids))

    @property
    def n_items(self) -> int:
        return int(len(self.item_ids))

    @property
    def eval_users(self) -> np.ndarray:
        """Internal indices of the users that have both a validation and a test item (int64, ascending)."""
        return np.flatnonzero((self.valid_item >= 0) & (self.test_item >= 0)).astype(np.int64)

    def summary(self) -> str:
        n_eval = int(self.eval_users.size)
        order = "timestamp (ties by item id)" if self.has_timestamps else "file order (no timestamps)"
        return (
            f"{self.source or 'split'}: {self.n_users} users ({n_eval} evaluated, {self.n_users - n_eval} with "
            f"< {MIN_INTERACTIONS_FOR_EVALUATION} interactions train-only), {self.n_items} items, "
            f"{self.train.nnz} train / {int((self.valid_item >= 0).sum())} valid / "
            f"{int((self.test_item >= 0).sum())} test interactions, ordered by {order}"
        )


def leave_one_out_split(table: InteractionTable) -> LeaveOneOutSplit:
    """Split `table` per the module's rule: last interaction = test, second last = validation."""
    started = time.perf_counter()
    deduped = deduplicate(table)
    users = deduped.frame["user"].to_numpy().astype(np.int64)
    items = deduped.frame["item"].to_numpy().astype(np.int64)
    n_users, n_items = deduped.n_users, deduped.n_items
    if deduped.has_timestamps:
        timestamps = deduped.frame["timestamp"].to_numpy()
        if np.issubdtype(timestamps.dtype, np.floating) and np.isnan(timestamps).any():
            raise ValueError(f"{table.source}: timestamps contain NaN; fix or drop those rows before splitting")
        order = np.lexsort((items, timestamps, users))
    else:
        warnings.warn(
            f"{table.source} has no timestamps: the leave-one-out split uses file order (each user's last row "
            "is the test item, the second last the validation item)",
            UserWarning,
            stacklevel=2,
        )
        order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    sorted_items = items[order]

    counts = np.bincount(users, minlength=n_users)
    ends = np.cumsum(counts)
    evaluated = counts >= MIN_INTERACTIONS_FOR_EVALUATION
    valid_item = np.full(n_users, -1, dtype=np.int64)
    test_item = np.full(n_users, -1, dtype=np.int64)
    test_item[evaluated] = sorted_items[ends[evaluated] - 1]
    valid_item[evaluated] = sorted_items[ends[evaluated] - 2]
    in_train = np.ones(sorted_items.size, dtype=bool)
    in_train[ends[evaluated] - 1] = False
    in_train[ends[evaluated] - 2] = False
    train = _item_sets(sorted_users[in_train], sorted_items[in_train], n_users, n_items)

    split = LeaveOneOutSplit(
        train=train,
        valid_item=valid_item,
        test_item=test_item,
        user_ids=deduped.user_ids,
        item_ids=deduped.item_ids,
        has_timestamps=deduped.has_timestamps,
        source=table.source,
    )
    check_no_leakage(split)
    n_short = int(np.count_nonzero(~evaluated & (counts > 0)))
    if n_short:
        logger.info(
            "%s: %d user(s) with fewer than %d interactions keep them all in train and are not evaluated",
            table.source,
            n_short,
            MIN_INTERACTIONS_FOR_EVALUATION,
        )
    if deduped.has_timestamps:
        last_ts = timestamps[order][ends[evaluated] - 1]
        second_ts = timestamps[order][ends[evaluated] - 2]
        logger.info(
            "%s: %d evaluated user(s) have their test and validation items at the same timestamp "
            "(tie broken by item id)",
            table.source,
            int(np.count_nonzero(last_ts == second_ts)),
        )
    logger.info("%s (%.2f s)", split.summary(), time.perf_counter() - started)
    return split


def _item_sets(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> ItemSets:
    """CSR rows from (user, item) pairs that are already unique (the table was de-duplicated). Sorting here
    is much faster than `ItemSets.from_pairs`, whose `np.unique` is hash-based on numpy >= 2.3."""
    order = np.lexsort((items, users))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return ItemSets(indptr=indptr, indices=items[order].astype(np.int64), n_items=n_items)


def _external(ids: np.ndarray, index: int) -> object:
    """An external id as a plain Python value (readable in messages)."""
    value = ids[index]
    return value.item() if isinstance(value, np.generic) else value


def check_no_leakage(split: LeaveOneOutSplit) -> None:
    """Raise ValueError if a user's validation or test item is among its training items, or if the validation
    and test items coincide."""
    for name, held_out in (("validation", split.valid_item), ("test", split.test_item)):
        if held_out.shape != (split.n_users,):
            raise ValueError(f"{name} items have shape {held_out.shape}, expected ({split.n_users},)")
        users = np.flatnonzero(held_out >= 0)
        leaked = users[split.train.contains(users, held_out[users])]
        if leaked.size:
            user = int(leaked[0])
            item = int(held_out[user])
            raise ValueError(
                f"leakage in split of {split.source or 'table'}: user {user} (external id "
                f"{_external(split.user_ids, user)!r}) has its {name} item {item} (external id "
                f"{_external(split.item_ids, item)!r}) in its training items ({leaked.size} user(s) affected)"
            )
    same = np.flatnonzero((split.valid_item >= 0) & (split.valid_item == split.test_item))
    if same.size:
        user = int(same[0])
        item = int(split.test_item[user])
        raise ValueError(
            f"leakage in split of {split.source or 'table'}: user {user} (external id "
            f"{_external(split.user_ids, user)!r}) has the same validation and test item {item} (external id "
            f"{_external(split.item_ids, item)!r}) "
            f"({same.size} user(s) affected)"
        )
