"""Interaction filters applied before the split: minimum user / item counts (k-core) and de-duplication.

Both return a new `InteractionTable` and never touch the input. Filters re-index users and items densely,
keeping only those that still have interactions; internal indices stay in sorted external-id order, and the
external ids travel along in `user_ids` / `item_ids`.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from data_owner.data.table import InteractionTable

logger = logging.getLogger(__name__)


def reindex(table: InteractionTable, keep: np.ndarray | None = None) -> InteractionTable:
    """The rows where `keep` is True (all rows if None), with users and items re-indexed densely over the
    ones that remain. Row order is preserved."""
    frame = table.frame
    if keep is not None:
        frame = frame.loc[np.asarray(keep, dtype=bool)]
    used_users, users = np.unique(frame["user"].to_numpy(), return_inverse=True)
    used_items, items = np.unique(frame["item"].to_numpy(), return_inverse=True)
    columns: dict[str, np.ndarray] = {
        "user": users.astype(np.int64).ravel(),
        "item": items.astype(np.int64).ravel(),
    }
    if table.has_timestamps:
        columns["timestamp"] = frame["timestamp"].to_numpy().copy()
    return InteractionTable(
        frame=pd.DataFrame(columns),
        user_ids=table.user_ids[used_users],
        item_ids=table.item_ids[used_items],
        source=table.source,
    )


def filter_min_interactions(
    table: InteractionTable, min_user: int = 0, min_item: int = 0, iterate: bool = False
) -> InteractionTable:
    """Keep users with >= `min_user` interactions and items with >= `min_item` interactions.

    One pass counts users and items on the same table and drops every row whose user or item falls short
    (counts are rows, so run `deduplicate` first to count distinct pairs). Dropping rows can push other users
    or items below the threshold; `iterate=True` repeats until nothing changes (the k-core). The result is
    re-indexed densely.
    """
    for name, value in (("min_user", min_user), ("min_item", min_item)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    users = table.frame["user"].to_numpy()
    items = table.frame["item"].to_numpy()
    keep = np.ones(len(users), dtype=bool)
    passes = 0
    while True:
        step = keep.copy()
        if min_user > 0:
            user_counts = np.bincount(users[keep], minlength=table.n_users)
            step &= user_counts[users] >= min_user
        if min_item > 0:
            item_counts = np.bincount(items[keep], minlength=table.n_items)
            step &= item_counts[items] >= min_item
        if np.array_equal(step, keep):
            break
        keep = step
        passes += 1
        if not iterate:
            break
    result = reindex(table, keep)
    if len(result) == 0:
        logger.warning(
            "filter_min_interactions(%s, min_user=%d, min_item=%d): no interactions left",
            table.source,
            min_user,
            min_item,
        )
    logger.info(
        "filter_min_interactions(%s, min_user=%d, min_item=%d, iterate=%s): dropped %d users, %d items, "
        "%d interactions in %d pass(es) that removed rows; %d users, %d items, %d interactions remain",
        table.source,
        min_user,
        min_item,
        iterate,
        table.n_users - result.n_users,
        table.n_items - result.n_items,
        len(table) - len(result),
        passes,
        result.n_users,
        result.n_items,
        len(result),
    )
    return result


def deduplicate(table: InteractionTable) -> InteractionTable:
    """One row per (user, item) pair: the LAST occurrence, by timestamp and then by file order.

    The kept rows stay where they were in file order; users and items are unchanged (every pair keeps a row).
    """
    users = table.frame["user"].to_numpy().astype(np.int64)
    items = table.frame["item"].to_numpy().astype(np.int64)
    position = np.arange(users.size)
    pair = users * max(table.n_items, 1) + items
    if table.has_timestamps:
        order = np.lexsort((position, table.frame["timestamp"].to_numpy(), pair))
    else:
        order = np.lexsort((position, pair))
    sorted_pair = pair[order]
    last_of_pair = np.ones(order.size, dtype=bool)
    last_of_pair[:-1] = sorted_pair[:-1] != sorted_pair[1:]
    keep = np.zeros(users.size, dtype=bool)
    keep[order[last_of_pair]] = True
    dropped = int(users.size - keep.sum())
    logger.info(
        "deduplicate(%s): dropped %d duplicate (user, item) row(s), kept the last occurrence of each",
        table.source,
        dropped,
    )
    if dropped == 0:
        return replace(table, frame=table.frame.copy())
    return replace(table, frame=table.frame.loc[keep].reset_index(drop=True))
