"""Export object (tokens, soft targets, JSON round trip) and the data-free student built from it alone."""

import inspect
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import shared.distillation as distill
from data_owner.export import build_export, user_token
from data_owner.gan.lists import GeneratedLists
from shared.distillation import DistillConfig, distill_student, export_arrays
from shared.evaluation import evaluate
from shared.interactions import ItemSets
from shared.losses import retemper, soft_target_bce, soft_targets
from shared.models import BPR, NeuMF
from shared.schemas import ExportBundle, ExportManifest, GeneratorCard, UserRecord
from tests.conftest import checkerboard

SECRET = b"test-secret-of-enough-length"


def test_token_is_a_keyed_hmac():
    a = user_token(SECRET, "vendor", "42")
    assert len(a) == 64 and a == user_token(SECRET, "vendor", "42")
    assert a != user_token(SECRET, "other-vendor", "42")  # per-consumer pseudonyms
    assert a != user_token(b"another-secret-of-length", "vendor", "42")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        user_token(b"short", "vendor", "42")


def test_soft_target_loss_known_values():
    logits = torch.tensor([0.0, 2.0])
    q = soft_targets(logits, temperature=2.0)
    torch.testing.assert_close(q, torch.sigmoid(torch.tensor([0.0, 1.0])))
    # BCE(sigmoid(0), 0.5) = log 2
    assert soft_target_bce(torch.tensor([0.0]), torch.tensor([0.5]), 1.0).item() == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(logits, 0.0)


