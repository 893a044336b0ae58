"""Consumer API keys: hashed at rest, shown once, checked in constant time, revocable while a service runs,
and a broken key file refuses every key instead of letting any through."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
from typer.testing import CliRunner

from data_owner.cli import app
from data_owner.keys import KeyStore, key_hash, parse_key_id


@pytest.fixture
def logs(caplog, monkeypatch):
    """caplog, with the owner's loggers enabled again: importlinter's `lint_imports` (tests/unit/test_import_rules.py)
    applies a logging config that disables every logger created before it, for the rest of the session."""
    for name in ("data_owner.keys", "data_owner.settings"):
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    return caplog


@pytest.fixture
def store(tmp_path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json")


def test_a_key_is_stored_only_as_its_hash(store):
    record, plain = store.add("vendor", ["export"])
    text = store.path.read_text()
    assert plain not in text and plain.split("_", 2)[2] not in text
    assert key_hash(plain) in text and record.key_id in text
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert parse_key_id(plain) == record.key_id


def test_authentication(store):
    record, plain = store.add("vendor", ["admin", "export"])
    assert store.authenticate(plain).key == record
    assert record.scopes == ("admin", "export")
    for wrong in ("", "gdr_", plain + "x", plain[:-1], "gdr_" + record.key_id + "_" + "A" * 43, "Bearer " + plain):
        result = store.authenticate(wrong)
        assert result.key is None and result.reason == "invalid API key"


def test_revocation_is_seen_by_a_running_store(tmp_path):
    running = KeyStore(tmp_path / "keys.json")  # the service's
    record, plain = KeyStore(tmp_path / "keys.json").add("vendor", ["export"])  # `keys add`
    assert running.authenticate(plain).key is not None
    KeyStore(tmp_path / "keys.json").revoke(record.key_id)  # `keys revoke`, another process
    result = running.authenticate(plain)
    assert result.key is None and "revoked at" in result.reason
    assert not running.get(record.key_id).active


def test_revoking_an_unknown_key_says_so(store):
    with pytest.raises(KeyError, match="no API key with id 'nope'"):
        store.revoke("nope")


@pytest.mark.parametrize(("consumer", "scopes", "message"), [
    ("", ["export"], "consumer"),
    ("bad consumer", ["export"], "consumer"),
    ("vendor", [], "scopes"),
    ("vendor", ["root"], "scopes"),
])
def test_bad_key_requests_are_refused(store, consumer, scopes, message):
    with pytest.raises(ValueError, match=message):
        store.add(consumer, scopes)


def test_a_corrupt_key_file_refuses_every_key(store, logs):
    _, plain = store.add("vendor", ["export"])
    store.path.write_text('{"format_version": 1, "keys": [')
    result = store.authenticate(plain)
    assert result.key is None and result.unavailable and "key store is unavailable" in result.reason
    assert "not valid JSON" in logs.text and "refused until it is fixed" in logs.text


def test_keys_commands(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("GDREC_OWNER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "development")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    keys_file = str(tmp_path / "keys.json")
    added = runner.invoke(app, ["keys", "add", "--consumer", "vendor", "--scope", "export", "--scope", "admin",
                                "--keys-file", keys_file])
    assert added.exit_code == 0, added.output
    plain = added.stdout.strip()  # only the key on stdout (scriptable); the message goes to stderr
    key_id = parse_key_id(plain)
    assert key_id is not None and "shown only now" in added.stderr
    listed = runner.invoke(app, ["keys", "list", "--keys-file", keys_file, "--json"])
    (record,) = json.loads(listed.stdout)
    assert record["key_id"] == key_id and record["scopes"] == ["admin", "export"] and "sha256" not in record
    assert plain not in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", key_id, "--keys-file", keys_file])
    assert revoked.exit_code == 0 and "revoked at" in revoked.output
    assert runner.invoke(app, ["keys", "revoke", "ffffffffffff", "--keys-file", keys_file]).exit_code == 2
    no_consumer = runner.invoke(app, ["keys", "add", "--artifacts", str(tmp_path / "empty")])
    assert no_consumer.exit_code == 2 and "pass --consumer" in no_consumer.output
    bad_scope = runner.invoke(app, ["keys", "add", "--consumer", "v", "--scope", "root", "--keys-file", keys_file])
    assert bad_scope.exit_code == 2
