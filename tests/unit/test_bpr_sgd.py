"""BPR's per-triple SGD (data_owner.bpr_sgd): each step equals torch's SGD on that triple's share of `BPR.loss`,
negatives come from outside the excluded sets, and it trains through the loop (`fit(epoch_fn=...)`) reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_owner.bpr_sgd import BPRSGDEpochs, draw_negatives
from data_owner.config import ChainConfig, TeacherSettings, teacher_from_fields, teacher_preset
from shared.interactions import ItemSets
from shared.models import BPR, NeuMF, PairBatch
from shared.training import TrainConfig, fit


def sets(rows: list[list[int]], n_items: int) -> ItemSets:
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    return ItemSets.from_pairs(users, np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]), len(rows),
                               n_items)


def reference_epoch(model: BPR, pairs: list[tuple[int, int, int]], lr: float) -> None:
    """torch's SGD, one triple at a time, on `BPR.autograd_loss` (batch of one: data term + reg * squared rows)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for user, pos, neg in pairs:
        batch = PairBatch(torch.tensor([user]), torch.tensor([pos]), torch.tensor([neg]))
        optimizer.zero_grad()
        model.autograd_loss(batch).backward()
        optimizer.step()


def twin(model: BPR) -> BPR:
    other = BPR(model.n_users, model.n_items, dim=model.dim, reg=model.reg, sparse=False)
    other.load_state_dict(model.state_dict())
    return other


def test_an_epoch_equals_torch_sgd_on_each_triple_with_the_only_possible_negatives():
    # user 0 holds items 0, 1, 2 of 4 (its negative is always 3), user 1 items 1, 2, 3 (always 0)
    train = sets([[0, 1, 2], [1, 2, 3]], n_items=4)
    model = BPR(2, 4, dim=5, reg=0.03, init_std=0.5)
    expected = twin(model)
    lr, rng_seed = 0.1, 7
    loss = BPRSGDEpochs(model, train, lr)(1, np.random.default_rng(rng_seed))
    order = np.random.default_rng(rng_seed).integers(0, train.nnz, size=train.nnz)  # pairs drawn with replacement
    users, items = train.user_of_each_entry(), train.indices
    negative = {0: 3, 1: 0}
    triples = [(int(users[e]), int(items[e]), negative[int(users[e])]) for e in order]
    reference_epoch(expected, triples, lr)
    torch.testing.assert_close(model.user_emb.weight, expected.user_emb.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.item_emb.weight, expected.item_emb.weight, rtol=1e-5, atol=1e-6)
    assert loss > 0 and np.isfinite(loss)


def test_generated_pairs_draw_negatives_outside_training_and_generated_items():
    # user 0 trained items 0, 1, 2 (raw negatives: 3); user 1 trained nothing and was listed items 0, 1, 2 (its
    # generated pairs' negatives: 3 as well, since listed items are excluded for them)
    train, generated = sets([[0, 1, 2], []], n_items=4), sets([[], [0, 1, 2]], n_items=4)
    model = BPR(2, 4, dim=3, reg=0.01, init_std=0.5)
    expected = twin(model)
    BPRSGDEpochs(model, train, 0.2, generated=generated)(1, np.random.default_rng(3))
    order = np.random.default_rng(3).integers(0, 6, size=6)
    pairs = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]  # raw pairs first, then the generated ones
    reference_epoch(expected, [(*pairs[e], 3) for e in order], 0.2)
    torch.testing.assert_close(model.user_emb.weight, expected.user_emb.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.item_emb.weight, expected.item_emb.weight, rtol=1e-5, atol=1e-6)


def test_raw_pairs_may_draw_listed_items_as_negatives():
    # raw pairs exclude the training items only: with item 1 listed, a raw pair's negative is 1 or 2, never 0
    train, generated = sets([[0]], n_items=3), sets([[1]], n_items=3)
    model = BPR(1, 3, dim=2, reg=0.0, init_std=0.5)
    epochs = BPRSGDEpochs(model, train, 0.1, generated=generated)
    assert epochs.raw.row(0).tolist() == [0] and epochs.excluded.row(0).tolist() == [0, 1]


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_negatives_follow_their_distribution_outside_the_users_items(negatives):
    # user 0 holds item 0; items 1..4 have 1, 2, 3, 4 training pairs (users 1-4), item 5 none
    train = sets([[0], [1, 2, 3, 4], [2, 3, 4], [3, 4], [4]], n_items=6)
    epochs = BPRSGDEpochs(BPR(5, 6), train, 0.1, negatives=negatives)
    drawn = draw_negatives(epochs, np.zeros(40_000, dtype=np.int64), seed=5)
    counts = np.bincount(drawn, minlength=6) / drawn.size
    assert counts[0] == 0  # never the user's own item
    expected = np.array([0, 1, 1, 1, 1, 1]) / 5 if negatives == "uniform" else np.array([0, 1, 2, 3, 4, 0]) / 10
    np.testing.assert_allclose(counts, expected, atol=0.01)


def test_popularity_negatives_refuse_a_user_who_holds_every_candidate():
    # items 0 and 1 are the only ones with training pairs, and user 0 holds both
    with pytest.raises(ValueError, match="every candidate negative item"):
        BPRSGDEpochs(BPR(2, 4), sets([[0, 1], [1]], n_items=4), 0.1, negatives="popularity")


