"""The leakage audit of a finished export (ALGORITHMS.md section 5): map its tokens back to users under the owner's
secret, check it still matches the raw data, and measure what it reveals (reconstruction of each user's history,
membership inference from the soft targets of the teacher that built it); the report is written as JSON."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from data_owner.export_record import ExportRecordError, load_built_split, require_same_secret
from data_owner.pipeline import load_export, read_stage
from data_owner.privacy.leakage import LeakageReport, PairScorer, export_pairs, leakage_report, soft_target_scorer
from data_owner.settings import ArtifactLayout, OwnerSettings
from shared.checkpoint import atomic_write_text, load_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeakageAudit:
    """The leakage report of an export and the JSON file it was written to."""

    report: LeakageReport
    out: Path


def export_teacher_scorer(layout: ArtifactLayout, temperature: float) -> PairScorer | None:
    """The soft-target scorer of the GD teacher that built the finished export, or None (with a warning) when that
    teacher is no longer in the artifacts."""
    teacher_record = read_stage(layout, "gd_teacher")
    export_inputs = (read_stage(layout, "export") or {}).get("inputs", {})
    if teacher_record is None or teacher_record.get("output_id") != export_inputs.get("gd_teacher"):
        log.warning("the GD teacher that built this export is no longer in %s: membership is not measured "
                    "(rerun `gdrec-owner train` to rebuild both)", layout.stage("gd_teacher"))
        return None
    teacher, _ = load_checkpoint(layout.stage("gd_teacher"), "cpu")
    return soft_target_scorer(teacher, temperature)


def audit_export_leakage(settings: OwnerSettings, *, max_fpr: float = 0.01,
                         out: Path | None = None) -> LeakageAudit:
    """Measure what the finished export in the settings' artifacts reveals of the raw training data (read from their
    data folder, default the one train used; tokens mapped back under their secret, read only once an export is
    found) beside a popularity list and the raw history, with the TPR column at `max_fpr`, and write the report to
    `out` (default <artifacts>/evaluations/leakage-<UTC time>.json). Raises ExportRecordError (no
    export, another secret, changed data) or ValueError (an export that does not map back)."""
    layout = settings.layout
    try:
        bundle, built = load_export(layout)
    except FileNotFoundError as exc:
        raise ExportRecordError(str(exc)) from None
    secret = settings.secret_bytes()
    require_same_secret(built, secret, "its tokens cannot be mapped back to users")
    split = load_built_split(built, settings.data_dir,
                             "audit it against the data it was built from, or run `gdrec-owner train` again")
    manifest = bundle.manifest
    scorer = export_teacher_scorer(layout, manifest.temperature)
    context = {"dataset": built["dataset"], "export_id": manifest.export_id, "consumer": built["consumer_id"],
               "users": manifest.n_users, "items": len(manifest.item_ids), "list_length": manifest.list_length,
               "temperature": manifest.temperature, "include_observed": manifest.privacy.include_observed,
               "rr_epsilon": manifest.privacy.randomized_response_epsilon}
    pairs = export_pairs(bundle, split, secret, built["consumer_id"])
    report = leakage_report(split, pairs, scorer, max_fpr=max_fpr, context=context)
    out = out or layout.evaluations / f"leakage-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, report.to_json())
    return LeakageAudit(report=report, out=out)
