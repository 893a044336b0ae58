"""The owner's command line as a package of thin commands: `app` and `main` where the console script and
`python -m data_owner.cli` find them, every command's help, the printed tables, and errors that end a command with
exit code 2 and a message instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data_owner.boundary import BoundaryAuditError
from data_owner.boundary_live import audit_running_deployment
from data_owner.cli import app, main
from data_owner.cli.train import privacy_switches, stage_table
from data_owner.export_record import ExportRecordError
from data_owner.pipeline import PipelineResult, StageReport
from data_owner.privacy.leakage_audit import audit_export_leakage
from data_owner.remote_eval import RemoteEvalConfig
from data_owner.remote_eval_job import evaluate_consumer, local_reference
from data_owner.settings import ArtifactLayout, OwnerSettings
from tests.conftest import REPO

SECRET = "owner-secret-0123456789abcdef0123"
COMMANDS = [[], ["train-teacher"], ["train"], ["serve"], ["evaluate"], ["keys"], ["keys", "add"],
            ["keys", "revoke"], ["keys", "list"], ["audit"], ["audit", "verify"], ["audit", "head"],
            ["audit", "reseal"], ["audit", "leakage"], ["audit", "boundary"]]


@pytest.fixture
def owner_env(tmp_path, monkeypatch):
    """A development owner with a known secret, working in an empty folder."""
    for name in list(os.environ):
        if name.startswith("GDREC_OWNER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GDREC_OWNER_SECRET", SECRET)
    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "development")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_console_script_entry_point_is_the_package_main():
    assert callable(main)
    assert 'gdrec-owner = "data_owner.cli:main"' in (REPO / "pyproject.toml").read_text()


def test_python_dash_m_runs_the_same_command_line():
    done = subprocess.run([sys.executable, "-m", "data_owner.cli", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    for command in ("train-teacher", "train", "serve", "evaluate", "keys", "audit"):
        assert command in done.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "gdrec-owner")
def test_every_command_renders_its_help(command):
    done = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert done.exit_code == 0, done.output
    assert "Usage:" in done.output


def test_the_stage_table_shows_a_dash_where_a_stage_measured_nothing():
    result = PipelineResult(artifacts=Path("a"), export_path=Path("a/export.json"), export_id="e", split_summary="",
                            stages=[StageReport("kd_teacher", "ran", 1.25, {"valid": {"HR@50": 0.5},
                                                                            "test": {"HR@50": 0.25, "NDCG@50": 0.125}}),
                                    StageReport("lists", "skipped", 0.0, {})])
    header, teacher, lists = stage_table(result)
    assert header.split() == ["stage", "status", "seconds", "valid", "HR@50", "test", "HR@50", "test", "NDCG@50"]
    assert teacher.split() == ["kd_teacher", "ran", "1.2", "0.5000", "0.2500", "0.1250"]
    assert lists.split() == ["lists", "skipped", "0.0", "-", "-", "-"]


def test_the_privacy_switches_in_words():
    assert privacy_switches(True, None) == "include observed; randomized response off"
    assert privacy_switches(False, 1.0) == "exclude observed; randomized response eps=1 per interaction"


def test_local_reference_reads_the_teachers_test_metrics_from_the_run_summary(tmp_path):
    layout = ArtifactLayout(tmp_path)
    assert local_reference(layout) == {}
    layout.summary_file.parent.mkdir(parents=True, exist_ok=True)
    layout.summary_file.write_text(json.dumps({"stages": {"gd_teacher": {"test": {"HR@50": 0.5}},
                                                          "kd_teacher": {"valid": {"HR@50": 0.4}}}}))
    assert local_reference(layout) == {"owner's GD teacher (local)": {"HR@50": 0.5}}


def test_without_an_export_the_evaluation_and_the_leakage_audit_say_to_train_first(owner_env, monkeypatch):
    monkeypatch.delenv("GDREC_OWNER_SECRET")  # development: a secret would be generated in the artifacts if asked for
    settings = OwnerSettings(artifacts_dir=owner_env / "artifacts")
    with pytest.raises(ExportRecordError, match="no finished export in .*: run `gdrec-owner train --artifacts"):
        evaluate_consumer(settings, "http://127.0.0.1:1", None, RemoteEvalConfig())
    with pytest.raises(ExportRecordError, match="no finished export under"):
        audit_export_leakage(settings)
    assert not settings.artifacts_dir.exists()  # nothing written, not even a development secret


def test_without_the_docker_sdk_the_boundary_audit_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "docker", None)  # import docker raises ImportError
    with pytest.raises(BoundaryAuditError, match=r"pip install 'gdrec\[audit\]'"):
        audit_running_deployment()


@pytest.mark.parametrize(("args", "message"), [
    (["evaluate", "--consumer", "http://127.0.0.1:1"], "no finished export in"),
    (["audit", "leakage"], "no finished export under"),
    (["keys", "add"], "pass --consumer (there is no export to take the consumer id from)"),
    (["audit", "verify", "--expect-head", "latest"], "--expect-head takes a head's hash"),
    (["train", "--dataset", "users.dat", "--teacher-json", "[1]"], "--teacher-json: expected a JSON object"),
    (["train-teacher", "--dataset", "users.dat", "--pretrain-json", '{"beta": 1}'], "--pretrain-json: "),
])
def test_a_refused_command_exits_2_with_a_message_and_no_traceback(owner_env, args, message):
    done = CliRunner().invoke(app, [*args, "--artifacts", str(owner_env / "artifacts")] if args[0] != "train-teacher"
                              else args)
    assert done.exit_code == 2, done.output
    assert f"error: {message}" in done.output and "Traceback" not in done.output


def test_refused_settings_name_the_variable(owner_env, monkeypatch):
    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "staging")
    done = CliRunner().invoke(app, ["keys", "list"])
    assert done.exit_code == 2
    assert "error: invalid settings: environment (GDREC_OWNER_ENVIRONMENT): " in done.output
