"""The KD baselines (ALGORITHMS.md section 4): each method's distinctive part against a hand-checked answer, the
public-code pitfalls pinned, and one smoke run per method x family on the checkerboard."""

import math

import numpy as np
import pytest
import torch

from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import train_base_model
from experiments.baselines import METHODS, train_kd_student
from experiments.baselines.bd import (
    BDOptions,
    BDPair,
    BDSampler,
    draw_per_row,
    student_sampling_weights,
    teacher_sampling_weights,
)
from experiments.baselines.cd import rank_probabilities, sample_ranked_items
from experiments.baselines.common import full_ranks, options_from, soft_label_bce, top_unobserved
from experiments.baselines.rd import (
    RDOptions,
    discrepancy_weights,
    estimated_ranks,
    position_weights,
    rd_distillation_loss,
)
from shared.interactions import ItemSets
from shared.models import build_model, config_at_fraction
from shared.training import TrainConfig
from tests.conftest import checkerboard

FAMILIES = {
    "bpr": {"dim": 8, "reg": 1e-4},
    "neumf": {"dim_gmf": 8, "dim_mlp": 8, "hidden": [16, 8], "reg": 1e-5},
}


def board_split(n_users: int = 40, n_items: int = 20) -> LeaveOneOutSplit:
    train, valid, test = checkerboard(n_users=n_users, n_items=n_items)
    return LeaveOneOutSplit(train=train, valid_item=valid, test_item=test, user_ids=np.arange(n_users),
                            item_ids=np.arange(n_items), has_timestamps=False, source="checkerboard")


# -- shared pieces -------------------------------------------------------------------------------------------

def test_full_ranks_are_0_based_descending_with_stable_ties():
    ranks = full_ranks(torch.tensor([[0.1, 3.0, -2.0, 3.0]]))
    assert ranks.tolist() == [[2, 0, 3, 1]]  # the top item has rank 0; the tie goes to the lower index


def test_top_lists_exclude_training_items_even_when_every_logit_is_negative():
    """Regression for the BD notebook's pitfall: masking by multiplying by 0 lifts a training item above every
    negative logit; -inf never does."""
    train = ItemSets.from_lists([[0, 1], [3]], n_items=5)
    scores = torch.tensor([[-0.1, -0.2, -5.0, -3.0, -4.0], [-9.0, -8.0, -7.0, -0.5, -6.0]])
    top = top_unobserved(lambda users: scores[users], train, k=3)
    assert top.tolist() == [[3, 4, 2], [4, 2, 1]]
    with pytest.raises(ValueError, match="choose k <= 3"):
        top_unobserved(lambda users: scores[users], train, k=4)


def test_options_refuse_unknown_keys_and_keep_defaults():
    assert options_from(RDOptions, {"k": 5}) == RDOptions(k=5, lambda_rd=1.0, mu=0.1, warmup_epochs=10,
                                                          probe_items=100)
    with pytest.raises(ValueError, match="unknown RDOptions option"):
        options_from(RDOptions, {"K": 5})


# -- RD ------------------------------------------------------------------------------------------------------