def bce(p, q):
    return -(q * math.log(p) + (1 - q) * math.log(1 - p))


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_soft_target_bce_divides_the_students_logit_by_t():
    # t = 2, nonzero logits: mean_i BCE(sigmoid(z_i / 2), q_i)
    z, q = [1.0, -3.0, 4.0], [0.8, 0.3, 0.6]
    want = (bce(sig(0.5), 0.8) + bce(sig(-1.5), 0.3) + bce(sig(2.0), 0.6)) / 3  # 0.5662...
    got = soft_target_bce(torch.tensor(z), torch.tensor(q), 2.0).item()
    assert got == pytest.approx(want, rel=1e-6)
    assert soft_target_bce(torch.tensor(z), torch.tensor(q), 1.0).item() != pytest.approx(want, rel=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        soft_target_bce(torch.tensor(z), torch.tensor(q), -1.0)


class _Captured(Exception):
    """Raised by the stand-in for `fit` once distill_student has handed it the model, sampler and loss."""


def captured_training(export, monkeypatch, **config):
    """(model, sampler, loss_fn) that distill_student would train with (training itself is skipped)."""
    seen = {}

    def fake_fit(model, batches, validate, train_config, loss_fn=None, **kwargs):
        seen.update(model=model, sampler=batches, loss_fn=loss_fn, validate=validate)
        raise _Captured

    monkeypatch.setattr(distill, "fit", fake_fit)
    with pytest.raises(_Captured):
        distill_student(export, DistillConfig(progress=False, **config))
    return seen["model"], seen["sampler"], seen["loss_fn"], seen["validate"]


def tiny_gd_export():
    """1 user, catalog of 3 items, list [0, 2]: item 1 is the only possible negative. Teacher BPR d=2, t=2."""
    teacher = BPR(1, 3, dim=2, reg=0.01)
    with torch.no_grad():
        teacher.user_emb.weight.copy_(torch.tensor([[1.0, 0.5]]))
        teacher.item_emb.weight.copy_(torch.tensor([[2.0, -1.0], [0.3, 0.3], [-1.0, 2.0]]))
    lists = GeneratedLists(items=np.array([[0, 2]]), scores=np.ones((1, 2), np.float32), include_observed=True,
                           seed=0, n_items=3)
    return build_export(teacher, lists, np.array(["u0"]), np.array(["a", "b", "c"]), 2.0, SECRET, "vendor")


def test_student_loss_is_l_gf_plus_lambda_l_gd_by_hand(monkeypatch):
    export = tiny_gd_export()
    # the shipped soft targets: q = sigmoid(z^T / 2), z^T_0 = 2 - 0.5 = 1.5, z^T_2 = -1 + 1 = 0
    q = dict(zip(export.users[0].items, export.users[0].soft_targets, strict=True))
    assert q["a"] == pytest.approx(sig(0.75), rel=1e-6) and q["c"] == pytest.approx(0.5, rel=1e-6)
    p, b = 1.5, {0: 0.8, 1: -0.4, 2: 0.2}  # student: BPR d = 1 (half of the teacher's 8 parameters)
    reg = 0.01  # the teacher's (DistillConfig.reg None)
    # L_GF: BPR on (u, i, 1) for listed i in {0, 2}: mean -log sigmoid(p*b_i - p*b_1) + reg * sum of squares / B
    l_gf = sum(-math.log(sig(p * b[i] - p * b[1])) for i in (0, 2)) / 2
    l_gf += reg * sum(p**2 + b[i] ** 2 + b[1] ** 2 for i in (0, 2)) / 2
    # L_GD on the listed items only: mean BCE(sigmoid(p*b_i / t), q_i), t = 2
    l_gd = (bce(sig(p * b[0] / 2), q["a"]) + bce(sig(p * b[2] / 2), q["c"])) / 2
    totals = {}
    for lam in (0.7, 0.0, 1.4):
        model, sampler, loss_fn, validate = captured_training(export, monkeypatch, lam=lam)
        assert validate is None  # a list of 2 is too short for the hold-out
        assert isinstance(model, BPR) and model.dim == 1 and model.reg == reg
        with torch.no_grad():
            model.user_emb.weight.fill_(p)
            model.item_emb.weight.copy_(torch.tensor([[b[0]], [b[1]], [b[2]]]))
        batches = [batch for epoch in range(20) for batch in sampler(epoch, np.random.default_rng(epoch))]
        for batch in batches:
            assert sorted(batch.pairs.pos_items.tolist()) == [0, 2]  # every listed item once per epoch
            assert batch.pairs.neg_items.tolist() == [1, 1]  # the one catalog item outside the list
            got = loss_fn(batch).item()
            assert got == pytest.approx(l_gf + lam * l_gd, rel=1e-5)
        totals[lam] = got
    assert totals[0.0] == pytest.approx(l_gf, rel=1e-5)
    assert totals[0.7] - totals[0.0] == pytest.approx(0.7 * l_gd, rel=1e-4)
    assert totals[1.4] - totals[0.0] == pytest.approx(1.4 * l_gd, rel=1e-4)


def make_export(n_users=40, n_items=20, length=6, family="bpr"):
    train, _, _ = checkerboard(n_users=n_users, n_items=n_items)
    torch.manual_seed(0)
    teacher = BPR(n_users, n_items, dim=8) if family == "bpr" else NeuMF(n_users, n_items, 8, 8, [8, 4])
    # lists: a random part of each user's own half of the catalog (what a good generator returns)
    rng = np.random.default_rng(0)
    half = n_items // 2
    items = np.array([rng.permutation(half)[:length] + (0 if u % 2 == 0 else half) for u in range(n_users)])
    lists = GeneratedLists(items=items, scores=np.ones(items.shape, np.float32), include_observed=True, seed=0,
                           n_items=n_items)
    user_ids = np.array([f"user-{u}" for u in range(n_users)])
    item_ids = np.array([f"item-{i}" for i in range(n_items)])
    return build_export(teacher, lists, user_ids, item_ids, 2.0, SECRET, "vendor"), train, teacher


def test_export_round_trips_through_json_and_hides_raw_ids():
    export, _, teacher = make_export()
    text = export.model_dump_json()
    again = ExportBundle.model_validate_json(text)
    assert again == export
    assert "user-3" not in text  # raw ids never cross
    assert export.manifest.teacher.num_parameters == teacher.num_parameters()
    assert export.manifest.list_length == 6 and export.manifest.privacy.include_observed
    assert len(export.manifest.export_id) == 64
    # the same content gives the same export id
    assert make_export()[0].manifest.export_id == export.manifest.export_id


def test_generator_card_makes_a_version_1_1_manifest_and_enters_the_export_id():
    plain, _, _ = make_export()
    assert plain.manifest.schema_version == "1" and plain.manifest.generator is None
    teacher = BPR(40, 20, dim=4)
    card = GeneratorCard(family="itemknn", settings={"k": 50, "shrink": 10.0},
                         lists={"list_length": 6, "coverage": 0.5, "observed_share": 0.0})
    lists = GeneratedLists(items=np.tile(np.arange(6), (40, 1)), scores=np.ones((40, 6), np.float32),
                           include_observed=False, seed=0, n_items=20)
    users, items = np.array([f"user-{u}" for u in range(40)]), np.array([f"item-{i}" for i in range(20)])
    with_card = build_export(teacher, lists, users, items, 2.0, SECRET, "vendor", generator=card)
    without = build_export(teacher, lists, users, items, 2.0, SECRET, "vendor")
    assert with_card.manifest.schema_version == "1.1" and with_card.manifest.generator == card
    assert with_card.manifest.export_id != without.manifest.export_id
    assert ExportBundle.model_validate_json(with_card.model_dump_json()) == with_card
    # the version and the card go together, both ways
    fields = with_card.manifest.model_dump()
    with pytest.raises(ValidationError, match="goes with a generator card"):
        ExportManifest.model_validate({**fields, "schema_version": "1"})
    with pytest.raises(ValidationError, match="goes with a generator card"):
        ExportManifest.model_validate({**fields, "generator": None})
    with pytest.raises(ValidationError):
        GeneratorCard(family="Not A Family!", settings={}, lists={})


def owner_users(export):
    """Owner user index of each export row (the owner can recompute every token; the consumer cannot)."""
    index = {user_token(SECRET, "vendor", f"user-{u}"): u for u in range(export.manifest.n_users)}
    return np.array([index[record.token] for record in export.users])


def test_export_is_in_token_order_and_soft_targets_are_the_teachers():
    export, _, teacher = make_export()
    tokens = [record.token for record in export.users]
    assert tokens == sorted(tokens)
    lists, targets, _ = export_arrays(export)
    expected = torch.sigmoid(teacher.score(torch.as_tensor(owner_users(export)), torch.as_tensor(lists)) / 2.0)
    np.testing.assert_allclose(targets, expected.detach().numpy(), rtol=1e-5)


def test_user_records_are_validated():
    with pytest.raises(ValidationError, match="align"):
        UserRecord(token="ab" * 32, items=["a", "b"], soft_targets=[0.5])
    with pytest.raises(ValidationError, match="repeat"):
        UserRecord(token="ab" * 32, items=["a", "a"], soft_targets=[0.5, 0.5])
    with pytest.raises(ValidationError):
        UserRecord(token="ab" * 32, items=["a"], soft_targets=[1.5])
    with pytest.raises(ValidationError):
        UserRecord(token="ab" * 32, items=["a"], soft_targets=[0.5], raw_user_id="7")


def test_distill_takes_only_an_export():
    params = list(inspect.signature(distill_student).parameters)
    assert params == ["export", "config", "device"]


@pytest.mark.parametrize("family,fraction", [("bpr", 0.5), ("neumf", 0.3)])
def test_student_learns_from_the_export_alone(family, fraction):
    export, train, _ = make_export(family=family, n_items=40, length=12)
    run = distill_student(export, DistillConfig(fraction=fraction, epochs=20, lr=0.05, eval_every=10, patience=0,
                                                 batch_size=64, progress=False))
    assert run.tokens == [r.token for r in export.users]
    assert abs(run.sizing.ratio - fraction) <= 0.02 * fraction
    # each user's unlisted items of their own half (listed by other users of the group) rank above the other half
    lists, _, _ = export_arrays(export)
    users = np.arange(40)  # student rows; owner_users maps them to the owner's users (whose parity is the group)
    groups = owner_users(export) % 2
    own_unlisted = np.array([np.setdiff1d(np.arange(20) + 20 * groups[u], lists[u])[0] for u in users])
    listed = ItemSets.from_lists(list(lists), 40)
    with torch.no_grad():
        result = evaluate(run.model.score_all, users, own_unlisted, exclude=[listed], ks=(8,))
    # 8 own-half unlisted items vs 20 of the other half: chance is 0.29; seeds 0-5 gave 0.825-1.0 (BPR)
    assert result["HR@8"] >= 0.75


def test_retemper_moves_soft_targets_to_another_temperature():
    z = torch.tensor([3.0, -1.5, 0.0, 12.0])
    q2 = torch.sigmoid(z / 2)
    assert torch.allclose(retemper(q2, 2.0, 5.0), torch.sigmoid(z / 5), atol=1e-6)
    assert torch.allclose(retemper(q2, 2.0, 2.0), q2, atol=1e-7)
    assert torch.isfinite(retemper(torch.tensor([0.0, 1.0]), 1.0, 2.0)).all()  # saturated targets stay finite
    with pytest.raises(ValueError, match="positive"):
        retemper(q2, 2.0, 0.0)


def test_a_student_temperature_other_than_the_exports_re_tempers_the_soft_targets(monkeypatch):
    export = tiny_gd_export()  # shipped at t = 2: z^T = 1.5 (item a) and 0 (item c)
    _, sampler, _, _ = captured_training(export, monkeypatch, temperature=5.0)
    batch = next(iter(sampler(0, np.random.default_rng(0))))
    targets = dict(zip(batch.pairs.pos_items.tolist(), batch.soft_targets.tolist(), strict=True))
    # eq. 6 with one t: q = sigmoid(z^T / 5), not the shipped sigmoid(z^T / 2)
    assert targets[0] == pytest.approx(sig(1.5 / 5), rel=1e-6)
    assert targets[2] == pytest.approx(0.5, rel=1e-6)


def test_weighted_transfer_weighs_each_listed_pair_by_its_soft_target_by_hand(monkeypatch):
    export = tiny_gd_export()
    q = dict(zip(export.users[0].items, export.users[0].soft_targets, strict=True))
    w = {0: q["a"] / ((q["a"] + q["c"]) / 2), 2: q["c"] / ((q["a"] + q["c"]) / 2)}  # q / the user's mean q
    p, b, reg = 1.5, {0: 0.8, 1: -0.4, 2: 0.2}, 0.01
    l_gf = sum(-w[i] * math.log(sig(p * b[i] - p * b[1])) for i in (0, 2)) / 2
    l_gf += reg * sum(p**2 + b[i] ** 2 + b[1] ** 2 for i in (0, 2)) / 2
    l_gd = (bce(sig(p * b[0] / 2), q["a"]) + bce(sig(p * b[2] / 2), q["c"])) / 2
    model, sampler, loss_fn, _ = captured_training(export, monkeypatch, lam=0.7, transfer="weighted")
    with torch.no_grad():
        model.user_emb.weight.fill_(p)
        model.item_emb.weight.copy_(torch.tensor([[b[0]], [b[1]], [b[2]]]))
    for batch in sampler(0, np.random.default_rng(0)):
        assert loss_fn(batch).item() == pytest.approx(l_gf + 0.7 * l_gd, rel=1e-5)


def test_listwise_transfer_fits_the_teachers_softmax_over_the_list_by_hand(monkeypatch):
    export = tiny_gd_export()
    q = dict(zip(export.users[0].items, export.users[0].soft_targets, strict=True))
    z = {0: 2 * math.log(q["a"] / (1 - q["a"])), 2: 2 * math.log(q["c"] / (1 - q["c"]))}  # z^T = t logit(q)
    p_t = {i: math.exp(z[i] / 2) / (math.exp(z[0] / 2) + math.exp(z[2] / 2)) for i in (0, 2)}
    p, b, reg, t = 1.5, {0: 0.8, 1: -0.4, 2: 0.2}, 0.01, 2.0
    model, sampler, loss_fn, _ = captured_training(export, monkeypatch, lam=0.7, transfer="listwise", negatives=1)
    with torch.no_grad():
        model.user_emb.weight.fill_(p)
        model.item_emb.weight.copy_(torch.tensor([[b[0]], [b[1]], [b[2]]]))
    # the student's softmax over the list (0, 2) and the sampled item (1), at t
    s = {i: p * b[i] / t for i in (0, 1, 2)}
    log_norm = math.log(sum(math.exp(v) for v in s.values()))
    l_list = -sum(p_t[i] * (s[i] - log_norm) for i in (0, 2))
    l_gf = sum(-math.log(sig(p * b[i] - p * b[1])) for i in (0, 2)) / 2
    l_gf += reg * sum(p**2 + b[i] ** 2 + b[1] ** 2 for i in (0, 2)) / 2
    l_gd = (bce(sig(p * b[0] / 2), q["a"]) + bce(sig(p * b[2] / 2), q["c"])) / 2
    batches = list(sampler(0, np.random.default_rng(0)))
    assert len(batches) == 1 and batches[0].negatives.tolist() == [[1]]
    assert loss_fn(batches[0]).item() == pytest.approx(l_gf + 0.7 * (l_gd + l_list), rel=1e-5)


def test_the_students_regularisation_is_chosen_by_list_fidelity_among_the_factors():
    export, _, teacher = make_export(length=8)
    run = distill_student(export, DistillConfig(reg_factors=(1.0, 0.01), epochs=6, eval_every=2, progress=False,
                                                lr=0.05))
    tried = run.extra["reg_candidates"]
    assert [c["reg"] for c in tried] == pytest.approx([teacher.reg, teacher.reg * 0.01])
    best = max(tried, key=lambda c: c["fidelity_ndcg50"])
    assert run.extra["reg"] == pytest.approx(best["reg"]) and run.model.reg == pytest.approx(best["reg"])
    single = distill_student(export, DistillConfig(reg_factors=(1.0,), epochs=6, eval_every=2, progress=False,
                                                   lr=0.05))
    assert "reg_candidates" not in single.extra and single.model.reg == teacher.reg
    with pytest.raises(ValueError, match="reg_factors"):
        DistillConfig(reg_factors=())
    with pytest.raises(ValueError, match="transfer must be one of"):
        DistillConfig(transfer="ranking")
