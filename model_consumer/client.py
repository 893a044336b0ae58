"""`gdrec-consumer pull`: the owner's manifest and every export page over HTTP (ARCHITECTURE.md flow step 4).

Authenticated with the owner-issued bearer key; each request has a timeout and is retried with exponential backoff
on connection errors, 5xx and 429 (honouring Retry-After); each page is checked against its sha256 (a mismatch is
retried like a transfer error) and stored atomically before the next is asked for, so an interrupted pull resumes
after the last verified page."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from model_consumer.store import ExportStore
from shared.http import MAX_RETRY_AFTER_S
from shared.schemas import ExportManifest, ExportPage

log = logging.getLogger(__name__)

MANIFEST_PATH = "/v1/export/manifest"
USERS_PATH = "/v1/export/users"


class PullError(RuntimeError):
    """The pull stopped; what was stored stays valid and a later pull resumes from it."""


@dataclass
class PullResult:
    export_id: str
    pages: int  # pages stored in all
    fetched: int  # pages fetched by this call
    users: int
    complete: bool
    resumed_at: int  # the first page number this call fetched (1: from the start)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.text[:200] or response.reason_phrase


def _retry_delay(response: httpx.Response | None, fallback: float) -> float:
    if response is not None and "Retry-After" in response.headers:
        try:
            return min(max(float(response.headers["Retry-After"]), 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    return fallback


def fetch(client: httpx.Client, path: str, model: type, *, params: dict[str, Any] | None = None, attempts: int = 5,
          backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> Any:
    """GET `path` and parse it as `model`, retrying transport errors, 5xx, 429 and pages failing their hash."""
    problem = ""
    for attempt in range(1, attempts + 1):
        delay, response = backoff_s * 2 ** (attempt - 1), None
        try:
            response = client.get(path, params=params)
        except httpx.TransportError as exc:
            problem = f"cannot reach the owner at {client.base_url} ({type(exc).__name__}: {exc})"
        else:
            if response.status_code in (401, 403):
                raise PullError(f"the owner refused the key ({response.status_code}: {_detail(response)}); set "
                                "GDREC_CONSUMER_OWNER_KEY to the key from `gdrec-owner keys add`")
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"the owner answered {response.status_code} ({_detail(response)})"
            elif response.status_code != 200:
                raise PullError(f"GET {path} answered {response.status_code}: {_detail(response)}")
            else:
                try:
                    parsed = model.model_validate_json(response.content)
                except ValidationError as exc:
                    raise PullError(f"GET {path}: the answer breaks the contract (shared/schemas.py): "
                                    f"{exc.errors()[0]['msg']}") from None
                if not isinstance(parsed, ExportPage) or parsed.hash_matches():
                    return parsed
                problem = "the page's content does not match its sha256 (corrupted in transfer)"
        if attempt < attempts:
            delay = _retry_delay(response, delay)
            log.warning("GET %s: %s; retry %d of %d in %.1f s", path, problem, attempt, attempts - 1, delay)
            sleep(delay)
    raise PullError(f"GET {path} failed after {attempts} tries: {problem}. What was stored is kept; run the pull "
                    "again to resume")


def pull(client: httpx.Client, store: ExportStore, *, limit: int = 100, attempts: int = 5, backoff_s: float = 0.5,
         max_pages: int | None = None, sleep: Callable[[float], None] = time.sleep,
         on_page: Callable[[int, int], None] | None = None) -> PullResult:
    """Pull the manifest and the pages not stored yet into `store`; `max_pages` stops early (resumable)."""
    manifest: ExportManifest = fetch(client, MANIFEST_PATH, ExportManifest, attempts=attempts, backoff_s=backoff_s,
                                     sleep=sleep)
    progress = store.start(manifest)
    resumed_at = len(progress.pages) + 1
    if progress.pages and not progress.complete:
        log.info("resuming export %s at page %d (%d users stored)", manifest.export_id[:12], resumed_at,
                 progress.users)
    fetched = 0
    while not progress.complete and (max_pages is None or fetched < max_pages):
        cursor = progress.next_cursor
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page: ExportPage = fetch(client, USERS_PATH, ExportPage, params=params, attempts=attempts,
                                 backoff_s=backoff_s, sleep=sleep)
        if page.export_id != manifest.export_id or page.cursor != cursor:
            raise PullError(f"the owner answered a page of export {page.export_id[:12]} at cursor {page.cursor!r} "
                            f"when asked for export {manifest.export_id[:12]} at {cursor!r}; pull again")
        store.append(progress, page)
        fetched += 1
        if on_page is not None:
            on_page(progress.users, manifest.n_users)
    if progress.complete and progress.users != manifest.n_users:
        raise PullError(f"the owner's pages hold {progress.users} users but its manifest says {manifest.n_users}")
    return PullResult(manifest.export_id, len(progress.pages), fetched, progress.users, progress.complete, resumed_at)
