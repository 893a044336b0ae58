"""The owner's evaluation of a consumer's served model, from the artifacts: recompute the user tokens of the
finished export, score the consumer over its REST API on the held-out test items (see `data_owner.remote_eval`),
set the owner's local teachers beside it, and write the result as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from data_owner.export_record import ExportRecordError, built_export, load_built_split, require_same_secret
from data_owner.remote_eval import RemoteEvalConfig, RemoteEvalResult, evaluate_remote, user_tokens
from data_owner.settings import ArtifactLayout, OwnerSettings
from shared.checkpoint import atomic_write_text
from shared.http import make_client

LOCAL_REFERENCES = (("gd_teacher", "owner's GD teacher (local)"), ("kd_teacher", "owner's KD teacher (local)"))


@dataclass(frozen=True)
class RemoteEvaluation:
    """The consumer's scores, the owner's local teachers' test metrics by label, and the JSON file written."""

    result: RemoteEvalResult
    reference: dict[str, dict[str, float]]
    out: Path


def local_reference(layout: ArtifactLayout) -> dict[str, dict[str, float]]:
    """Test metrics of the owner's GD and KD teachers from the run summary, by label; {} without a summary."""
    reference = {}
    try:
        stages = json.loads(layout.summary_file.read_text()).get("stages", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return reference
    for name, label in LOCAL_REFERENCES:
        if "test" in stages.get(name, {}):
            reference[label] = stages[name]["test"]
    return reference


def evaluate_consumer(
    settings: OwnerSettings,
    consumer: str,
    key: str | None,
    config: RemoteEvalConfig,
    *,
    timeout: float = 30.0,
    out: Path | None = None,
    progress: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> RemoteEvaluation:
    """Score the consumer at base URL `consumer` on the held-out test items of the export in the settings' artifacts
    (raw data from their data folder, default the one train used; tokens under their secret, read only once an export
    is found), and write the result with the local reference to `out` (default
    <artifacts>/evaluations/remote-<UTC time>.json). Raises
    ExportRecordError (no export, another secret, changed data), ValueError (a bad URL or key) or
    data_owner.remote_eval.RemoteEvalError (the consumer failed). `transport` replaces the network."""
    layout = settings.layout
    built = built_export(layout)
    if built is None:
        raise ExportRecordError(f"no finished export in {layout.root}: run `gdrec-owner train --artifacts "
                                f"{layout.root}` first")
    secret = settings.secret_bytes()
    require_same_secret(built, secret, "its tokens cannot be recomputed")
    split = load_built_split(built, settings.data_dir,
                             "the held-out items would not match; run `gdrec-owner train` again")
    client = make_client(consumer, key, timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                         max_connections=config.concurrency, transport=transport)
    with client:
        result = evaluate_remote(client, split, user_tokens(split, secret, built["consumer_id"]), config,
                                 consumer=consumer, progress=progress)
    reference = local_reference(layout)
    out = out or layout.evaluations / f"remote-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    payload = {**result.to_dict(), "export_id": built.get("export_id"), "dataset": built["dataset"],
               "reference": reference}
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    return RemoteEvaluation(result=result, reference=reference, out=out)
