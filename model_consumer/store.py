"""The consumer's local copy of an export: the manifest, one JSON file per verified page and a progress file.

Every file is written to a temporary name and renamed into place (`shared.checkpoint.atomic_write_text`), and the
progress file is written after the page it records, so an interruption leaves either the old or the new state,
never half a page. A pull resumes after the last page the progress file lists."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.checkpoint import atomic_write_text
from shared.schemas import ExportBundle, ExportManifest, ExportPage, UserRecord, content_sha256

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
PAGES = "pages"


class StoreError(RuntimeError):
    """The local export is missing, incomplete or damaged (the message says which and what to do)."""


@dataclass
class PageEntry:
    number: int
    cursor: str | None
    next_cursor: str | None
    users: int
    sha256: str


@dataclass
class Progress:
    export_id: str
    pages: list[PageEntry] = field(default_factory=list)
    complete: bool = False

    @property
    def next_cursor(self) -> str | None:
        return self.pages[-1].next_cursor if self.pages else None

    @property
    def users(self) -> int:
        return sum(p.users for p in self.pages)


class ExportStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def pages_dir(self) -> Path:
        return self.root / PAGES

    def page_path(self, number: int) -> Path:
        return self.pages_dir / f"{number:06d}.json"

    def manifest(self) -> ExportManifest | None:
        path = self.root / MANIFEST
        return ExportManifest.model_validate_json(path.read_bytes()) if path.is_file() else None

    def progress(self) -> Progress | None:
        path = self.root / PROGRESS
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return Progress(raw["export_id"], [PageEntry(**p) for p in raw["pages"]], raw["complete"])

    def _write_progress(self, progress: Progress) -> None:
        atomic_write_text(self.root / PROGRESS, json.dumps(asdict(progress), indent=1) + "\n")

    def start(self, manifest: ExportManifest) -> Progress:
        """The progress of `manifest`'s export: kept when it is the one stored, else everything stored is dropped."""
        current, progress = self.manifest(), self.progress()
        if current is not None and progress is not None and current.export_id == manifest.export_id:
            return progress
        if current is not None:
            log.warning("the owner now serves export %s (stored: %s): starting again", manifest.export_id[:12],
                        current.export_id[:12])
        shutil.rmtree(self.pages_dir, ignore_errors=True)
        (self.root / PROGRESS).unlink(missing_ok=True)
        atomic_write_text(self.root / MANIFEST, manifest.model_dump_json(indent=1) + "\n")
        progress = Progress(manifest.export_id)
        self._write_progress(progress)
        return progress

    def append(self, progress: Progress, page: ExportPage) -> None:
        """Store a verified page, then record it (in that order)."""
        number = len(progress.pages) + 1
        atomic_write_text(self.page_path(number), page.model_dump_json() + "\n")
        progress.pages.append(PageEntry(number, page.cursor, page.next_cursor, len(page.users), page.sha256))
        progress.complete = page.next_cursor is None
        self._write_progress(progress)

    def load_bundle(self) -> ExportBundle:
        """The whole stored export, every page checked again against its hash."""
        manifest, progress = self.manifest(), self.progress()
        if manifest is None or progress is None:
            raise StoreError(f"no export in {self.root}: run `gdrec-consumer pull --owner URL` first")
        if not progress.complete:
            raise StoreError(f"the export in {self.root} is incomplete ({len(progress.pages)} page(s), "
                             f"{progress.users} of {manifest.n_users} users): run `gdrec-consumer pull` to finish it")
        users: list[UserRecord] = []
        for entry in progress.pages:
            path = self.page_path(entry.number)
            page = ExportPage.model_validate_json(path.read_bytes())
            if not page.hash_matches() or page.sha256 != entry.sha256:
                raise StoreError(f"{path} is damaged (its sha256 does not match): delete {self.root} and pull again")
            users.extend(page.users)
        return ExportBundle(manifest=manifest, users=users)

    def content_digest(self) -> str:
        """content_sha256 of every stored user record, in order (equal for equal data)."""
        return content_sha256(self.load_bundle().users)
