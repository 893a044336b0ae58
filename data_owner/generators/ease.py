"""EASE (Steck, WWW 2019): a closed-form item-item linear model,

    B = I - P diag(1 / diag(P)),   P = (X^T X + lambda I)^-1,   score(u, .) = x_u B      (diag(B) = 0)

over the items that have training data (the others score lowest). lambda is chosen on validation HR@50 (ties:
NDCG@50) from one eigendecomposition of X^T X, so each candidate costs a matrix product, not an inversion. The
model is dense (items x items): `max_items` refuses catalogs that would not fit, with a message saying so."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from data_owner.data import LeaveOneOutSplit
from data_owner.generators.base import FitReport, ListGenerator, dense_rows, selection_key, validation_metrics
from data_owner.generators.itemknn import sparse_matrix
from shared.interactions import ItemSets


@dataclass(frozen=True)
class EASESettings:
    lambdas: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0)
    noise_temperature: float = 0.0  # tau of the Gumbel-top-L draw on the scores (0: plain top-L)
    max_items: int = 20000  # items with training data above which EASE refuses (memory and O(n^3) time)

    def __post_init__(self) -> None:
        if not self.lambdas or min(self.lambdas) <= 0:
            raise ValueError(f"ease lambdas must be positive, got {self.lambdas}")
        if self.noise_temperature < 0 or self.max_items < 1:
            raise ValueError("ease noise_temperature must be >= 0 and max_items >= 1")


class EASE(ListGenerator):
    family: ClassVar[str] = "ease"

    def __init__(self, weights: torch.Tensor, active: torch.Tensor, n_items: int, lam: float,
                 noise_temperature: float, report: FitReport | None = None) -> None:
        self.weights, self.active, self.n_items = weights, active, n_items  # B over the active items
        self.lam, self.noise_temperature = lam, noise_temperature
        self.report = report or FitReport(chosen=self.settings())

    @torch.no_grad()
    def logits(self, users: torch.Tensor, train: ItemSets, noise: torch.Generator | None = None) -> torch.Tensor:
        device = self.weights.device
        x = dense_rows(train, users.detach().cpu().numpy().astype(np.int64), device)[:, self.active]
        scores = x @ self.weights
        out = torch.full((x.shape[0], self.n_items), -1e4, dtype=torch.float32, device=device)
        out[:, self.active] = scores
        return out.to(users.device)

    def settings(self) -> dict[str, Any]:
        return {"lambda": self.lam}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "active": self.active}

    @classmethod
    def _from_state(cls, settings: dict[str, Any], state: dict[str, torch.Tensor], n_items: int,
                    device: torch.device) -> EASE:
        return cls(state["weights"].to(device), state["active"].to(device), n_items, float(settings["lambda"]), 0.0)


def fit_ease(trained_on: LeaveOneOutSplit, settings: EASESettings, device: torch.device | str = "cpu") -> EASE:
    """EASE on the training sets, lambda chosen on validation."""
    started = time.perf_counter()
    train = trained_on.train
    counts = np.bincount(train.indices, minlength=train.n_items)
    active = torch.as_tensor(np.flatnonzero(counts), device=device)
    if active.numel() > settings.max_items:
        raise ValueError(f"ease: {active.numel()} items have training data, above max_items={settings.max_items} "
                         f"(EASE keeps an items x items matrix and inverts it); raise max_items if the memory and "
                         f"time allow, or use the itemknn or vae generator")
    X = sparse_matrix(train, device)
    gram = torch.sparse.mm(X.t().coalesce(), X).to_dense()[active][:, active].double()
    eigenvalues, vectors = torch.linalg.eigh(gram)
    best: tuple[tuple[float, float], EASE] | None = None
    tried = []
    for lam in settings.lambdas:
        P = (vectors / (eigenvalues + lam)) @ vectors.T
        B = -P / torch.diagonal(P)[None, :]
        B.fill_diagonal_(0.0)
        model = EASE(B.float(), active, train.n_items, lam, settings.noise_temperature)
        metrics = validation_metrics(model.scorer(train, device=device), trained_on, device)
        tried.append({"lambda": lam, "valid": metrics})
        if best is None or selection_key(metrics) > best[0]:
            best = (selection_key(metrics), model)
    assert best is not None
    model = best[1]
    model.report = FitReport(chosen=model.settings(), tried=tried,
                             valid=next(t["valid"] for t in tried if t["lambda"] == model.lam),
                             seconds=time.perf_counter() - started)
    return model


__all__ = ["EASE", "EASESettings", "fit_ease"]
