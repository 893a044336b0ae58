"""`gdrec-consumer` settings and command-line errors: production refuses missing keys, a pull without an owner URL
or key says which variable to set, distill without a pulled export says to pull first, an interrupted distill
resumes and then removes its training state, and no setting of the consumer can point at raw data."""

from __future__ import annotations

import logging
import secrets

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from model_consumer.cli import app
from model_consumer.settings import ConsumerLayout, ConsumerSettings
from shared.distillation import distill_student
from tests.unit.test_consumer_resume import CLI_ARGS, CONFIG, Interrupted, die_after, store_export
from tests.unit.test_export_distill import make_export


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for name in list(os.environ):
        if name.startswith("GDREC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GDREC_CONSUMER_ENVIRONMENT", "development")  # the tests below that need production say so
    monkeypatch.chdir(tmp_path)


def test_production_requires_real_keys():
    strong, other = secrets.token_hex(32), secrets.token_hex(32)
    with pytest.raises(ValidationError, match="GDREC_CONSUMER_API_KEY"):
        ConsumerSettings(environment="production", admin_key=strong)
    with pytest.raises(ValidationError, match="GDREC_CONSUMER_ADMIN_KEY"):
        ConsumerSettings(environment="production", api_key=strong, admin_key="short")
    assert ConsumerSettings(environment="production", api_key=strong, admin_key=other).api_key is not None


def test_no_setting_points_at_raw_data(monkeypatch, tmp_path):
    monkeypatch.setenv("GDREC_DATA_DIR", "/raw")
    settings = ConsumerSettings()
    assert "/raw" not in str(settings.data_dir)
    assert not [name for name in ConsumerSettings.model_fields if name not in ("data_dir",) and "data" in name]


def test_pull_names_what_is_missing():
    result = CliRunner().invoke(app, ["pull"])
    assert result.exit_code == 2 and "GDREC_CONSUMER_OWNER_URL" in result.output
    result = CliRunner().invoke(app, ["pull", "--owner", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "GDREC_CONSUMER_OWNER_KEY" in result.output


def test_distill_without_an_export_says_to_pull_first(tmp_path):
    result = CliRunner().invoke(app, ["distill", "--data-dir", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "gdrec-consumer pull --owner URL" in result.output


def test_status_of_an_empty_directory(tmp_path):
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "no export" in result.output and "served model: none" in result.output


def test_distill_resumes_after_an_interruption_then_removes_its_training_state(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GDREC_CONSUMER_CHECKPOINT_EVERY_S", "0")  # the setting: a save after every epoch
    export = make_export(n_items=40, length=12)[0]
    layout = ConsumerLayout(tmp_path / "consumer")
    store_export(layout.root, export)
    cadence = CLI_ARGS.index("--checkpoint-every")
    args = ["distill", "--data-dir", str(layout.root), *CLI_ARGS[:cadence], *CLI_ARGS[cadence + 2:]]
    die_after(monkeypatch, 4)
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, Interrupted) and not layout.current_model.exists()
    assert len(list(layout.training.glob("*/*.pt"))) == 1

    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 4" in caplog.text and "removed the training checkpoint" in caplog.text
    assert list(layout.training.iterdir()) == [] and layout.current_model.is_file()
    plain = distill_student(export, CONFIG)
    assert f"best epoch {plain.train.best_epoch} of {plain.train.epochs_run}" in result.output


def test_distill_refuses_a_negative_checkpoint_interval(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["distill", "--data-dir", str(tmp_path), "--checkpoint-every", "-1"])
    assert result.exit_code == 2 and "Invalid value for '--checkpoint-every'" in result.output
    monkeypatch.setenv("GDREC_CONSUMER_CHECKPOINT_EVERY_S", "-5")
    result = CliRunner().invoke(app, ["distill", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "checkpoint_every_s" in result.output
