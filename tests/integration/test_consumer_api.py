"""The consumer's API over a student distilled from a tiny synthetic export: probes, recommendations (exclusions,
404 for an unknown token, 422 for k out of range), batch, similar items, the model card, Prometheus metrics (on a
port of their own), keys, and an atomic model swap on POST /v1/admin/reload while requests are being served."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from model_consumer.api import create_app
from model_consumer.settings import ConsumerLayout, ConsumerSettings
from model_consumer.students import distill_and_publish
from shared.distillation import DistillConfig
from shared.schemas import BatchRecommendations, ModelCard, RecommendationList, SimilarItems
from tests.unit.test_consumer_pull import synthetic_export

API_KEY = "consumer-api-key-0123456789"
ADMIN_KEY = "consumer-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TINY = DistillConfig(epochs=3, eval_every=1, batch_size=64, progress=False)


@pytest.fixture(scope="module")
def bundle():
    return synthetic_export()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, bundle):
    root = tmp_path_factory.mktemp("consumer")
    distill_and_publish(bundle, TINY, ConsumerLayout(root))
    return root


def settings(root, **extra) -> ConsumerSettings:
    return ConsumerSettings(**{"_env_file": None, "environment": "development", "data_dir": root, "api_key": API_KEY,
                               "admin_key": ADMIN_KEY, "max_k": 100, "metrics_port": 0, **extra})


def metrics(client: TestClient) -> str:
    """The Prometheus text of a running app, from its metrics port."""
    host, port = client.app.state.metrics_address
    response = httpx.get(f"http://{host}:{port}/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


@pytest.fixture(scope="module")
def client(data_dir):
    with TestClient(create_app(settings(data_dir))) as client:
        yield client


def test_probes_and_model_card(client, bundle):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    card = ModelCard.model_validate(client.get("/v1/model", headers=AUTH).json())
    assert card.model_version == ready.json()["model_version"]
    assert card.family == "bpr" and card.export_id == bundle.manifest.export_id
    assert card.teacher_parameters == bundle.manifest.teacher.num_parameters
    assert 0.4 < card.parameter_ratio < 0.6 and card.lam == 0.7 and card.temperature == 2.0


def test_recommendations_follow_the_contract_and_leave_out_what_the_caller_asks(client, bundle):
    token = bundle.users[0].token
    answer = RecommendationList.model_validate(client.get(f"/v1/recommendations/{token}?k=5", headers=AUTH).json())
    assert answer.token == token and len(answer.items) == 5
    scores = [item.score for item in answer.items]
    assert scores == sorted(scores, reverse=True)
    left_out = [answer.items[0].item_id, answer.items[2].item_id]
    again = client.get(f"/v1/recommendations/{token}", params={"k": 5, "exclude": left_out}, headers=AUTH).json()
    assert not set(left_out) & {item["item_id"] for item in again["items"]} and len(again["items"]) == 5
    everything = client.get(f"/v1/recommendations/{token}?k=100", headers=AUTH).json()
    assert len(everything["items"]) == len(bundle.manifest.item_ids)


@pytest.mark.parametrize(("path", "status", "detail"), [
    ("/v1/recommendations/" + "f" * 32 + "?k=5", 404, "unknown user token ffffffffffff"),
    ("/v1/recommendations/{token}?k=0", 422, "query parameter 'k'"),
    ("/v1/recommendations/{token}?k=101", 422, "must be at most 100"),
    ("/v1/recommendations/{token}?k=ten", 422, "query parameter 'k'"),
    ("/v1/items/nope/similar?k=3", 404, "unknown item id 'nope'"),
    ("/v1/items/item-000/similar?k=1000", 422, "must be at most 100"),
    ("/v1/recommendations/{token}?limt=3", 422, "unknown query parameter 'limt'"),
    ("/v1/items/item-000/similar?foo=1", 422, "unknown query parameter 'foo'"),
    ("/v1/model?x=1", 422, "unknown query parameter 'x'"),
    ("/v1/recommendations/{token}?k=1&k=2", 422, "query parameter 'k' given 2 times: give each once"),
])
def test_bad_requests_get_a_precise_detail(client, bundle, path, status, detail):
    response = client.get(path.format(token=bundle.users[0].token), headers=AUTH)
    assert response.status_code == status and detail in response.json()["detail"]


def test_keys_are_required(client, bundle):
    path = f"/v1/recommendations/{bundle.users[0].token}"
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).json()["detail"] == "invalid API key"
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 401
    assert client.get("/health").status_code == 200  # probes stay open


def test_batch_and_similar(client, bundle):
    tokens = [bundle.users[1].token, "0" * 32, bundle.users[2].token]
    body = BatchRecommendations.model_validate(
        client.post("/v1/recommendations/batch", json={"tokens": tokens, "k": 3}, headers=AUTH).json())
    assert [r.token for r in body.results] == [tokens[0], tokens[2]] and body.unknown_tokens == ["0" * 32]
    assert client.post("/v1/recommendations/batch", json={"tokens": tokens, "extra": 1},
                       headers=AUTH).status_code == 422
    similar = SimilarItems.model_validate(client.get("/v1/items/item-003/similar?k=4", headers=AUTH).json())
    assert len(similar.items) == 4 and "item-003" not in {i.item_id for i in similar.items}


@pytest.mark.parametrize("query", [{"k": 5}, {"k": 16}, {"k": 4, "exclude": ["item-001", "item-012"]}],
                         ids=["k5", "whole-catalog", "exclude"])
def test_answers_are_the_bytes_of_the_response_models(client, bundle, query):
    """The routes build their JSON themselves: byte for byte what the documented response model serialises to."""
    token = bundle.users[3].token
    response = client.get(f"/v1/recommendations/{token}", params=query, headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.content == RecommendationList.model_validate_json(response.content).model_dump_json().encode()
    tokens = [token, "0" * 32, bundle.users[4].token, token]
    batch = client.post("/v1/recommendations/batch", json={"tokens": tokens, **query}, headers=AUTH)
    assert batch.status_code == 200 and batch.headers["content-type"] == "application/json"
    parsed = BatchRecommendations.model_validate_json(batch.content)
    assert batch.content == parsed.model_dump_json().encode()
    single = RecommendationList.model_validate_json(response.content)
    assert [i.item_id for i in parsed.results[0].items] == [i.item_id for i in single.items]
    assert [i.score for i in parsed.results[0].items] == pytest.approx([i.score for i in single.items], rel=1e-6)
    assert parsed.unknown_tokens == ["0" * 32] and len(parsed.results) == 2


def test_metrics_count_requests_and_name_the_model(client):
    client.get("/health")
    text = metrics(client)
    assert 'gdrec_consumer_requests_total{method="GET",route="/health",status="200"}' in text
    assert "gdrec_consumer_request_seconds_bucket" in text and "gdrec_consumer_model_info{" in text
    assert client.app.state.metrics_address[0] == "127.0.0.1"


def test_metrics_are_not_served_on_the_api_port(client):
    """They name the model version, the export id and the route counts: for the operator's scraper only."""
    response = client.get("/metrics")
    assert response.status_code == 404 and "gdrec_consumer" not in response.text
    assert client.get("/metrics", headers=AUTH).status_code == 404


