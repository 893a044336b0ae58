"""The paper's CGAN with the mask mechanism (`data_owner.gan`) as a list generator: GF_u = G(C_u, z), its noise
input z drawn per list; selected on validation HR@50 of GF_u as a recommender (the reproduction's method)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from data_owner.data import LeaveOneOutSplit
from data_owner.gan import CGANConfig, CGANResult, Generator, train_cgan
from data_owner.gan.cgan import _bags, _noise
from data_owner.generators.base import SELECTION_K, FitReport, ListGenerator, validation_metrics
from shared.interactions import ItemSets


class CGANLists(ListGenerator):
    family: ClassVar[str] = "cgan"
    own_noise: ClassVar[bool] = True

    def __init__(self, G: Generator, config: CGANConfig, result: CGANResult | None = None,
                 report: FitReport | None = None) -> None:
        self.G, self.config, self.result, self.n_items = G.eval(), config, result, G.n_items
        self.report = report or FitReport(chosen=self.settings())

    @torch.no_grad()
    def logits(self, users: torch.Tensor, train: ItemSets, noise: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.G.parameters()).device
        batch = users.detach().cpu().numpy().astype(np.int64)
        items, offsets = _bags(train, batch, device)
        if noise is None:  # the noiseless view: z = 0, the prior's mean
            z = torch.zeros(batch.size, self.G.noise_dim, device=device) if self.G.noise_dim else None
        else:
            z = _noise(batch.size, self.G.noise_dim, noise, device)
        return self.G(items, offsets, z).to(users.device)

    def scorer(self, train: ItemSets, seed: int | None = None, device: torch.device | str = "cpu"):
        # the CGAN is selected and reported with seeded noise (`data_owner.gan.generator_scorer`), not at z = 0
        return super().scorer(train, 0 if seed is None else seed, device)

    def settings(self) -> dict[str, Any]:
        return cgan_settings(self.config)

    def _state(self) -> dict[str, torch.Tensor]:
        return self.G.state_dict()

    @classmethod
    def _from_state(cls, settings: dict[str, Any], state: dict[str, torch.Tensor], n_items: int,
                    device: torch.device) -> CGANLists:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        config = CGANConfig(**fields)
        G = Generator(n_items, config.hidden_g, config.noise_dim, config.activation)
        G.load_state_dict(state)
        return cls(G.to(device), config)

    def save(self, folder: Path) -> None:
        super().save(folder)
        meta = {"n_items": self.n_items, "hidden_g": list(self.config.hidden_g), "noise_dim": self.config.noise_dim,
                "activation": self.config.activation}
        (Path(folder) / "cgan.json").write_text(json.dumps(meta, indent=2))


def cgan_validator(trained_on: LeaveOneOutSplit, seed: int, device: torch.device | str = "cpu"
                   ) -> Callable[[Generator], float]:
    """generator -> validation HR@50 of GF_u as a recommender (seeded noise, training items excluded): how the CGAN
    chooses its epoch, in the owner's chain and in the CGAN search alike."""

    def validate(G: Generator) -> float:
        return validation_metrics(CGANLists(G, CGANConfig()).scorer(trained_on.train, seed, device), trained_on,
                                  device)[f"HR@{SELECTION_K}"]

    return validate


def fit_cgan(trained_on: LeaveOneOutSplit, config: CGANConfig, seed: int, device: torch.device | str = "cpu",
             progress: bool = False) -> CGANLists:
    """The CGAN on the training sets (`config` with the chain's seed), its epoch chosen on validation HR@50."""
    config = replace(config, seed=seed, progress=progress)
    validate = cgan_validator(trained_on, seed, device) if trained_on.eval_users.size else None
    result = train_cgan(trained_on.train, config, validate=validate, device=device)
    model = CGANLists(result.generator, config, result)
    model.report = FitReport(
        chosen={"epoch": result.best_epoch}, tried=[r for r in result.history if "valid" in r],
        valid=validation_metrics(model.scorer(trained_on.train, seed, device), trained_on, device),
        seconds=result.seconds)
    return model


__all__ = ["CGANLists", "cgan_validator", "fit_cgan"]


def cgan_settings(config: CGANConfig) -> dict[str, Any]:
    """The settings that define a fitted CGAN: its config without the progress switch."""
    return {k: v for k, v in asdict(config).items() if k not in ("progress",)}
