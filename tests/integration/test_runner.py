"""The comparison runner end to end on a tiny synthetic dataset: every method, JSONL rows, cached stages, a rerun
that skips finished cells, an interrupted grid that resumes, and the reports rendered from the rows."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import shared.training as training
from data_owner import stages
from data_owner.config import TeacherSettings
from data_owner.gan import CGANConfig
from experiments import lab
from experiments.cli import full_app
from experiments.grid import METHODS, GridSpec, cell_key, grid_cells
from experiments.lab import LabConfig
from experiments.reports import render_reports
from experiments.results import ResultsFile, read_rows
from experiments.runner import run_grid, work_dir_lock
from experiments.selection import cell_rows, fmt, select
from tests.conftest import write_users_dat

STAGES = ("train_kd_teacher", "train_generator", "train_gd_teacher", "train_raw_student", "train_gd_student")


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "users.dat"
    write_users_dat(path, n_users=40, n_items=30)
    return path


def tiny_spec(data, work_dir, **overrides) -> GridSpec:
    base = LabConfig(
        dataset=str(data), list_length=6, teacher_epochs=2, gd_epochs=1, student_epochs=2, patience=0,
        eval_every=1, batch_size=128,
        cgan=CGANConfig(hidden_g=(16,), hidden_d=(8,), noise_dim=4, epochs=2, eval_every=1, batch_size=16,
                        g_steps=1, d_steps=1),
        teacher=TeacherSettings("bpr", {"dim": 16, "reg": 1e-3}, 0.02), device="cpu", progress=False,
    )
    settings = dict(base=base, work_dir=work_dir, families=("bpr",), methods=METHODS, seeds=(0, 1), fractions=(0.5,),
                    kd_weights=(1.0, 0.1), temperatures=(2.0,), lambdas=(0.0, 0.7), inference_users=16,
                    inference_repeats=1, progress=False,
                    baseline_options={"cd": {"top_n": 10, "refresh_every": 1}, "bd": {"refresh_every": 1},
                                      "rd": {"k": 5, "probe_items": 10, "warmup_epochs": 1}})
    settings.update(overrides)
    return GridSpec(**settings)


class StageCounter:
    """Wraps the chain's stage functions (the runner calls them through `experiments.lab`) and counts calls;
    `fail_at` = (stage, n) raises KeyboardInterrupt at that stage's n-th call, like a Ctrl-C mid-grid."""

    def __init__(self, monkeypatch, fail_at: tuple[str, int] | None = None) -> None:
        self.calls = dict.fromkeys(STAGES, 0)
        for name in STAGES:
            monkeypatch.setattr(lab, name, self._wrap(name, getattr(lab, name), fail_at))

    def _wrap(self, name, function, fail_at):
        def wrapped(*args, **kwargs):
            self.calls[name] += 1
            if fail_at == (name, self.calls[name]):
                raise KeyboardInterrupt
            return function(*args, **kwargs)

        return wrapped


