"""The KD baselines (ALGORITHMS.md section 4): each method's distinctive part and its per-batch training loss
against a hand-checked answer (tiny dimension-1 BPR models with fixed embeddings), the public-code pitfalls
pinned, the option defaults against the spec, and one smoke run per method x family on the checkerboard."""

import math

import numpy as np
import pytest
import torch

from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import train_base_model
from experiments.baselines import METHODS, bd, cd, rd, train_kd_student
from experiments.baselines.bd import (
    BDOptions,
    BDPair,
    BDSampler,
    bd_losses,
    draw_per_row,
    student_sampling_weights,
    teacher_sampling_weights,
)
from experiments.baselines.cd import CDOptions, cd_loss, rank_probabilities, sample_ranked_items
from experiments.baselines.common import KDBatch, full_ranks, options_from, soft_label_bce, top_unobserved
from experiments.baselines.rd import (
    RDOptions,
    RDSampler,
    discrepancy_weights,
    estimated_ranks,
    position_weights,
    rd_distillation_loss,
    rd_loss,
)
from shared.interactions import ItemSets
from shared.models import PairBatch, build_model, config_at_fraction
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


def fixed_bpr(users: list[float], items: list[float]):
    """A dimension-1 BPR model without L2 and with dense gradients: logit(u, i) = users[u] * items[i]."""
    model = build_model("bpr", len(users), len(items), dim=1, reg=0.0, sparse=False)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor(users)[:, None])
        model.item_emb.weight.copy_(torch.tensor(items)[:, None])
    return model


def kd_batch(user: int, pos: int, neg: int, kd_items: list[int], **extra: torch.Tensor | None) -> KDBatch:
    """One raw triple (user, pos, neg) with the KD items kd_items of that user: kd_items [1, m]."""
    raw = PairBatch(torch.tensor([user]), torch.tensor([pos]), torch.tensor([neg]))
    return KDBatch(raw, torch.tensor([kd_items]), dict(extra))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def nll(x: float) -> float:
    """-log sigmoid(x): BPR's loss on the score difference x and RD's loss on a candidate logit x."""
    return math.log(1 + math.exp(-x))


def bce(p: float, q: float) -> float:
    """Binary cross-entropy of the probability p against the soft label q."""
    return -(q * math.log(p) + (1 - q) * math.log(1 - p))


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


def test_option_defaults_follow_the_spec():
    # ALGORITHMS.md section 4: RD K=10, lambda_rd=1, mu=0.1, rank_S from 100 sampled items
    assert RDOptions() == RDOptions(k=10, lambda_rd=1.0, mu=0.1, warmup_epochs=10, probe_items=100, renormalize=False)
    # CD (no official code): our choices, student-guided as the spec's default
    assert CDOptions() == CDOptions(top_n=100, rank_decay=0.1, guide="student", kd_items=1, refresh_every=10)
    # BD: eps_s=1e-2, eps_t=1e-4, pools recomputed every 10 epochs, the teacher's KD weight 0.5
    assert BDOptions() == BDOptions(eps_s=1e-2, eps_t=1e-4, refresh_every=10, kd_items=1, teacher_kd_weight=0.5)


@pytest.mark.parametrize("method", METHODS)
def test_each_fit_passes_its_weights_and_the_teacher_to_its_batch_loss(method, monkeypatch):
    """The fit functions' closures call the module-level losses pinned below, with the caller's weights."""
    calls = []
    module, name = {"rd": (rd, "rd_loss"), "cd": (cd, "cd_loss"), "bd": (bd, "bd_losses")}[method]
    original = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    split = board_split(n_users=6, n_items=10)
    torch.manual_seed(0)
    teacher = build_model("bpr", 6, 10, dim=4)
    options = {"rd": {"k": 3, "lambda_rd": 2.0, "mu": 0.3, "warmup_epochs": 0, "probe_items": 5,
                      "renormalize": True},
               "cd": {"top_n": 3}, "bd": {"refresh_every": 1, "teacher_kd_weight": 0.25}}[method]
    run = train_kd_student(method, split, teacher, {"dim": 2}, TrainConfig(epochs=1, progress=False),
                           kd_weight=0.7, temperature=3.0, batch_size=64, options=options)
    assert calls
    args, kwargs = calls[0]
    assert args[0] is run.model  # the student learns
    if method == "rd":
        assert kwargs == {"kd_weight": 0.7, "mu": 0.3, "renormalize": True}
        torch.testing.assert_close(args[2], position_weights(3, 2.0))
        return
    users, items = torch.tensor([0, 1, 2]), torch.tensor([4, 5, 6])
    if method == "cd":
        assert kwargs == {"kd_weight": 0.7, "temperature": 3.0}
        assert args[1] is not teacher and not any(p.requires_grad for p in args[1].parameters())  # a frozen copy
        torch.testing.assert_close(args[1].score(users, items), teacher.score(users, items))
    else:
        assert kwargs == {"kd_weight": 0.7, "teacher_kd_weight": 0.25, "temperature": 3.0}
        assert args[1] is run.extra["teacher"]  # the trained teacher copy


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


