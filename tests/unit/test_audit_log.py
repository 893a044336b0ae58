"""The hash-chained audit log: appends verify; an edited, deleted, reordered or appended line is named; a torn
last line (a crash mid-write) is set aside without losing earlier lines; a failed write is rolled back; one
writer at a time; `gdrec-owner audit verify` exits non-zero naming the line."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from data_owner.audit import GENESIS_HASH, AuditError, AuditLog, AuditWriteError, entry_hash, head_path, verify_log
from data_owner.cli import app
from data_owner.settings import audit_head_key
from shared.schemas import PrivacySwitches

SECRET = b"audit-test-secret-0123456789abcdef"
KEY = audit_head_key(SECRET)
PRIVACY = PrivacySwitches(include_observed=True)


def append(log: AuditLog, n: int = 1, **fields) -> None:
    for k in range(n):
        log.append(**{"key_id": "a1b2c3d4e5f6", "consumer": "vendor", "endpoint": "GET /v1/export/users",
                      "export_id": "e" * 64, "cursor": None if k == 0 else f"cursor-{k}", "users": 10,
                      "items": 500, "payload_sha256": f"{k:064x}", "privacy": PRIVACY,
                      "now": datetime(2026, 1, 1, tzinfo=UTC), **fields})


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "audit" / "audit.jsonl"
    with AuditLog(path, head_key=KEY) as log:
        append(log, 5)
    return path


def lines_of(path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_appended_lines_form_a_verified_chain(log_path):
    entries = [json.loads(line) for line in lines_of(log_path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_hash"] == GENESIS_HASH
    for before, after in zip(entries, entries[1:], strict=False):
        assert after["prev_hash"] == before["hash"]
    assert all(e["hash"] == entry_hash(e) for e in entries)
    report = verify_log(log_path, head_key=KEY)
    assert report.ok and report.lines == 5 and report.head.hash == entries[-1]["hash"]
    assert json.loads(head_path(log_path).read_text())["seq"] == 5


def test_reopening_continues_the_chain(log_path):
    with AuditLog(log_path, head_key=KEY) as log:
        assert log.head.seq == 5
        append(log, 2)
        assert [e.seq for e in log.read(after=4, limit=10)] == [5, 6, 7]
    assert verify_log(log_path, head_key=KEY).ok


def test_an_edited_line_is_named(log_path):
    lines = lines_of(log_path)
    lines[2] = lines[2].replace('"users":10', '"users":11')
    log_path.write_text("".join(lines))
    report = verify_log(log_path, head_key=KEY)
    assert not report.ok
    assert [str(p) for p in report.problems] == ["line 3: hash does not match the line's content: the line was edited"]


def test_an_edited_line_with_a_recomputed_hash_breaks_the_next_line(log_path):
    lines = lines_of(log_path)
    entry = json.loads(lines[1])
    entry["items"] = 1
    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    log_path.write_text("".join(lines))
    problems = verify_log(log_path, head_key=KEY).problems
    assert problems and problems[0].line == 3 and "prev_hash" in problems[0].message


def test_a_deleted_line_is_named(log_path):
    lines = lines_of(log_path)
    log_path.write_text("".join(lines[:2] + lines[3:]))
    problems = verify_log(log_path, head_key=KEY).problems
    assert problems[0].line == 3
    assert "seq is 4, expected 3: 1 line(s) before it were deleted" in problems[0].message


def test_deleted_last_lines_are_caught_by_the_head(log_path):
    lines = lines_of(log_path)
    log_path.write_text("".join(lines[:3]))
    problems = verify_log(log_path, head_key=KEY).problems
    assert [p.line for p in problems] == [4] and "lines 4-5 were deleted" in problems[0].message


def test_a_rewritten_head_without_the_secret_is_caught(log_path):
    lines = lines_of(log_path)
    log_path.write_text("".join(lines[:3]))
    last = json.loads(lines[2])
    head_path(log_path).write_text(json.dumps({"seq": 3, "hash": last["hash"], "tag": "0" * 64}))
    problems = verify_log(log_path, head_key=KEY).problems
    assert problems and "signature does not verify" in problems[0].message
    # and a head hash recorded elsewhere earlier is missing from the truncated log
    recorded = json.loads(lines[4])["hash"]
    assert any("expected hash" in p.message for p in verify_log(log_path, expect_head=recorded).problems)


def test_lines_appended_behind_the_services_back_are_named(log_path):
    lines = lines_of(log_path)
    with AuditLog(log_path.with_name("other.jsonl"), head_key=KEY) as other:
        append(other, 7)
    forged = lines_of(log_path.with_name("other.jsonl"))[5:]
    log_path.write_text("".join(lines + forged))
    # line 6 chains correctly and could be the one written just before a crash (its head update lost); line 7
    # cannot: the service writes the head after every line
    (problem,) = verify_log(log_path, head_key=KEY).problems
    assert problem.line == 7 and "appended after the head record" in problem.message


def test_reordered_lines_are_named(log_path):
    lines = lines_of(log_path)
    lines[1], lines[2] = lines[2], lines[1]
    log_path.write_text("".join(lines))
    assert verify_log(log_path, head_key=KEY).problems[0].line == 2


def test_a_line_that_is_not_json_is_named(log_path):
    lines = lines_of(log_path)
    lines[3] = "garbage\n"
    log_path.write_text("".join(lines))
    problems = verify_log(log_path, head_key=KEY).problems
    assert problems[0].line == 4 and "not valid JSON" in problems[0].message


def test_a_torn_last_line_is_set_aside_and_earlier_lines_kept(log_path):
    intact = log_path.read_bytes()
    with open(log_path, "ab") as handle:
        handle.write(b'{"seq":6,"time":"2026-01-01T00:00:00+00:00","key_id":"a1b2c3d4e5f6","cons')
    report = verify_log(log_path, head_key=KEY)
    assert report.ok and report.torn_bytes > 0 and any("incomplete" in note for note in report.notes)
    with AuditLog(log_path, head_key=KEY) as log:
        assert log.head.seq == 5
        append(log)
    assert log_path.read_bytes().startswith(intact)
    assert [json.loads(line)["seq"] for line in lines_of(log_path)] == [1, 2, 3, 4, 5, 6]
    assert verify_log(log_path, head_key=KEY).ok
    (aside,) = log_path.parent.glob("audit.jsonl.torn-*")
    assert aside.read_bytes().endswith(b'"cons')


def test_a_zero_filled_tail_after_a_power_loss_is_set_aside(log_path):
    with open(log_path, "ab") as handle:
        handle.write(b"\x00" * 300)
    with AuditLog(log_path, head_key=KEY) as log:
        assert log.head.seq == 5
    assert verify_log(log_path, head_key=KEY).ok


def test_a_crash_between_the_line_and_its_head_is_healed(log_path):
    before = head_path(log_path).read_text()
    with AuditLog(log_path, head_key=KEY) as log:
        append(log)
    head_path(log_path).write_text(before)  # the head update of line 6 never happened
    report = verify_log(log_path, head_key=KEY)
    assert report.ok and any("before its head record" in note for note in report.notes)
    with AuditLog(log_path, head_key=KEY) as log:
        assert log.head.seq == 6
    assert json.loads(head_path(log_path).read_text())["seq"] == 6


def test_a_failed_write_is_rolled_back(log_path, monkeypatch):
    before = log_path.read_bytes()
    with AuditLog(log_path, head_key=KEY) as log:
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
    assert verify_log(log_path, head_key=KEY).ok


def test_one_writer_at_a_time(log_path):
    with AuditLog(log_path, head_key=KEY):
        with pytest.raises(AuditError, match="in use by another process"):
            AuditLog(log_path, head_key=KEY).open()
    with AuditLog(log_path, head_key=KEY):  # released on close
        pass


def test_the_writer_refuses_a_damaged_log(log_path):
    lines = lines_of(log_path)
    log_path.write_text("".join(lines[:1] + lines[2:]))
    with pytest.raises(AuditError, match="fails verification \\(line 2"):
        AuditLog(log_path, head_key=KEY).open()
    AuditLog(log_path, head_key=KEY).close()  # the failed open released the lock


def test_an_empty_or_absent_log_verifies(tmp_path):
    assert verify_log(tmp_path / "none.jsonl").ok
    with AuditLog(tmp_path / "empty.jsonl", head_key=KEY) as log:
        assert log.head.seq == 0 and log.read() == []
    assert verify_log(tmp_path / "empty.jsonl", head_key=KEY).ok


def test_audit_verify_command(log_path, monkeypatch):
    monkeypatch.setenv("GDREC_OWNER_SECRET", SECRET.decode())
    monkeypatch.chdir(log_path.parent)
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "verify", "--log", str(log_path)])
    assert result.exit_code == 0 and "5 line(s), chain intact" in result.output
    lines = lines_of(log_path)
    log_path.write_text("".join(lines[:3] + lines[4:]))
    result = runner.invoke(app, ["audit", "verify", "--log", str(log_path)])
    assert result.exit_code == 1
    assert "TAMPERED OR DAMAGED" in result.output and "line 4: seq is 5, expected 4" in result.output
    lines[1] = lines[1].replace('"items":500', '"items":5')
    log_path.write_text("".join(lines))
    result = runner.invoke(app, ["audit", "verify", "--log", str(log_path)])
    assert result.exit_code == 1 and "line 2: hash does not match" in result.output
