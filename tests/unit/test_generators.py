"""List generators: known answers for item kNN and EASE, the VAE on the checkerboard, the Gumbel draw's frequencies,
save/load of every family, the lists format, and auto's choice by the dry-run student."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data_owner.data.split import LeaveOneOutSplit
from data_owner.generators import FAMILIES, family_settings, fit_generator, load_generator
from data_owner.generators.itemknn import ItemKNN, neighbours
from data_owner.generators.select import choose_generator
from data_owner.lists import GeneratedLists, top_lists
from shared.interactions import ItemSets
from shared.models import build_model
from tests.conftest import checkerboard


def split_of(train: ItemSets, valid: np.ndarray, test: np.ndarray) -> LeaveOneOutSplit:
    return LeaveOneOutSplit(train=train, valid_item=np.asarray(valid), test_item=np.asarray(test),
                            user_ids=np.array([f"u{u}" for u in range(train.n_users)]),
                            item_ids=np.array([f"i{i}" for i in range(train.n_items)]), has_timestamps=True)


def board_split(n_users: int = 40, n_items: int = 20) -> LeaveOneOutSplit:
    return split_of(*checkerboard(n_users, n_items))


# -- item kNN ------------------------------------------------------------------------------------------------------
# users x items: item 0 and 1 always together, item 2 with 0 once, item 3 alone
HAND = [[0, 1], [0, 1, 2], [0, 1], [3], [2]]


def test_knn_similarities_are_cosine_with_shrinkage_by_hand():
    train = ItemSets.from_lists(HAND, 4)
    idx, val = neighbours(train, k=3, shrink=0.0)
    # |U_0| = 3, |U_1| = 3, |U_2| = 2, |U_3| = 1; co(0,1) = 3, co(0,2) = 1, co(1,2) = 1, co(.,3) = 0
    assert idx[0, :2].tolist() == [1, 2]
    assert val[0, 0].item() == pytest.approx(3 / math.sqrt(3 * 3))
    assert val[0, 1].item() == pytest.approx(1 / math.sqrt(3 * 2))
    assert val[3].tolist() == [0.0, 0.0, 0.0]  # no co-occurrence: zero-valued slots
    idx_h, val_h = neighbours(train, k=3, shrink=2.0)
    assert val_h[0, 0].item() == pytest.approx(3 / (math.sqrt(9) + 2))
    assert 0 not in idx[0, :2].tolist()  # an item is never its own neighbour


def test_knn_scores_sum_the_neighbourhoods_of_the_users_items():
    train = ItemSets.from_lists(HAND, 4)
    idx, val = neighbours(train, k=1, shrink=0.0)  # each item keeps its best neighbour only
    model = ItemKNN(idx, val, 4, k=1, shrink=0.0, noise_temperature=0.0)
    scores = model.logits(torch.tensor([4]), train).exp()  # user 4 holds item 2, whose best neighbour is 0 or 1
    best = int(idx[2, 0])
    assert scores[0, best].item() == pytest.approx(val[2, 0].item(), rel=1e-5)
    others = [i for i in range(4) if i != best]
    assert torch.all(scores[0, others] < 1e-6)


def test_knn_picks_k_and_shrinkage_on_validation_and_learns_the_checkerboard():
    split = board_split()
    model = fit_generator("itemknn", split, seed=0, settings={"ks": [1, 9], "shrinks": [0, 5]})
    assert {(t["k"], t["shrink"]) for t in model.report.tried} == {(1, 0), (9, 0), (1, 5), (9, 5)}
    # with 9 neighbours each item reaches its whole half (and nothing else): the held-out items rank first
    assert model.k == 9 and model.report.valid["NDCG@50"] > max(
        t["valid"]["NDCG@50"] for t in model.report.tried if t["k"] == 1)
    lists = model.lists(split.train, 2, include_observed=False, seed=0)
    half = split.n_items // 2
    same_half = (lists.items // half) == (np.arange(split.n_users)[:, None] % 2)
    assert same_half.all()  # the two items each user misses are from its own half


# -- the VAE --------------------------------------------------------------------------------------------------------
def test_vae_learns_the_checkerboard_and_its_posterior_noise_changes_the_draw():
    split = board_split(60, 20)
    model = fit_generator("vae", split, seed=0, settings={"hidden": 16, "latent": 4, "epochs": 150, "eval_every": 10,
                                                          "batch_size": 20, "anneal_steps": 50, "dropout": 0.2,
                                                          "patience": 0})
    lists = model.lists(split.train, 2, include_observed=False, seed=0)
    half = split.n_items // 2
    own_half = (lists.items // half) == (np.arange(split.n_users)[:, None] % 2)
    assert own_half.mean() > 0.95
    assert model.report.chosen["epoch"] in {t["epoch"] for t in model.report.tried}
    a = model.logits(torch.arange(4), split.train, torch.Generator().manual_seed(1))
    b = model.logits(torch.arange(4), split.train, torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)  # z drawn from the posterior
    assert torch.allclose(model.logits(torch.arange(4), split.train), model.logits(torch.arange(4), split.train))


# -- EASE ------------------------------------------------------------------------------------------------------------
def test_ease_weights_solve_the_closed_form():
    split = board_split(20, 10)
    model = fit_generator("ease", split, seed=0, settings={"lambdas": [1.0]})
    X = torch.zeros(split.n_users, split.n_items, dtype=torch.float64)
    users, items = split.train.to_pairs()
    X[users, items] = 1
    P = torch.linalg.inv(X.T @ X + torch.eye(split.n_items, dtype=torch.float64))
    B = -P / torch.diagonal(P)[None, :]
    B.fill_diagonal_(0)
    assert torch.allclose(model.weights.double(), B, atol=1e-4)
    with pytest.raises(ValueError, match="max_items"):
        fit_generator("ease", split, seed=0, settings={"max_items": 5})


# -- Gumbel-top-L and the teacher family ---------------------------------------------------------------------------
def test_gumbel_draws_follow_the_softmax_of_the_scores():
    # one user, 4 items with logits log p: the first item of a draw follows p (Gumbel-max), over many seeds
    p = np.array([0.5, 0.3, 0.15, 0.05])
    logits = torch.log(torch.tensor(p, dtype=torch.float32))[None, :]
    train = ItemSets.from_lists([[]], 4)
    first = np.array([top_lists(lambda u: logits, train, 2, seed=s, temperature=1.0).items[0, 0]
                      for s in range(3000)])
    frequencies = np.bincount(first, minlength=4) / first.size
    assert np.allclose(frequencies, p, atol=0.03)
    # tau -> 0: the plain top-L; the same seed, the same draw; listed scores are the scorer's, without noise
    plain = top_lists(lambda u: logits, train, 2, seed=0, temperature=0.0)
    assert plain.items.tolist() == [[0, 1]] and np.allclose(plain.scores, logits[0, :2].numpy())
    again = [top_lists(lambda u: logits, train, 3, seed=9, temperature=1.0).items.tolist() for _ in range(2)]
    assert again[0] == again[1]


def test_teacher_generator_at_zero_temperature_is_the_teachers_own_top_list():
    split = board_split()
    teacher = build_model("bpr", split.n_users, split.n_items, generator=torch.Generator().manual_seed(0), dim=4)
    own = top_lists(teacher.score_all, split.train, 3, include_observed=False)
    generator = fit_generator("teacher", split, seed=0, teacher=teacher)
    assert np.array_equal(generator.lists(split.train, 3, False, seed=5).items, own.items)
    noisy = fit_generator("teacher", split, seed=0, teacher=teacher, settings={"noise_temperature": 5.0})
    assert not np.array_equal(noisy.lists(split.train, 3, False, seed=5).items, own.items)


# -- save / load, the lists format, settings errors -----------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_saves_and_loads_to_the_same_lists(tmp_path, family):
    split = board_split()
    teacher = build_model("bpr", split.n_users, split.n_items, generator=torch.Generator().manual_seed(0), dim=4)
    settings = {"itemknn": {"ks": [3]}, "vae": {"hidden": 8, "latent": 2, "epochs": 2, "eval_every": 1},
                "ease": {"lambdas": [1.0]}, "teacher": {"noise_temperature": 0.5}}.get(family)
    from data_owner.gan import CGANConfig
    generator = fit_generator(family, split, seed=0, teacher=teacher, settings=settings,
                              cgan=CGANConfig(hidden_g=(8,), hidden_d=(4,), noise_dim=2, epochs=2, eval_every=1))
    generator.save(tmp_path / family)
    loaded = load_generator(tmp_path / family)
    assert loaded.family == family and loaded.settings() == generator.settings()
    assert loaded.report.valid == pytest.approx(generator.report.valid)
    first = generator.lists(split.train, 4, include_observed=False, seed=3)
    second = loaded.lists(split.train, 4, include_observed=False, seed=3)
    assert np.array_equal(first.items, second.items)


def test_lists_save_and_load_round_trip_with_their_statistics(tmp_path):
    train = ItemSets.from_lists([[0], [1], [2]], 5)
    lists = GeneratedLists(items=np.array([[0, 1], [2, 3], [3, 4]]), scores=np.ones((3, 2), np.float32),
                           include_observed=True, seed=4, n_items=5)
    lists.save(tmp_path)
    back = GeneratedLists.load(tmp_path)
    assert np.array_equal(back.items, lists.items) and back.seed == 4 and back.include_observed
    stats = lists.statistics(train)
    assert stats["observed_share"] == pytest.approx(1 / 6, abs=1e-4)  # only user 0 lists an own item (item 0)
    assert stats["distinct_items"] == 5 and stats["coverage"] == 1.0
    assert stats["top1pct_share"] == pytest.approx(2 / 6, abs=1e-4)  # item 3, listed twice, is the most listed


def test_unknown_or_invalid_generator_settings_are_refused_with_the_family_named():
    with pytest.raises(ValueError, match="itemknn generator settings take"):
        family_settings("itemknn", {"neighbours": 5})
    with pytest.raises(ValueError, match="itemknn ks must be positive"):
        family_settings("itemknn", {"ks": [0]})
    with pytest.raises(ValueError, match="generator family must be one of"):
        family_settings("gan", {})


# -- auto: the candidate whose student validates best wins -----------------------------------------------------------
def test_auto_picks_the_family_whose_student_is_clearly_better():
    """The teacher knows the checkerboard; one candidate lists the user's own half, the other the opposite half
    (a teacher with the halves swapped): the student of the first ranks the validation items, the second's cannot."""
    split = board_split(40, 60)
    half = split.n_items // 2
    good = build_model("bpr", split.n_users, split.n_items, generator=torch.Generator().manual_seed(0), dim=2)
    with torch.no_grad():  # user group g and item half h score high when g == h
        good.user_emb.weight.copy_(torch.tensor([[4.0, -4.0] if u % 2 == 0 else [-4.0, 4.0]
                                                 for u in range(split.n_users)]))
        good.item_emb.weight.copy_(torch.tensor([[1.0, 0.0] if i < half else [0.0, 1.0]
                                                 for i in range(split.n_items)]))
    bad = build_model("bpr", split.n_users, split.n_items, generator=torch.Generator().manual_seed(0), dim=2)
    with torch.no_grad():
        bad.user_emb.weight.copy_(-good.user_emb.weight)
        bad.item_emb.weight.copy_(good.item_emb.weight)
    import data_owner.generators.select as select

    fitted = {"teacher": good, "itemknn": bad}
    real_fit = select.fit_generator

    def fake_fit(family, trained_on, **kwargs):  # two candidates built from the two teachers above
        return real_fit("teacher", trained_on, seed=0, teacher=fitted[family])

    select.fit_generator = fake_fit
    try:
        from shared.distillation import DistillConfig
        chosen = choose_generator(("itemknn", "teacher"), split, split, good, list_length=10, include_observed=False,
                                  temperature=2.0, secret=b"s" * 32, consumer_id="c", seed=0, budget_s=1e9,
                                  distill=DistillConfig(epochs=200, eval_every=20, lr=0.05, reg=0.0))
    finally:
        select.fit_generator = real_fit
    scores = {c.family: c.student_valid["HR@10"] for c in chosen.candidates}
    assert chosen.chosen.family == "teacher"
    assert scores["teacher"] > scores["itemknn"] + 0.3
