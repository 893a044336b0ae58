"""Item-item kNN (cosine with shrinkage): score(u, j) = sum_{i in I_u} s_ij, where s_ij keeps, for each item i, only
its k most similar items j:

    s_ij = |U_i & U_j| / (sqrt(|U_i|) * sqrt(|U_j|) + h)      (i != j; h = shrinkage, damping rare co-occurrences)

k and h are chosen on validation HR@50 (ties: NDCG@50). The co-occurrence counts are computed a block of items at
a time from the sparse user-item matrix, so memory grows with block x catalog, not catalog squared; the fitted model
keeps k neighbours per item. Logits are log(score) (softmax(logits / tau) samples items in proportion to
score^(1/tau)); users whose items have no neighbour get a flat row."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from data_owner.data import LeaveOneOutSplit
from data_owner.generators.base import FitReport, ListGenerator, selection_key, validation_metrics
from shared.interactions import ItemSets

LOG_FLOOR = 1e-8  # score floor before the log: items with no neighbour in the user's history rank last


@dataclass(frozen=True)
class ItemKNNSettings:
    ks: tuple[int, ...] = (20, 50, 100, 200, 400)  # candidate neighbourhood sizes
    shrinks: tuple[float, ...] = (0.0, 10.0, 50.0)  # candidate shrinkage terms h
    noise_temperature: float = 0.0  # tau of the Gumbel-top-L draw of lists (0: plain top-L)
    block_items: int = 2048  # items per block of the co-occurrence computation

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"itemknn ks must be positive integers, got {self.ks}")
        if not self.shrinks or min(self.shrinks) < 0:
            raise ValueError(f"itemknn shrinks must be non-negative, got {self.shrinks}")
        if self.noise_temperature < 0 or self.block_items < 1:
            raise ValueError("itemknn noise_temperature must be >= 0 and block_items >= 1")


def sparse_matrix(sets: ItemSets, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 0/1 user-item matrix as a coalesced sparse COO float32 tensor [n_users, n_items]."""
    users, items = sets.to_pairs()
    indices = torch.as_tensor(np.stack([users, items]), device=device)
    values = torch.ones(users.size, dtype=torch.float32, device=device)
    return torch.sparse_coo_tensor(indices, values, (sets.n_users, sets.n_items), check_invariants=False).coalesce()


@torch.no_grad()
def neighbours(train: ItemSets, k: int, shrink: float, block_items: int = 2048,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values) [n_items, k] of each item's k most similar items (cosine with shrinkage, best first,
    itself excluded); fewer real neighbours than k leave zero-valued slots."""
    n = train.n_items
    k = min(k, max(1, n - 1))
    X = sparse_matrix(train, device)
    Xt = X.t().coalesce()
    counts = torch.as_tensor(np.bincount(train.indices, minlength=n), dtype=torch.float32, device=device)
    norms = counts.sqrt()
    out_idx = torch.empty((n, k), dtype=torch.int64, device=device)
    out_val = torch.empty((n, k), dtype=torch.float32, device=device)
    for start in range(0, n, block_items):
        block = torch.arange(start, min(start + block_items, n), device=device)
        with warnings.catch_warnings():  # torch notes that its sparse CSR support is in beta
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
            co = torch.sparse.mm(Xt.index_select(0, block), X).to_dense()  # [b, n] co-occurrence counts
        sim = co / (norms[block, None] * norms[None, :] + shrink).clamp_min(1e-12)
        sim[torch.arange(block.numel(), device=device), block] = 0.0
        top = torch.topk(sim, k, dim=1)
        out_idx[block], out_val[block] = top.indices, top.values
    return out_idx, out_val


def _similarity(indices: torch.Tensor, values: torch.Tensor, n_items: int) -> torch.Tensor:
    rows = torch.arange(indices.shape[0], device=indices.device).repeat_interleave(indices.shape[1])
    keep = values.reshape(-1) > 0
    return torch.sparse_coo_tensor(torch.stack([rows[keep], indices.reshape(-1)[keep]]), values.reshape(-1)[keep],
                                   (indices.shape[0], n_items), check_invariants=False).coalesce()


class ItemKNN(ListGenerator):
    family: ClassVar[str] = "itemknn"

    def __init__(self, indices: torch.Tensor, values: torch.Tensor, n_items: int, k: int, shrink: float,
                 noise_temperature: float, report: FitReport | None = None) -> None:
        self.indices, self.values, self.n_items = indices, values, n_items
        self.k, self.shrink, self.noise_temperature = k, shrink, noise_temperature
        self.similarity = _similarity(indices, values, n_items)
        self.report = report or FitReport(chosen=self.settings())

    def logits(self, users: torch.Tensor, train: ItemSets, noise: torch.Generator | None = None) -> torch.Tensor:
        batch = users.detach().cpu().numpy().astype(np.int64)
        rows = sparse_matrix(train.subset_users(batch), self.similarity.device)
        scores = torch.sparse.mm(rows, self.similarity).to_dense()
        return scores.clamp_min(LOG_FLOOR).log().to(users.device)

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "shrink": self.shrink}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"indices": self.indices, "values": self.values}

    @classmethod
    def _from_state(cls, settings: dict[str, Any], state: dict[str, torch.Tensor], n_items: int,
                    device: torch.device) -> ItemKNN:
        return cls(state["indices"].to(device), state["values"].to(device), n_items, int(settings["k"]),
                   float(settings["shrink"]), 0.0)


def fit_itemknn(trained_on: LeaveOneOutSplit, settings: ItemKNNSettings, device: torch.device | str = "cpu"
                ) -> ItemKNN:
    """Item-item kNN on the training sets, k and h chosen on validation."""
    started = time.perf_counter()
    k_max = min(max(settings.ks), max(1, trained_on.n_items - 1))
    best: tuple[tuple[float, float], ItemKNN] | None = None
    tried = []
    for shrink in settings.shrinks:
        idx, val = neighbours(trained_on.train, k_max, shrink, settings.block_items, device)
        for k in sorted({min(k, k_max) for k in settings.ks}):
            model = ItemKNN(idx[:, :k].contiguous(), val[:, :k].contiguous(), trained_on.n_items, k, shrink,
                            settings.noise_temperature)
            metrics = validation_metrics(model.scorer(trained_on.train, device=device), trained_on, device)
            tried.append({"k": k, "shrink": shrink, "valid": metrics})
            if best is None or selection_key(metrics) > best[0]:
                best = (selection_key(metrics), model)
    assert best is not None
    model = best[1]
    model.report = FitReport(chosen=model.settings(), tried=tried,
                             valid=next(t["valid"] for t in tried if t["k"] == model.k and t["shrink"] == model.shrink),
                             seconds=time.perf_counter() - started)
    return model


__all__ = ["ItemKNN", "ItemKNNSettings", "fit_itemknn", "neighbours", "sparse_matrix"]
