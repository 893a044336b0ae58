"""The teacher's own search (`data_owner.tuning`) on a synthetic case whose answer is known: every user holds all 4
items of one of 12 groups, so a BPR teacher that learns the groups ranks the validation item near the top, while one
regularised too strongly (reg >= 0.3 on this data) stays near a random ranking. Also: the wall-clock budget, pruned
trials in the report, a trial trains as the KD teacher does, when the chain tunes, and the checkpoint folders."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from data_owner.config import ChainConfig, TeacherSettings, TeacherTuning, has_teacher_preset
from data_owner.data import LeaveOneOutSplit, leave_one_out_split, load_dataset
from data_owner.teacher import train_base_model
from data_owner.teacher_trial import dataset_name
from data_owner.tuning import SearchSpace, train_trial, tune_teacher
from shared.training import TrainConfig

STRONG_REG = TeacherSettings("bpr", {"dim": 8, "reg": 3.0}, 0.02)  # the bad region, tried first as the "preset"
SEARCH = TeacherTuning(budget_s=120, n_trials=8, reg=(1e-3, 10.0), lr=(0.01, 0.03), dims=(8,))
SCHEDULE = TrainConfig(epochs=30, eval_every=2, metric="NDCG@10", seed=0, progress=False)


def write_groups(path, n_users=240, groups=12, size=4, seed=0) -> None:
    """users.dat where user u holds the `size` items of group u % groups, in a random order (file order: the last
    is the test item, the one before the validation item)."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(n_users):
        items = rng.permutation(size) + (user % groups) * size
        lines.append(" ".join(map(str, [items.size, *items])))
    path.write_text("\n".join(lines) + "\n")


def split_of(path) -> LeaveOneOutSplit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # users.dat has no timestamps: file order
        return leave_one_out_split(load_dataset(str(path)))


@pytest.fixture(scope="module")
def groups(tmp_path_factory) -> LeaveOneOutSplit:
    path = tmp_path_factory.mktemp("groups") / "users.dat"
    write_groups(path)
    return split_of(path)


@pytest.fixture(scope="module")
def tuned(groups):
    return tune_teacher(groups, STRONG_REG, SEARCH, SCHEDULE, batch_size=64, device="cpu")


def test_the_known_answer_a_strong_reg_ranks_at_random_and_a_moderate_one_learns_the_groups(groups):
    results = {reg: train_trial(groups, TeacherSettings("bpr", {"dim": 8, "reg": reg}, 0.02), SCHEDULE,
                                batch_size=64, device="cpu")[1].best_metrics["NDCG@10"] for reg in (3.0, 0.05)}
    assert results[3.0] < 0.2 < 0.6 < results[0.05]


def test_tuning_leaves_the_strong_reg_for_the_region_that_learns(groups, tuned):
    assert tuned.trials[0].model == STRONG_REG.model and tuned.trials[0].lr == STRONG_REG.lr  # the preset first
    assert tuned.trials[0].valid < 0.2
    assert tuned.settings.model["reg"] < 0.3 and tuned.settings.model["dim"] == 8
    assert 0.01 <= tuned.settings.lr <= 0.03 and tuned.settings.family == "bpr"
    assert tuned.valid["NDCG@10"] > 0.6 and tuned.chosen_trial is not None
    chosen = tuned.trials[tuned.chosen_trial]
    assert chosen.state == "complete" and chosen.valid == max(t.valid for t in tuned.trials if t.state == "complete")
    assert tuned.base == STRONG_REG and tuned.max_params == (groups.n_users + groups.n_items) * 8


def test_the_report_lists_every_trial_pruned_ones_with_the_epoch_they_reached(tuned):
    assert len(tuned.trials) == SEARCH.n_trials
    pruned = [t for t in tuned.trials if t.state == "pruned"]
    assert pruned and all(t.note == "pruner" and t.epochs < SCHEDULE.epochs and t.best_epoch is None for t in pruned)
    assert all(t.epochs > 2 * 8 - 1 for t in pruned)  # never before the pruner's warm-up (8 evaluations of 2 epochs)
    report = tuned.to_dict()
    assert report["counts"]["pruned"] == len(pruned) and len(report["trials"]) == SEARCH.n_trials
    assert report["teacher"] == tuned.settings.key_payload() and report["budget_s"] == SEARCH.budget_s
    line = tuned.summary_line()
    assert f"{len(pruned)} pruned" in line and f"chose trial {tuned.chosen_trial}" in line


