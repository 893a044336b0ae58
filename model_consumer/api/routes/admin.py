"""POST /v1/admin/reload: swap in the model `models/current.json` points at, atomically, while requests go on."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, HTTPException, status

from model_consumer.api.deps import AdminKey, SingleValuedQuery, State
from model_consumer.serving import NoModelError
from model_consumer.students import PublishedModelError
from shared.schemas import ErrorResponse, Strict

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminKey, SingleValuedQuery])


class ReloadResult(Strict):
    model_version: str
    swapped: bool


@router.post("/reload", response_model=ReloadResult,
             responses={401: {"model": ErrorResponse, "description": "missing, malformed or invalid admin key"},
                        403: {"model": ErrorResponse, "description": "admin routes are disabled (no admin key is set)"},
                        409: {"model": ErrorResponse, "description": "no published model, or it cannot be loaded"}})
async def reload(state: State) -> ReloadResult:
    try:
        model, swapped = await anyio.to_thread.run_sync(state.reload)
    except (NoModelError, PublishedModelError) as exc:
        state.metrics.reloads.labels("failed").inc()
        raise HTTPException(status.HTTP_409_CONFLICT, f"reload failed, the old model is still served: {exc}") from None
    state.metrics.reloads.labels("swapped" if swapped else "unchanged").inc()
    return ReloadResult(model_version=model.version, swapped=swapped)
