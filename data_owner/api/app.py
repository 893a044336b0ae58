"""`create_app(settings)`: the owner's FastAPI application. The export, the API keys and the audit log are loaded
in the lifespan (never at import); until then /ready and every /v1 route answer 503. Every error is JSON
`{"detail": "..."}` with a precise message; an unexpected failure is logged and answered with a 500 that reveals
nothing of it.

What a request meets, in order: the body limit (413, `max_body_bytes`), the rate limit per API key or, without a
valid key, per client address (429 with Retry-After), readiness (503), the key (401) and its scope (403), and only
then the checks of the query (422) and the route's own answers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio
from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from data_owner.api.deps import KEY_CHECK, SingleValuedQuery, admin_key, export_key
from data_owner.api.routes import audit, export, health
from data_owner.api.state import open_state
from data_owner.settings import OwnerSettings
from shared.http import (
    BodyLimitMiddleware,
    Caller,
    CredentialError,
    RateLimitMiddleware,
    Scope,
    bearer_credential,
    client_address,
    header_values,
    optional_limiter,
    responses_of_every_route,
    validation_detail,
)
from shared.schemas import ErrorResponse

log = logging.getLogger(__name__)

DESCRIPTION = """The data owner's side of GD-REC. Consumers pull the export (generated lists and the teacher's
soft targets under pseudonymous tokens) with a bearer API key of scope `export`; every request served is recorded
in a hash-chained audit log, readable with a key of scope `admin`. Raw interactions and raw user ids never leave."""


def _version() -> str:
    try:
        return version("gdrec")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
        return "0+unknown"


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
                  responses=responses_of_every_route(ErrorResponse))
    app.state.settings = settings
    app.state.ready = False
    app.state.service = None

    async def identify(scope: Scope) -> Caller:
        """The API key's id when the request carries a valid one, else the client's address."""
        address = Caller("address", client_address(scope))
        service = app.state.service
        if service is None or not app.state.ready:
            return address
        try:
            presented = bearer_credential(header_values(scope, b"authorization"))
        except CredentialError:
            return address
        result = await anyio.to_thread.run_sync(service.keys.authenticate, presented)
        scope.setdefault("state", {})[KEY_CHECK] = (presented, result)  # the route's `authenticate` reuses it
        return Caller("key", result.key.key_id) if result.key is not None else address

    app.state.rate_limiters = {"key": optional_limiter(settings.key_rate_per_s, settings.key_burst),
                               "address": optional_limiter(settings.address_rate_per_s, settings.address_burst)}
    app.add_middleware(RateLimitMiddleware, identify=identify, limiters=app.state.rate_limiters)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)  # added last: the outermost

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged by the service)"},
                            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)

    # the key (and its scope) first, then the shape of the query: a caller without a key learns nothing of the API
    app.include_router(health.router, dependencies=[SingleValuedQuery])
    app.include_router(export.router, dependencies=[Depends(export_key), SingleValuedQuery])
    app.include_router(audit.router, dependencies=[Depends(admin_key), SingleValuedQuery])
    return app
