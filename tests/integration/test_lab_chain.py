"""The whole GD-REC chain in-process on a tiny synthetic dataset (users.dat format): every stage runs and the
table has the rows the paper compares."""

import json
import sys
from dataclasses import replace

import numpy as np
import pytest

from data_owner.config import TeacherSettings
from data_owner.gan import CGANConfig
from experiments.lab import LabConfig, load_split, render, run_chain, teacher_epoch_pairs, training_split
from tests.conftest import write_users_dat


def test_chain_runs_end_to_end(tmp_path):
    data = tmp_path / "users.dat"
    write_users_dat(data)
    config = LabConfig(
        dataset=str(data), family="bpr", fraction=0.5, list_length=8, teacher_epochs=20, gd_epochs=10,
        student_epochs=20, patience=0, eval_every=5, batch_size=128,
        cgan=CGANConfig(hidden_g=(32,), hidden_d=(16,), noise_dim=4, epochs=10, eval_every=5, batch_size=16,
                        g_steps=1, d_steps=1),
        teacher=TeacherSettings("bpr", {"dim": 16, "reg": 1e-3}, 0.02), device="cpu", progress=False,
    )
    rows, info = run_chain(config)
    names = [row.name for row in rows]
    assert names[0].startswith("Teacher (KD") and names[2].startswith("Teacher (GD")
    assert any(n.startswith("GD student") for n in names) and any(n.startswith("Student (50%") for n in names)
    gd_student = rows[3]
    assert abs(gd_student.params / rows[0].params - 0.5) < 0.01
    for row in rows:
        assert 0.0 <= row.test["HR@50"] <= 1.0
    assert 0.0 <= info["observed_share"] <= 1.0
    table = render(rows, info, config)
    assert "| GD student (50%, data-free)" in table


def test_teacher_list_source_lists_the_kd_teachers_own_top_items_and_trains_no_cgan(tmp_path, monkeypatch):
    from experiments import lab

    data = tmp_path / "users.dat"
    write_users_dat(data)
    monkeypatch.setattr(lab, "train_generator", lambda *a, **k: pytest.fail("the reference trains no CGAN"))
    config = LabConfig(
        dataset=str(data), list_length=5, include_observed=False, teacher_epochs=10, gd_epochs=2,
        student_epochs=5, patience=0, eval_every=5, batch_size=128, list_source="teacher",
        teacher=TeacherSettings("bpr", {"dim": 16, "reg": 1e-3}, 0.02), device="cpu", progress=False,
    )
    rows, info = run_chain(config)
    kd, source = rows[0], rows[1]
    assert source.name == "List source: the KD teacher's top-L (reference)"
    assert source.test == kd.test and source.params == kd.params
    assert info["observed_share"] == 0.0  # --no-include-observed: the teacher's top items outside the history


def test_rr_epsilon_randomizes_only_the_owner_training_matrix(tmp_path):
    data = tmp_path / "users.dat"
    write_users_dat(data)
    split = load_split(str(data))
    assert training_split(split, LabConfig(dataset=str(data))) is split  # off by default
    noisy = training_split(split, LabConfig(dataset=str(data), rr_epsilon=0.5, seed=3)).train
    assert noisy.n_users == split.n_users and noisy.n_items == split.n_items
    assert not np.array_equal(noisy.keys(), split.train.keys())
    users = split.eval_users  # the held-out items never enter the randomized matrix
    assert not noisy.contains(users, split.valid_item[users]).any()
    assert not noisy.contains(users, split.test_item[users]).any()
    # p = 1 / (1 + e^0.5) = 0.38: the ones stay with 1 - p, the zeros (the held-out positions aside) flip on with p
    p = 1 / (1 + np.exp(0.5))
    zeros = split.n_users * split.n_items - split.train.nnz - 2 * users.size
    expected = (1 - p) * split.train.nnz + p * zeros
    assert abs(noisy.nnz - expected) < 0.1 * expected and noisy.nnz > 1.3 * split.train.nnz
    again = training_split(split, LabConfig(dataset=str(data), rr_epsilon=0.5, seed=3)).train
    assert np.array_equal(again.keys(), noisy.keys())


def test_true_size_epochs_cap_the_teachers_only_under_randomized_response(tmp_path):
    data = tmp_path / "users.dat"
    write_users_dat(data)
    split = load_split(str(data))
    base = LabConfig(dataset=str(data), rr_true_size_epochs=True)
    assert teacher_epoch_pairs(base, split) is None  # no randomized response: every pair
    assert teacher_epoch_pairs(LabConfig(dataset=str(data), rr_epsilon=1.0), split) is None  # not asked
    assert teacher_epoch_pairs(replace(base, rr_epsilon=1.0), split) == split.train.nnz


@pytest.mark.parametrize("main_module", ["experiments.cli", "experiments.privacy_report", "experiments.cgan_search"])
def test_research_clis_report_a_bad_data_file_without_a_traceback(tmp_path, monkeypatch, capsys, main_module):
    import importlib

    bad = tmp_path / "u.data"
    bad.write_text("1\t2\t5\t881250949\n1 2 3\n")
    command = {"experiments.cli": ["gd"], "experiments.privacy_report": [],
               "experiments.cgan_search": ["--try", "{}", "--results", str(tmp_path / "search.jsonl")]}[main_module]
    monkeypatch.chdir(tmp_path)  # the CLIs' default output folders (reports/..., runs/...) land here
    monkeypatch.setattr(sys, "argv", ["prog", *command, "--dataset", str(bad), "--no-progress"])
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(main_module).main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{bad} line 2" in err
    assert "Traceback" not in err


def test_gd_command_runs_the_chain_with_another_list_generator(tmp_path):
    from typer.testing import CliRunner

    from experiments.cli import full_app

    data = tmp_path / "users.dat"
    write_users_dat(data)
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(full_app(), [
        "gd", "--dataset", str(data), "--generator", "itemknn", "--generator-json", '{"itemknn": {"ks": [5]}}',
        "--exclude-observed", "--student-reg-factors", "1,0.1", "--list-length", "5", "--device", "cpu",
        "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| item-kNN generator as a recommender |" in result.output
    saved = json.loads(out.read_text())
    assert saved["config"]["generator"] == "itemknn" and saved["info"]["observed_share"] == 0.0
    bad = CliRunner().invoke(full_app(), ["gd", "--dataset", str(data), "--student-transfer", "soft"])
    assert bad.exit_code == 2
