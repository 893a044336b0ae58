"""The owner's chain settings in one place: every default, the teacher and CGAN presets, and `ChainConfig`, the typed,
frozen configuration of the GD-REC chain (KD teacher -> CGAN -> lists -> GD teacher -> export).

`gdrec-owner train` (`data_owner.pipeline`) and the research harness (`experiments`) both read their settings from
here, so a number measured by the harness comes from the settings the product ships with. The CGAN's own sizes and
schedule live beside the CGAN (`data_owner.gan.CGANConfig`); the per-dataset CGAN presets live here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any

import typer

from data_owner.gan import CGANConfig
from data_owner.generators import family_settings
from data_owner.keys import CONSUMER_PATTERN
from data_owner.privacy.controls import flip_probability

# -- defaults of the chain (GD-REC section 4 and the choices measured in docs/experiments.md)
FAMILIES = ("bpr", "neumf")
LIST_LENGTH = 50  # L: items per generated list
TEMPERATURE = 2.0  # t of the soft targets sigmoid(z / t)
TEACHER_EPOCHS = 300  # the KD teacher (and the raw-data students of the research grid)
GD_EPOCHS = 100  # the GD teacher's continuation on raw + generated pairs
PATIENCE = 6  # evaluations without validation gain before a teacher stops
EVAL_EVERY = 5
BATCH_SIZE = 1000
# how a teacher trains: "adam" on batches of BATCH_SIZE triples (the paper, the reproduction), or "sgd", BPR's own
# per-triple SGD (data_owner.bpr_sgd; BPR only, one CPU process), which the product's BPR teachers use
OPTIMIZERS = ("adam", "sgd")
PRODUCT_BPR_OPTIMIZER = "sgd"
NEGATIVES = ("uniform", "popularity")  # how per-triple SGD draws negatives (data_owner.bpr_sgd)
CGAN_EPOCHS = CGANConfig().epochs
CONSUMER_ID = "consumer"
# -- list generators (data_owner.generators)
GENERATOR_FAMILIES = ("cgan", "itemknn", "vae", "teacher", "ease")
GENERATOR_CHOICES = (*GENERATOR_FAMILIES, "auto")
RESEARCH_GENERATOR = "cgan"  # the paper's method: the reproduction's chain
PRODUCT_GENERATOR = "auto"  # `gdrec-owner train` and the demo: the family whose dry-run student is best
AUTO_FAMILIES = ("itemknn", "teacher", "vae")  # auto's candidates, in the order they are tried
AUTO_BUDGET_S = 1800.0  # auto stops trying further candidates once this many seconds have passed
PRODUCT_INCLUDE_OBSERVED = False  # the product's export leaves each user's own training items out of their list
# -- the teacher's own hyperparameter search (data_owner.tuning) on a dataset without a preset
TUNE_BUDGET_S = 900.0  # wall-clock seconds the search may take (a running trial stops at its next evaluation)
TUNE_TRIALS = 100  # at most this many trials
TUNE_PATIENCE = 3  # evaluations without validation gain before a trial stops (the teacher's own: PATIENCE)

@dataclass(frozen=True)
class Pretraining:
    """NCF pre-training of a NeuMF teacher (He et al., WWW 2017, section 3.4.1): its GMF and MLP branches are
    trained alone first (each selected on validation), NeuMF starts from their weights with the output layer
    [alpha * w_GMF ; (1 - alpha) * w_MLP], then trains on. The regularisation of each branch and the learning rate
    of the joint phase may differ from the teacher's (None: the teacher's own)."""

    alpha: float = 0.5
    gmf_reg: float | None = None
    mlp_reg: float | None = None
    finetune_lr: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"pre-training alpha must lie in [0, 1], got {self.alpha}")
        for name in ("gmf_reg", "mlp_reg"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"pre-training {name} must be non-negative, got {value}")
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise ValueError(f"pre-training finetune_lr must be positive, got {self.finetune_lr}")


RrTrueSizeEpochs = Annotated[bool, typer.Option(
    help="under --rr-epsilon, each epoch of the owner's teachers samples as many pairs as the true training matrix "
         "holds (not every randomized pair: at small epsilon the randomized matrix is hundreds of times larger)")]


@dataclass(frozen=True)
class TeacherSettings:
    """The teacher's architecture (keyword arguments of the model class), learning rate, for NeuMF optionally the NCF
    pre-training of its branches (`data_owner.teacher.Pretraining`; None = off), its optimiser (`OPTIMIZERS`) and, for
    per-triple SGD, how it draws negative items (`NEGATIVES`)."""

    family: str
    model: dict[str, Any]
    lr: float
    pretrain: Pretraining | None = None
    optimizer: str = "adam"
    negatives: str = "uniform"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"teacher family must be 'bpr' or 'neumf', got {self.family!r}")
        if not isinstance(self.model, dict):
            raise ValueError(f"teacher model settings must be an object of architecture fields, got {self.model!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ValueError(f"teacher lr must be positive, got {self.lr}")
        if self.pretrain is not None and self.family != "neumf":
            raise ValueError(f"pre-training is defined for NeuMF only, not {self.family!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"teacher optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.optimizer == "sgd" and self.family != "bpr":
            raise ValueError(f"the per-triple SGD optimizer trains BPR only, not {self.family!r}; use 'adam'")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"teacher negatives must be one of {list(NEGATIVES)}, got {self.negatives!r}")
        if self.negatives != "uniform" and self.optimizer != "sgd":
            raise ValueError(f"{self.negatives} negatives are drawn by the per-triple SGD optimizer only; add "
                             "optimizer 'sgd'")

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TeacherSettings:
        """The settings `key_payload` (or `asdict`) wrote: {"family", "model", "lr", "pretrain" (optional),
        "optimizer" (optional, "adam" when absent), "negatives" (optional, "uniform" when absent)}."""
        pretrain = payload.get("pretrain")
        return cls(payload["family"], dict(payload["model"]), float(payload["lr"]),
                   None if pretrain is None else Pretraining(**pretrain), payload.get("optimizer", "adam"),
                   payload.get("negatives", "uniform"))

    def key_payload(self) -> dict[str, Any]:
        """What an owner stage key records of the teacher (`pretrain` only when on, `optimizer` only when not Adam and
        `negatives` only when not uniform, so older keys stay valid)."""
        payload = asdict(self)
        if self.pretrain is None:
            del payload["pretrain"]
        if self.optimizer == "adam":
            del payload["optimizer"]
        if self.negatives == "uniform":
            del payload["negatives"]
        return payload

    def research_payload(self) -> dict[str, Any]:
        """What the research harness's result keys record of the teacher: {"model", "lr", "pretrain"} (the
        Pretraining object itself, as those keys have always hashed it), "optimizer" when not Adam and "negatives"
        when not uniform."""
        payload: dict[str, Any] = {"model": dict(self.model), "lr": self.lr, "pretrain": self.pretrain}
        if self.optimizer != "adam":
            payload["optimizer"] = self.optimizer
        if self.negatives != "uniform":
            payload["negatives"] = self.negatives
        return payload


# Chosen on the validation item (docs/experiments.md "Teachers and their presets"). For a dataset without a preset (a
# path) the owner's chain searches the settings on validation, starting from the family's default (`TeacherTuning`).
TEACHER_PRESETS: dict[tuple[str, str], TeacherSettings] = {
    ("ml-100k", "bpr"): TeacherSettings("bpr", {"dim": 64, "reg": 1e-2}, 5e-3),
    ("citeulike-t", "bpr"): TeacherSettings("bpr", {"dim": 100, "reg": 1e-2}, 5e-3),
    ("foursquare", "bpr"): TeacherSettings("bpr", {"dim": 100, "reg": 1e-2}, 5e-3),
    ("ml-100k", "neumf"): TeacherSettings("neumf", {"dim_gmf": 64, "dim_mlp": 64, "hidden": [64, 32], "reg": 1e-4},
                                          2e-3),
    # a narrow MLP tower: on 25k-item catalogs full-ranking NeuMF costs one tower pass per (user, item) pair;
    # NCF pre-training lifted test HR@50 from 0.097 to 0.118 (docs/experiments.md "Teachers and their presets")
    ("citeulike-t", "neumf"): TeacherSettings(
        "neumf", {"dim_gmf": 100, "dim_mlp": 100, "hidden": [32, 16], "reg": 1e-3}, 2e-3,
        Pretraining(mlp_reg=1e-4, finetune_lr=5e-4)),
    ("foursquare", "neumf"): TeacherSettings(
        "neumf", {"dim_gmf": 100, "dim_mlp": 100, "hidden": [32, 16], "reg": 1e-4}, 2e-3),
}
DEFAULT_TEACHERS: dict[str, TeacherSettings] = {
    "bpr": TEACHER_PRESETS[("ml-100k", "bpr")],
    "neumf": TEACHER_PRESETS[("ml-100k", "neumf")],
}
# The product's BPR teachers (`PRODUCT_BPR_OPTIMIZER`: per-triple SGD), chosen on validation NDCG@50 from the grids of
# lr, L2 and uniform / popularity negatives in docs/experiments.md "Teachers and their presets"; foursquare takes
# citeulike-t's settings untuned.
SGD_TEACHER_PRESETS: dict[tuple[str, str], TeacherSettings] = {
    ("ml-100k", "bpr"): TeacherSettings("bpr", {"dim": 64, "reg": 1e-2}, 5e-2, optimizer="sgd"),
    ("citeulike-t", "bpr"): TeacherSettings("bpr", {"dim": 100, "reg": 1e-2}, 1e-1, optimizer="sgd"),
    ("foursquare", "bpr"): TeacherSettings("bpr", {"dim": 100, "reg": 1e-2}, 1e-1, optimizer="sgd"),
}
DEFAULT_SGD_TEACHER = SGD_TEACHER_PRESETS[("ml-100k", "bpr")]



# CGAN settings chosen on the validation item (docs/experiments.md "Tuning the CGAN on citeulike-t"); foursquare, the
# other wide sparse catalog, takes the same settings untuned (CFGAN's schedule took about 130 s per epoch on
# citeulike-t's 5k users on a CPU, and foursquare has 25k); other datasets use the CGANConfig defaults (CFGAN's
# ML100K settings). The CLIs lay --cgan-epochs and --cgan-json over these.
_SPARSE_CATALOG_CGAN: dict[str, Any] = {"mask_sampling": "per_batch", "alpha": 0.3, "batch_size": 256, "g_steps": 1,
                                        "d_steps": 1, "lr_g": 5e-4, "lr_d": 5e-4, "eval_every": 2, "patience": 5}
CGAN_PRESETS: dict[str, dict[str, Any]] = {"citeulike-t": _SPARSE_CATALOG_CGAN, "foursquare": _SPARSE_CATALOG_CGAN}


def cgan_preset(dataset: str, epochs: int | None = None) -> CGANConfig:
    """The CGAN preset of a named dataset (else the defaults), with `epochs` when given."""
    config = CGANConfig(**CGAN_PRESETS.get(dataset, {}))
    return config if epochs is None else replace(config, epochs=epochs)


def teacher_preset(dataset: str, family: str, optimizer: str = "adam") -> TeacherSettings:
    """The preset of a named dataset for `optimizer`, else the family's default for it (a dataset given by path)."""
    if family not in DEFAULT_TEACHERS:
        raise ValueError(f"teacher family must be one of {sorted(DEFAULT_TEACHERS)}, got {family!r}")
    if optimizer == "sgd":
        if family != "bpr":
            raise ValueError(f"the per-triple SGD optimizer trains BPR only, not {family!r}; use 'adam'")
        return SGD_TEACHER_PRESETS.get((dataset, family), DEFAULT_SGD_TEACHER)
    if optimizer != "adam":
        raise ValueError(f"teacher optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    return TEACHER_PRESETS.get((dataset, family), DEFAULT_TEACHERS[family])


def has_teacher_preset(dataset: str, family: str, optimizer: str = "adam") -> bool:
    """Whether (dataset, family) has a preset for `optimizer` chosen on validation (a path never has)."""
    return (dataset, family) in (SGD_TEACHER_PRESETS if optimizer == "sgd" else TEACHER_PRESETS)


def product_optimizer(family: str) -> str:
    """The optimizer of the product's teachers of `family`: per-triple SGD for BPR, Adam for NeuMF."""
    return PRODUCT_BPR_OPTIMIZER if family == "bpr" else "adam"


@dataclass(frozen=True)
class TeacherTuning:
    """The search of the teacher's settings on the validation item (`data_owner.tuning`): its wall-clock budget, a
    cap on trials, each trial's early stopping, the search space, and the parameter budget the architectures must fit
    (None: the parameter count of the preset, or of the family's default, on the dataset at hand).

    BPR searches `reg` and `lr` on a log scale and `dim` among `dims`; NeuMF also its MLP tower among `hidden` (both
    embedding branches `dim` wide). Trials train without NCF pre-training."""

    budget_s: float = TUNE_BUDGET_S
    n_trials: int = TUNE_TRIALS
    patience: int = TUNE_PATIENCE
    max_params: int | None = None
    reg: tuple[float, float] = (1e-5, 1e-1)
    lr: tuple[float, float] = (1e-3, 2e-2)  # Adam's
    sgd_lr: tuple[float, float] = (5e-3, 1e-1)  # per-triple SGD's (a base with optimizer "sgd")
    dims: tuple[int, ...] = (16, 32, 64, 100, 128, 200, 256)
    hidden: tuple[tuple[int, ...], ...] = ((16, 8), (32, 16), (64, 32))

    def __post_init__(self) -> None:
        if not (isinstance(self.budget_s, int | float) and self.budget_s > 0):
            raise ValueError(f"the tuning budget must be a positive number of seconds, got {self.budget_s!r}")
        if not (isinstance(self.n_trials, int) and self.n_trials >= 1):
            raise ValueError(f"the tuning needs at least 1 trial, got n_trials={self.n_trials!r}")
        if not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"a tuning trial's patience must be at least 1 evaluation, got {self.patience!r}")
        if self.max_params is not None and not (isinstance(self.max_params, int) and self.max_params >= 1):
            raise ValueError(f"the tuning's parameter budget must be a positive integer, got {self.max_params!r}")
        for name in ("reg", "lr", "sgd_lr"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"the tuning's {name} range must satisfy 0 < low <= high, got ({low}, {high})")
        if not self.dims or min(self.dims) < 1:
            raise ValueError(f"the tuning's dims must be positive widths, got {list(self.dims)}")
        if not self.hidden or any(not widths or min(widths) < 1 for widths in self.hidden):
            raise ValueError(f"the tuning's hidden towers must be non-empty lists of positive widths, got "
                             f"{[list(w) for w in self.hidden]}")

    def key_payload(self) -> dict[str, Any]:
        """What decides the search's result besides the data, the seed and the schedule (the stage key's part)."""
        return asdict(self)


