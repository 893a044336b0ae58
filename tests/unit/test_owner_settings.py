"""Owner settings: environment variables and .env, and a refusal outside development of a missing, default or
short secret that names the variable to set, without ever showing the secret."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from data_owner.cli import app
from data_owner.settings import DEVELOPMENT_SECRET, ArtifactLayout, OwnerSettings, secret_fingerprint

GOOD = "0123456789abcdef0123456789abcdef-production"


@pytest.fixture
def logs(caplog, monkeypatch):
    """caplog, with the owner's loggers enabled again: importlinter's `lint_imports` (tests/unit/test_import_rules.py)
    applies a logging config that disables every logger created before it, for the rest of the session."""
    for name in ("data_owner.keys", "data_owner.settings"):
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    return caplog


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("GDREC_OWNER_") or name == "GDREC_DATA_DIR":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_development_runs_without_a_secret(logs):
    settings = OwnerSettings()
    assert settings.secret_bytes() == DEVELOPMENT_SECRET.encode()
    assert "GDREC_OWNER_SECRET is not set" in logs.text


@pytest.mark.parametrize(("secret", "message"), [
    (None, "GDREC_OWNER_SECRET is not set and the environment is production"),
    (DEVELOPMENT_SECRET, "GDREC_OWNER_SECRET is the development default"),
    ("only-twenty-chars-xx", r"GDREC_OWNER_SECRET is too short for production \(20 characters\)"),
])
def test_production_refuses_a_missing_default_or_short_secret(monkeypatch, secret, message):
    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "production")
    if secret is not None:
        monkeypatch.setenv("GDREC_OWNER_SECRET", secret)
    with pytest.raises(ValidationError, match=message) as caught:
        OwnerSettings()
    assert "set GDREC_OWNER_SECRET to at least 32" in str(caught.value)
    if secret is not None:
        assert secret not in str(caught.value)  # regression: pydantic used to echo the input dict


def test_a_secret_too_short_for_the_tokens_is_refused_everywhere():
    with pytest.raises(ValidationError, match="too short"):
        OwnerSettings(secret="short")


def test_environment_and_dotenv(monkeypatch, tmp_path):
    Path(".env").write_text(f"GDREC_OWNER_ENVIRONMENT=production\nGDREC_OWNER_SECRET={GOOD}\n"
                            "GDREC_OWNER_PORT=9001\nGDREC_DATA_DIR=/data/raw\nGDREC_CONSUMER_PORT=1\n")
    settings = OwnerSettings()
    assert settings.environment == "production" and settings.port == 9001
    assert settings.data_dir == Path("/data/raw")  # the team-wide variable works too
    monkeypatch.setenv("GDREC_OWNER_PORT", "9002")  # the environment beats .env
    monkeypatch.setenv("GDREC_OWNER_ARTIFACTS_DIR", str(tmp_path / "a"))
    settings = OwnerSettings()
    assert settings.port == 9002 and settings.keys_path == tmp_path / "a" / "keys.json"
    assert settings.audit_path == ArtifactLayout(tmp_path / "a").audit_log
    assert OwnerSettings(port=9003).port == 9003  # options beat both


def test_the_secret_never_shows(monkeypatch):
    monkeypatch.setenv("GDREC_OWNER_SECRET", GOOD)
    settings = OwnerSettings()
    assert GOOD not in repr(settings) and GOOD not in str(settings.model_dump())
    assert settings.secret_bytes() == GOOD.encode()
    fingerprint = secret_fingerprint(GOOD.encode())
    assert len(fingerprint) == 16 and fingerprint not in GOOD


def test_a_command_reports_refused_settings_without_a_traceback(monkeypatch):
    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "production")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "GDREC_OWNER_SECRET is not set" in result.output and "Traceback" not in result.output
    monkeypatch.setenv("GDREC_OWNER_PORT", "not-a-port")
    monkeypatch.setenv("GDREC_OWNER_SECRET", GOOD)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "port (GDREC_OWNER_PORT): Input should be a valid integer" in result.output
