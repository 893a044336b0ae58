"""Bayesian Personalised Ranking (Rendle et al., UAI 2009): score = <p_u, q_i>, loss -log sigmoid(s_ui - s_uj)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.models.base import PairBatch, Recommender, scale_width


class BPR(Recommender):
    """Matrix factorisation trained with the BPR pairwise loss plus L2 on the embeddings in the batch."""

    family = "bpr"

    def __init__(
        self, n_users: int, n_items: int, dim: int = 64, reg: float = 1e-4, init_std: float = 0.1, sparse: bool = True
    ) -> None:
        super().__init__(n_users, n_items)
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.reg = reg
        self.init_std = init_std
        self.sparse = sparse  # sparse embedding gradients: only the rows in a batch are touched (lazy Adam)
        self.user_emb = nn.Embedding(n_users, dim, sparse=sparse)
        self.item_emb = nn.Embedding(n_items, dim, sparse=sparse)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        nn.init.normal_(self.user_emb.weight, std=self.init_std, generator=generator)
        nn.init.normal_(self.item_emb.weight, std=self.init_std, generator=generator)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_emb(users)  # [B, d]
        q = self.item_emb(items)  # [B, d] or [B, M, d]
        if q.dim() == 3:
            return torch.einsum("bd,bmd->bm", p, q)
        return (p * q).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users) @ self.item_emb.weight.T

    def loss(self, batch: PairBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
        p = self.user_emb(batch.users)
        qi = self.item_emb(batch.pos_items)
        qj = self.item_emb(batch.neg_items)
        diff = (p * qi).sum(-1) - (p * qj).sum(-1)
        l2 = p.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()
        data = -F.logsigmoid(diff)
        return (data if weights is None else weights * data).mean() + self.reg * l2 / len(batch)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "reg": self.reg, "init_std": self.init_std, "sparse": self.sparse}

    @classmethod
    def count_parameters(cls, n_users: int, n_items: int, **config: Any) -> int:
        return (n_users + n_items) * int(config.get("dim", 64))

    @classmethod
    def scaled_config(cls, config: dict[str, Any], factor: float) -> dict[str, Any]:
        return {**config, "dim": scale_width(int(config.get("dim", 64)), factor)}
