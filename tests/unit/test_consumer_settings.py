"""Consumer settings: production by default; a missing or weak API or admin key, or a weak owner key, refused there
with a message that names the variable and says how to make one, without ever showing the key; development's open
API; keys from files (GDREC_CONSUMER_<NAME>_FILE, the secrets directory); and the commands that stop with that
message."""

from __future__ import annotations

import logging
import os
import secrets

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError
from typer.testing import CliRunner

from model_consumer.cli import app
from model_consumer.settings import ConsumerSettings, Environment

HINT = "python -c 'import secrets; print(secrets.token_hex(32))'"
API, ADMIN = secrets.token_hex(32), secrets.token_hex(32)
WEAK = {
    "one character 32 times": "a" * 32,
    "two characters alternating": "ab" * 32,
    "sixteen characters": "0f3a9c1b7e5d2468",
    "a run of characters": "abcdefghijklmnopqrstuvwxyz0123456789",
}


def owner_issued_key() -> str:
    """The form of the keys `gdrec-owner keys add` prints (data_owner.keys)."""
    return f"gdr_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("GDREC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run-secrets").mkdir()
    monkeypatch.setenv("GDREC_CONSUMER_SECRETS_DIR", str(tmp_path / "run-secrets"))


@pytest.fixture
def logs(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("model_consumer.settings"), "disabled", False)
    return caplog


def refusal(**kwargs) -> str:
    with pytest.raises(ValidationError) as caught:
        ConsumerSettings(**kwargs)
    return str(caught.value) + caught.value.json()


def test_production_is_the_default():
    assert ConsumerSettings.model_fields["environment"].default is Environment.production
    settings = ConsumerSettings(api_key=API, admin_key=ADMIN)
    assert settings.environment is Environment.production and settings.api_key.get_secret_value() == API


@pytest.mark.parametrize(("given", "missing"), [({"admin_key": ADMIN}, "API_KEY"), ({"api_key": API}, "ADMIN_KEY")])
def test_production_without_a_key_names_the_variable_and_how_to_make_one(given, missing):
    message = refusal(**given)
    assert f"GDREC_CONSUMER_{missing} is not set and the environment is production" in message
    assert HINT in message and f"/run/secrets/gdrec_consumer_{missing.lower()}" in message
    assert "GDREC_CONSUMER_ENVIRONMENT=development" in message


@pytest.mark.parametrize("name", ["api_key", "admin_key"])
@pytest.mark.parametrize("key", WEAK.values(), ids=WEAK.keys())
def test_production_refuses_a_weak_key_without_showing_it(name, key):
    message = refusal(**{"api_key": API, "admin_key": ADMIN, name: key})
    assert f"GDREC_CONSUMER_{name.upper()} has an estimated" in message and "refused in production" in message
    assert HINT in message and key not in message


def test_the_owner_key_is_optional_but_never_weak_in_production():
    assert ConsumerSettings(api_key=API, admin_key=ADMIN).owner_key is None  # only `pull` needs it
    for _ in range(100):
        key = owner_issued_key()
        assert ConsumerSettings(api_key=API, admin_key=ADMIN, owner_key=key).owner_key.get_secret_value() == key
    message = refusal(api_key=API, admin_key=ADMIN, owner_key="owner-key-0123456789")
    assert "GDREC_CONSUMER_OWNER_KEY has an estimated" in message and "gdrec-owner keys add" in message
    assert "owner-key-0123456789" not in message


def test_production_accepts_generated_keys():
    for _ in range(200):
        api, admin = secrets.token_hex(32), secrets.token_urlsafe(32)
        assert ConsumerSettings(api_key=api, admin_key=admin).admin_key.get_secret_value() == admin