def test_grid_runs_every_method_resumes_after_an_interruption_and_skips_finished_cells(data, tmp_path, monkeypatch):
    spec = tiny_spec(data, tmp_path / "work")
    cells = grid_cells(spec)
    per_seed = 1 + 1 + 2 + 2 + 2 + 2  # teacher, student, rd x 2 weights, cd x 2, bd x 2, gd x 2 lambdas
    assert len(cells) == 2 * per_seed

    # 1. interrupted at the second GD student of seed 0 (the 10th cell): nine rows on disk, nothing half-written
    first = StageCounter(monkeypatch, fail_at=("train_gd_student", 2))
    with pytest.raises(KeyboardInterrupt):
        run_grid(spec)
    rows = read_rows(spec.results_path)
    assert [r["method"] for r in rows] == ["teacher", "student", "rd", "rd", "cd", "cd", "bd", "bd", "gd"]
    assert first.calls["train_kd_teacher"] == 1 and first.calls["train_generator"] == 1
    assert spec.results_path.read_bytes().endswith(b"\n")

    # 2. the same command again: the nine finished cells are skipped, seed 0's stages come from the cache
    monkeypatch.undo()
    second = StageCounter(monkeypatch)
    summary = run_grid(spec)
    assert (summary.total, summary.skipped, summary.ran) == (len(cells), 9, len(cells) - 9)
    assert second.calls["train_gd_student"] == 3  # seed 0's second GD cell and seed 1's two
    assert second.calls["train_kd_teacher"] == 1  # seed 1 only: seed 0's teacher is a checkpoint now
    assert second.calls["train_generator"] == 1 and second.calls["train_gd_teacher"] == 1
    assert second.calls["train_raw_student"] == 1
    rows = read_rows(spec.results_path)
    assert len(rows) == len(cells)
    assert {r["key"] for r in rows} == {cell_key(spec, c) for c in cells}
    assert not list((tmp_path / "work" / "cache").glob("*/partial/*"))  # kept cells and stages leave no state

    # 3. and once more: nothing to do, the file is untouched
    before = spec.results_path.read_bytes()
    third = StageCounter(monkeypatch)
    summary = run_grid(spec)
    assert summary.ran == 0 and summary.skipped == len(cells)
    assert sum(third.calls.values()) == 0
    assert spec.results_path.read_bytes() == before

    check_rows(rows)
    check_reports(rows, tmp_path / "reports")


def check_rows(rows):
    for row in rows:
        for part in ("valid", "test"):
            assert set(row[part]) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20, 50)}
            assert all(0.0 <= v <= 1.0 for v in row[part].values())
        # the sampled candidates are a subset of the full-ranking ones, so every sampled rank is <= the full rank
        for k in (5, 10, 20):
            assert row["test_sampled"][f"HR@{k}"] >= row["test"][f"HR@{k}"] - 1e-12
        assert 1 <= row["test_sampled"]["negatives"] <= 100
        assert row["inference"]["seconds"] > 0 and row["inference"]["batch_users"] == 16
        assert row["machine"]["cpu_count"] >= 1 and row["train_seconds"] >= 0
        expected_ratio = 1.0 if row["method"] == "teacher" else 0.5
        assert row["params"] / row["teacher_params"] == pytest.approx(expected_ratio, abs=0.02)
    by_method = {m: [r for r in rows if r["method"] == m] for m in METHODS}
    assert {r["fraction"] for r in by_method["teacher"]} == {1.0}
    assert {json.dumps(r["hyperparameters"], sort_keys=True) for r in by_method["cd"]} == {
        '{"kd_weight": 1.0, "temperature": 2.0}', '{"kd_weight": 0.1, "temperature": 2.0}'}
    assert {r["hyperparameters"]["lambda"] for r in by_method["gd"]} == {0.0, 0.7}
    for row in by_method["gd"]:  # every GD cell of a seed shares one GD teacher and one set of lists
        same_seed = [r for r in by_method["gd"] if r["seed"] == row["seed"]]
        assert all(r["gd_teacher"] == row["gd_teacher"] for r in same_seed)
        assert 0.0 <= row["observed_share"] <= 1.0 and row["list_length"] == 6


