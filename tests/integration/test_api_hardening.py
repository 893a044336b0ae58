"""Both services under hostile requests: bodies over the limit (413 before anything else reads them, by
Content-Length and while a chunked body streams into a real server), authentication before any validation (no 422
for a caller without a key), OpenAPI documents that say what the services do, rate limits per key and per client
address (429 with Retry-After, which the project's own clients wait out), and a refused repeated Authorization
header."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import threading
import time
import tracemalloc

import pytest
import uvicorn
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from data_owner.api import create_app as create_owner_app
from data_owner.api.cursors import encode_cursor
from data_owner.keys import KeyStore
from data_owner.settings import OwnerSettings
from model_consumer.api import create_app as create_consumer_app
from model_consumer.client import pull
from model_consumer.settings import ConsumerLayout, ConsumerSettings
from model_consumer.store import ExportStore
from model_consumer.students import distill_and_publish
from shared.http import REPEATED_AUTHORIZATION
from shared.schemas import MAX_BATCH_TOKENS, MAX_EXCLUDED_ITEMS, MAX_ITEM_ID_CHARS
from tests.integration.test_consumer_api import ADMIN_KEY, API_KEY, TINY
from tests.integration.test_owner_api import N_USERS, SECRET, install_export, make_bundle
from tests.unit.test_consumer_pull import synthetic_export

MB = 1 << 20
HUGE = 30 * MB
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No GDREC_* variable or .env of the developer's shell leaks into the settings."""
    for name in list(os.environ):
        if name.startswith(("GDREC_OWNER_", "GDREC_CONSUMER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def owner_settings(tmp_path, **extra) -> OwnerSettings:
    settings = OwnerSettings(environment="development", artifacts_dir=tmp_path / "artifacts", secret=SECRET,
                             **extra)
    if not settings.layout.export_file.exists():
        install_export(settings.artifacts_dir, make_bundle())
    return settings


@pytest.fixture
def owner_keys(tmp_path) -> dict[str, str]:
    store = KeyStore(owner_settings(tmp_path).keys_path)
    return {"export": store.add("vendor", ["export"])[1], "admin": store.add("ops", ["admin"])[1],
            "other": store.add("vendor", ["export"])[1]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("consumer")
    distill_and_publish(synthetic_export(), TINY, ConsumerLayout(root))
    return root


def consumer_settings(root, **extra) -> ConsumerSettings:
    return ConsumerSettings(**{"environment": "development", "data_dir": root, "api_key": API_KEY,
                               "admin_key": ADMIN_KEY, "max_k": 100, **extra})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route of an app, path parameters filled in, plus the framework's own pages and a
    path that matches nothing."""
    fill = {"{token}": "f" * 64, "{item_id}": "item-001"}
    routes = [("GET", "/openapi.json"), ("GET", "/docs"), ("POST", "/nowhere")]
    for route in app.routes:
        if isinstance(route, APIRoute):
            path = route.path
            for name, value in fill.items():
                path = path.replace(name, value)
            routes += [(method, path) for method in sorted(route.methods)]
    return routes


# ------------------------------------------------------------------------------------------------- body limit


def test_every_route_of_both_services_refuses_a_30_mb_body_before_authentication(tmp_path, owner_keys, model_dir):
    body = b"x" * HUGE
    apps = [(create_owner_app(owner_settings(tmp_path)), 16 * 1024),
            (create_consumer_app(consumer_settings(model_dir)), 256 * 1024)]
    for app, limit in apps:
        with TestClient(app) as client:
            for method, path in every_route(app):
                started = time.perf_counter()
                response = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
                elapsed = time.perf_counter() - started
                assert response.status_code == 413, (method, path, response.text)
                assert response.json() == {"detail": f"request body too large: Content-Length is {HUGE} bytes, and "
                                                     f"this service accepts at most {limit} bytes (its "
                                                     "max_body_bytes setting)"}
                assert response.headers["Connection"] == "close" and elapsed < 1.0, (method, path, elapsed)


@contextlib.contextmanager
def serving(app):
    """`app` behind a real uvicorn on a free loopback port (in a thread): yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def stream_body(port: int, method: str, path: str, total: int, *, chunked: bool) -> tuple[int, bytes, int, float]:
    """Send a `total`-byte body in 64 KiB pieces (chunked, or announced by Content-Length) and stop as soon as the
    server answers: (status, raw answer, bytes sent, seconds from the first body byte to the answer)."""
    piece = 64 * 1024
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    data = b"[" * piece
    frame = f"{piece:x}\r\n".encode() + data + b"\r\n" if chunked else data
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode())
        conn.setblocking(False)
        sent, answer, started = 0, b"", time.perf_counter()
        pending = memoryview(b"")
        while True:
            readable, writable, _ = select.select([conn], [conn] if sent < total else [], [], 5)
            if readable:
                break
            if not writable:
                pytest.fail(f"no answer after {sent} bytes")
            if not pending:
                pending = memoryview(frame)
            try:
                written = conn.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            pending = pending[written:]
            if not pending:
                sent += piece
        elapsed = time.perf_counter() - started
        conn.setblocking(True)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
    return int(answer.split(b" ", 2)[1]), answer, sent, elapsed


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_streamed_30_mb_body_is_refused_within_milliseconds_without_being_read(tmp_path, model_dir, chunked):
    """A real server: the answer comes while the client is still sending, the server reads at most the limit and
    one piece of the body, and its memory does not grow by the body's size (traced in this process, which runs
    the server)."""
    cases = [(create_owner_app(owner_settings(tmp_path)), "GET", "/v1/export/users"),
             (create_consumer_app(consumer_settings(model_dir)), "POST", "/v1/recommendations/batch")]
    for app, method, path in cases:
        with serving(app) as port:
            tracemalloc.start()
            try:
                status, answer, sent, elapsed = stream_body(port, method, path, HUGE, chunked=chunked)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert status == 413 and b"request body too large" in answer, answer[:300]
        assert sent < 8 * MB, f"{path}: the client sent {sent} bytes before the answer"
        assert peak < 4 * MB, f"{path}: traced memory peaked at {peak} bytes"
        assert elapsed < 2.0, f"{path}: the answer took {elapsed:.3f} s"


def test_a_body_at_the_limit_is_read_and_one_byte_more_is_not(model_dir):
    body = json.dumps({"tokens": ["0" * 64] * 4, "k": 3}).encode()
    for extra in (0, 1):
        app = create_consumer_app(consumer_settings(model_dir, max_body_bytes=len(body) - extra))
        with TestClient(app) as client:
            response = client.post("/v1/recommendations/batch", content=body,
                                   headers={**AUTH, "Content-Type": "application/json"})
            assert response.status_code == (200 if extra == 0 else 413), response.text


@pytest.mark.parametrize(("body", "detail"), [
    ({"tokens": ["0" * 32] * (MAX_BATCH_TOKENS + 1)}, f"List should have at most {MAX_BATCH_TOKENS} items"),
    ({"tokens": ["0" * 32], "exclude": ["i"] * (MAX_EXCLUDED_ITEMS + 1)},
     f"body parameter 'exclude': List should have at most {MAX_EXCLUDED_ITEMS} items"),
    ({"tokens": ["0" * 32], "exclude": ["x" * (MAX_ITEM_ID_CHARS + 1)]},
     f"body parameter 'exclude.0': String should have at most {MAX_ITEM_ID_CHARS} characters (got 'xxxx"),
    ({"tokens": ["0" * 32], "exclude": [""]}, "body parameter 'exclude.0': String should have at least 1 character"),
    ({"tokens": ["0" * 129]}, "body parameter 'tokens.0': String should have at most 128 characters"),
])
def test_the_batch_schema_bounds_tokens_and_exclusions(model_dir, body, detail):
    app = create_consumer_app(consumer_settings(model_dir, max_body_bytes=8 * MB, max_batch=MAX_BATCH_TOKENS))
    with TestClient(app) as client:
        response = client.post("/v1/recommendations/batch", json=body, headers=AUTH)
    assert response.status_code == 422 and detail in response.json()["detail"], response.text[:500]
    assert len(response.json()["detail"]) < 500  # the refused values are quoted short


def test_the_query_bounds_exclusions_too(model_dir):
    token = synthetic_export().users[0].token
    with TestClient(create_consumer_app(consumer_settings(model_dir))) as client:
        response = client.get(f"/v1/recommendations/{token}", params={"exclude": "x" * 300}, headers=AUTH)
        assert response.status_code == 422
        assert "query parameter 'exclude.0': String should have at most 256 characters" in response.json()["detail"]


# ------------------------------------------------------------------------------------------ authentication first


OWNER_QUERIES = ["limit=1&limit=2", "limit=0", "limit=ten", "cursor=0", "cursor=" + "A" * 110, "bogus=1",
                 "after=-1", "x=1&x=2"]


@pytest.mark.parametrize("query", OWNER_QUERIES)
@pytest.mark.parametrize("path", ["/v1/export/manifest", "/v1/export/users", "/v1/audit/log"])
def test_the_owner_answers_401_before_looking_at_the_query(tmp_path, owner_keys, path, query):
    with TestClient(create_owner_app(owner_settings(tmp_path))) as client:
        missing = client.get(f"{path}?{query}")
        wrong = client.get(f"{path}?{query}", headers=bearer("gdr_000000000000_" + "A" * 43))
    assert missing.status_code == 401 and missing.json()["detail"].startswith("missing API key"), missing.text
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key", wrong.text


def test_the_owner_checks_the_scope_before_the_query(tmp_path, owner_keys):
    with TestClient(create_owner_app(owner_settings(tmp_path))) as client:
        response = client.get("/v1/audit/log?limit=1&limit=2", headers=bearer(owner_keys["export"]))
        assert response.status_code == 403 and "lacks the 'admin' scope" in response.json()["detail"]
        response = client.get("/v1/audit/log?limit=1&limit=2", headers=bearer(owner_keys["admin"]))
        assert response.status_code == 422 and "given 2 times" in response.json()["detail"]


JSON = {"Content-Type": "application/json"}
CONSUMER_REQUESTS = [
    ("GET", "/v1/recommendations/{token}?k=1&k=2", {}),
    ("GET", "/v1/recommendations/{token}?k=0", {}),
    ("GET", "/v1/recommendations/{token}?k=100000", {}),
    ("GET", "/v1/recommendations/{token}?limt=3", {}),
    ("GET", "/v1/items/item-001/similar?k=-1", {}),
    ("GET", "/v1/model?x=1", {}),
    ("POST", "/v1/admin/reload?x=1&x=2", {}),
    ("POST", "/v1/recommendations/batch", {"content": b'{"tokens": [,', "headers": JSON}),
    ("POST", "/v1/recommendations/batch", {"content": b"\xff\xfe", "headers": JSON}),
    ("POST", "/v1/recommendations/batch", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
    ("POST", "/v1/recommendations/batch", {"json": {"tokens": [], "k": True}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), CONSUMER_REQUESTS)
def test_the_consumer_answers_401_before_looking_at_the_query_or_the_body(model_dir, method, path, kwargs):
    path = path.format(token=synthetic_export().users[0].token)
    with TestClient(create_consumer_app(consumer_settings(model_dir))) as client:
        missing = client.request(method, path, **kwargs)
        headers = {**kwargs.get("headers", {}), "Authorization": "Bearer wrong-key"}
        wrong = client.request(method, path, **{**kwargs, "headers": headers})
    what = "admin key" if "/admin/" in path else "API key"
    assert missing.status_code == 401 and missing.json()["detail"].startswith(f"missing {what}"), missing.text
    assert wrong.status_code == 401 and wrong.json()["detail"] == f"invalid {what}", wrong.text


def test_with_a_key_the_same_bad_requests_get_their_precise_4xx(model_dir):
    token = synthetic_export().users[0].token
    with TestClient(create_consumer_app(consumer_settings(model_dir))) as client:
        answers = [client.request(method, path.format(token=token),
                                  **{**kwargs, "headers": {**kwargs.get("headers", {}),
                                                           **(ADMIN if "/admin/" in path else AUTH)}})
                   for method, path, kwargs in CONSUMER_REQUESTS]
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 422, 422, 422, 422, 400, 422, 422]
    assert "not UTF-8" in answers[8].json()["detail"] and "Content-Type 'text/plain'" in answers[9].json()["detail"]


# ------------------------------------------------------------------------------------------------------ OpenAPI


def test_the_documented_errors_are_the_detail_objects_the_services_send(tmp_path, owner_keys, model_dir):
    for app in (create_owner_app(owner_settings(tmp_path)), create_consumer_app(consumer_settings(model_dir))):
        schema = TestClient(app).get("/openapi.json").json()
        assert {"HTTPValidationError", "ValidationError"}.isdisjoint(schema["components"]["schemas"])
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                for status in ("413", "422", "429"):
                    body = operation["responses"][status]["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
                assert "Retry-After" in operation["responses"]["429"]["headers"]
        assert schema["components"]["schemas"]["ErrorResponse"]["properties"]["detail"]["type"] == "string"


def test_the_consumer_schema_states_its_k_and_batch_limits(model_dir):
    app = create_consumer_app(consumer_settings(model_dir, max_k=77, max_batch=33))
    schema = TestClient(app).get("/openapi.json").json()
    for path in ("/v1/recommendations/{token}", "/v1/items/{item_id}/similar"):
        (k,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "k"]
        assert k["schema"]["maximum"] == 77 and k["schema"]["minimum"] == 1
    batch = schema["paths"]["/v1/recommendations/batch"]["post"]
    body = batch["requestBody"]["content"]["application/json"]["schema"]
    assert batch["requestBody"]["required"] is True
    assert body["properties"]["k"]["maximum"] == 77 and body["properties"]["tokens"]["maxItems"] == 33
    assert body["properties"]["exclude"]["maxItems"] == MAX_EXCLUDED_ITEMS
    assert body["properties"]["exclude"]["items"]["maxLength"] == MAX_ITEM_ID_CHARS
    assert "400" in batch["responses"] and "UTF-8" in batch["responses"]["400"]["description"]


def test_the_owner_schema_states_the_form_of_a_cursor_and_its_400(tmp_path, owner_keys):
    with TestClient(create_owner_app(owner_settings(tmp_path))) as client:
        operation = client.get("/openapi.json").json()["paths"]["/v1/export/users"]["get"]
        (cursor,) = [p for p in operation["parameters"] if p["name"] == "cursor"]
        string = next(s for s in cursor["schema"]["anyOf"] if s.get("type") == "string")
        assert "400" in operation["responses"]
        real = client.get("/v1/export/users?limit=1", headers=bearer(owner_keys["export"])).json()["next_cursor"]
        for offset in (1, 10**11):  # every cursor the service hands out has the documented form
            issued = encode_cursor("ab" * 32, offset)
            assert re.fullmatch(string["pattern"], issued) and string["minLength"] <= len(issued) <= string["maxLength"]
        assert re.fullmatch(string["pattern"], real)
        zero = client.get("/v1/export/users?cursor=0", headers=bearer(owner_keys["export"]))
        assert zero.status_code == 422 and "query parameter 'cursor'" in zero.json()["detail"]


def test_options_and_other_methods_on_the_batch_route_name_post(model_dir):
    with TestClient(create_consumer_app(consumer_settings(model_dir))) as client:
        for method in ("OPTIONS", "GET", "PUT", "DELETE"):
            response = client.request(method, "/v1/recommendations/batch", headers=AUTH)
            assert response.status_code == 405 and response.headers["Allow"] == "POST", (method, response.headers)
        assert client.options("/v1/recommendations/batch").headers["Allow"] == "POST"  # no key needed for that


# --------------------------------------------------------------------------------------------------- rate limits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def with_clock(app) -> FakeClock:
    clock = FakeClock()
    for limiter in app.state.rate_limiters.values():
        if limiter is not None:
            limiter.clock = clock
    return clock


def test_the_owner_limits_each_key_and_answers_429_with_retry_after(tmp_path, owner_keys):
    settings = owner_settings(tmp_path, key_rate_per_s=2, key_burst=3)
    app = create_owner_app(settings)
    clock = with_clock(app)
    with TestClient(app) as client:
        for _ in range(3):
            assert client.get("/v1/export/manifest", headers=bearer(owner_keys["export"])).status_code == 200
        refused = client.get("/v1/export/manifest", headers=bearer(owner_keys["export"]))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.json() == {"detail": "too many requests from this API key: at most 2 per second (bursts of 3); "
                                            "retry after 1 s"}
        assert client.get("/v1/export/manifest", headers=bearer(owner_keys["other"])).status_code == 200
        clock.sleep(0.5)  # one token back
        assert client.get("/v1/export/manifest", headers=bearer(owner_keys["export"])).status_code == 200
        assert client.get("/v1/export/manifest", headers=bearer(owner_keys["export"])).status_code == 429
    served = settings.audit_path.read_text().splitlines()
    assert len(served) == 5  # a refused request is not served, so not recorded


def test_requests_without_a_valid_key_share_their_address_budget(tmp_path, owner_keys):
    app = create_owner_app(owner_settings(tmp_path, address_rate_per_s=1, address_burst=2))
    clock = with_clock(app)
    with TestClient(app) as client:
        assert client.get("/v1/export/manifest").status_code == 401
        assert client.get("/v1/export/manifest", headers=bearer("gdr_000000000000_" + "B" * 43)).status_code == 401
        for headers in ({}, bearer("gdr_111111111111_" + "C" * 43), {"Authorization": "Basic eDp5"}):
            refused = client.get("/v1/export/manifest", headers=headers)  # a fresh made-up key each time: same budget
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1", refused.text
            assert "from testclient without a valid API key" in refused.json()["detail"]
        assert client.get("/health").status_code == 429  # unauthenticated pages count too
        assert client.get("/v1/export/manifest", headers=bearer(owner_keys["export"])).status_code == 200
        clock.sleep(1.0)
        assert client.get("/health").status_code == 200


def test_the_consumer_limits_keys_and_addresses_apart(model_dir):
    token = synthetic_export().users[0].token
    app = create_consumer_app(consumer_settings(model_dir, key_rate_per_s=1, key_burst=2, address_rate_per_s=1,
                                                address_burst=1))
    clock = with_clock(app)
    with TestClient(app) as client:
        assert [client.get(f"/v1/recommendations/{token}", headers=AUTH).status_code for _ in range(3)] == \
            [200, 200, 429]
        assert client.post("/v1/admin/reload", headers=ADMIN).status_code == 200  # the admin key has its own budget
        assert client.get("/health").status_code == 200
        assert client.get("/health").status_code == 429
        clock.sleep(2.0)
        assert client.get(f"/v1/recommendations/{token}", headers=AUTH).status_code == 200


def test_an_open_consumer_limits_each_address_at_the_key_rate(model_dir):
    app = create_consumer_app(consumer_settings(model_dir, api_key=None, key_rate_per_s=1, key_burst=2))
    with_clock(app)
    with TestClient(app) as client:
        codes = [client.get("/v1/model").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert "testclient (the API needs no key)" in client.get("/v1/model").json()["detail"]


def test_a_zero_rate_turns_a_limit_off(tmp_path, owner_keys):
    app = create_owner_app(owner_settings(tmp_path, key_rate_per_s=0, key_burst=1, address_rate_per_s=0))
    assert app.state.rate_limiters == {"key": None, "address": None}
    with TestClient(app) as client:
        assert all(client.get("/v1/export/manifest", headers=bearer(owner_keys["export"])).status_code == 200
                   for _ in range(20))


def test_the_pull_client_waits_out_429s_and_pulls_the_whole_export(tmp_path, owner_keys):
    """A tight limit (2 per second, bursts of 2) against a 9-request pull: the client sleeps for Retry-After and
    gets every page."""
    app = create_owner_app(owner_settings(tmp_path, key_rate_per_s=2, key_burst=2))
    clock = with_clock(app)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.sleep(seconds)

    with TestClient(app, headers=bearer(owner_keys["export"])) as client:
        result = pull(client, ExportStore(tmp_path / "pulled"), limit=5, sleep=sleep)
    assert result.complete and result.users == N_USERS and result.pages == 8
    assert slept and all(delay == 1.0 for delay in slept)


# ------------------------------------------------------------------------------------ a repeated Authorization


def test_two_authorization_headers_are_refused_by_both_services(tmp_path, owner_keys, model_dir):
    owner_key = bearer(owner_keys["export"])["Authorization"]
    with TestClient(create_owner_app(owner_settings(tmp_path))) as client:
        for second in (owner_key, "Bearer gdr_000000000000_" + "A" * 43):
            response = client.get("/v1/export/manifest", headers=[("Authorization", owner_key),
                                                                   ("Authorization", second)])
            assert response.status_code == 401 and response.json()["detail"] == REPEATED_AUTHORIZATION
            assert response.headers["WWW-Authenticate"] == "Bearer"
    token = synthetic_export().users[0].token
    with TestClient(create_consumer_app(consumer_settings(model_dir))) as client:
        for path, key in ((f"/v1/recommendations/{token}", AUTH), ("/v1/admin/reload", ADMIN)):
            response = client.request("POST" if "admin" in path else "GET", path,
                                      headers=[("Authorization", key["Authorization"]), ("Authorization", "Bearer x")])
            assert response.status_code == 401 and response.json()["detail"] == REPEATED_AUTHORIZATION
