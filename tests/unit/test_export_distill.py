"""Export object (tokens, soft targets, JSON round trip) and the data-free student built from it alone."""

import inspect

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from data_owner.export import build_export, user_token
from data_owner.gan.lists import GeneratedLists
from model_consumer.distill import DistillConfig, distill_student, export_arrays
from shared.evaluation import evaluate
from shared.interactions import ItemSets
from shared.losses import soft_target_bce, soft_targets
from shared.models import BPR, NeuMF
from shared.schemas import ExportBundle, UserRecord
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
    assert result["HR@8"] >= 0.9  # 8 own-half unlisted items vs 20 of the other half: chance is 0.29