def test_rd_position_weights():
    # exp(-r) for r = 0, 1, 2 over 1 + e^-1 + e^-2 = 1.503214
    torch.testing.assert_close(position_weights(3, 1.0), torch.tensor([0.665241, 0.244728, 0.090031]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(position_weights(2, 2.0), torch.tensor([1 / (1 + math.exp(-0.5)),
                                                                       math.exp(-0.5) / (1 + math.exp(-0.5))]))


def test_rd_discrepancy_weights():
    # positions 0..3: rank_S - r = [0, 4, -1, 37] -> tanh(0.1 * .) clipped at 0
    weights = discrepancy_weights(torch.tensor([[0.0, 5.0, 1.0, 40.0]]), mu=0.1)
    torch.testing.assert_close(weights, torch.tensor([[0.0, 0.379949, 0.0, 0.998778]]), atol=1e-6, rtol=0)


def test_rd_rank_estimate_from_sampled_items():
    # 4 probes scored [1, 0, 3, -1] among 100 unobserved items; strictly higher probes: 2, 1, 1, 0
    ranks = estimated_ranks(torch.tensor([[0.5, 2.0, 1.0, 3.0]]), torch.tensor([[1.0, 0.0, 3.0, -1.0]]),
                            torch.tensor([100]))
    assert ranks.tolist() == [[50.0, 25.0, 25.0, 0.0]]


def test_rd_distillation_loss_is_the_weighted_log_loss():
    # -log sigmoid(0) = ln 2, -log sigmoid(ln 3) = ln(4/3); weights 0.5 each
    loss = rd_distillation_loss(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([0.5, 0.5]))
    assert loss.item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(4 / 3), abs=1e-6)


# -- CD ------------------------------------------------------------------------------------------------------

def test_cd_rank_aware_probabilities():
    # N = 4, T = 0.5: exp(-r / 2) for r = 0..3 = [1, .606531, .367879, .223130], sum 2.197540
    np.testing.assert_allclose(rank_probabilities(4, 0.5), [0.455054, 0.276004, 0.167406, 0.101536], atol=1e-6)


def test_cd_sampling_follows_the_probabilities_and_never_draws_training_items():
    rng = np.random.default_rng(0)
    n_users, n_items = 6, 30
    train = ItemSets.from_lists([rng.choice(n_items, size=8, replace=False) for _ in range(n_users)], n_items)
    scores = torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(0))
    scores[torch.as_tensor(train.user_of_each_entry()), torch.as_tensor(train.indices)] = 10.0  # tempting
    top = top_unobserved(lambda users: scores[users], train, k=5)
    users = np.repeat(np.arange(n_users), 4000)
    probs = rank_probabilities(5, 0.3)
    items = sample_ranked_items(top, users, probs, count=2, rng=rng)
    assert items.shape == (users.size, 2)
    assert not train.contains(np.repeat(users, 2), items.ravel()).any()
    ranks = (top[users][:, :, None] == items[:, None, :]).argmax(1)  # position of each draw in its user's list
    np.testing.assert_allclose(np.bincount(ranks.ravel(), minlength=5) / ranks.size, probs, atol=0.01)


def test_cd_soft_target_bce_by_hand():
    # pair 1: student logit ln 3 (p = 0.75), teacher logit 0 -> q = 0.5: -(0.5 ln 0.75 + 0.5 ln 0.25) = 0.836988
    # pair 2: student logit -ln 4 (p = 0.2), teacher logit 2 ln 9, t = 2 -> q = 0.9:
    #         -(0.9 ln 0.2 + 0.1 ln 0.8) = 1.470808; the student's logit is not divided by t
    loss = soft_label_bce(torch.tensor([math.log(3.0), -math.log(4.0)]), torch.tensor([0.0, 2 * math.log(9.0)]), 2.0)
    assert loss.item() == pytest.approx((0.836988 + 1.470808) / 2, abs=1e-6)


# -- BD ------------------------------------------------------------------------------------------------------

def test_bd_sampling_weights_both_directions():
    rank_s = torch.tensor([0, 5, 200, 10])
    rank_t = torch.tensor([0, 0, 100, 20])
    # student: items the teacher ranks higher (rank_S > rank_T): tanh(0.01 * [0, 5, 100, -10]^+)
    torch.testing.assert_close(student_sampling_weights(rank_s, rank_t, 1e-2),
                               torch.tensor([0.0, math.tanh(0.05), math.tanh(1.0), 0.0]))
    # teacher: exp(1e-4 * (rank_T - rank_S)) = exp(1e-4 * [0, -5, -100, 10])
    torch.testing.assert_close(teacher_sampling_weights(rank_t, rank_s, 1e-4),
                               torch.tensor([1.0, math.exp(-5e-4), math.exp(-1e-2), math.exp(1e-3)]))


def test_bd_draws_follow_the_weights_and_skip_observed_items():
    weights = torch.tensor([[0.0, 1.0, 3.0, 9.0], [0.0, 0.0, 0.0, 5.0], [2.0, 0.0, 0.0, 0.0]])
    observed = torch.tensor([[False, False, False, True], [True, False, False, True], [False, False, True, True]])
    draws = draw_per_row(weights, observed, np.array([8000, 3000, 2]), torch.Generator().manual_seed(0))
    assert draws.shape == (11002,)
    first, second, third = draws[:8000], draws[8000:11000], draws[11000:]
    # row 0: item 3 is observed (weight 9 ignored); items 1, 2 in ratio 1 : 3
    np.testing.assert_allclose(np.bincount(first, minlength=4) / 8000, [0, 0.25, 0.75, 0], atol=0.02)
    # row 1: every unobserved weight is 0 -> uniform over the unobserved items 1, 2
    assert set(second.tolist()) == {1, 2} and abs((second == 1).mean() - 0.5) < 0.05
    assert third.tolist() == [0, 0]


