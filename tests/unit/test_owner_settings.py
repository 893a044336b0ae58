"""Owner settings: production by default; a missing, published or weak secret refused there with a message that
names the variable and says how to make one, without ever showing the secret; development's random per-artifacts
secret; secrets from files (GDREC_OWNER_SECRET_FILE, the secrets directory); and the commands that stop with that
message before doing anything."""

from __future__ import annotations

import logging
import math
import os
import secrets
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError
from typer.testing import CliRunner

from data_owner.cli import app
from data_owner.settings import PUBLIC_SECRETS, ArtifactLayout, Environment, OwnerSettings, secret_fingerprint
from shared.secret_policy import estimated_bits

GOOD = secrets.token_hex(32)
HINT = "python -c 'import secrets; print(secrets.token_hex(32))'"
WEAK = {
    "one character 32 times": "a" * 32,
    "two characters alternating": "ab" * 32,
    "a short pattern repeated": "k3Xq9" * 13,
    "a run of characters": "0123456789abcdefghijklmnopqrstuvwxyz",
    "twenty characters": "only-twenty-chars-xx",
    "published": next(iter(PUBLIC_SECRETS)),
}


@pytest.fixture
def logs(caplog, monkeypatch):
    """caplog, with the owner's loggers enabled again: importlinter's `lint_imports` (tests/unit/test_import_rules.py)
    applies a logging config that disables every logger created before it, for the rest of the session."""
    for name in ("data_owner.keys", "data_owner.settings", "shared.secret_policy"):
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    return caplog


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path):
    """No GDREC_OWNER_* variable, .env or /run/secrets of the machine reaches the settings: the secrets directory is
    an empty folder of this test."""
    for name in list(os.environ):
        if name.startswith("GDREC_OWNER_") or name == "GDREC_DATA_DIR":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run-secrets").mkdir()
    monkeypatch.setenv("GDREC_OWNER_SECRETS_DIR", str(tmp_path / "run-secrets"))


def refusal(**kwargs) -> str:
    with pytest.raises(ValidationError) as caught:
        OwnerSettings(**kwargs)
    return str(caught.value) + caught.value.json()


# ------------------------------------------------------------------------------------------------- the policy


def test_the_strength_estimate_on_known_cases():
    assert estimated_bits("a" * 32) == 0 and estimated_bits("") == 0 and estimated_bits("x") == 0
    assert estimated_bits("ab" * 32) == pytest.approx(2.0)  # the pattern "ab" once: 2 characters x 1 bit
    assert estimated_bits("k3Xq9" * 13) <= 5 * math.log2(5)  # the pattern once, not 13 times
    assert estimated_bits("abcdefghijklmnop") == 0  # a run: every step is +1
    assert 32 < estimated_bits("0f3a9c1b7e5d2468") <= 64  # 16 distinct characters: at most 4 bits each
    assert 200 < min(estimated_bits(secrets.token_hex(32)) for _ in range(200)) <= 256


def test_production_is_the_default():
    assert OwnerSettings.model_fields["environment"].default is Environment.production
    settings = OwnerSettings(secret=GOOD)
    assert settings.environment is Environment.production and settings.secret_bytes() == GOOD.encode()


def test_production_without_a_secret_names_the_variable_and_how_to_make_one():
    message = refusal()
    assert "GDREC_OWNER_SECRET is not set and the environment is production" in message
    assert HINT in message and "GDREC_OWNER_SECRET_FILE" in message and "/run/secrets/gdrec_owner_secret" in message
    assert "GDREC_OWNER_ENVIRONMENT=development" in message


@pytest.mark.parametrize("secret", WEAK.values(), ids=WEAK.keys())
def test_production_refuses_a_weak_or_published_secret_without_showing_it(secret):
    message = refusal(secret=secret)
    assert "GDREC_OWNER_SECRET" in message and "refused in production" in message and HINT in message
    assert secret not in message


