"""The grid with a list generator other than the paper's CGAN, on tiny synthetic data: its GD cell runs, its row
names the generator, a rerun skips it, the stage cache keeps its lists apart from the CGAN's, and table 2 shows it
as a GD row of its own beside the CGAN's."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from data_owner.lists import GeneratedLists
from experiments.cli import full_app
from experiments.grid import cell_key, grid_cells
from experiments.reports import render_reports
from experiments.results import read_rows
from experiments.runner import run_grid
from tests.conftest import write_users_dat
from tests.integration.test_runner import StageCounter, tiny_spec


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "users.dat"
    write_users_dat(path, n_users=40, n_items=30)
    return path


def gd_spec(data, work_dir, **base):
    spec = tiny_spec(data, work_dir, methods=("gd",), seeds=(0,), temperatures=(2.0,), lambdas=(0.7,))
    return replace(spec, base=replace(spec.base, **base))


def test_an_itemknn_grid_writes_its_own_rows_skips_them_on_a_rerun_and_gets_its_own_table2_row(
        data, tmp_path, monkeypatch):
    work = tmp_path / "work"
    knn = gd_spec(data, work, generator="itemknn", include_observed=False)
    cgan = gd_spec(data, work)
    assert cell_key(knn, grid_cells(knn)[0]) != cell_key(cgan, grid_cells(cgan)[0])

    counter = StageCounter(monkeypatch)
    summary = run_grid(knn)
    assert summary.ran == 1 and "itemknn lists seed 0" in summary.trained_stages
    (written,) = read_rows(knn.results_path)
    assert written["list_generator"] == "itemknn" and written["include_observed"] is False
    assert written["observed_share"] == 0.0
    assert set(written["generator"]) >= {"valid", "test", "params", "family"}  # kNN as a recommender
    assert written["generator"]["family"] == "itemknn"
    assert written["key"] == cell_key(knn, grid_cells(knn)[0])

    lists = list((work / "cache").glob("*/lists/*/lists.npz"))  # the owner's lists format, meta.json beside it
    assert len(lists) == 1
    meta = json.loads((lists[0].parent / "meta.json").read_text())
    assert not GeneratedLists.load(lists[0].parent).include_observed
    assert meta["family"] == "itemknn" and meta["fit"]["chosen"] and meta["statistics"]["observed_share"] == 0.0
    assert meta["settings"]["generator"] == "itemknn"

    # the same grid again: nothing runs
    again = run_grid(knn)
    assert (again.ran, again.skipped) == (0, 1) and counter.calls["train_generator"] == 1

    # the paper's CGAN in the same work dir: its own lists, the KD teacher from the cache
    summary = run_grid(cgan)
    assert summary.ran == 1 and counter.calls["train_kd_teacher"] == 1 and counter.calls["train_generator"] == 2
    rows = read_rows(cgan.results_path)
    assert "list_generator" not in rows[1] and rows[1]["include_observed"] is True
    assert len(list((work / "cache").glob("*/lists/*/lists.npz"))) == 2

    render_reports(rows, tmp_path / "reports")
    table2 = (tmp_path / "reports" / "table2.md").read_text()
    for label in ("GD (CGAN)", "GD (kNN)"):
        line = next(ln for ln in table2.splitlines() if ln.startswith(f"| M (50%) | {label} |"))
        assert "not run" not in line and "| 1 |" in line
    table4 = (tmp_path / "reports" / "table4.md").read_text()  # the paper's GD rows only
    assert "| GD teacher (raw + generated) |" in table4 and table4.count("(1 seed)") >= 1


def test_cli_run_takes_the_generator_options_and_refuses_bad_ones(data, tmp_path):
    cli = CliRunner()
    base = ["run", "--dataset", str(data), "--work-dir", str(tmp_path / "work"), "--methods", "gd", "--seeds", "0"]
    for args, message in ((["--generator", "knn"], "generator must be one of"),
                          (["--student-transfer", "soft"], "--student-transfer must be one of"),
                          (["--generator", "itemknn", "--generator-json", '{"itemknn": {"k": 5}}'], "itemknn"),
                          (["--student-reg-factors", "-1"], "--student-reg-factors")):
        result = cli.invoke(full_app(), base + args)
        assert result.exit_code == 2, result.output
        assert message in result.output.replace("\n", " ").replace("│", ""), result.output


def test_cli_run_with_a_generator_and_the_students_settings(data, tmp_path):
    work = tmp_path / "work"
    args = ["run", "--dataset", str(data), "--work-dir", str(work), "--methods", "gd", "--seeds", "0",
            "--fractions", "0.5", "--temperatures", "2", "--teacher-epochs", "1", "--gd-epochs", "1",
            "--student-epochs", "1", "--eval-every", "1", "--batch-size", "128", "--list-length", "5",
            "--inference-users", "8", "--teacher-json", '{"model": {"dim": 16, "reg": 0.001}, "lr": 0.02}',
            "--generator", "ease", "--exclude-observed", "--student-reg-factors", "1,0.1",
            "--student-transfer", "listwise", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(full_app(), args)
    assert result.exit_code == 0, result.output
    (row,) = read_rows(work / "results.jsonl")
    assert row["list_generator"] == "ease" and row["include_observed"] is False
    assert row["settings"]["student_reg_factors"] == [1.0, 0.1] and row["settings"]["student_transfer"] == "listwise"
    assert row["settings"]["gd_teacher"]["lists"]["generator"] == "ease"
    again = CliRunner().invoke(full_app(), args)
    assert "1 cells: 1 already finished, 0 run now" in again.output