def test_bd_pool_slots_give_every_pair_its_own_draws_each_epoch():
    split = board_split(n_users=6, n_items=10)
    torch.manual_seed(0)
    pair = BDPair(build_model("bpr", 6, 10, dim=4), build_model("bpr", 6, 10, dim=8))
    options = BDOptions(refresh_every=3, kd_items=2)
    sampler = BDSampler(split.train, pair, options, batch_size=4)
    rng = np.random.default_rng(0)
    sampler.start_epoch(1, rng)
    nnz = split.train.nnz
    assert sampler.student_pool.size == sampler.teacher_pool.size == 3 * 2 * nnz
    pool_users = np.repeat(split.train.user_of_each_entry(), 3 * 2)  # pools are laid out user by user
    assert not split.train.contains(pool_users, sampler.student_pool).any()
    assert not split.train.contains(pool_users, sampler.teacher_pool).any()
    sampler.student_pool = np.arange(3 * 2 * nnz)  # label the slots to see which ones an epoch reads
    sampler.refresh = lambda rng: None  # keep the labels through the period's first epoch
    seen = []
    for epoch in (1, 2, 3):
        slots = np.concatenate([b.kd_items.numpy().ravel() for b in sampler(epoch, rng)])
        assert np.unique(slots).size == slots.size == 2 * nnz  # each pair reads 2 slots, none shared
        seen.append(slots)
    assert np.unique(np.concatenate(seen)).size == 3 * 2 * nnz  # the 3 epochs of a period use disjoint slots


# -- end to end on the checkerboard ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teachers():
    split = board_split()
    config = TrainConfig(epochs=40, lr=0.02, eval_every=5, patience=0, progress=False, metric="HR@5")
    return split, {family: train_base_model(split, family, FAMILIES[family], config, batch_size=64).model
                   for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_student_learns_the_checkerboard(teachers, method, family):
    split, models = teachers
    teacher = models[family]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_config = config_at_fraction(family, FAMILIES[family], split.n_users, split.n_items, 0.5,
                                        tolerance=0.1).config
    options = {"rd": {"warmup_epochs": 5, "probe_items": 20}, "cd": {"top_n": 5, "refresh_every": 5},
               "bd": {"refresh_every": 5}}[method]
    run = train_kd_student(method, split, teacher, student_config,
                           TrainConfig(epochs=25, lr=0.02, eval_every=5, patience=0, progress=False, metric="HR@5"),
                           kd_weight=0.5, temperature=2.0, batch_size=64, options=options)
    assert run.train.best_epoch > 0 and run.train.epochs_run == 25
    assert run.model.family == family and run.model.num_parameters() < teacher.num_parameters()
    # random ranking of the test item among the 11 remaining candidates: HR@5 = 5/11; the structure gives 1
    assert run.test["HR@5"] >= 0.9 and run.valid["HR@5"] >= 0.9
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the caller's teacher was modified"
    if method == "bd":
        copy = run.extra["teacher"]
        assert copy is not teacher
        assert any(not torch.equal(before[k], v) for k, v in copy.state_dict().items()), "teacher copy not trained"
        torch.manual_seed(0)  # the student's initialisation (train_kd_student seeds with the train config's seed)
        init = build_model(family, split.n_users, split.n_items, **student_config)
        assert any(not torch.equal(init.state_dict()[k], v) for k, v in run.model.state_dict().items())
        assert run.extra["teacher_test"]["HR@5"] >= 0.9


def test_unknown_method_and_bad_options_are_refused(teachers):
    split, models = teachers
    config = TrainConfig(epochs=1, progress=False)
    with pytest.raises(ValueError, match="unknown distillation method"):
        train_kd_student("kd", split, models["bpr"], {"dim": 4}, config, kd_weight=1.0, temperature=1.0)
    with pytest.raises(ValueError, match="unknown CDOptions option"):
        train_kd_student("cd", split, models["bpr"], {"dim": 4}, config, kd_weight=1.0, temperature=1.0,
                         options={"N": 5})