def check_reports(rows, out):
    dataset = rows[0]["dataset"]
    written = render_reports(rows, out)
    names = sorted(p.name for p in written)
    assert names == ["fig2.png", "fig3.png", "fig4.png", "grid.md", "table2.md", "table3.md", "table4.md"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    table2 = (out / "table2.md").read_text()
    for size, name in [("T (100%)", "Teacher")] + [("M (50%)", n) for n in ("Student", "CD", "RD", "BD", "GD (CGAN)")]:
        line = next(ln for ln in table2.splitlines() if ln.startswith(f"| {size} | {name} |"))
        assert "| 2 |" in line and "not run" not in line  # two seeds each
    # the RD row shows the test numbers of the KD weight with the best mean validation NDCG@50
    rd = [r for r in rows if r["method"] == "rd"]
    best = max((1.0, 0.1), key=lambda w: np.mean([r["valid"]["NDCG@50"] for r in rd
                                                  if r["hyperparameters"]["kd_weight"] == w]))
    cells = cell_rows(rows)
    chosen = select(cells, "bpr", "rd", 0.5)
    assert chosen.hyperparameters == {"kd_weight": best} and chosen.seeds == 2
    expected = fmt([r["test"]["HR@50"] for r in rd if r["hyperparameters"]["kd_weight"] == best])
    assert f"| M (50%) | RD | {expected} |" in table2
    # GD in table 2 is the lambda 0.7 cell (the paper's), never the lambda 0 one
    assert select(cells, "bpr", "gd", 0.5, lambda r: math.isclose(r.hyperparameters["lambda"], 0.7)) is not None
    assert "lambda 0.7" in next(ln for ln in table2.splitlines() if ln.startswith("| M (50%) | GD (CGAN) |"))
    # grid.md shows both RD weights, with the one table 2 reports marked
    grid_md = (out / "grid.md").read_text()
    assert "## BPR, RD, M (50%)" in grid_md and "## BPR, CD, M (50%)" in grid_md
    assert f"| kd_weight {best:g} | 0, 1 |" in grid_md and grid_md.count("**selected**") == 3  # RD, CD, BD
    table3 = (out / "table3.md").read_text()
    assert "## Full ranking" in table3 and "## Sampled" in table3 and "0.321" not in table3  # not ml-100k
    table4 = (out / "table4.md").read_text()
    assert "| KD teacher (raw data) |" in table4 and "| GD teacher (raw + generated) |" in table4

    # cells that were not run render as "not run"
    partial = render_reports([r for r in rows if r["method"] != "bd"], out / "partial", dataset)
    table2 = partial[0].read_text()
    assert "| M (50%) | BD | not run | not run | 0 |" in table2


def test_a_cell_killed_mid_training_continues_from_its_last_saved_epoch(data, tmp_path, monkeypatch, caplog):
    spec = tiny_spec(data, tmp_path / "work", methods=("teacher", "student", "rd"), seeds=(0,), kd_weights=(1.0,))
    spec = replace(spec, base=replace(spec.base, teacher_epochs=4))
    plain = {r["method"]: r for r in read_rows(run_grid(replace(spec, work_dir=tmp_path / "plain")).results)}

    every_epoch = stages.train_config  # what the owner's stages and the harness's students train with
    monkeypatch.setattr(stages, "train_config", lambda *a: replace(every_epoch(*a), checkpoint_every_s=0))
    save, saves = training._Checkpoint.save, []

    def dying_save(self, state):  # the teacher saves epochs 1-3 and its end; the student dies after its epoch 2
        save(self, state)
        saves.append(self.path)
        if len(saves) == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(training._Checkpoint, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_grid(spec)
    assert [r["method"] for r in read_rows(spec.results_path)] == ["teacher"]
    assert [p.parent.name for p in (spec.work_dir / "cache").glob("*/partial/*/*.pt")] == [saves[-1].parent.name]
    assert saves[-1].parent.name.startswith("cell-")

    monkeypatch.setattr(training._Checkpoint, "save", save)
    with caplog.at_level("INFO", logger="shared.training"):
        run_grid(spec)
    assert "resuming after epoch 2" in caplog.text
    rows = {r["method"]: r for r in read_rows(spec.results_path)}
    for method in ("student", "rd"):  # the resumed cell and the next one match the uninterrupted run exactly
        assert (rows[method]["valid"], rows[method]["test"]) == (plain[method]["valid"], plain[method]["test"])
        assert rows[method]["best_epoch"] == plain[method]["best_epoch"]
    assert not list((spec.work_dir / "cache").glob("*/partial/*"))


def test_cli_run_and_report(data, tmp_path):
    work, reports = tmp_path / "work", tmp_path / "reports"
    cli = CliRunner()
    args = ["run", "--dataset", str(data), "--work-dir", str(work), "--models", "bpr", "--methods",
            "teacher,student", "--seeds", "0", "--fractions", "0.5,0.3", "--teacher-epochs", "1", "--eval-every", "1",
            "--batch-size", "128", "--inference-users", "8", "--teacher-json",
            '{"model": {"dim": 20, "reg": 0.001}, "lr": 0.02}', "--device", "cpu", "--no-progress",
            "--report-dir", str(reports)]
    result = cli.invoke(full_app(), args)
    assert result.exit_code == 0, result.output
    assert "3 cells: 0 already finished, 3 run now" in result.output
    rows = read_rows(work / "results.jsonl")
    assert sorted((r["method"], r["fraction"]) for r in rows) == [("student", 0.3), ("student", 0.5),
                                                                    ("teacher", 1.0)]
    assert "| S (30%) | Student |" in (reports / "table2.md").read_text()
    assert "| S (30%) | GD (CGAN) | not run |" in (reports / "table2.md").read_text()
    again = cli.invoke(full_app(), args)
    assert "3 cells: 3 already finished, 0 run now" in again.output

    result = cli.invoke(full_app(), ["report", "--results", str(work / "results.jsonl"), "--out",
                                     str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "fig3.png").is_file()
    bad = cli.invoke(full_app(), ["run", "--dataset", str(data), "--work-dir", str(work), "--methods", "kd"])
    assert bad.exit_code != 0 and "unknown methods ['kd']" in bad.output
    bad = cli.invoke(full_app(), ["run", "--dataset", str(data), "--work-dir", str(work), "--models", "bpr,neumf",
                                  "--teacher-json", '{"model": {"dim": 8}}'])
    assert bad.exit_code == 2 and "give exactly one in --models" in " ".join(
        re.sub("[│╭╮╰╯─]", " ", bad.output).split())
    bad = cli.invoke(full_app(), ["run", "--dataset", str(data), "--work-dir", str(work), "--teacher-json",
                                  '{"model": {"dim": 8}, "momentum": 0.9}'])
    assert bad.exit_code == 2 and "takes the keys 'model', 'lr', 'pretrain', 'optimizer' and 'negatives'" in " ".join(
        re.sub("[│╭╮╰╯─]", " ", bad.output).split())


def test_a_partial_last_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"key": "a"}) + "\n" + '{"key": "b", "valid": {"HR')
    results = ResultsFile(path)
    assert results.finished_keys() == {"a"}
    results.append({"key": "c"})
    assert [r["key"] for r in read_rows(path)] == ["a", "c"]