def test_development_takes_no_key_or_a_weak_one_with_a_warning(logs):
    assert ConsumerSettings(environment="development").api_key is None  # an open API
    settings = ConsumerSettings(environment="development", api_key="a" * 20)
    assert settings.api_key.get_secret_value() == "a" * 20
    assert "GDREC_CONSUMER_API_KEY has an estimated 0 bits" in logs.text and "a" * 20 not in logs.text


def test_the_secrets_directory(tmp_path):
    folder = tmp_path / "run-secrets"
    owner_key = owner_issued_key()
    for name, value in (("api_key", API), ("admin_key", ADMIN), ("owner_key", owner_key)):
        (folder / f"gdrec_consumer_{name}").write_text(value + "\n")
    settings = ConsumerSettings()
    assert [settings.api_key.get_secret_value(), settings.admin_key.get_secret_value(),
            settings.owner_key.get_secret_value()] == [API, ADMIN, owner_key]


def test_a_missing_secrets_directory_is_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("GDREC_CONSUMER_SECRETS_DIR", str(tmp_path / "absent"))
    assert ConsumerSettings(api_key=API, admin_key=ADMIN).api_key is not None


def test_the_file_variables(monkeypatch, tmp_path):
    for name, value in (("API_KEY", API), ("ADMIN_KEY", ADMIN)):
        (tmp_path / name).write_text(value + "\n")
        monkeypatch.setenv(f"GDREC_CONSUMER_{name}_FILE", str(tmp_path / name))
    (tmp_path / "run-secrets" / "gdrec_consumer_api_key").write_text(secrets.token_hex(32))
    settings = ConsumerSettings()
    assert settings.api_key.get_secret_value() == API and settings.admin_key.get_secret_value() == ADMIN
    monkeypatch.setenv("GDREC_CONSUMER_API_KEY", API)
    with pytest.raises(SettingsError, match="both GDREC_CONSUMER_API_KEY and GDREC_CONSUMER_API_KEY_FILE"):
        ConsumerSettings()


def test_an_empty_key_counts_as_not_set(monkeypatch):
    monkeypatch.setenv("GDREC_CONSUMER_API_KEY", "  ")
    assert "GDREC_CONSUMER_API_KEY is not set" in refusal(admin_key=ADMIN)


@pytest.mark.parametrize("command", [["serve"], ["status"], ["distill"], ["pull", "--owner", "http://127.0.0.1:9"]],
                         ids=lambda command: command[0])
def test_every_command_refuses_production_without_keys(command):
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "error: invalid settings: GDREC_CONSUMER_API_KEY is not set" in result.output and HINT in result.output
    assert "Traceback" not in result.output


def test_a_command_reports_a_weak_key_without_showing_it(monkeypatch, tmp_path):
    monkeypatch.setenv("GDREC_CONSUMER_API_KEY", API)
    monkeypatch.setenv("GDREC_CONSUMER_ADMIN_KEY", ADMIN)
    result = CliRunner().invoke(app, ["pull", "--owner", "http://127.0.0.1:9", "--key", "weak-owner-key-123456"])
    assert result.exit_code == 2 and "GDREC_CONSUMER_OWNER_KEY has an estimated" in result.output
    assert "weak-owner-key-123456" not in result.output and "Traceback" not in result.output
    monkeypatch.setenv("GDREC_CONSUMER_PORT", "not-a-port")
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "port (GDREC_CONSUMER_PORT): Input should be a valid integer" in result.output
    monkeypatch.delenv("GDREC_CONSUMER_PORT")
    monkeypatch.delenv("GDREC_CONSUMER_ADMIN_KEY")
    monkeypatch.setenv("GDREC_CONSUMER_ADMIN_KEY_FILE", str(tmp_path / "missing"))
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "GDREC_CONSUMER_ADMIN_KEY_FILE: cannot read" in result.output
    assert "Traceback" not in result.output


def test_development_is_asked_for_explicitly(monkeypatch, tmp_path):
    monkeypatch.setenv("GDREC_CONSUMER_ENVIRONMENT", "development")
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "served model: none" in result.output
