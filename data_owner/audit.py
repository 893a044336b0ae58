"""The export audit log: one entry per export request served (and per operator reseal), hash-chained, MACed under a
key derived from the owner's secret, append-only, crash-safe, rotated into sealed segments.

Entries. Each line is an `AuditEntry` (`shared.schemas`) in canonical JSON (sorted keys, no whitespace). `seq`
counts entries from 1 across all segments; `prev_hash` is the previous entry's `hash` (64 zeros for the first);
`hash` is the sha256 of the line's canonical JSON without `hash` and `mac`; `mac` is HMAC-SHA256 of `hash` (its 64
hex digits) under `audit_entry_key(secret)` (`data_owner.settings`). Both are kept: the plain sha256 chain lets
anyone order the entries and check a published head without the secret; the MAC says who wrote each entry, so
without the secret no one can write, edit or re-chain an entry that verifies (a forged line chained with plain
sha256 fails its MAC). A log without MACs fails verification.

Head. `<log>.head` holds the seq and hash of the last durable entry and `tag` = HMAC-SHA256 of "<seq>:<hash>" under
`audit_head_key(secret)`. Deleting entries from the end leaves a valid shorter chain: the head catches it.
`verify_log` reports as problems: a missing head beside a non-empty log, an unreadable or unsigned head, a head
past the end of the log (truncation), and a head whose hash is not the entry's at its seq (rewrite). Entries after
the head whose MACs verify are the service's own, written after its last head update (the head is rewritten once
per group of writes, and a crash can fall in between): a note, and the service signs a new head when it starts.
A head saved earlier and put back after a truncation to it cannot be told from a shorter log: publish heads
elsewhere (`gdrec-owner audit head`, GET /v1/audit/log) and check them with `audit verify --expect-head`.

Recovery. The service does not start on a log with problems. `reseal_log` (`gdrec-owner audit reseal --reason`)
appends a MACed entry of kind "reseal" recording the reason, the problems found, the head record found and the
sha256 of every line before it, then writes a new head. Verification then reports those problems as acknowledged,
for as long as the lines before the reseal still hash to what it recorded (a later change to them is a problem
again). A log holding lines that are not entries, or entries out of order, cannot be resealed (the service could not
page it): keep it as evidence and move it aside to start a new log.

Segments. When the active file `<log>` has reached `segment_bytes`, the next append first seals it: fsync, rename to
`<log>.000001` (then .000002, ...), fsync the folder, start an empty `<log>`. The chain carries over: the next entry
continues the seq and chains on the sealed segment's last hash (its final head), so a segment removed, renamed,
truncated or edited breaks the numbering or the chain, and verification reads the sealed segments in order, then
the active file. `AuditLog.read` pages across segments.

Durability (group commit). An append writes its line (one `write` on an O_APPEND descriptor) under a short lock,
then waits until the log is fsynced past it. The first waiter to find no fsync running becomes the leader: it fsyncs
once for every line written so far and wakes their writers. A head writer thread then rewrites the head record for
the newest durable entry (groups that end while it writes share its next write: never once per request, and no
response waits for it). A response leaves only after its line is fsynced. If the fsync fails, the lines after the
last durable one are truncated away and every request waiting on them fails (AuditWriteError: 503); if even the
truncation fails, the log refuses appends until the service restarts (the lines left then verify and are kept: a
recorded request may have been refused, never the reverse). A crash can leave a last line without its newline, or,
after a power loss, lines after the durable head that are not JSON (pages never written): the next start moves those
bytes to `<log>.torn-<time>` (their requests were not answered). One process appends at a time: opening takes an
exclusive lock on `<log>.lock`."""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import threading
from array import array
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from data_owner.settings import audit_entry_key, audit_head_key
from shared.checkpoint import atomic_write_text, fsync_dir
from shared.schemas import AuditEntry, AuditHead, PrivacySwitches

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
SEGMENT_DIGITS = 6
MAX_FINDINGS = 200  # problems a reseal entry lists (its log_sha256 pins every line, listed or not)
MAX_FINDING_CHARS = 500
_HEX64 = re.compile(r"[0-9a-f]{64}")


class AuditError(RuntimeError):
    """The audit log cannot be used (locked by another process, failing verification, unreadable)."""


class AuditWriteError(AuditError):
    """An entry could not be made durable; the request it records must not be served."""


