"""Mult-VAE (Liang, Krishnan, Hoffman, Jebara, WWW 2018): a variational autoencoder of users' item vectors with a
multinomial likelihood.

    encoder   x_u (dropout, L2-normalised) -> tanh(W1 x + b1) -> (mu, log sigma^2)       [n -> 600 -> 2 x 200]
    decoder   z -> tanh(W2 z + b2) -> logits pi over the catalog                          [200 -> 600 -> n]
    loss      -sum_i x_ui log softmax(pi)_i + beta * KL(q(z | x_u) || N(0, I)),  beta annealed to `beta_cap`

The epoch is chosen on validation HR@50 (ties: NDCG@50) of the noiseless decoder (z = mu). As a list generator its
noise is the posterior sample z = mu + sigma * eps: two draws differ where the model is unsure of the user.
Every random draw (initial weights, dropout, shuffling, eps) comes from seeded torch generators."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from data_owner.data import LeaveOneOutSplit
from data_owner.generators.base import FitReport, ListGenerator, selection_key, validation_metrics
from shared.interactions import ItemSets
from shared.models import seeded_module


@dataclass(frozen=True)
class VAESettings:
    hidden: int = 600
    latent: int = 200
    dropout: float = 0.5  # share of the input hidden during training
    beta_cap: float = 0.2  # the KL weight's ceiling
    anneal_steps: int = 20000  # updates until beta reaches beta_cap
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 500
    epochs: int = 100
    eval_every: int = 2
    patience: int = 5  # evaluations without validation gain before stopping
    progress: bool = False

    def __post_init__(self) -> None:
        if min(self.hidden, self.latent, self.batch_size, self.epochs, self.eval_every, self.anneal_steps) < 1:
            raise ValueError("vae hidden, latent, batch_size, epochs, eval_every and anneal_steps must be >= 1")
        if not 0 <= self.dropout < 1 or self.beta_cap < 0 or not self.lr > 0 or self.patience < 0:
            raise ValueError("vae dropout must lie in [0, 1), beta_cap >= 0, lr > 0, patience >= 0")

    def architecture(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "latent": self.latent}


class MultVAENet(nn.Module):
    def __init__(self, n_items: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.n_items, self.latent = n_items, latent
        self.enc = nn.Linear(n_items, hidden)
        self.enc_out = nn.Linear(hidden, 2 * latent)
        self.dec = nn.Linear(latent, hidden)
        self.dec_out = nn.Linear(hidden, n_items)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Xavier-uniform weights and N(0, 0.001^2) biases, as the paper's code initialises them."""
        for layer in (self.enc, self.enc_out, self.dec, self.dec_out):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.normal_(layer.bias, 0.0, 0.001, generator=generator)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`x`: the users' (L2-normalised) input rows, dense [B, n] or sparse COO [B, n] (the input layer then costs
        the users' histories, not the catalog)."""
        if x.is_sparse:
            h = torch.tanh(torch.sparse.mm(x, self.enc.weight.T) + self.enc.bias)
        else:
            h = torch.tanh(self.enc(F.normalize(x, dim=1)))
        mu, logvar = self.enc_out(h).chunk(2, dim=1)
        return mu, logvar


    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec_out(torch.tanh(self.dec(z)))


