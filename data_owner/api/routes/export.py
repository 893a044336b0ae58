"""GET /v1/export/manifest and GET /v1/export/users: what a consumer may pull, each request recorded in the
audit log (fsynced) before its response leaves. A request that cannot be recorded is not served (503)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from data_owner.api.cursors import MAX_LENGTH as CURSOR_MAX
from data_owner.api.cursors import MIN_LENGTH as CURSOR_MIN
from data_owner.api.cursors import PATTERN as CURSOR_PATTERN
from data_owner.api.cursors import CursorError, decode_cursor, encode_cursor
from data_owner.api.deps import Audit, Export, ExportKey
from data_owner.api.state import ServedExport
from data_owner.audit import AuditLog, AuditWriteError
from data_owner.keys import ApiKey
from shared.schemas import ErrorResponse, ExportManifest, ExportPage, NoQuery

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/export", tags=["export"])

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_ERRORS = {
    401: {"model": ErrorResponse, "description": "missing, invalid or revoked API key"},
    403: {"model": ErrorResponse, "description": "the key lacks the export scope or belongs to another consumer"},
    503: {"model": ErrorResponse, "description": "not ready, the key store cannot be read, or the audit log could not "
                                                 "record the request"},
}


class UsersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: str | None = Field(None, min_length=CURSOR_MIN, max_length=CURSOR_MAX, pattern=CURSOR_PATTERN,
                               description="next_cursor of the previous page, passed back unchanged; omit it "
                               "to start")
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="users per page")


def _record(audit: AuditLog, key: ApiKey, endpoint: str, export: ServedExport, cursor: str | None, users: int,
            items: int, payload_sha256: str) -> None:
    try:
        audit.append(key_id=key.key_id, consumer=key.consumer, endpoint=endpoint, export_id=export.export_id,
                     cursor=cursor, users=users, items=items, payload_sha256=payload_sha256,
                     privacy=export.manifest.privacy)
    except AuditWriteError as exc:
        log.error("%s; refused %s for key %s", exc, endpoint, key.key_id)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the audit log could not record this request, so "
                            "nothing was served; try again later") from exc


@router.get("/manifest", response_model=ExportManifest, responses=_ERRORS,
            summary="the export's manifest: catalog, list length, temperature, teacher card, privacy switches")
def manifest(key: ExportKey, export: Export, audit: Audit, response: Response,
             _: Annotated[NoQuery, Query()]) -> ExportManifest:
    _record(audit, key, "GET /v1/export/manifest", export, None, 0, 0, export.manifest_sha256)
    response.headers["Cache-Control"] = "no-store"
    return export.manifest


@router.get("/users", response_model=ExportPage,
            responses={**_ERRORS, 400: {"model": ErrorResponse, "description": "a cursor of the right form that "
                                        "this service did not issue (corrupted, or made up), or one past the end"},
                       409: {"model": ErrorResponse, "description": "the cursor belongs to another export"}},
            summary="one page of user records {token, items, soft_targets}, with its sha256 and next cursor")
def users(key: ExportKey, export: Export, audit: Audit, query: Annotated[UsersQuery, Query()],
          response: Response) -> ExportPage:
    offset = 0
    if query.cursor is not None:
        try:
            export_id, offset = decode_cursor(query.cursor)
        except CursorError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        if export_id != export.export_id:
            raise HTTPException(status.HTTP_409_CONFLICT, f"the cursor belongs to export {export_id[:12]}, but "
                                f"export {export.export_id[:12]} is served now: start again from the first page "
                                "(and read the new manifest)")
        if offset >= len(export.users):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"the cursor points past the end of the export "
                                f"(position {offset} of {len(export.users)} users); the last page has no next_cursor")
    records, digest, following = export.page(offset, query.limit)
    _record(audit, key, "GET /v1/export/users", export, query.cursor, len(records),
            sum(len(r.items) for r in records), digest)
    log.info("served %d user record(s) at position %d to key %s", len(records), offset, key.key_id)
    response.headers["Cache-Control"] = "no-store"
    return ExportPage(export_id=export.export_id, cursor=query.cursor,
                      next_cursor=None if following is None else encode_cursor(export.export_id, following),
                      users=records, sha256=digest)
