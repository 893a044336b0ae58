"""`create_app(settings)`: the consumer's FastAPI application. The model is loaded in the lifespan (never at
import); until one is loaded /ready and the /v1 routes answer 503. Every error is JSON `{"detail": "..."}`;
an unexpected failure is logged and answered with a 500 that reveals nothing of it.

What a request meets, in order: the body limit (413, `max_body_bytes`), the rate limit per key or, without a valid
key, per client address (429 with Retry-After), the key (401), and only then the checks of the query and the body
(422) and the route's own answers. Request counts, latencies and the model version are exported for Prometheus on
a port of their own (`metrics_port`, bound to `metrics_host`, 127.0.0.1 by default), never on the API's port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import start_http_server

from model_consumer.api.deps import matching_key
from model_consumer.api.middleware import MeasureMiddleware
from model_consumer.api.routes import admin, health, items, model, recommendations
from model_consumer.api.state import ServiceState
from model_consumer.serving import NoModelError
from model_consumer.settings import ConsumerSettings
from model_consumer.students import PublishedModelError, current_version
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
from shared.schemas import MAX_BATCH_TOKENS, ErrorResponse

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


def _document_limits(app: FastAPI, settings: ConsumerSettings) -> None:
    """Put the limits that are settings (max_k, max_batch) into the OpenAPI schema, where a client looks for them."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path in schema["paths"].values():
            for operation in path.values():
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "query" and parameter["name"] == "k":
                        parameter["schema"]["maximum"] = settings.max_k
                body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
                if body is not None and body.get("title") == "BatchRecommendationRequest":
                    body["properties"]["k"]["maximum"] = settings.max_k
                    body["properties"]["tokens"]["maxItems"] = min(settings.max_batch, MAX_BATCH_TOKENS)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


@contextlib.contextmanager
def _metrics_server(state: ServiceState, host: str, port: int | None) -> Iterator[tuple[str, int] | None]:
    """Prometheus's text format on http://host:port/metrics, in a thread, for as long as the service runs."""
    if port is None:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=state.metrics.registry)
    except OSError as exc:
        raise RuntimeError(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): set "
                           "GDREC_CONSUMER_METRICS_PORT to a free port, or unset it") from None
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        yield host, server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def create_app(settings: ConsumerSettings) -> FastAPI:
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_try_load, state)
        watcher = asyncio.create_task(_watch(state, settings.reload_poll_s)) if settings.reload_poll_s > 0 else None
        try:
            with _metrics_server(state, settings.metrics_host, settings.metrics_port) as address:
                app.state.metrics_address = address
                yield
        finally:
            app.state.metrics_address = None
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            log.info("consumer service stopped")

    app = FastAPI(title="GD-REC model consumer", version="1", description=DESCRIPTION, lifespan=lifespan,
                  responses=responses_of_every_route(ErrorResponse))
    app.state.service = state
    app.state.metrics_address = None  # (host, port) of the metrics server while it runs

    async def identify(scope: Scope) -> Caller:
        """The key a request carries when it is a valid one (every caller counts as keyed when the API is open,
        without api_key), else the client's address."""
        address = client_address(scope)
        if settings.api_key is None:
            return Caller("key", f"open:{address}", f"{address} (the API needs no key)")
        try:
            presented = bearer_credential(header_values(scope, b"authorization"))
        except CredentialError:
            return Caller("address", address)
        name = matching_key(settings, presented)
        return Caller("key", name) if name is not None else Caller("address", address)

    app.state.rate_limiters = {"key": optional_limiter(settings.key_rate_per_s, settings.key_burst),
                               "address": optional_limiter(settings.address_rate_per_s, settings.address_burst)}
    app.add_middleware(RateLimitMiddleware, identify=identify, limiters=app.state.rate_limiters)

    app.add_middleware(MeasureMiddleware, metrics=state.metrics)

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

    for router in (health.router, recommendations.batch_methods, recommendations.router, items.router,
                   model.router, admin.router):
        app.include_router(router)
    _document_limits(app, settings)
    return app


APP_FACTORY = "model_consumer.api.app:create_app_from_environment"  # what uvicorn's worker processes import


def create_app_from_environment() -> FastAPI:
    """`create_app` with the settings of the environment (`GDREC_CONSUMER_*`, key files, `.env`): each worker
    process of `gdrec-consumer serve --workers N` builds its own application, loading the published model on its
    own and reading the model folder only. Its log records go to stderr at the settings' level, and with several
    workers torch's threads are shared out among them (unless OMP_NUM_THREADS says how many)."""
    settings = ConsumerSettings()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s")
    if settings.workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    return create_app(settings)
