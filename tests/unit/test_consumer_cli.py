"""`gdrec-consumer` settings and command-line errors: production refuses missing keys, a pull without an owner URL
or key says which variable to set, distill without a pulled export says to pull first, and no setting of the
consumer can point at raw data."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from model_consumer.cli import app
from model_consumer.settings import ConsumerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for name in list(os.environ):
        if name.startswith("GDREC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_production_requires_real_keys():
    with pytest.raises(ValidationError, match="GDREC_CONSUMER_API_KEY must be set"):
        ConsumerSettings(environment="production", admin_key="a" * 20)
    with pytest.raises(ValidationError, match="GDREC_CONSUMER_ADMIN_KEY"):
        ConsumerSettings(environment="production", api_key="a" * 20, admin_key="short")
    assert ConsumerSettings(environment="production", api_key="a" * 20, admin_key="b" * 20).api_key is not None


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
