"""A distillation that dies (SIGKILL, or an exception after a save) continues on the next run from its saved state
and ends with exactly the student an uninterrupted run publishes; other settings or another export start over;
the training state is removed once the student is published; folders of killed publishes (`models/.staging-*`)
are removed at the start of `distill` and `serve`, never while another process holds the publish lock."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import shared.training as training
from model_consumer.cli import app
from model_consumer.settings import ConsumerLayout
from model_consumer.store import ExportStore
from model_consumer.students import (
    RUN_LOCK,
    DistillRunning,
    distill_and_publish,
    model_dir,
    publish_lock,
    remove_stale_staging,
    training_dir,
)
from shared.checkpoint import LockBusy, exclusive_lock, load_checkpoint
from shared.distillation import DistillConfig, GDSampler, distill_student
from shared.schemas import ExportBundle, ExportPage, content_sha256
from tests.conftest import REPO
from tests.unit.test_export_distill import make_export

# patience 3 of eval_every 2: the early-stopping counter and the best weights so far both carry across the kill
CONFIG = DistillConfig(reg_factors=(1.0,), epochs=12, lr=0.05, eval_every=2, patience=3, batch_size=64,
                       progress=False, checkpoint_every_s=0)
CLI_ARGS = ["--reg-factors", "1", "--fraction", "0.5", "--lambda", "0.7", "--epochs", "12", "--lr", "0.05",
            "--batch-size", "64",
            "--patience", "3", "--eval-every", "2", "--seed", "0", "--device", "cpu", "--no-progress",
            "--checkpoint-every", "0"]
RESUMED = re.compile(r"resuming after epoch (\d+)")


class Interrupted(Exception):
    pass


def die_after(monkeypatch: pytest.MonkeyPatch, saves: int) -> None:
    """The `saves`-th mid-run training save is written, then the run dies (as a killed process would)."""
    save = training._Checkpoint.save
    count = {"saves": 0}

    def dying_save(self, state):
        save(self, state)
        if not state["finished"]:
            count["saves"] += 1
            if count["saves"] == saves:
                monkeypatch.setattr(training._Checkpoint, "save", save)
                raise Interrupted(f"killed after epoch {state['epoch']}")

    monkeypatch.setattr(training._Checkpoint, "save", dying_save)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def store_export(root: Path, bundle: ExportBundle, page_size: int = 16) -> None:
    """Write `bundle` into root/export as `gdrec-consumer pull` leaves it (verified pages, progress complete)."""
    store = ExportStore(ConsumerLayout(root).export)
    progress = store.start(bundle.manifest)
    starts = list(range(0, len(bundle.users), page_size))
    for n, start in enumerate(starts):
        users = bundle.users[start: start + page_size]
        last = n == len(starts) - 1
        store.append(progress, ExportPage(export_id=bundle.manifest.export_id, cursor=None if n == 0 else str(start),
                                          next_cursor=None if last else str(start + page_size), users=users,
                                          sha256=content_sha256(users)))


def published(layout: ConsumerLayout, version: str) -> torch.nn.Module:
    return load_checkpoint(model_dir(layout, version))[0]


@pytest.fixture(scope="module")
def export() -> ExportBundle:
    return make_export(n_items=40, length=12)[0]


@pytest.fixture(scope="module")
def plain(export):
    """The student of an uninterrupted run (no checkpoints)."""
    return distill_student(export, CONFIG)


@pytest.fixture
def consumer_env(monkeypatch, tmp_path):
    """A clean environment for the command line: no GDREC_ variables, no .env, development settings."""
    for name in list(os.environ):
        if name.startswith("GDREC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GDREC_CONSUMER_ENVIRONMENT", "development")
    monkeypatch.chdir(tmp_path)


def test_a_distillation_killed_with_sigkill_resumes_and_publishes_the_uninterrupted_student(
        tmp_path, export, plain, consumer_env, caplog):
    root = tmp_path / "consumer"
    store_export(root, export)
    layout = ConsumerLayout(root)
    run_dir = training_dir(layout, export, CONFIG)
    # the child trains slowly (a pause per epoch) so that it is still training when it is killed
    child = (
        "import sys, time, torch; torch.set_num_threads(1)\n"
        "import shared.distillation as d\n"
        "batches = d.GDSampler.__call__\n"
        "def slow(self, epoch, rng):\n"
        "    time.sleep(0.15)\n"
        "    yield from batches(self, epoch, rng)\n"
        "d.GDSampler.__call__ = slow\n"
        "from model_consumer.cli import app\n"
        "app(sys.argv[1:], prog_name='gdrec-consumer')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", child, "distill", "--data-dir", str(root), *CLI_ARGS],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        saved_epoch, deadline = 0, time.monotonic() + 120
        while saved_epoch < 3:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no training checkpoint was written"
            for path in run_dir.glob("*.pt"):  # written atomically: a file there is whole
                saved_epoch = torch.load(path, weights_only=True).get("epoch", 0)
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert not (layout.current_model).exists()

    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(app, ["distill", "--data-dir", str(root), *CLI_ARGS])
    assert result.exit_code == 0, result.output
    resumed_after = int(RESUMED.search(caplog.text).group(1))
    assert 3 <= resumed_after < CONFIG.epochs
    version = json.loads(layout.current_model.read_text())["version"]
    assert same_state(published(layout, version), plain.model)
    assert f"best epoch {plain.train.best_epoch} of {plain.train.epochs_run}" in result.output
    assert not run_dir.exists() and f"removed the training checkpoint {run_dir}" in caplog.text


def test_an_interrupted_distill_and_publish_resumes_exactly_and_removes_its_state(tmp_path, export, plain,
                                                                                 monkeypatch, caplog):
    layout = ConsumerLayout(tmp_path)
    die_after(monkeypatch, 5)
    with pytest.raises(Interrupted, match="after epoch 5"):
        distill_and_publish(export, CONFIG, layout, resumable=True)
    run_dir = training_dir(layout, export, CONFIG)
    assert len(list(run_dir.glob("*.pt"))) == 1 and not layout.current_model.exists()

    trained: list[int] = []
    batches = GDSampler.__call__

    def counted(self, epoch, rng):
        trained.append(epoch)
        return batches(self, epoch, rng)

    monkeypatch.setattr(GDSampler, "__call__", counted)
    with caplog.at_level(logging.INFO):
        card = distill_and_publish(export, CONFIG, layout, resumable=True)
    assert "resuming after epoch 5" in caplog.text and trained == list(range(6, plain.train.epochs_run + 1))
    assert same_state(published(layout, card.model_version), plain.model)
    assert (card.best_epoch, card.epochs_run) == (plain.train.best_epoch, plain.train.epochs_run)
    assert not run_dir.exists() and "removed the training checkpoint" in caplog.text


def test_other_settings_or_another_export_start_over(tmp_path, export, monkeypatch, caplog):
    layout = ConsumerLayout(tmp_path)
    die_after(monkeypatch, 3)
    with pytest.raises(Interrupted):
        distill_and_publish(export, CONFIG, layout, resumable=True)
    kept = training_dir(layout, export, CONFIG)

    other_lambda = replace(CONFIG, lam=0.3)
    with caplog.at_level(logging.INFO):
        distill_and_publish(export, other_lambda, layout, resumable=True)
    assert "resuming" not in caplog.text
    assert training_dir(layout, export, other_lambda) != kept and kept.is_dir()  # the same export's run is kept

    # another export: the old export's runs can never resume (the data directory holds one export) and are removed
    users = [r.model_copy(update={"soft_targets": [round(q * 0.9, 6) for q in r.soft_targets]}) for r in export.users]
    other = ExportBundle(manifest=export.manifest.model_copy(update={"export_id": "e" * 64}), users=users)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        distill_and_publish(other, CONFIG, layout, resumable=True)
    assert "resuming" not in caplog.text
    assert not kept.exists() and f"removed the training checkpoint {kept} of another export" in caplog.text
    assert list(layout.training.iterdir()) == []


def test_other_data_under_the_same_export_id_does_not_resume(tmp_path, export, monkeypatch, caplog):
    layout = ConsumerLayout(tmp_path)
    die_after(monkeypatch, 3)
    with pytest.raises(Interrupted):
        distill_and_publish(export, CONFIG, layout, resumable=True)
    users = [r.model_copy(update={"soft_targets": [round(q * 0.9, 6) for q in r.soft_targets]}) for r in export.users]
    changed = ExportBundle(manifest=export.manifest, users=users)  # an owner that reused an id: the content decides
    with caplog.at_level(logging.INFO):
        card = distill_and_publish(changed, CONFIG, layout, resumable=True)
    assert "resuming" not in caplog.text
    assert same_state(published(layout, card.model_version), distill_student(changed, CONFIG).model)


def test_a_run_another_process_is_training_is_refused(tmp_path, export):
    layout = ConsumerLayout(tmp_path)
    lock = training_dir(layout, export, CONFIG) / RUN_LOCK
    with hold_lock(lock), pytest.raises(DistillRunning, match="same export with the same settings"):
        distill_and_publish(export, CONFIG, layout, resumable=True)
    assert not layout.current_model.exists()


def test_a_restart_discards_the_saved_state_and_a_killed_save_is_cleaned(tmp_path, export, plain, monkeypatch,
                                                                         caplog):
    layout = ConsumerLayout(tmp_path)
    die_after(monkeypatch, 4)
    with pytest.raises(Interrupted):
        distill_and_publish(export, CONFIG, layout, resumable=True)
    run_dir = training_dir(layout, export, CONFIG)
    (saved,) = run_dir.glob("*.pt")
    partial = run_dir / f".{saved.name}.k1ll3d_x"  # what `atomic_torch_save` leaves when killed mid-write
    partial.write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.INFO):
        card = distill_and_publish(export, CONFIG, layout, resumable=True, restart=True)
    assert "resuming" not in caplog.text and f"removed {saved} (a restart)" in caplog.text
    assert same_state(published(layout, card.model_version), plain.model) and not run_dir.exists()


def test_a_partial_save_is_removed_before_resuming(tmp_path, export, plain, monkeypatch, caplog):
    layout = ConsumerLayout(tmp_path)
    die_after(monkeypatch, 2)
    with pytest.raises(Interrupted):
        distill_and_publish(export, CONFIG, layout, resumable=True)
    run_dir = training_dir(layout, export, CONFIG)
    (saved,) = run_dir.glob("*.pt")
    partial = run_dir / f".{saved.name}.k1ll3d_x"
    partial.write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.INFO):
        card = distill_and_publish(export, CONFIG, layout, resumable=True)
    assert f"removed {partial} (left by an interrupted save)" in caplog.text and "resuming after epoch 2" in caplog.text
    assert same_state(published(layout, card.model_version), plain.model)


@contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """Another process holds an flock on `path` (as a live publish or distill does) for the duration of the block."""
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()")
    path.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "locked\n"
        yield
    finally:
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()


def stage(layout: ConsumerLayout, name: str = ".staging-20260101T000000-1-abc") -> Path:
    """A staging folder as a publish killed after its first write leaves it."""
    folder = layout.models / name
    folder.mkdir(parents=True)
    (folder / "weights.pt").write_bytes(b"part of a student")
    return folder


def test_stale_staging_is_removed_but_not_while_another_process_publishes(tmp_path, caplog):
    layout = ConsumerLayout(tmp_path)
    left = stage(layout)
    partial = layout.models / ".current.json.a1b2c3d4"  # a killed atomic write of current.json
    partial.write_text('{"vers')
    version = layout.models / "20260101T000000Z-0123456789ab"  # a published model is never touched
    version.mkdir()
    with hold_lock(publish_lock(layout)):
        with caplog.at_level(logging.INFO):
            assert remove_stale_staging(layout) == []
        assert left.is_dir() and partial.is_file() and "a publish is in progress" in caplog.text
    with caplog.at_level(logging.INFO):
        assert remove_stale_staging(layout) == [left, partial]
    assert not left.exists() and not partial.exists() and version.is_dir()
    assert f"removed {left}, left by an interrupted publish" in caplog.text
    assert remove_stale_staging(ConsumerLayout(tmp_path / "nothing-yet")) == []


def test_distill_and_serve_start_by_removing_stale_staging(tmp_path, export, consumer_env, monkeypatch):
    layout = ConsumerLayout(tmp_path / "consumer")
    store_export(layout.root, export)
    left = stage(layout)
    result = CliRunner().invoke(app, ["distill", "--data-dir", str(layout.root), *CLI_ARGS])
    assert result.exit_code == 0, result.output
    assert not left.exists() and [p.name for p in layout.models.glob(".staging-*")] == []

    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(kwargs["port"]))
    left = stage(layout)
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(layout.root), "--port", "8299"])
    assert result.exit_code == 0, result.output
    assert served == [8299] and not left.exists()


def test_a_lock_whose_file_its_holder_removed_is_taken_on_the_new_file(tmp_path):
    path = tmp_path / "run" / RUN_LOCK
    got: dict[str, object] = {}

    def waiter() -> None:
        with exclusive_lock(path) as held:  # opens the old file, then waits for its holder
            got["inode"] = held.stat().st_ino
            try:
                with exclusive_lock(path, wait=False):
                    got["second"] = "acquired"
            except LockBusy:
                got["second"] = "busy"

    with exclusive_lock(path):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)
        (tmp_path / "run" / RUN_LOCK).unlink()
        (tmp_path / "run").rmdir()
    thread.join(timeout=10)
    assert got == {"inode": path.stat().st_ino, "second": "busy"}  # the waiter held the file now at `path`
