"""List generators: the sources of the generated lists GF(I)_u the owner exports (see `base` for the contract).

    cgan     the paper's CGAN with the mask mechanism (the reproduction's method)
    itemknn  item-item cosine kNN with shrinkage, k and shrinkage chosen on validation
    vae      Mult-VAE, noise = a posterior sample of z
    teacher  the KD teacher's scores with Gumbel noise (tau = 0: its own top-L)
    ease     EASE, closed form, lambda chosen on validation (catalogs up to `max_items`)

`fit_generator` fits one family from its settings (a JSON object laid over the family's defaults);
`load_generator` reads one back from the folder `ListGenerator.save` wrote. Choosing between families by the
student each one produces is `data_owner.generators.select`."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from data_owner.data import LeaveOneOutSplit
from data_owner.gan import CGANConfig
from data_owner.generators.base import FitReport, ListGenerator, load_meta, load_state, validation_metrics
from data_owner.generators.cgan import CGANLists, fit_cgan
from data_owner.generators.ease import EASE, EASESettings, fit_ease
from data_owner.generators.itemknn import ItemKNN, ItemKNNSettings, fit_itemknn
from data_owner.generators.teacher import TeacherLists, TeacherListSettings, fit_teacher_lists, load_teacher_lists
from data_owner.generators.vae import MultVAE, VAESettings, fit_vae
from shared.models import Recommender

FAMILIES = ("cgan", "itemknn", "vae", "teacher", "ease")
SETTINGS = {"itemknn": ItemKNNSettings, "vae": VAESettings, "teacher": TeacherListSettings, "ease": EASESettings}
CLASSES: dict[str, type[ListGenerator]] = {"cgan": CGANLists, "itemknn": ItemKNN, "vae": MultVAE,
                                           "teacher": TeacherLists, "ease": EASE}


def family_settings(family: str, overrides: dict[str, Any] | None = None) -> Any:
    """The settings object of a non-CGAN family: its defaults with `overrides` (JSON fields) laid over them;
    ValueError naming the family and the unknown or invalid field."""
    if family not in SETTINGS:
        raise ValueError(f"generator family must be one of {list(FAMILIES)}, got {family!r}")
    cls = SETTINGS[family]
    overrides = dict(overrides or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{family} generator settings take {sorted(known)}, not {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"{family} generator settings: {exc}") from None


def fit_generator(family: str, trained_on: LeaveOneOutSplit, *, seed: int, device: torch.device | str = "cpu",
                  settings: dict[str, Any] | None = None, cgan: CGANConfig | None = None,
                  teacher: Recommender | None = None, progress: bool = False) -> ListGenerator:
    """Fit the generator `family` on `trained_on` (its settings chosen on its validation items)."""
    if family == "cgan":
        return fit_cgan(trained_on, cgan or CGANConfig(), seed, device, progress)
    chosen = family_settings(family, settings)
    if family == "itemknn":
        return fit_itemknn(trained_on, chosen, device)
    if family == "vae":
        return fit_vae(trained_on, chosen if not progress else _with(chosen, progress=True), seed, device)
    if family == "ease":
        return fit_ease(trained_on, chosen, device)
    if teacher is None:
        raise ValueError("the teacher generator needs the trained KD teacher")
    return fit_teacher_lists(teacher, trained_on, chosen, device)


def _with(settings: Any, **changes: Any) -> Any:
    assert is_dataclass(settings)
    return type(settings)(**{**{f.name: getattr(settings, f.name) for f in fields(settings)}, **changes})


def load_generator(folder: Path, device: torch.device | str = "cpu") -> ListGenerator:
    """The generator `ListGenerator.save` wrote into `folder`."""
    meta = load_meta(folder)
    family = meta["family"]
    if family not in CLASSES:
        raise ValueError(f"{folder}: unknown generator family {family!r}")
    device = torch.device(device)
    if family == "teacher":
        generator: ListGenerator = load_teacher_lists(folder, meta["settings"], device)
    else:
        generator = CLASSES[family]._from_state(meta["settings"], load_state(folder, device), int(meta["n_items"]),
                                                device)
    generator.noise_temperature = float(meta.get("noise_temperature", 0.0))
    report = meta.get("report") or {}
    generator.report = FitReport(chosen=report.get("chosen", {}), tried=report.get("tried", []),
                                 valid=report.get("valid", {}), test=report.get("test", {}),
                                 seconds=float(report.get("seconds", 0.0)))
    return generator


__all__ = [
    "FAMILIES",
    "FitReport",
    "ListGenerator",
    "family_settings",
    "fit_generator",
    "load_generator",
    "validation_metrics",
]
