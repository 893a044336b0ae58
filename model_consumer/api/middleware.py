"""`MeasureMiddleware`: counts every HTTP request by method, route template and status, and observes its latency,
in plain ASGI (no per-request task or body streaming, unlike a `@app.middleware("http")` function). A request the
application fails on without answering counts as a 500, which is what the client then receives."""

from __future__ import annotations

import time

from model_consumer.api.state import Metrics
from shared.http import ASGIApp, Message, Receive, Scope, Send


class MeasureMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = "500"  # unless a response starts: an unhandled error reaches the client as a 500

        async def send_and_note(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, template, code).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
