"""Readers for the raw interaction files the data owner holds; each returns an `InteractionTable`.

Formats:
- `load_movielens_udata`: MovieLens 100K `u.data`, tab-separated `user item rating timestamp`.
- `load_movielens_ratings_dat`: MovieLens 1M `ratings.dat`, `user::item::rating::timestamp`.
- `load_user_lists`: the `users.dat` of citeulike-t and Foursquare (HyperKDMA copy): line u (0-based) is
  `<count> <item> <item> ...`, the external user id is the line number, there are no timestamps.
- `load_table`: any CSV / TSV / Parquet file with named user, item (and optional timestamp) columns.
- `load_recbole_inter`: RecBole atomic `.inter` files (`user_id:token<TAB>item_id:token<TAB>...`).

Every rating counts as an interaction (implicit feedback). Files are parsed in one vectorised pass
(pandas / numpy); only when that fails is the file scanned line by line to name the first bad line, so a
`DataFormatError` always says which file, which 1-based line and what was expected there.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data_owner.data.errors import DataFormatError, format_error
from data_owner.data.table import InteractionTable

logger = logging.getLogger(__name__)

_INTEGER = re.compile(r"\s*[+-]?\d+(\.0*)?\s*")
_ASCII_WHITESPACE = np.zeros(256, dtype=bool)
_ASCII_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True  # exactly what bytes.split() splits on

_UDATA_EXPECTED = "4 tab-separated integer fields (user, item, rating, timestamp)"
_RATINGS_DAT_EXPECTED = "4 '::'-separated integer fields (user::item::rating::timestamp)"
_USER_LISTS_EXPECTED = "whitespace-separated integers '<count> <item> <item> ...'"


# --------------------------------------------------------------------------------------------------------------
# Shared helpers


def require_file(path: str | Path, what: str = "data file") -> Path:
    """The path as a `Path`, or FileNotFoundError / IsADirectoryError with a hint."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"{what} not found: {p} (resolved to {p.resolve()}). Check the path; for a named dataset use "
            "data_owner.data.load_dataset(name) and set GDREC_DATA_DIR to the folder that holds it "
            "(e.g. GDREC_DATA_DIR=../shared/datasets)."
        )
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a directory; expected a file")
    return p


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise format_error(path, line, "UTF-8 text", data.split(b"\n")[line - 1]) from exc


def _log_loaded(table: InteractionTable, started: float) -> InteractionTable:
    logger.info(
        "loaded %s: %d users, %d items, %d interactions, %s (%.2f s)",
        table.source,
        table.n_users,
        table.n_items,
        len(table),
        "with timestamps" if table.has_timestamps else "no timestamps",
        time.perf_counter() - started,
    )
    return table


def _require_interactions(path: Path, n: int, expected: str) -> None:
    if n == 0:
        raise DataFormatError(f"{path}: no interactions found; expected {expected}", path=path)


# --------------------------------------------------------------------------------------------------------------
# Fixed-width integer files (MovieLens)


def _read_int_fields(path: Path, sep: str, n_fields: int, expected: str) -> np.ndarray:
    """All non-blank lines of `path` as an int64 array [n_lines, n_fields]."""
    text = _read_text(path)
    if not text.strip():
        raise DataFormatError(f"{path}: file is empty; expected lines of {expected}", path=path)
    cause: Exception | None = None
    try:
        frame = pd.read_csv(
            io.StringIO(text if sep == "\t" else text.replace(sep, "\t")),
            sep="\t",
            header=None,
            dtype=np.int64,
            engine="c",
            quoting=csv.QUOTE_NONE,
        )
        if frame.shape[1] == n_fields:
            return frame.to_numpy(dtype=np.int64)
    except (ValueError, OverflowError) as exc:  # pandas' ParserError is a ValueError
        cause = exc
    raise _locate_bad_int_line(path, text, sep, n_fields, expected, cause)


def _locate_bad_int_line(
    path: Path, text: str, sep: str, n_fields: int, expected: str, cause: Exception | None
) -> DataFormatError:
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split(sep)
        if len(fields) != n_fields or not all(_INTEGER.fullmatch(field) for field in fields):
            return format_error(path, number, expected, line)
    return DataFormatError(f"{path}: could not be parsed as lines of {expected}: {cause}", path=path)


