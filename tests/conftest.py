"""Fixtures shared by every test: tiny synthetic interaction data with a known structure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.interactions import ItemSets

REPO = Path(__file__).resolve().parents[1]

# The tests' tensors are tiny: one intra-op thread avoids OpenMP spin-waiting, which made single tests take minutes
# when the 2-core machine was also running other jobs (the services started by e2e tests set their own threads).
torch.set_num_threads(1)


def real_data_dir() -> Path | None:
    """../shared/datasets beside the repository, or GDREC_DATA_DIR; None when neither exists."""
    env = os.environ.get("GDREC_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "datasets"]:
        if candidate.is_dir():
            return candidate
    return None


def checkerboard(n_users: int = 40, n_items: int = 20, holdout: int = 2, seed: int = 0):
    """Two user groups, each consuming only its own half of the catalog. Returns (train ItemSets, valid, test).

    Every user has all items of its half but `holdout` random ones in train; the held-out ones are valid/test,
    so a model that learnt the structure ranks them in the top n_items / 2 - train items."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    rows, valid, test = [], np.empty(n_users, np.int64), np.empty(n_users, np.int64)
    for u in range(n_users):
        own = np.arange(half) + (0 if u % 2 == 0 else half)
        held = rng.choice(own, size=holdout, replace=False)
        valid[u], test[u] = held[0], held[1]
        rows.append(np.setdiff1d(own, held))
    return ItemSets.from_lists(rows, n_items), valid, test


@pytest.fixture
def board():
    return checkerboard()


def write_users_dat(path, n_users=60, n_items=30, seed=0):
    """A tiny users.dat: two taste groups over halves of the catalog, 8-12 items per user, one user per line."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    lines = []
    for u in range(n_users):
        own = rng.choice(half, size=rng.integers(8, 13), replace=False) + (0 if u % 2 == 0 else half)
        lines.append(" ".join(map(str, [own.size, *sorted(own)])))
    path.write_text("\n".join(lines) + "\n")
