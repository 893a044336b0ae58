"""What every grid cell measures besides its own metrics: the machine, the median full-ranking time of one batch of
users (fig3), and the test item's rank among sampled negatives (the paper's Table 3 protocol)."""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_owner.data import LeaveOneOutSplit
from shared.device import synchronize
from shared.evaluation import sampled_target_ranks
from shared.metrics import ranking_metrics

log = logging.getLogger("gdrec.runner")

SAMPLED_KS = (5, 10, 20)


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@torch.no_grad()
def full_ranking_seconds(model: torch.nn.Module, n_users: int, batch_users: int, repeats: int,
                         device: torch.device) -> float:
    """Median wall time of one `score_all` over `batch_users` users (after one warm-up call)."""
    model.eval()
    users = torch.arange(min(batch_users, n_users), device=device)

    model.score_all(users)
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.score_all(users)
        synchronize(device)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def sampled_negatives(split: LeaveOneOutSplit, count: int, seed: int) -> np.ndarray:
    """[n_eval_users, m] items per evaluated user, uniform without replacement among the items outside the user's
    training, validation and test items; m = min(count, the smallest such pool), with a warning when it is less
    than `count` (the rows record m as "negatives"). Seeded by `seed` (the same split gives the same draws)."""
    users = split.eval_users
    rng = np.random.default_rng([seed, 1_000_003])
    pools = split.n_items - split.train.lengths()[users] - 2
    m = int(min(count, pools.min())) if users.size else 0
    if m < 1:
        raise ValueError("some evaluated user has no item left to sample a negative from: every item of the "
                         "catalog is in their training, validation or test items; drop such users from the data")
    if m < count:
        log.warning("sampled protocol: %d negatives per user instead of %d (the smallest pool of unseen items has "
                    "%d); every user gets the same number", m, count, m)
    out = np.empty((users.size, m), dtype=np.int64)
    allowed = np.ones(split.n_items, dtype=bool)
    for k, u in enumerate(users):
        seen = np.concatenate([split.train.row(u), [split.valid_item[u], split.test_item[u]]])
        allowed[seen] = False
        out[k] = rng.choice(np.flatnonzero(allowed), size=m, replace=False)
        allowed[seen] = True
    return out


def sampled_metrics(model: torch.nn.Module, split: LeaveOneOutSplit, negatives: np.ndarray, device: torch.device,
                    users_map: np.ndarray | None = None) -> dict[str, float]:
    """Test HR/NDCG@{5,10,20} of the test item among itself and the sampled negatives."""
    users = split.eval_users
    rows = users if users_map is None else users_map[users]
    model.eval()
    ranks = sampled_target_ranks(model.score, rows, split.test_item[users], negatives, device=device)
    return {**ranking_metrics(ranks, SAMPLED_KS), "negatives": int(negatives.shape[1])}