def teacher_from_fields(dataset: str, family: str, fields: dict[str, Any], option: str = "--teacher-json",
                        optimizer: str = "adam") -> TeacherSettings:
    """Teacher settings from a JSON object's fields {"model": {...}, "lr": ..., "pretrain": {...} or null,
    "optimizer": "adam" | "sgd", "negatives": "uniform" | "popularity"} laid over the preset of (dataset, family) for
    the given optimizer (else `optimizer`); ValueError naming `option` and what is wrong."""
    unknown = sorted(set(fields) - {"model", "lr", "pretrain", "optimizer", "negatives"})
    if unknown:
        raise ValueError(f"{option} takes the keys 'model', 'lr', 'pretrain', 'optimizer' and 'negatives', not "
                         f"{unknown}")
    optimizer = fields.get("optimizer", optimizer)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"{option}: 'optimizer' must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    preset = teacher_preset(dataset, family, optimizer)
    pretrain = preset.pretrain
    if "pretrain" in fields:  # null turns it off; an object sets data_owner.teacher.Pretraining
        given = fields["pretrain"]
        if given is not None and not isinstance(given, dict):
            raise ValueError(f"{option}: 'pretrain' must be an object or null, got {given!r}")
        try:
            pretrain = None if given is None else Pretraining(**given)
        except TypeError as exc:
            raise ValueError(f"{option}: 'pretrain': {exc}") from None
    model = fields.get("model", preset.model)
    if not isinstance(model, dict):
        raise ValueError(f"{option}: 'model' must be an object of architecture fields, got {model!r}")
    try:
        lr = float(fields.get("lr", preset.lr))
    except (TypeError, ValueError):
        raise ValueError(f"{option}: 'lr' must be a number, got {fields.get('lr')!r}") from None
    try:
        return TeacherSettings(family, dict(model), lr, pretrain, optimizer,
                               fields.get("negatives", preset.negatives))
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


