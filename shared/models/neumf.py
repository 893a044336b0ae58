"""Neural Matrix Factorisation (He et al., WWW 2017): a GMF branch p_u * q_i and an MLP tower on [p_u; q_i],
joined by one output layer into a logit; trained with BCE-with-logits on positives and sampled negatives.

`score_all` splits the MLP's first layer: W [p_u; q_i] + b = (W_u p_u + b) + W_i q_i, so the big matmul is done
once per user and once per item instead of once per (user, item) pair; only the cheap ReLU and the later,
narrower layers run per pair, chunked over items to bound memory. `score_all_naive` is the per-pair reference.

`GMF` and `MLP` are NeuMF's two branches as models of their own, for the NCF paper's pre-training (section 3.4.1):
train each alone, then `NeuMF.from_pretrained(gmf, mlp, alpha)` starts NeuMF from their weights, with the output
layer [alpha * h_GMF ; (1 - alpha) * h_MLP].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.models.base import PairBatch, Recommender, scale_width

# Upper bound on elements of the per-pair hidden activations materialised at once in score_all.
_PAIR_CHUNK_ELEMENTS = 1 << 24


def _tower(layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    """Layers 2.. of an MLP tower on first-layer pre-activations h [..., hidden[0]] -> [..., hidden[-1]]."""
    h = F.relu(h)
    for layer in layers[1:]:
        h = F.relu(layer(h))
    return h


def _split_tower_scores(layers: nn.ModuleList, user_part: torch.Tensor, item_part: torch.Tensor, w: torch.Tensor,
                        widest: int) -> torch.Tensor:
    """sum_k w_k * tower(a_u + c_i)_k for every (user, item): user_part a [B, h1] (first layer's user half plus
    bias), item_part c [n, h1]; chunked over items so at most _PAIR_CHUNK_ELEMENTS activations exist at once."""
    n_users, n_items = user_part.shape[0], item_part.shape[0]
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // max(1, n_users * widest))
    parts = [_tower(layers, user_part[:, None, :] + item_part[None, start : start + chunk, :]) @ w
             for start in range(0, n_items, chunk)]
    return torch.cat(parts, dim=1)


def _pointwise_loss(model: Recommender, batch: PairBatch, embeddings: list[nn.Embedding], reg: float,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """BCE-with-logits on the positives (label 1, each weighted by `weights` when given) and the sampled negatives
    (label 0), averaged over the two, plus reg x the squared L2 norm of the embedding rows the batch touches, per
    example."""
    pos = model.score(batch.users, batch.pos_items)
    neg = model.score(batch.users, batch.neg_items)
    bce = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), weight=weights) + \
        F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
    users, items = embeddings[: len(embeddings) // 2], embeddings[len(embeddings) // 2 :]
    l2 = sum(emb(batch.users).pow(2).sum() for emb in users) + sum(
        emb(idx).pow(2).sum() for emb in items for idx in (batch.pos_items, batch.neg_items))
    return 0.5 * bce + reg * l2 / len(batch)


def _init_embeddings(embeddings: list[nn.Embedding], std: float, generator: torch.Generator | None) -> None:
    for emb in embeddings:
        nn.init.normal_(emb.weight, std=std, generator=generator)


def _mlp_layers(dim: int, hidden: tuple[int, ...]) -> nn.ModuleList:
    widths = (2 * dim, *hidden)
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))


def _init_linear(layers: list[nn.Linear], generator: torch.Generator | None) -> None:
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight, generator=generator)
        nn.init.zeros_(layer.bias)


def _mlp_count(dim: int, hidden: list[int]) -> int:
    widths = [2 * dim, *hidden]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


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
        self.layers = _mlp_layers(dim_mlp, hidden)
        self.out = nn.Linear(dim_gmf + hidden[-1], 1)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        _init_embeddings([self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp], self.init_std, generator)
        _init_linear([*self.layers, self.out], generator)

    @classmethod
    def from_pretrained(cls, gmf: GMF, mlp: MLP, alpha: float = 0.5, reg: float | None = None) -> NeuMF:
        """NeuMF started from separately trained branches (NCF pre-training): the embeddings and tower are
        copied, the output layer is [alpha * w_GMF ; (1 - alpha) * w_MLP] with bias alpha * b_GMF + (1 - alpha) *
        b_MLP, so at alpha = 1 (or 0) NeuMF scores exactly as the GMF (or MLP) did."""
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if (gmf.n_users, gmf.n_items) != (mlp.n_users, mlp.n_items):
            raise ValueError("the GMF and MLP were trained on different user/item sets")
        model = cls(gmf.n_users, gmf.n_items, dim_gmf=gmf.dim, dim_mlp=mlp.dim, hidden=mlp.hidden,
                    reg=gmf.reg if reg is None else reg, init_std=gmf.init_std, sparse=gmf.sparse)
        with torch.no_grad():
            model.user_gmf.weight.copy_(gmf.user_emb.weight)
            model.item_gmf.weight.copy_(gmf.item_emb.weight)
            model.user_mlp.weight.copy_(mlp.user_emb.weight)
            model.item_mlp.weight.copy_(mlp.item_emb.weight)
            model.layers.load_state_dict(mlp.layers.state_dict())
            model.out.weight.copy_(torch.cat([alpha * gmf.out.weight, (1 - alpha) * mlp.out.weight], dim=1))
            model.out.bias.copy_(alpha * gmf.out.bias + (1 - alpha) * mlp.out.bias)
        return model.to(gmf.device)

    # -- scoring -------------------------------------------------------------------------------------------
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if items.dim() == 2:
            users = users.unsqueeze(1).expand_as(items)
        gmf = self.user_gmf(users) * self.item_gmf(items)
        mlp = _tower(self.layers, self.layers[0](torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1)))
        return self.out(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        w_gmf = self.out.weight[0, : self.dim_gmf]  # [dg]
        w_mlp = self.out.weight[0, self.dim_gmf :]  # [h_last]
        gmf = (self.user_gmf(users) * w_gmf) @ self.item_gmf.weight.T  # [B, n]
        first = self.layers[0]
        w_user, w_item = first.weight[:, : self.dim_mlp], first.weight[:, self.dim_mlp :]
        a = self.user_mlp(users) @ w_user.T + first.bias  # [B, h1]
        c = self.item_mlp.weight @ w_item.T  # [n, h1]
        return gmf + _split_tower_scores(self.layers, a, c, w_mlp, max(self.hidden)) + self.out.bias

    def score_all_naive(self, users: torch.Tensor) -> torch.Tensor:
        """Reference: the full network run on every (user, item) pair; same result as score_all, slower."""
        items = torch.arange(self.n_items, device=users.device)
        return self.score(users, items.unsqueeze(0).expand(users.shape[0], -1))

    # -- training ------------------------------------------------------------------------------------------
    def loss(self, batch: PairBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
        return _pointwise_loss(self, batch, [self.user_gmf, self.user_mlp, self.item_gmf, self.item_mlp], self.reg,
                               weights)

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
        return (n_users + n_items) * (dg + dm) + _mlp_count(dm, hidden) + dg + hidden[-1] + 1

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


class GMF(Recommender):
    """NeuMF's GMF branch alone (NCF's generalised matrix factorisation): logit = w^T (p_u * q_i) + b."""

    family = "gmf"

    def __init__(self, n_users: int, n_items: int, dim: int = 32, reg: float = 1e-5, init_std: float = 0.01,
                 sparse: bool = True) -> None:
        super().__init__(n_users, n_items)
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim, self.reg, self.init_std, self.sparse = dim, reg, init_std, sparse
        self.user_emb = nn.Embedding(n_users, dim, sparse=sparse)
        self.item_emb = nn.Embedding(n_items, dim, sparse=sparse)
        self.out = nn.Linear(dim, 1)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        _init_embeddings([self.user_emb, self.item_emb], self.init_std, generator)
        _init_linear([self.out], generator)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if items.dim() == 2:
            users = users.unsqueeze(1).expand_as(items)
        return self.out(self.user_emb(users) * self.item_emb(items)).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return (self.user_emb(users) * self.out.weight[0]) @ self.item_emb.weight.T + self.out.bias

    def loss(self, batch: PairBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
        return _pointwise_loss(self, batch, [self.user_emb, self.item_emb], self.reg, weights)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "reg": self.reg, "init_std": self.init_std, "sparse": self.sparse}

    @classmethod
    def count_parameters(cls, n_users: int, n_items: int, **config: Any) -> int:
        dim = int(config.get("dim", 32))
        return (n_users + n_items) * dim + dim + 1

    @classmethod
    def scaled_config(cls, config: dict[str, Any], factor: float) -> dict[str, Any]:
        return {**config, "dim": scale_width(int(config.get("dim", 32)), factor)}


class MLP(Recommender):
    """NeuMF's MLP branch alone: logit = w^T tower([p_u; q_i]) + b, scored over all items with the same split of
    the first layer as NeuMF."""

    family = "mlp"

    def __init__(self, n_users: int, n_items: int, dim: int = 32, hidden: tuple[int, ...] | list[int] = (32, 16),
                 reg: float = 1e-5, init_std: float = 0.01, sparse: bool = True) -> None:
        super().__init__(n_users, n_items)
        hidden = tuple(int(h) for h in hidden)
        if dim <= 0 or not hidden or min(hidden) <= 0:
            raise ValueError(f"all widths must be positive, got dim={dim}, hidden={hidden}")
        self.dim, self.hidden, self.reg, self.init_std, self.sparse = dim, hidden, reg, init_std, sparse
        self.user_emb = nn.Embedding(n_users, dim, sparse=sparse)
        self.item_emb = nn.Embedding(n_items, dim, sparse=sparse)
        self.layers = _mlp_layers(dim, hidden)
        self.out = nn.Linear(hidden[-1], 1)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        _init_embeddings([self.user_emb, self.item_emb], self.init_std, generator)
        _init_linear([*self.layers, self.out], generator)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if items.dim() == 2:
            users = users.unsqueeze(1).expand_as(items)
        h = _tower(self.layers, self.layers[0](torch.cat([self.user_emb(users), self.item_emb(items)], dim=-1)))
        return self.out(h).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        first = self.layers[0]
        a = self.user_emb(users) @ first.weight[:, : self.dim].T + first.bias
        c = self.item_emb.weight @ first.weight[:, self.dim :].T
        return _split_tower_scores(self.layers, a, c, self.out.weight[0], max(self.hidden)) + self.out.bias

    def loss(self, batch: PairBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
        return _pointwise_loss(self, batch, [self.user_emb, self.item_emb], self.reg, weights)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "hidden": list(self.hidden), "reg": self.reg, "init_std": self.init_std,
                "sparse": self.sparse}

    @classmethod
    def count_parameters(cls, n_users: int, n_items: int, **config: Any) -> int:
        dim = int(config.get("dim", 32))
        hidden = [int(h) for h in config.get("hidden", (32, 16))]
        return (n_users + n_items) * dim + _mlp_count(dim, hidden) + hidden[-1] + 1

    @classmethod
    def scaled_config(cls, config: dict[str, Any], factor: float) -> dict[str, Any]:
        return {**config, "dim": scale_width(int(config.get("dim", 32)), factor),
                "hidden": [scale_width(int(h), factor) for h in config.get("hidden", (32, 16))]}
