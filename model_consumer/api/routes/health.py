"""Liveness and readiness probes (no authentication, no user data)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from model_consumer.api.deps import SingleValuedQuery
from shared.schemas import ErrorResponse, Strict

router = APIRouter(tags=["health"], dependencies=[SingleValuedQuery])


class Health(Strict):
    status: Literal["ok"] = "ok"


class Readiness(Strict):
    status: Literal["ready"] = "ready"
    model_version: str


@router.get("/health", response_model=Health, summary="the process is alive")
def health() -> Health:
    return Health()


@router.get("/ready", response_model=Readiness, summary="a model is loaded and the service can answer",
            responses={503: {"model": ErrorResponse, "description": "no model loaded yet"}})
def ready(request: Request) -> Readiness | JSONResponse:
    model = request.app.state.service.model
    if model is None:
        return JSONResponse({"detail": "not ready: no model is loaded yet"},
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Readiness(model_version=model.version)