@dataclass(frozen=True)
class ChainConfig:
    """Everything the owner's chain needs besides the data, the secret and where outputs go."""

    dataset: str
    family: str = "bpr"
    teacher: TeacherSettings | None = None  # None: teacher_preset(dataset, family, teacher_optimizer)
    teacher_optimizer: str = "adam"  # the preset's (or the search's) optimizer when `teacher` is None
    consumer_id: str = CONSUMER_ID  # the tokens are pseudonyms for this consumer only
    seed: int = 0
    list_length: int = LIST_LENGTH
    include_observed: bool = True  # may a user's own training items appear in their list
    rr_epsilon: float | None = None  # randomized response on the models' input (per interaction); None = off
    # under randomized response, each teacher epoch samples as many pairs as the true training matrix holds
    rr_true_size_epochs: bool = False
    temperature: float = TEMPERATURE
    teacher_epochs: int = TEACHER_EPOCHS
    gd_epochs: int = GD_EPOCHS
    patience: int = PATIENCE
    eval_every: int = EVAL_EVERY
    batch_size: int = BATCH_SIZE
    cgan: CGANConfig = field(default_factory=CGANConfig)
    generator: str = RESEARCH_GENERATOR  # a family of GENERATOR_FAMILIES, or "auto"
    generator_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # per family, over its defaults
    auto_families: tuple[str, ...] = AUTO_FAMILIES
    auto_budget_s: float = AUTO_BUDGET_S
    # search the teacher's settings on validation before the KD teacher (data_owner.tuning): None = when the
    # dataset has no preset for the family and no teacher settings are given; True = always; False = never
    tune: bool | None = None
    tuning: TeacherTuning = field(default_factory=TeacherTuning)
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.teacher is not None and self.teacher.family != self.family:
            raise ValueError(f"teacher settings are for {self.teacher.family!r}, the family is {self.family!r}")
        if self.tune is True and self.teacher is not None:
            raise ValueError("tuning searches the teacher's settings: give either tune=True (--tune) or teacher "
                             "settings (--teacher-json), not both")
        teacher_preset(self.dataset, self.family, self.teacher_optimizer)  # validates the family and optimizer
        if self.list_length < 1 or not self.temperature > 0:
            raise ValueError("list_length must be at least 1 and temperature positive")
        if min(self.teacher_epochs, self.gd_epochs, self.eval_every, self.batch_size) < 1 or self.patience < 0:
            raise ValueError("epochs, eval_every and batch_size must be at least 1, patience non-negative")
        if not CONSUMER_PATTERN.match(self.consumer_id):
            raise ValueError(f"consumer id {self.consumer_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if self.rr_epsilon is not None:
            flip_probability(self.rr_epsilon)  # a positive finite epsilon, else ValueError
        if self.generator not in GENERATOR_CHOICES:
            raise ValueError(f"generator must be one of {list(GENERATOR_CHOICES)}, got {self.generator!r}")
        unknown = sorted(set(self.auto_families) - set(GENERATOR_FAMILIES)) + sorted(
            set(self.generator_settings) - set(GENERATOR_FAMILIES))
        if unknown or not self.auto_families:
            raise ValueError(f"generator families must be among {list(GENERATOR_FAMILIES)} (auto needs at least "
                             f"one), got {unknown or list(self.auto_families)}")
        for family, fields in self.generator_settings.items():
            if family == "cgan":
                raise ValueError("the CGAN's settings are its own (--cgan-json / ChainConfig.cgan), not generator "
                                 "settings")
            if not isinstance(fields, dict):
                raise ValueError(f"the settings of generator {family!r} must be an object, got {fields!r}")
            family_settings(family, fields)  # ValueError naming the family and the field
        if not self.auto_budget_s > 0:
            raise ValueError(f"auto_budget_s must be positive, got {self.auto_budget_s}")

    @property
    def uses_kd_teacher_for_lists(self) -> bool:
        """Whether the generator stage reads the KD teacher (the teacher family, and auto's dry-run students)."""
        return self.generator in ("teacher", "auto")

    @property
    def teacher_settings(self) -> TeacherSettings:
        """The given teacher settings, else the preset (or the family's default). Under `tunes_teacher` the owner's
        chain replaces them with the search's choice before the KD teacher trains."""
        return self.teacher or teacher_preset(self.dataset, self.family, self.teacher_optimizer)

    @property
    def tunes_teacher(self) -> bool:
        """Whether the owner's chain searches the teacher's settings (see `tune`)."""
        if self.tune is None:
            return self.teacher is None and not has_teacher_preset(self.dataset, self.family, self.teacher_optimizer)
        return self.tune

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "teacher": asdict(self.teacher_settings)}