def normalised_rows(train: ItemSets, users: np.ndarray, device: torch.device | str, dropout: float = 0.0,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The users' training rows as a sparse COO [B, n] input, L2-normalised after dropping each entry with
    probability `dropout` (drawn from `generator`); also the (row, item) of every entry, for the likelihood."""
    rows, cols = train.gather(users)
    rows_t = torch.as_tensor(rows, device=device)
    cols_t = torch.as_tensor(cols, device=device)
    keep = torch.ones(rows_t.shape, dtype=torch.bool, device=device)
    if dropout > 0 and rows.size:
        keep = torch.rand(rows_t.shape, generator=generator, device=device) >= dropout
    kept = torch.zeros(users.size, device=device).index_add_(0, rows_t, keep.float())
    values = keep.float() / kept.clamp_min(1.0).sqrt()[rows_t]
    x = torch.sparse_coo_tensor(torch.stack([rows_t, cols_t]), values, (users.size, train.n_items),
                                check_invariants=False).coalesce()
    return x, rows_t, cols_t


class MultVAE(ListGenerator):
    family: ClassVar[str] = "vae"
    own_noise: ClassVar[bool] = True

    def __init__(self, net: MultVAENet, settings: VAESettings, report: FitReport | None = None) -> None:
        self.net, self.vae_settings, self.n_items = net.eval(), settings, net.n_items
        self.report = report or FitReport(chosen=self.settings())

    @torch.no_grad()
    def logits(self, users: torch.Tensor, train: ItemSets, noise: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.net.parameters()).device
        x, _, _ = normalised_rows(train, users.detach().cpu().numpy().astype(np.int64), device)
        mu, logvar = self.net.encode(x)
        if noise is not None:
            eps = torch.randn(mu.shape, generator=noise, device=device)
            mu = mu + eps * torch.exp(0.5 * logvar)
        return F.log_softmax(self.net.decode(mu), dim=1).to(users.device)

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self.vae_settings).items() if k != "progress"}

    def _state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    @classmethod
    def _from_state(cls, settings: dict[str, Any], state: dict[str, torch.Tensor], n_items: int,
                    device: torch.device) -> MultVAE:
        vae_settings = VAESettings(**{k: v for k, v in settings.items() if k != "progress"})
        net = MultVAENet(n_items, vae_settings.hidden, vae_settings.latent)
        net.load_state_dict(state)
        return cls(net.to(device), vae_settings)


def fit_vae(trained_on: LeaveOneOutSplit, settings: VAESettings, seed: int = 0,
            device: torch.device | str = "cpu") -> MultVAE:
    """Mult-VAE on the training sets, the epoch chosen on validation (early stopping after `patience`)."""
    started = time.perf_counter()
    device = torch.device(device)
    train = trained_on.train
    init = torch.Generator().manual_seed(seed)
    net = seeded_module(lambda: MultVAENet(train.n_items, settings.hidden, settings.latent), init).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    draws = torch.Generator(device=device).manual_seed(seed + 1)
    order_rng = np.random.default_rng(seed)
    users = np.flatnonzero(train.lengths() > 0)
    model = MultVAE(net, settings)
    best: tuple[tuple[float, float], dict[str, torch.Tensor], int, dict[str, float]] | None = None
    tried: list[dict[str, Any]] = []
    stale, step = 0, 0
    bar = tqdm(range(1, settings.epochs + 1), desc="vae", disable=not settings.progress, leave=False)
    for epoch in bar:
        net.train()
        perm = order_rng.permutation(users)
        for start in range(0, users.size, settings.batch_size):
            batch = perm[start: start + settings.batch_size]
            x_in, rows, cols = normalised_rows(train, batch, device, settings.dropout, draws)
            mu, logvar = net.encode(x_in)
            z = mu + torch.randn(mu.shape, generator=draws, device=device) * torch.exp(0.5 * logvar)
            log_probs = F.log_softmax(net.decode(z), dim=1)
            nll = -log_probs[rows, cols].sum() / batch.size
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
            beta = min(settings.beta_cap, settings.beta_cap * step / settings.anneal_steps)
            loss = nll + beta * kl
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
        if epoch % settings.eval_every and epoch != settings.epochs:
            continue
        net.eval()
        metrics = validation_metrics(model.scorer(train, device=device), trained_on, device)
        tried.append({"epoch": epoch, "valid": metrics})
        bar.set_postfix(hr=f"{metrics.get('HR@50', math.nan):.4f}")
        if best is None or selection_key(metrics) > best[0]:
            best, stale = (selection_key(metrics), copy.deepcopy(net.state_dict()), epoch, metrics), 0
        else:
            stale += 1
            if settings.patience and stale >= settings.patience:
                break
    assert best is not None
    net.load_state_dict(best[1])
    net.eval()
    model.report = FitReport(chosen={**settings.architecture(), "epoch": best[2]}, tried=tried, valid=best[3],
                             seconds=time.perf_counter() - started)
    return model


__all__ = ["MultVAE", "MultVAENet", "VAESettings", "fit_vae"]
