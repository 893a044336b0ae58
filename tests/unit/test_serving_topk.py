"""The precomputed top-K of the served model against the exact path (score the catalog, mask, torch.topk): the
same items in the same order and the same scores within float32, for several k, with and without exclusions, for
BPR and NeuMF; ties in catalog order whichever path answers; the memory limit that shortens or drops the table."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model_consumer import serving
from model_consumer.serving import LoadedModel, load_model, precompute_depth, precompute_top, ranked_top
from model_consumer.settings import ConsumerLayout
from model_consumer.students import distill_and_publish
from shared.distillation import DistillConfig
from shared.models.bpr import BPR
from shared.models.neumf import NeuMF
from tests.unit.test_consumer_pull import synthetic_export

N_USERS, N_ITEMS = 37, 53


def loaded(model, max_k: int) -> LoadedModel:
    model.eval()
    depth = precompute_depth(model.n_users, model.n_items, max_k)
    top = precompute_top(model, model.n_users, model.n_items, depth, torch.device("cpu")) if depth else None
    return LoadedModel(model=model, card=None, token_index={f"t{u}": u for u in range(model.n_users)},
                       item_ids=[f"item-{i}" for i in range(model.n_items)],
                       item_index={f"item-{i}": i for i in range(model.n_items)}, item_unit=torch.empty(0),
                       device=torch.device("cpu"), top=top)


@torch.no_grad()
def exact(served: LoadedModel, token: str, k: int, exclude: list[str]) -> tuple[list[str], list[float]]:
    """Top-k the way a request was answered before any precomputation: one user's scores, masked, torch.topk."""
    scores = served.model.score_all(torch.tensor([served.token_index[token]])).float()
    drop = [served.item_index[i] for i in exclude if i in served.item_index]
    if drop:
        scores[:, drop] = float("-inf")
    top = torch.topk(scores, min(k, len(served.item_ids) - len(set(drop))), dim=1)
    return [served.item_ids[i] for i in top.indices[0].tolist()], top.values[0].tolist()


def models():
    torch.manual_seed(0)
    return [BPR(N_USERS, N_ITEMS, dim=8, init_std=0.5), NeuMF(N_USERS, N_ITEMS, dim_gmf=4, dim_mlp=4, hidden=[8, 4])]


@pytest.mark.parametrize("model", models(), ids=lambda m: m.family)
@pytest.mark.parametrize("k", [1, 5, 10, 50, N_ITEMS, 500])
@pytest.mark.parametrize("exclude", [[], ["item-3", "item-17", "item-40", "not-in-catalog"]], ids=["all", "exclude"])
def test_the_precomputed_answer_is_the_exact_one(model, k, exclude):
    served = loaded(model, max_k=500)
    assert served.top is not None and served.top.depth == N_ITEMS
    assert served.top.indices.dtype == np.int32 and served.top.scores.dtype == np.float32
    tokens = ["t0", "t5", "t36"]
    for token, ranking in zip(tokens, served.recommend(tokens, k, exclude), strict=True):
        items, scores = exact(served, token, k, exclude)
        assert ranking.item_ids == items
        assert ranking.scores == pytest.approx(scores, rel=1e-6, abs=1e-6)
        if exclude:
            assert not {"item-3", "item-17", "item-40"} & set(ranking.item_ids)


def test_a_request_without_exclusions_reads_the_table_and_scores_nothing(monkeypatch):
    served = loaded(models()[0], max_k=20)

    def refuse(*_):
        raise AssertionError("the model was scored")

    monkeypatch.setattr(served.model, "score_all", refuse)
    assert served.precomputed(20) and served.precomputed(20, ["not-in-catalog"])
    assert not served.precomputed(21) and not served.precomputed(5, ["item-0"])
    assert loaded(models()[0], max_k=500).precomputed(10**6)  # deeper than the catalog: the whole (stored) row
    assert len(served.recommend(["t1"], 20)[0].item_ids) == 20
    with pytest.raises(AssertionError, match="scored"):
        served.recommend(["t1"], 21)  # deeper than the table: the exact path
    with pytest.raises(AssertionError, match="scored"):
        served.recommend(["t1"], 5, ["item-0"])


