"""The export audit log: one JSON line per export request served, hash-chained, append-only, crash-safe.

Line k (1-based) is an `AuditEntry` (`shared.schemas`) in canonical JSON (sorted keys, no whitespace) with
`seq = k`, `prev_hash` = line k-1's `hash` (64 zeros for line 1) and `hash` = sha256 of the line's canonical JSON
without `hash`. Editing a line breaks its own hash; deleting one breaks the `seq` and `prev_hash` of the next.
Deleting the last lines leaves a valid shorter chain, so a head record beside the log (`<log>.head`: the last
seq and hash, signed with a key derived from the owner's secret) is rewritten after every append; `verify`
compares the two. Against someone who can also rewrite the head and knows the secret, record the head
elsewhere (GET /v1/audit/log returns it; `audit verify --expect-head` checks it).

Durability: a line is written with one `write` on an O_APPEND descriptor and fsynced before the response that
it records is sent. A crash during the write leaves at most a torn last line without its newline: `AuditLog.open`
moves those bytes to `<log>.torn-<time>` and truncates the log to its last complete line (the request was not
served: its response waits for the fsync). A failed write is rolled back, and the request fails.
One process appends at a time: `open` takes an exclusive lock on `<log>.lock`."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.checkpoint import atomic_write_text
from shared.schemas import AuditEntry, AuditHead, PrivacySwitches

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}")


class AuditError(RuntimeError):
    """The audit log cannot be used (locked by another process, damaged, unreadable)."""


class AuditWriteError(AuditError):
    """Appending a line failed; the log was rolled back to its previous last line."""


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 of the entry's canonical JSON without its `hash` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def head_path(log_path: Path) -> Path:
    return log_path.with_name(f"{log_path.name}.head")


def _head_tag(key: bytes, seq: int, hash_: str) -> str:
    return hmac.new(key, f"{seq}:{hash_}".encode(), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Reading and verifying


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based line of the log (0: the head record)
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else f"head: {self.message}"


@dataclass
class VerifyReport:
    path: Path
    lines: int = 0
    head: AuditHead = field(default_factory=lambda: AuditHead(seq=0, hash=GENESIS_HASH))
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    torn_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _split_lines(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Complete lines as (byte offset, line without newline), and where the torn tail (if any) starts."""
    end = data.rfind(b"\n") + 1  # bytes after the last newline: a write interrupted by a crash
    lines: list[tuple[int, bytes]] = []
    start = 0
    while start < end:
        stop = data.index(b"\n", start)
        lines.append((start, data[start:stop]))
        start = stop + 1
    return lines, end


