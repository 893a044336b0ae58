"""Reports from runs split over several work dirs: `--results` repeated, rows merged in finishing order, copies of
one row counted once, the union written with `--save-rows`."""

import json

from typer.testing import CliRunner

from experiments.cli import full_app
from experiments.reports import merged_rows
from experiments.selection import cell_rows, latest_rows, select
from tests.unit.test_results_rows import grid_row


def row(seed: int, finished: str, test: float, kd_weight: float = 1.0) -> dict:
    return grid_row(method="rd", seed=seed, hyperparameters={"kd_weight": kd_weight}, key=f"rd-{seed}-{kd_weight}",
                    finished_at=finished, valid={"NDCG@50": test / 2}, test={"HR@50": test, "NDCG@50": test / 2},
                    cell_seconds=1.0, params=50, teacher_params=100, inference={"batch_users": 8, "seconds": 0.01})


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_merge_in_finishing_order_and_a_copied_row_counts_once(tmp_path):
    first = write(tmp_path / "a.jsonl", [row(0, "2026-01-01T10:00:00+00:00", 0.3),
                                          row(0, "2026-01-03T10:00:00+00:00", 0.5)])  # seed 0 rerun later
    # b was pre-seeded with a's first row, then ran seed 1, and seed 0 once more in between a's two runs
    second = write(tmp_path / "b.jsonl", [row(0, "2026-01-01T10:00:00+00:00", 0.3),
                                           row(1, "2026-01-02T09:00:00+00:00", 0.4),
                                           row(0, "2026-01-02T10:00:00+00:00", 0.1)])
    rows = merged_rows([first, second])
    assert [(r["seed"], r["test"]["HR@50"]) for r in rows] == [(0, 0.3), (1, 0.4), (0, 0.1), (0, 0.5)]
    # the cell that finished last wins, whichever file it came from
    latest = {r.seed: r.test["HR@50"] for r in latest_rows(cell_rows(rows))}
    assert latest == {0: 0.5, 1: 0.4}
    merged = latest_rows(cell_rows(merged_rows([second, first])))
    assert select(merged, "bpr", "rd", 0.5).values("test", "HR@50") == [0.5, 0.4]


def test_report_reads_several_results_files_and_saves_their_union(tmp_path):
    first = write(tmp_path / "a.jsonl", [row(0, "2026-01-01T10:00:00+00:00", 0.3)])
    second = write(tmp_path / "b.jsonl", [row(0, "2026-01-01T10:00:00+00:00", 0.3),
                                           row(1, "2026-01-02T10:00:00+00:00", 0.5)])
    merged = tmp_path / "out" / "results.jsonl"
    cli = CliRunner()
    result = cli.invoke(full_app(), ["report", "--results", str(first), "--results", str(second), "--out",
                                     str(tmp_path / "out"), "--save-rows", str(merged)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seed"] for line in merged.read_text().splitlines()] == [0, 1]
    table = (tmp_path / "out" / "table2.md").read_text()
    assert "| M (50%) | RD | 0.4000 ± 0.1414 |" in table  # both seeds, the copied row once

    bad = cli.invoke(full_app(), ["report", "--results", str(first), "--results", str(tmp_path / "none.jsonl"),
                                  "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "no results file at" in bad.output and "none.jsonl" in bad.output
    assert not (tmp_path / "bad").exists()