def test_pairs_per_epoch_caps_the_steps():
    train = sets([[0, 1], [2, 3], [0, 3]], n_items=6)
    model = BPR(3, 6, dim=4)
    before = model.user_emb.weight.detach().clone()
    BPRSGDEpochs(model, train, 0.1, pairs_per_epoch=1)(1, np.random.default_rng(0))
    moved = (model.user_emb.weight.detach() != before).any(dim=1)
    assert int(moved.sum()) == 1  # one triple: one user row moved


def test_refuses_what_it_cannot_train():
    with pytest.raises(ValueError, match="trains BPR models"):
        BPRSGDEpochs(NeuMF(2, 3), sets([[0], [1]], 3), 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no negative can be drawn"):
        BPRSGDEpochs(BPR(1, 2), sets([[0, 1]], 2), 0.1)
    with pytest.raises(ValueError, match="lr must be positive"):
        BPRSGDEpochs(BPR(1, 3), sets([[0]], 3), 0.0)
    with pytest.raises(ValueError, match="BPR only"):
        TeacherSettings("neumf", {"dim_gmf": 8}, 1e-3, optimizer="sgd")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TeacherSettings("bpr", {"dim": 8}, 1e-3, optimizer="adagrad")
    with pytest.raises(ValueError, match="'optimizer' must be one of"):
        teacher_from_fields("ml-100k", "bpr", {"optimizer": "rmsprop"})


def block_data(n_users: int = 40, n_items: int = 20, seed: int = 0) -> tuple[ItemSets, np.ndarray]:
    """Two tastes: even users like the first half of the catalog, odd users the second; one held-out item each."""
    rng = np.random.default_rng(seed)
    rows, held = [], []
    for user in range(n_users):
        half = np.arange(n_items // 2) + (0 if user % 2 == 0 else n_items // 2)
        picked = rng.choice(half, size=6, replace=False)
        rows.append(sorted(picked[:5].tolist()))
        held.append(int(picked[5]))
    return sets(rows, n_items), np.asarray(held)


def held_out_hits(model: BPR, train: ItemSets, held: np.ndarray, k: int = 5) -> float:
    with torch.no_grad():
        scores = model.score_all(torch.arange(train.n_users)).numpy()
    for user in range(train.n_users):
        scores[user, train.row(user)] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([held[u] in top[u] for u in range(train.n_users)]))


def test_trains_through_the_loop_reproducibly_and_learns_the_two_tastes():
    train, held = block_data()

    def run(seed: int) -> tuple[BPR, float]:
        model = BPR(train.n_users, train.n_items, dim=8, reg=1e-3, init_std=0.1)
        model.reset_parameters(torch.Generator().manual_seed(0))  # the same start: the seed drives the epochs only
        config = TrainConfig(epochs=30, lr=0.05, seed=seed, progress=False)
        result = fit(model, None, None, config, epoch_fn=BPRSGDEpochs(model, train, config.lr))
        assert result.epochs_run == 30 and result.history[-1]["loss"] < result.history[0]["loss"]
        return model, held_out_hits(model, train, held)

    first, hits = run(0)
    again, _ = run(0)
    other, _ = run(1)
    assert torch.equal(first.user_emb.weight, again.user_emb.weight)
    assert not torch.equal(first.user_emb.weight, other.user_emb.weight)
    assert hits >= 0.9  # a random top-5 of the 15 unseen items holds the held-out one a third of the time


def test_a_diverging_run_stops_with_a_message():
    train, _ = block_data()
    model = BPR(train.n_users, train.n_items, dim=8, reg=0.0, init_std=1.0)
    epochs = BPRSGDEpochs(model, train, 1e6)
    with pytest.raises(FloatingPointError, match="lower learning rate"):
        fit(model, None, None, TrainConfig(epochs=5, lr=1e6, progress=False), epoch_fn=epochs)


def test_presets_and_chain_config_carry_the_optimizer():
    sgd = teacher_preset("ml-100k", "bpr", "sgd")
    assert sgd.optimizer == "sgd" and teacher_preset("ml-100k", "bpr").optimizer == "adam"
    assert teacher_preset("/data/mine.csv", "bpr", "sgd").optimizer == "sgd"
    assert "optimizer" not in teacher_preset("ml-100k", "bpr").key_payload()  # Adam keys stay as they were
    assert sgd.key_payload()["optimizer"] == "sgd" and sgd.research_payload()["optimizer"] == "sgd"
    assert TeacherSettings.from_payload(sgd.key_payload()) == sgd
    config = ChainConfig(dataset="ml-100k", teacher_optimizer="sgd")
    assert config.teacher_settings == sgd and not config.tunes_teacher
    assert ChainConfig(dataset="/data/mine.csv", teacher_optimizer="sgd").tunes_teacher
    with pytest.raises(ValueError, match="BPR only"):
        ChainConfig(dataset="ml-100k", family="neumf", teacher_optimizer="sgd")
    laid = teacher_from_fields("ml-100k", "bpr", {"lr": 0.05}, optimizer="sgd")
    assert laid.optimizer == "sgd" and laid.lr == 0.05 and laid.model == sgd.model


def test_refused_under_torchrun_with_a_message(monkeypatch):
    from shared import distributed

    train, _ = block_data()
    model = BPR(train.n_users, train.n_items, dim=4)
    monkeypatch.setattr(distributed, "is_active", lambda: True)
    with pytest.raises(ValueError, match="run in one process"):
        fit(model, None, None, TrainConfig(epochs=1, lr=0.1, progress=False),
            epoch_fn=BPRSGDEpochs(model, train, 0.1), description="teacher")