@pytest.mark.parametrize("kd_weight", [0.0, 0.3, 1.0])
def test_rd_loss_by_hand_in_the_warm_up_and_after(kd_weight):
    # logits = item embeddings (user embedding 1): items 0..4 score 2, 1.5, 0.5, -1, 0
    student = fixed_bpr([1.0], [2.0, 1.5, 0.5, -1.0, 0.0])
    bpr = nll(2.0 - 0.5)  # the triple (0, 0, 2)
    w_a = np.array([1.0, math.exp(-1.0)]) / (1 + math.exp(-1.0))  # K = 2, lambda_rd = 1
    per_item = np.array([nll(-1.0), nll(0.0)])  # the teacher's top-2 items 3 and 4
    # warm-up (no probes): position weight alone
    warm = rd_loss(student, kd_batch(0, 0, 2, [3, 4]), position_weights(2, 1.0), kd_weight=kd_weight, mu=0.1)
    assert warm.item() == pytest.approx(bpr + kd_weight * (w_a * per_item).sum(), abs=1e-6)
    # after: probes 1, 2, 4, 3 score 1.5, 0.5, 0, -1 among 40 unobserved items; strictly above item 3 (-1): 3 of 4
    # -> rank_S = 40 * 3 / 4 = 30 at r = 0; above item 4 (0): 2 of 4 -> rank_S = 20 at r = 1; mu = 0.1
    w_b = np.array([math.tanh(0.1 * (30 - 0)), math.tanh(0.1 * (20 - 1))])
    probes = {"probes": torch.tensor([[1, 2, 4, 3]]), "n_unobserved": torch.tensor([40])}
    hybrid = rd_loss(student, kd_batch(0, 0, 2, [3, 4], **probes), position_weights(2, 1.0), kd_weight=kd_weight,
                     mu=0.1)
    assert hybrid.item() == pytest.approx(bpr + kd_weight * (w_a * w_b * per_item).sum(), abs=1e-6)
    renormalized = rd_loss(student, kd_batch(0, 0, 2, [3, 4], **probes), position_weights(2, 1.0),
                           kd_weight=kd_weight, mu=0.1, renormalize=True)
    w = w_a * w_b / (w_a * w_b).sum()
    assert renormalized.item() == pytest.approx(bpr + kd_weight * (w * per_item).sum(), abs=1e-6)