def load_movielens_udata(path: str | Path) -> InteractionTable:
    """MovieLens 100K `u.data`: tab-separated `user item rating timestamp`; every rating is an interaction."""
    started = time.perf_counter()
    p = require_file(path, "MovieLens u.data")
    fields = _read_int_fields(p, "\t", 4, _UDATA_EXPECTED)
    table = InteractionTable.from_external(fields[:, 0], fields[:, 1], fields[:, 3], source=str(p))
    return _log_loaded(table, started)


def load_movielens_ratings_dat(path: str | Path) -> InteractionTable:
    """MovieLens 1M `ratings.dat`: `user::item::rating::timestamp`; every rating is an interaction."""
    started = time.perf_counter()
    p = require_file(path, "MovieLens ratings.dat")
    fields = _read_int_fields(p, "::", 4, _RATINGS_DAT_EXPECTED)
    table = InteractionTable.from_external(fields[:, 0], fields[:, 1], fields[:, 3], source=str(p))
    return _log_loaded(table, started)


# --------------------------------------------------------------------------------------------------------------
# One line per user (citeulike-t, Foursquare)


def load_user_lists(path: str | Path) -> InteractionTable:
    """`users.dat`: line u (0-based, the external user id) is `<count> <item> <item> ...`, no timestamps.

    The leading count must equal the number of items that follow. Empty lines are users without items:
    they are skipped but still take their line number. Rows keep file order (user by user, items in the
    order written), which is the order a leave-one-out split falls back to without timestamps.
    """
    started = time.perf_counter()
    p = require_file(path, "user-lists file (users.dat)")
    data = p.read_bytes()
    buffer = np.frombuffer(data, dtype=np.uint8)
    is_space = _ASCII_WHITESPACE[buffer]
    token_start = ~is_space
    token_start[1:] &= is_space[:-1]
    newline = buffer == 10
    n_lines = int(newline.sum()) + (1 if data and not data.endswith(b"\n") else 0)
    token_line = np.cumsum(newline)[token_start]  # 0-based line of each token
    tokens = data.split()
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError) as exc:
        raise _locate_bad_user_line(p, data) from exc
    if values.size != token_line.size:  # cannot happen: both split on the same six ASCII whitespace bytes
        raise DataFormatError(f"{p}: inconsistent tokenisation; expected {_USER_LISTS_EXPECTED}", path=p)

    per_line = np.bincount(token_line, minlength=n_lines).astype(np.int64)
    lines = np.flatnonzero(per_line)
    first_token = (np.cumsum(per_line) - per_line)[lines]
    n_items = per_line[lines] - 1
    counts = values[first_token]
    bad = np.flatnonzero(counts != n_items)
    if bad.size:
        k = int(bad[0])
        number = int(lines[k]) + 1
        raise format_error(
            p,
            number,
            f"the leading count ({int(counts[k])}) to equal the number of items that follow ({int(n_items[k])})",
            data.split(b"\n")[number - 1],
        )
    is_item = np.ones(values.size, dtype=bool)
    is_item[first_token] = False
    items = values[is_item]
    _require_interactions(p, items.size, _USER_LISTS_EXPECTED)
    users = np.repeat(lines.astype(np.int64), n_items)
    skipped = n_lines - int(np.count_nonzero(n_items))
    if skipped:
        logger.info("%s: %d line(s) without items (users with no interactions) skipped", p, skipped)
    table = InteractionTable.from_external(users, items, None, source=str(p))
    return _log_loaded(table, started)


def _locate_bad_user_line(path: Path, data: bytes) -> DataFormatError:
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            np.array(line.split(), dtype=np.int64)
        except (ValueError, OverflowError):
            return format_error(path, number, _USER_LISTS_EXPECTED, line)
    return DataFormatError(f"{path}: could not be parsed; expected {_USER_LISTS_EXPECTED}", path=path)


# --------------------------------------------------------------------------------------------------------------
# Named-column tables (CSV / TSV / Parquet / RecBole .inter)

_DELIMITED_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