def test_the_search_is_reproducible_from_the_seed(groups, tuned):
    again = tune_teacher(groups, STRONG_REG, SEARCH, SCHEDULE, batch_size=64, device="cpu")
    assert [(t.model, t.lr, t.state) for t in again.trials] == [(t.model, t.lr, t.state) for t in tuned.trials]
    assert again.settings == tuned.settings


def test_the_budget_stops_a_running_trial_at_its_next_evaluation(groups):
    endless = TeacherTuning(budget_s=1.5, n_trials=50, patience=10_000, reg=(1e-3, 10.0), dims=(8,))
    started = time.perf_counter()
    result = tune_teacher(groups, STRONG_REG, endless, TrainConfig(epochs=100_000, eval_every=1, metric="NDCG@10",
                                                                   progress=False), batch_size=64, device="cpu")
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5 + 1.0 and result.seconds <= elapsed
    assert [t.state for t in result.trials] == ["pruned"] and result.trials[0].note == "budget"
    assert result.chosen_trial is None and result.settings == STRONG_REG  # nothing completed: the preset is kept
    assert "no trial completed" in result.summary_line()


def test_a_trial_trains_exactly_as_the_kd_teacher_does(groups):
    settings = TeacherSettings("bpr", {"dim": 8, "reg": 0.05}, 0.02)
    schedule = TrainConfig(epochs=6, eval_every=2, patience=0, seed=4, progress=False)
    model, result = train_trial(groups, settings, schedule, batch_size=64, device="cpu")  # the lr is the settings'
    teacher = train_base_model(groups, "bpr", settings.model, replace(schedule, lr=settings.lr), batch_size=64,
                               device="cpu")
    assert result.best_epoch == teacher.train.best_epoch and result.best_metrics == teacher.valid
    for name, weights in model.state_dict().items():
        assert torch.equal(weights, teacher.model.state_dict()[name]), name


def test_the_architectures_stay_within_the_parameter_budget(groups):
    base = TeacherSettings("bpr", {"dim": 32, "reg": 1e-2}, 5e-3)
    space = SearchSpace(base, TeacherTuning(), groups.n_users, groups.n_items)
    assert sorted(space.towers) == [16, 32] and space.max_params == (groups.n_users + groups.n_items) * 32
    wider = SearchSpace(base, TeacherTuning(max_params=(groups.n_users + groups.n_items) * 100), groups.n_users,
                        groups.n_items)
    assert sorted(wider.towers) == [16, 32, 64, 100]
    neumf = TeacherSettings("neumf", {"dim_gmf": 16, "dim_mlp": 16, "hidden": [16, 8], "reg": 1e-4}, 2e-3)
    space = SearchSpace(neumf, TeacherTuning(), groups.n_users, groups.n_items)
    assert space.towers[16] == [(16, 8)] and 32 not in space.towers
    with pytest.raises(ValueError, match="no bpr architecture of the tuning space fits 10 parameters"):
        SearchSpace(base, TeacherTuning(max_params=10), groups.n_users, groups.n_items)


def test_neumf_trials_search_the_tower_within_the_budget(groups):
    base = TeacherSettings("neumf", {"dim_gmf": 16, "dim_mlp": 16, "hidden": [32, 16], "reg": 1e-4}, 2e-3)
    result = tune_teacher(groups, base, TeacherTuning(n_trials=3, dims=(8, 16)),
                          TrainConfig(epochs=2, eval_every=1, progress=False), batch_size=128, device="cpu")
    assert len(result.trials) == 3 and result.trials[0].model["hidden"] == [32, 16]
    assert all(set(t.model) >= {"dim_gmf", "dim_mlp", "hidden", "reg"} for t in result.trials)
    assert result.settings.family == "neumf" and result.settings.pretrain is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"budget_s": 0}, "tuning budget must be a positive number of seconds"),
    ({"n_trials": 0}, "at least 1 trial"),
    ({"reg": (1e-2, 1e-3)}, "reg range must satisfy 0 < low <= high"),
    ({"max_params": -1}, "parameter budget must be a positive integer"),
    ({"dims": ()}, "dims must be positive widths"),
])
def test_bad_tuning_settings_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        TeacherTuning(**fields)