def test_a_weak_secret_from_the_environment_is_not_echoed_either(monkeypatch):
    monkeypatch.setenv("GDREC_OWNER_SECRET", "ab" * 32)
    message = refusal()
    assert "estimated 2 bits" in message and "ab" * 8 not in message


@pytest.mark.parametrize("make", [lambda: secrets.token_hex(32), lambda: secrets.token_urlsafe(32)],
                         ids=["token_hex(32)", "token_urlsafe(32)"])
def test_production_accepts_generated_secrets(make):
    for _ in range(200):
        value = make()
        assert OwnerSettings(secret=value).secret_bytes() == value.encode()


def test_a_secret_too_short_for_the_tokens_is_refused_everywhere():
    for environment in ("production", "development"):
        assert "too short (5 characters)" in refusal(environment=environment, secret="short")


def test_an_empty_secret_counts_as_not_set(monkeypatch):
    monkeypatch.setenv("GDREC_OWNER_SECRET", "")
    assert "GDREC_OWNER_SECRET is not set" in refusal()


# ------------------------------------------------------------------------------------------------- development


def test_development_generates_a_random_secret_per_artifacts_directory(tmp_path, logs):
    first = OwnerSettings(environment="development", artifacts_dir=tmp_path / "a")
    secret = first.secret_bytes()
    path = ArtifactLayout(tmp_path / "a").development_secret
    assert path.read_text().strip().encode() == secret and len(secret) == 64 and int(secret, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "GDREC_OWNER_SECRET is not set: development uses the random secret generated into" in logs.text
    assert OwnerSettings(environment="development", artifacts_dir=tmp_path / "a").secret_bytes() == secret  # kept
    assert OwnerSettings(environment="development", artifacts_dir=tmp_path / "b").secret_bytes() != secret
    warned = len(logs.records)
    assert first.secret_bytes() == secret and len(logs.records) == warned  # read once, warned once


def test_development_refuses_a_damaged_development_secret(tmp_path):
    path = ArtifactLayout(tmp_path).development_secret
    path.write_text("a" * 64 + "\n")
    with pytest.raises(ValueError, match="is damaged.*remove it"):
        OwnerSettings(environment="development", artifacts_dir=tmp_path).secret_bytes()


def test_development_accepts_a_weak_secret_with_a_warning(logs):
    settings = OwnerSettings(environment="development", secret="ab" * 16)
    assert settings.secret_bytes() == b"ab" * 16
    assert "GDREC_OWNER_SECRET has an estimated 2 bits" in logs.text and "accepted in development only" in logs.text
    assert "ab" * 16 not in logs.text


# ------------------------------------------------------------------------------------------------- secret files


def test_the_secrets_directory(tmp_path):
    (tmp_path / "run-secrets" / "gdrec_owner_secret").write_text(GOOD + "\n")
    assert OwnerSettings().secret_bytes() == GOOD.encode()  # the trailing newline stripped
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "GDREC_OWNER_SECRET").write_text(GOOD.upper())  # the variable's own spelling works too
    assert OwnerSettings(_secrets_dir=other).secret_bytes() == GOOD.upper().encode()


