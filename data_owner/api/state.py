"""What the service holds while it runs: the export it serves (users in a fixed, token-sorted order, with page
hashes), the key store and the audit log; and the start-up checks that turn a missing or broken artifacts
directory into one clear error instead of a traceback."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from data_owner.audit import AuditError, AuditLog
from data_owner.keys import KeyFileError, KeyStore, read_key_file
from data_owner.settings import ArtifactLayout, OwnerSettings, secret_fingerprint
from shared.schemas import ExportBundle, ExportManifest, UserRecord, content_sha256

log = logging.getLogger(__name__)

_PAGE_HASH_CACHE = 4096


class OwnerStartupError(RuntimeError):
    """The service cannot start; the message says why and what to do."""


@dataclass
class ServedExport:
    """The export as served: users sorted by token (pseudorandom, so the page order reveals nothing of the raw
    ids or of the owner's user order), pages hashed with `content_sha256`."""

    manifest: ExportManifest
    users: list[UserRecord]
    consumer_id: str
    secret_fingerprint: str | None
    manifest_sha256: str
    _page_hashes: dict[tuple[int, int], str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_bundle(cls, bundle: ExportBundle, consumer_id: str, fingerprint: str | None) -> ServedExport:
        manifest_json = json.dumps(bundle.manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return cls(manifest=bundle.manifest, users=sorted(bundle.users, key=lambda r: r.token),
                   consumer_id=consumer_id, secret_fingerprint=fingerprint,
                   manifest_sha256=hashlib.sha256(manifest_json.encode()).hexdigest())

    @property
    def export_id(self) -> str:
        return self.manifest.export_id

    def page(self, offset: int, limit: int) -> tuple[list[UserRecord], str, int | None]:
        """(records, content_sha256 of them, offset of the next page or None)."""
        records = self.users[offset : offset + limit]
        digest = self._page_hashes.get((offset, limit))
        if digest is None:
            digest = content_sha256(records)
            if len(self._page_hashes) >= _PAGE_HASH_CACHE:
                self._page_hashes.clear()
            self._page_hashes[(offset, limit)] = digest
        following = offset + len(records)
        return records, digest, following if following < len(self.users) else None


def load_served_export(layout: ArtifactLayout) -> ServedExport:
    """Read the export stage of an artifacts directory; OwnerStartupError when it is missing or unreadable."""
    if not layout.root.is_dir():
        raise OwnerStartupError(f"the artifacts directory {layout.root} does not exist: run `gdrec-owner train "
                                f"--artifacts {layout.root}` first, or set GDREC_OWNER_ARTIFACTS_DIR")
    if not layout.export_file.is_file() or not layout.export_stage_file.is_file():
        raise OwnerStartupError(f"no finished export in {layout.root} (expected {layout.export_file}): run "
                                f"`gdrec-owner train --artifacts {layout.root}` to build it")
    try:
        record = json.loads(layout.export_stage_file.read_text())
        summary = record["summary"]
        bundle = ExportBundle.model_validate_json(layout.export_file.read_bytes())
    except (OSError, ValueError, KeyError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise OwnerStartupError(f"the export in {layout.export_file.parent} is unreadable ({first}); rebuild it "
                                f"with `gdrec-owner train --artifacts {layout.root}`") from exc
    if summary.get("export_id") != bundle.manifest.export_id:
        raise OwnerStartupError(f"{layout.export_file} does not match its stage record (export id "
                                f"{bundle.manifest.export_id[:12]} vs {str(summary.get('export_id'))[:12]}); "
                                "rebuild it with `gdrec-owner train`")
    return ServedExport.from_bundle(bundle, summary["consumer_id"], summary.get("secret_fingerprint"))


@dataclass
class ServiceState:
    settings: OwnerSettings
    export: ServedExport
    keys: KeyStore
    audit: AuditLog


def open_state(settings: OwnerSettings) -> ServiceState:
    """Load the export, the keys and the audit log (verified; a torn last line set aside); OwnerStartupError on
    failure."""
    export = load_served_export(settings.layout)
    secret = settings.secret_bytes()
    if export.secret_fingerprint not in (None, secret_fingerprint(secret)):
        log.warning("the export was built under another secret than GDREC_OWNER_SECRET now holds: serving works, "
                    "but `evaluate` cannot match its tokens, and an audit log written under the old secret does "
                    "not verify (the service does not start on it)")
    try:
        keys = KeyStore(settings.keys_path)
    except KeyFileError as exc:
        raise OwnerStartupError(str(exc)) from exc
    if not any(k.active for k in keys.list()):
        log.warning("no active API key in %s: every export request is refused until one is added with "
                    "`gdrec-owner keys add --consumer %s --scope export`", settings.keys_path, export.consumer_id)
    audit = AuditLog(settings.audit_path, secret, segment_bytes=settings.audit_segment_bytes)
    try:
        audit.open()
    except (AuditError, OSError) as exc:
        raise OwnerStartupError(str(exc)) from exc
    log.info("serving export %s (%d users, consumer %s) from %s", export.export_id[:12], len(export.users),
             export.consumer_id, settings.artifacts_dir)
    return ServiceState(settings=settings, export=export, keys=keys, audit=audit)


def check_artifacts(settings: OwnerSettings) -> None:
    """Pre-flight for `serve`, so that a bad start ends with one message rather than a server traceback: the
    export loads, the key file reads, and the audit log opens (every entry of every segment verifies under the
    secret, the signed head record matches, and no other process holds the log)."""
    load_served_export(settings.layout)
    try:
        read_key_file(Path(settings.keys_path))
    except KeyFileError as exc:
        raise OwnerStartupError(str(exc)) from exc
    audit = AuditLog(settings.audit_path, settings.secret_bytes(), segment_bytes=settings.audit_segment_bytes)
    try:
        audit.open()
    except (AuditError, OSError) as exc:
        raise OwnerStartupError(str(exc)) from exc
    finally:
        audit.close()