def load_table(
    path: str | Path,
    user_col: str,
    item_col: str,
    timestamp_col: str | None = None,
    sep: str | None = None,
) -> InteractionTable:
    """A CSV (`.csv`, sep ","), TSV (`.tsv` / `.txt`, sep tab) or Parquet (`.parquet`) file with a header.

    `sep` overrides the separator (and allows other suffixes). Ids that are all integers become int64,
    others stay strings. Timestamps may be numbers or date/time strings (converted to float seconds since
    the epoch, UTC); a missing user, item or timestamp value is an error naming its line.
    """
    started = time.perf_counter()
    p = require_file(path, "interaction table")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        table = _load_parquet(p, user_col, item_col, timestamp_col)
    else:
        if sep is None:
            if suffix not in _DELIMITED_SUFFIXES:
                raise ValueError(
                    f"{p}: cannot infer the format from suffix {suffix!r}; use .csv, .tsv, .txt or .parquet, "
                    "or pass sep="
                )
            sep = _DELIMITED_SUFFIXES[suffix]
        table = _load_delimited(p, sep, user_col, item_col, timestamp_col, quoting=csv.QUOTE_MINIMAL)
    return _log_loaded(table, started)


def load_recbole_inter(path: str | Path) -> InteractionTable:
    """A RecBole atomic `.inter` file: tab-separated, header fields `name:type` (e.g. `user_id:token`).

    The user, item and (optional) timestamp columns are the fields named `user_id`, `item_id` and
    `timestamp` before the colon; other fields (rating, ...) are ignored.
    """
    started = time.perf_counter()
    p = require_file(path, "RecBole .inter file")
    with p.open("r", encoding="utf-8", newline="") as handle:
        header_line = handle.readline()
    header = header_line.rstrip("\r\n").split("\t")
    by_name = {field.split(":", 1)[0].strip(): field for field in header if ":" in field}
    expected = "a RecBole header of tab-separated 'name:type' fields including user_id and item_id"
    if "user_id" not in by_name or "item_id" not in by_name:
        raise format_error(p, 1, expected + f" (fields found: {header})", header_line)
    table = _load_delimited(
        p, "\t", by_name["user_id"], by_name["item_id"], by_name.get("timestamp"), quoting=csv.QUOTE_NONE
    )
    return _log_loaded(table, started)


def _load_delimited(
    path: Path, sep: str, user_col: str, item_col: str, timestamp_col: str | None, quoting: int
) -> InteractionTable:
    wanted = [user_col, item_col] + ([timestamp_col] if timestamp_col else [])
    try:
        columns = list(pd.read_csv(path, sep=sep, nrows=0, quoting=quoting).columns)
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: file is empty; expected a header line naming the columns", path=path) from None
    _check_columns(path, columns, wanted, user_col, item_col, timestamp_col)
    try:
        # All columns are read (not usecols) so that a line with too many fields is an error, not ignored.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                quoting=quoting,
                index_col=False,
            )[wanted]
    except (ValueError, pd.errors.ParserWarning) as exc:  # ParserError: a line with too many fields
        raise _locate_bad_row(path, sep, quoting, columns, wanted, timestamp_col) or DataFormatError(
            f"{path}: could not be parsed: {exc}", path=path
        ) from exc

    def locate(_index: int) -> DataFormatError:
        return _locate_bad_row(path, sep, quoting, columns, wanted, timestamp_col) or DataFormatError(
            f"{path}: missing or unparseable value in columns {wanted}", path=path
        )

    return _frame_to_table(frame, path, user_col, item_col, timestamp_col, locate)


def _load_parquet(path: Path, user_col: str, item_col: str, timestamp_col: str | None) -> InteractionTable:
    import pyarrow.parquet as pq

    wanted = [user_col, item_col] + ([timestamp_col] if timestamp_col else [])
    columns = list(pq.read_schema(path).names)
    _check_columns(path, columns, wanted, user_col, item_col, timestamp_col)
    frame = pd.read_parquet(path, columns=wanted)

    def locate(index: int) -> DataFormatError:
        row = frame.iloc[index]
        return DataFormatError(
            f"{path} row {index + 1}: expected a {user_col!r}, {item_col!r}"
            + (f" and a numeric or date/time {timestamp_col!r}" if timestamp_col else "")
            + f" value, got {dict(row)}",
            path=path,
            line=index + 1,
        )

    return _frame_to_table(frame, path, user_col, item_col, timestamp_col, locate)


