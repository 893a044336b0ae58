"""NeuMF teacher with NCF pre-training: the branches are trained, NeuMF starts from them and still learns."""

import numpy as np
import pytest

from data_owner.data import leave_one_out_split
from data_owner.data.table import InteractionTable
from data_owner.teacher import Pretraining, train_base_model
from shared.models import NeuMF
from shared.training import TrainConfig
from tests.conftest import checkerboard


def board_split():
    """The checkerboard as a timestamped table: each user's last two rows are its held-out items."""
    train, valid, test = checkerboard(n_users=40, n_items=20)
    users, items, stamps = [], [], []
    for u in range(train.n_users):
        for t, i in enumerate([*train.row(u), valid[u], test[u]]):
            users.append(f"u{u}")
            items.append(f"i{i}")
            stamps.append(t)
    table = InteractionTable.from_external(np.array(users, dtype=object), np.array(items, dtype=object),
                                           np.array(stamps), source="checkerboard")
    return leave_one_out_split(table)


CONFIG = TrainConfig(epochs=20, lr=0.02, eval_every=10, patience=0, seed=0, progress=False)
NEUMF = {"dim_gmf": 8, "dim_mlp": 8, "hidden": [16, 8], "reg": 1e-5}


def test_pretrained_neumf_learns_the_checkerboard_and_reports_its_branches():
    split = board_split()
    run = train_base_model(split, "neumf", NEUMF, CONFIG, batch_size=64,
                           pretrain=Pretraining(mlp_reg=1e-4, finetune_lr=0.01))
    assert isinstance(run.model, NeuMF)
    assert set(run.extra["pretrain"]) == {"gmf", "mlp"}
    branches = run.extra["pretrain"]
    assert branches["mlp"]["config"]["reg"] == 1e-4 and branches["gmf"]["config"]["reg"] == 1e-5
    for branch in run.extra["pretrain"].values():
        assert branch["valid"]["HR@5"] >= 0.8  # random: 5 of the 12 candidates, 0.42
    # the 2 held-out items are the only candidates of the user's half: a model that learnt it ranks them top-2
    assert run.valid["HR@5"] >= 0.9


def test_pretraining_is_refused_for_bpr():
    with pytest.raises(ValueError, match="NeuMF only"):
        train_base_model(board_split(), "bpr", {"dim": 4}, CONFIG, pretrain=Pretraining())
    with pytest.raises(ValueError, match="alpha"):
        Pretraining(alpha=2.0)
