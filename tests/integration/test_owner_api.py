"""The owner's export API in-process (TestClient, lifespan run): auth, pagination, page hashes, cursors across
restarts, bad input, the audit trail of every request, and a scan of every response for raw ids and histories.

The export is built directly (a random teacher and lists outside each user's training items, the
exclude-observed switch) under raw user ids that are easy to spot: `person-0007`."""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from data_owner.api import OwnerStartupError, create_app
from data_owner.api.cursors import decode_cursor, encode_cursor
from data_owner.audit import AuditWriteError, entry_hash, head_path, reseal_log, verify_log
from data_owner.export import build_export, user_token
from data_owner.gan.lists import GeneratedLists
from data_owner.keys import KeyStore
from data_owner.settings import ArtifactLayout, OwnerSettings, secret_fingerprint
from shared.models import BPR
from shared.schemas import AuditLogPage, ExportManifest, ExportPage, UserRecord

SECRET = "owner-api-test-secret-0123456789abcdef"
N_USERS, N_ITEMS, HISTORY, LENGTH = 37, 40, 6, 5
RAW_USERS = [f"person-{u:04d}" for u in range(N_USERS)]
ITEMS = [f"film-{i:03d}" for i in range(N_ITEMS)]


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No GDREC_OWNER_* variable or .env of the developer's shell leaks into the settings."""
    for name in list(os.environ):
        if name.startswith("GDREC_OWNER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def training_sets(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(N_ITEMS, size=HISTORY, replace=False)) for _ in range(N_USERS)]


def make_bundle(temperature: float = 2.0, consumer: str = "vendor"):
    """An export whose lists avoid each user's training items (include_observed=False)."""
    train = training_sets()
    rng = np.random.default_rng(1)
    scores = rng.random((N_USERS, N_ITEMS))
    for u, items in enumerate(train):
        scores[u, items] = -np.inf
    lists = np.argsort(-scores, axis=1)[:, :LENGTH]
    generated = GeneratedLists(items=lists, scores=np.take_along_axis(scores, lists, 1).astype(np.float32),
                               include_observed=False, seed=0, n_items=N_ITEMS)
    torch.manual_seed(0)
    teacher = BPR(N_USERS, N_ITEMS, dim=4)
    return build_export(teacher, generated, np.array(RAW_USERS, dtype=object), np.array(ITEMS, dtype=object),
                        temperature, SECRET.encode(), consumer)


def install_export(root: Path, bundle, consumer: str = "vendor") -> None:
    """Write an export where `gdrec-owner train` puts it (the export stage of the artifacts layout)."""
    folder = ArtifactLayout(root).stage("export")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "export.json").write_text(bundle.model_dump_json())
    summary = {"export_id": bundle.manifest.export_id, "consumer_id": consumer,
               "secret_fingerprint": secret_fingerprint(SECRET.encode())}
    (folder / "stage.json").write_text(json.dumps({"stage": "export", "key": "test", "summary": summary}))


@pytest.fixture
def settings(tmp_path) -> OwnerSettings:
    return OwnerSettings(environment="development", artifacts_dir=tmp_path / "artifacts", secret=SECRET)


@pytest.fixture
def bundle(settings):
    export = make_bundle()
    install_export(settings.artifacts_dir, export)
    return export


@pytest.fixture
def keys(settings, bundle) -> dict[str, str]:
    store = KeyStore(settings.keys_path)
    made = {
        "export": store.add("vendor", ["export"])[1],
        "admin": store.add("ops", ["admin"])[1],
        "both": store.add("vendor", ["admin", "export"])[1],
        "other_consumer": store.add("other-vendor", ["export"])[1],
    }
    record, made["revoked"] = store.add("vendor", ["export"])
    store.revoke(record.key_id)
    return made


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(settings, keys):
    with TestClient(create_app(settings)) as c:
        yield c


def walk(client: TestClient, key: str, limit: int) -> list[ExportPage]:
    pages, cursor = [], None
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = client.get("/v1/export/users", params=params, headers=bearer(key))
        assert response.status_code == 200, response.text
        page = ExportPage.model_validate_json(response.content)
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            return pages


