"""The comparison grid of `gdrec-lab run` (GD-REC section 4): its cells (dataset, family, method, seed, fraction,
hyperparameters), the grid spec, and each cell's key: a hash of the cell and the settings its result depends on
(the teacher's, the lists' and the GD teacher's settings payloads, the baseline options, the student sampler, and
the GD student's regularisation factors and transfer when they are not the paper's)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from data_owner.config import FAMILIES
from experiments import lab
from experiments.lab import LabConfig
from experiments.presets import FRACTIONS, GD_LAMBDA, KD_WEIGHTS, TEMPERATURES
from shared.distillation import SAMPLER_REVISION as GD_SAMPLER_REVISION

METHODS = ("teacher", "student", "rd", "cd", "bd", "gd")
KD_METHODS = ("rd", "cd", "bd")
RESULTS_NAME = "results.jsonl"
DEFAULT_STUDENT_REG_FACTORS = LabConfig.student_reg_factors  # the paper's GD student: the teacher's regularisation
DEFAULT_STUDENT_TRANSFER = LabConfig.student_transfer


@dataclass(frozen=True)
class Cell:
    family: str
    method: str
    seed: int
    fraction: float  # 1.0 for the teacher
    kd_weight: float | None = None
    temperature: float | None = None
    lam: float | None = None

    def hyperparameters(self) -> dict[str, float]:
        named = {"kd_weight": self.kd_weight, "temperature": self.temperature, "lambda": self.lam}
        return {k: v for k, v in named.items() if v is not None}

    def label(self) -> str:
        hp = " ".join(f"{k}={v:g}" for k, v in self.hyperparameters().items())
        return f"{self.family} {self.method} seed {self.seed} {self.fraction:.0%} {hp}".strip()


@dataclass(frozen=True)
class GridSpec:
    """What to run: the base LabConfig (dataset, epochs, CGAN, teacher, device) and the grid over it."""

    base: LabConfig
    work_dir: Path
    families: tuple[str, ...] = ("bpr",)
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0,)
    fractions: tuple[float, ...] = FRACTIONS
    kd_weights: tuple[float, ...] = KD_WEIGHTS
    temperatures: tuple[float, ...] = TEMPERATURES
    lambdas: tuple[float, ...] = (GD_LAMBDA,)
    results: Path | None = None  # None: <work_dir>/results.jsonl
    inference_users: int = 256  # users per full-ranking batch timed for fig3
    inference_repeats: int = 5
    sampled_negatives: int = 100
    # per KD method, overrides of experiments.baselines' defaults, e.g. {"cd": {"top_n": 50}} (part of the cell key)
    baseline_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        bad = sorted(set(self.families) - set(FAMILIES))
        if bad:
            raise ValueError(f"unknown model families {bad}; choose from {', '.join(FAMILIES)}")
        if not all(0 < f < 1 for f in self.fractions):
            raise ValueError(f"student fractions must lie in (0, 1), got {self.fractions}")
        if not all(0 <= lam <= 1 for lam in self.lambdas):
            raise ValueError(f"lambda must lie in [0, 1], got {self.lambdas}")
        if self.base.teacher is not None and set(self.families) != {self.base.teacher.family}:
            raise ValueError(f"the teacher settings are for {self.base.teacher.family} only; run the other model "
                             "families with their presets in a separate grid")
        if set(self.baseline_options) - set(KD_METHODS):
            raise ValueError(f"baseline options are for {', '.join(KD_METHODS)}, got {sorted(self.baseline_options)}")

    @property
    def results_path(self) -> Path:
        return self.results if self.results is not None else self.work_dir / RESULTS_NAME


def grid_cells(spec: GridSpec) -> list[Cell]:
    """Every cell, ordered so that cells sharing a (family, seed) teacher run one after another."""
    cells: list[Cell] = []
    for family in spec.families:
        for seed in spec.seeds:
            if "teacher" in spec.methods:
                cells.append(Cell(family, "teacher", seed, 1.0))
            for fraction in spec.fractions:
                for method in spec.methods:
                    if method == "student":
                        cells.append(Cell(family, method, seed, fraction))
                    elif method == "rd":
                        cells += [Cell(family, method, seed, fraction, kd_weight=w) for w in spec.kd_weights]
                    elif method in ("cd", "bd"):
                        cells += [Cell(family, method, seed, fraction, kd_weight=w, temperature=t)
                                  for w in spec.kd_weights for t in spec.temperatures]
                    elif method == "gd":
                        cells += [Cell(family, method, seed, fraction, temperature=t, lam=lam)
                                  for t in spec.temperatures for lam in spec.lambdas]
    return cells


def digest(payload: Any, length: int = 12) -> str:
    """The first `length` hex digits of the SHA-256 of `payload` as sorted JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]