def _check_columns(
    path: Path, columns: Sequence[str], wanted: Sequence[str], user_col: str, item_col: str, ts_col: str | None
) -> None:
    roles = {user_col: "user_col", item_col: "item_col", **({ts_col: "timestamp_col"} if ts_col else {})}
    missing = [f"{name!r} ({roles[name]})" for name in wanted if name not in columns]
    if missing:
        raise DataFormatError(
            f"{path}: no column {', '.join(missing)}; columns found: {list(columns)}", path=path, line=1
        )


def _frame_to_table(
    frame: pd.DataFrame,
    path: Path,
    user_col: str,
    item_col: str,
    timestamp_col: str | None,
    locate: Callable[[int], DataFormatError],
) -> InteractionTable:
    wanted = [user_col, item_col] + ([timestamp_col] if timestamp_col else [])
    missing = frame[wanted].isna().to_numpy().any(axis=1)
    if missing.any():
        raise locate(int(np.flatnonzero(missing)[0]))
    _require_interactions(path, len(frame), f"rows with columns {wanted}")
    users = _ids(frame[user_col])
    items = _ids(frame[item_col])
    timestamps = None
    if timestamp_col:
        timestamps, bad = _timestamps(frame[timestamp_col])
        if bad is not None:
            raise locate(bad)
    return InteractionTable.from_external(users, items, timestamps, source=str(path))


def _ids(column: pd.Series) -> np.ndarray:
    """int64 when every id is an integer (and no two spellings map to the same number), else strings."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    numbers = pd.to_numeric(column, errors="coerce")
    if not numbers.isna().any():
        values = numbers.to_numpy(dtype=np.float64)
        if np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
            as_int = values.astype(np.int64)
            if pd.api.types.is_numeric_dtype(column.dtype) or np.unique(as_int).size == column.nunique():
                return as_int
    return column.astype(str).to_numpy(dtype=object)


def _timestamps(column: pd.Series) -> tuple[np.ndarray, int | None]:
    """(timestamps, index of the first unparseable value or None). Numbers are kept (int64 when integral);
    date/time strings become float seconds since the epoch (UTC)."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy()
        return (
            values.astype(np.int64) if pd.api.types.is_integer_dtype(column.dtype) else values.astype(np.float64)
        ), None
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        parsed_dt = pd.to_datetime(column, utc=True)
        seconds = (parsed_dt - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(1, "s")
        return seconds.to_numpy(dtype=np.float64), None
    numbers = pd.to_numeric(column, errors="coerce")
    if not numbers.isna().any():
        values = numbers.to_numpy(dtype=np.float64)
        if np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
            return values.astype(np.int64), None
        return values, None
    parsed = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        return np.empty(0), int(np.flatnonzero(bad)[0])
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(1, "s")
    return seconds.to_numpy(dtype=np.float64), None


def _parses_as_timestamp(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        pass
    try:
        return not pd.isna(pd.to_datetime(value, utc=True))
    except (ValueError, TypeError, OverflowError):
        return False


def _locate_bad_row(
    path: Path, sep: str, quoting: int, columns: Sequence[str], wanted: Sequence[str], timestamp_col: str | None
) -> DataFormatError | None:
    """Scan a delimited file with the csv module (slow, only after the fast parse failed) for the first line
    with the wrong number of fields, an empty user/item/timestamp or a timestamp that is not a number or a
    date. None if every line looks fine."""
    positions = {name: columns.index(name) for name in wanted}
    n_columns = len(columns)
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=sep, quoting=quoting)
        next(reader, None)  # header
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            line = reader.line_num
            got = sep.join(row)
            if len(row) != n_columns:
                return format_error(path, line, f"{n_columns} fields separated by {sep!r} like the header", got)
            for name, index in positions.items():
                if row[index] == "":
                    return format_error(path, line, f"a value in column {name!r}", got)
            if timestamp_col and not _parses_as_timestamp(row[positions[timestamp_col]]):
                return format_error(path, line, f"a number or a date/time in column {timestamp_col!r}", got)
    return None
