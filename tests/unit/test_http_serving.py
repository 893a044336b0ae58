"""The serving side of shared.http in plain ASGI: the body limit (what it reads and what it hands on), the token
buckets (refill, burst, the wait it reports, bounded memory), the rate-limit middleware and the parsing of the
Authorization header."""

from __future__ import annotations

import asyncio
import json

import pytest

from shared.http import (
    BodyLimitMiddleware,
    Caller,
    CredentialError,
    RateLimiter,
    RateLimitMiddleware,
    bearer_credential,
)


class Recorder:
    """An ASGI app that reads the whole body and answers 200 with its length; remembers that it was called."""

    def __init__(self) -> None:
        self.calls = 0
        self.body = b""

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        while True:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(self.body)).encode()})


def run(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, dict, bytes, int]:
    """(status, headers, body, chunks received from the client) of one request through `app`."""
    received = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal received
        if received >= len(chunks):
            return {"type": "http.disconnect"}
        received += 1
        return {"type": "http.request", "body": chunks[received - 1], "more_body": received < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "client": ("10.0.0.7", 5000)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body, received


def test_a_content_length_over_the_limit_is_refused_without_reading_or_calling_the_app():
    app = Recorder()
    status, headers, body, received = run(BodyLimitMiddleware(app, 100), [(b"content-length", b"101")], [b"x" * 101])
    assert status == 413 and received == 0 and app.calls == 0
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    assert json.loads(body)["detail"].startswith("request body too large: Content-Length is 101 bytes")


def test_a_chunked_body_is_read_only_until_it_passes_the_limit():
    app = Recorder()
    chunks = [b"x" * 40] * 1000  # 40 kB, 40 bytes at a time
    status, _, body, received = run(BodyLimitMiddleware(app, 100), [(b"transfer-encoding", b"chunked")], chunks)
    assert status == 413 and received == 3 and app.calls == 0  # 120 bytes read: the 3rd chunk crossed the limit
    assert "more than 100 bytes were sent" in json.loads(body)["detail"]


@pytest.mark.parametrize("headers", [[(b"transfer-encoding", b"chunked")], [(b"content-length", b"100")]])
def test_a_body_at_the_limit_reaches_the_app_whole(headers):
    app = Recorder()
    chunks = [b"a" * 30, b"b" * 30, b"c" * 40]
    status, _, body, _ = run(BodyLimitMiddleware(app, 100), headers, chunks)
    assert status == 200 and app.body == b"a" * 30 + b"b" * 30 + b"c" * 40 and body == b"100"


@pytest.mark.parametrize("values", [[b"ten"], [b"-1"], [b"10", b"12"], [b""], ["\u00b2".encode("latin-1")]])
def test_a_malformed_content_length_is_a_400(values):
    app = Recorder()
    status, _, body, _ = run(BodyLimitMiddleware(app, 100), [(b"content-length", v) for v in values], [b""])
    assert status == 400 and app.calls == 0 and "Content-Length" in json.loads(body)["detail"]


def test_a_client_that_goes_away_mid_body_is_let_go():
    app = Recorder()
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodyLimitMiddleware(app, 100)({"type": "http", "headers": []}, receive, send))
    assert app.calls == 0 and sent == []


def test_a_negative_limit_is_refused():
    with pytest.raises(ValueError, match="non-negative"):
        BodyLimitMiddleware(Recorder(), -1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # a token comes back every 1/2 s
    clock.now = 0.25
    assert limiter.take("a") == pytest.approx(0.25)  # the refused request took nothing
    clock.now = 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") == pytest.approx(0.5)
    clock.now = 100.0  # refills to the burst, not beyond
    assert [limiter.take("a") for _ in range(4)][-1] == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # buckets are per caller


def test_buckets_are_bounded_and_the_least_recent_caller_goes_first():
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, max_callers=2, clock=clock)
    assert limiter.take("a") == 0.0 and limiter.take("b") == 0.0
    assert limiter.take("a") > 0  # "a" is now the most recent
    assert limiter.take("c") == 0.0  # "b" is dropped to make room
    assert limiter.take("a") > 0 and limiter.take("b") == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_a_limiter_needs_a_positive_rate_and_burst(rate, burst):
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimiter(rate, burst)


def test_the_middleware_answers_429_with_whole_seconds_to_wait_and_says_who():
    clock = Clock()
    limiters = {"key": RateLimiter(0.4, 1, clock=clock), "address": None}
    callers = iter([Caller("key", "k1"), Caller("key", "k1"), Caller("address", "10.0.0.7")] * 3)

    async def identify(scope) -> Caller:
        return next(callers)

    app = Recorder()
    middleware = RateLimitMiddleware(app, identify, limiters)
    assert run(middleware, [], [b""])[0] == 200
    status, headers, body, _ = run(middleware, [], [b""])
    assert status == 429 and headers["retry-after"] == "3"  # 2.5 s rounded up
    assert json.loads(body)["detail"] == ("too many requests from this API key: at most 0.4 per second (bursts of 1); "
                                          "retry after 3 s")
    assert run(middleware, [], [b""])[0] == 200  # addresses are not limited here
    assert app.calls == 2


@pytest.mark.parametrize(("values", "problem"), [
    ([], "missing"), (["Bearer a", "Bearer a"], "repeated"), (["Basic eDp5"], "malformed"), (["Bearer"], "malformed"),
    (["Bearer   "], "malformed"), (["Bearer a b"], "malformed"), (["token"], "malformed"),
])
def test_bearer_credential_says_what_is_wrong(values, problem):
    with pytest.raises(CredentialError) as caught:
        bearer_credential(values)
    assert caught.value.problem == problem


def test_bearer_credential_reads_the_key():
    assert bearer_credential(["Bearer gdr_abc_def"]) == "gdr_abc_def"
    assert bearer_credential(["bearer   key-1  "]) == "key-1"
