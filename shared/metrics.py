"""Top-K ranking metrics from 0-based ranks of the held-out item (ALGORITHMS.md section 6).

HR@K = 1 if rank < K; NDCG@K = 1 / log2(rank + 2) if rank < K, else 0 (one relevant item per user, so IDCG = 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def hit_rate(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no ranks given: there is no user to evaluate")
    return float(np.mean(ranks < k))


def ndcg(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks given: there is no user to evaluate")
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(np.mean(gains))


def ranking_metrics(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """{"HR@K": ..., "NDCG@K": ...} for every K."""
    out: dict[str, float] = {}
    for k in ks:
        if k <= 0:
            raise ValueError(f"K must be positive, got {k}")
        out[f"HR@{k}"] = hit_rate(ranks, k)
        out[f"NDCG@{k}"] = ndcg(ranks, k)
    return out
