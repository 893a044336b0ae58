"""`gdrec-consumer distill`: train a student from the stored export and publish it as the served model.

A student is written as a checkpoint (`shared.checkpoint`: weights and config, each atomically) into its own
folder `models/<version>/`, with its token and item maps and its model card in the config's metadata; only then
is `models/current.json` replaced (temp file + rename) to point at it. A running server picks the new version up
on `POST /v1/admin/reload` (or by polling `current.json`), so a half-written model is never served."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import torch

from model_consumer.distill import DistillConfig, StudentRun, distill_student
from model_consumer.settings import ConsumerLayout
from shared.checkpoint import WEIGHTS, atomic_write_text, save_checkpoint
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
    """Write the student under models/<version>/ and point models/current.json at it. The version is derived from
    the weights (same weights, same version) and the creation time."""
    created_at = datetime.now(UTC).replace(microsecond=0)
    staging = layout.models / f".staging-{created_at:%Y%m%dT%H%M%S}-{id(run):x}"
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


def distill_and_publish(bundle: ExportBundle, config: DistillConfig, layout: ConsumerLayout,
                        device: torch.device | str = "cpu") -> ModelCard:
    run = distill_student(bundle, config, device)
    return publish_student(run, bundle, layout)
