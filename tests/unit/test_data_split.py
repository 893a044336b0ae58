"""Leave-one-out split on hand-made tables whose validation and test items are known."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from data_owner.data import InteractionTable, LeaveOneOutSplit, check_no_leakage, leave_one_out_split, load_user_lists


def external(split: LeaveOneOutSplit, user: str) -> tuple[list[int], int, int]:
    """(sorted training items, validation item, test item) of a user, all as external ids (-1 = none)."""
    u = int(np.flatnonzero(split.user_ids == user)[0])
    train = sorted(split.item_ids[split.train.row(u)].tolist())
    valid = int(split.item_ids[split.valid_item[u]]) if split.valid_item[u] >= 0 else -1
    test = int(split.item_ids[split.test_item[u]]) if split.test_item[u] >= 0 else -1
    return train, valid, test


def timed_table() -> InteractionTable:
    rows = [
        # user, item, timestamp
        ("A", 10, 1), ("A", 30, 5), ("A", 20, 5), ("A", 40, 3),  # tie at the last timestamp: 20 < 30
        ("B", 50, 2), ("B", 10, 2), ("B", 20, 2),  # all tied: ordered 10, 20, 50
        ("C", 10, 1), ("C", 20, 2),  # only two interactions
        ("D", 10, 1), ("D", 20, 2), ("D", 30, 3), ("D", 10, 4),  # duplicate: the later 10 (ts 4) is kept
    ]  # fmt: skip
    users, items, timestamps = (np.array(column) for column in zip(*rows, strict=True))
    return InteractionTable.from_external(users, items, timestamps, source="hand-made")


def test_split_orders_by_timestamp_then_item_id() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timestamps present: no warning
        split = leave_one_out_split(timed_table())
    assert split.has_timestamps
    assert (split.n_users, split.n_items) == (4, 5)
    assert external(split, "A") == ([10, 40], 20, 30)
    assert external(split, "B") == ([10], 20, 50)
    assert external(split, "D") == ([20], 30, 10)
    assert split.train.n_users == 4 and split.train.n_items == 5
    assert split.valid_item.dtype == np.int64 and split.test_item.dtype == np.int64


def test_user_with_fewer_than_three_interactions_is_train_only(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="data_owner.data.split"):
        split = leave_one_out_split(timed_table())
    assert external(split, "C") == ([10, 20], -1, -1)
    assert split.user_ids[split.eval_users].tolist() == ["A", "B", "D"]
    assert "1 user(s) with fewer than 3 interactions" in caplog.text
    assert "4 users (3 evaluated, 1 with < 3 interactions train-only), 5 items, 6 train / 3 valid / 3 test" in (
        split.summary()
    )


def test_split_does_not_mutate_the_table() -> None:
    table = timed_table()
    before = table.frame.copy()
    leave_one_out_split(table)
    assert table.frame.equals(before)


def test_file_order_split_warns(tmp_path: Path) -> None:
    path = tmp_path / "users.dat"
    path.write_text("4 9 3 7 1\n2 5 6\n3 2 2 8\n")  # user 2 lists item 2 twice
    table = load_user_lists(path)
    with pytest.warns(UserWarning, match="no timestamps: the leave-one-out split uses file order"):
        split = leave_one_out_split(table)
    assert not split.has_timestamps
    assert external(split, 0) == ([3, 9], 7, 1)
    assert external(split, 1) == ([5, 6], -1, -1)
    assert external(split, 2) == ([2, 8], -1, -1)  # duplicates merged first: 2 distinct items, not evaluated
    assert split.eval_users.tolist() == [0]


def test_leakage_guard_rejects_tampered_splits() -> None:
    split = leave_one_out_split(timed_table())
    check_no_leakage(split)
    a = int(np.flatnonzero(split.user_ids == "A")[0])
    train_item = int(split.train.row(a)[0])

    leaked_valid = split.valid_item.copy()
    leaked_valid[a] = train_item
    with pytest.raises(ValueError, match=rf"user {a} \(external id 'A'\) has its validation item {train_item}"):
        check_no_leakage(replace(split, valid_item=leaked_valid))

    leaked_test = split.test_item.copy()
    leaked_test[a] = train_item
    with pytest.raises(ValueError, match=rf"user {a} .* test item {train_item} \(external id 10\) in its training"):
        check_no_leakage(replace(split, test_item=leaked_test))

    same = split.test_item.copy()
    same[a] = split.valid_item[a]
    with pytest.raises(ValueError, match=rf"user {a} .* same validation and test item"):
        check_no_leakage(replace(split, test_item=same))
