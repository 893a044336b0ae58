"""Remote evaluation against a minimal consumer (a FastAPI app defined here, serving a known model over the
contract of `shared.schemas.RecommendationList`): the metrics equal the owner's own full-ranking evaluation of
the same model, the owner's history filtering is local, and nothing but a token and one uniform k is sent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.testclient import TestClient

from data_owner.data import InteractionTable, leave_one_out_split
from data_owner.remote_eval import (
    RemoteEvalConfig,
    RemoteEvalError,
    evaluate_remote,
    rank_in_answer,
    render,
    user_tokens,
)
from shared.evaluation import evaluate
from shared.http import make_client
from shared.models import BPR
from shared.schemas import RecommendationList, ScoredItem

SECRET = b"remote-eval-test-secret-0123456789"
CONSUMER_KEY = "consumer-side-key-123"
N_USERS, N_ITEMS, PER_USER = 30, 40, 8


def make_split():
    """Raw ids that are easy to spot; per user 8 timestamped interactions (the last two are held out)."""
    rng = np.random.default_rng(3)
    users, items, stamps = [], [], []
    for u in range(N_USERS):
        for t, i in enumerate(rng.choice(N_ITEMS, size=PER_USER, replace=False)):
            users.append(f"person-{u:04d}")
            items.append(f"film-{i:03d}")
            stamps.append(1000 * u + t)
    table = InteractionTable.from_external(np.array(users, dtype=object), np.array(items, dtype=object),
                                           np.array(stamps), source="synthetic")
    return leave_one_out_split(table)


@pytest.fixture(scope="module")
def split():
    return make_split()


@pytest.fixture(scope="module")
def tokens(split):
    return user_tokens(split, SECRET, "vendor")


def consumer_app(rank_items, known_tokens: set[str], seen: list[dict], max_k: int = 1000) -> FastAPI:
    """The consumer's contract, minimal: GET /v1/recommendations/{token}?k= with a bearer key; `rank_items(token)`
    returns the item ids best first (the model it serves). Every request is recorded in `seen`."""
    app = FastAPI()

    @app.get("/v1/recommendations/{token}", response_model=RecommendationList)
    async def recommend(token: str, request: Request, k: int = Query(ge=1),
                        authorization: str | None = Header(None)) -> RecommendationList:
        seen.append({"method": request.method, "path": request.url.path, "query": dict(request.query_params),
                     "body": await request.body(), "headers": {k_: v for k_, v in request.headers.items()
                                                               if k_ != "authorization"}})
        if authorization != f"Bearer {CONSUMER_KEY}":
            raise HTTPException(401, "invalid API key")
        if k > max_k:
            raise HTTPException(422, f"k must be at most {max_k}")
        if token not in known_tokens:
            raise HTTPException(404, "unknown token")
        ranked = rank_items(token)[:k]
        return RecommendationList(token=token, items=[ScoredItem(item_id=i, score=float(len(ranked) - r))
                                                      for r, i in enumerate(ranked)], model_version="test-model-1")

    return app


def model_consumer(split, tokens, seen, known=None, **kwargs):
    """A consumer serving a random BPR model over its own user rows (one per token)."""
    torch.manual_seed(0)
    model = BPR(N_USERS, N_ITEMS, dim=8)
    row = {token: k for k, token in enumerate(tokens)}
    catalog = [str(i) for i in split.item_ids]

    def rank_items(token: str) -> list[str]:
        with torch.no_grad():
            scores = model.score_all(torch.tensor([row[token]]))[0]
        return [catalog[i] for i in torch.argsort(scores, descending=True).tolist()]

    return consumer_app(rank_items, set(tokens) if known is None else known, seen, **kwargs), model, row


def client_for(app: FastAPI, key: str = CONSUMER_KEY) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


def test_remote_metrics_equal_the_owners_full_ranking_evaluation(split, tokens):
    seen: list[dict] = []
    app, model, row = model_consumer(split, tokens, seen)
    config = RemoteEvalConfig(k=10, ks=(1, 5, 10), concurrency=4, seed=1)
    result = evaluate_remote(client_for(app), split, tokens, config, consumer="test-consumer")

    users = split.eval_users
    rows = torch.tensor([row[tokens[u]] for u in range(N_USERS)])
    expected = evaluate(lambda batch: model.score_all(rows[batch]), users, split.test_item[users], [split.train],
                        [split.valid_item], ks=(1, 5, 10))
    assert result.metrics == pytest.approx(expected.metrics)
    assert result.users == result.answered == users.size and result.unknown_tokens == 0
    assert result.model_versions == {"test-model-1": users.size}
    longest = int(split.train.lengths()[users].max())
    assert result.k_requested == 10 + longest + 1
    assert "consumer (remote)" in render(result, {"teacher": expected.metrics})


def test_only_a_token_and_one_uniform_k_are_sent(split, tokens):
    seen: list[dict] = []
    app, _, _ = model_consumer(split, tokens, seen)
    result = evaluate_remote(client_for(app), split, tokens, RemoteEvalConfig(k=5, concurrency=3, seed=2))
    eval_tokens = [tokens[u] for u in split.eval_users]
    assert sorted(r["path"] for r in seen) == sorted(f"/v1/recommendations/{t}" for t in eval_tokens)
    assert all(r["method"] == "GET" and r["body"] == b"" for r in seen)
    assert all(r["query"] == {"k": str(result.k_requested)} for r in seen)  # the same k for every user
    order = [r["path"].rsplit("/", 1)[1] for r in seen]
    assert order != eval_tokens  # not the owner's user order (which follows the raw ids)
    sent = repr(seen)
    assert "person-" not in sent  # no raw user id
    train_items = {str(split.item_ids[i]) for i in split.train.indices}
    held_out = {str(split.item_ids[i]) for i in np.concatenate([split.valid_item, split.test_item])}
    assert not [item for item in train_items | held_out if item in sent]  # no item of the owner's at all


def test_history_is_removed_locally(split, tokens):
    """An oracle consumer that lists each user's training items, then the validation item, then the test item:
    after the owner removes the history, the test item is first: HR@1 = NDCG@1 = 1."""
    catalog = [str(i) for i in split.item_ids]
    user_of = {t: u for u, t in enumerate(tokens)}

    def oracle(token: str) -> list[str]:
        u = user_of[token]
        head = [catalog[i] for i in split.train.row(u)] + [catalog[split.valid_item[u]], catalog[split.test_item[u]]]
        return head + [i for i in catalog if i not in head]

    app = consumer_app(oracle, set(tokens), [])
    result = evaluate_remote(client_for(app), split, tokens, RemoteEvalConfig(k=1, ks=(1,), seed=0))
    assert result.metrics == {"HR@1": 1.0, "NDCG@1": 1.0}
    # asking for too few extra items cuts the oracle's list before the test item: every user misses
    short = evaluate_remote(client_for(app), split, tokens, RemoteEvalConfig(k=1, ks=(1,), extra=2, seed=0))
    assert short.metrics == {"HR@1": 0.0, "NDCG@1": 0.0}


def test_unknown_tokens_count_as_misses(split, tokens):
    known = {tokens[u] for u in split.eval_users[::2]}
    catalog = [str(i) for i in split.item_ids]
    user_of = {t: u for u, t in enumerate(tokens)}

    def perfect(token: str) -> list[str]:
        test = catalog[split.test_item[user_of[token]]]
        return [test] + [i for i in catalog if i != test]

    result = evaluate_remote(client_for(consumer_app(perfect, known, [])), split, tokens,
                             RemoteEvalConfig(k=1, ks=(1,), seed=0))
    assert result.unknown_tokens == split.eval_users.size - len(known) and result.answered == len(known)
    assert result.metrics["HR@1"] == pytest.approx(len(known) / split.eval_users.size)


def test_rank_in_answer():
    assert rank_in_answer(["a", "b", "c", "t"], "t", {"b"}, 5) == (2, False)
    assert rank_in_answer(["a", "b"], "t", set(), 5) == (None, True)
    assert rank_in_answer(["a", "b", "c"], "t", set(), 2) == (None, False)


def test_consumer_failures_are_reported_clearly(split, tokens):
    seen: list[dict] = []
    app, _, _ = model_consumer(split, tokens, seen)
    with pytest.raises(RemoteEvalError, match="refused the key .*401.*--key"):
        evaluate_remote(client_for(app, key="wrong"), split, tokens, RemoteEvalConfig(k=5, seed=0))
    capped, _, _ = model_consumer(split, tokens, [], max_k=8)
    with pytest.raises(RemoteEvalError, match="rejected k=.*at most 8.*smaller --extra"):
        evaluate_remote(client_for(capped), split, tokens, RemoteEvalConfig(k=5, seed=0))

    broken = FastAPI()

    @broken.get("/v1/recommendations/{token}")
    def bad(token: str) -> dict:
        return {"token": token, "items": [{"item": "x"}], "model_version": "v"}

    with pytest.raises(RemoteEvalError, match="does not follow the RecommendationList contract"):
        evaluate_remote(client_for(broken), split, tokens, RemoteEvalConfig(k=5, seed=0))

    liar = FastAPI()

    @liar.get("/v1/recommendations/{token}")
    def other_token(token: str) -> dict:
        return {"token": "f" * 64, "items": [], "model_version": "v"}

    with pytest.raises(RemoteEvalError, match="another token"):
        evaluate_remote(client_for(liar), split, tokens, RemoteEvalConfig(k=5, seed=0))


def test_an_unreachable_consumer(split, tokens):
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with make_client(f"http://127.0.0.1:{port}", CONSUMER_KEY, connect_retries=0) as client:
        with pytest.raises(RemoteEvalError, match="cannot reach the consumer"):
            evaluate_remote(client, split, tokens, RemoteEvalConfig(k=5, attempts=1, concurrency=1))