def test_one_runner_per_work_dir(data, tmp_path):
    spec = tiny_spec(data, tmp_path / "work", methods=("teacher",), seeds=(0,))
    with work_dir_lock(spec.work_dir), pytest.raises(RuntimeError, match="another `gdrec-lab run`"):
        run_grid(spec)


def test_changed_settings_give_new_cells_but_reuse_unaffected_stages(data, tmp_path, monkeypatch):
    spec = tiny_spec(data, tmp_path / "work", methods=("teacher", "gd"), seeds=(0,), lambdas=(0.7,))
    run_grid(spec)
    counter = StageCounter(monkeypatch)
    longer_student = replace(spec, base=replace(spec.base, student_epochs=3))
    summary = run_grid(longer_student)
    assert (summary.skipped, summary.ran) == (1, 1)  # the teacher cell stands; the GD cell is new
    assert counter.calls == {"train_kd_teacher": 0, "train_generator": 0, "train_gd_teacher": 0,
                             "train_raw_student": 0, "train_gd_student": 1}
    assert len(read_rows(spec.results_path)) == 3


def test_stage_cache_keys_are_the_owners_stage_keys(data, tmp_path):
    from data_owner.pipeline import split_fingerprint, stage_keys
    from data_owner.settings import secret_fingerprint
    from experiments.cache import StageCache

    spec = tiny_spec(data, tmp_path / "work")
    split = lab.load_split(str(data))
    cache = StageCache(spec, split, torch.device("cpu"))
    owner = stage_keys(spec.base, split_fingerprint(split), secret_fingerprint(lab.lab_secret(spec.base.seed)))
    keys = cache.keys(spec.base)
    assert keys == {name: key[:16] for name, key in owner.items()}

    def changed(**fields) -> set[str]:
        other = cache.keys(replace(spec.base, **fields))
        return {name for name in ("kd_teacher", "cgan", "lists", "gd_teacher") if other[name] != keys[name]}

    assert changed(temperature=5.0, lam=0.1, fraction=0.3, student_epochs=9) == set()  # students only
    assert changed(list_length=4) == {"lists", "gd_teacher"}
    assert changed(teacher_epochs=3) == {"kd_teacher", "gd_teacher"}
    assert changed(rr_epsilon=2.0) == {"kd_teacher", "cgan", "lists", "gd_teacher"}
    assert changed(list_source="teacher") == {"lists", "gd_teacher"}


