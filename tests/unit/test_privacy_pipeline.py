"""The randomized-response switch of the owner's training settings: validation, and stage keys that redo every
stage when epsilon changes but keep the keys of runs without it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from data_owner.config import ChainConfig
from data_owner.pipeline import STAGES, stage_keys


@pytest.mark.parametrize("epsilon", [0.0, -2.0, float("nan"), float("inf")])
def test_a_bad_epsilon_is_refused(epsilon):
    with pytest.raises(ValueError, match="epsilon must be a positive finite number"):
        ChainConfig(dataset="ml-100k", rr_epsilon=epsilon)


def test_epsilon_is_part_of_the_recorded_config():
    assert ChainConfig(dataset="ml-100k", rr_epsilon=2.0).to_dict()["rr_epsilon"] == 2.0
    assert ChainConfig(dataset="ml-100k").to_dict()["rr_epsilon"] is None


def test_every_stage_is_redone_when_epsilon_changes():
    off = ChainConfig(dataset="ml-100k")
    keys = {eps: stage_keys(replace(off, rr_epsilon=eps), "data", "secret") for eps in (None, 1.0, 2.0)}
    for a, b in ((None, 1.0), (1.0, 2.0), (None, 2.0)):
        assert all(keys[a][name] != keys[b][name] for name in STAGES), (a, b)


def test_true_size_epochs_redo_the_teachers_only_and_only_under_randomized_response():
    off = ChainConfig(dataset="ml-100k")
    assert stage_keys(replace(off, rr_true_size_epochs=True), "d", "s") == stage_keys(off, "d", "s")
    rr = replace(off, rr_epsilon=1.0)
    plain, sized = stage_keys(rr, "d", "s"), stage_keys(replace(rr, rr_true_size_epochs=True), "d", "s")
    assert {name for name in STAGES if plain[name] != sized[name]} == {"kd_teacher", "gd_teacher", "export"}


def test_under_randomized_response_the_secret_keys_every_stage():
    # the flips are seeded from the secret: another secret is another randomized matrix, so other models
    config = ChainConfig(dataset="ml-100k", rr_epsilon=1.0)
    base = stage_keys(config, "data", "secret")
    other = stage_keys(config, "data", "other secret")
    assert all(base[name] != other[name] for name in STAGES)


def test_without_randomized_response_the_keys_are_those_of_earlier_runs():
    # the key of the KD teacher as computed before the switch existed: finished artifacts are not redone
    config = ChainConfig(dataset="ml-100k")
    teacher = {"family": "bpr", "model": {"dim": 64, "reg": 1e-2}, "lr": 5e-3}
    payload = {"data": "data", "teacher": teacher, "epochs": 300, "patience": 6, "eval_every": 5, "seed": 0,
               "batch_size": 1000}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    assert stage_keys(config, "data", "secret")["kd_teacher"] == expected
