"""The HTTP client both services use to call each other: one factory (base URL, bearer key, timeouts, connection
limits, a user agent, connect retries) and one retry helper for idempotent GETs (transport errors, 429 and 502-504,
honouring Retry-After). The key travels only in the Authorization header and is never logged. On the serving side,
`validation_detail` turns a request's validation errors into the one-line `detail` both services answer with,
and `repeated_query_detail` refuses a single-valued query parameter given twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
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


def validation_detail(errors: Iterable[Mapping[str, Any]]) -> str:
    """The 422 `detail` for FastAPI's validation errors (`RequestValidationError.errors()`): one clause per problem,
    naming where it is ("query parameter 'k'", "body parameter 'tokens.0'"), what is wrong and what was sent."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        kind = error.get("type")
        if kind == "json_invalid":  # loc is ("body", <character offset>)
            reason = (error.get("ctx") or {}).get("error", "malformed")
            parts.append(f"request body is not valid JSON ({reason} at character {loc[-1]}); send a JSON object "
                         "with Content-Type: application/json")
            continue
        if loc == ["body"] and kind == "model_attributes_type":
            parts.append("request body: expected a JSON object (Content-Type: application/json), got "
                         f"{type(error.get('input')).__name__}")
            continue
        where = f"{loc[0]} parameter '{'.'.join(loc[1:])}'" if len(loc) > 1 else (loc[0] if loc else "request")
        if kind == "extra_forbidden":
            parts.append(f"unknown {where}")
            continue
        got = error.get("input")
        parts.append(f"{where}: {error.get('msg')}" + (f" (got {got!r})" if isinstance(got, str | int) else ""))
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