@dataclass(frozen=True)
class AuditKeys:
    """The two keys derived from the owner's secret: one MACs entries, one signs the head record."""

    entry: bytes = field(repr=False)
    head: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> AuditKeys:
        return cls(entry=audit_entry_key(secret), head=audit_head_key(secret))


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 of the entry's canonical JSON without its `hash` and `mac` fields."""
    return hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k not in ("hash", "mac")})).hexdigest()


def entry_mac(key: bytes, hash_: str) -> str:
    """HMAC-SHA256 of an entry's hash (hex) under the entry key."""
    return hmac.new(key, hash_.encode(), hashlib.sha256).hexdigest()


def head_tag(key: bytes, seq: int, hash_: str) -> str:
    """HMAC-SHA256 of "<seq>:<hash>" under the head key."""
    return hmac.new(key, f"{seq}:{hash_}".encode(), hashlib.sha256).hexdigest()


def head_path(log_path: Path) -> Path:
    return log_path.with_name(f"{log_path.name}.head")


def segment_path(log_path: Path, number: int) -> Path:
    return log_path.with_name(f"{log_path.name}.{number:0{SEGMENT_DIGITS}d}")


def list_segments(log_path: Path) -> list[tuple[int, Path]]:
    """The sealed segments beside the log, as (number, path), in number order."""
    pattern = re.compile(re.escape(log_path.name) + r"\.(\d{" + str(SEGMENT_DIGITS) + ",})")
    try:
        names = os.listdir(log_path.parent)
    except FileNotFoundError:
        return []
    found = [(int(match[1]), log_path.with_name(name)) for name in names if (match := pattern.fullmatch(name))]
    return sorted(found)


# ----------------------------------------------------------------------------------------------------------------
# Reading and verifying


@dataclass(frozen=True)
class Problem:
    file: str  # the segment, the active file or the head record, by name
    line: int  # 1-based line in that file; 0: the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class _Segment:
    """Where each complete entry of one file starts, and its seq (what `AuditLog.read` pages by)."""

    path: Path
    offsets: array = field(default_factory=lambda: array("q"))
    seqs: array = field(default_factory=lambda: array("q"))
    size: int = 0  # bytes of the complete entries: the active file's next line goes here


@dataclass
class VerifyReport:
    path: Path
    lines: int = 0  # entries, over all segments
    segments: int = 1  # files read: the sealed segments and the active file
    head: AuditHead = field(default_factory=lambda: AuditHead(seq=0, hash=GENESIS_HASH))  # the last entry
    head_record: AuditHead | None = None  # the head record as found (None: missing or unreadable)
    problems: list[Problem] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # problems recorded by a later reseal
    notes: list[str] = field(default_factory=list)
    torn_bytes: int = 0  # bytes at the end of the active file that the next start sets aside
    macs_verified: int = 0
    log_sha256: str = hashlib.sha256().hexdigest()  # of every entry line, in order: what a reseal records
    unservable: list[str] = field(default_factory=list)  # why the service could not page this log
    _index: list[_Segment] = field(default_factory=list, repr=False)
    _tail_offset: int | None = field(default=None, repr=False)

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


def _parse(raw: bytes) -> dict[str, Any] | str:
    """The line's JSON object, or why it is not one."""
    try:
        entry = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"not valid JSON ({exc}); the line was edited or corrupted"
    if not isinstance(entry, dict):
        return "not a JSON object; the line was edited or corrupted"
    return entry


