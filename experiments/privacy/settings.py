"""The privacy settings a sweep compares (the list generator family, and the export's switches: exclude-observed
lists, randomized response at epsilon) and the key of a (setting, seed) row: a hash of the setting, the seed and
every chain setting it depends on, the GD student sampler revision included from revision 2 on. A setting of the
paper's CGAN is keyed without its family (the keys of CGAN rows do not name a generator); one of another family
names it, with that family's generator settings."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from data_owner.config import GENERATOR_FAMILIES, RESEARCH_GENERATOR
from experiments.grid import gd_teacher_settings_payload
from experiments.lab import LabConfig
from shared.distillation import SAMPLER_REVISION as GD_SAMPLER_REVISION

DEFAULT_SETTINGS = "default,exclude-observed,rr=1,rr=2,rr=4,rr=8"
DEFAULT_GENERATORS = RESEARCH_GENERATOR  # the paper's CGAN


@dataclass(frozen=True)
class PrivacySetting:
    """One list generator family and one combination of the export's privacy switches (docs/privacy.md, "The
    privacy model")."""

    include_observed: bool = True
    rr_epsilon: float | None = None
    generator: str = RESEARCH_GENERATOR  # a family of data_owner.config.GENERATOR_FAMILIES

    @property
    def switches(self) -> str:
        """The privacy switches alone: default, exclude-observed, rr=EPS, or '+'-joined."""
        parts = [] if self.include_observed else ["exclude-observed"]
        if self.rr_epsilon is not None:
            parts.append(f"rr={self.rr_epsilon:g}")
        return "+".join(parts) or "default"

    @property
    def name(self) -> str:
        """The switches; for a family other than the CGAN prefixed with it, e.g. itemknn:exclude-observed."""
        return self.switches if self.is_cgan else f"{self.generator}:{self.switches}"

    @property
    def is_cgan(self) -> bool:
        return self.generator == RESEARCH_GENERATOR

    @property
    def is_default(self) -> bool:
        """The paper's mode: the CGAN's lists, own items allowed, no randomized response."""
        return self.is_cgan and self.include_observed and self.rr_epsilon is None

    def identity(self) -> dict[str, Any]:
        """The setting as the rows and their keys hold it; `generator` only for a family other than the CGAN."""
        fields: dict[str, Any] = {"include_observed": self.include_observed, "rr_epsilon": self.rr_epsilon}
        if not self.is_cgan:
            fields["generator"] = self.generator
        return fields

    def describe(self) -> str:
        if self.is_default:
            return "the paper's mode: lists may hold the user's own training items, no randomized response"
        parts = [] if self.is_cgan else [f"lists of the {self.generator} generator"]
        if self.include_observed and self.rr_epsilon is None:
            parts.append("lists may hold the user's own training items, no randomized response")
        if not self.include_observed:
            parts.append("lists drawn only from items outside the user's (model-visible) training items")
        if self.rr_epsilon is not None:
            p = 1.0 / (1.0 + math.exp(self.rr_epsilon)) if self.rr_epsilon < 700 else 0.0
            parts.append(f"randomized response on the training matrix, epsilon {self.rr_epsilon:g} per interaction "
                         f"(each bit flipped with p = {p:.3g}; not user-level)")
        return "; ".join(parts)


_RR = re.compile(r"^rr\s*[=:]?\s*(\S+)$")


def parse_settings(text: str) -> tuple[PrivacySetting, ...]:
    """Comma-separated settings; each is `default`, or `+`-joined switches `exclude-observed` and `rr=EPS`,
    e.g. "default,exclude-observed,rr=1,exclude-observed+rr=4"."""
    settings: list[PrivacySetting] = []
    for token in (t.strip().lower() for t in text.split(",")):
        if not token:
            continue
        include_observed, epsilon = True, None
        if token != "default":
            for part in (p.strip() for p in token.split("+")):
                match = _RR.match(part)
                if part in ("exclude-observed", "exclude_observed", "no-observed"):
                    include_observed = False
                elif match:
                    try:
                        epsilon = float(match.group(1))
                    except ValueError:
                        raise ValueError(f"{part!r}: epsilon must be a number, e.g. rr=4") from None
                    if not (math.isfinite(epsilon) and epsilon > 0):
                        raise ValueError(f"{part!r}: epsilon must be positive and finite")
                else:
                    raise ValueError(f"unknown privacy setting {part!r} in {token!r}; use default, exclude-observed, "
                                     "rr=EPS, or switches joined with '+' (exclude-observed+rr=4)")
        setting = PrivacySetting(include_observed, epsilon)
        if setting in settings:
            raise ValueError(f"privacy setting {setting.name!r} is listed twice")
        settings.append(setting)
    if not settings:
        raise ValueError("no privacy setting given; e.g. " + DEFAULT_SETTINGS)
    return tuple(settings)


def parse_generators(text: str) -> tuple[str, ...]:
    """Comma-separated list generator families (data_owner.config.GENERATOR_FAMILIES), e.g. "cgan,itemknn"."""
    families: list[str] = []
    for family in (t.strip().lower() for t in text.split(",")):
        if not family:
            continue
        if family not in GENERATOR_FAMILIES:
            raise ValueError(f"unknown list generator {family!r}; use families among {', '.join(GENERATOR_FAMILIES)}")
        if family in families:
            raise ValueError(f"list generator {family!r} is listed twice")
        families.append(family)
    if not families:
        raise ValueError("no list generator given; e.g. " + ",".join(GENERATOR_FAMILIES))
    return tuple(families)


def with_generators(settings: Sequence[PrivacySetting], generators: Sequence[str]) -> tuple[PrivacySetting, ...]:
    """Every (family, setting): the settings under each family in turn, families in the order given."""
    return tuple(replace(s, generator=family) for family in generators for s in settings)


def setting_config(base: LabConfig, setting: PrivacySetting, seed: int) -> LabConfig:
    return replace(base, seed=seed, include_observed=setting.include_observed, rr_epsilon=setting.rr_epsilon,
                   generator=setting.generator)


def chain_settings(config: LabConfig, sampler_revision: int = GD_SAMPLER_REVISION) -> dict[str, Any]:
    """Everything a row depends on besides (setting, seed): a change gives the row a new key. Sampler revision 1
    is keyed without a `student_sampler` field. The lists of a family other than the CGAN are keyed by its family
    and its generator settings in the place of the CGAN's settings (`experiments.grid.lists_settings_payload`)."""
    settings: dict[str, Any] = {"gd_teacher": gd_teacher_settings_payload(config),
                                "student_epochs": config.student_epochs, "fraction": config.fraction,
                                "temperature": config.temperature, "lam": config.lam, "family": config.family}
    if sampler_revision > 1:
        settings["student_sampler"] = sampler_revision
    return settings


def row_key(base: LabConfig, setting: PrivacySetting, seed: int, sampler_revision: int = GD_SAMPLER_REVISION) -> str:
    config = setting_config(base, setting, seed)
    payload = {"setting": setting.identity(), "seed": seed, "settings": chain_settings(config, sampler_revision)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def row_sampler_revision(row: Mapping[str, Any]) -> int:
    """The GD student sampler revision a row was made with (1 when its settings do not name one)."""
    return int(row.get("settings", {}).get("student_sampler", 1))

