"""The shared HTTP client factory and its retry helper (used by the owner's remote evaluation)."""

from __future__ import annotations

import httpx
import pytest

from shared.http import get_with_retries, make_client


def scripted(*answers):
    """A transport answering with the given statuses (or raising the given exceptions), in order."""
    calls: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return httpx.Response(status, headers=headers, json={"ok": status == 200})

    return httpx.MockTransport(handler), calls


def test_client_sends_the_key_only_in_the_authorization_header():
    transport, calls = scripted(200)
    with make_client("http://consumer.test:8200", "k-123", transport=transport) as client:
        client.get("/v1/recommendations/ab", params={"k": 3})
    (request,) = calls
    assert request.headers["Authorization"] == "Bearer k-123" and "k-123" not in str(request.url)
    assert request.headers["User-Agent"].startswith("gdrec/")
    transport, calls = scripted(200)
    with make_client("http://consumer.test", transport=transport) as client:
        client.get("/")
    assert "Authorization" not in calls[0].headers


@pytest.mark.parametrize("url", ["consumer:8200", "ftp://x", "http://", "/relative"])
def test_client_refuses_a_url_that_is_not_http(url):
    with pytest.raises(ValueError, match="http"):
        make_client(url)


def test_retries_on_overload_honouring_retry_after():
    transport, calls = scripted((503, {"Retry-After": "2"}), 502, 200)
    slept: list[float] = []
    with make_client("http://c.test", transport=transport) as client:
        response = get_with_retries(client, "/x", attempts=3, backoff_s=0.5, sleep=slept.append)
    assert response.status_code == 200 and len(calls) == 3 and slept == [2.0, 1.0]


def test_gives_up_with_the_last_answer_or_error():
    transport, _ = scripted(503, 503)
    with make_client("http://c.test", transport=transport) as client:
        assert get_with_retries(client, "/x", attempts=2, sleep=lambda _: None).status_code == 503
    transport, calls = scripted(httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    with make_client("http://c.test", transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            get_with_retries(client, "/x", attempts=2, sleep=lambda _: None)
    assert len(calls) == 2


def test_client_errors_are_not_retried():
    transport, calls = scripted(404)
    with make_client("http://c.test", transport=transport) as client:
        assert get_with_retries(client, "/x", sleep=lambda _: None).status_code == 404
    assert len(calls) == 1
