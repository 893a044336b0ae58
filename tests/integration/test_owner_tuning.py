"""The owner's chain on a dataset without a teacher preset: `gdrec-owner train` searches the teacher's settings first
(a cached stage), trains the KD teacher with them (their values in its key, its record and the export's teacher card),
and a rerun searches nothing again; `gdrec-owner train-teacher` does the same for a teacher alone. The flags' errors."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from data_owner.cli import app
from data_owner.config import DEFAULT_SGD_TEACHER, TeacherSettings
from data_owner.pipeline import STAGES, TUNING_STAGE, load_split, read_stage, split_fingerprint, stage_keys
from data_owner.settings import ArtifactLayout, secret_fingerprint
from data_owner.teacher_trial import dataset_name
from shared.schemas import ExportBundle
from tests.integration.test_owner_pipeline import SECRET, owner_environment

TINY = [
    "--generator", "itemknn", "--list-length", "6", "--teacher-epochs", "4", "--gd-epochs", "2", "--patience", "0",
    "--eval-every", "2", "--batch-size", "128", "--device", "cpu", "--no-progress", "--consumer-id", "vendor",
]
SEARCH = ["--tune-trials", "3", "--tune-budget", "60"]


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    with owner_environment(root, ARTIFACTS_DIR=str(root / "artifacts")):
        yield root


@pytest.fixture(scope="module")
def tuned_run(environment):
    result = CliRunner().invoke(app, ["train", "--dataset", "users.dat", *TINY, *SEARCH])
    assert result.exit_code == 0, result.output
    return ArtifactLayout(environment / "artifacts"), result


def test_a_dataset_given_by_path_is_tuned_before_its_kd_teacher(tuned_run):
    layout, result = tuned_run
    tuning = read_stage(layout, TUNING_STAGE)
    assert tuning is not None and "teacher tuning: 3 trials" in result.output
    report = json.loads((layout.stage(TUNING_STAGE) / "tuning.json").read_text())
    assert len(report["trials"]) == 3 and report["budget_s"] == 60.0
    assert report["trials"][0]["model"] == DEFAULT_SGD_TEACHER.model  # the product's default is tried first
    assert report["teacher"]["optimizer"] == "sgd"  # the product's BPR teacher: per-triple SGD
    chosen = TeacherSettings.from_payload(tuning["summary"]["teacher"])
    kd = read_stage(layout, "kd_teacher")
    assert kd["inputs"] == {TUNING_STAGE: tuning["output_id"]}
    assert kd["summary"]["lr"] == chosen.lr and kd["summary"]["tuned"] is True
    assert kd["summary"]["config"]["dim"] == chosen.model["dim"] and kd["summary"]["config"]["reg"] == chosen.model[
        "reg"]
    card = ExportBundle.model_validate_json(layout.export_file.read_bytes()).manifest.teacher
    assert card.config["reg"] == chosen.model["reg"] and card.config["dim"] == chosen.model["dim"]
    run = json.loads(layout.run_file.read_text())
    assert run["config"]["teacher"]["model"] == chosen.model and run["config"]["teacher"]["lr"] == chosen.lr
    summary = json.loads(layout.summary_file.read_text())
    assert summary["teacher"]["tuned"] is True and summary["teacher"]["lr"] == chosen.lr
    assert list(summary["stages"]) == [TUNING_STAGE, *STAGES]


def test_the_kd_teachers_key_holds_the_tuned_settings(tuned_run):
    layout, _ = tuned_run
    run = json.loads(layout.run_file.read_text())
    from data_owner.chain_options import chain_config

    chosen = TeacherSettings.from_payload(read_stage(layout, TUNING_STAGE)["summary"]["teacher"])
    assert chosen.optimizer == "sgd"
    config = chain_config("users.dat", "bpr", teacher_fields={"model": chosen.model, "lr": chosen.lr,
                                                              "negatives": chosen.negatives}, teacher_optimizer="sgd",
                          generator="itemknn", list_length=6, teacher_epochs=4, gd_epochs=2, patience=0, eval_every=2,
                          batch_size=128, device="cpu", progress=False, consumer_id="vendor")
    keys = stage_keys(config, split_fingerprint(load_split("users.dat")), secret_fingerprint(SECRET.encode()))
    assert run["stage_keys"]["kd_teacher"] == keys["kd_teacher"] == read_stage(layout, "kd_teacher")["key"]
    other = stage_keys(replace(config, teacher=replace(config.teacher, lr=config.teacher.lr * 2)), "d", "s")
    assert other["kd_teacher"] != stage_keys(config, "d", "s")["kd_teacher"]


def test_a_rerun_does_not_tune_again(tuned_run):
    layout, _ = tuned_run
    before = {name: read_stage(layout, name)["finished_at"] for name in (TUNING_STAGE, *STAGES)}
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["train", "--dataset", "users.dat", *TINY, *SEARCH])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 5
    assert {name: read_stage(layout, name)["finished_at"] for name in before} == before


def test_no_tune_trains_the_default_without_a_search(environment):
    artifacts = environment / "untuned"
    result = CliRunner().invoke(app, ["train", "--dataset", "users.dat", "--artifacts", str(artifacts), *TINY,
                                      "--no-tune", "--teacher-epochs", "2"])
    assert result.exit_code == 0, result.output
    layout = ArtifactLayout(artifacts)
    assert read_stage(layout, TUNING_STAGE) is None and "teacher tuning" not in result.output
    kd = read_stage(layout, "kd_teacher")["summary"]
    assert kd["config"]["dim"] == DEFAULT_SGD_TEACHER.model["dim"] and kd["config"]["reg"] == \
        DEFAULT_SGD_TEACHER.model["reg"] and kd["lr"] == DEFAULT_SGD_TEACHER.lr and kd["tuned"] is False


@pytest.mark.parametrize(("args", "message"), [
    (["--dataset", "ml-100k", "--tune-budget", "30"], "--tune-budget: only applies when the teacher is tuned"),
    (["--dataset", "users.dat", "--no-tune", "--tune-trials", "3"], "--tune-trials: only applies when the teacher"),
    (["--dataset", "users.dat", "--teacher-json", '{"lr": 0.01}', "--tune-max-params", "100"],
     "--tune-max-params: only applies"),
    (["--dataset", "users.dat", "--tune", "--teacher-json", '{"lr": 0.01}'],
     "tuning searches the teacher's settings: give either tune=True (--tune) or teacher settings"),
])
def test_train_refuses_tuning_flags_that_would_do_nothing(environment, args, message):
    result = CliRunner().invoke(app, ["train", *args, "--artifacts", str(environment / "refused")])
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["train", "train-teacher"])
@pytest.mark.parametrize(("flag", "value"), [("--tune-budget", "0"), ("--tune-trials", "0"),
                                             ("--tune-max-params", "-5"), ("--tune-budget", "soon")])
def test_a_bad_tuning_value_names_its_option(environment, command, flag, value):
    result = CliRunner().invoke(app, [command, "--dataset", "users.dat", flag, value])
    assert result.exit_code == 2 and f"'{flag}'" in result.output, result.output


# ------------------------------------------------------------------------------------------------ train-teacher


@pytest.mark.filterwarnings("ignore:.*has no timestamps:UserWarning")  # the file-order split of users.dat
def test_train_teacher_tunes_a_dataset_given_by_path_and_keys_its_folder_by_the_path(environment):
    result = CliRunner().invoke(app, ["train-teacher", "--dataset", "users.dat", "--epochs", "2", "--eval-every", "1",
                                      "--batch-size", "128", "--device", "cpu", "--no-progress", *SEARCH])
    assert result.exit_code == 0, result.output
    assert "teacher tuning: 3 trials" in result.output
    folder = next((environment / "artifacts" / "teachers").glob(f"{dataset_name('users.dat')}-bpr-d*-s0"))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["tuning"]["counts"]["complete"] + summary["tuning"]["counts"]["pruned"] == 3
    assert summary["config"] == summary["tuning"]["teacher"]["model"]
    assert summary["lr"] == summary["tuning"]["teacher"]["lr"]


@pytest.mark.parametrize(("args", "message"), [
    (["--tune", "--dim", "8"], "--tune searches the teacher's settings itself: drop --dim"),
    (["--tune", "--reg", "0.1", "--lr", "0.01"], "--tune searches the teacher's settings itself: drop --reg, --lr,"),
    (["--no-tune", "--tune-trials", "3"], "--tune-trials: only applies when the teacher is tuned"),
    (["--dim", "8", "--tune-budget", "10"], "--tune-budget: only applies"),
])
def test_train_teacher_refuses_conflicting_flags(environment, args, message):
    result = CliRunner().invoke(app, ["train-teacher", "--dataset", "users.dat", *args])
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output and "Traceback" not in result.output
