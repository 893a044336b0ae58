"""The audit log: entries chained and MACed (known answers); every tamper case named by `verify_log` and refused by
`AuditLog.open` (head deleted, head deleted plus truncation, forged entry, reordered, edited, segment removed, wrong
secret, no MACs); a stale head after a crash accepted, a torn tail set aside; `reseal` recording its reason and
pinning what it acknowledged; rotation carrying the chain across segments and `read` spanning them; group commit
(every append durable before it returns, fewer fsyncs than appends, an fsync failure failing its whole group and
leaving a log that verifies); the `gdrec-owner audit verify|head|reseal` commands."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from data_owner.audit import (
    AuditError,
    AuditLog,
    AuditWriteError,
    entry_hash,
    head_path,
    reseal_log,
    segment_path,
    verify_log,
)
from data_owner.cli import app
from data_owner.settings import audit_entry_key, audit_head_key
from shared.schemas import AuditEntry, AuditHead, PrivacySwitches

SECRET = b"audit-test-secret-0123456789abcdef"
OTHER_SECRET = b"another-secret-0123456789abcdef-xyz"
PRIVACY = PrivacySwitches(include_observed=True)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def append(log: AuditLog, n: int = 1, **fields) -> list[AuditEntry]:
    return [log.append(**{"key_id": "a1b2c3d4e5f6", "consumer": "vendor", "endpoint": "GET /v1/export/users",
                          "export_id": "e" * 64, "cursor": None if k == 0 else f"cursor-{k}", "users": 10,
                          "items": 500, "payload_sha256": f"{k:064x}", "privacy": PRIVACY, "now": T0, **fields})
            for k in range(n)]


@pytest.fixture
def log_path(tmp_path) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    with AuditLog(path, SECRET) as log:
        append(log, 5)
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def canonical(entry: dict) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"


def messages(path: Path, secret: bytes = SECRET, **kwargs) -> list[str]:
    return [str(p) for p in verify_log(path, secret, **kwargs).problems]


def refuses_to_open(path: Path, match: str = "fails verification") -> None:
    with pytest.raises(AuditError, match=match):
        AuditLog(path, SECRET).open()
    AuditLog(path, SECRET).close()  # a failed open released the lock


# ---------------------------------------------------------------------------------------------------- format


def test_entries_carry_the_documented_hash_mac_and_head_tag(log_path):
    """Recomputed here from the definitions (not with the module's helpers), and pinned for the first entry."""
    entry_key = hmac.new(SECRET, b"gdrec-owner audit entry v1", hashlib.sha256).digest()
    head_key = hmac.new(SECRET, b"gdrec-owner audit head v1", hashlib.sha256).digest()
    assert audit_entry_key(SECRET) == entry_key and audit_head_key(SECRET) == head_key and entry_key != head_key
    entries = [json.loads(line) for line in lines_of(log_path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5] and {e["kind"] for e in entries} == {"export"}
    prev = "0" * 64
    for entry in entries:
        body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        assert entry["prev_hash"] == prev and entry["hash"] == digest
        assert entry["mac"] == hmac.new(entry_key, digest.encode(), hashlib.sha256).hexdigest()
        prev = digest
    assert entries[0] == {
        "seq": 1, "time": "2026-01-01T00:00:00Z", "kind": "export", "key_id": "a1b2c3d4e5f6", "consumer": "vendor",
        "endpoint": "GET /v1/export/users", "export_id": "e" * 64, "cursor": None, "users": 10, "items": 500,
        "payload_sha256": "0" * 64, "privacy": {"include_observed": True, "randomized_response_epsilon": None},
        "prev_hash": "0" * 64,
        "hash": "164e88e0eff8336f34e218835663eb0597850431e57f7782be0c345200d1197c",
        "mac": "7e19ecc6ce896eef1df4801bbfa1df4561f9816d91277678469a7e8eb9dc7a30",
    }
    head = json.loads(head_path(log_path).read_text())
    assert head == {"seq": 5, "hash": prev, "tag": hmac.new(head_key, f"5:{prev}".encode(), hashlib.sha256).hexdigest()}
    report = verify_log(log_path, SECRET)
    assert report.ok and report.lines == 5 and report.macs_verified == 5 and report.head == AuditHead(**head)


def test_an_entry_read_back_serialises_to_its_line(log_path):
    """What GET /v1/audit/log returns is the line itself: anyone can recompute `hash` from it."""
    for line in lines_of(log_path):
        dumped = AuditEntry.model_validate_json(line).model_dump(mode="json")
        assert dumped == json.loads(line) and dumped["hash"] == entry_hash(dumped)


def test_an_entry_holds_the_fields_of_its_kind_only(log_path):
    entry = json.loads(lines_of(log_path)[0])
    with pytest.raises(ValidationError, match="an export entry has no reason"):
        AuditEntry.model_validate({**entry, "reason": "x"})
    del entry["payload_sha256"]
    with pytest.raises(ValidationError, match="an export entry needs payload_sha256"):
        AuditEntry.model_validate(entry)


def test_reopening_continues_the_chain(log_path):
    with AuditLog(log_path, SECRET) as log:
        assert log.head.seq == 5
        append(log, 2)
        assert [e.seq for e in log.read(after=4, limit=10)] == [5, 6, 7]
    assert verify_log(log_path, SECRET).ok


def test_an_empty_or_absent_log_verifies(tmp_path):
    assert verify_log(tmp_path / "none.jsonl", SECRET).ok
    with AuditLog(tmp_path / "empty.jsonl", SECRET) as log:
        assert log.head.seq == 0 and log.read() == []
    assert json.loads(head_path(tmp_path / "empty.jsonl").read_text())["seq"] == 0
    assert verify_log(tmp_path / "empty.jsonl", SECRET).ok


# ---------------------------------------------------------------------------------------------------- tampering


def forge(log_path: Path, secret: bytes | None) -> dict:
    """An entry chained on the last one with plain sha256, MACed under `secret` (None: without a MAC)."""
    last = json.loads(lines_of(log_path)[-1])
    entry = {**last, "seq": last["seq"] + 1, "prev_hash": last["hash"], "users": 999, "payload_sha256": "f" * 64}
    entry.pop("mac")
    entry["hash"] = entry_hash(entry)
    if secret is not None:
        entry["mac"] = hmac.new(audit_entry_key(secret), entry["hash"].encode(), hashlib.sha256).hexdigest()
    return entry


def delete_head(path: Path) -> None:
    head_path(path).unlink()


def delete_head_and_truncate(path: Path) -> None:
    head_path(path).unlink()
    path.write_text("".join(lines_of(path)[:3]))


def truncate(path: Path) -> None:
    path.write_text("".join(lines_of(path)[:3]))


def append_forged_without_mac(path: Path) -> None:
    with open(path, "a") as handle:
        handle.write(canonical(forge(path, None)))


def append_forged_with_another_secret(path: Path) -> None:
    with open(path, "a") as handle:
        handle.write(canonical(forge(path, OTHER_SECRET)))


def reorder(path: Path) -> None:
    lines = lines_of(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines))


def edit_middle(path: Path) -> None:
    lines = lines_of(path)
    lines[2] = lines[2].replace('"users":10', '"users":11')
    path.write_text("".join(lines))


def edit_middle_and_rehash(path: Path) -> None:
    lines = lines_of(path)
    entry = json.loads(lines[2])
    entry["items"] = 1
    entry["hash"] = entry_hash(entry)
    lines[2] = canonical(entry)
    path.write_text("".join(lines))


def delete_middle(path: Path) -> None:
    lines = lines_of(path)
    path.write_text("".join(lines[:2] + lines[3:]))


def sign_head_elsewhere(path: Path) -> None:
    record = json.loads(head_path(path).read_text())
    record["tag"] = hmac.new(audit_head_key(OTHER_SECRET), f"{record['seq']}:{record['hash']}".encode(),
                             hashlib.sha256).hexdigest()
    head_path(path).write_text(json.dumps(record))


def strip_macs(path: Path) -> None:
    """The log as written before entries were MACed: no `mac`, no `kind`, each `hash` over the rest."""
    out, prev = [], "0" * 64
    for line in lines_of(path):
        entry = json.loads(line)
        del entry["mac"], entry["kind"], entry["hash"]
        entry["prev_hash"] = prev
        entry["hash"] = prev = entry_hash(entry)
        out.append(canonical(entry))
    path.write_text("".join(out))


@pytest.mark.parametrize(("tamper", "expected"), [
    (delete_head, ["audit.jsonl.head: missing: the log holds 5 entries but no head record"]),
    (delete_head_and_truncate, ["audit.jsonl.head: missing: the log holds 3 entries but no head record"]),
    (truncate, ["audit.jsonl.head: records the log up to seq 5, but it ends at seq 3: the entries after it were "
                "deleted (the log was truncated)"]),
    (append_forged_without_mac, ["audit.jsonl line 6: has no MAC: not written by this service"]),
    (append_forged_with_another_secret, ["audit.jsonl line 6: MAC does not verify"]),
    (reorder, ["audit.jsonl line 2: seq is 3, expected 2: 1 entry before it is missing",
               "audit.jsonl line 2: prev_hash is not the hash of the entry before it",
               "audit.jsonl line 3: seq is 2, expected 4: entries were reordered or duplicated",
               "audit.jsonl line 3: prev_hash is not the hash of the entry before it",
               "audit.jsonl line 4: prev_hash is not the hash of the entry before it"]),
    (edit_middle, ["audit.jsonl line 3: hash does not match the line's content: the line was edited",
                   "audit.jsonl line 3: MAC does not verify"]),
    (edit_middle_and_rehash, ["audit.jsonl line 3: MAC does not verify",
                              "audit.jsonl line 4: prev_hash is not the hash of the entry before it"]),
    (delete_middle, ["audit.jsonl line 3: seq is 4, expected 3: 1 entry before it is missing (deleted)",
                     "audit.jsonl line 3: prev_hash is not the hash of the entry before it"]),
    (sign_head_elsewhere, ["audit.jsonl.head: its tag does not verify"]),
    (strip_macs, ["audit.jsonl: no entry has a MAC: the log was written before entries were MACed",
                  *[f"audit.jsonl line {n}: has no MAC" for n in range(1, 6)],
                  "audit.jsonl.head: the entry at seq 5 does not have the head's hash"]),
])
def test_each_tamper_case_is_named_and_refused(log_path, tamper, expected):
    tamper(log_path)
    problems = messages(log_path)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problems
    refuses_to_open(log_path)


def test_a_log_without_macs_says_so_first(log_path):
    strip_macs(log_path)
    with pytest.raises(AuditError, match="fails verification \\(audit.jsonl: no entry has a MAC.*move it aside"):
        AuditLog(log_path, SECRET).open()
    with pytest.raises(AuditError, match="cannot be resealed: audit.jsonl line 1 is not an audit entry"):
        reseal_log(log_path, SECRET, "an old log")


def test_a_forged_entry_appended_after_the_head_is_not_taken_for_a_crash(log_path):
    """Entries after the head are the service's own only when their MAC verifies."""
    append_forged_with_another_secret(log_path)
    report = verify_log(log_path, SECRET)
    assert not report.ok and report.torn_bytes == 0
    with pytest.raises(AuditError, match="line 6: MAC does not verify"):
        AuditLog(log_path, SECRET).open()
    assert len(lines_of(log_path)) == 6  # left as evidence, not moved aside


def test_the_wrong_secret_fails_verification_and_says_so(log_path):
    problems = messages(log_path, OTHER_SECRET)
    assert problems[0].startswith("audit.jsonl: no entry's MAC verifies (5 checked): GDREC_OWNER_SECRET is not")
    assert "audit.jsonl.head: its tag does not verify" in problems[-1]
    with pytest.raises(AuditError, match="no entry's MAC verifies"):
        AuditLog(log_path, OTHER_SECRET).open()


def test_a_head_recorded_elsewhere_catches_a_replayed_head(log_path):
    """A head saved earlier and put back after a truncation to it passes the local checks, not a published head."""
    early = head_path(log_path).read_text()
    published = verify_log(log_path, SECRET).head
    with AuditLog(log_path, SECRET) as log:
        append(log, 3)
    later = verify_log(log_path, SECRET).head
    log_path.write_text("".join(lines_of(log_path)[:5]))
    head_path(log_path).write_text(early)
    assert verify_log(log_path, SECRET).ok  # indistinguishable locally
    assert verify_log(log_path, SECRET, expect_head=published).ok
    (problem,) = messages(log_path, expect_head=later)
    assert f"the expected head (seq 8, hash {later.hash}) is not in the log (the log ends at seq 5)" in problem
    (problem,) = messages(log_path, expect_head=later.hash)
    assert f"no entry has the expected hash {later.hash}" in problem
    forged_tag = AuditHead(seq=published.seq, hash=published.hash, tag="0" * 64)
    assert "the expected head's tag does not verify" in messages(log_path, expect_head=forged_tag)[0]


# ---------------------------------------------------------------------------------------------------- crashes


def test_entries_after_a_stale_head_with_valid_macs_are_the_services_own(log_path):
    """A crash between a group's fsync and its head update: the head lags, the entries are intact and MACed."""
    before = head_path(log_path).read_text()
    with AuditLog(log_path, SECRET) as log:
        append(log, 4)
    head_path(log_path).write_text(before)
    report = verify_log(log_path, SECRET)
    assert report.ok and any("4 entries after the head record (seq 5), each with a valid MAC" in n
                             for n in report.notes)
    with AuditLog(log_path, SECRET) as log:
        assert log.head.seq == 9
    assert json.loads(head_path(log_path).read_text())["seq"] == 9  # signed anew at the start


def test_a_torn_last_line_is_set_aside_and_earlier_lines_kept(log_path):
    intact = log_path.read_bytes()
    with open(log_path, "ab") as handle:
        handle.write(b'{"seq":6,"time":"2026-01-01T00:00:00Z","key_id":"a1b2c3d4e5f6","cons')
    report = verify_log(log_path, SECRET)
    assert report.ok and report.torn_bytes > 0 and any("not complete entries" in note for note in report.notes)
    with AuditLog(log_path, SECRET) as log:
        assert log.head.seq == 5
        append(log)
    assert log_path.read_bytes().startswith(intact)
    assert [json.loads(line)["seq"] for line in lines_of(log_path)] == [1, 2, 3, 4, 5, 6]
    assert verify_log(log_path, SECRET).ok
    (aside,) = log_path.parent.glob("audit.jsonl.torn-*")
    assert aside.read_bytes().endswith(b'"cons')


def test_unwritten_pages_after_the_head_are_set_aside(log_path):
    """After a power loss, lines written after the last fsync may come back as zeros or halves of lines; an entry
    after them was never acknowledged either."""
    stale = head_path(log_path).read_text()
    with AuditLog(log_path, SECRET) as log:
        append(log, 3)
    lines = lines_of(log_path)
    damaged = "".join(lines[:6]) + "\x00" * 40 + lines[6][20:] + lines[7]
    log_path.write_text(damaged)
    head_path(log_path).write_text(stale)  # the head of seq 5: 6 was fsynced, 7 and 8 were not
    report = verify_log(log_path, SECRET)
    assert report.ok and report.lines == 6 and report.torn_bytes == len(damaged.encode()) - len("".join(lines[:6]))
    with AuditLog(log_path, SECRET) as log:
        assert log.head.seq == 6
    assert log_path.read_text() == "".join(lines[:6])


def test_garbage_before_the_head_is_a_problem_not_a_crash(log_path):
    lines = lines_of(log_path)
    lines[3] = "\x00" * 30 + "\n"
    log_path.write_text("".join(lines))
    assert messages(log_path)[0].startswith("audit.jsonl line 4: not valid JSON")
    refuses_to_open(log_path)


def test_a_failed_write_is_rolled_back(log_path, monkeypatch):
    before = log_path.read_bytes()
    with AuditLog(log_path, SECRET) as log:
        real_write = os.write

        def half_then_fail(fd, data):
            real_write(fd, bytes(data[:20]))
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("data_owner.audit.os.write", half_then_fail)
        with pytest.raises(AuditWriteError, match="No space left"):
            append(log)
        monkeypatch.undo()
        assert log_path.read_bytes() == before and log.head.seq == 5
        append(log)
    assert verify_log(log_path, SECRET).ok


def test_one_writer_at_a_time(log_path):
    with AuditLog(log_path, SECRET):
        with pytest.raises(AuditError, match="in use by another process"):
            AuditLog(log_path, SECRET).open()
    with AuditLog(log_path, SECRET):  # released on close
        pass


# ---------------------------------------------------------------------------------------------------- reseal


def test_reseal_records_its_reason_and_the_log_verifies_again(log_path):
    old_head = AuditHead.model_validate_json(head_path(log_path).read_text())
    delete_head_and_truncate(log_path)
    outcome = reseal_log(log_path, SECRET, "  restored from the 02:00 backup, which lacks the head  ", now=T0)
    entry = outcome.entry
    assert entry is not None and entry.kind == "reseal" and entry.seq == 4
    assert entry.reason == "restored from the 02:00 backup, which lacks the head"
    assert entry.findings == [str(p) for p in outcome.before.problems] and len(entry.findings) == 1
    assert entry.findings[0].startswith("audit.jsonl.head: missing") and entry.previous_head is None
    assert entry.log_sha256 == hashlib.sha256("".join(lines_of(log_path)[:3]).encode()).hexdigest()
    assert json.loads(lines_of(log_path)[-1])["kind"] == "reseal"
    report = verify_log(log_path, SECRET)
    assert report.ok and report.head == outcome.head and report.head.seq == 4
    assert report.acknowledged == []  # the head problem is gone: the reseal wrote a new head
    assert any(note.startswith("seq 4: resealed at 2026-01-01T00:00:00Z with the reason 'restored from the 02:00 "
                               "backup, which lacks the head', recording 1 problem(s): audit.jsonl.head: missing")
               for note in report.notes)
    with AuditLog(log_path, SECRET) as log:  # the service starts again and goes on
        append(log)
        assert [e.kind for e in log.read(after=3)] == ["reseal", "export"]
    assert verify_log(log_path, SECRET).ok
    assert old_head.seq == 5  # and a head published before the truncation still tells
    assert not verify_log(log_path, SECRET, expect_head=old_head).ok


def test_reseal_records_the_head_it_found(log_path):
    found = AuditHead.model_validate_json(head_path(log_path).read_text())
    truncate(log_path)
    entry = reseal_log(log_path, SECRET, "disk repair cut the log").entry
    assert entry is not None and entry.previous_head == found
    assert "the entries after it were deleted" in entry.findings[0]
    assert verify_log(log_path, SECRET).ok


def test_a_change_before_a_reseal_is_a_problem_again(log_path):
    append_forged_with_another_secret(log_path)
    reseal_log(log_path, SECRET, "a forged line was found at the end; kept as evidence")
    report = verify_log(log_path, SECRET)
    assert report.ok and report.acknowledged == ["audit.jsonl line 6: MAC does not verify: the line was not written "
                                                 "with the owner's secret (forged, or edited) (recorded by the reseal "
                                                 "at seq 7)"]
    lines = lines_of(log_path)
    lines[1] = lines[1].replace('"users":10', '"users":12')
    log_path.write_text("".join(lines))
    problems = messages(log_path)
    assert "audit.jsonl line 2: hash does not match the line's content" in problems[0]
    assert any("line 7: the lines before this reseal changed after it was written" in p for p in problems)
    refuses_to_open(log_path)


def test_reseal_refuses_what_it_cannot_vouch_for(log_path, tmp_path):
    with pytest.raises(ValueError, match="needs a reason"):
        reseal_log(log_path, SECRET, "   ")
    assert reseal_log(log_path, SECRET, "nothing wrong").entry is None  # a log that verifies is left alone
    delete_head(log_path)
    with pytest.raises(AuditError, match="no entry of the audit log .* verifies under this secret"):
        reseal_log(log_path, OTHER_SECRET, "wrong secret")
    with AuditLog(log_path.with_name("other.jsonl"), SECRET), pytest.raises(AuditError, match="in use"):
        reseal_log(log_path.with_name("other.jsonl"), SECRET, "while the service runs")
    reorder(log_path)
    with pytest.raises(AuditError, match="cannot be resealed: audit.jsonl line 3: entries out of order"):
        reseal_log(log_path, SECRET, "reordered")
    assert not head_path(log_path).exists()  # nothing written


# ---------------------------------------------------------------------------------------------------- segments


def rotated_log(tmp_path: Path, n: int = 12, segment_bytes: int = 1500) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    with AuditLog(path, SECRET, segment_bytes=segment_bytes) as log:
        append(log, n)
    return path


def test_rotation_seals_segments_and_the_chain_carries_over(tmp_path):
    path = rotated_log(tmp_path)
    sealed = sorted(path.parent.glob("audit.jsonl.0*"))
    assert [p.name for p in sealed] == ["audit.jsonl.000001", "audit.jsonl.000002", "audit.jsonl.000003"]
    files = [*sealed, path]
    entries = [json.loads(line) for file in files for line in lines_of(file)]
    assert [e["seq"] for e in entries] == list(range(1, 13))
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    assert all(file.stat().st_size >= 1500 for file in sealed)
    first_of_second = json.loads(lines_of(sealed[1])[0])
    assert first_of_second["prev_hash"] == json.loads(lines_of(sealed[0])[-1])["hash"]
    report = verify_log(path, SECRET)
    assert report.ok and report.lines == 12 and report.segments == 4
    with AuditLog(path, SECRET, segment_bytes=1500) as log:  # reopened: read spans the segments
        assert [e.seq for e in log.read(after=2, limit=7)] == list(range(3, 10))
        assert [e.seq for e in log.read(after=0, limit=100)] == list(range(1, 13))
        append(log, 4)
    assert (path.parent / "audit.jsonl.000004").exists() and verify_log(path, SECRET).ok


@pytest.mark.parametrize(("tamper", "expected"), [
    (lambda p: segment_path(p, 2).unlink(),
     ["audit.jsonl.000002: missing: this segment of the log is not there",
      "audit.jsonl.000003 line 1: seq is 7, expected 4: 3 entries before it are missing (deleted; it starts a file",
      "audit.jsonl.000003 line 1: prev_hash is not the hash of the entry before it"]),
    (lambda p: segment_path(p, 3).unlink(),  # the last sealed one: the active file's first entry tells
     ["audit.jsonl line 1: seq is 10, expected 7: 3 entries before it are missing (deleted; it starts a file: a "
      "whole segment before it may be gone)", "audit.jsonl line 1: prev_hash"]),
    (lambda p: segment_path(p, 1).rename(p.with_name("audit.jsonl.old")),
     ["audit.jsonl.000001: missing", "audit.jsonl.000002 line 1: seq is 4, expected 1",
      "audit.jsonl.000002 line 1: prev_hash is not the hash of the start of the log"]),
    (lambda p: segment_path(p, 2).write_text("".join(lines_of(segment_path(p, 2))[:2])),
     ["audit.jsonl.000003 line 1: seq is 7, expected 6", "audit.jsonl.000003 line 1: prev_hash"]),
    (lambda p: (segment_path(p, 3).unlink(), p.unlink()),  # the newest entries, all gone: the head tells
     ["audit.jsonl.head: records the log up to seq 12, but it ends at seq 6"]),
])
def test_a_removed_renamed_or_cut_segment_is_named(tmp_path, tamper, expected):
    path = rotated_log(tmp_path)
    tamper(path)
    problems = messages(path)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problems
    refuses_to_open(path)


def test_a_crash_between_sealing_and_starting_the_next_file(tmp_path):
    """The active file was renamed into a segment, the new one not created yet: nothing is lost or suspect."""
    path = rotated_log(tmp_path)
    path.rename(segment_path(path, 4))
    assert verify_log(path, SECRET).ok
    with AuditLog(path, SECRET, segment_bytes=1500) as log:
        assert log.head.seq == 12
        append(log, 2)
        assert [e.seq for e in log.read(after=10)] == [11, 12, 13, 14]
    assert [json.loads(line)["seq"] for line in lines_of(path)] == [13, 14]
    assert verify_log(path, SECRET).ok


def test_a_resealed_gap_in_the_segments_keeps_rotating(tmp_path):
    path = rotated_log(tmp_path)
    segment_path(path, 2).unlink()
    reseal_log(path, SECRET, "segment 2 lost with a failed disk", segment_bytes=1500)
    assert verify_log(path, SECRET).ok
    with AuditLog(path, SECRET, segment_bytes=1500) as log:
        append(log, 6)
        assert [e.seq for e in log.read(after=2, limit=3)] == [3, 7, 8]  # seq 4-6 are gone, and recorded so
    assert segment_path(path, 5).exists() and verify_log(path, SECRET).ok


# ---------------------------------------------------------------------------------------------------- group commit


class FsyncSpy:
    """Counts fsyncs and, for the log's own file, how many complete lines were on disk when each returned."""

    def __init__(self, path: Path, delay: float = 0.002) -> None:
        self.path, self.delay = path, delay
        self.calls, self.durable_lines = 0, 0
        self._lock = threading.Lock()
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        same_file = os.path.exists(self.path) and os.path.samestat(os.fstat(fd), os.stat(self.path))
        self._real(fd)
        time.sleep(self.delay)  # a slow disk: lets appends pile up behind an fsync
        with self._lock:
            self.calls += 1
            if same_file:
                lines = self.path.read_bytes()[:size].count(b"\n")
                self.durable_lines = max(self.durable_lines, lines)


def test_concurrent_appends_all_land_in_order_each_durable_sharing_fsyncs(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    threads, per_thread = 16, 15
    log = AuditLog(path, SECRET)
    log.open()
    spy = FsyncSpy(path)
    monkeypatch.setattr("data_owner.audit.os.fsync", spy)
    not_durable: list[int] = []
    seqs: list[int] = []
    start = threading.Barrier(threads)

    def worker(index: int) -> None:
        start.wait()
        for k in range(per_thread):
            entry = log.append(key_id=f"key{index:02d}", consumer="vendor", endpoint="GET /v1/export/users",
                               export_id="e" * 64, cursor=f"c{k}", users=k, items=k, payload_sha256="a" * 64,
                               privacy=PRIVACY)
            if entry.seq > spy.durable_lines:
                not_durable.append(entry.seq)
            seqs.append(entry.seq)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    appends = threads * per_thread
    calls_while_appending = spy.calls
    log.close()
    assert not not_durable  # every append returned after its line was fsynced
    assert sorted(seqs) == list(range(1, appends + 1))
    assert [json.loads(line)["seq"] for line in lines_of(path)] == list(range(1, appends + 1))
    assert calls_while_appending < appends  # log and head fsyncs together: fewer than one per append
    report = verify_log(path, SECRET)
    assert report.ok and report.lines == appends
    by_key = {}
    for entry in map(json.loads, lines_of(path)):
        by_key.setdefault(entry["key_id"], []).append(entry["cursor"])
    assert all(cursors == [f"c{k}" for k in range(per_thread)] for cursors in by_key.values())


def test_concurrent_appends_across_rotations(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, SECRET, segment_bytes=4000) as log:
        pool = [threading.Thread(target=append, args=(log, 12)) for _ in range(8)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert [e.seq for e in log.read(after=0, limit=1000)] == list(range(1, 97))
    report = verify_log(path, SECRET)
    assert report.ok and report.lines == 96 and report.segments > 10


def test_a_failed_fsync_fails_its_whole_group_and_leaves_a_log_that_verifies(log_path, monkeypatch):
    waiters = 6
    log = AuditLog(log_path, SECRET)
    log.open()
    real_fsync = os.fsync
    failed = threading.Event()

    def fsync_failing_once(fd):
        if not failed.is_set() and os.path.samestat(os.fstat(fd), os.stat(log_path)):
            deadline = time.monotonic() + 10
            while lines_in_file() < 5 + waiters and time.monotonic() < deadline:
                time.sleep(0.001)  # until every writer of the group has written its line
            failed.set()
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    def lines_in_file() -> int:
        return log_path.read_bytes().count(b"\n")

    monkeypatch.setattr("data_owner.audit.os.fsync", fsync_failing_once)
    errors: list[str] = []
    served: list[int] = []

    def worker() -> None:
        try:
            served.append(append(log)[0].seq)
        except AuditWriteError as exc:
            errors.append(str(exc))

    pool = [threading.Thread(target=worker) for _ in range(waiters)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert not served and len(errors) == waiters
    assert all("could not make the audit log" in e and "Input/output error" in e for e in errors)
    assert lines_in_file() == 5 and log.head.seq == 5  # rolled back to the last durable entry
    assert [e.seq for e in append(log, 2)] == [6, 7]  # and the log goes on
    log.close()
    assert verify_log(log_path, SECRET).ok


def test_a_log_that_cannot_be_rolled_back_takes_no_more_entries(log_path, monkeypatch):
    log = AuditLog(log_path, SECRET)
    log.open()

    def fail(*_):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("data_owner.audit.os.fsync", fail)
    monkeypatch.setattr("data_owner.audit.os.ftruncate", fail)
    with pytest.raises(AuditWriteError, match="could not make the audit log .* durable"):
        append(log)
    with pytest.raises(AuditWriteError, match="could not be rolled back .* no more entries until the service"):
        append(log)
    monkeypatch.undo()
    log.close()
    # the line left behind is intact and MACed: kept after a restart (a recorded request that was refused)
    report = verify_log(log_path, SECRET)
    assert report.ok and report.lines == 6
    with AuditLog(log_path, SECRET) as reopened:
        assert reopened.head.seq == 6


# ---------------------------------------------------------------------------------------------------- commands


@pytest.fixture
def cli(log_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("GDREC_OWNER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GDREC_OWNER_SECRET", SECRET.decode())
    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "development")
    monkeypatch.chdir(log_path.parent)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["audit", *args, "--log", str(log_path)])

    return invoke


def test_audit_verify_command(cli, log_path):
    result = cli("verify")
    assert result.exit_code == 0 and "5 line(s), chain intact, every MAC verifies (1 file(s))" in result.output
    lines = lines_of(log_path)
    log_path.write_text("".join(lines[:3] + lines[4:]))
    result = cli("verify")
    assert result.exit_code == 1 and "TAMPERED OR DAMAGED" in result.output
    assert "audit.jsonl line 4: seq is 5, expected 4" in result.output
    delete_head(log_path)
    result = cli("verify")
    assert result.exit_code == 1 and "audit.jsonl.head: missing" in result.output


def test_audit_head_then_verify_expect_head(cli, log_path):
    result = cli("head")
    assert result.exit_code == 0
    published = AuditHead.model_validate_json(result.stdout.strip().splitlines()[-1])
    assert published.seq == 5 and published.tag == verify_log(log_path, SECRET).head.tag
    assert cli("verify", "--expect-head", result.stdout.strip()).exit_code == 0
    assert cli("verify", "--expect-head", published.hash).exit_code == 0
    for bad, why in (("abc", "takes a head's hash"), ('{"seq": 1}', "not a head record (hash: Field required)")):
        result = cli("verify", "--expect-head", bad)
        assert result.exit_code == 2 and why in result.output
    truncate(log_path)
    delete_head(log_path)
    assert cli("head").exit_code == 1
    assert cli("reseal", "--reason", "truncated by a restore").exit_code == 0
    result = cli("verify", "--expect-head", published.model_dump_json())
    assert result.exit_code == 1 and "the expected head (seq 5" in result.output


def test_audit_reseal_command(cli, log_path):
    assert cli("reseal").exit_code == 2  # --reason is required
    result = cli("reseal", "--reason", "nothing happened")
    assert result.exit_code == 0 and "verifies; nothing to reseal" in result.output
    delete_head(log_path)
    with _Locked(log_path):
        result = cli("reseal", "--reason", "head lost")
        assert result.exit_code == 1 and "in use by another process" in result.output
    result = cli("reseal", "--reason", "head lost in a restore")
    assert result.exit_code == 0, result.output
    assert "recorded 1 problem(s)" in result.output and "resealed by entry 6" in result.output
    head = AuditHead.model_validate_json(result.stdout.strip().splitlines()[-1])
    assert head.seq == 6 and head == verify_log(log_path, SECRET).head
    result = cli("verify")
    assert result.exit_code == 0 and "with the reason 'head lost in a restore', recording 1 problem(s): " \
        "audit.jsonl.head: missing" in result.output


class _Locked:
    """Holds the log's lock as a running service does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = None

    def __enter__(self) -> _Locked:
        self.handle = open(self.path.with_name(f"{self.path.name}.lock"), "a")  # noqa: SIM115
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