def dataset_identity(dataset: str) -> dict[str, Any]:
    """A registry name as is; a file by its absolute path, size and modification time."""
    path = Path(dataset).expanduser()
    if path.exists():
        stat = path.stat()
        return {"path": str(path.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime)}
    return {"name": dataset}


def dataset_slug(dataset: str) -> str:
    path = Path(dataset).expanduser()
    if path.exists():
        return f"{path.stem or path.name}-{digest(dataset_identity(dataset), 8)}"
    return dataset


def teacher_settings_payload(config: LabConfig) -> dict[str, Any]:
    payload = {"dataset": dataset_identity(config.dataset), "family": config.family, "seed": config.seed,
               "teacher": lab.teacher_settings(config), "epochs": config.teacher_epochs, "patience": config.patience,
               "eval_every": config.eval_every, "batch_size": config.batch_size, "rr_epsilon": config.rr_epsilon}
    if config.rr_epsilon is not None and config.rr_true_size_epochs:  # absent otherwise: older keys stay valid
        payload["rr_true_size_epochs"] = True
    return payload


def lists_settings_payload(config: LabConfig) -> dict[str, Any]:
    """What the generated lists depend on: the data, the seed, the list generator's settings (the CGAN's, or for
    another family its name and settings), the list length, include-observed and randomized response."""
    cgan = {k: v for k, v in config.cgan.identity().items() if k != "seed"}
    payload = {"dataset": dataset_identity(config.dataset), "seed": config.seed, "cgan": cgan,
               "list_length": config.list_length, "include_observed": config.include_observed,
               "rr_epsilon": config.rr_epsilon}
    if config.list_source != "generator":  # absent otherwise: older keys stay valid
        del payload["cgan"]
        payload.update(list_source=config.list_source, teacher=teacher_settings_payload(config))
    elif config.generator != "cgan":  # the CGAN's payload stays as it was, so its keys stay valid
        del payload["cgan"]
        payload.update(list_generator_payload(config))
    return payload


def list_generator_payload(config: LabConfig) -> dict[str, Any]:
    """The settings of a list generator other than the CGAN: its family and its settings (for "auto" every
    candidate's, the CGAN's among them when it competes, and the budget), with the KD teacher's settings for the
    families that read it."""
    families = config.auto_families if config.generator == "auto" else (config.generator,)
    payload: dict[str, Any] = {
        "generator": config.generator,
        "generator_settings": {f: config.generator_settings[f] for f in families if f in config.generator_settings}}
    if config.generator == "auto":
        payload.update(auto_families=list(config.auto_families), auto_budget_s=config.auto_budget_s,
                       temperature=config.temperature)
        if "cgan" in config.auto_families:
            payload["cgan"] = {k: v for k, v in config.cgan.identity().items() if k != "seed"}
    if config.uses_kd_teacher_for_lists:
        payload["teacher"] = teacher_settings_payload(config)
    return payload


def gd_teacher_settings_payload(config: LabConfig) -> dict[str, Any]:
    return {"teacher": teacher_settings_payload(config), "lists": lists_settings_payload(config),
            "gd_epochs": config.gd_epochs}


def cell_settings(cell: Cell, config: LabConfig, baseline_options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a cell's result depends on besides the cell itself (a change gives the cell a new key)."""
    settings: dict[str, Any] = {"teacher": teacher_settings_payload(config)}
    if cell.method != "teacher":
        settings["student_epochs"] = config.teacher_epochs  # raw-data students train like the teacher
    if cell.method in KD_METHODS:
        settings["options"] = baseline_options.get(cell.method, {})
    if cell.method == "gd":
        settings.update(gd_teacher=gd_teacher_settings_payload(config), student_epochs=config.student_epochs,
                        student_sampler=GD_SAMPLER_REVISION)  # a new revision reruns the GD cells
        # absent at the paper's single student and transfer, so the keys of those cells stay what they were
        if tuple(config.student_reg_factors) != DEFAULT_STUDENT_REG_FACTORS:
            settings["student_reg_factors"] = list(config.student_reg_factors)
        if config.student_transfer != DEFAULT_STUDENT_TRANSFER:
            settings["student_transfer"] = config.student_transfer
    return settings


def cell_key(spec: GridSpec, cell: Cell) -> str:
    settings = cell_settings(cell, cell_config(spec, cell), spec.baseline_options)
    return digest({"cell": asdict(cell), "settings": settings}, 24)


def cell_config(spec: GridSpec, cell: Cell) -> LabConfig:
    return replace(spec.base, family=cell.family, seed=cell.seed,
                   fraction=cell.fraction if cell.method != "teacher" else spec.base.fraction,
                   temperature=cell.temperature if cell.temperature is not None else spec.base.temperature,
                   lam=cell.lam if cell.lam is not None else spec.base.lam,
                   progress=spec.progress and spec.base.progress)

