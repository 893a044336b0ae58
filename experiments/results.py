"""The harness's results files and their rows.

A results file is append-only JSONL, one row per finished unit of work, written so that a crash mid-write loses at
most that row (`ResultsFile`), and read back skipping a line cut short (`read_rows`). `gdrec-lab run` writes it,
`gdrec-lab report` and the privacy and CGAN-search commands read it.

The rows are typed: `CellRow` (a grid cell of `gdrec-lab run`: results.jsonl, list-length.jsonl,
list-source-reference.jsonl, student-transfer.jsonl), `PrivacyRow` (a (setting, seed) of `gdrec-privacy`:
privacy.jsonl) and `TimingRow` (a model size of one `gdrec-lab timing` run: inference.jsonl). `from_dict` reads a
row as written, `to_dict` gives it back: keys the row type does not name are kept in `extra`, and an optional field
is left out when it is None, so `to_dict(from_dict(row)) == row` for every row any version of the harness wrote."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

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

    def append(self, row: Mapping[str, Any] | Row) -> None:
        """Write one row (a typed row or a plain mapping) as one JSON line, keys sorted."""
        plain = row.to_dict() if isinstance(row, Row) else dict(row)
        line = json.dumps(plain, sort_keys=True, default=json_default) + "\n"
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


# ----------------------------------------------------------------------------------------------------------------
# Typed rows

_OPTIONAL = "optional"  # field metadata: left out of the row when None (older rows or other methods lack it)


def optional() -> Any:
    """A field that a row may lack: None when absent, and not written when None."""
    return dataclasses.field(default=None, metadata={_OPTIONAL: True})


@dataclasses.dataclass(frozen=True)
class Row:
    """Base of the typed rows: named fields, the rest of the JSON object in `extra`."""

    KIND: ClassVar[str] = "row"

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Self:
        """The typed row of a JSON object as written; KeyError naming the key when a required one is missing."""
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            if spec.name == "extra":
                continue
            if spec.metadata.get(_OPTIONAL):
                if row.get(spec.name) is not None:  # an explicit null stays in extra, so it is written back
                    values[spec.name] = row[spec.name]
            elif spec.name in row:
                values[spec.name] = row[spec.name]
            else:
                raise KeyError(f"a {cls.KIND} row needs {spec.name!r}; it has {', '.join(sorted(row))}")
        named = set(values)
        return cls(**values, extra={k: v for k, v in row.items() if k not in named})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this row: every named field (optional ones only when set), then `extra`."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name == "extra" or (spec.metadata.get(_OPTIONAL) and value is None):
                continue
            out[spec.name] = value
        out.update(self.extra)
        return out


@dataclasses.dataclass(frozen=True)
class CellRow(Row):
    """One finished grid cell of `gdrec-lab run` (experiments.runner). Metric dicts map "HR@K" / "NDCG@K" to a
    share of users; `test_sampled` also holds "negatives", the number of sampled negatives per user."""

    KIND: ClassVar[str] = "grid cell"

    key: str
    dataset: str
    family: str
    method: str  # teacher, student, rd, cd, bd, gd
    seed: int
    fraction: float  # of the teacher's parameters; 1.0 for the teacher
    hyperparameters: dict[str, float]
    valid: dict[str, float]
    test: dict[str, float]
    test_sampled: dict[str, float]
    params: int
    teacher_params: int
    train_seconds: float
    cell_seconds: float
    best_epoch: int
    inference: dict[str, Any]  # batch_users, seconds (median of one full-ranking batch), repeats
    settings: dict[str, Any]  # what the key hashes besides the cell
    rr_epsilon: float | None
    selection_metric: str
    machine: dict[str, Any]
    finished_at: str  # ISO 8601, UTC
    gd_teacher: dict[str, Any] | None = optional()  # GD cells: the GD teacher's valid / test / seconds / params
    generator: dict[str, Any] | None = optional()  # GD cells: the list generator (or source) as a recommender
    observed_share: float | None = optional()  # GD cells: listed items that are the user's training items
    list_length: int | None = optional()
    include_observed: bool | None = optional()
    list_source: str | None = optional()  # GD cells whose lists are not the generator's (a research reference)
    # GD cells whose lists come from a generator other than the paper's CGAN: its family ("itemknn", "vae",
    # "teacher", "ease", or "auto:<family chosen>"); None: the CGAN
    list_generator: str | None = optional()
    baseline: dict[str, Any] | None = optional()  # RD / CD / BD cells: what the baseline reports of its run
    # GD cells with several regularisation factors: the strength kept and the candidates list fidelity chose among
    student: dict[str, Any] | None = optional()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PrivacyRow(Row):
    """One (privacy setting, seed) of `gdrec-privacy` (experiments.privacy): the GD student's metrics beside the
    leakage report of its export (`data_owner.privacy.leakage_report`, `to_dict`)."""

    KIND: ClassVar[str] = "privacy"

    key: str
    dataset: str
    family: str
    seed: int
    setting: dict[str, Any]  # name, include_observed, rr_epsilon
    student: dict[str, Any]  # valid, test (metric dicts), params, best_epoch, seconds
    leakage: dict[str, Any]  # rows: [{name, precision, recall, ...}], max_fpr, ...
    observed_share: float
    model_visible_train_pairs: int
    true_train_pairs: int
    kd_teacher: dict[str, Any]
    gd_teacher: dict[str, Any]
    generator: dict[str, Any]
    settings: dict[str, Any]  # what the key hashes besides (setting, seed)
    machine: dict[str, Any]
    setting_seconds: float
    finished_at: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def leak(self, name: str) -> dict[str, Any]:
        """The leakage report's row called `name` (the export or a reference list)."""
        for entry in self.leakage["rows"]:
            if entry["name"] == name:
                return entry
        raise KeyError(f"row {self.key} has no leakage row {name!r}")

    @property
    def sampler_revision(self) -> int:
        """The GD student sampler revision the row was made with (1 when its settings do not name one)."""
        return int(self.settings.get("student_sampler", 1))


@dataclasses.dataclass(frozen=True)
class TimingRow(Row):
    """One model size of one `gdrec-lab timing` run (experiments.timing); all sizes of a run share `run`."""

    KIND: ClassVar[str] = "timing"

    dataset: str
    family: str
    fraction: float  # 1.0 for the teacher
    params: int
    batch_users: int
    rounds: int
    seconds: list[float]  # one full-ranking batch per round
    median_seconds: float
    ratio_to_teacher: float  # median over rounds of this size's time over the teacher's in the same round
    machine: dict[str, Any]
    run: str  # ISO 8601 stamp of the run
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
