"""`create_app(settings)`: the owner's FastAPI application. The export, the API keys and the audit log are loaded
in the lifespan (never at import); until then /ready and every /v1 route answer 503. Every error is JSON
`{"detail": "..."}` with a precise message; an unexpected failure is logged and answered with a 500 that reveals
nothing of it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from data_owner.api.routes import audit, export, health
from data_owner.api.state import open_state
from data_owner.settings import OwnerSettings
from shared.http import repeated_query_detail, validation_detail

log = logging.getLogger(__name__)

DESCRIPTION = """The data owner's side of GD-REC. Consumers pull the export (generated lists and the teacher's
soft targets under pseudonymous tokens) with a bearer API key of scope `export`; every request served is recorded
in a hash-chained audit log, readable with a key of scope `admin`. Raw interactions and raw user ids never leave."""


def _version() -> str:
    try:
        return version("gdrec")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
        return "0+unknown"


REPEATABLE_QUERY: frozenset[str] = frozenset()  # query parameters a route reads as a list


def _single_valued_query(request: Request) -> None:
    detail = repeated_query_detail(request.query_params.multi_items(), REPEATABLE_QUERY)
    if detail is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def create_app(settings: OwnerSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = False
        service = await anyio.to_thread.run_sync(open_state, settings)
        app.state.service = service
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            service.audit.close()
            log.info("owner service stopped")

    app = FastAPI(title="GD-REC data owner", version=_version(), description=DESCRIPTION, lifespan=lifespan,
                  dependencies=[Depends(_single_valued_query)])
    app.state.settings = settings
    app.state.ready = False
    app.state.service = None

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged by the service)"},
                            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)

    app.include_router(health.router)
    app.include_router(export.router)
    app.include_router(audit.router)
    return app
