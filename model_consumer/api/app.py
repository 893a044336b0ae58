"""`create_app(settings)`: the consumer's FastAPI application. The model is loaded in the lifespan (never at
import); until one is loaded /ready and the /v1 routes answer 503. Every error is JSON `{"detail": "..."}`;
an unexpected failure is logged and answered with a 500 that reveals nothing of it. Request counts, latencies
and the model version are exported on /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from model_consumer.api.routes import admin, health, items, model, recommendations
from model_consumer.api.state import ServiceState
from model_consumer.serving import NoModelError
from model_consumer.settings import ConsumerSettings
from model_consumer.students import PublishedModelError, current_version
from shared.http import repeated_query_detail, validation_detail

log = logging.getLogger(__name__)

DESCRIPTION = """The model consumer's side of GD-REC: a student distilled from the owner's export alone, serving
top-K recommendations for pseudonymous user tokens. It never received raw interactions or raw user ids."""


def _try_load(state: ServiceState) -> None:
    try:
        state.reload()
    except (NoModelError, PublishedModelError) as exc:
        log.warning("%s; /ready answers 503 until a model is published and reloaded", exc)


async def _watch(state: ServiceState, every_s: float) -> None:
    """Swap in a newly published model when models/current.json changes (a version that failed to load is not
    retried every poll: a new publication is)."""
    failed_on: str | None = None
    while True:
        await asyncio.sleep(every_s)
        served = state.model.version if state.model else None
        try:
            published = current_version(state.settings.layout)
        except PublishedModelError as exc:
            if failed_on != str(exc):  # say it once, not every poll
                state.metrics.reloads.labels("failed").inc()
                log.error("automatic reload failed; the old model is still served: %s", exc)
            failed_on = str(exc)
            continue
        if published not in (None, served, failed_on):
            try:
                await anyio.to_thread.run_sync(state.reload)
                state.metrics.reloads.labels("swapped").inc()
                failed_on = None
            except Exception as exc:  # keep serving the old model
                state.metrics.reloads.labels("failed").inc()
                log.error("automatic reload of %s failed; the old model is still served: %s", published, exc)
                failed_on = published


REPEATABLE_QUERY = frozenset({"exclude"})  # query parameters a route reads as a list


def _single_valued_query(request: Request) -> None:
    detail = repeated_query_detail(request.query_params.multi_items(), REPEATABLE_QUERY)
    if detail is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def create_app(settings: ConsumerSettings) -> FastAPI:
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_try_load, state)
        watcher = asyncio.create_task(_watch(state, settings.reload_poll_s)) if settings.reload_poll_s > 0 else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            log.info("consumer service stopped")

    app = FastAPI(title="GD-REC model consumer", version="1", description=DESCRIPTION, lifespan=lifespan,
                  dependencies=[Depends(_single_valued_query)])
    app.state.service = state

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        code = "500"  # unless a response comes back: an unhandled error reaches the client as a 500
        try:
            response = await call_next(request)
            code = str(response.status_code)
            return response
        finally:
            template = getattr(request.scope.get("route"), "path", "unmatched")
            state.metrics.requests.labels(request.method, template, code).inc()
            state.metrics.latency.labels(request.method, template).observe(time.perf_counter() - started)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged by the service)"},
                            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for module in (health, recommendations, items, model, admin):
        app.include_router(module.router)
    return app
