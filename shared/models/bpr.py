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
        if self.sparse and torch.is_grad_enabled():
            return _FusedBPRLoss.apply(self.user_emb.weight, self.item_emb.weight, batch.users, batch.pos_items,
                                       batch.neg_items, weights, self.reg)
        return self.autograd_loss(batch, weights)

    def autograd_loss(self, batch: PairBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
        """`loss` through autograd's embedding lookups (dense embeddings, and the reference of the fused path)."""
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


class _FusedBPRLoss(torch.autograd.Function):
    """The BPR loss with its gradient written out: one node in the graph instead of three embedding lookups and a
    dozen elementwise ops, and the row-sparse gradients built directly (what `nn.Embedding(sparse=True)` would give,
    uncoalesced). With c_b = -w_b sigmoid(-(s_ui - s_uj)) / B and r = 2 reg / B:
    dL/dp_u = c_b (q_i - q_j) + r p_u, dL/dq_i = c_b p_u + r q_i, dL/dq_j = -c_b p_u + r q_j."""

    @staticmethod
    def forward(ctx, user_weight, item_weight, users, pos, neg, weights, reg):  # noqa: ANN001, ANN205
        p, qi, qj = user_weight[users], item_weight[pos], item_weight[neg]
        diff = (p * (qi - qj)).sum(-1)
        data = F.softplus(-diff)  # = -log sigmoid(diff)
        n = users.numel()
        l2 = p.square().sum() + qi.square().sum() + qj.square().sum()
        ctx.save_for_backward(users, pos, neg, p, qi, qj, diff, weights)
        ctx.reg, ctx.shapes = reg, (user_weight.shape, item_weight.shape)
        return (data if weights is None else weights * data).mean() + reg * l2 / n

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        users, pos, neg, p, qi, qj, diff, weights = ctx.saved_tensors
        n = users.numel()
        c = torch.sigmoid(-diff).mul_(-grad_out / n)
        if weights is not None:
            c = c * weights
        c = c.unsqueeze(1)
        r = 2.0 * ctx.reg * grad_out / n
        grad_p = torch.addcmul(p * r, c, qi - qj)
        cp = c * p
        grad_q = torch.cat([qi * r + cp, qj * r - cp])
        user_shape, item_shape = ctx.shapes
        grad_users = torch.sparse_coo_tensor(users.unsqueeze(0), grad_p, user_shape, check_invariants=False)
        grad_items = torch.sparse_coo_tensor(torch.cat([pos, neg]).unsqueeze(0), grad_q, item_shape,
                                             check_invariants=False)
        return grad_users, grad_items, None, None, None, None, None