def test_rd_warm_up_ends_after_warmup_epochs_and_probes_skip_training_items():
    train = ItemSets.from_lists([[0, 1], [4, 5]], n_items=6)
    options = RDOptions(k=1, warmup_epochs=2, probe_items=20)
    sampler = RDSampler(train, teacher_top=np.array([[2], [3]]), options=options, batch_size=8)
    # the student ranks each user's teacher item first among its unobserved items: user 0 (embedding 1) scores
    # items 2..5 at 3, -2, 2, 0.5; user 1 (embedding -1) items 0..3 at -0.5, -0.5, -3, 2. So no probe scores
    # strictly higher, rank_S = 0 = r and w^b = tanh(0) = 0: the KD term vanishes once w^b applies.
    student = fixed_bpr([1.0, -1.0], [0.5, 0.5, 3.0, -2.0, 2.0, 0.5])
    users, rng = np.array([0, 1]), np.random.default_rng(0)
    raw = PairBatch(torch.tensor([0, 1]), torch.tensor([0, 4]), torch.tensor([3, 2]))
    bpr = (nll(0.5 - -2.0) + nll(-2.0 - -3.0)) / 2  # triples (0, 0, 3) and (1, 4, 2)
    kd = (nll(3.0) + nll(2.0)) / 2  # w^a = [1] for K = 1
    for epoch, expected in [(1, bpr + kd), (2, bpr + kd), (3, bpr), (4, bpr)]:
        kd_items, extra = sampler.kd_for(np.array([0, 2]), users, epoch, rng)
        assert kd_items.tolist() == [[2], [3]]
        assert (extra["probes"] is None) == (epoch <= 2)
        loss = rd_loss(student, KDBatch(raw, torch.from_numpy(kd_items), extra), position_weights(1, 1.0),
                       kd_weight=1.0, mu=0.1)
        assert loss.item() == pytest.approx(expected, abs=1e-6), epoch
    many = np.repeat(users, 200)
    _, extra = sampler.kd_for(np.zeros(many.size, dtype=np.int64), many, 3, rng)
    probes = extra["probes"].numpy()
    assert probes.shape == (400, 20) and extra["n_unobserved"].tolist() == [4] * 200 + [4] * 200
    assert not train.contains(np.repeat(many, 20), probes.ravel()).any()
    assert set(probes[:200].ravel().tolist()) == {2, 3, 4, 5} and set(probes[200:].ravel().tolist()) == {0, 1, 2, 3}


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


@pytest.mark.parametrize("kd_weight", [0.0, 0.5, 2.0])
def test_cd_loss_by_hand_with_soft_targets_from_the_frozen_teacher(kd_weight):
    student = fixed_bpr([1.0], [1.0, 0.0, math.log(3.0), -math.log(4.0), 0.5])
    teacher = fixed_bpr([2.0], [5.0, 5.0, 0.0, math.log(9.0), 5.0])  # a trainable model: its grad must stay None
    # KD items 2, 3: student logits ln 3, -ln 4 -> p = 0.75, 0.2 (not divided by t); teacher logits 0, 2 ln 9
    # -> q = sigmoid(0 / 2), sigmoid(ln 9) = 0.5, 0.9 (t = 2)
    p, q = np.array([0.75, 0.2]), np.array([sigmoid(0.0 / 2), sigmoid(2 * math.log(9.0) / 2)])
    loss = cd_loss(student, teacher, kd_batch(0, 0, 4, [2, 3]), kd_weight=kd_weight, temperature=2.0)
    kd = (bce(p[0], q[0]) + bce(p[1], q[1])) / 2
    assert loss.item() == pytest.approx(nll(1.0 - 0.5) + kd_weight * kd, abs=1e-6)
    loss.backward()
    assert all(param.grad is None for param in teacher.parameters())
    # d BCE(sigmoid(s), q) / ds = sigmoid(s) - q, averaged over the 2 KD items, times the user embedding 1;
    # items 2 and 3 are not in the triple, so their gradient is the KD term's alone
    grad = student.item_emb.weight.grad[:, 0]
    torch.testing.assert_close(grad[2:4], torch.tensor(kd_weight * (p - q) / 2, dtype=torch.float32))


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


def test_bd_refresh_draws_the_items_the_two_rankings_disagree_on():
    # user 0 (embedding 1) trained on item 0; user 1 (embedding -1) on items 0 and 4
    train = ItemSets.from_lists([[0], [0, 4]], n_items=5)
    student = fixed_bpr([1.0, -1.0], [9.0, 4.0, 3.0, 2.0, 1.0])
    teacher = fixed_bpr([1.0, -1.0], [9.0, 1.0, 3.0, 4.0, 2.0])
    options = BDOptions(eps_s=0.5, eps_t=0.5, refresh_every=1, kd_items=4000)
    sampler = BDSampler(train, BDPair(student, teacher), options, batch_size=8)
    sampler.refresh(np.random.default_rng(0))
    # 0-based ranks among the unobserved items (training items at -inf rank below them):
    # user 0, items 1..4: rank_S = [0, 1, 2, 3], rank_T = [3, 1, 0, 2] -> rank_S - rank_T = [-3, 0, 2, 1]
    # user 1, items 1..3: rank_S = [2, 1, 0],    rank_T = [0, 1, 2]    -> rank_S - rank_T = [2, 0, -2]
    expected_student = [np.array([0, 0, 0, math.tanh(0.5 * 2), math.tanh(0.5 * 1)]),
                        np.array([0, math.tanh(0.5 * 2), 0, 0, 0])]
    expected_teacher = [np.array([0, math.exp(0.5 * 3), 1, math.exp(-0.5 * 2), math.exp(-0.5 * 1)]),
                        np.array([0, math.exp(-0.5 * 2), 1, math.exp(0.5 * 2), 0])]
    for user, (start, stop) in enumerate([(0, 4000), (4000, 12000)]):  # pools are laid out user by user
        for pool, weights in [(sampler.student_pool, expected_student[user]),
                              (sampler.teacher_pool, expected_teacher[user])]:
            drawn = pool[start:stop]
            assert not train.contains(np.full(drawn.size, user), drawn).any()
            np.testing.assert_allclose(np.bincount(drawn, minlength=5) / drawn.size, weights / weights.sum(),
                                       atol=0.025)


