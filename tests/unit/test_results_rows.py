"""The typed result rows (experiments.results): every committed row under reports/ reads into its row type and
writes back unchanged, unknown keys and explicit nulls included; a row lacking a required field is refused by name."""

import json

import pytest

from experiments.results import CellRow, PrivacyRow, ResultsFile, TimingRow, read_rows
from tests.conftest import REPO

ROW_TYPES = {"results.jsonl": CellRow, "list-length.jsonl": CellRow, "list-source-reference.jsonl": CellRow,
             "student-transfer.jsonl": CellRow,
             "privacy.jsonl": PrivacyRow, "inference.jsonl": TimingRow}
COMMITTED = sorted(path for path in (REPO / "reports").rglob("*.jsonl"))


def test_every_committed_results_file_has_a_row_type():
    assert COMMITTED and {path.name for path in COMMITTED} <= set(ROW_TYPES)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: str(path.relative_to(REPO)))
def test_every_committed_row_round_trips(path):
    rows = read_rows(path)
    assert len(rows) == sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    row_type = ROW_TYPES[path.name]
    for row in rows:
        typed = row_type.from_dict(row)
        assert typed.to_dict() == row
        assert not typed.extra  # every key the harness writes is a named field


def grid_row(**fields) -> dict:
    row = {"key": "k", "dataset": "d", "family": "bpr", "method": "student", "seed": 0, "fraction": 0.5,
           "hyperparameters": {}, "valid": {"NDCG@50": 0.1}, "test": {"HR@50": 0.2}, "test_sampled": {"negatives": 100},
           "params": 5, "teacher_params": 10, "train_seconds": 1.0, "cell_seconds": 2.0, "best_epoch": 3,
           "inference": {"batch_users": 8, "seconds": 0.01, "repeats": 5}, "settings": {}, "rr_epsilon": None,
           "selection_metric": "valid NDCG@50", "machine": {"cpu": "x"}, "finished_at": "2026-01-01T00:00:00+00:00"}
    return row | fields


def test_optional_fields_are_absent_when_unset_and_unknown_keys_survive():
    typed = CellRow.from_dict(grid_row(future_field=[1, 2], list_source=None))
    assert typed.gd_teacher is None and typed.list_source is None
    assert typed.extra == {"future_field": [1, 2], "list_source": None}  # an explicit null is written back
    assert typed.to_dict() == grid_row(future_field=[1, 2], list_source=None)
    assert "gd_teacher" not in CellRow.from_dict(grid_row()).to_dict()
    gd = CellRow.from_dict(grid_row(method="gd", list_source="teacher", observed_share=0.25))
    assert (gd.list_source, gd.observed_share) == ("teacher", 0.25)


def test_a_row_without_a_required_field_is_refused_by_name():
    row = grid_row()
    del row["valid"]
    with pytest.raises(KeyError, match="a grid cell row needs 'valid'"):
        CellRow.from_dict(row)


def test_the_results_file_writes_a_typed_row_as_its_dict(tmp_path):
    results = ResultsFile(tmp_path / "results.jsonl")
    typed = CellRow.from_dict(grid_row(baseline={"k": 5}))
    results.append(typed)
    (line,) = (tmp_path / "results.jsonl").read_text().splitlines()
    assert line == json.dumps(typed.to_dict(), sort_keys=True)
    assert CellRow.from_dict(results.rows()[0]) == typed


def test_a_privacy_row_finds_its_leakage_rows_and_sampler_revision():
    row = json.loads((REPO / "reports" / "ml-100k" / "privacy.jsonl").read_text(encoding="utf-8").splitlines()[0])
    typed = PrivacyRow.from_dict(row)
    assert typed.leak("export")["name"] == "export"
    assert typed.sampler_revision == int(row["settings"].get("student_sampler", 1))
    with pytest.raises(KeyError, match="no leakage row 'nothing'"):
        typed.leak("nothing")