# ------------------------------------------------------------------------------------------------ when the chain tunes


def test_a_dataset_given_by_path_tunes_and_a_preset_dataset_only_when_asked(tmp_path):
    path = tmp_path / "users.dat"
    assert ChainConfig(dataset=str(path)).tunes_teacher
    assert not ChainConfig(dataset=str(path), tune=False).tunes_teacher
    assert not ChainConfig(dataset=str(path), teacher=STRONG_REG).tunes_teacher  # settings given: trained as given
    assert has_teacher_preset("ml-100k", "bpr") and not ChainConfig(dataset="ml-100k").tunes_teacher
    assert ChainConfig(dataset="ml-100k", tune=True).tunes_teacher
    assert ChainConfig(dataset="foursquare", family="neumf", tune=None).tunes_teacher is False
    with pytest.raises(ValueError, match=r"either tune=True \(--tune\) or teacher settings \(--teacher-json\)"):
        ChainConfig(dataset="ml-100k", tune=True, teacher=STRONG_REG)


# ------------------------------------------------------------------------------------------------ folders


def test_two_users_dat_files_in_two_folders_get_two_teacher_folders(tmp_path):
    first, second = tmp_path / "a" / "users.dat", tmp_path / "b" / "users.dat"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text("")
    names = {dataset_name(str(first)), dataset_name(str(second))}
    assert len(names) == 2 and all(name.startswith("users-") and len(name) == len("users-") + 8 for name in names)
    assert dataset_name(str(first)) == dataset_name(str(tmp_path / "a" / ".." / "a" / "users.dat"))  # resolved
    assert dataset_name("ml-100k") == "ml-100k" and dataset_name("citeulike-t") == "citeulike-t"


def test_warm_starts_are_the_base_then_weaker_l2_within_the_space():
    base = TeacherSettings("bpr", {"dim": 64, "reg": 1e-2}, 5e-3)
    starts = SearchSpace(base, TeacherTuning(), 100, 200).warm_starts()
    assert [s["reg"] for s in starts] == pytest.approx([1e-2, 1e-3, 1e-4])
    assert {(s["lr"], s["dim"]) for s in starts} == {(5e-3, 64)}
    narrow = SearchSpace(base, TeacherTuning(reg=(5e-4, 1e-1)), 100, 200).warm_starts()
    assert [s["reg"] for s in narrow] == pytest.approx([1e-2, 1e-3])
    outside = TeacherSettings("bpr", {"dim": 64, "reg": 1.0}, 5e-3)  # reg above the space: no warm start at all
    assert SearchSpace(outside, TeacherTuning(), 100, 200).warm_starts() == []


def test_an_sgd_base_searches_its_own_lr_range_and_both_negatives(groups):
    base = TeacherSettings("bpr", {"dim": 8, "reg": 1e-2}, 0.05, optimizer="sgd")
    space = SearchSpace(base, TeacherTuning(), 100, 200)
    assert space.lr_range == TeacherTuning().sgd_lr
    starts = space.warm_starts()
    assert [(s["reg"], s["negatives"]) for s in starts] == [
        (pytest.approx(1e-2), "uniform"), (pytest.approx(1e-3), "uniform"), (pytest.approx(1e-3), "popularity"),
        (pytest.approx(1e-4), "uniform")]
    search = TeacherTuning(budget_s=120, n_trials=4, reg=(1e-3, 1.0), sgd_lr=(0.02, 0.1), dims=(8,))
    result = tune_teacher(groups, base, search, replace(SCHEDULE, epochs=150), batch_size=64, device="cpu")
    assert result.settings.optimizer == "sgd" and result.settings.negatives in ("uniform", "popularity")
    assert all(0.02 <= t.lr <= 0.1 for t in result.trials)
    assert result.valid["NDCG@10"] > 0.6  # per-triple SGD learns the groups too
    assert "sgd" in result.summary_line()