def test_without_a_metrics_port_there_is_no_metrics_server(data_dir):
    app = create_app(settings(data_dir, metrics_port=None))
    with TestClient(app) as client:
        assert client.app.state.metrics_address is None and client.get("/metrics").status_code == 404


def test_the_metrics_server_stops_with_the_service(data_dir):
    with TestClient(create_app(settings(data_dir))) as client:
        host, port = client.app.state.metrics_address
        assert "gdrec_consumer_model_info{" in metrics(client)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{host}:{port}/metrics", timeout=2)


def test_a_busy_metrics_port_stops_the_start_with_a_clear_error(data_dir):
    with TestClient(create_app(settings(data_dir))) as first:
        _, port = first.app.state.metrics_address
        with pytest.raises(RuntimeError, match=f"cannot serve metrics on 127.0.0.1:{port}.*METRICS_PORT"):
            with TestClient(create_app(settings(data_dir, metrics_port=port))):
                pass


def test_not_ready_until_a_model_is_published_then_reload_swaps_atomically(tmp_path, bundle):
    layout = ConsumerLayout(tmp_path)
    with TestClient(create_app(settings(tmp_path))) as client:
        assert client.get("/ready").status_code == 503
        token = bundle.users[0].token
        assert client.get(f"/v1/recommendations/{token}", headers=AUTH).status_code == 503
        assert client.post("/v1/admin/reload", headers=ADMIN).status_code == 409
        first = distill_and_publish(bundle, TINY, layout)
        assert client.post("/v1/admin/reload", headers=ADMIN).json() == {"model_version": first.model_version,
                                                                          "swapped": True}
        errors: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                response = client.get(f"/v1/recommendations/{token}?k=3", headers=AUTH)
                if response.status_code != 200:
                    errors.append(response.status_code)

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            second = distill_and_publish(bundle, DistillConfig(epochs=2, eval_every=1, progress=False, seed=1), layout)
            reloaded = client.post("/v1/admin/reload", headers=ADMIN).json()
        finally:
            stop.set()
            worker.join()
        assert reloaded == {"model_version": second.model_version, "swapped": True} and not errors
        assert client.get("/v1/model", headers=AUTH).json()["model_version"] == second.model_version
        assert client.post("/v1/admin/reload", headers=ADMIN).json()["swapped"] is False
        assert json.loads(layout.current_model.read_text()) == {"version": second.model_version}


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "detail"), [
    ("post", "/v1/recommendations/batch", {"json": {"tokens": ["0" * 32], "k": 101}}, 422,
     "body parameter 'k': must be at most 100"),
    ("post", "/v1/recommendations/batch",
     {"content": b'{"tokens": [,', "headers": {"Content-Type": "application/json"}}, 422,
     "request body is not valid JSON"),
    ("post", "/v1/recommendations/batch", {"content": b'{"tokens": ["a"]}', "headers": {"Content-Type": "text/plain"}},
     422, "request body: expected a JSON object (Content-Type: application/json)"),
    ("post", "/v1/recommendations/batch", {"json": ["a"]}, 422, "expected a JSON object"),
    ("post", "/v1/recommendations/batch", {"json": {"tokens": ["0" * 32], "k": True}}, 422,
     "body parameter 'k': Input should be a valid integer"),
    ("post", "/v1/recommendations/batch", {"json": {"tokens": ["0" * 32], "k": "3"}}, 422, "body parameter 'k'"),
    ("get", "/v1/recommendations/batch", {}, 405, "the batch route takes POST"),
])
def test_malformed_bodies_and_methods_get_a_precise_detail(client, method, path, kwargs, status, detail):
    headers = {**AUTH, **kwargs.pop("headers", {})}
    response = getattr(client, method)(path, headers=headers, **kwargs)
    assert response.status_code == status and detail in response.json()["detail"], response.json()


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", API_KEY])
def test_a_malformed_authorization_header_is_not_called_missing(client, bundle, header):
    response = client.get(f"/v1/recommendations/{bundle.users[0].token}", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["detail"] == "malformed Authorization header: send 'Authorization: Bearer <key>'"


@pytest.mark.parametrize(("damage", "detail"), [
    (lambda layout, version: layout.current_model.write_text("[]"), 'expected {"version": "<model version>"}'),
    (lambda layout, version: layout.current_model.write_text("{}"), 'expected {"version": "<model version>"}'),
    (lambda layout, version: layout.current_model.write_text("{not json"), "is not JSON"),
    (lambda layout, version: layout.current_model.write_text('{"version": "../../etc"}'), "expected {"),
    (lambda layout, version: layout.current_model.write_text('{"version": "gone"}'), "has no folder"),
    (lambda layout, version: (layout.models / version / "weights.pt").write_bytes(b"not a checkpoint"),
     "cannot be loaded"),
])
def test_a_damaged_published_model_is_a_409_that_names_the_file_and_the_old_model_stays(tmp_path, bundle, damage,
                                                                                       detail, caplog):
    layout = ConsumerLayout(tmp_path)
    first = distill_and_publish(bundle, TINY, layout)
    token = bundle.users[0].token
    with TestClient(create_app(settings(tmp_path))) as client:
        assert client.get(f"/v1/recommendations/{token}?k=3", headers=AUTH).status_code == 200
        damage(layout, first.model_version)
        response = client.post("/v1/admin/reload", headers=ADMIN)
        assert response.status_code == 409, response.json()
        assert response.json()["detail"].startswith("reload failed, the old model is still served:")
        assert detail in response.json()["detail"] and "gdrec-consumer distill" in response.json()["detail"]
        assert client.get(f"/v1/recommendations/{token}?k=3", headers=AUTH).json()["model_version"] == \
            first.model_version
        assert 'gdrec_consumer_model_reloads_total{outcome="failed"} 1.0' in metrics(client)


def test_an_unhandled_error_is_counted_as_a_500_in_the_metrics(tmp_path, bundle, monkeypatch):
    distill_and_publish(bundle, TINY, ConsumerLayout(tmp_path))
    with TestClient(create_app(settings(tmp_path)), raise_server_exceptions=False) as client:
        state = client.app.state.service
        monkeypatch.setattr(type(state.model), "recommend", lambda *a, **k: 1 / 0)
        response = client.get(f"/v1/recommendations/{bundle.users[0].token}", headers=AUTH)
        assert response.status_code == 500 and response.json() == {"detail": "internal error (logged by the service)"}
        assert ('gdrec_consumer_requests_total{method="GET",route="/v1/recommendations/{token}",status="500"} 1.0'
                in metrics(client))


def test_the_watcher_reports_a_damaged_publication_once_and_swaps_in_the_next_good_one(tmp_path, bundle):
    import time

    layout = ConsumerLayout(tmp_path)
    first = distill_and_publish(bundle, TINY, layout)
    token = bundle.users[0].token
    with TestClient(create_app(settings(tmp_path, reload_poll_s=0.02))) as client:
        layout.current_model.write_text("{}")
        time.sleep(0.3)  # many polls
        assert 'gdrec_consumer_model_reloads_total{outcome="failed"} 1.0' in metrics(client)
        assert client.get(f"/v1/recommendations/{token}", headers=AUTH).json()["model_version"] == \
            first.model_version
        second = distill_and_publish(bundle, DistillConfig(epochs=2, eval_every=1, batch_size=64, progress=False,
                                                           seed=1), layout)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and client.get("/v1/model", headers=AUTH).json()["model_version"] != \
                second.model_version:
            time.sleep(0.02)
        assert client.get("/v1/model", headers=AUTH).json()["model_version"] == second.model_version
        assert 'gdrec_consumer_model_reloads_total{outcome="swapped"} 1.0' in metrics(client)
