"""HTTP for both services. Client side: one factory (base URL, bearer key, timeouts, connection limits, a user
agent, connect retries) and one retry helper for idempotent GETs (transport errors, 429 and 502-504, honouring
Retry-After); the key travels only in the Authorization header and is never logged. Serving side, in plain ASGI and
the standard library so that both services put them outside their framework: `BodyLimitMiddleware` (413 for a body
over the limit, before anything reads it), `RateLimitMiddleware` with its `RateLimiter` (token buckets per caller,
429 with Retry-After), `bearer_credential` (the one `Authorization: Bearer` value of a request), and the one-line
`detail` texts of refused requests: `validation_detail` and `repeated_query_detail`."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
USER_AGENT = "gdrec/1"


def make_client(
    base_url: str,
    api_key: str | None = None,
    *,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    max_connections: int = 16,
    connect_retries: int = 2,
    transport: httpx.BaseTransport | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Client:
    """A client for `base_url` (http or https) sending `Authorization: Bearer <api_key>` when a key is given.
    `transport` replaces the network (tests pass an in-process transport)."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"expected an http(s) URL with a host, got {base_url!r}")
    if transport is None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        transport = httpx.HTTPTransport(retries=connect_retries, limits=limits)
    merged = {"User-Agent": USER_AGENT, **(headers or {})}
    if api_key:
        merged["Authorization"] = f"Bearer {api_key}"
    return httpx.Client(base_url=url, headers=merged, timeout=timeout, transport=transport, follow_redirects=False)


