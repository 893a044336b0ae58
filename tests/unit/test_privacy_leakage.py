"""Leakage metrics with known answers (data_owner.privacy.leakage): AUC and TPR at low FPR against textbook
cases and brute force, reconstruction against hand-counted lists, the report on a real tiny export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from data_owner.data.split import LeaveOneOutSplit
from data_owner.export import build_export
from data_owner.gan.lists import GeneratedLists
from data_owner.privacy import (
    export_pairs,
    held_out_pairs,
    leakage_report,
    membership,
    popularity_lists,
    reconstruction,
    roc_auc,
    soft_target_scorer,
    tpr_at_fpr,
)
from data_owner.privacy.leakage import EXPORT_ROW, HISTORY_ROW, POPULARITY_ROW, ExportedPairs
from shared.interactions import ItemSets
from shared.models import build_model
from tests.conftest import checkerboard

SECRET = b"leakage-test-secret-0123456789"

# -- membership: rank statistics


def test_auc_of_identical_score_sets_is_one_half():
    assert roc_auc([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == 0.5
    assert roc_auc([0.3] * 4, [0.3] * 7) == 0.5  # all tied: each pair counts one half


def test_auc_of_a_perfect_and_a_reversed_separation():
    assert roc_auc([0.8, 0.9], [0.1, 0.2, 0.3]) == 1.0
    assert roc_auc([0.1, 0.2], [0.8, 0.9, 0.7]) == 0.0


def test_auc_of_a_hand_counted_case():
    # member/non-member pairs: 0.9 beats both, 0.8 beats both, 0.4 beats 0.3 only -> 5 of 6
    assert roc_auc([0.9, 0.8, 0.4], [0.7, 0.3]) == pytest.approx(5 / 6)
    # a tie counts one half: (1 + 0.5) / 2
    assert roc_auc([0.5, 0.9], [0.5]) == pytest.approx(0.75)


def test_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    members = rng.integers(0, 6, 40).astype(float)
    nonmembers = rng.integers(0, 6, 55).astype(float)
    diff = members[:, None] - nonmembers[None, :]
    brute = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert roc_auc(members, nonmembers) == pytest.approx(brute, abs=1e-12)


def test_auc_of_two_samples_from_one_distribution_is_near_one_half():
    rng = np.random.default_rng(1)
    n = 20_000
    auc = roc_auc(rng.normal(size=n), rng.normal(size=n))
    assert abs(auc - 0.5) < 5 * math.sqrt(1 / (6 * n))  # the AUC's standard error under the null, n = m


def test_tpr_at_one_percent_fpr():
    nonmembers = np.arange(100, dtype=float)  # 0..99: one false alarm allowed, so tau = 98
    assert tpr_at_fpr([98.5, 99.5, 50.0], nonmembers) == pytest.approx(2 / 3)
    assert tpr_at_fpr([200.0, 300.0], nonmembers) == 1.0
    assert tpr_at_fpr([98.0], nonmembers) == 0.0  # equal to tau: not flagged
    # fewer than 100 non-members: no false alarm allowed, only scores above every non-member count
    assert tpr_at_fpr([5.0, 3.5], [1.0, 2.0, 4.0]) == 0.5


def test_tpr_at_low_fpr_of_one_distribution_is_about_the_fpr():
    rng = np.random.default_rng(2)
    assert tpr_at_fpr(rng.normal(size=20_000), rng.normal(size=20_000)) == pytest.approx(0.01, abs=0.004)


def test_membership_refuses_empty_or_nan_scores():
    with pytest.raises(ValueError, match="member_scores is empty"):
        membership([], [0.1])
    with pytest.raises(ValueError, match="nonmember_scores contains NaN"):
        membership([0.2], [float("nan")])
    with pytest.raises(ValueError, match="max_fpr must lie in"):
        tpr_at_fpr([0.2], [0.1], max_fpr=1.5)
    result = membership([0.9, 0.8], [0.1, 0.2, 0.3])
    assert (result.auc, result.tpr_at_low_fpr, result.n_members, result.n_nonmembers) == (1.0, 1.0, 2, 3)


# -- reconstruction


def test_a_list_equal_to_the_history_gives_precision_recall_and_subset_one():
    train, _, _ = checkerboard()
    result = reconstruction(train, train)
    assert (result.precision, result.recall, result.subset_share) == (1.0, 1.0, 1.0)


def test_a_list_outside_the_history_gives_zero():
    train = ItemSets.from_lists([[0, 1], [2, 3]], 6)
    result = reconstruction(ItemSets.from_lists([[4, 5], [0, 1]], 6), train)
    assert (result.precision, result.recall, result.subset_share) == (0.0, 0.0, 0.0)


def test_a_hand_counted_case():
    train = ItemSets.from_lists([[0, 1, 2, 3], [4, 5]], 10)
    lists = ItemSets.from_lists([[0, 1, 8, 9], [4, 5]], 10)
    result = reconstruction(lists, train)
    assert result.precision == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert result.recall == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert result.subset_share == 0.5 and result.mean_list_length == 3.0 and result.n_users == 2


def test_a_random_list_hits_at_the_base_rate():
    rng = np.random.default_rng(0)
    n_users, n_items = 500, 1000
    train = ItemSets.from_lists([rng.choice(n_items, 100, replace=False) for _ in range(n_users)], n_items)
    lists = ItemSets.from_lists([rng.choice(n_items, 50, replace=False) for _ in range(n_users)], n_items)
    result = reconstruction(lists, train)
    assert result.precision == pytest.approx(0.1, abs=0.01)  # |T_u| / n_items
    assert result.recall == pytest.approx(0.05, abs=0.005)  # |L_u| / n_items
    assert result.subset_share == 0.0


def test_users_without_a_list_or_history_are_left_out_of_the_means():
    train = ItemSets.from_lists([[0, 1], [], [3]], 5)
    lists = ItemSets.from_lists([[0], [2], []], 5)
    result = reconstruction(lists, train)
    assert result.n_users == 2 and result.precision == 0.5 and result.recall == 0.5 and result.subset_share == 0.5
    with pytest.raises(ValueError, match="same users and catalog"):
        reconstruction(ItemSets.from_lists([[0]], 5), train)


def test_popularity_lists_are_the_most_counted_items_for_everyone():
    train = ItemSets.from_lists([[3, 4], [3, 4], [3, 1], [2]], 6)
    top = popularity_lists(train, 3)
    for u in range(4):
        assert top.row(u).tolist() == [1, 3, 4]  # counts 3:3, 4:2, then 1 and 2 tie at 1: the lower index
    with pytest.raises(ValueError, match="list length"):
        popularity_lists(train, 7)


# -- the report, on a real (tiny, untrained) export


def tiny_split() -> LeaveOneOutSplit:
    train, valid, test = checkerboard(n_users=40, n_items=20)
    return LeaveOneOutSplit(train=train, valid_item=valid, test_item=test, user_ids=np.arange(100, 140),
                            item_ids=np.arange(500, 520), has_timestamps=False, source="checkerboard")


def tiny_export(split: LeaveOneOutSplit, lists: np.ndarray, temperature: float = 2.0):
    import torch

    torch.manual_seed(0)
    teacher = build_model("bpr", split.n_users, split.n_items, dim=8)
    generated = GeneratedLists(items=lists, scores=np.zeros(lists.shape, np.float32), include_observed=True,
                               seed=0, n_items=split.n_items)
    bundle = build_export(teacher, generated, split.user_ids, split.item_ids, temperature, SECRET, "vendor")
    return teacher, bundle


def history_lists(split: LeaveOneOutSplit, length: int) -> np.ndarray:
    return np.stack([split.train.row(u)[:length] for u in range(split.n_users)])


def test_export_pairs_map_tokens_and_items_back_to_the_owners_indices():
    split = tiny_split()
    lists = history_lists(split, 5)
    teacher, bundle = tiny_export(split, lists)
    pairs = export_pairs(bundle, split, SECRET, "vendor")
    assert pairs.as_item_sets().keys().tolist() == ItemSets.from_lists(list(lists), split.n_items).keys().tolist()
    recomputed = soft_target_scorer(teacher, 2.0)(pairs.users, pairs.items)
    assert np.max(np.abs(recomputed - pairs.soft_targets)) < 1e-6
    with pytest.raises(ValueError, match="not tokens of this data's users"):
        export_pairs(bundle, split, b"another-secret-0123456789", "vendor")
    with pytest.raises(ValueError, match="not tokens of this data's users"):
        export_pairs(bundle, split, SECRET, "someone-else")


def test_report_of_an_export_of_history_items():
    split = tiny_split()
    teacher, bundle = tiny_export(split, history_lists(split, 5))
    report = leakage_report(split, export_pairs(bundle, split, SECRET, "vendor"), soft_target_scorer(teacher, 2.0),
                            context={"dataset": "checkerboard"})
    exported = report.row(EXPORT_ROW)
    assert (exported.precision, exported.subset_share) == (1.0, 1.0)
    assert exported.recall == pytest.approx(5 / 8)  # 8 training items per user, 5 listed
    assert exported.n_members == 40 * 5 and exported.n_nonmembers == 80
    history = report.row(HISTORY_ROW)
    assert (history.precision, history.recall, history.subset_share) == (1.0, 1.0, 1.0)
    assert history.n_members == split.train.nnz
    popularity = report.row(POPULARITY_ROW)
    assert popularity.mean_list_length == 5.0 and 0.0 <= popularity.precision <= 1.0
    for row in report.rows:
        assert 0.0 <= row.membership_auc <= 1.0 and 0.0 <= row.tpr_at_low_fpr <= 1.0
    assert report.context["soft_target_max_deviation"] < 1e-6

    data = json.loads(report.to_json())
    assert [r["name"] for r in data["rows"]] == [EXPORT_ROW, POPULARITY_ROW, HISTORY_ROW]
    assert data["rows"][0]["precision"] == 1.0 and data["context"]["dataset"] == "checkerboard"
    markdown = report.to_markdown()
    assert "| list | mean L | precision | recall | subset of T_u | membership AUC | TPR@1% FPR |" in markdown
    assert f"| {EXPORT_ROW} | 5.0 | 1.0000 | 0.6250 | 1.0000 |" in markdown


def test_membership_of_a_memorising_scorer_is_one_and_of_a_blind_one_one_half():
    split = tiny_split()
    lists = history_lists(split, 4)
    pairs = ExportedPairs(users=np.repeat(np.arange(40), 4), items=lists.ravel(),
                          soft_targets=np.full(160, 0.9), n_users=40, n_items=20)

    def memorising(users, items):  # 0.9 on training items, 0.2 on anything else
        return np.where(split.train.contains(users, items), 0.9, 0.2)

    report = leakage_report(split, pairs, memorising)
    assert report.row(EXPORT_ROW).membership_auc == 1.0 and report.row(EXPORT_ROW).tpr_at_low_fpr == 1.0
    assert report.row(HISTORY_ROW).membership_auc == 1.0

    blind = ExportedPairs(users=pairs.users, items=pairs.items, soft_targets=np.full(160, 0.5), n_users=40,
                          n_items=20)
    report = leakage_report(split, blind, lambda users, items: np.full(np.size(users), 0.5))
    assert report.row(EXPORT_ROW).membership_auc == 0.5 and report.row(EXPORT_ROW).tpr_at_low_fpr == 0.0


def test_a_scorer_that_is_not_the_export_teacher_is_refused():
    split = tiny_split()
    teacher, bundle = tiny_export(split, history_lists(split, 3))
    with pytest.raises(ValueError, match="not the teacher \\(or temperature\\) this export was built with"):
        leakage_report(split, export_pairs(bundle, split, SECRET, "vendor"), soft_target_scorer(teacher, 0.01))


def test_exclude_observed_lists_have_no_member_and_say_so():
    split = tiny_split()
    outside = np.stack([np.setdiff1d(np.arange(20), split.train.row(u))[:3] for u in range(40)])
    teacher, bundle = tiny_export(split, outside)
    report = leakage_report(split, export_pairs(bundle, split, SECRET, "vendor"), soft_target_scorer(teacher, 2.0))
    exported = report.row(EXPORT_ROW)
    assert (exported.precision, exported.recall, exported.subset_share) == (0.0, 0.0, 0.0)
    assert exported.membership_auc is None and exported.n_members == 0
    assert any("no member to infer" in note for note in report.notes)
    assert report.row(HISTORY_ROW).membership_auc is not None


def test_without_a_scorer_only_reconstruction_is_reported():
    split = tiny_split()
    _, bundle = tiny_export(split, history_lists(split, 3))
    report = leakage_report(split, export_pairs(bundle, split, SECRET, "vendor"), None)
    assert all(row.membership_auc is None for row in report.rows)
    assert report.row(EXPORT_ROW).precision == 1.0
    assert "| - | - |" in report.to_markdown()


def test_held_out_pairs_are_every_validation_then_every_test_item():
    split = tiny_split()
    users, items = held_out_pairs(split)
    assert users.tolist() == list(range(40)) * 2
    assert items.tolist() == split.valid_item.tolist() + split.test_item.tolist()