def _load_head(path: Path, keys: AuditKeys) -> tuple[bool, AuditHead | None, str | None]:
    """(exists, the record as found, why it cannot be trusted: unreadable, malformed or not signed by the key)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return False, None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return True, None, f"unreadable ({exc})"
    try:
        record = AuditHead.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        return True, None, f"not a head record ({'.'.join(map(str, first['loc']))}: {first['msg']})"
    if record.tag is None or not hmac.compare_digest(record.tag, head_tag(keys.head, record.seq, record.hash)):
        return True, record, ("its tag does not verify: the record was edited or written without the owner's secret "
                              "(or GDREC_OWNER_SECRET is not the secret the log was written with)")
    return True, record, None


def _scan(path: Path, keys: AuditKeys, expect: AuditHead | str | None = None) -> VerifyReport:
    """Read every segment and the head record once: check each entry (schema, seq, chain, hash, MAC), reseals,
    the head and, optionally, an expected head; index the entries for `AuditLog.read`."""
    report = VerifyReport(path=path)
    sealed = list_segments(path)
    report.segments = len(sealed) + 1
    head_file = head_path(path).name
    head_exists, record, head_problem = _load_head(head_path(path), keys)
    report.head_record = record
    trusted_head = record if head_problem is None else None

    digest = hashlib.sha256()
    prev_seq, prev_hash, count, macs_bad, no_mac = 0, GENESIS_HASH, 0, 0, 0
    top_seq = 0  # the highest seq so far: the next entry should carry the one after it
    past_head = trusted_head is not None and trusted_head.seq == 0
    after_head = 0
    hash_at_head_seq: str | None = None
    expect_hash = expect if isinstance(expect, str) else (expect.hash if expect is not None else None)
    expect_seq = expect.seq if isinstance(expect, AuditHead) else None
    expect_found = expect_hash == GENESIS_HASH and expect_seq in (None, 0)
    expect_mismatch: str | None = None

    files = [(number, file, False) for number, file in sealed] + [(None, path, True)]
    next_number = 1
    for number, file, active in files:
        if number is not None:
            for missing in range(next_number, number):
                report.problems.append(Problem(segment_path(path, missing).name, 0, "missing: this segment of the "
                                               "log is not there (removed or renamed)"))
            next_number = number + 1
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            data = b""
            if not active:
                report.problems.append(Problem(file.name, 0, "disappeared while the log was read"))
        except OSError as exc:
            report.problems.append(Problem(file.name, 0, f"unreadable ({exc.strerror})"))
            data = b""
        lines, end = _split_lines(data)
        segment = _Segment(file)
        tail: int | None = None
        if end < len(data):
            if active:
                tail = end
            else:
                report.problems.append(Problem(file.name, len(lines) + 1, "incomplete last line in a sealed "
                                               "segment: the segment was truncated or corrupted"))
        for line_number, (offset, raw) in enumerate(lines, start=1):
            entry = _parse(raw)
            if active and past_head and isinstance(entry, str):
                tail = offset  # past the durable head: pages a power loss left unwritten, never acknowledged
                break
            problems: list[str] = []
            digest_before = digest.hexdigest()
            seq_value = top_seq + 1  # what the entry should carry; its own seq when it has an integer one
            mac_ok = False
            stored_hash: str | None = None
            if isinstance(entry, str):
                problems.append(entry)
                report.unservable.append(f"{file.name} line {line_number} is not an audit entry")
                stored_hash = hashlib.sha256(raw).hexdigest()  # breaks the next line's prev_hash, as it should
            else:
                try:
                    AuditEntry.model_validate(entry)
                except ValidationError as exc:
                    report.unservable.append(f"{file.name} line {line_number} is not an audit entry")
                    if "mac" not in entry:
                        no_mac += 1
                        problems.append("has no MAC: not written by this service with the owner's secret (a "
                                        "forged line, or a log from before entries were MACed)")
                    else:
                        first = exc.errors()[0]
                        problems.append(f"not an audit entry ({'.'.join(map(str, first['loc']))}: {first['msg']})")
                seq = entry.get("seq")
                expected = top_seq + 1
                if not isinstance(seq, int) or isinstance(seq, bool):
                    problems.append(f"seq is {seq!r}, not an integer")
                else:
                    seq_value = seq
                if seq_value > expected:
                    gap = seq_value - expected
                    problems.append(f"seq is {seq}, expected {expected}: {gap} entr{'y' if gap == 1 else 'ies'} "
                                    f"before it {'is' if gap == 1 else 'are'} missing (deleted"
                                    + ("; it starts a file: a whole segment before it may be gone)"
                                       if line_number == 1 else ")"))
                elif seq_value < expected:
                    problems.append(f"seq is {seq}, expected {expected}: entries were reordered or duplicated")
                    report.unservable.append(f"{file.name} line {line_number}: entries out of order")
                if entry.get("prev_hash") != prev_hash:
                    where = "the start of the log" if prev_seq == 0 and count == 0 else "the entry before it"
                    problems.append(f"prev_hash is not the hash of {where}: an entry before it was deleted, "
                                    "edited or moved")
                computed = entry_hash(entry)
                if entry.get("hash") != computed:
                    problems.append("hash does not match the line's content: the line was edited")
                mac = entry.get("mac")
                if isinstance(mac, str) and hmac.compare_digest(mac, entry_mac(keys.entry, computed)):
                    mac_ok = True
                    report.macs_verified += 1
                elif "mac" in entry:
                    macs_bad += 1
                    problems.append("MAC does not verify: the line was not written with the owner's secret "
                                    "(forged, or edited)")
                stored = entry.get("hash")
                stored_hash = stored if isinstance(stored, str) and _HEX64.fullmatch(stored) else computed
            report.problems.extend(Problem(file.name, line_number, message) for message in problems)
            if isinstance(entry, dict) and entry.get("kind") == "reseal" and mac_ok and not problems:
                if entry.get("log_sha256") == digest_before:
                    report.acknowledged.extend(f"{p} (recorded by the reseal at seq {seq_value})"
                                               for p in report.problems)
                    report.problems.clear()
                    findings = entry.get("findings") or []
                    shown = "; ".join(findings[:3]) + ("; ..." if len(findings) > 3 else "")
                    report.notes.append(f"seq {seq_value}: resealed at {entry.get('time')} with the reason "
                                        f"{entry.get('reason')!r}, recording {len(findings)} problem(s): {shown}")
                else:
                    report.problems.append(Problem(file.name, line_number, "the lines before this reseal changed "
                                                   "after it was written (their sha256 is not the one it records)"))
            if past_head:
                after_head += 1
            if record is not None and seq_value == record.seq:
                hash_at_head_seq = stored_hash
                if trusted_head is not None and stored_hash == trusted_head.hash:
                    past_head = True
            if expect_hash is not None and not expect_found:
                if stored_hash == expect_hash and expect_seq in (None, seq_value):
                    expect_found = True
                elif expect_seq == seq_value:
                    expect_mismatch = stored_hash
            digest.update(raw)
            digest.update(b"\n")
            segment.offsets.append(offset)
            segment.seqs.append(seq_value)
            segment.size = offset + len(raw) + 1
            prev_seq, prev_hash = seq_value, stored_hash
            top_seq = max(top_seq, seq_value)
            count += 1
        if tail is not None:
            report.torn_bytes = len(data) - tail
            report._tail_offset = tail
            report.notes.append(f"the last {report.torn_bytes} byte(s) of {file.name} are not complete entries (a "
                                "write cut short by a crash, whose request was not answered): the service moves "
                                "them aside when it next starts")
        report._index.append(segment)

    report.lines = count
    report.log_sha256 = digest.hexdigest()
    report.head = AuditHead(seq=prev_seq, hash=prev_hash, tag=head_tag(keys.head, prev_seq, prev_hash))
    if count and no_mac == count:
        report.problems.insert(0, Problem(path.name, 0, "no entry has a MAC: the log was written before entries "
                                          "were MACed, or forged; it is not accepted: keep it as evidence and move it "
                                          "aside to start a new log"))
    elif count and macs_bad and not report.macs_verified:
        report.problems.insert(0, Problem(path.name, 0, f"no entry's MAC verifies ({macs_bad} checked): "
                                          "GDREC_OWNER_SECRET is not the secret the log was written with, or every "
                                          "entry was forged"))
    _check_head(report, head_file, head_exists, record, head_problem, hash_at_head_seq, after_head)
    if expect is not None:
        _check_expected(report, keys, expect, expect_found, expect_mismatch)
    return report


def _check_head(report: VerifyReport, head_file: str, exists: bool, record: AuditHead | None, problem: str | None,
                hash_at_seq: str | None, after_head: int) -> None:
    last = report.head.seq
    if not exists:
        if report.lines:
            report.problems.append(Problem(head_file, 0, f"missing: the log holds {report.lines} entries but no head "
                                           "record, so entries removed from its end could not be detected. If you "
                                           "know why it is gone, `gdrec-owner audit reseal --reason ...` records "
                                           "that in the log and writes a new one"))
        return
    if record is None:
        report.problems.append(Problem(head_file, 0, problem or "unreadable"))
        return
    if problem is not None:
        report.problems.append(Problem(head_file, 0, problem))
    if record.seq > last:
        report.problems.append(Problem(head_file, 0, f"records the log up to seq {record.seq}, but it ends at seq "
                                       f"{last}: the entries after it were deleted (the log was truncated)"))
    elif record.seq == 0:
        if record.hash != GENESIS_HASH:
            report.problems.append(Problem(head_file, 0, "records an empty log with a hash other than 64 zeros"))
    elif hash_at_seq is None:
        report.problems.append(Problem(head_file, 0, f"no entry has the head's seq {record.seq}: entries were "
                                       "deleted or renumbered"))
    elif hash_at_seq != record.hash:
        report.problems.append(Problem(head_file, 0, f"the entry at seq {record.seq} does not have the head's hash: "
                                       "the log was rewritten up to it"))
    elif after_head and problem is None and not report.problems:
        report.notes.append(f"{after_head} entr{'y' if after_head == 1 else 'ies'} after the head record (seq "
                            f"{record.seq}), each with a valid MAC: written by the service after its last head update "
                            "(it updates the head after each group of writes, and signs a new one when it starts)")


def _check_expected(report: VerifyReport, keys: AuditKeys, expect: AuditHead | str, found: bool,
                    mismatch: str | None) -> None:
    where = report.path.name
    if isinstance(expect, AuditHead) and expect.tag is not None and not hmac.compare_digest(
            expect.tag, head_tag(keys.head, expect.seq, expect.hash)):
        report.problems.append(Problem(where, 0, "the expected head's tag does not verify under this secret: it was "
                                       "not issued for this log, or was edited"))
    if found:
        return
    if isinstance(expect, AuditHead):
        detail = (f"the entry at seq {expect.seq} has hash {mismatch}" if mismatch is not None
                  else f"the log ends at seq {report.head.seq}" if expect.seq > report.head.seq
                  else f"no entry has seq {expect.seq}")
        report.problems.append(Problem(where, 0, f"the expected head (seq {expect.seq}, hash {expect.hash}) is not "
                                       f"in the log ({detail}): the log was truncated or rewritten before that point"))
    else:
        report.problems.append(Problem(where, 0, f"no entry has the expected hash {expect}: the log was truncated "
                                       "or rewritten before that point"))


def verify_log(path: str | Path, secret: bytes, expect_head: AuditHead | str | None = None) -> VerifyReport:
    """Check every segment of the log (schema, seq, chain, hash and MAC of every entry), the head record and,
    optionally, that a head recorded elsewhere earlier (an AuditHead, or just its hash) is still in the log. Safe
    while the service appends: a rotation during the read is retried."""
    path = Path(path)
    keys = AuditKeys.from_secret(secret)
    for _ in range(3):
        before = list_segments(path)
        report = _scan(path, keys, expect_head)
        if list_segments(path) == before:
            break
    return report


# ----------------------------------------------------------------------------------------------------------------
# Appending


class _Ticket:
    """One appended line waiting to be durable."""

    __slots__ = ("done", "error", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.done = False
        self.error: str | None = None


class AuditLog:
    """The service's handle on the log: open (recover, verify, lock), append (thread-safe, group commit), read,
    close. `segment_bytes`: the size at which the active file is sealed as a segment."""

    def __init__(self, path: str | Path, secret: bytes, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be positive, not {segment_bytes}")
        self.path = Path(path)
        self.segment_bytes = segment_bytes
        self._keys = AuditKeys.from_secret(secret)
        self._cond = threading.Condition()
        self._fd: int | None = None
        self._lock_file: Any = None
        self._segments: list[_Segment] = []  # the sealed segments, then the active file
        self._seq, self._hash = 0, GENESIS_HASH  # the last line written
        self._durable_seq, self._durable_hash, self._durable_size = 0, GENESIS_HASH, 0  # the last line fsynced
        self._pending: deque[_Ticket] = deque()
        self._syncing = False
        self._broken: str | None = None  # why appends are refused until the next start
        self._head_lock = threading.Lock()
        self._head_seq = -1  # the seq of the head record on disk
        self._head_wanted = threading.Event()  # the durable end moved: the head writer thread rewrites the record
        self._head_thread: threading.Thread | None = None
        self._stopping = False
        self._next_segment = 1  # the number the active file gets when it is sealed
        self._appended = False

    def __enter__(self) -> AuditLog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def head(self) -> AuditHead:
        """The last durable entry, tagged."""
        with self._cond:
            seq, hash_ = self._durable_seq, self._durable_hash
        return AuditHead(seq=seq, hash=hash_, tag=head_tag(self._keys.head, seq, hash_))

    def open(self) -> None:
        """Lock, recover a torn tail, verify every segment; AuditError (with what to do) on a log with problems."""
        self._open(strict=True)

    def _open(self, strict: bool) -> VerifyReport:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.path.with_name(f"{self.path.name}.lock"), "a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise AuditError(f"the audit log {self.path} is in use by another process (is `gdrec-owner serve` "
                             "running on the same artifacts? stop it first)") from None
        self._lock_file = lock_file
        try:
            report = _scan(self.path, self._keys)
            if report._tail_offset is not None:
                self._set_aside(report._tail_offset)
            if strict and not report.ok:
                first = report.problems[0]
                raise AuditError(
                    f"the audit log {self.path} fails verification ({first}; {len(report.problems)} problem(s) in "
                    "all). The service does not append to a log it cannot vouch for: run `gdrec-owner audit verify` "
                    "to see every problem and keep the files as evidence; then either record the problems in the "
                    "log and go on with `gdrec-owner audit reseal --reason \"...\"`, or move the log aside to start "
                    "a new one")
            self._segments = report._index
            sealed = list_segments(self.path)
            self._next_segment = sealed[-1][0] + 1 if sealed else 1
            self._seq, self._hash = report.head.seq, report.head.hash
            self._durable_seq, self._durable_hash = self._seq, self._hash
            self._durable_size = self._segments[-1].size
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if created:
                fsync_dir(self.path.parent)
            record = report.head_record
            self._head_seq = record.seq if record is not None else -1
            if strict and (record is None or (record.seq, record.hash) != (self._seq, self._hash)):
                self._update_head()  # a first start, or entries written after the last head update
            self._stopping = False
            self._head_thread = threading.Thread(target=self._write_heads, name=f"audit-head {self.path.name}",
                                                 daemon=True)
            self._head_thread.start()
        except BaseException:
            self.close()
            raise
        log.info("audit log %s: %d entries in %d file(s), head %d %s", self.path, report.lines, report.segments,
                 self._seq, self._hash[:16])
        return report

    def _set_aside(self, offset: int) -> None:
        """Move the bytes of the active file from `offset` on to `<log>.torn-<time>` and truncate it there."""
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            torn = handle.read()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.torn-{stamp}")
        with open(aside, "wb") as handle:
            handle.write(torn)
            handle.flush()
            os.fsync(handle.fileno())
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())
        log.warning("audit log %s: moved %d byte(s) that are not complete entries (a write cut short by a crash; its "
                    "request was not answered) to %s; the entries before them are intact", self.path, len(torn),
                    aside.name)

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
        """Record one export request, durably: returns once its line is fsynced (sharing the fsync with the
        appends of other threads); AuditWriteError when that fails, and then the request must not be served."""
        return self._commit({"kind": "export", "key_id": key_id, "consumer": consumer, "endpoint": endpoint,
                             "export_id": export_id, "cursor": cursor, "users": users, "items": items,
                             "payload_sha256": payload_sha256, "privacy": privacy.model_dump(mode="json")}, now)

    def _commit(self, fields: dict[str, Any], now: datetime | None) -> AuditEntry:
        with self._cond:
            self._check_writable()
            if self._segments[-1].size >= self.segment_bytes:
                self._rotate()
            entry = {**fields, "seq": self._seq + 1, "time": to_jsonable_python(now or datetime.now(UTC)),
                     "prev_hash": self._hash}
            entry["hash"] = entry_hash(entry)
            entry["mac"] = entry_mac(self._keys.entry, entry["hash"])
            record = AuditEntry.model_validate(entry)
            line = canonical_json(entry) + b"\n"
            active = self._segments[-1]
            offset = active.size
            try:
                _write_all(self._fd, line)  # type: ignore[arg-type]
            except OSError as exc:
                self._truncate_to(offset, exc)
                raise AuditWriteError(f"could not append to the audit log {self.path}: {exc.strerror}") from exc
            active.offsets.append(offset)
            active.seqs.append(entry["seq"])
            active.size += len(line)
            self._seq, self._hash = entry["seq"], entry["hash"]
            self._appended = True
            ticket = _Ticket(entry["seq"])
            self._pending.append(ticket)
            self._await_durable(ticket)
        return record

    def _check_writable(self) -> None:
        if self._fd is None:
            raise AuditWriteError(f"the audit log {self.path} is not open")
        if self._broken is not None:
            raise AuditWriteError(self._broken)

    def _await_durable(self, ticket: _Ticket) -> None:
        """Wait (holding the condition) until the ticket's line is fsynced, leading the fsync when none is running.
        AuditWriteError when the line's group could not be made durable."""
        while True:
            if ticket.error is not None:
                raise AuditWriteError(ticket.error)
            if ticket.done:
                return
            if self._syncing:
                self._cond.wait()
                continue
            self._sync_group()

    def _sync_group(self) -> None:
        """Leader: fsync every line written so far, outside the lock, then settle the waiters of that group."""
        self._syncing = True
        fd, seq, hash_, size = self._fd, self._seq, self._hash, self._segments[-1].size
        error: OSError | None = None
        self._cond.release()
        try:
            os.fsync(fd)  # type: ignore[arg-type]
        except OSError as exc:
            error = exc
        finally:
            self._cond.acquire()
            self._syncing = False
        if error is None:
            self._durable_seq, self._durable_hash, self._durable_size = seq, hash_, size
            while self._pending and self._pending[0].seq <= seq:
                self._pending.popleft().done = True
            self._head_wanted.set()
        else:
            self._fail_pending(error)
        self._cond.notify_all()

    def _fail_pending(self, cause: OSError) -> None:
        """An fsync failed: every line after the last durable one is removed, and its request refused."""
        message = f"could not make the audit log {self.path} durable: {cause.strerror or cause}"
        log.error("%s; %d request(s) refused, the log rolled back to seq %d", message, len(self._pending),
                  self._durable_seq)
        for ticket in self._pending:
            ticket.error = message
        self._pending.clear()
        self._truncate_to(self._durable_size, cause)
        active = self._segments[-1]
        keep = bisect.bisect_right(active.seqs, self._durable_seq)
        del active.offsets[keep:]
        del active.seqs[keep:]
        active.size = self._durable_size
        self._seq, self._hash = self._durable_seq, self._durable_hash

    def _truncate_to(self, size: int, cause: OSError) -> None:
        try:
            os.ftruncate(self._fd, size)  # type: ignore[arg-type]
            os.fsync(self._fd)  # type: ignore[arg-type]
        except OSError as exc:
            self._broken = (f"the audit log {self.path} could not be rolled back after a failed write ({cause}; then "
                            f"{exc}): it takes no more entries until the service restarts")
            log.critical("%s", self._broken)

    def _rotate(self) -> None:
        """Seal the full active file as the next segment and start a new one (holding the condition; once per
        segment, so the fsync it may need is done without releasing it)."""
        while self._syncing:
            self._cond.wait()
        self._check_writable()
        if self._segments[-1].size < self.segment_bytes:
            return  # another thread rotated while this one waited
        if self._pending:
            try:
                os.fsync(self._fd)  # type: ignore[arg-type]
            except OSError as exc:
                self._fail_pending(exc)
                self._cond.notify_all()
                raise AuditWriteError(f"could not make the audit log {self.path} durable: {exc.strerror}") from exc
            self._durable_seq, self._durable_hash = self._seq, self._hash
            self._durable_size = self._segments[-1].size
            for ticket in self._pending:
                ticket.done = True
            self._pending.clear()
            self._head_wanted.set()
            self._cond.notify_all()
        target = segment_path(self.path, self._next_segment)
        if target.exists():
            raise AuditWriteError(f"cannot seal the audit log {self.path}: {target.name} already exists")
        try:
            os.rename(self.path, target)
        except OSError as exc:
            raise AuditWriteError(f"could not seal the audit log {self.path} as {target.name}: {exc.strerror}") from exc
        self._segments[-1].path = target
        try:
            fsync_dir(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self._broken = (f"the audit log {self.path} was sealed as {target.name} but no new file could be started "
                            f"({exc.strerror}): it takes no more entries until the service restarts")
            log.critical("%s", self._broken)
            raise AuditWriteError(self._broken) from exc
        os.close(self._fd)  # type: ignore[arg-type]
        self._fd = fd
        self._segments.append(_Segment(self.path))
        self._next_segment += 1
        self._durable_size = 0
        log.info("audit log %s: sealed %s at seq %d; a new segment starts", self.path, target.name, self._seq)

    def _write_heads(self) -> None:
        """The head writer thread: after each group, rewrite the head record for the newest durable entry (groups
        that end while it writes share the next write; no response waits for it)."""
        while True:
            self._head_wanted.wait()
            self._head_wanted.clear()
            if self._stopping:
                return
            self._update_head()

    def _update_head(self) -> None:
        """Rewrite the head record for the last durable entry (one writer at a time; skipped when up to date)."""
        with self._head_lock:
            with self._cond:
                seq, hash_ = self._durable_seq, self._durable_hash
            if seq == self._head_seq:
                return
            record = {"seq": seq, "hash": hash_, "tag": head_tag(self._keys.head, seq, hash_)}
            try:
                atomic_write_text(head_path(self.path), json.dumps(record) + "\n")
            except OSError as exc:  # the entries themselves are durable: the requests are recorded
                log.error("audit log %s: could not update the head record (%s); `audit verify` reports the entries "
                          "after it until the next update", self.path, exc)
                return
            self._head_seq = seq

    def read(self, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Durable entries with seq > `after`, oldest first, at most `limit`, across segments. AuditError when a
        segment cannot be read."""
        plan: list[tuple[Any, int, int]] = []  # (open file, first byte, end byte)
        try:
            with self._cond:
                remaining = max(0, limit)
                for segment in self._segments:
                    if remaining == 0:
                        break
                    if not segment.seqs or segment.seqs[-1] <= after:
                        continue
                    start = bisect.bisect_right(segment.seqs, after)
                    stop = min(bisect.bisect_right(segment.seqs, self._durable_seq), start + remaining)
                    if start >= stop:
                        break
                    end = segment.offsets[stop] if stop < len(segment.offsets) else segment.size
                    # opened under the lock: a rotation renames the file, the descriptor still reads the same bytes
                    plan.append((open(segment.path, "rb"), segment.offsets[start], end))  # noqa: SIM115
                    remaining -= stop - start
            entries: list[AuditEntry] = []
            for handle, first, end in plan:
                handle.seek(first)
                entries.extend(AuditEntry.model_validate_json(raw) for raw in handle.read(end - first).splitlines())
            return entries
        except OSError as exc:
            raise AuditError(f"could not read the audit log {self.path}: {exc.strerror}") from exc
        finally:
            for handle, _, _ in plan:
                handle.close()

    def close(self) -> None:
        """Make every written line durable, update the head, release the lock."""
        with self._cond:
            while self._syncing:
                self._cond.wait()
            if self._fd is not None and self._pending and self._broken is None:
                self._sync_group()
        if self._head_thread is not None:
            self._stopping = True
            self._head_wanted.set()
            self._head_thread.join()
            self._head_thread = None
        if self._fd is not None and self._broken is None and self._appended:
            self._update_head()
        with self._cond:
            for ticket in self._pending:
                ticket.error = f"the audit log {self.path} was closed"
            self._pending.clear()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._cond.notify_all()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


# ----------------------------------------------------------------------------------------------------------------
# Reseal


@dataclass(frozen=True)
class ResealOutcome:
    before: VerifyReport  # what verification found
    entry: AuditEntry | None = None  # the reseal entry written; None when the log verified and nothing was written
    head: AuditHead | None = None  # the new head (tagged), to publish


def reseal_log(path: str | Path, secret: bytes, reason: str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
               now: datetime | None = None) -> ResealOutcome:
    """Record the problems of a log that fails verification and start trusting it again: append a MACed "reseal"
    entry (reason, problems found, head record found, sha256 of every line before it) and write a new head.
    ValueError for an empty reason; AuditError when the log is in use, when it holds lines the service could not
    page (move it aside instead), or when no entry verifies under `secret` (the wrong secret)."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a reseal needs a reason: say what happened to the log (it is recorded in it)")
    if len(reason) > 2000:
        raise ValueError(f"the reason is {len(reason)} characters long; at most 2000")
    audit = AuditLog(path, secret, segment_bytes=segment_bytes)
    report = audit._open(strict=False)
    try:
        if report.ok:
            return ResealOutcome(report)
        if report.unservable:
            raise AuditError(f"the audit log {audit.path} cannot be resealed: {report.unservable[0]} "
                             f"({len(report.unservable)} such line(s)), and the service could not page it. Keep the "
                             "files as evidence and move them aside to start a new log")
        if report.lines and not report.macs_verified:
            raise AuditError(f"no entry of the audit log {audit.path} verifies under this secret: a reseal would "
                             "vouch for a log it cannot check. Set GDREC_OWNER_SECRET to the secret the log was "
                             "written with")
        findings = [str(p)[:MAX_FINDING_CHARS] for p in report.problems[:MAX_FINDINGS]]
        if len(report.problems) > MAX_FINDINGS:
            findings.append(f"... and {len(report.problems) - MAX_FINDINGS} more problem(s)")
        previous = report.head_record.model_dump(mode="json") if report.head_record is not None else None
        entry = audit._commit({"kind": "reseal", "reason": reason, "findings": findings, "previous_head": previous,
                               "log_sha256": report.log_sha256}, now)
        log.warning("audit log %s resealed at seq %d (%d problem(s) recorded): %s", audit.path, entry.seq,
                    len(report.problems), reason)
        return ResealOutcome(report, entry, audit.head)
    finally:
        audit.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
