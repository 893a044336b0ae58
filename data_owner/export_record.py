"""What a finished export's stage record says, and whether it still matches the owner's secret and raw data: its
consumer, the split it was built from, the secret its tokens were derived under."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_owner.data import LeaveOneOutSplit
from data_owner.pipeline import load_split, read_stage, split_fingerprint
from data_owner.settings import ArtifactLayout, secret_fingerprint


class ExportRecordError(ValueError):
    """The export is missing, or was built under another secret or from other data; the message says what to do."""


def built_export(layout: ArtifactLayout) -> dict[str, Any] | None:
    """The summary of the finished export stage (consumer id, dataset, fingerprints), or None before one finished."""
    record = read_stage(layout, "export")
    return None if record is None else record["summary"]


def export_consumer(layout: ArtifactLayout) -> str | None:
    """The consumer id the finished export was built for, or None when there is no finished export."""
    built = built_export(layout)
    return None if built is None else built["consumer_id"]


def require_same_secret(built: dict[str, Any], secret: bytes, consequence: str) -> None:
    """Raise ExportRecordError when the export was built under another secret than `secret` (`consequence`: what
    that prevents, e.g. "its tokens cannot be recomputed")."""
    if built.get("secret_fingerprint") not in (None, secret_fingerprint(secret)):
        raise ExportRecordError(f"the export was built under another secret than GDREC_OWNER_SECRET holds now: "
                                f"{consequence}; set the secret used by train")


def load_built_split(built: dict[str, Any], data_dir: Path | None, remedy: str) -> LeaveOneOutSplit:
    """The split of the export's dataset, read from `data_dir` (default: the folder train used). Raises
    ExportRecordError when the data cannot be read, or when it changed since the export was built (`remedy`: what
    to do then)."""
    try:
        split = load_split(built["dataset"], data_dir or built.get("data_dir"))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise ExportRecordError(str(exc)) from None
    if built.get("data_fingerprint") not in (None, split_fingerprint(split)):
        raise ExportRecordError(f"the data of {built['dataset']} changed since the export was built: {remedy}")
    return split
