"""GET /v1/audit/log (admin scope): the audit log's entries, oldest first, and its current head."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from data_owner.api.deps import AdminKey, Audit
from shared.schemas import AuditLogPage, ErrorResponse

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: int = Field(0, ge=0, description="return entries with seq greater than this")
    limit: int = Field(100, ge=1, le=1000, description="entries per page")


@router.get("/log", response_model=AuditLogPage, summary="audit log entries after a seq, with the log's head",
            responses={401: {"model": ErrorResponse, "description": "missing, invalid or revoked API key"},
                       403: {"model": ErrorResponse, "description": "the key lacks the admin scope"},
                       503: {"model": ErrorResponse, "description": "not ready, or the key store cannot be read"}})
def audit_log(_: AdminKey, audit: Audit, query: Annotated[AuditQuery, Query()]) -> AuditLogPage:
    head = audit.head
    entries = audit.read(query.after, query.limit)
    last = entries[-1].seq if entries else query.after
    return AuditLogPage(entries=entries, head=head, next_after=last if last < head.seq else None)
