"""The runner's results file: append-only JSONL, one row per finished cell, written so that a crash mid-write
loses at most that row (`ResultsFile`), and read back skipping a line cut short (`read_rows`). `gdrec-lab run`
writes it, `gdrec-lab report` and the privacy and CGAN-search commands read it."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("gdrec.runner")


class ResultsFile:
    """Append-only JSONL of finished cells; each line is flushed and fsync'ed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        """Cut a partial last line (a crash mid-write) so the next append starts on a fresh line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("%s: cutting a partial last line of %d bytes (an interrupted write)", self.path,
                    len(data) - keep)
        with open(self.path, "r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> list[dict[str, Any]]:
        return read_rows(self.path)

    def finished_keys(self) -> set[str]:
        return {row["key"] for row in self.rows() if "key" in row}

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, sort_keys=True, default=json_default) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def json_default(value: Any) -> Any:
    """`json.dumps`'s `default` for a row: numpy scalars, paths and dataclasses as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. a NeuMF teacher's Pretraining
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} to the results file")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file; a malformed line (a write cut short) is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d: not valid JSON (an interrupted write?), skipped", path, number)
    return rows