__all__ = [
    "AUTO_BUDGET_S",
    "AUTO_FAMILIES",
    "BATCH_SIZE",
    "CGAN_EPOCHS",
    "CGAN_PRESETS",
    "CONSUMER_ID",
    "DEFAULT_SGD_TEACHER",
    "DEFAULT_TEACHERS",
    "EVAL_EVERY",
    "FAMILIES",
    "GD_EPOCHS",
    "GENERATOR_CHOICES",
    "GENERATOR_FAMILIES",
    "LIST_LENGTH",
    "NEGATIVES",
    "OPTIMIZERS",
    "PATIENCE",
    "PRODUCT_BPR_OPTIMIZER",
    "PRODUCT_GENERATOR",
    "PRODUCT_INCLUDE_OBSERVED",
    "RESEARCH_GENERATOR",
    "SGD_TEACHER_PRESETS",
    "TEACHER_EPOCHS",
    "TEACHER_PRESETS",
    "TEMPERATURE",
    "TUNE_BUDGET_S",
    "TUNE_PATIENCE",
    "TUNE_TRIALS",
    "ChainConfig",
    "Pretraining",
    "RrTrueSizeEpochs",
    "TeacherSettings",
    "TeacherTuning",
    "cgan_preset",
    "has_teacher_preset",
    "product_optimizer",
    "teacher_from_fields",
    "teacher_preset",
]
