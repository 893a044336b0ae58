"""Batched full-ranking evaluation for any scorer (ALGORITHMS.md section 6).

Every item is scored; the user's training items (and, when testing, the validation item) are set to -inf, never
multiplied by 0; the rank of the held-out item is the number of other items scored at or above it, counted in one
comparison pass (ties count against the model, so a constant scorer cannot look perfect). A NaN score of the target
is an error (the model diverged); a NaN elsewhere compares False and ranks below the target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared.interactions import ItemSets
from shared.metrics import ranking_metrics

ScoreAll = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]
    ranks: np.ndarray  # int64 [n_evaluated], 0-based rank of each target
    users: np.ndarray  # the evaluated users, aligned with ranks

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]


@torch.no_grad()
def target_ranks(
    score_all: ScoreAll,
    users: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[ItemSets] = (),
    exclude_items: Sequence[np.ndarray] = (),
    batch_size: int = 128,  # user blocks small enough for the score block to stay in cache
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """0-based full-ranking rank of targets[k] for users[k].

    score_all: users [B] (int64 tensor on `device`) -> logits [B, n_items].
    exclude: item sets indexed by user id whose items are removed from the ranking (e.g. training items).
    exclude_items: arrays indexed by user id of one extra item each to remove (-1 = none), e.g. validation items.
    """
    users = np.asarray(users, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if users.shape != targets.shape:
        raise ValueError(f"users and targets must align, got {users.shape} and {targets.shape}")
    if np.any(targets < 0):
        raise ValueError("every evaluated user needs a target item (found -1); pass only users that have one")
    ranks = np.empty(users.size, dtype=np.int64)
    for start in range(0, users.size, batch_size):
        batch_users = users[start : start + batch_size]
        batch_targets = torch.as_tensor(targets[start : start + batch_size], device=device)
        scores = score_all(torch.as_tensor(batch_users, device=device)).float()
        for item_sets in exclude:
            rows, cols = item_sets.gather(batch_users)
            scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = -torch.inf
        for extra in exclude_items:
            items = np.asarray(extra)[batch_users]
            keep = items >= 0
            rows = torch.as_tensor(np.flatnonzero(keep), device=device)
            scores[rows, torch.as_tensor(items[keep], device=device)] = -torch.inf
        target_scores = scores.gather(1, batch_targets[:, None])  # [B, 1]
        if torch.isneginf(target_scores).any():
            bad = int(batch_users[torch.isneginf(target_scores).squeeze(1).cpu().numpy()][0])
            raise ValueError(f"user {bad}'s target item is also in the excluded items; the split leaks")
        if torch.isnan(target_scores).any():
            raise FloatingPointError("the model produced NaN scores; it may have diverged (try a lower learning rate)")
        # one pass: every item scored at or above the target, the target itself included, counts against it (a NaN
        # score elsewhere compares False and ranks below the target)
        at_or_above = (scores >= target_scores).sum(1, dtype=torch.int32)
        ranks[start : start + batch_users.size] = (at_or_above - 1).cpu().numpy()
    return ranks


def evaluate(
    score_all: ScoreAll,
    users: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[ItemSets] = (),
    exclude_items: Sequence[np.ndarray] = (),
    ks: Sequence[int] = (50,),
    batch_size: int = 128,  # user blocks small enough for the score block to stay in cache
    device: torch.device | str = "cpu",
) -> EvalResult:
    """HR@K and NDCG@K for every K in `ks` on full ranking; see `target_ranks` for the arguments."""
    ranks = target_ranks(score_all, users, targets, exclude, exclude_items, batch_size, device)
    return EvalResult(metrics=ranking_metrics(ranks, ks), ranks=ranks, users=np.asarray(users, dtype=np.int64))


@torch.no_grad()
def sampled_target_ranks(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    users: np.ndarray,
    targets: np.ndarray,
    negatives: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> np.ndarray:
    """Rank of each target among itself and its sampled negatives [n_users, m] (the 100-negatives protocol).

    score: (users [B], items [B, M]) -> logits [B, M]. Ties count against the target, as in full ranking."""
    users = np.asarray(users, dtype=np.int64)
    ranks = np.empty(users.size, dtype=np.int64)
    for start in range(0, users.size, batch_size):
        sl = slice(start, start + batch_size)
        items = np.concatenate([np.asarray(targets)[sl, None], np.asarray(negatives)[sl]], axis=1)
        s = score(torch.as_tensor(users[sl], device=device), torch.as_tensor(items, device=device)).float()
        ranks[sl] = ((s[:, 1:] >= s[:, :1]).sum(1)).cpu().numpy()
    return ranks
