"""Loaders and filters on tiny hand-written files whose parse is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_owner.data import (
    DataFormatError,
    InteractionTable,
    deduplicate,
    filter_min_interactions,
    load_movielens_ratings_dat,
    load_movielens_udata,
    load_recbole_inter,
    load_table,
    load_user_lists,
)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def external_pairs(table: InteractionTable) -> list[tuple[object, object]]:
    """(external user, external item) of every row, in row order."""
    users = table.user_ids[table.frame["user"].to_numpy()]
    items = table.item_ids[table.frame["item"].to_numpy()]
    return list(zip(users.tolist(), items.tolist(), strict=True))


# ---------------------------------------------------------------------------------------------------- u.data


def test_udata_parses_ids_and_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n")
    table = load_movielens_udata(path)
    assert (table.n_users, table.n_items, len(table)) == (2, 3, 3)
    assert table.user_ids.tolist() == [186, 196]
    assert table.item_ids.tolist() == [242, 302, 377]
    assert external_pairs(table) == [(196, 242), (186, 302), (196, 377)]
    assert table.has_timestamps
    assert table.frame["timestamp"].tolist() == [881250949, 891717742, 878887116]
    assert table.frame["user"].dtype == np.int64 and table.frame["item"].dtype == np.int64
    assert table.source == str(path)


def test_udata_accepts_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", "1\t2\t5\t10\r\n\r\n3\t4\t1\t20\r\n")
    table = load_movielens_udata(path)
    assert external_pairs(table) == [(1, 2), (3, 4)]
    assert table.frame["timestamp"].tolist() == [10, 20]


@pytest.mark.parametrize(
    ("text", "line", "shown"),
    [
        ("1\t1\t5\t10\n" * 16 + "abc\t1\n" + "2\t2\t5\t10\n", 17, "'abc\\t1'"),  # the brief's example
        ("1\t1\t5\t10\n2\t2\t5\n", 2, "'2\\t2\\t5'"),  # too few fields
        ("1\t1\t5\t10\n2\t2\t5\t10\t99\n", 2, "'2\\t2\\t5\\t10\\t99'"),  # too many fields
        ("1\t1\t5\t10\n\n2\t2\tx\t10\n", 3, "'2\\t2\\tx\\t10'"),  # not an integer, after a blank line
        ("1 1 5 10\n", 1, "'1 1 5 10'"),  # spaces instead of tabs
        ("user\titem\trating\ttimestamp\n1\t1\t5\t10\n", 1, "'user\\titem\\trating\\ttimestamp'"),  # a header
    ],
)
def test_udata_malformed_names_file_and_line(tmp_path: Path, text: str, line: int, shown: str) -> None:
    path = write(tmp_path, "u.data", text)
    with pytest.raises(DataFormatError) as caught:
        load_movielens_udata(path)
    message = str(caught.value)
    assert message.startswith(f"{path} line {line}: expected 4 tab-separated integer fields")
    assert message.endswith(f"got {shown}")
    assert caught.value.line == line


def test_udata_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"u\.data: file is empty"):
        load_movielens_udata(write(tmp_path, "u.data", "\n"))


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GDREC_DATA_DIR") as caught:
        load_movielens_udata(tmp_path / "nope" / "u.data")
    assert str(tmp_path / "nope" / "u.data") in str(caught.value)


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", b"1\t1\t5\t10\n2\t\xff\t5\t10\n")
    with pytest.raises(DataFormatError, match=r"u\.data line 2: expected UTF-8 text"):
        load_movielens_udata(path)


# ---------------------------------------------------------------------------------------------------- ratings.dat


def test_ratings_dat_parses(tmp_path: Path) -> None:
    path = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    table = load_movielens_ratings_dat(path)
    assert (table.n_users, table.n_items, len(table)) == (2, 2, 3)
    assert external_pairs(table) == [(1, 1193), (1, 661), (2, 1193)]
    assert table.frame["timestamp"].tolist() == [978300760, 978302109, 978298413]


def test_ratings_dat_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661:3::978302109\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat line 2: expected 4 '::'-separated integer fields"):
        load_movielens_ratings_dat(path)


# ---------------------------------------------------------------------------------------------------- users.dat


def test_user_lists_line_number_is_the_user_and_file_order_is_kept(tmp_path: Path) -> None:
    # line 0: 3 items; 1: empty; 2: 2 items (trailing space); 3: count 0; 4: 1 item, no final newline
    path = write(tmp_path, "users.dat", "3 5 1 9\n\n2 7 5 \n0\n1 5")
    table = load_user_lists(path)
    assert not table.has_timestamps
    assert table.user_ids.tolist() == [0, 2, 4]
    assert table.item_ids.tolist() == [1, 5, 7, 9]
    assert external_pairs(table) == [(0, 5), (0, 1), (0, 9), (2, 7), (2, 5), (4, 5)]


def test_user_lists_crlf(tmp_path: Path) -> None:
    table = load_user_lists(write(tmp_path, "users.dat", "2 1 2\r\n1 3\r\n"))
    assert external_pairs(table) == [(0, 1), (0, 2), (1, 3)]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "2 1 2\n3 4 5\n",
            2,
            "expected the leading count (3) to equal the number of items that follow (2), got '3 4 5'",
        ),
        ("2 1 2\n\n1 4 5\n", 3, "leading count (1) to equal the number of items that follow (2)"),
        ("2 1 2\n1 4\n2 4 x\n", 3, "expected whitespace-separated integers '<count> <item> <item> ...', got '2 4 x'"),
        ("1 1.5\n", 1, "got '1 1.5'"),
        ("1 99999999999999999999999\n", 1, "whitespace-separated integers"),
    ],
)
def test_user_lists_malformed(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, "users.dat", text)
    with pytest.raises(DataFormatError) as caught:
        load_user_lists(path)
    assert str(caught.value).startswith(f"{path} line {line}: ")
    assert fragment in str(caught.value)


def test_user_lists_without_items(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no interactions"):
        load_user_lists(write(tmp_path, "users.dat", "\n0\n\n"))


# ---------------------------------------------------------------------------------------------------- tables


def test_csv_with_string_ids_and_dates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "log.csv",
        "who,what,when,extra\nbob,x1,2020-01-01T00:00:10Z,a\nann,x2,2020-01-01T00:00:00Z,b\nbob,x2,1970-01-01,c\n",
    )
    table = load_table(path, user_col="who", item_col="what", timestamp_col="when")
    assert table.user_ids.tolist() == ["ann", "bob"]
    assert external_pairs(table) == [("bob", "x1"), ("ann", "x2"), ("bob", "x2")]
    assert table.frame["timestamp"].tolist() == [1577836810.0, 1577836800.0, 0.0]


def test_tsv_with_integer_ids_and_numeric_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "log.tsv", "user\titem\tts\n10\t7\t100\n\n3\t7\t90\n")
    table = load_table(path, user_col="user", item_col="item", timestamp_col="ts")
    assert table.user_ids.dtype == np.int64
    assert external_pairs(table) == [(10, 7), (3, 7)]
    assert table.frame["timestamp"].tolist() == [100, 90]


def test_ids_with_leading_zeros_stay_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "log.csv", "user,item\n01,5\n1,6\n")
    table = load_table(path, "user", "item")
    assert table.user_ids.tolist() == ["01", "1"]
    assert table.item_ids.tolist() == [5, 6]


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame({"u": [5, 6, 5], "i": ["a", "b", "c"], "t": [3.0, 1.0, 2.0]}).to_parquet(path)
    table = load_table(path, "u", "i", "t")
    assert external_pairs(table) == [(5, "a"), (6, "b"), (5, "c")]
    assert table.frame["timestamp"].tolist() == [3.0, 1.0, 2.0]


def test_parquet_missing_value_names_row(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame({"u": [5.0, None], "i": ["a", "b"]}).to_parquet(path)
    with pytest.raises(DataFormatError, match=r"log\.parquet row 2: expected"):
        load_table(path, "u", "i")


def test_table_missing_column_lists_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "log.csv", "user,item,rating\n1,2,3\n")
    with pytest.raises(DataFormatError) as caught:
        load_table(path, "user", "movie", "time")
    message = str(caught.value)
    assert "no column 'movie' (item_col), 'time' (timestamp_col)" in message
    assert "columns found: ['user', 'item', 'rating']" in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("user,item,ts\n1,2,3\n1,,4\n", 3, "expected a value in column 'item', got '1,,4'"),
        ("user,item,ts\n1,2,3\n\n1,2,3,4\n", 4, "expected 3 fields separated by ',' like the header"),
        ("user,item,ts\n1,2,3\n1,3\n", 3, "expected 3 fields"),
        ("user,item,ts\n1,2,3\n1,3,soon\n", 3, "expected a number or a date/time in column 'ts'"),
    ],
)
def test_csv_malformed_names_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, "log.csv", text)
    with pytest.raises(DataFormatError) as caught:
        load_table(path, "user", "item", "ts")
    assert str(caught.value).startswith(f"{path} line {line}: ")
    assert fragment in str(caught.value)


def test_table_unknown_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "log.json", "{}")
    with pytest.raises(ValueError, match="cannot infer the format"):
        load_table(path, "user", "item")
    table = load_table(write(tmp_path, "log.psv", "user|item\n1|2\n"), "user", "item", sep="|")
    assert external_pairs(table) == [(1, 2)]


def test_recbole_inter(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ml.inter",
        'user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t"302\t3\t891717742\n',
    )
    table = load_recbole_inter(path)
    assert external_pairs(table) == [(196, "242"), (186, '"302')]
    assert table.frame["timestamp"].tolist() == [881250949, 891717742]


def test_recbole_inter_integer_tokens_become_ints(tmp_path: Path) -> None:
    path = write(tmp_path, "a.inter", "item_id:token\tuser_id:token\n242\t196\n302\t186\n")
    table = load_recbole_inter(path)
    assert not table.has_timestamps
    assert external_pairs(table) == [(196, 242), (186, 302)]


def test_recbole_inter_bad_header_and_row(tmp_path: Path) -> None:
    path = write(tmp_path, "a.inter", "user_id:token\trating:float\n1\t2\n")
    with pytest.raises(DataFormatError, match=r"a\.inter line 1: expected a RecBole header .*fields found"):
        load_recbole_inter(path)
    path = write(tmp_path, "b.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t\t4\n")
    with pytest.raises(DataFormatError, match=r"b\.inter line 3: expected a value in column 'item_id:token'"):
        load_recbole_inter(path)


# ---------------------------------------------------------------------------------------------------- filters


def chain_table() -> InteractionTable:
    """One pass with min 2 drops only (u2, c); that leaves u2 with one item, so a second pass drops it."""
    users = np.array(["u0", "u0", "u1", "u1", "u2", "u2"])
    items = np.array(["a", "b", "a", "b", "b", "c"])
    return InteractionTable.from_external(users, items, None, source="chain")


def test_filter_one_pass_differs_from_iterated() -> None:
    table = chain_table()
    before = table.frame.copy()
    one = filter_min_interactions(table, min_user=2, min_item=2)
    assert (one.n_users, one.n_items, len(one)) == (3, 2, 5)
    assert external_pairs(one) == [("u0", "a"), ("u0", "b"), ("u1", "a"), ("u1", "b"), ("u2", "b")]
    core = filter_min_interactions(table, min_user=2, min_item=2, iterate=True)
    assert (core.n_users, core.n_items, len(core)) == (2, 2, 4)
    assert core.user_ids.tolist() == ["u0", "u1"]
    assert core.frame["user"].tolist() == [0, 0, 1, 1]  # dense re-index
    pd.testing.assert_frame_equal(table.frame, before)  # input untouched
    assert table.n_users == 3


def test_filter_reindexes_items_that_disappear_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    users = np.array([0, 0, 0, 1, 2, 2, 2])
    items = np.array([10, 11, 12, 99, 10, 11, 13])
    table = InteractionTable.from_external(users, items, np.arange(7), source="t")
    with caplog.at_level("INFO", logger="data_owner.data.filters"):
        kept = filter_min_interactions(table, min_user=3)
    assert kept.user_ids.tolist() == [0, 2]
    assert kept.item_ids.tolist() == [10, 11, 12, 13]  # item 99 only had user 1
    assert kept.frame["timestamp"].tolist() == [0, 1, 2, 4, 5, 6]
    assert "dropped 1 users, 1 items, 1 interactions in 1 pass(es)" in caplog.text


def test_filter_rejects_bad_thresholds() -> None:
    with pytest.raises(ValueError, match="min_user must be a non-negative integer"):
        filter_min_interactions(chain_table(), min_user=-1)


def test_deduplicate_keeps_last_by_timestamp_then_file_order(caplog: pytest.LogCaptureFixture) -> None:
    users = np.array([0, 0, 0, 0])
    items = np.array([1, 2, 1, 2])
    timed = InteractionTable.from_external(users, items, np.array([5, 3, 2, 3]), source="t")
    with caplog.at_level("INFO", logger="data_owner.data.filters"):
        kept = deduplicate(timed)
    # (0,1): ts 5 beats the later row with ts 2; (0,2): equal ts 3, the later row wins
    assert kept.frame.to_numpy().tolist() == [[0, 0, 5], [0, 1, 3]]
    assert kept.frame.index.tolist() == [0, 1]
    assert "dropped 2 duplicate" in caplog.text
    untimed = InteractionTable.from_external(users, items, None, source="u")
    assert deduplicate(untimed).frame.to_numpy().tolist() == [[0, 0], [0, 1]]
    assert len(timed) == 4
