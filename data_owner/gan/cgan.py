"""Conditional GAN over purchase vectors with the mask mechanism (GD-REC eqs. 2-3; CFGAN, CIKM 2018).

G(C_u, z) -> GF_u in (0, 1)^n; D(x | C_u) -> logit, with x = C_u (real) or the masked fake GF_u * (E_u + K_u),
K_u a fresh sample of the user's non-interacted items (each with probability `mask_ratio`, re-drawn at every
step). Losses (ALGORITHMS.md section 1):
    L_D = -[log D(C_u | C_u) + log(1 - D(GF_u * (E_u + K_u) | C_u))]
    L_G = -log D(GF_u * (E_u + K_u) | C_u) + alpha * sum_{j in K_u} GF_uj^2      (non-saturating G loss)
Every layer that reads an n-wide binary vector (C_u, and the real x = C_u) is an embedding-bag sum over the
user's items, so its cost grows with the user's history, not with the catalog; only the masked fake is dense.
When a batch's vectors are dense after all (at least `DENSE_INPUT_SHARE` of their entries set, as under
randomized response at small epsilon), the same sum is computed as one dense matmul, which is then faster.

K_u sampling (`mask_sampling`):
    "per_user"  (the paper): every (user, non-interacted item) pair joins K_u independently with probability rho;
                G's output and D's fake input are computed over the whole catalog.
    "per_batch" (ours, for speed on large catalogs): one column sample S (each item with probability rho) per
                mini-batch, K_u = S minus the user's items. Each pair still joins K_u with probability rho, but
                the users of a batch share their draws; in exchange G's output layer and D's fake input are
                computed only over S and the batch's own items (about rho of the catalog plus the batch's
                history), which is exactly the dense computation restricted to the columns where E_u + K_u can
                be non-zero.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from shared.interactions import ItemSets
from shared.models import seeded_module
from shared.options import json_object

log = logging.getLogger(__name__)

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "tanh": torch.tanh,
}

_MASK_SAMPLING = ("per_user", "per_batch")


@dataclass(frozen=True)
class CGANConfig:
    """CGAN sizes and schedule (defaults after CFGAN's ML100K settings; tune on validation)."""

    hidden_g: tuple[int, ...] = (400,)
    hidden_d: tuple[int, ...] = (125,)
    noise_dim: int = 32  # 0 = no noise input (plain CFGAN)
    input_dropout: float = 0.0  # share of C_u hidden from G's input per training step (ours; 0 = the paper)
    activation: str = "sigmoid"
    mask_ratio: float = 0.3  # rho: share of non-interacted items in K_u
    mask_sampling: str = "per_user"  # "per_user" (paper) or "per_batch" (shared column sample; see module doc)
    alpha: float = 0.03  # weight of the zero-reconstruction term
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    l2_g: float = 0.0
    l2_d: float = 0.0
    g_steps: int = 4  # generator passes over all users per epoch
    d_steps: int = 2  # discriminator passes over all users per epoch
    batch_size: int = 64  # users per step, at least: an epoch splits the users into n // batch_size equal parts
    epochs: int = 200
    eval_every: int = 10
    patience: int = 5  # evaluations without validation gain before stopping; 0 = never
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.input_dropout < 1:
            raise ValueError(f"input_dropout must lie in [0, 1), got {self.input_dropout}")
        if not 0 <= self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must lie in [0, 1], got {self.mask_ratio}")
        if self.mask_sampling not in _MASK_SAMPLING:
            raise ValueError(f"mask_sampling must be one of {_MASK_SAMPLING}, got {self.mask_sampling!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if min(self.hidden_g + self.hidden_d) <= 0 or self.noise_dim < 0:
            raise ValueError("layer widths must be positive and noise_dim non-negative")
        if self.g_steps < 1 or self.d_steps < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("g_steps, d_steps, epochs and batch_size must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)

    def with_json(self, text: str | None, option: str = "--cgan-json") -> CGANConfig:
        """This config with the fields of a JSON object (a CLI option's value) laid over it. ValueError naming
        `option` and what is wrong: not JSON, not an object, an unknown field, or a value the config refuses."""
        if not text:
            return self
        given = json_object(text, option)
        known = {f.name for f in fields(self)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"{option}: unknown CGANConfig field(s) {unknown}; known: {sorted(known)}")
        for key in ("hidden_g", "hidden_d"):
            if key in given:
                given[key] = tuple(given[key]) if isinstance(given[key], list) else (given[key],)
        try:
            return replace(self, **given)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{option}: {exc}") from None

    def identity(self) -> dict:
        """The fields that decide what the CGAN learns (not `progress`), for cache and result keys; a switch at
        its default is left out, so keys made before the switch existed stay valid."""
        kept = {k: v for k, v in asdict(self).items() if k != "progress"}
        if kept["mask_sampling"] == "per_user":
            del kept["mask_sampling"]
        if kept["input_dropout"] == 0:
            del kept["input_dropout"]
        return kept


DENSE_INPUT_SHARE = 0.1  # measured break-even of the bag vs one dense matmul (25,181 items, width 400, 1 thread)


def bag_sum(weight: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k w_k * weight[items_k] per bag = X @ weight for the 0/1 (or weighted) rows X the bags describe: an
    embedding bag for sparse X, a dense matmul when X has at least DENSE_INPUT_SHARE of its entries set."""
    n_bags = offsets.numel()
    if items.numel() < DENSE_INPUT_SHARE * n_bags * weight.shape[0]:
        return F.embedding_bag(items, weight, offsets, mode="sum", per_sample_weights=weights)
    lengths = torch.diff(offsets, append=offsets.new_tensor([items.numel()]))
    rows = torch.repeat_interleave(torch.arange(n_bags, device=items.device), lengths)
    dense = torch.zeros(n_bags, weight.shape[0], device=weight.device, dtype=weight.dtype)
    values = torch.ones_like(items, dtype=weight.dtype) if weights is None else weights.to(weight.dtype)
    dense.index_put_((rows, items), values, accumulate=True)
    return dense @ weight


def _reset_linear(layer: nn.Linear, generator: torch.Generator | None) -> None:
    """`nn.Linear.reset_parameters` drawing from `generator`."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class _SparseInputMLP(nn.Module):
    """MLP whose first layer reads binary item vectors as embedding bags (plus optional dense inputs)."""

    def __init__(self, n_items: int, extra_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str):
        super().__init__()
        self.n_items = n_items
        self.bag = nn.EmbeddingBag(n_items, hidden[0], mode="sum")  # = W_c C_u for a binary C_u
        self.extra = nn.Linear(extra_dim, hidden[0], bias=False) if extra_dim else None
        self.bias = nn.Parameter(torch.zeros(hidden[0]))
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:], strict=True))
        self.out = nn.Linear(hidden[-1], out_dim)
        self.act = _ACTIVATIONS[activation]
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The bag uniform in +-1/sqrt(n_items), the bias zero, the dense layers as torch's `nn.Linear` does it;
        drawn from `generator` (None: torch's default generator)."""
        bound = 1.0 / np.sqrt(self.n_items)
        nn.init.uniform_(self.bag.weight, -bound, bound, generator=generator)
        nn.init.zeros_(self.bias)
        for layer in [*([self.extra] if self.extra is not None else []), *self.layers, self.out]:
            _reset_linear(layer, generator)

    def forward(self, items: torch.Tensor, offsets: torch.Tensor, extra: torch.Tensor | None,
                columns: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Output units `columns` only (all when None): the rows of the output layer that are needed. `weights`
        scale each bag entry (None: every item counts 1)."""
        h = bag_sum(self.bag.weight, items, offsets, weights) + self.bias
        if self.extra is not None and extra is not None:
            h = h + self.extra(extra)
        h = self.act(h)
        for layer in self.layers:
            h = self.act(layer(h))
        if columns is None:
            return self.out(h)
        return F.linear(h, self.out.weight[columns], self.out.bias[columns])


class Generator(nn.Module):
    """G(C_u, z): users' purchase vectors (as item bags) and noise -> sigmoid scores over all items [B, n]."""

    def __init__(self, n_items: int, hidden: tuple[int, ...] = (400,), noise_dim: int = 32, activation="sigmoid"):
        super().__init__()
        self.n_items, self.noise_dim = n_items, noise_dim
        self.net = _SparseInputMLP(n_items, noise_dim, tuple(hidden), n_items, activation)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self.net.reset_parameters(generator)

    def forward(self, items: torch.Tensor, offsets: torch.Tensor, noise: torch.Tensor | None,
                columns: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """GF_u over all items, or over the item ids `columns` only ([B, len(columns)])."""
        return torch.sigmoid(self.net(items, offsets, noise, columns, weights))


class Discriminator(nn.Module):
    """D(x | C_u) -> logit [B]. x is dense [B, n] (the masked fake), or [B, len(columns)] when x is zero outside
    the item ids `columns`, or, for the real sample x = C_u, None."""

    def __init__(self, n_items: int, hidden: tuple[int, ...] = (125,), activation: str = "sigmoid"):
        super().__init__()
        self.condition = _SparseInputMLP(n_items, 0, tuple(hidden), 1, activation)
        self.x_weight = nn.Parameter(torch.empty(n_items, hidden[0]))  # the x half of the first layer
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self.condition.reset_parameters(generator)
        bound = 1.0 / np.sqrt(self.x_weight.shape[0])
        nn.init.uniform_(self.x_weight, -bound, bound, generator=generator)

    def forward(self, items: torch.Tensor, offsets: torch.Tensor, x: torch.Tensor | None,
                columns: torch.Tensor | None = None) -> torch.Tensor:
        net = self.condition
        h = bag_sum(net.bag.weight, items, offsets) + net.bias
        # x = C_u is the same bag of items; a dense x goes through the matmul (over its columns only)
        if x is None:
            h = h + bag_sum(self.x_weight, items, offsets)
        else:
            h = h + x @ (self.x_weight if columns is None else self.x_weight[columns])
        h = net.act(h)
        for layer in net.layers:
            h = net.act(layer(h))
        return net.out(h).squeeze(-1)


def _bags(train: ItemSets, users: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = train.lengths()[users]
    offsets = np.zeros(users.size, dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    _, items = train.gather(users)
    return torch.as_tensor(items, device=device), torch.as_tensor(offsets, device=device)


def _dense(train: ItemSets, users: np.ndarray, device: torch.device) -> torch.Tensor:
    rows, items = train.gather(users)
    out = torch.zeros(users.size, train.n_items, device=device)
    out[torch.as_tensor(rows, device=device), torch.as_tensor(items, device=device)] = 1.0
    return out


def sample_negative_mask(purchased: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """K_u: each non-interacted item (purchased == 0) joins with probability `ratio`. [B, n] float 0/1."""
    draw = torch.rand(purchased.shape, generator=generator, device=purchased.device)
    return ((draw < ratio) & (purchased == 0)).float()


@dataclass
class _Batch:
    """One mini-batch's inputs: the users' item bags (D's condition), E_u and K_u over `columns` (None = the
    whole catalog), and G's input bags (the same bags, or with `input_dropout` a corrupted copy)."""

    items: torch.Tensor
    offsets: torch.Tensor
    purchased: torch.Tensor
    negatives: torch.Tensor
    columns: torch.Tensor | None
    g_input: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (items, offsets, weights)

    def generate(self, G: Generator, noise: torch.Tensor | None) -> torch.Tensor:
        items, offsets, weights = self.g_input or (self.items, self.offsets, None)
        return G(items, offsets, noise, self.columns, weights)


def drop_items(items: torch.Tensor, offsets: torch.Tensor, p: float, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hide each bag entry with probability p; the kept ones weigh 1 / (1 - p) (inverted dropout, so the full
    bag G sees when generating has the same expected sum). Returns (items, offsets, weights)."""
    keep = torch.rand(items.shape, generator=generator, device=items.device) >= p
    bag_of = torch.bucketize(torch.arange(items.numel(), device=items.device), offsets, right=True) - 1
    kept_per_bag = torch.bincount(bag_of[keep], minlength=offsets.numel())
    new_offsets = torch.zeros_like(offsets)
    new_offsets[1:] = torch.cumsum(kept_per_bag, 0)[:-1]
    kept = items[keep]
    return kept, new_offsets, torch.full(kept.shape, 1.0 / (1.0 - p), device=items.device)


def _batch(train: ItemSets, users: np.ndarray, config: CGANConfig, generator: torch.Generator,
           device: torch.device) -> _Batch:
    items, offsets = _bags(train, users, device)
    batch = _sampled_masks(train, users, items, offsets, config, generator, device)
    if config.input_dropout > 0:
        batch.g_input = drop_items(items, offsets, config.input_dropout, generator)
    return batch


def _sampled_masks(train: ItemSets, users: np.ndarray, items: torch.Tensor, offsets: torch.Tensor,
                   config: CGANConfig, generator: torch.Generator, device: torch.device) -> _Batch:
    if config.mask_sampling == "per_user":
        purchased = _dense(train, users, device)
        return _Batch(items, offsets, purchased, sample_negative_mask(purchased, config.mask_ratio, generator), None)
    sampled = torch.rand(train.n_items, generator=generator, device=device) < config.mask_ratio
    in_batch = torch.zeros(train.n_items, dtype=torch.bool, device=device)
    in_batch[items] = True
    columns = torch.nonzero(sampled | in_batch).squeeze(1)  # sorted item ids
    rows, row_items = train.gather(users)
    purchased = torch.zeros(users.size, columns.numel(), device=device)
    position = torch.searchsorted(columns, torch.as_tensor(row_items, device=device))
    purchased[torch.as_tensor(rows, device=device), position] = 1.0
    negatives = (sampled[columns].unsqueeze(0) & (purchased == 0)).float()
    return _Batch(items, offsets, purchased, negatives, columns)


@dataclass
class CGANResult:
    generator: Generator
    discriminator: Discriminator
    best_epoch: int
    best_metric: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_epoch: float = 0.0


def _noise(batch: int, dim: int, generator: torch.Generator, device: torch.device) -> torch.Tensor | None:
    return torch.randn(batch, dim, generator=generator, device=device) if dim else None


def train_cgan(
    train: ItemSets,
    config: CGANConfig,
    validate: Callable[[Generator], float] | None = None,
    device: torch.device | str = "cpu",
) -> CGANResult:
    """Alternate D and G updates (d_steps, then g_steps passes over the users per epoch); with `validate`
    (generator -> metric, higher is better) keep the best generator and stop after `patience` stale checks."""
    device = torch.device(device)
    rng = np.random.default_rng(config.seed)
    gen_rng = torch.Generator(device=device).manual_seed(config.seed)
    init = torch.Generator().manual_seed(config.seed)  # the weights' initialisation, on the CPU
    G = seeded_module(lambda: Generator(train.n_items, config.hidden_g, config.noise_dim, config.activation), init)
    D = seeded_module(lambda: Discriminator(train.n_items, config.hidden_d, config.activation), init)
    G, D = G.to(device), D.to(device)
    # the fused kernel: on a CPU, the per-tensor Adam over the n-wide layers cost more than a step's matmuls
    fused = device.type in ("cpu", "cuda")
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, weight_decay=config.l2_g, fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, weight_decay=config.l2_d, fused=fused)
    users_all = np.flatnonzero(train.lengths() > 0)
    if users_all.size == 0:
        raise ValueError("the CGAN needs at least one user with training items")
    result = CGANResult(G, D, best_epoch=0, best_metric=-np.inf)
    best_state: dict | None = None
    stale = 0
    started = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc="cgan", disable=not config.progress, leave=False)
    for epoch in bar:
        epoch_started = time.perf_counter()
        d_total = g_total = 0.0
        d_count = g_count = 0
        G.train()
        D.train()
        for _ in range(config.d_steps):
            for users in np.array_split(rng.permutation(users_all), max(1, users_all.size // config.batch_size)):
                noise = _noise(users.size, config.noise_dim, gen_rng, device)  # drawn before the mask, as ever
                b = _batch(train, users, config, gen_rng, device)
                with torch.no_grad():
                    fake = b.generate(G, noise)
                real_logit = D(b.items, b.offsets, None)
                fake_logit = D(b.items, b.offsets, fake * (b.purchased + b.negatives), b.columns)
                loss_d = F.binary_cross_entropy_with_logits(
                    real_logit, torch.ones_like(real_logit)
                ) + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                d_total, d_count = d_total + loss_d.item(), d_count + 1
        for _ in range(config.g_steps):
            for users in np.array_split(rng.permutation(users_all), max(1, users_all.size // config.batch_size)):
                b = _batch(train, users, config, gen_rng, device)
                fake = b.generate(G, _noise(users.size, config.noise_dim, gen_rng, device))
                fake_logit = D(b.items, b.offsets, fake * (b.purchased + b.negatives), b.columns)
                adversarial = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
                zero_reconstruction = (fake.pow(2) * b.negatives).sum(1).mean()
                loss_g = adversarial + config.alpha * zero_reconstruction
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                g_total, g_count = g_total + loss_g.item(), g_count + 1
        if not (np.isfinite(d_total) and np.isfinite(g_total)):
            raise FloatingPointError(
                f"CGAN losses diverged at epoch {epoch} (D {d_total}, G {g_total}); lower lr_g / lr_d "
                f"(now {config.lr_g} / {config.lr_d})"
            )
        record = {"epoch": epoch, "loss_d": d_total / d_count, "loss_g": g_total / g_count,
                  "seconds": time.perf_counter() - epoch_started}
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            G.eval()
            value = float(validate(G))
            record["valid"] = value
            if value > result.best_metric:
                result.best_metric, result.best_epoch = value, epoch
                best_state = {k: v.detach().clone() for k, v in G.state_dict().items()}
                stale = 0
            else:
                stale += 1
            bar.set_postfix(d=f"{record['loss_d']:.3f}", g=f"{record['loss_g']:.3f}", valid=f"{value:.4f}")
            log.info("cgan epoch %d: D %.4f G %.4f valid %.4f", epoch, record["loss_d"], record["loss_g"], value)
        result.history.append(record)
        if validate is not None and config.patience and stale >= config.patience:
            log.info("cgan: no validation gain in %d checks, stopping at epoch %d (best %d)", stale, epoch,
                     result.best_epoch)
            break
    bar.close()
    if best_state is not None:
        G.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history)
    G.eval()
    result.seconds = time.perf_counter() - started
    result.seconds_per_epoch = float(np.mean([r["seconds"] for r in result.history]))
    return result


@torch.no_grad()
def generate_scores(
    G: Generator, train: ItemSets, users: np.ndarray, seed: int = 0, batch_size: int = 256
) -> torch.Tensor:
    """GF_u for the given users with seeded noise: [len(users), n] on G's device (same seed, same scores)."""
    device = next(G.parameters()).device
    gen_rng = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for start in range(0, len(users), batch_size):
        batch = np.asarray(users[start : start + batch_size], dtype=np.int64)
        items, offsets = _bags(train, batch, device)
        parts.append(G(items, offsets, _noise(batch.size, G.noise_dim, gen_rng, device)))
    return torch.cat(parts) if parts else torch.empty(0, G.n_items, device=device)
