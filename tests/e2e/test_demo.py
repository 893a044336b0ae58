"""`gdrec-demo` end to end on a tiny synthetic dataset (a users.dat passed with --dataset): both services as real
processes, the console kept short (step lines, the remote evaluation's bar, the summary table), every child's output
in its party's log files, no secret in any log; and a failing step that names its log and shows its last lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, write_users_dat

MAX_CONSOLE_LINES = 50  # besides tables and progress bars


def run_demo(tmp_path: Path, dataset: Path, timeout: float = 280) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GDREC_")}
    env |= {"GDREC_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "demo.main", "--workdir", str(tmp_path / "run"), "--dataset",
                           str(dataset), "--device", "cpu"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def console_lines(text: str) -> list[str]:
    """The console's lines without table rows and progress bars (a bar's frames are separated by carriage returns)."""
    return [line for line in text.split("\n") if line.strip() and not line.startswith("|") and "\r" not in line
            and not line.startswith("remote evaluation:")]


def test_demo_runs_quietly_on_a_tiny_dataset(tmp_path):
    dataset = tmp_path / "users.dat"
    write_users_dat(dataset, n_users=60, n_items=160)  # the lists hold 50 items: the catalog must be larger
    done = run_demo(tmp_path, dataset)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    lines = console_lines(output)
    assert len(lines) < MAX_CONSOLE_LINES, "\n".join(lines)
    assert not any(" INFO " in line or "HTTP Request" in line for line in lines), "\n".join(lines)
    assert "remote evaluation: 100%" in done.stderr  # the bar reached its end
    for step in ("owner: train on", "consumer: pull the export", "consumer: distill a student",
                 "owner: evaluate the consumer"):
        assert any(line.startswith(step) for line in lines), step
    rows = [line for line in output.split("\n") if line.startswith("| teacher") or line.startswith("| student")]
    assert [row.split("|")[1].strip().split(":")[0] for row in rows] == ["teacher", "teacher", "student"]
    assert all(row.count("|") == 6 and "0." in row for row in rows), rows  # parameters, HR@50, NDCG@50, time
    assert sum(line.lstrip()[:2] in {f"{r}." for r in range(1, 6)} for line in lines) == 5  # the top 5, by id
    assert any("  1. item " in line for line in lines)  # no catalog titles for a users.dat: item ids
    run = tmp_path / "run"
    logs = {path.relative_to(run).as_posix() for path in run.glob("*/*.log")}
    assert {"owner/train.log", "owner/keys.log", "owner/serve.log", "owner/evaluate.log", "consumer/pull.log",
            "consumer/distill.log", "consumer/serve.log"} <= logs
    assert "HTTP Request" not in (run / "owner" / "evaluate.log").read_text()  # no line per request
    secret = (run / "owner" / "secret").read_text().strip()
    assert len(secret) == 64
    assert all(secret not in path.read_text() for path in run.glob("*/*.log"))


def test_a_failing_step_names_its_log_and_shows_its_tail(tmp_path):
    done = run_demo(tmp_path, tmp_path / "absent.dat", timeout=120)
    assert done.returncode == 1
    log = tmp_path / "run" / "owner" / "train.log"
    assert f"log: {log}; its last lines:" in done.stderr
    assert "absent.dat" in done.stderr  # the owner's own error, from the tail of its log
    assert len(console_lines(done.stdout + done.stderr)) < MAX_CONSOLE_LINES
