"""`gdrec-consumer distill`: train a student from the stored export and publish it as the served model.

A student is written as a checkpoint (`shared.checkpoint`: weights and config, each atomically) into a staging
folder `models/.staging-*`, renamed to `models/<version>/` once whole, with its token and item maps and its model
card in the config's metadata; only then is `models/current.json` replaced (temp file + rename) to point at it. A
running server picks the new version up on `POST /v1/admin/reload` (or by polling `current.json`), so a
half-written model is never served. Publishing holds `models/.publish.lock` (fcntl.flock); a staging folder found
while that lock is free was left by a killed publish and is removed (`remove_stale_staging`, at the start of
`distill` and `serve`).

A resumable distillation (`distill_and_publish(..., resumable=True)`, what the command line runs) keeps its
training state in `training/<export id>-<settings>/` (a `shared.training` checkpoint keyed by
`shared.distillation.run_fingerprint`: the export's content and the settings). A rerun with the same export and
settings continues from it, other settings start their own folder, and the folder is removed once the student is
published. The folder's `run.lock` keeps two processes from training the same run at once.

Under `torchrun` every rank trains its share of each batch (`shared.training`); rank 0 alone holds the run's lock,
reads and writes the training state, publishes and cleans up, and every rank returns the published card."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from model_consumer.settings import ConsumerLayout
from shared import distributed
from shared.checkpoint import (
    WEIGHTS,
    LockBusy,
    atomic_write_text,
    exclusive_lock,
    fsync_dir,
    partial_writes,
    save_checkpoint,
)
from shared.distillation import DistillConfig, StudentRun, distill_student, settings_fingerprint
from shared.schemas import ExportBundle, ModelCard

log = logging.getLogger(__name__)


def model_card(run: StudentRun, bundle: ExportBundle, version: str, created_at: datetime) -> ModelCard:
    return ModelCard(
        model_version=version, family=run.model.family, num_parameters=run.model.num_parameters(),
        teacher_parameters=bundle.manifest.teacher.num_parameters,
        parameter_ratio=round(run.model.num_parameters() / bundle.manifest.teacher.num_parameters, 4),
        config=run.model.config(), export_id=run.export_id, created_at=created_at, lam=run.config.lam,
        temperature=run.temperature, n_users=len(run.tokens), n_items=len(run.item_ids),
        best_epoch=run.train.best_epoch, epochs_run=run.train.epochs_run,
    )


def publish_student(run: StudentRun, bundle: ExportBundle, layout: ConsumerLayout) -> ModelCard:
    """Write the student under models/<version>/ and point models/current.json at it, under the publish lock. The
    version is derived from the weights (same weights, same version) and the creation time."""
    with exclusive_lock(publish_lock(layout)):
        created_at = datetime.now(UTC).replace(microsecond=0)
        staging = layout.models / f"{STAGING_PREFIX}{created_at:%Y%m%dT%H%M%S}-{os.getpid()}-{id(run):x}"
        save_checkpoint(staging, run.model)
        digest = hashlib.sha256((staging / WEIGHTS).read_bytes()).hexdigest()
        version = f"{created_at:%Y%m%dT%H%M%SZ}-{digest[:12]}"
        card = model_card(run, bundle, version, created_at)
        save_checkpoint(staging, run.model, {"card": card.model_dump(mode="json"), "tokens": run.tokens,
                                             "item_ids": run.item_ids})
        target = layout.models / version
        if target.exists():
            shutil.rmtree(staging)
        else:
            staging.rename(target)
            fsync_dir(layout.models)  # the version's folder is on disk before current.json names it
        atomic_write_text(layout.current_model, json.dumps({"version": version}) + "\n")
    log.info("published student %s (%d parameters, %.0f%% of the teacher)", version, card.num_parameters,
             100 * card.parameter_ratio)
    return card


class PublishedModelError(RuntimeError):
    """The published model cannot be read: `models/current.json` or the checkpoint it points at is damaged. The
    message names the file and what was expected."""


REPUBLISH = "run `gdrec-consumer distill` to publish a model again"


def current_version(layout: ConsumerLayout) -> str | None:
    """The version `current.json` points at (None: no model published yet). PublishedModelError when the file is
    not the JSON object {"version": "<model version>"} that `publish_student` writes."""
    path = layout.current_model
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise PublishedModelError(f"{path} cannot be read ({exc}); {REPUBLISH}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PublishedModelError(f"{path} is not JSON ({exc}); {REPUBLISH}") from None
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version or "/" in version or version.startswith("."):
        raise PublishedModelError(f'{path}: expected {{"version": "<model version>"}}, got {text.strip()[:80]!r}; '
                                  f"{REPUBLISH}")
    return version


def model_dir(layout: ConsumerLayout, version: str) -> Path:
    return layout.models / version


STAGING_PREFIX = ".staging-"
RUN_LOCK = "run.lock"


def publish_lock(layout: ConsumerLayout) -> Path:
    """The lock file a publish holds while it writes under models/ (and the staging clean-up, to take turns)."""
    return layout.models / ".publish.lock"


def remove_stale_staging(layout: ConsumerLayout) -> list[Path]:
    """Remove what killed publishes left in models/: `.staging-*` folders and unfinished temporary files. Only while
    the publish lock is free, so nothing another live process is writing is touched; when a publish holds it,
    nothing is removed now (a later start will). Returns what was removed."""
    if not layout.models.is_dir():
        return []
    try:
        with exclusive_lock(publish_lock(layout), wait=False):
            stale = sorted(p for p in layout.models.glob(f"{STAGING_PREFIX}*") if p.is_dir())
            stale += partial_writes(layout.models)
            removed = []
            for path in stale:
                try:
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                except OSError as exc:
                    log.warning("cannot remove %s, left by an interrupted publish: %s", path, exc)
                    continue
                log.info("removed %s, left by an interrupted publish", path)
                removed.append(path)
            return removed
    except LockBusy:
        log.info("a publish is in progress in %s: staging folders are left for it", layout.models)
    except OSError as exc:  # e.g. a read-only models folder under `serve`: nothing can be cleaned there
        log.warning("cannot check %s for folders of interrupted publishes: %s", layout.models, exc)
    return []


class DistillRunning(RuntimeError):
    """Another process is training the same student (same export and settings) in this data directory."""


def training_dir(layout: ConsumerLayout, bundle: ExportBundle, config: DistillConfig) -> Path:
    """The folder of one resumable distillation: the export's id and the settings' fingerprint (12 characters each).
    The state file in it is keyed by the full `run_fingerprint` (the export's content too)."""
    return layout.training / f"{bundle.manifest.export_id[:12]}-{settings_fingerprint(config)[:12]}"


def distill_and_publish(bundle: ExportBundle, config: DistillConfig, layout: ConsumerLayout,
                        device: torch.device | str = "cpu", *, resumable: bool = False,
                        restart: bool = False) -> ModelCard:
    """Train a student from `bundle` and publish it; stale staging folders are removed first.

    resumable: keep the training state in `training_dir` (every `config.checkpoint_every_s`, instead of
    `config.checkpoint_dir`), continue from it when it is there, and remove it once the student is published, with
    the folders of runs over other exports (they can no longer be resumed: the data directory holds one export).
    restart: discard that state first and train from the first epoch. DistillRunning when another process is
    training the same run. Under `torchrun`, rank 0 does every step but the training (see the module's docstring);
    what fails there raises `shared.distributed.RankZeroError` on the other ranks."""
    distributed.on_main(lambda: remove_stale_staging(layout))
    if not resumable:
        run = distill_student(bundle, config, device)
        return distributed.on_main(lambda: publish_student(run, bundle, layout))
    run_dir = training_dir(layout, bundle, config)
    with ExitStack() as held:

        def claim() -> None:
            try:
                held.enter_context(exclusive_lock(run_dir / RUN_LOCK, wait=False))
            except LockBusy:
                raise DistillRunning(f"another `gdrec-consumer distill` is training the same export with the same "
                                     f"settings (it holds {run_dir / RUN_LOCK}); wait for it to finish") from None
            _prepare_run_dir(run_dir, restart)
            log.info("training state of this run: %s (saved every %g s)", run_dir, config.checkpoint_every_s)

        distributed.on_main(claim)
        run = distill_student(bundle, replace(config, checkpoint_dir=str(run_dir)), device)

        def publish() -> ModelCard:
            card = publish_student(run, bundle, layout)
            shutil.rmtree(run_dir)
            log.info("removed the training checkpoint %s: student %s is published", run_dir, card.model_version)
            return card

        card = distributed.on_main(publish)
    distributed.on_main(lambda: _remove_other_exports_runs(layout, bundle.manifest.export_id))
    return card


def _prepare_run_dir(run_dir: Path, restart: bool) -> None:
    """Under the run's lock: drop unfinished temporary files (a kill during a save) or, with `restart`, all state."""
    doomed = [p for p in run_dir.iterdir() if p.name != RUN_LOCK] if restart else partial_writes(run_dir)
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        log.info("removed %s (%s)", path, "a restart" if restart else "left by an interrupted save")


def _remove_other_exports_runs(layout: ConsumerLayout, export_id: str) -> None:
    """Training folders of other exports than the one stored now (skipped while their run is live)."""
    if not layout.training.is_dir():
        return
    for path in sorted(layout.training.iterdir()):
        if not path.is_dir() or path.name.startswith(f"{export_id[:12]}-"):
            continue
        try:
            with exclusive_lock(path / RUN_LOCK, wait=False):
                shutil.rmtree(path)
        except LockBusy:
            continue
        log.info("removed the training checkpoint %s of another export", path)
