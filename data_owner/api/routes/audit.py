"""GET /v1/audit/log (admin scope): the audit log's durable entries, oldest first, across its segments, and its
current head (seq, hash and the owner's tag: publish it elsewhere, check it later with `gdrec-owner audit verify
--expect-head`)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from data_owner.api.deps import AdminKey, Audit
from data_owner.audit import AuditError
from shared.schemas import AuditLogPage, ErrorResponse

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: int = Field(0, ge=0, description="return entries with seq greater than this")
    limit: int = Field(100, ge=1, le=1000, description="entries per page")


@router.get("/log", response_model=AuditLogPage, summary="audit log entries after a seq, with the log's head",
            responses={401: {"model": ErrorResponse, "description": "missing, invalid or revoked API key"},
                       403: {"model": ErrorResponse, "description": "the key lacks the admin scope"},
                       503: {"model": ErrorResponse, "description": "not ready, the key store cannot be read, or the "
                                                                    "audit log cannot be read"}})
def audit_log(_: AdminKey, audit: Audit, query: Annotated[AuditQuery, Query()]) -> AuditLogPage:
    head = audit.head
    try:
        entries = audit.read(query.after, query.limit)
    except AuditError as exc:
        log.error("%s", exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the audit log cannot be read now; try again "
                            "later") from exc
    entries = [entry for entry in entries if entry.seq <= head.seq]  # appended since the head was taken
    last = entries[-1].seq if entries else query.after
    return AuditLogPage(entries=entries, head=head, next_after=last if last < head.seq else None)