def bd_fixture():
    """Student and teacher as dimension-1 BPR models: one triple (0, 0, 1), student's KD item 2, teacher's 3."""
    student = fixed_bpr([1.0], [1.0, 0.0, math.log(3.0), -math.log(4.0)])
    teacher = fixed_bpr([2.0], [0.5, -0.5, 0.0, math.log(9.0)])
    return student, teacher, kd_batch(0, 0, 1, [2], teacher_items=torch.tensor([[3]]))


# t = 2. Student's term on its item 2: s^S = ln 3 -> p = 0.75; target sigmoid(s^T / t) = sigmoid(0 / 2) = 0.5.
# Teacher's term on its item 3: s^T = 2 ln 9 -> p = 81/82; target sigmoid(s^S / t) = sigmoid(-ln 4 / 2) = 1/3.
BD_STUDENT = (0.75, sigmoid(0.0 / 2))
BD_TEACHER = (sigmoid(2 * math.log(9.0)), sigmoid(-math.log(4.0) / 2))


@pytest.mark.parametrize(("kd_weight", "teacher_kd_weight"), [(1.0, 0.5), (0.0, 0.0), (0.3, 2.0)])
def test_bd_losses_by_hand_each_direction_on_its_own_items(kd_weight, teacher_kd_weight):
    student, teacher, batch = bd_fixture()
    loss_s, loss_t = bd_losses(student, teacher, batch, kd_weight=kd_weight, teacher_kd_weight=teacher_kd_weight,
                               temperature=2.0)
    # BPR on the triple (0, 0, 1): student 1 - 0, teacher 2 * 0.5 - 2 * -0.5
    assert loss_s.item() == pytest.approx(nll(1.0 - 0.0) + kd_weight * bce(*BD_STUDENT), abs=1e-6)
    assert loss_t.item() == pytest.approx(nll(1.0 - -1.0) + teacher_kd_weight * bce(*BD_TEACHER), abs=1e-6)


def test_bd_each_loss_trains_only_its_own_model_on_its_own_items():
    student, teacher, batch = bd_fixture()
    loss_s, loss_t = bd_losses(student, teacher, batch, kd_weight=0.8, teacher_kd_weight=0.5, temperature=2.0)
    params = [*student.parameters(), *teacher.parameters()]  # user_emb, item_emb of each
    s_user, s_item, t_user, t_item = torch.autograd.grad(loss_s, params, allow_unused=True)
    assert t_user is None and t_item is None  # the teacher's logit is a target in the student's loss
    # d BCE(sigmoid(s), q) / ds = p - q on the student's item 2 alone (item 3 is the teacher's), times user emb 1
    torch.testing.assert_close(s_item[2:, 0], torch.tensor([0.8 * (BD_STUDENT[0] - BD_STUDENT[1]), 0.0]))
    s_user, s_item, t_user, t_item = torch.autograd.grad(loss_t, params, allow_unused=True)
    assert s_user is None and s_item is None
    # on the teacher's item 3 alone, times its user embedding 2
    torch.testing.assert_close(t_item[2:, 0], torch.tensor([0.0, 0.5 * (BD_TEACHER[0] - BD_TEACHER[1]) * 2]))


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
