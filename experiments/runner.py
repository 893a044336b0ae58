"""`gdrec-lab run`: the paper's comparison grid (Teacher, Student, RD, CD, BD, GD) over models, seeds, student
sizes and KD hyperparameters, with cached stages, resumable JSONL results and progress bars.

A grid cell is (dataset, family, method, seed, fraction, hyperparameters):

    teacher   the KD teacher (raw data, L_CF) at the preset size; fraction 1.0, no hyperparameters
    student   the base model at `fraction` of the teacher's parameters, raw data alone
    rd        Ranking Distillation, one cell per KD weight                    (experiments.baselines)
    cd, bd    Collaborative / Bidirectional Distillation, KD weight x temperature (experiments.baselines)
    gd        the data-free GD student from the export alone, temperature x lambda (lambda 0.7 unless swept)

Every cell trains on the training split with its epoch chosen on the validation item, and records validation
and test HR/NDCG@{5,10,20,50} (full ranking), test Hit/NDCG@{5,10,20} on the 100-sampled-negatives protocol, the
parameter counts, the training seconds, the median time of one full-ranking `score_all` over a batch of users
(measured in this process, for fig3), and the machine. Hyperparameters are selected later, in
`experiments.reports`, on the validation NDCG@50 only (mean over seeds); test numbers are only reported.

Caching (under --work-dir, so later cells and later runs reuse them):

    cache/<dataset>/teachers/<family>-seed<k>-<key>/      the KD teacher checkpoint (shared.checkpoint)
    cache/<dataset>/lists/seed<k>-<key>.npz               the CGAN's generated lists (items, GF scores, metrics)
    cache/<dataset>/gd_teachers/<family>-seed<k>-<key>/   the GD teacher checkpoint

Each key is the owner's stage key (`data_owner.pipeline.stage_keys`: the data's fingerprint, the stage's settings,
the keys of the stages it reads, the randomized response keyed by the lab's secret), so a changed setting trains
afresh instead of reusing a stale stage, exactly where `gdrec-owner train` would redo a stage. Checkpoints and lists are
written to temporary names and renamed into place; a half-written cache entry is never read.

Results: one JSON line per finished cell, appended to --results (default <work-dir>/results.jsonl) and flushed
and fsync'ed before the next cell starts. The line's `key` hashes the cell and the settings it depends on.

Continuing an interrupted run (Ctrl-C, a crash, a lost machine): run the very same command again. Finished cells
(their key is in the results file) are skipped, the cached teachers / lists / GD teachers are loaded instead of
trained, and only the cell that was running and the ones after it are computed. The cell that was running continues
where its training was last saved: the training loop of a KD or GD teacher, a raw-data student, an RD / CD / BD
student or the GD student saves its state every 5 minutes under cache/<dataset>/partial/ (shared.training; removed
once the cell or stage is kept) and ends exactly as an uninterrupted run would; only the CGAN starts over. A partial
last line left by a crash mid-write is cut off (with a warning) before appending. Widening the grid later (more
seeds, another method) also reuses everything already there. Only one runner may use a work directory at a time (a
lock file enforces it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from tqdm.auto import tqdm

from data_owner.config import (
    BATCH_SIZE,
    CGAN_EPOCHS,
    EVAL_EVERY,
    FAMILIES,
    GD_EPOCHS,
    LIST_LENGTH,
    PATIENCE,
    TEACHER_EPOCHS,
    RrTrueSizeEpochs,
    cgan_preset,
    teacher_from_fields,
)
from data_owner.data import LeaveOneOutSplit
from data_owner.gan import GeneratedLists
from data_owner.pipeline import split_fingerprint, stage_keys
from data_owner.settings import secret_fingerprint
from experiments import lab
from experiments.lab import GeneratorStage, LabConfig, StageResult
from experiments.presets import (
    FRACTIONS,
    GD_LAMBDA,
    KD_WEIGHTS,
    LAMBDA_SWEEP,
    SELECTION_METRIC,
    STUDENT_EPOCHS,
    TEMPERATURES,
)
from experiments.results import ResultsFile, json_default, read_rows
from model_consumer.distill import SAMPLER_REVISION as GD_SAMPLER_REVISION
from shared.checkpoint import exclusive_lock_or_fail, load_checkpoint, save_checkpoint
from shared.device import resolve_device, synchronize
from shared.evaluation import sampled_target_ranks
from shared.metrics import ranking_metrics
from shared.options import json_object

log = logging.getLogger("gdrec.runner")

METHODS = ("teacher", "student", "rd", "cd", "bd", "gd")
KD_METHODS = ("rd", "cd", "bd")
SAMPLED_KS = (5, 10, 20)
RESULTS_NAME = "results.jsonl"


# ----------------------------------------------------------------------------------------------------------------
# The grid


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


def _digest(payload: Any, length: int = 12) -> str:
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
        return f"{path.stem or path.name}-{_digest(dataset_identity(dataset), 8)}"
    return dataset


def teacher_settings_payload(config: LabConfig) -> dict[str, Any]:
    payload = {"dataset": dataset_identity(config.dataset), "family": config.family, "seed": config.seed,
               "teacher": lab.teacher_settings(config), "epochs": config.teacher_epochs, "patience": config.patience,
               "eval_every": config.eval_every, "batch_size": config.batch_size, "rr_epsilon": config.rr_epsilon}
    if config.rr_epsilon is not None and config.rr_true_size_epochs:  # absent otherwise: older keys stay valid
        payload["rr_true_size_epochs"] = True
    return payload


def lists_settings_payload(config: LabConfig) -> dict[str, Any]:
    cgan = {k: v for k, v in config.cgan.identity().items() if k != "seed"}
    payload = {"dataset": dataset_identity(config.dataset), "seed": config.seed, "cgan": cgan,
               "list_length": config.list_length, "include_observed": config.include_observed,
               "rr_epsilon": config.rr_epsilon}
    if config.list_source != "generator":  # absent otherwise: older keys stay valid
        del payload["cgan"]
        payload.update(list_source=config.list_source, teacher=teacher_settings_payload(config))
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
    return settings


def cell_key(spec: GridSpec, cell: Cell) -> str:
    settings = cell_settings(cell, cell_config(spec, cell), spec.baseline_options)
    return _digest({"cell": asdict(cell), "settings": settings}, 24)


def cell_config(spec: GridSpec, cell: Cell) -> LabConfig:
    return replace(spec.base, family=cell.family, seed=cell.seed,
                   fraction=cell.fraction if cell.method != "teacher" else spec.base.fraction,
                   temperature=cell.temperature if cell.temperature is not None else spec.base.temperature,
                   lam=cell.lam if cell.lam is not None else spec.base.lam,
                   progress=spec.progress and spec.base.progress)


def work_dir_lock(work_dir: Path):
    return exclusive_lock_or_fail(work_dir / ".runner.lock",
                          f"another `gdrec-lab run` is using {work_dir}; wait for it or use another --work-dir")


# ----------------------------------------------------------------------------------------------------------------
# Measurements shared by every cell


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@torch.no_grad()
def full_ranking_seconds(model: torch.nn.Module, n_users: int, batch_users: int, repeats: int,
                         device: torch.device) -> float:
    """Median wall time of one `score_all` over `batch_users` users (after one warm-up call)."""
    model.eval()
    users = torch.arange(min(batch_users, n_users), device=device)

    model.score_all(users)
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.score_all(users)
        synchronize(device)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def sampled_negatives(split: LeaveOneOutSplit, count: int, seed: int) -> np.ndarray:
    """[n_eval_users, m] items per evaluated user, uniform without replacement among the items outside the user's
    training, validation and test items; m = min(count, the smallest such pool), with a warning when it is less
    than `count` (the rows record m as "negatives"). Seeded by `seed` (the same split gives the same draws)."""
    users = split.eval_users
    rng = np.random.default_rng([seed, 1_000_003])
    pools = split.n_items - split.train.lengths()[users] - 2
    m = int(min(count, pools.min())) if users.size else 0
    if m < 1:
        raise ValueError("some evaluated user has no item left to sample a negative from: every item of the "
                         "catalog is in their training, validation or test items; drop such users from the data")
    if m < count:
        log.warning("sampled protocol: %d negatives per user instead of %d (the smallest pool of unseen items has "
                    "%d); every user gets the same number", m, count, m)
    out = np.empty((users.size, m), dtype=np.int64)
    allowed = np.ones(split.n_items, dtype=bool)
    for k, u in enumerate(users):
        seen = np.concatenate([split.train.row(u), [split.valid_item[u], split.test_item[u]]])
        allowed[seen] = False
        out[k] = rng.choice(np.flatnonzero(allowed), size=m, replace=False)
        allowed[seen] = True
    return out


def sampled_metrics(model: torch.nn.Module, split: LeaveOneOutSplit, negatives: np.ndarray, device: torch.device,
                    users_map: np.ndarray | None = None) -> dict[str, float]:
    """Test HR/NDCG@{5,10,20} of the test item among itself and the sampled negatives."""
    users = split.eval_users
    rows = users if users_map is None else users_map[users]
    model.eval()
    ranks = sampled_target_ranks(model.score, rows, split.test_item[users], negatives, device=device)
    return {**ranking_metrics(ranks, SAMPLED_KS), "negatives": int(negatives.shape[1])}


# ----------------------------------------------------------------------------------------------------------------
# Cached stages


class StageCache:
    """The KD teacher, the generated lists and the GD teacher of each (family, seed), from disk or trained once."""

    def __init__(self, spec: GridSpec, split: LeaveOneOutSplit, device: torch.device) -> None:
        self.spec = spec
        self.split = split
        self.device = device
        self.root = spec.work_dir / "cache" / dataset_slug(spec.base.dataset)
        self.data_fingerprint = split_fingerprint(split)
        self._memory: dict[tuple, Any] = {}
        self._train_splits: dict[tuple[int, float | None], LeaveOneOutSplit] = {}
        self.trained: list[str] = []  # which stages were trained (not loaded) in this process, for the log

    def train_split(self, config: LabConfig) -> LeaveOneOutSplit:
        key = (config.seed, config.rr_epsilon)  # the randomized matrix depends on both
        if key not in self._train_splits:
            self._train_splits[key] = lab.training_split(self.split, config)
        return self._train_splits[key]

    def keys(self, config: LabConfig) -> dict[str, str]:
        """The cache key of each stage: the owner's stage key (`data_owner.pipeline.stage_keys`: the data, the
        settings and the keys of the stages it reads, the randomized response keyed by the lab's secret), with the
        list source for the research reference of the KD teacher's own lists."""
        keys = stage_keys(config, self.data_fingerprint, secret_fingerprint(lab.lab_secret(config.seed)))
        if config.list_source != "generator":
            keys["lists"] = _digest({"kd": keys["kd_teacher"], "list_source": config.list_source,
                                     "length": config.list_length, "include_observed": config.include_observed}, 64)
            keys["gd_teacher"] = _digest({"gd_teacher": keys["gd_teacher"], "lists": keys["lists"]}, 64)
        return {name: key[:16] for name, key in keys.items()}

    def _remember(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key not in self._memory:
            if len(self._memory) > 6:  # keep a few (family, seed) stages; the rest stay on disk
                self._memory.pop(next(iter(self._memory)))
            self._memory[key] = build()
        return self._memory[key]

    def partial(self, name: str) -> Path:
        """Where a stage or cell still in training keeps its resumable state (removed once it is kept)."""
        return self.root / "partial" / name

    def _checkpointed(self, directory: Path, train: Callable[[], StageResult], what: str) -> StageResult:
        if (directory / "config.json").is_file():
            model, saved = load_checkpoint(directory, self.device)
            meta = saved["metadata"]
            log.info("%s: loaded from %s", what, directory)
            return StageResult(model, meta["valid"], meta["test"], meta["seconds"], meta["best_epoch"],
                               extra={"cached": True})
        stage = train()
        save_checkpoint(directory, stage.model, {"valid": stage.valid, "test": stage.test, "seconds": stage.seconds,
                                                 "best_epoch": stage.best_epoch, "what": what})
        shutil.rmtree(self.partial(directory.name), ignore_errors=True)
        self.trained.append(what)
        stage.extra["cached"] = False
        return stage

    def kd_teacher(self, config: LabConfig) -> StageResult:
        key = self.keys(config)["kd_teacher"]
        directory = self.root / "teachers" / f"{config.family}-seed{config.seed}-{key}"
        resumable = replace(config, checkpoint_dir=str(self.partial(directory.name)))
        return self._remember(("kd", key), lambda: self._checkpointed(
            directory, lambda: lab.train_kd_teacher(resumable, self.split, self.train_split(config), self.device),
            f"KD teacher {config.family} seed {config.seed}"))

    def generator(self, config: LabConfig) -> CachedLists:
        key = self.keys(config)["lists"]
        path = self.root / "lists" / f"seed{config.seed}-{key}.npz"
        return self._remember(("lists", key), lambda: self._lists(config, path))

    def _lists(self, config: LabConfig, path: Path) -> CachedLists:
        if path.is_file():
            with np.load(path, allow_pickle=False) as saved:
                meta = json.loads(str(saved["meta"]))
                lists = GeneratedLists(items=saved["items"], scores=saved["scores"],
                                       include_observed=bool(meta["include_observed"]), seed=int(meta["seed"]),
                                       n_items=int(meta["n_items"]))
            log.info("generated lists: loaded from %s", path)
            return CachedLists(lists, meta)
        stage: GeneratorStage = lab.list_stage(config, self.split, self.train_split(config),
                                               lambda: self.kd_teacher(config), self.device)
        g = stage.generator
        meta = {"include_observed": stage.lists.include_observed, "seed": stage.lists.seed,
                "n_items": stage.lists.n_items, "seconds_per_epoch": stage.seconds_per_epoch,
                "observed_share": stage.observed_share,
                "generator": {"valid": g.valid, "test": g.test, "seconds": g.seconds, "best_epoch": g.best_epoch,
                              "params": g.params},
                "settings": lists_settings_payload(config)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, items=stage.lists.items, scores=stage.lists.scores, meta=np.array(json.dumps(meta)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self.trained.append(f"{'CGAN' if config.list_source == 'generator' else 'teacher'} lists seed {config.seed}")
        return CachedLists(stage.lists, meta)

    def gd_teacher(self, config: LabConfig) -> StageResult:
        key = self.keys(config)["gd_teacher"]
        directory = self.root / "gd_teachers" / f"{config.family}-seed{config.seed}-{key}"

        def train() -> StageResult:
            kd = self.kd_teacher(config)
            lists = self.generator(config).lists
            resumable = replace(config, checkpoint_dir=str(self.partial(directory.name)))
            return lab.train_gd_teacher(resumable, self.split, self.train_split(config), kd.model, lists,
                                        self.device)

        return self._remember(("gd", key), lambda: self._checkpointed(
            directory, train, f"GD teacher {config.family} seed {config.seed}"))


@dataclass
class CachedLists:
    """Generated lists with what was measured when they were made (the CGAN itself is not needed again)."""

    lists: GeneratedLists
    meta: dict[str, Any]  # generator metrics as a recommender, seconds per epoch, observed share, settings


# ----------------------------------------------------------------------------------------------------------------
# One cell


@dataclass
class CellContext:
    spec: GridSpec
    split: LeaveOneOutSplit
    device: torch.device
    stages: StageCache
    machine: dict[str, Any]
    negatives: dict[int, np.ndarray] = field(default_factory=dict)

    def sampled(self, seed: int) -> np.ndarray:
        if seed not in self.negatives:
            self.negatives[seed] = sampled_negatives(self.split, self.spec.sampled_negatives, seed)
        return self.negatives[seed]


def _kd_student(cell: Cell, config: LabConfig, ctx: CellContext) -> StageResult:
    try:
        from experiments.baselines import train_kd_student
    except ImportError as exc:
        raise RuntimeError(f"method {cell.method!r} needs experiments.baselines.train_kd_student, which this "
                           "checkout does not provide yet; run the other methods meanwhile") from exc
    teacher = ctx.stages.kd_teacher(config)
    sized = lab.student_config(config, ctx.split)
    run = train_kd_student(cell.method, ctx.split, copy.deepcopy(teacher.model), dict(sized.config),
                           lab._train_config(config, config.teacher_epochs),
                           kd_weight=float(cell.kd_weight), temperature=float(cell.temperature or 1.0),
                           batch_size=config.batch_size, device=ctx.device,
                           options=ctx.spec.baseline_options.get(cell.method) or None)
    return StageResult(run.model, run.valid, run.test, run.train.seconds, run.train.best_epoch,
                       extra={"baseline": {k: v for k, v in run.extra.items() if _jsonable(v)}})


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, default=json_default)
    except (TypeError, ValueError):
        return False
    return True


def cell_partial(cell: Cell, ctx: CellContext) -> Path:
    return ctx.stages.partial(f"cell-{cell_key(ctx.spec, cell)}")


def run_cell(cell: Cell, ctx: CellContext) -> dict[str, Any]:
    """Train and evaluate one cell; the result row (not yet written)."""
    config = replace(cell_config(ctx.spec, cell), checkpoint_dir=str(cell_partial(cell, ctx)))
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if cell.method == "teacher":
        result = ctx.stages.kd_teacher(config)
    elif cell.method == "student":
        result = lab.train_raw_student(config, ctx.split, ctx.device)
    elif cell.method in KD_METHODS:
        result = _kd_student(cell, config, ctx)
    elif cell.method == "gd":
        gen = ctx.stages.generator(config)
        gd_teacher = ctx.stages.gd_teacher(config)
        result = lab.train_gd_student(config, ctx.split, gd_teacher.model, gen.lists, ctx.device)
        extra = {"gd_teacher": {"valid": gd_teacher.valid, "test": gd_teacher.test, "seconds": gd_teacher.seconds,
                                "best_epoch": gd_teacher.best_epoch, "params": gd_teacher.params},
                 "generator": gen.meta["generator"], "observed_share": gen.meta["observed_share"],
                 "list_length": config.list_length, "include_observed": config.include_observed,
                 **({"list_source": config.list_source} if config.list_source != "generator" else {})}
    else:  # grid_cells only makes the methods above
        raise ValueError(f"unknown method {cell.method!r}")
    model = result.model
    seconds = full_ranking_seconds(model, model.n_users, ctx.spec.inference_users, ctx.spec.inference_repeats,
                                   ctx.device)
    return {
        "key": cell_key(ctx.spec, cell),
        "dataset": config.dataset,
        "family": cell.family,
        "method": cell.method,
        "seed": cell.seed,
        "fraction": cell.fraction,
        "hyperparameters": cell.hyperparameters(),
        "valid": result.valid,
        "test": result.test,
        "test_sampled": sampled_metrics(model, ctx.split, ctx.sampled(cell.seed), ctx.device, result.users_map),
        "params": result.params,
        "teacher_params": (result.params if cell.method == "teacher"
                           else lab.student_config(config, ctx.split).reference_params),
        "train_seconds": result.seconds,
        "cell_seconds": time.perf_counter() - started,
        "best_epoch": result.best_epoch,
        "inference": {"batch_users": int(min(ctx.spec.inference_users, model.n_users)),
                      "seconds": seconds, "repeats": ctx.spec.inference_repeats},
        "settings": cell_settings(cell, config, ctx.spec.baseline_options),
        "rr_epsilon": config.rr_epsilon,
        "selection_metric": f"valid {SELECTION_METRIC}",
        "machine": ctx.machine,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
        **({"baseline": result.extra["baseline"]} if "baseline" in result.extra else {}),
    }


# ----------------------------------------------------------------------------------------------------------------
# The grid


@dataclass
class RunSummary:
    total: int
    skipped: int
    ran: int
    results: Path
    trained_stages: list[str]


def run_grid(spec: GridSpec) -> RunSummary:
    """Run every cell of the grid not yet in the results file; see the module docstring for resuming."""
    cells = grid_cells(spec)
    with work_dir_lock(spec.work_dir):
        results = ResultsFile(spec.results_path)
        finished = results.finished_keys()
        todo = [c for c in cells if cell_key(spec, c) not in finished]
        for cell in todo:  # fail before hours of training, not at the first row written after them
            json.dumps(cell_settings(cell, cell_config(spec, cell), spec.baseline_options), default=json_default)
        log.info("%d cells in the grid, %d already finished, %d to run", len(cells), len(cells) - len(todo),
                 len(todo))
        trained: list[str] = []
        if todo:
            device = resolve_device(spec.base.device)
            split = lab.load_split(spec.base.dataset)
            ctx = CellContext(spec, split, device, StageCache(spec, split, device), machine_info(device))
            bar = tqdm(todo, desc="grid", disable=not spec.progress, unit="cell")
            for cell in bar:
                bar.set_postfix_str(cell.label())
                row = run_cell(cell, ctx)
                results.append(row)
                shutil.rmtree(cell_partial(cell, ctx), ignore_errors=True)
                log.info("%s: valid %s %.4f, test HR@50 %.4f (%.0f s)", cell.label(), SELECTION_METRIC,
                         row["valid"][SELECTION_METRIC], row["test"]["HR@50"], row["cell_seconds"])
            bar.close()
            trained = ctx.stages.trained
    return RunSummary(len(cells), len(cells) - len(todo), len(todo), spec.results_path, trained)


# ----------------------------------------------------------------------------------------------------------------
# CLI: `gdrec-lab run`


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _sequence(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip().lower() for x in text.split(",") if x.strip())


def run_command(
    dataset: Annotated[str, typer.Option(help="registry name (ml-100k, citeulike-t, foursquare) or a data file")],
    work_dir: Annotated[Path, typer.Option(help="caches and (by default) results.jsonl live here")],
    models: Annotated[str, typer.Option(help="comma-separated: bpr,neumf")] = "bpr",
    methods: Annotated[str, typer.Option(help="comma-separated subset of " + ",".join(METHODS))] = ",".join(METHODS),
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1,2,3,4",
    fractions: Annotated[str, typer.Option(help="student sizes as fractions of the teacher")] = _sequence(FRACTIONS),
    kd_weights: Annotated[str, typer.Option(help="RD/CD/BD KD weight grid")] = _sequence(KD_WEIGHTS),
    temperatures: Annotated[str, typer.Option(help="CD/BD/GD temperature grid")] = _sequence(TEMPERATURES),
    lambdas: Annotated[str, typer.Option(
        help=f"GD lambda(s); 'sweep' = {_sequence(LAMBDA_SWEEP)} (fig4)")] = f"{GD_LAMBDA}",
    results: Annotated[Path | None, typer.Option(help="JSONL results (default <work-dir>/results.jsonl)")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="render the reports here when the grid is done")] = None,
    teacher_epochs: Annotated[int, typer.Option(min=1, help="teacher and raw-data students")] = TEACHER_EPOCHS,
    student_epochs: Annotated[int, typer.Option(min=1, help="GD student")] = STUDENT_EPOCHS,
    gd_epochs: Annotated[int, typer.Option(min=1, help="GD teacher continuation")] = GD_EPOCHS,
    patience: Annotated[int, typer.Option(min=0)] = PATIENCE,
    eval_every: Annotated[int, typer.Option(min=1)] = EVAL_EVERY,
    batch_size: Annotated[int, typer.Option(min=1)] = BATCH_SIZE,
    list_length: Annotated[int, typer.Option(min=1)] = LIST_LENGTH,
    include_observed: Annotated[bool, typer.Option(help="may a user's own items appear in their list")] = True,
    cgan_epochs: Annotated[int, typer.Option(min=1)] = CGAN_EPOCHS,
    cgan_json: Annotated[str | None, typer.Option(help="CGANConfig fields as JSON")] = None,
    baseline_json: Annotated[str | None, typer.Option(
        help='overrides of the RD/CD/BD defaults per method, e.g. {"cd": {"top_n": 50}}')] = None,
    teacher_json: Annotated[str | None, typer.Option(
        help='teacher override {"model": {...}, "lr": ..., "pretrain": {...} or null} over the owner\'s preset '
             '(data_owner.config) of the one model family in --models')] = None,
    rr_epsilon: Annotated[float | None, typer.Option(help="randomized response on the owner's training matrix")]
    = None,
    rr_true_size_epochs: RrTrueSizeEpochs = False,
    list_source: lab.ListSource = "generator",
    inference_users: Annotated[int, typer.Option(min=1, help="users per timed full-ranking batch (fig3)")] = 256,
    device: Annotated[str, typer.Option()] = "auto",
    progress: Annotated[bool, typer.Option()] = True,
) -> None:
    """Run (or continue) the comparison grid; rerunning the same command skips the finished cells."""
    families = _names(models)
    try:
        cgan = cgan_preset(dataset, cgan_epochs).with_json(cgan_json)
        teacher = None
        if teacher_json:
            if len(families) != 1:
                raise ValueError("--teacher-json sets one model family's teacher; give exactly one in --models")
            teacher = teacher_from_fields(dataset, families[0], json_object(teacher_json, "--teacher-json"))
        base = LabConfig(dataset=dataset, family=families[0] if families else "bpr", list_length=list_length,
                         include_observed=include_observed, teacher_epochs=teacher_epochs, gd_epochs=gd_epochs,
                         student_epochs=student_epochs, patience=patience, eval_every=eval_every, cgan=cgan,
                         teacher=teacher, batch_size=batch_size, device=device, progress=progress,
                         rr_epsilon=rr_epsilon, rr_true_size_epochs=rr_true_size_epochs,
                         list_source=lab.list_source_option(list_source))
        spec = GridSpec(base=base, work_dir=work_dir, families=families, methods=_names(methods),
                        seeds=_ints(seeds), fractions=_floats(fractions), kd_weights=_floats(kd_weights),
                        temperatures=_floats(temperatures),
                        lambdas=LAMBDA_SWEEP if lambdas.strip() == "sweep" else _floats(lambdas), results=results,
                        inference_users=inference_users, progress=progress,
                        baseline_options=json_object(baseline_json, "--baseline-json") if baseline_json else {})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    summary = run_grid(spec)
    typer.echo(f"{summary.total} cells: {summary.skipped} already finished, {summary.ran} run now; "
               f"results in {summary.results}")
    if report_dir is not None:
        from experiments.reports import render_reports

        written = render_reports(read_rows(summary.results), report_dir, dataset=dataset)
        typer.echo("reports: " + ", ".join(str(p) for p in written))

