"""Grid cell keys and report rows of list generators other than the paper's CGAN: the CGAN's keys stay what they
were, another family's cells get keys (and rows) of their own, and table 2 shows one GD row per list variant."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from data_owner.config import TeacherSettings
from data_owner.gan import CGANConfig
from experiments import grid
from experiments.grid import Cell, GridSpec, cell_key, cell_settings, digest, lists_settings_payload
from experiments.lab import LabConfig
from experiments.results import CellRow
from experiments.selection import cell_rows, gd_label, latest_rows, paper_lists
from experiments.tables import table2

GD_CELL = Cell("bpr", "gd", 0, 0.5, temperature=2.0, lam=0.7)


@pytest.fixture
def spec(monkeypatch) -> GridSpec:
    monkeypatch.setattr(grid, "GD_SAMPLER_REVISION", 2)  # the keys below were computed at revision 2
    base = LabConfig(
        dataset="ml-100k", list_length=6, teacher_epochs=2, gd_epochs=1, student_epochs=2, patience=0, eval_every=1,
        batch_size=128,
        cgan=CGANConfig(hidden_g=(16,), hidden_d=(8,), noise_dim=4, epochs=2, eval_every=1, batch_size=16,
                        g_steps=1, d_steps=1),
        teacher=TeacherSettings("bpr", {"dim": 16, "reg": 1e-3}, 0.02), device="cpu", progress=False)
    return GridSpec(base=base, work_dir=Path("/nonexistent"), seeds=(0,), fractions=(0.5,), temperatures=(2.0,),
                    progress=False)


def test_the_cgan_cells_keep_their_keys(spec):
    assert cell_key(spec, GD_CELL) == "4665e5024230fe64c59e5917"
    assert cell_key(spec, Cell("bpr", "teacher", 0, 1.0)) == "783b15305dba1b911473c381"
    assert digest(lists_settings_payload(spec.base), 24) == "8e417020f84d7572aa538f91"
    # the paper's student settings, given explicitly, are the defaults: same key
    explicit = replace(spec, base=replace(spec.base, student_reg_factors=(1.0,), student_transfer="paper"))
    assert cell_key(explicit, GD_CELL) == cell_key(spec, GD_CELL)


def test_another_generator_gives_the_gd_cells_new_keys_and_leaves_the_others(spec):
    knn = replace(spec, base=replace(spec.base, generator="itemknn", generator_settings={"itemknn": {"ks": [5]}}))
    payload = lists_settings_payload(knn.base)
    assert payload["generator"] == "itemknn" and payload["generator_settings"] == {"itemknn": {"ks": [5]}}
    assert "cgan" not in payload and "teacher" not in payload  # kNN reads neither the CGAN nor the KD teacher
    assert cell_key(knn, GD_CELL) != cell_key(spec, GD_CELL)
    assert cell_key(knn, Cell("bpr", "teacher", 0, 1.0)) == cell_key(spec, Cell("bpr", "teacher", 0, 1.0))
    other = replace(knn, base=replace(knn.base, generator_settings={"itemknn": {"ks": [10]}}))
    assert cell_key(other, GD_CELL) != cell_key(knn, GD_CELL)
    teacher = lists_settings_payload(replace(spec.base, generator="teacher"))
    assert teacher["teacher"]["teacher"]["model"] == {"dim": 16, "reg": 1e-3}  # the lists read the KD teacher
    auto = lists_settings_payload(replace(spec.base, generator="auto", auto_families=("itemknn", "cgan")))
    assert auto["auto_families"] == ["itemknn", "cgan"] and "cgan" in auto and "auto_budget_s" in auto


def test_the_students_settings_enter_the_gd_key_only_off_the_paper(spec):
    settings = cell_settings(GD_CELL, spec.base, {})
    assert "student_reg_factors" not in settings and "student_transfer" not in settings
    swept = replace(spec.base, student_reg_factors=(1.0, 0.1), student_transfer="listwise")
    settings = cell_settings(GD_CELL, swept, {})
    assert settings["student_reg_factors"] == [1.0, 0.1] and settings["student_transfer"] == "listwise"
    assert "student_transfer" not in cell_settings(Cell("bpr", "student", 0, 0.5), swept, {})


def row(method="gd", seed=0, hr=0.2, lam=0.7, **fields) -> dict:
    hp = {"lambda": lam, "temperature": 2.0} if method == "gd" else {}
    metrics = {f"{m}@{k}": hr for m in ("HR", "NDCG") for k in (5, 10, 20, 50)}
    out = dict(key=f"{method}-{seed}-{hr}-{fields}", dataset="toy", family="bpr", method=method, seed=seed,
               fraction=1.0 if method == "teacher" else 0.5, hyperparameters=hp, valid=metrics, test=metrics,
               test_sampled={**metrics, "negatives": 100}, params=50, teacher_params=100, train_seconds=1.0,
               cell_seconds=1.0, best_epoch=1, inference={"batch_users": 4, "seconds": 0.01, "repeats": 1},
               settings={}, rr_epsilon=None, selection_metric="valid NDCG@50", machine={"cpu": "x"},
               finished_at="2025-01-01T00:00:00+00:00")
    if method == "gd":
        out.update(include_observed=True, list_length=6)
    out.update(fields)
    return out


def test_rows_of_other_lists_stay_apart_and_table2_shows_one_gd_row_per_variant():
    rows = [row("teacher", hr=0.3), row(hr=0.21), row(hr=0.22, list_generator="itemknn", include_observed=False),
            row(hr=0.23, list_generator="itemknn", include_observed=True), row(hr=0.24, list_generator="auto:vae",
                                                                               include_observed=False)]
    for plain in rows:
        assert CellRow.from_dict(plain).to_dict() == plain
    cells = latest_rows(cell_rows(rows))
    assert len(cells) == 5  # the same (family, method, seed, size, hyperparameters): kept apart by their lists
    assert [r.list_generator for r in cells if paper_lists(r)] == [None, None]  # the teacher and the CGAN's GD
    md = table2(cells, "toy")
    labels = [line.split(" | ")[1] for line in md.splitlines() if line.startswith("| M (50%) | GD")]
    assert labels == ["GD (CGAN)", "GD (kNN)", "GD (kNN, own items in)", "GD (auto: VAE)"]
    assert "| M (50%) | GD (CGAN) | 0.2100 (1 seed) |" in md and "| M (50%) | GD (kNN) | 0.2200 (1 seed) |" in md
    assert gd_label(("cgan", False)) == "GD (CGAN, own items out)" and gd_label(("ease", False)) == "GD (EASE)"
    # a row written again for the same cell and lists replaces the earlier one
    again = latest_rows(cell_rows([*rows, row(hr=0.25, list_generator="itemknn", include_observed=False)]))
    assert len(again) == 5 and "| M (50%) | GD (kNN) | 0.2500 (1 seed) |" in table2(again, "toy")
    # the paper's GD rows dedupe whether or not they record include-observed
    older = {k: v for k, v in row(hr=0.19).items() if k != "include_observed"}
    assert len(latest_rows(cell_rows([older, row(hr=0.21)]))) == 1
