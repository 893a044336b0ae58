"""Consumer API keys, hashed at rest: a JSON file of key records (id, consumer, scopes, sha256 of the key,
creation and revocation times). The plain key is shown once, by `gdrec-owner keys add`, and never stored.

A key reads `gdr_<key id>_<secret>`; the key id (public, it appears in the audit log) finds the record and the
sha256 of the whole presented key is compared with the stored one by `hmac.compare_digest`. The file is replaced
atomically (mode 0600) on every change, under a lock, and a running service re-reads it when it changes, so a
revocation takes effect on the next request without a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from shared.checkpoint import atomic_write_text, exclusive_lock

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEY_PREFIX = "gdr"
CONSUMER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_PATTERN = re.compile(r"^gdr_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"gdrec: no such key").hexdigest()


class Scope(StrEnum):
    export = "export"  # read the manifest and export pages (of the key's own consumer)
    admin = "admin"  # read the audit log


class KeyFileError(ValueError):
    """The key file is unreadable or malformed (names the file and what is wrong)."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    consumer: str
    scopes: tuple[str, ...]
    sha256: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """The record without its hash (for listings)."""
        return {k: v for k, v in asdict(self).items() if k != "sha256"}


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key_id(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _KEY_PATTERN.match(key)
    return match.group(1) if match else None


def new_key() -> tuple[str, str]:
    """(key id, plain key) of a fresh random key: 12 hex digits of id and 256 bits of secret."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class Authentication:
    """The outcome of checking a presented key: `key` when it is valid, else `reason` (for a 401 detail; a 503 when
    `unavailable`: the key file cannot be read, so no key can be checked, and the client's key may well be fine)."""

    key: ApiKey | None
    reason: str = ""
    unavailable: bool = False


class KeyStore:
    """Key records in a JSON file. Thread-safe; re-reads the file when it changes on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}
        self._signature: tuple[int, int, int] | None = None
        self._error: str | None = None
        self._reload()

    # ---------------------------------------------------------------------------------------------- reading

    def _stat_signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        signature = self._stat_signature()
        if signature is not None and signature == self._signature:
            return
        try:
            self._keys = read_key_file(self.path)
            self._error = None
        except KeyFileError as exc:  # fail closed: no key is valid until the file is fixed
            self._keys, self._error = {}, str(exc)
            log.error("%s; every request is refused until it is fixed", exc)
        self._signature = signature

    def refresh(self) -> None:
        with self._lock:
            self._reload()

    def list(self) -> list[ApiKey]:
        self.refresh()
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    def get(self, key_id: str) -> ApiKey | None:
        self.refresh()
        return self._keys.get(key_id)

    def authenticate(self, presented: str) -> Authentication:
        """Check a presented key in constant time (per key id). Never logs or returns the key itself."""
        self.refresh()
        if self._error is not None:  # the operator has the file's problem in the log; the client gets no path
            return Authentication(None, "the key store is unavailable (the service's key file cannot be read): "
                                  "try again later; the operator has been told in the service log", unavailable=True)
        key_id = parse_key_id(presented)
        record = self._keys.get(key_id) if key_id is not None else None
        expected = record.sha256 if record is not None else _DUMMY_HASH
        matches = hmac.compare_digest(key_hash(presented), expected)
        if record is None or not matches:
            return Authentication(None, "invalid API key")
        if not record.active:
            return Authentication(None, f"API key {record.key_id} was revoked at {record.revoked_at}")
        return Authentication(record)

    # ---------------------------------------------------------------------------------------------- writing

    @contextmanager
    def _editing(self) -> Iterator[dict[str, ApiKey]]:
        """Read-modify-write under an exclusive file lock (two `keys` commands at once cannot lose a key)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, exclusive_lock(self.path.with_name(f".{self.path.name}.lock")):
            keys = read_key_file(self.path)
            yield keys
            write_key_file(self.path, keys)
            self._keys, self._signature, self._error = keys, self._stat_signature(), None

    def add(self, consumer: str, scopes: list[str] | tuple[str, ...]) -> tuple[ApiKey, str]:
        """Create a key; returns its record and the plain key (shown to the operator once, stored nowhere)."""
        if not CONSUMER_PATTERN.match(consumer):
            raise ValueError(f"consumer {consumer!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit")
        unknown = sorted(set(scopes) - {s.value for s in Scope})
        if unknown or not scopes:
            raise ValueError(f"scopes must be a non-empty subset of {[s.value for s in Scope]}, got {list(scopes)}")
        with self._editing() as keys:
            key_id, plain = new_key()
            while key_id in keys:  # 48-bit ids: a collision is astronomically unlikely, but cheap to rule out
                key_id, plain = new_key()
            record = ApiKey(key_id=key_id, consumer=consumer, scopes=tuple(sorted(set(scopes))),
                            sha256=key_hash(plain), created_at=_now())
            keys[key_id] = record
        log.info("added API key %s for consumer %s (scopes %s)", key_id, consumer, ",".join(record.scopes))
        return record, plain

    def revoke(self, key_id: str) -> ApiKey:
        with self._editing() as keys:
            record = keys.get(key_id)
            if record is None:
                raise KeyError(f"no API key with id {key_id!r} in {self.path}")
            if record.active:
                record = replace(record, revoked_at=_now())
                keys[key_id] = record
        log.info("revoked API key %s", key_id)
        return record


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_key_file(path: Path) -> dict[str, ApiKey]:
    """Key records by id; an absent file holds no keys."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"key file {path} line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION or not isinstance(
        data.get("keys"), list
    ):
        raise KeyFileError(f"key file {path}: expected {{\"format_version\": {FORMAT_VERSION}, \"keys\": [...]}}")
    keys: dict[str, ApiKey] = {}
    for index, raw in enumerate(data["keys"]):
        try:
            record = ApiKey(**{**raw, "scopes": tuple(raw["scopes"])})
        except (TypeError, KeyError) as exc:
            raise KeyFileError(f"key file {path}: record {index} is malformed ({exc})") from exc
        if not re.fullmatch(r"[0-9a-f]{12}", record.key_id) or not re.fullmatch(r"[0-9a-f]{64}", record.sha256):
            raise KeyFileError(f"key file {path}: record {index} has a malformed key_id or sha256")
        keys[record.key_id] = record
    return keys


def write_key_file(path: Path, keys: dict[str, ApiKey]) -> None:
    payload = {"format_version": FORMAT_VERSION, "keys": [asdict(k) for k in keys.values()]}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")  # mkstemp: created with mode 0600
    os.chmod(path, 0o600)
