"""Neural Matrix Factorisation (He et al., WWW 2017): a GMF branch p_u * q_i and an MLP tower on [p_u; q_i],
joined by one output layer into a logit; trained with BCE-with-logits on positives and sampled negatives.

`score_all` splits the MLP's first layer: W [p_u; q_i] + b = (W_u p_u + b) + W_i q_i, so the big matmul is done
once per user and once per item instead of once per (user, item) pair; only the cheap ReLU and the later,
narrower layers run per pair, chunked over items to bound memory. `score_all_naive` is the per-pair reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.models.base import PairBatch, Recommender, scale_width

# Upper bound on elements of the per-pair hidden activations materialised at once in score_all.
_PAIR_CHUNK_ELEMENTS = 1 << 24


class NeuMF(Recommender):
    family = "neumf"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim_gmf: int = 32,
        dim_mlp: int = 32,
        hidden: tuple[int, ...] | list[int] = (32, 16),
        reg: float = 1e-5,
        init_std: float = 0.01,
        sparse: bool = True,
    ) -> None:
        super().__init__(n_users, n_items)
        hidden = tuple(int(h) for h in hidden)
        if dim_gmf <= 0 or dim_mlp <= 0 or not hidden or min(hidden) <= 0:
            raise ValueError(f"all widths must be positive, got dim_gmf={dim_gmf}, dim_mlp={dim_mlp}, hidden={hidden}")
        self.dim_gmf, self.dim_mlp, self.hidden = dim_gmf, dim_mlp, hidden
        self.reg, self.init_std, self.sparse = reg, init_std, sparse
        self.user_gmf = nn.Embedding(n_users, dim_gmf, sparse=sparse)
        self.item_gmf = nn.Embedding(n_items, dim_gmf, sparse=sparse)
        self.user_mlp = nn.Embedding(n_users, dim_mlp, sparse=sparse)
        self.item_mlp = nn.Embedding(n_items, dim_mlp, sparse=sparse)
        widths = (2 * dim_mlp, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(dim_gmf + hidden[-1], 1)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=init_std)
        for layer in [*self.layers, self.out]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    # -- scoring -------------------------------------------------------------------------------------------
    def _tower(self, h: torch.Tensor) -> torch.Tensor:
        """Layers 2.. of the MLP on first-layer pre-activations h [..., hidden[0]] -> [..., hidden[-1]]."""
        h = F.relu(h)
        for layer in self.layers[1:]:
            h = F.relu(layer(h))
        return h

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if items.dim() == 2:
            users = users.unsqueeze(1).expand_as(items)
        gmf = self.user_gmf(users) * self.item_gmf(items)
        mlp = self._tower(self.layers[0](torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1)))
        return self.out(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        w_gmf = self.out.weight[0, : self.dim_gmf]  # [dg]
        w_mlp = self.out.weight[0, self.dim_gmf :]  # [h_last]
        gmf = (self.user_gmf(users) * w_gmf) @ self.item_gmf.weight.T  # [B, n]
        first = self.layers[0]
        w_user, w_item = first.weight[:, : self.dim_mlp], first.weight[:, self.dim_mlp :]
        a = self.user_mlp(users) @ w_user.T + first.bias  # [B, h1]
        c = self.item_mlp.weight @ w_item.T  # [n, h1]
        chunk = max(1, _PAIR_CHUNK_ELEMENTS // max(1, users.shape[0] * max(self.hidden)))
        parts = []
        for start in range(0, self.n_items, chunk):
            h = self._tower(a[:, None, :] + c[None, start : start + chunk, :])  # [B, c, h_last]
            parts.append(h @ w_mlp)
        return gmf + torch.cat(parts, dim=1) + self.out.bias

    def score_all_naive(self, users: torch.Tensor) -> torch.Tensor:
        """Reference: the full network run on every (user, item) pair; same result as score_all, slower."""
        items = torch.arange(self.n_items, device=users.device)
        return self.score(users, items.unsqueeze(0).expand(users.shape[0], -1))

    # -- training ------------------------------------------------------------------------------------------
    def loss(self, batch: PairBatch) -> torch.Tensor:
        pos = self.score(batch.users, batch.pos_items)
        neg = self.score(batch.users, batch.neg_items)
        bce = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(
            neg, torch.zeros_like(neg)
        )
        l2 = sum(
            emb(idx).pow(2).sum()
            for emb, idx in (
                (self.user_gmf, batch.users),
                (self.user_mlp, batch.users),
                (self.item_gmf, batch.pos_items),
                (self.item_mlp, batch.pos_items),
                (self.item_gmf, batch.neg_items),
                (self.item_mlp, batch.neg_items),
            )
        )
        return 0.5 * bce + self.reg * l2 / len(batch)

    def item_embeddings(self) -> torch.Tensor:
        return torch.cat([self.item_gmf.weight, self.item_mlp.weight], dim=1)

    def config(self) -> dict[str, Any]:
        return {
            "dim_gmf": self.dim_gmf,
            "dim_mlp": self.dim_mlp,
            "hidden": list(self.hidden),
            "reg": self.reg,
            "init_std": self.init_std,
            "sparse": self.sparse,
        }

    @classmethod
    def count_parameters(cls, n_users: int, n_items: int, **config: Any) -> int:
        dg, dm = int(config.get("dim_gmf", 32)), int(config.get("dim_mlp", 32))
        hidden = [int(h) for h in config.get("hidden", (32, 16))]
        widths = [2 * dm, *hidden]
        mlp = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
        return (n_users + n_items) * (dg + dm) + mlp + dg + hidden[-1] + 1

    @classmethod
    def config_variants(cls, config: dict[str, Any]) -> list[dict[str, Any]]:
        """The GMF width one or two either side: the embedding rows dominate the count, so this fills the gaps
        left by scaling every width together."""
        dim = int(config["dim_gmf"])
        return [{**config, "dim_gmf": dim + k} for k in (-2, -1, 0, 1, 2) if dim + k > 0]

    @classmethod
    def scaled_config(cls, config: dict[str, Any], factor: float) -> dict[str, Any]:
        return {
            **config,
            "dim_gmf": scale_width(int(config.get("dim_gmf", 32)), factor),
            "dim_mlp": scale_width(int(config.get("dim_mlp", 32)), factor),
            "hidden": [scale_width(int(h), factor) for h in config.get("hidden", (32, 16))],
        }