def test_a_missing_secrets_directory_is_not_an_error(monkeypatch, tmp_path, logs):
    monkeypatch.setenv("GDREC_OWNER_SECRETS_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("GDREC_OWNER_SECRET", GOOD)
    assert OwnerSettings().secret_bytes() == GOOD.encode()
    assert "GDREC_OWNER_SECRETS_DIR" in logs.text and "is not a directory" in logs.text


def test_a_weak_secret_in_a_file_is_refused_without_showing_it(tmp_path):
    (tmp_path / "run-secrets" / "gdrec_owner_secret").write_text("a" * 40 + "\n")
    message = refusal()
    assert "estimated 0 bits" in message and "a" * 40 not in message


def test_the_file_variable(monkeypatch, tmp_path):
    path = tmp_path / "owner-secret"
    path.write_text(GOOD + "\r\n")
    monkeypatch.setenv("GDREC_OWNER_SECRET_FILE", str(path))
    assert OwnerSettings().secret_bytes() == GOOD.encode()
    other = secrets.token_hex(32)
    (tmp_path / "run-secrets" / "gdrec_owner_secret").write_text(other)
    Path(".env").write_text(f"GDREC_OWNER_SECRET={other}\n")
    assert OwnerSettings().secret_bytes() == GOOD.encode()  # the file variable beats .env and the directory
    assert OwnerSettings(secret=other).secret_bytes() == other.encode()  # an option beats every source


@pytest.mark.parametrize(("content", "both", "message"), [
    (None, False, r"GDREC_OWNER_SECRET_FILE: cannot read .*missing: No such file or directory"),
    ("\n", False, r"GDREC_OWNER_SECRET_FILE: .*owner-secret is empty"),
    (GOOD, True, "both GDREC_OWNER_SECRET and GDREC_OWNER_SECRET_FILE are set"),
])
def test_a_file_variable_that_cannot_be_used(monkeypatch, tmp_path, content, both, message):
    path = tmp_path / ("owner-secret" if content is not None else "missing")
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("GDREC_OWNER_SECRET_FILE", str(path))
    if both:
        monkeypatch.setenv("GDREC_OWNER_SECRET", secrets.token_hex(32))
    with pytest.raises(SettingsError, match=message) as caught:
        OwnerSettings()
    assert GOOD not in str(caught.value)


# ------------------------------------------------------------------------------------------------- other settings


def test_environment_and_dotenv(monkeypatch, tmp_path):
    Path(".env").write_text(f"GDREC_OWNER_SECRET={GOOD}\n"
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


# ------------------------------------------------------------------------------------------------- the commands


def test_train_without_a_secret_stops_before_training(monkeypatch, tmp_path):
    def never(*args, **kwargs):
        raise AssertionError("training started without a secret")

    monkeypatch.setattr("data_owner.pipeline.run_pipeline", never)
    monkeypatch.setattr("data_owner.data.load_dataset", never)
    result = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--artifacts", str(tmp_path / "a")])
    assert result.exit_code == 2, result.output
    assert "GDREC_OWNER_SECRET is not set and the environment is production" in result.output
    assert HINT in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("command", [
    ["serve"], ["evaluate", "--consumer", "http://127.0.0.1:9"], ["keys", "add", "--consumer", "c"], ["keys", "list"],
    ["keys", "revoke", "0123456789ab"], ["audit", "verify"], ["audit", "leakage"],
], ids=lambda command: " ".join(command[:2]))
def test_every_service_command_refuses_production_without_a_secret(command):
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "error: invalid settings: GDREC_OWNER_SECRET is not set" in result.output
    assert "Traceback" not in result.output


def test_a_command_reports_refused_settings_without_a_traceback_or_the_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("GDREC_OWNER_SECRET", "ab" * 20)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "GDREC_OWNER_SECRET has an estimated 2 bits" in result.output
    assert "abab" not in result.output and "Traceback" not in result.output
    monkeypatch.setenv("GDREC_OWNER_PORT", "not-a-port")
    monkeypatch.setenv("GDREC_OWNER_SECRET", GOOD)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "port (GDREC_OWNER_PORT): Input should be a valid integer" in result.output
    monkeypatch.delenv("GDREC_OWNER_PORT")
    monkeypatch.setenv("GDREC_OWNER_SECRET_FILE", str(tmp_path / "missing"))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "both GDREC_OWNER_SECRET and GDREC_OWNER_SECRET_FILE" in result.output
    monkeypatch.delenv("GDREC_OWNER_SECRET")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "GDREC_OWNER_SECRET_FILE: cannot read" in result.output
    assert "Traceback" not in result.output


def test_development_is_asked_for_explicitly(monkeypatch, tmp_path):
    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "development")
    result = CliRunner().invoke(app, ["keys", "list", "--artifacts", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "no keys" in result.output
