"""Liveness and readiness probes (no authentication; they reveal no user data)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from shared.schemas import ErrorResponse, Strict

router = APIRouter(tags=["health"])


class Health(Strict):
    status: Literal["ok"] = "ok"


class Readiness(Strict):
    """Unauthenticated: only what a load balancer or an operator needs (no user count, no catalog)."""

    status: Literal["ready"] = "ready"
    export_id: str


@router.get("/health", response_model=Health, summary="the process is alive")
def health() -> Health:
    return Health()


@router.get("/ready", response_model=Readiness, summary="the export is loaded and the service can answer",
            responses={503: {"model": ErrorResponse, "description": "still loading (or shutting down)"}})
def ready(request: Request) -> Readiness | JSONResponse:
    service = getattr(request.app.state, "service", None)
    if service is None or not getattr(request.app.state, "ready", False):
        return JSONResponse({"detail": "not ready: the export is not loaded yet"},
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Readiness(export_id=service.export.export_id)
