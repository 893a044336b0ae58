"""`gdrec-cgan-search` on a tiny synthetic dataset: one row per candidate, ranked by validation, finished
candidates skipped on rerun, bad candidates refused with a clear message and nothing trained."""

import json

import pytest
from typer.testing import CliRunner

from experiments.cgan_search import app
from experiments.results import read_rows
from tests.conftest import write_users_dat

BASE = json.dumps({"hidden_g": [16], "hidden_d": [8], "noise_dim": 4, "epochs": 3, "eval_every": 1,
                   "batch_size": 16, "g_steps": 1, "d_steps": 1})


def search(data, results, *tries):
    args = ["--dataset", str(data), "--base", BASE, "--results", str(results), "--device", "cpu", "--no-progress"]
    for text in tries:
        args += ["--try", text]
    return CliRunner().invoke(app, args)


def test_rows_ranking_and_resume(tmp_path):
    data, results = tmp_path / "users.dat", tmp_path / "search.jsonl"
    write_users_dat(data, n_users=40, n_items=30)
    first = search(data, results, '{"lr_g": 1e-3}', '{"mask_sampling": "per_batch", "patience": 1}')
    assert first.exit_code == 0, first.output
    rows = read_rows(results)
    assert len(rows) == 2
    for row in rows:
        assert 1 <= row["best_epoch"] <= row["epochs_run"] <= 3
        assert 0.0 <= row["valid"]["HR@50"] <= 1.0 and 0.0 <= row["test"]["NDCG@50"] <= 1.0
        assert [h["epoch"] for h in row["history"]] == list(range(1, row["epochs_run"] + 1))
        assert row["cgan"]["hidden_g"] == [16]  # the base applies to every candidate
    assert rows[1]["cgan"]["mask_sampling"] == "per_batch" and "mask_sampling" not in rows[0]["cgan"]
    table = [line for line in first.output.splitlines() if line.startswith("| `")]
    valid = [float(line.split("|")[3]) for line in table]
    assert len(table) == 2 and valid == sorted(valid, reverse=True)

    again = search(data, results, '{"lr_g": 1e-3}', '{"lr_g": 2e-3}')
    assert again.exit_code == 0, again.output
    assert 'skip (finished): {"lr_g": 1e-3}' in again.output
    assert len(read_rows(results)) == 3  # only the new candidate trained


def test_bad_candidates_are_refused_before_training(tmp_path):
    data, results = tmp_path / "users.dat", tmp_path / "search.jsonl"
    write_users_dat(data, n_users=40, n_items=30)
    for text, message in (('{"lr_g": ', "not JSON"), ('{"learning_rate": 1}', "unknown CGANConfig field"),
                          ('{"mask_ratio": 2}', "mask_ratio must lie in [0, 1]"), ("[1, 2]", "JSON object")):
        result = search(data, results, text)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not results.exists()


@pytest.mark.parametrize("command", [["gd"], ["run", "--work-dir", "unused"]])
def test_lab_commands_refuse_a_bad_cgan_json_without_a_traceback(tmp_path, command):
    from experiments.cli import full_app

    data = tmp_path / "users.dat"
    write_users_dat(data, n_users=40, n_items=30)
    for text, message in (("{bad", "--cgan-json: not JSON"), ('{"alpha_g": 1}', "unknown CGANConfig field")):
        result = CliRunner().invoke(full_app(), [*command, "--dataset", str(data), "--cgan-json", text])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
