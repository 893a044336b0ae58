"""Randomness is passed in: model initialisation draws from a seeded `torch.Generator`, and training leaves the
caller's global torch generator as it found it, while the same seed still gives the same result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_owner.data.split import LeaveOneOutSplit
from data_owner.gan import CGANConfig, train_cgan
from data_owner.teacher import train_base_model
from shared.models import build_model
from shared.training import TrainConfig
from tests.conftest import checkerboard

CONFIGS = {"bpr": {"dim": 8}, "neumf": {"dim_gmf": 8, "dim_mlp": 8, "hidden": [8, 4]},
           "gmf": {"dim": 8}, "mlp": {"dim": 8, "hidden": [8, 4]}}


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def board_split() -> LeaveOneOutSplit:
    train, valid, test = checkerboard()
    n_users = train.n_users
    return LeaveOneOutSplit(train=train, valid_item=valid, test_item=test, user_ids=np.arange(n_users),
                            item_ids=np.arange(train.n_items), has_timestamps=False, source="checkerboard")


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_a_seeded_generator_decides_the_initial_weights(family):
    def built(seed: int) -> torch.nn.Module:
        torch.rand(7)  # whatever the global generator did before does not matter
        return build_model(family, 12, 9, generator=torch.Generator().manual_seed(seed), **CONFIGS[family])

    assert same_state(built(3), built(3))
    assert not same_state(built(3), built(4))


def test_training_a_teacher_is_reproducible_and_leaves_the_global_generator_alone():
    split = board_split()
    config = TrainConfig(epochs=3, lr=0.05, patience=0, eval_every=1, seed=5, progress=False)

    def trained() -> torch.nn.Module:
        torch.manual_seed(123)  # the caller's own seeding, here in the test
        before = torch.get_rng_state()
        run = train_base_model(split, "bpr", {"dim": 8}, config, batch_size=64)
        assert torch.equal(torch.get_rng_state(), before), "training moved the caller's generator"
        torch.rand(11)  # the next run starts from another global state
        return run.model

    assert same_state(trained(), trained())


def test_training_the_cgan_is_reproducible_and_leaves_the_global_generator_alone():
    split = board_split()
    config = CGANConfig(hidden_g=(8,), hidden_d=(4,), noise_dim=2, epochs=2, batch_size=8, g_steps=1, d_steps=1,
                        progress=False, seed=2)

    def trained() -> torch.nn.Module:
        before = torch.get_rng_state()
        generator = train_cgan(split.train, config).generator
        assert torch.equal(torch.get_rng_state(), before), "the CGAN moved the caller's generator"
        torch.rand(5)
        return generator

    assert same_state(trained(), trained())