def test_equal_scores_come_in_catalog_order_on_both_paths():
    model = BPR(4, 12, dim=2)
    with torch.no_grad():
        model.item_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, 0.0], [1.0, 0.0], [2.0, 0.0]] * 3))
        model.user_emb.weight.fill_(1.0)
    served = loaded(model, max_k=12)
    # scores 2 (items 3, 7, 11), 1 (items 0, 2, 4, 6, 8, 10), 0.5 (items 1, 5, 9)
    expected = [3, 7, 11, 0, 2, 4, 6, 8, 10, 1, 5, 9]
    for k in (1, 2, 4, 7, 12):
        assert served.recommend(["t0"], k)[0].item_ids == [f"item-{i}" for i in expected[:k]]
        assert served._score([0], k, [])[0][0] == expected[:k]
    assert served.recommend(["t0"], 4, ["item-7"])[0].item_ids == ["item-3", "item-11", "item-0", "item-2"]


def test_rows_with_and_without_equal_scores_side_by_side():
    """User 0 sees ties (items with equal first coordinates), user 1 none (distinct second coordinates)."""
    model = BPR(2, 12, dim=2)
    with torch.no_grad():
        model.item_emb.weight.copy_(torch.tensor([[[1, .5, 1, 2][i % 4], 0.1 * i] for i in range(12)]))
        model.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    served = loaded(model, max_k=12)
    for k in (1, 3, 6, 12):
        tied, distinct = served.recommend(["t0", "t1"], k)
        assert tied.item_ids == [f"item-{i}" for i in [3, 7, 11, 0, 2, 4, 6, 8, 10, 1, 5, 9][:k]]
        assert distinct.item_ids == [f"item-{i}" for i in range(11, 11 - k, -1)]
    values, indices = ranked_top(torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]]), 2)
    assert indices.tolist() == [[1, 2], [0, 1]] and values.tolist() == [[1.0, 1.0], [5.0, 4.0]]


def test_ranked_top_refuses_nan_scores():
    with pytest.raises(ValueError, match="NaN scores"):
        ranked_top(torch.tensor([[0.1, float("nan"), 0.3]]), 2)


def test_the_table_stays_within_its_memory_limit(monkeypatch):
    assert precompute_depth(1000, 5000, 5000, limit_bytes=8 * 1000 * 300, max_depth=10**6) == 300
    assert precompute_depth(1000, 5000, 5000, limit_bytes=2**30) == serving.PRECOMPUTE_DEPTH  # deeper k: scored
    assert precompute_depth(1000, 200, 5000, limit_bytes=2**30) == 200
    assert precompute_depth(1000, 200, 50, limit_bytes=2**30) == 50
    assert precompute_depth(10**6, 200, 50, limit_bytes=1000) == 0
    served = loaded(models()[0], max_k=N_ITEMS)
    shallow = loaded(models()[0], max_k=7)
    for k in (3, 7, 8, 30):
        assert shallow.recommend(["t2"], k)[0].item_ids == served.recommend(["t2"], k)[0].item_ids


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    distill_and_publish(synthetic_export(), DistillConfig(epochs=2, batch_size=64, progress=False),
                        ConsumerLayout(root))
    return ConsumerLayout(root)


def test_load_model_precomputes_up_to_max_k_and_answers_like_the_exact_path(published):
    served = load_model(published, max_k=10)
    plain = load_model(published)
    assert served.top is not None and served.top.depth == 10 and plain.top is None
    tokens = list(served.token_index)
    for k in (1, 5, 10, 16):
        for exclude in ([], ["item-001", "item-009"]):
            fast, slow = served.recommend(tokens, k, exclude), plain.recommend(tokens, k, exclude)
            assert [r.item_ids for r in fast] == [r.item_ids for r in slow]
            for a, b in zip(fast, slow, strict=True):
                assert a.scores == pytest.approx(b.scores, rel=1e-6, abs=1e-6)


def test_over_the_limit_the_table_is_shortened_and_it_is_logged(published, monkeypatch, caplog):
    n_users = len(synthetic_export().users)
    monkeypatch.setattr(serving, "PRECOMPUTE_LIMIT_BYTES", n_users * 8 * 4)
    with caplog.at_level(logging.WARNING, logger="model_consumer.serving"):
        served = load_model(published, max_k=16)
    assert served.top is not None and served.top.depth == 4
    assert "precomputing the first 4 items, deeper requests are scored in full" in caplog.text
    assert served.recommend(list(served.token_index)[:3], 9)[0].item_ids == \
        load_model(published).recommend(list(served.token_index)[:3], 9)[0].item_ids
    monkeypatch.setattr(serving, "PRECOMPUTE_LIMIT_BYTES", 0)
    assert load_model(published, max_k=16).top is None