def _retry_after(response: httpx.Response, fallback: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return fallback


def get_with_retries(
    client: httpx.Client,
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    attempts: int = 3,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """GET with up to `attempts` tries on transport errors and on 429/502/503/504 (exponential backoff, or the
    server's Retry-After). Returns the last response; raises the last transport error when every try failed."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        delay = backoff_s * 2 ** (attempt - 1)
        try:
            response = client.get(url, params=params)
        except httpx.TransportError as exc:
            if attempt == attempts:
                raise
            log.warning("GET %s failed (%s); retry %d of %d in %.1f s", url, type(exc).__name__, attempt,
                        attempts - 1, delay)
        else:
            if response.status_code not in RETRY_STATUSES or attempt == attempts:
                return response
            delay = _retry_after(response, delay)
            log.warning("GET %s answered %d; retry %d of %d in %.1f s", url, response.status_code, attempt,
                        attempts - 1, delay)
        sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


MAX_ECHO_CHARS = 40  # of a refused value quoted back in a `detail`


def _echo(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else f"{text[:MAX_ECHO_CHARS]}... ({len(str(value))} characters)"


def validation_detail(errors: Iterable[Mapping[str, Any]]) -> str:
    """The 422 `detail` for FastAPI's validation errors (`RequestValidationError.errors()`): one clause per problem,
    naming where it is ("query parameter 'k'", "body parameter 'tokens.0'"), what is wrong and what was sent (cut
    to a few dozen characters)."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        kind = error.get("type")
        if kind == "json_invalid":  # loc is ("body", <character offset>), or ("body",) from pydantic's JSON parser
            reason = (error.get("ctx") or {}).get("error", "malformed")
            where = f" at character {loc[-1]}" if len(loc) > 1 else ""
            parts.append(f"request body is not valid JSON ({reason}{where}); send a JSON object with Content-Type: "
                         "application/json")
            continue
        if loc == ["body"] and kind in ("model_attributes_type", "model_type"):
            parts.append("request body: expected a JSON object (Content-Type: application/json), got "
                         f"{type(error.get('input')).__name__}")
            continue
        where = f"{loc[0]} parameter '{'.'.join(loc[1:])}'" if len(loc) > 1 else (loc[0] if loc else "request")
        if kind == "extra_forbidden":
            parts.append(f"unknown {where}")
            continue
        got = error.get("input")
        parts.append(f"{where}: {error.get('msg')}" + (f" (got {_echo(got)})" if isinstance(got, str | int) else ""))
    return "; ".join(parts)


def repeated_query_detail(pairs: Iterable[tuple[str, str]], repeatable: frozenset[str] = frozenset()) -> str | None:
    """The 422 `detail` when a query parameter that takes one value is given more than once (FastAPI would keep
    the last one silently), else None. `pairs`: the query string's (name, value) pairs, in order."""
    counts: dict[str, int] = {}
    for name, _ in pairs:
        counts[name] = counts.get(name, 0) + 1
    repeated = [f"query parameter '{name}' given {n} times" for name, n in counts.items()
                if n > 1 and name not in repeatable]
    return "; ".join(repeated) + ": give each once" if repeated else None


def bearer_credential(values: Sequence[str]) -> str:
    """The key of a request's `Authorization: Bearer <key>` header, from all its Authorization values (in order).
    Raises CredentialError: `missing` without a header, `repeated` for more than one (which one would count is
    exactly what a confused proxy and a service may disagree on), `malformed` for another scheme or no key."""
    if not values:
        raise CredentialError("missing")
    if len(values) > 1:
        raise CredentialError("repeated")
    scheme, _, presented = values[0].strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented or " " in presented:
        raise CredentialError("malformed")
    return presented


class CredentialError(ValueError):
    """Why a request carries no usable bearer key: `problem` is missing, repeated or malformed."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


REPEATED_AUTHORIZATION = "more than one Authorization header: send exactly one 'Authorization: Bearer <key>'"


# ----------------------------------------------------------------------------------------------------------------
# ASGI middleware (the standard library only: they run outside the framework, before routing)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
    """Answer `{"detail": ...}` with `status` (and extra headers) on a plain ASGI `send`."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of a request header (lower-case `name`), in order."""
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name]


class BodyLimitMiddleware:
    """Refuses a request body over `max_bytes` with 413 before the application sees the request: at once when
    Content-Length says so (nothing is read), else while reading a body of unknown length (chunked), which is read
    here, at most `max_bytes` and the one piece that crosses it, and handed on whole. Memory per request stays
    within the limit (plus one piece as the server delivered it), whatever the client sends; a 413 closes the
    connection, so the rest of the body is never read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be non-negative, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> str:
        return (f"request body too large: {size}, and this service accepts at most {self.max_bytes} bytes "
                "(its max_body_bytes setting)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header_values(scope, b"content-length")
        if declared:
            value = declared[0].strip()
            if len(set(declared)) > 1 or not (value.isascii() and value.isdigit()):
                await send_json(send, 400, "malformed Content-Length header: expected one non-negative integer",
                                {"Connection": "close"})
                return
            if int(value) > self.max_bytes:
                await send_json(send, 413, self._too_large(f"Content-Length is {int(value)} bytes"),
                                {"Connection": "close"})
                return
            await self.app(scope, receive, send)  # the server delivers no more than Content-Length
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_json(send, 413, self._too_large(f"more than {self.max_bytes} bytes were sent"),
                                {"Connection": "close"})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class RateLimiter:
    """Token buckets, one per caller: each holds at most `burst` tokens, refills at `rate` tokens per second and
    starts full; a request takes one. Thread-safe. At most `max_callers` buckets are kept (the least recently
    seen is dropped first, which hands that caller a full bucket when it comes back)."""

    def __init__(self, rate: float, burst: int, *, max_callers: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or max_callers < 1:
            raise ValueError(f"rate must be positive and burst, max_callers at least 1 (got {rate}, {burst}, "
                             f"{max_callers})")
        self.rate, self.burst, self.max_callers, self.clock = rate, burst, max_callers, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """0.0 when `caller` may go ahead (a token was taken), else the seconds until its next token."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.pop(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[caller] = (tokens, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
            return wait


def optional_limiter(rate: float, burst: int) -> RateLimiter | None:
    """A `RateLimiter`, or None when `rate` is 0 (the limit is off)."""
    return RateLimiter(rate, burst) if rate > 0 else None


def responses_of_every_route(error_model: type) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` both services document on every route: what the middlewares above answer before a
    route runs (413, 429) and the 422 of a refused parameter, each a `{"detail": "<string>"}` body (`error_model`)."""
    return {
        413: {"model": error_model, "description": "the request body is larger than the service accepts "
                                                   "(max_body_bytes); checked before anything else"},
        422: {"model": error_model, "description": "a malformed, unknown or repeated parameter (after "
                                                   "authentication on the routes that need a key)"},
        429: {"model": error_model, "description": "too many requests from this API key, or from this address "
                                                   "without a valid key: wait Retry-After seconds",
              "headers": {"Retry-After": {"description": "seconds to wait",
                                          "schema": {"type": "integer", "minimum": 1}}}},
    }


@dataclass(frozen=True)
class Caller:
    """Who a request counts against: `kind` is `key` (a valid API key, `name` says which) or `address` (no valid
    key, `name` is the client's address); `label` names the caller in a 429's detail (never the key itself)."""

    kind: str
    name: str
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        return "this API key" if self.kind == "key" else f"{self.name} without a valid API key"


Identify = Callable[[Scope], Awaitable[Caller]]


class RateLimitMiddleware:
    """429 Too Many Requests, with Retry-After (whole seconds) and a `detail`, for a caller over its limit, before
    the application sees the request. `identify` tells who the caller is; `limiters` gives the limiter of each kind
    of caller (`key`, `address`; a kind without one is not limited)."""

    def __init__(self, app: ASGIApp, identify: Identify, limiters: Mapping[str, RateLimiter | None]) -> None:
        self.app = app
        self.identify = identify
        self.limiters = dict(limiters)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        caller = await self.identify(scope)
        limiter = self.limiters.get(caller.kind)
        wait = limiter.take(f"{caller.kind}:{caller.name}") if limiter is not None else 0.0
        if wait > 0:
            assert limiter is not None
            retry_after = max(1, math.ceil(wait))
            await send_json(send, 429, f"too many requests from {caller.describe()}: at most {limiter.rate:g} per "
                            f"second (bursts of {limiter.burst}); retry after {retry_after} s",
                            {"Retry-After": str(retry_after)})
            return
        await self.app(scope, receive, send)


def client_address(scope: Scope) -> str:
    """The peer address of a request (the server's view: behind a proxy, configure the server's forwarded headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "an unknown address"
