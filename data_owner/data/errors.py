"""Errors raised by the data pipeline: malformed files and datasets that cannot be obtained."""

from __future__ import annotations

from pathlib import Path

_MAX_SHOWN = 80


class DataFormatError(ValueError):
    """A data file does not have the expected format. The message names the file, the 1-based line (or row)
    and what was expected; `path` and `line` are kept as attributes for callers that want them."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


class DatasetUnavailableError(RuntimeError):
    """A named dataset is not on disk and could not be downloaded (offline, HTTP error, checksum mismatch)."""


def shown(text: str | bytes) -> str:
    """`repr` of an offending line for an error message, shortened when long."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.rstrip("\r\n")
    if len(text) > _MAX_SHOWN:
        return repr(text[:_MAX_SHOWN]) + f" ... ({len(text)} characters)"
    return repr(text)


def format_error(path: str | Path, line: int | None, expected: str, got: str | bytes | None = None) -> DataFormatError:
    """Build the standard message: "<path> line <n>: expected <what>, got '<line text>'"."""
    where = f"{path} line {line}" if line is not None else str(path)
    message = f"{where}: expected {expected}"
    if got is not None:
        message += f", got {shown(got)}"
    return DataFormatError(message, path=path, line=line)