# ---------------------------------------------------------------------------------------------------- health


def test_ready_is_503_until_the_export_is_loaded(settings, keys):
    app = create_app(settings)
    outside = TestClient(app)  # not entered: the lifespan has not run
    assert outside.get("/health").json() == {"status": "ok"}
    response = outside.get("/ready")
    assert response.status_code == 503 and "not loaded" in response.json()["detail"]
    assert outside.get("/v1/export/manifest", headers=bearer(keys["export"])).status_code == 503
    with TestClient(app) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json() == {"status": "ready",
                                                             "export_id": app.state.service.export.export_id}
    assert outside.get("/ready").status_code == 503  # shut down again


def test_openapi_documents_every_route(client):
    schema = client.get("/openapi.json").json()
    assert {"/health", "/ready", "/v1/export/manifest", "/v1/export/users", "/v1/audit/log"} <= set(schema["paths"])
    assert "bearer" in json.dumps(schema["components"]["securitySchemes"]).lower()
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({}, 401, "missing API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "malformed Authorization header"),
        ({"Authorization": "Bearer"}, 401, "malformed Authorization header"),
        (bearer("gdr_000000000000_" + "A" * 43), 401, "invalid API key"),
        (bearer("not-a-key"), 401, "invalid API key"),
    ],
)
def test_requests_without_a_valid_key_get_401(client, headers, status, detail):
    for path in ("/v1/export/manifest", "/v1/export/users", "/v1/audit/log"):
        response = client.get(path, headers=headers)
        assert response.status_code == status and detail in response.json()["detail"], (path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_key_with_one_changed_character_is_refused(client, keys):
    key = keys["export"]
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    response = client.get("/v1/export/manifest", headers=bearer(tampered))
    assert response.status_code == 401 and response.json()["detail"] == "invalid API key"


def test_revoked_key_gets_401_naming_the_revocation(client, keys):
    response = client.get("/v1/export/manifest", headers=bearer(keys["revoked"]))
    assert response.status_code == 401 and "was revoked at" in response.json()["detail"]


def test_a_request_checks_its_key_once(client, keys, monkeypatch):
    """The rate limiter identifies the caller by its key; the route reuses that check instead of hashing again."""
    store = client.app.state.service.keys
    calls = []
    original = store.authenticate
    monkeypatch.setattr(store, "authenticate", lambda presented: calls.append(presented) or original(presented))
    assert client.get("/v1/export/manifest", headers=bearer(keys["export"])).status_code == 200
    assert len(calls) == 1


def test_revocation_takes_effect_while_the_service_runs(client, settings, keys):
    assert client.get("/v1/export/manifest", headers=bearer(keys["export"])).status_code == 200
    store = KeyStore(settings.keys_path)  # what `gdrec-owner keys revoke` does, from another process
    store.revoke(next(k.key_id for k in store.list() if k.scopes == ("export",) and k.active
                      and k.consumer == "vendor"))
    response = client.get("/v1/export/manifest", headers=bearer(keys["export"]))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_a_damaged_key_file_is_a_503_not_a_bad_key_and_heals_when_fixed(client, settings, keys):
    good = settings.keys_path.read_text()
    settings.keys_path.write_text(good[: len(good) // 2])  # a truncated edit, while the service runs
    response = client.get("/v1/export/manifest", headers=bearer(keys["export"]))
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert "key store is unavailable" in response.json()["detail"]
    assert str(settings.keys_path) not in response.json()["detail"]  # the path stays in the server's log
    settings.keys_path.write_text(good)
    assert client.get("/v1/export/manifest", headers=bearer(keys["export"])).status_code == 200


def test_wrong_scope_gets_403(client, keys):
    response = client.get("/v1/export/users", headers=bearer(keys["admin"]))
    assert response.status_code == 403 and "lacks the 'export' scope" in response.json()["detail"]
    response = client.get("/v1/audit/log", headers=bearer(keys["export"]))
    assert response.status_code == 403 and "lacks the 'admin' scope" in response.json()["detail"]


def test_another_consumers_key_cannot_pull_this_export(client, keys):
    response = client.get("/v1/export/users", headers=bearer(keys["other_consumer"]))
    assert response.status_code == 403
    assert "belongs to consumer 'other-vendor'" in response.json()["detail"]
    assert "built for consumer 'vendor'" in response.json()["detail"]


# ---------------------------------------------------------------------------------------------------- pages


@pytest.mark.parametrize("limit", [1, 5, 36, 37, 1000])
def test_pagination_walks_every_user_exactly_once_and_page_hashes_verify(client, keys, bundle, limit):
    pages = walk(client, keys["export"], limit)
    assert len(pages) == math.ceil(N_USERS / limit)
    served = [record for page in pages for record in page.users]
    assert len(served) == N_USERS and {r.token for r in served} == {r.token for r in bundle.users}
    assert {r.token: r for r in served} == {r.token: r for r in bundle.users}  # records served unchanged
    for page in pages:
        assert page.hash_matches() and page.export_id == bundle.manifest.export_id
    assert [p.cursor for p in pages[1:]] == [p.next_cursor for p in pages[:-1]]


def test_a_changed_page_fails_its_hash(client, keys):
    page = walk(client, keys["export"], 10)[0]
    record = page.users[0]
    changed = UserRecord(token=record.token, items=record.items,
                         soft_targets=[min(1.0, record.soft_targets[0] + 1e-6), *record.soft_targets[1:]])
    assert not page.model_copy(update={"users": [changed, *page.users[1:]]}).hash_matches()


def test_users_are_served_in_token_order_not_the_owners_user_order(client, keys, bundle):
    tokens = [r.token for p in walk(client, keys["export"], 100) for r in p.users]
    assert tokens == sorted(tokens)
    assert [r.token for r in bundle.users] == tokens  # the export itself is token-sorted, not in raw-id order


def test_manifest_is_the_exports(client, keys, bundle):
    response = client.get("/v1/export/manifest", headers=bearer(keys["export"]))
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert ExportManifest.model_validate_json(response.content) == bundle.manifest
    typo = client.get("/v1/export/manifest?limt=5", headers=bearer(keys["export"]))
    assert typo.status_code == 422 and typo.json()["detail"] == "unknown query parameter 'limt'"
    twice = client.get("/v1/export/users?limit=1&limit=2", headers=bearer(keys["export"]))
    assert twice.status_code == 422
    assert twice.json()["detail"] == "query parameter 'limit' given 2 times: give each once"


def test_cursors_survive_a_restart(settings, keys):
    with TestClient(create_app(settings)) as first:
        page1 = ExportPage.model_validate_json(
            first.get("/v1/export/users", params={"limit": 8}, headers=bearer(keys["export"])).content)
        page2 = first.get("/v1/export/users", params={"limit": 8, "cursor": page1.next_cursor},
                          headers=bearer(keys["export"])).json()
    with TestClient(create_app(settings)) as second:  # a new process: nothing shared but the files
        again = second.get("/v1/export/users", params={"limit": 8, "cursor": page1.next_cursor},
                           headers=bearer(keys["export"]))
        assert again.status_code == 200 and again.json() == page2


def test_a_cursor_of_a_replaced_export_gets_409(settings, keys):
    with TestClient(create_app(settings)) as first:
        cursor = first.get("/v1/export/users", params={"limit": 8}, headers=bearer(keys["export"])).json()[
            "next_cursor"]
    install_export(settings.artifacts_dir, make_bundle(temperature=5.0))  # retrained: a new export id
    with TestClient(create_app(settings)) as second:
        response = second.get("/v1/export/users", params={"cursor": cursor}, headers=bearer(keys["export"]))
        assert response.status_code == 409 and "start again from the first page" in response.json()["detail"]


def test_cursor_round_trip_and_corruption():
    export_id = "ab" * 32
    cursor = encode_cursor(export_id, 1234)
    assert decode_cursor(cursor) == (export_id, 1234)
    for broken in (cursor[:-1], cursor[:-3], cursor[:-4], cursor + "A", cursor.replace(cursor[10], "Z", 1)):
        if broken != cursor:
            with pytest.raises(ValueError, match="cursor is"):
                decode_cursor(broken)


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ("limit=0", 422, "query parameter 'limit': Input should be greater than or equal to 1 (got '0')"),
        ("limit=1001", 422, "query parameter 'limit': Input should be less than or equal to 1000 (got '1001')"),
        ("limit=-3", 422, "query parameter 'limit': Input should be greater than or equal to 1"),
        ("limit=ten", 422, "query parameter 'limit': Input should be a valid integer"),
        ("limit=2.5", 422, "query parameter 'limit': Input should be a valid integer"),
        # the form of a cursor is in the API schema (422); a cursor of that form the service did not issue is a 400
        ("cursor=", 422, "query parameter 'cursor': String should have at least 104 characters"),
        ("cursor=Y", 422, "query parameter 'cursor': String should have at least 104 characters"),
        ("cursor=bm90IGEgY3Vyc29y", 422, "query parameter 'cursor': String should have at least 104 characters"),
        ("cursor=" + "A" * 300, 422, "query parameter 'cursor': String should have at most 119 characters"),
        ("cursor=" + "%24" * 110, 422, "query parameter 'cursor': String should match pattern"),
        ("cursor=" + base64.urlsafe_b64encode(b"x" * 80).decode().rstrip("="), 400,
         "cursor is malformed (truncated, or not a cursor of this service)"),
        ("cursor=" + "A" * 105, 400, "cursor is malformed (not base64url)"),
        ("cusor=abc", 422, "unknown query parameter 'cusor'"),
    ],
)
def test_malformed_queries_get_4xx_with_a_precise_detail(client, keys, query, status, detail):
    response = client.get(f"/v1/export/users?{query}", headers=bearer(keys["export"]))
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_cursor_past_the_end_and_with_wrong_check_digits(client, keys, bundle):
    export_id = bundle.manifest.export_id
    past = client.get("/v1/export/users", params={"cursor": encode_cursor(export_id, N_USERS)},
                      headers=bearer(keys["export"]))
    assert past.status_code == 400 and f"position {N_USERS} of {N_USERS} users" in past.json()["detail"]
    forged = base64.urlsafe_b64encode(f"c1:{export_id}:3:00000000".encode()).rstrip(b"=").decode()
    response = client.get("/v1/export/users", params={"cursor": forged}, headers=bearer(keys["export"]))
    assert response.status_code == 400 and "check digits" in response.json()["detail"]


@pytest.mark.parametrize(("query", "detail"), [("after=-1", "query parameter 'after'"),
                                               ("limit=0", "query parameter 'limit'"),
                                               ("after=x", "Input should be a valid integer")])
def test_malformed_audit_queries_get_422(client, keys, query, detail):
    response = client.get(f"/v1/audit/log?{query}", headers=bearer(keys["admin"]))
    assert response.status_code == 422 and detail in response.json()["detail"]


def test_unknown_routes_and_methods(client, keys):
    response = client.get("/v1/export/everything", headers=bearer(keys["export"]))
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
    response = client.post("/v1/export/users", headers=bearer(keys["export"]))
    assert response.status_code == 405 and "detail" in response.json()


def test_missing_artifacts_give_a_clear_startup_error(tmp_path):
    settings = OwnerSettings(environment="development", artifacts_dir=tmp_path / "nowhere", secret=SECRET)
    with pytest.raises(OwnerStartupError, match="does not exist: run `gdrec-owner train"):
        with TestClient(create_app(settings)):
            pass
    (tmp_path / "empty").mkdir()
    settings = OwnerSettings(environment="development", artifacts_dir=tmp_path / "empty", secret=SECRET)
    with pytest.raises(OwnerStartupError, match="no finished export"):
        with TestClient(create_app(settings)):
            pass


def test_serve_command_reports_missing_artifacts_without_a_traceback(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from data_owner.cli import app

    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "development")
    result = CliRunner().invoke(app, ["serve", "--artifacts", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist: run `gdrec-owner train" in result.output and "Traceback" not in result.output


def test_serve_command_starts_uvicorn_on_the_configured_address(settings, keys, monkeypatch):
    from typer.testing import CliRunner

    from data_owner.cli import app

    started = {}
    monkeypatch.setattr("uvicorn.run", lambda asgi, **kwargs: started.update(app=asgi, **kwargs))
    monkeypatch.setenv("GDREC_OWNER_SECRET", SECRET)
    monkeypatch.setenv("GDREC_OWNER_ENVIRONMENT", "development")
    result = CliRunner().invoke(app, ["serve", "--artifacts", str(settings.artifacts_dir), "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert started["host"] == "127.0.0.1" and started["port"] == 8765 and started["workers"] == 1
    assert started["app"].title == "GD-REC data owner"


# ---------------------------------------------------------------------------------------------------- audit


def test_every_served_request_is_one_audit_line(client, settings, keys, bundle):
    client.get("/v1/export/manifest", headers=bearer(keys["export"]))
    pages = walk(client, keys["export"], 10)
    client.get("/v1/export/users", headers=bearer(keys["admin"]))  # refused: not served, not recorded
    client.get("/v1/export/users?limit=0", headers=bearer(keys["export"]))  # refused too
    lines = settings.audit_path.read_text().splitlines()
    assert len(lines) == 1 + len(pages)
    entries = [json.loads(line) for line in lines]
    assert entries[0]["endpoint"] == "GET /v1/export/manifest" and entries[0]["users"] == 0
    for entry, page in zip(entries[1:], pages, strict=True):
        assert entry["endpoint"] == "GET /v1/export/users" and entry["cursor"] == page.cursor
        assert entry["users"] == len(page.users) and entry["items"] == sum(len(r.items) for r in page.users)
        assert entry["payload_sha256"] == page.sha256 and entry["export_id"] == bundle.manifest.export_id
        assert entry["consumer"] == "vendor" and entry["privacy"] == {"include_observed": False,
                                                                      "randomized_response_epsilon": None}
    assert sum(e["users"] for e in entries) == N_USERS
    report = verify_log(settings.audit_path, SECRET.encode())
    assert report.ok and report.lines == len(lines), report.problems


def test_audit_log_route_pages_the_entries_for_admins(client, keys):
    walk(client, keys["export"], 5)  # 8 pages: 8 lines
    first = AuditLogPage.model_validate_json(
        client.get("/v1/audit/log", params={"limit": 3}, headers=bearer(keys["admin"])).content)
    assert [e.seq for e in first.entries] == [1, 2, 3] and first.next_after == 3 and first.head.seq == 8
    rest = AuditLogPage.model_validate_json(
        client.get("/v1/audit/log", params={"after": 3, "limit": 100}, headers=bearer(keys["both"])).content)
    assert [e.seq for e in rest.entries] == [4, 5, 6, 7, 8] and rest.next_after is None
    assert rest.entries[-1].hash == rest.head.hash
    assert all(b.prev_hash == a.hash for a, b in zip(first.entries + rest.entries,
                                                     (first.entries + rest.entries)[1:], strict=False))


def test_nothing_is_served_when_the_audit_log_cannot_record(client, keys, monkeypatch):
    def broken(**_):
        raise AuditWriteError("disk full")

    monkeypatch.setattr(client.app.state.service.audit, "append", broken)
    response = client.get("/v1/export/users", headers=bearer(keys["export"]))
    assert response.status_code == 503 and "nothing was served" in response.json()["detail"]
    assert "users" not in response.json()


def test_a_half_written_audit_line_is_set_aside_at_start(settings, keys):
    with TestClient(create_app(settings)) as client:
        walk(client, keys["export"], 10)  # 4 lines
    log_path = settings.audit_path
    with open(log_path, "ab") as handle:  # a crash in the middle of the 5th write
        handle.write(b'{"seq":5,"time":"2026-01-01T00:00:00+00:00","key_id":"abc')
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/export/manifest", headers=bearer(keys["export"])).status_code == 200
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5] and entries[4]["endpoint"] == "GET /v1/export/manifest"
    assert verify_log(log_path, SECRET.encode()).ok
    torn = list(log_path.parent.glob("audit.jsonl.torn-*"))
    assert len(torn) == 1 and torn[0].read_bytes().startswith(b'{"seq":5')


def test_a_tampered_audit_log_stops_the_service_from_starting(settings, keys):
    with TestClient(create_app(settings)) as client:
        walk(client, keys["export"], 10)
    lines = settings.audit_path.read_text().splitlines(keepends=True)
    settings.audit_path.write_text("".join(lines[:1] + lines[2:]))  # line 2 deleted
    with pytest.raises(OwnerStartupError, match="fails verification .*line 2"):
        with TestClient(create_app(settings)):
            pass


def test_a_deleted_audit_head_stops_the_service_until_a_reseal_records_it(settings, keys):
    with TestClient(create_app(settings)) as client:
        walk(client, keys["export"], 10)  # 4 entries
    head_path(settings.audit_path).unlink()
    with pytest.raises(OwnerStartupError, match="audit.jsonl.head: missing.*gdrec-owner audit reseal"):
        with TestClient(create_app(settings)):
            pass
    reseal_log(settings.audit_path, SECRET.encode(), "head lost in a restore")
    with TestClient(create_app(settings)) as client:
        page = client.get("/v1/audit/log", headers=bearer(keys["admin"]))
    assert page.status_code == 200, page.text
    body = page.json()
    assert [e["kind"] for e in body["entries"]] == ["export"] * 4 + ["reseal"]
    assert body["entries"][-1]["reason"] == "head lost in a restore" and "key_id" not in body["entries"][-1]
    assert all(e["hash"] == entry_hash(e) for e in body["entries"])  # recomputable from the API's JSON
    assert body["head"] == verify_log(settings.audit_path, SECRET.encode()).head.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------------- privacy


def test_no_response_carries_a_raw_user_id_or_a_users_history(settings, keys, bundle):
    """Every endpoint, successes and errors, with every key: no raw id, no field outside the schemas, and no
    user's list holds one of their training items (the exclude-observed switch of this export)."""
    seen: list[str] = []  # every body and every header of every response
    with TestClient(create_app(settings)) as client:
        requests = [("GET", "/health", {}), ("GET", "/ready", {}), ("GET", "/openapi.json", {}),
                    ("GET", "/nowhere", {}), ("POST", "/v1/export/users", {})]
        for key in keys.values():
            for path in ("/v1/export/manifest", "/v1/export/users?limit=1000", "/v1/export/users?limit=0",
                         "/v1/export/users?cursor=bad!", "/v1/audit/log"):
                requests.append(("GET", path, bearer(key)))
        for method, path, headers in requests:
            response = client.request(method, path, headers=headers)
            seen += [response.text, json.dumps(dict(response.headers))]
        for page in walk(client, keys["export"], 7):
            seen.append(page.model_dump_json())
        full = client.get("/v1/export/users", params={"limit": 1000}, headers=bearer(keys["export"])).json()
    text = "\n".join(seen)
    assert not [raw for raw in RAW_USERS if raw in text]
    assert "person-" not in text and SECRET not in text
    for forbidden_field in ('"user_id"', '"raw', '"history"', '"train'):
        assert forbidden_field not in text
    # the served records: exactly the schema's fields, and none of a user's own training items
    assert set(full) == set(ExportPage.model_fields)
    train = training_sets()
    user_of = {user_token(SECRET.encode(), "vendor", raw): u for u, raw in enumerate(RAW_USERS)}
    for record in full["users"]:
        assert set(record) == {"token", "items", "soft_targets"}
        own = {ITEMS[i] for i in train[user_of[record["token"]]]}
        assert not own & set(record["items"])
        assert " ".join(sorted(own)) not in text and json.dumps(sorted(own)) not in text