def test_rows_whose_settings_hold_a_pretraining_are_written(tmp_path):
    """Regression: the citeulike-t NeuMF teacher preset carries a Pretraining dataclass; its row could not be
    written ("cannot write Pretraining to the results file") after the teacher had trained."""
    from data_owner.teacher import Pretraining

    results = ResultsFile(tmp_path / "results.jsonl")
    results.append({"key": "k", "settings": {"teacher": {"pretrain": Pretraining(mlp_reg=1e-4, finetune_lr=5e-4)}}})
    (row,) = results.rows()
    assert row["settings"]["teacher"]["pretrain"] == {"alpha": 0.5, "gmf_reg": None, "mlp_reg": 1e-4,
                                                      "finetune_lr": 5e-4}
    with pytest.raises(TypeError, match="cannot write object"):
        results.append({"key": "j", "bad": object()})


def test_settings_that_cannot_be_written_stop_the_grid_before_anything_trains(data, tmp_path, monkeypatch):
    spec = tiny_spec(data, tmp_path / "work", methods=("teacher",), seeds=(0,))
    teacher = spec.base.teacher
    spec = replace(spec, base=replace(spec.base, teacher=replace(teacher, model={**teacher.model, "note": object()})))
    monkeypatch.setattr(lab, "train_kd_teacher", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(TypeError, match="cannot write object to the results file"):
        run_grid(spec)


def test_teacher_list_source_is_a_reference_gd_cell_that_trains_no_generator_and_stays_out_of_the_reports(
        data, tmp_path, monkeypatch):
    spec = tiny_spec(data, tmp_path / "work", methods=("teacher", "gd"), seeds=(0,), lambdas=(0.7,))
    run_grid(spec)
    counter = StageCounter(monkeypatch)
    reference = replace(spec, base=replace(spec.base, list_source="teacher"))
    summary = run_grid(reference)
    assert (summary.skipped, summary.ran) == (1, 1)  # the teacher cell stands; the GD cell is a new one
    assert counter.calls["train_generator"] == 0 and counter.calls["train_kd_teacher"] == 0  # the cached teacher
    assert counter.calls["train_gd_teacher"] == 1 and counter.calls["train_gd_student"] == 1
    rows = read_rows(spec.results_path)
    paper_gd, teacher_gd = [r for r in rows if r["method"] == "gd"]
    assert "list_source" not in paper_gd and teacher_gd["list_source"] == "teacher"
    assert teacher_gd["key"] != paper_gd["key"]
    # the reference lists are the KD teacher's own top-L: its metrics stand where the generator's would
    teacher_row = next(r for r in rows if r["method"] == "teacher")
    assert teacher_gd["generator"]["test"] == teacher_row["test"]

    render_reports(rows, tmp_path / "with-reference")
    render_reports([r for r in rows if "list_source" not in r], tmp_path / "without")
    for name in ("table2.md", "table4.md"):
        assert (tmp_path / "with-reference" / name).read_text() == (tmp_path / "without" / name).read_text()

    with pytest.raises(ValueError, match="list source must be one of generator, teacher"):
        replace(spec.base, list_source="popularity")
    bad = CliRunner().invoke(full_app(), ["run", "--dataset", str(data), "--work-dir", str(tmp_path / "w2"),
                                          "--list-source", "popularity"])
    assert bad.exit_code == 2 and "--list-source must be one of generator, teacher" in bad.output