def _check_line(number: int, raw: bytes, prev_hash: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse line `number` and check it against the chain; returns the entry (None if unreadable) and problems."""
    try:
        entry = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, [f"not valid JSON ({exc}); the line was edited or corrupted"]
    if not isinstance(entry, dict):
        return None, ["not a JSON object; the line was edited or corrupted"]
    problems = []
    try:
        AuditEntry.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        problems.append(f"not an audit entry ({'.'.join(map(str, first['loc']))}: {first['msg']})")
    seq = entry.get("seq")
    if seq != number:
        if isinstance(seq, int) and seq > number:
            problems.append(f"seq is {seq}, expected {number}: {seq - number} line(s) before it were deleted")
        else:
            problems.append(f"seq is {seq!r}, expected {number}: lines were reordered, duplicated or edited")
    if entry.get("prev_hash") != prev_hash:
        where = "the start of the log" if number == 1 else f"line {number - 1}"
        problems.append(f"prev_hash does not match the hash of {where}: a line before it was deleted or edited")
    if entry.get("hash") != entry_hash(entry):
        problems.append("hash does not match the line's content: the line was edited")
    return entry, problems


def _read_head(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        return {"error": str(exc)}
    return record if isinstance(record, dict) else {"error": "not a JSON object"}


def verify_log(path: str | Path, head_key: bytes | None = None, expect_head: str | None = None) -> VerifyReport:
    """Check every line of the log, its head record (signature when `head_key` is given) and, optionally, that a
    line with the hash `expect_head` (recorded earlier, elsewhere) is still in it."""
    path = Path(path)
    report = VerifyReport(path=path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
        report.notes.append(f"{path} does not exist: an empty log (no export request served yet)")
    lines, tail = _split_lines(data)
    if tail < len(data):
        report.torn_bytes = len(data) - tail
        report.notes.append(
            f"line {len(lines) + 1} is incomplete ({report.torn_bytes} bytes without a newline): a write interrupted "
            "by a crash, whose request was not served; the service moves it aside when it next starts"
        )
    prev_hash = GENESIS_HASH
    hashes: list[str] = []
    for number, (_, raw) in enumerate(lines, start=1):
        entry, problems = _check_line(number, raw, prev_hash)
        report.problems.extend(Problem(number, message) for message in problems)
        stored = entry.get("hash") if entry is not None else None
        prev_hash = stored if isinstance(stored, str) and _HEX64.fullmatch(stored) else entry_hash(entry or {})
        hashes.append(prev_hash)
    report.lines = len(lines)
    report.head = AuditHead(seq=len(lines), hash=hashes[-1] if hashes else GENESIS_HASH)
    _verify_head(report, hashes, head_key)
    if expect_head is not None and expect_head != GENESIS_HASH and expect_head not in hashes:
        report.problems.append(Problem(0, f"no line has the expected hash {expect_head}: the log was truncated "
                                          "or rewritten before that point"))
    return report


def _verify_head(report: VerifyReport, hashes: list[str], head_key: bytes | None) -> None:
    record = _read_head(head_path(report.path))
    n = len(hashes)
    if record is None:
        if n:
            report.notes.append("no head record beside the log: a deletion of its last lines cannot be detected")
        return
    if "error" in record:
        report.problems.append(Problem(0, f"head record unreadable ({record['error']})"))
        return
    seq, hash_ = record.get("seq"), record.get("hash")
    if not isinstance(seq, int) or not isinstance(hash_, str):
        report.problems.append(Problem(0, "head record lacks an integer seq and a hash"))
        return
    if head_key is not None:
        tag = record.get("tag")
        if not isinstance(tag, str) or not hmac.compare_digest(tag, _head_tag(head_key, seq, hash_)):
            report.problems.append(Problem(0, "the head record's signature does not verify: it was edited, or "
                                              "signed under another secret"))
    else:
        report.notes.append("head signature not checked (no secret given)")
    if seq > n:
        first = n + 1
        report.problems.append(Problem(first, f"missing: the log ends after line {n} but its head records {seq} "
                                              f"line(s); lines {first}-{seq} were deleted"))
    elif seq > 0 and hashes[seq - 1] != hash_:
        report.problems.append(Problem(seq, "does not match the head record's hash: the line was edited or "
                                            "the lines up to it were rewritten"))
    elif n > seq + 1:
        report.problems.append(Problem(seq + 2, f"lines {seq + 2}-{n} were appended after the head record "
                                                "(not by the service, which updates the head after every line)"))
    elif n == seq + 1:
        report.notes.append(f"line {n} was written just before a crash, before its head record: it is intact")


# ----------------------------------------------------------------------------------------------------------------
# Appending


class AuditLog:
    """The service's handle on the log: open (recover, verify, lock), append (thread-safe), read, close."""

    def __init__(self, path: str | Path, head_key: bytes | None = None) -> None:
        self.path = Path(path)
        self.head_key = head_key
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lock_file: Any = None
        self._offsets: list[int] = []  # byte offset of each line
        self._size = 0
        self._seq = 0
        self._hash = GENESIS_HASH

    def __enter__(self) -> AuditLog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def head(self) -> AuditHead:
        with self._lock:
            return AuditHead(seq=self._seq, hash=self._hash)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.path.with_name(f"{self.path.name}.lock"), "a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise AuditError(f"the audit log {self.path} is in use by another process (is another "
                             "`gdrec-owner serve` running on the same artifacts?)") from None
        self._lock_file = lock_file
        try:
            self._recover_and_load()
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if created:
                _fsync_dir(self.path.parent)
        except BaseException:
            self.close()
            raise
        log.info("audit log %s: %d line(s), head %s", self.path, self._seq, self._hash[:16])

    def _recover_and_load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        lines, end = _split_lines(data)
        if end < len(data):
            torn = data[end:]
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            aside = self.path.with_name(f"{self.path.name}.torn-{stamp}")
            with open(aside, "wb") as handle:
                handle.write(torn)
                handle.flush()
                os.fsync(handle.fileno())
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
            log.warning("audit log %s: removed a half-written last line (%d bytes, from a write interrupted by a "
                        "crash; its request was not served) and kept it in %s; the %d earlier line(s) are intact",
                        self.path, len(torn), aside.name, len(lines))
            data = data[:end]
        report = verify_log(self.path, self.head_key)
        if not report.ok:
            first = report.problems[0]
            raise AuditError(f"the audit log {self.path} fails verification ({first}; {len(report.problems)} "
                             "problem(s) in all). The service does not append to a damaged log: run `gdrec-owner "
                             "audit verify`, keep the file as evidence and move it aside to start a new log")
        self._offsets = [offset for offset, _ in lines]
        self._size = len(data)
        self._seq, self._hash = report.head.seq, report.head.hash
        record = _read_head(head_path(self.path))
        if self._seq and (record is None or record.get("seq") != self._seq):
            self._write_head()  # first start with this log, or a crash between a line and its head

    def _write_head(self) -> None:
        record: dict[str, Any] = {"seq": self._seq, "hash": self._hash}
        if self.head_key is not None:
            record["tag"] = _head_tag(self.head_key, self._seq, self._hash)
        atomic_write_text(head_path(self.path), json.dumps(record) + "\n")

    def append(
        self,
        *,
        key_id: str,
        consumer: str,
        endpoint: str,
        export_id: str,
        cursor: str | None,
        users: int,
        items: int,
        payload_sha256: str,
        privacy: PrivacySwitches,
        now: datetime | None = None,
    ) -> AuditEntry:
        """Append one line and fsync it; raises AuditWriteError (the log unchanged) when that fails."""
        with self._lock:
            if self._fd is None:
                raise AuditWriteError(f"the audit log {self.path} is not open")
            entry: dict[str, Any] = {
                "seq": self._seq + 1,
                "time": (now or datetime.now(UTC)).isoformat(),
                "key_id": key_id,
                "consumer": consumer,
                "endpoint": endpoint,
                "export_id": export_id,
                "cursor": cursor,
                "users": users,
                "items": items,
                "payload_sha256": payload_sha256,
                "privacy": privacy.model_dump(mode="json"),
                "prev_hash": self._hash,
            }
            entry["hash"] = entry_hash(entry)
            record = AuditEntry.model_validate(entry)
            line = canonical_json(entry) + b"\n"
            try:
                _write_all(self._fd, line)
                os.fsync(self._fd)
            except OSError as exc:
                self._roll_back(exc)
                raise AuditWriteError(f"could not append to the audit log {self.path}: {exc.strerror}") from exc
            self._offsets.append(self._size)
            self._size += len(line)
            self._seq, self._hash = entry["seq"], entry["hash"]
            try:
                self._write_head()
            except OSError as exc:  # the line itself is durable: the request is recorded
                log.error("audit log %s: could not update the head record (%s); `audit verify` will report the "
                          "lines after it until the next successful append", self.path, exc)
            return record

    def _roll_back(self, cause: OSError) -> None:
        try:
            os.ftruncate(self._fd, self._size)  # type: ignore[arg-type]
            os.fsync(self._fd)  # type: ignore[arg-type]
        except OSError:
            log.critical("audit log %s: a failed append (%s) could not be rolled back; the next start will move the "
                         "partial line aside", self.path, cause)

    def read(self, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Entries with seq in (after, after + limit], oldest first."""
        with self._lock:
            start = max(0, after)
            stop = min(self._seq, start + max(0, limit))
            if start >= stop:
                return []
            first = self._offsets[start]
            last = self._offsets[stop] if stop < self._seq else self._size
        with open(self.path, "rb") as handle:
            handle.seek(first)
            chunk = handle.read(last - first)
        return [AuditEntry.model_validate_json(raw) for raw in chunk.splitlines()]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
