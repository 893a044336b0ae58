"""`gdrec-lab gd`: the whole GD-REC chain in one process, for research, on the owner's own stage functions.

KD teacher (raw data) -> CGAN -> generated lists -> GD teacher (raw + generated) -> export -> GD student (from
the export alone) and, for reference, the same-size student trained on raw data. Prints one table: HR@50 /
NDCG@50 on the owner's held-out test items, parameter counts and wall time per stage.

The owner's stages are `data_owner.stages` (what `gdrec-owner train` runs) with the owner's settings
(`data_owner.config.ChainConfig`, extended by `LabConfig` with the students' settings only): for the same data, seed
and secret the harness computes the very teachers, lists and export the product ships. Each stage here wraps one of
them with its metrics on the true split, a function of (LabConfig, split, ...) -> StageResult (`train_kd_teacher`,
`train_generator`, `train_gd_teacher`, `train_gd_student`, `train_raw_student`); `run_chain` calls them once in
order and `experiments.runner` (`gdrec-lab run`) calls them per grid cell with their outputs cached on disk. The
harness's export key and randomized-response seed come from `lab_secret(seed)` unless a secret is passed."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from data_owner import stages
from data_owner.config import (
    CGAN_EPOCHS,
    LIST_LENGTH,
    TEMPERATURE,
    ChainConfig,
    RrTrueSizeEpochs,
    cgan_preset,
)
from data_owner.data import DataFormatError, DatasetUnavailableError, LeaveOneOutSplit
from data_owner.export import generator_card, user_token
from data_owner.gan import generator_scorer
from data_owner.generators import ListGenerator
from data_owner.generators.cgan import cgan_settings
from data_owner.lists import GeneratedLists, top_lists
from data_owner.pipeline import load_split
from data_owner.teacher import DEFAULT_KS, TeacherRun, train_base_model
from experiments.presets import GD_LAMBDA, STUDENT_EPOCHS, STUDENT_FRACTION
from shared.device import resolve_device
from shared.distillation import DistillConfig, distill_student
from shared.evaluation import evaluate
from shared.models import Recommender, SizedConfig, config_at_fraction
from shared.options import json_object
from shared.schemas import ExportBundle
from shared.training import TrainConfig

log = logging.getLogger("gdrec.lab")
app = typer.Typer(help="GD-REC research harness (raw data, in-process).", no_args_is_help=True,
                  add_completion=False)


LAB_CONSUMER = "lab"  # the consumer id of the harness's in-process exports

# where the GD student's lists come from: "generator" (GD-REC: the CGAN's top-L) or "teacher" (a reference for
# research only, not data-free in spirit: the KD teacher's own top-L, which separates the generator's share of the
# GD student's gap from the distillation's)
LIST_SOURCES = ("generator", "teacher")
LIST_GENERATOR_LABELS = {"cgan": "CGAN", "itemknn": "item-kNN", "vae": "Mult-VAE", "teacher": "Teacher-noise",
                         "ease": "EASE", "auto": "Auto-selected"}


@dataclass(frozen=True)
class LabConfig(ChainConfig):
    """The owner's chain settings (`data_owner.config.LabConfig`, every default there) and what only research
    varies: the students, the list source, and where a stage in training keeps its resumable state."""

    consumer_id: str = LAB_CONSUMER  # the export's tokens (and so the GD student's user order) are for this consumer
    fraction: float = STUDENT_FRACTION  # student size / teacher size
    lam: float = GD_LAMBDA
    student_epochs: int = STUDENT_EPOCHS
    list_source: str = "generator"  # one of LIST_SOURCES
    # the GD student's regularisation factors and transfer (shared.distillation.DistillConfig); the defaults are the
    # paper's single student at the teacher's regularisation
    student_reg_factors: tuple[float, ...] = (1.0,)
    student_transfer: str = "paper"
    # where the stage being trained keeps its resumable training state (shared.training); None: nowhere. Not a
    # setting of the result: it never enters a cache key.
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.list_source not in LIST_SOURCES:
            raise ValueError(f"list source must be one of {', '.join(LIST_SOURCES)}, got {self.list_source!r}")
        if not 0 < self.fraction <= 1 or self.lam < 0 or self.student_epochs < 1:
            raise ValueError("fraction must lie in (0, 1], lam be non-negative and student_epochs at least 1")


@dataclass
class Row:
    name: str
    params: int
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    note: str = ""


@dataclass
class StageResult:
    """A trained model of one chain stage with its metrics on the owner's true split (training items excluded)."""

    model: Any  # a shared.models.Recommender, or the CGAN's Generator
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    best_epoch: int
    note: str = ""
    users_map: np.ndarray | None = None  # owner user index -> the model's user row (the GD student's token order)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> int:
        if isinstance(self.model, ListGenerator):  # the teacher family holds the KD teacher's, counted there
            return self.model.num_parameters()
        return sum(p.numel() for p in self.model.parameters())


@dataclass
class GeneratorStage:
    """The CGAN selected on validation, its generated lists, and GF_u's own metrics as a recommender."""

    lists: GeneratedLists
    generator: StageResult
    seconds_per_epoch: float
    observed_share: float


def teacher_settings(config: LabConfig) -> dict[str, Any]:
    """{"model": architecture kwargs, "lr": ..., "pretrain": ...}: the config's teacher, else the owner's preset of
    (dataset, family), as the result keys record it."""
    return config.teacher_settings.research_payload()


def lab_secret(seed: int) -> bytes:
    """The export key of the research harness: fixed per seed, so a rerun gives the same tokens (and so the same
    student user order). The services use real secrets; in-process nothing leaves the machine."""
    return hashlib.sha256(f"gdrec-lab-export-{seed}".encode()).digest()


def training_split(split: LeaveOneOutSplit, config: LabConfig, secret: bytes | None = None) -> LeaveOneOutSplit:
    """The split the owner's models train on (`data_owner.stages.model_split`): `split` itself, or with
    `rr_epsilon` set, its randomized copy, the flips keyed by `secret` (default: `lab_secret(config.seed)`)."""
    return stages.model_split(split, config, lab_secret(config.seed) if secret is None else secret)


def evaluate_scorer(score_all, split: LeaveOneOutSplit, device, users_map: np.ndarray | None = None):
    """Validation and test metrics of a scorer over the owner's users (users_map: owner user -> scorer row)."""
    users = split.eval_users

    def scored(batch: torch.Tensor) -> torch.Tensor:  # evaluate passes owner ids; translate to scorer rows
        return score_all(batch if users_map is None else torch.as_tensor(users_map[batch.cpu().numpy()],
                                                                        device=batch.device))

    valid = evaluate(scored, users, split.valid_item[users], [split.train], ks=DEFAULT_KS, device=device)
    test = evaluate(scored, users, split.test_item[users], [split.train], [split.valid_item], ks=DEFAULT_KS,
                    device=device)
    return valid.metrics, test.metrics


def teacher_epoch_pairs(config: LabConfig, split: LeaveOneOutSplit) -> int | None:
    """The cap on the owner's teachers' pairs per epoch: the true matrix's size under `rr_true_size_epochs`."""
    return stages.epoch_pairs(split, config)


def _train_config(config: LabConfig, epochs: int) -> TrainConfig:
    return stages.train_config(config, epochs, config.checkpoint_dir)


def _as_stage(run: TeacherRun, split: LeaveOneOutSplit, trained_on: LeaveOneOutSplit, device) -> StageResult:
    """Metrics on the true split (recomputed when the model trained on a randomized matrix)."""
    valid, test = (run.valid, run.test) if trained_on is split else evaluate_scorer(run.model.score_all, split,
                                                                                     device)
    return StageResult(run.model, valid, test, run.train.seconds, run.train.best_epoch, extra=dict(run.extra))


def train_kd_teacher(config: LabConfig, split: LeaveOneOutSplit, train_split: LeaveOneOutSplit,
                     device) -> StageResult:
    """Stage 1 (`data_owner.stages.kd_teacher`): the KD teacher on the (possibly randomized) training pairs."""
    run = stages.kd_teacher(split, train_split, config, device, config.checkpoint_dir)
    return _as_stage(run, split, train_split, device)


def train_generator(config: LabConfig, split: LeaveOneOutSplit, train_split: LeaveOneOutSplit,
                    device, kd_teacher: Callable[[], StageResult] | None = None,
                    secret: bytes | None = None) -> GeneratorStage:
    """Stages 2-3: the list generator of `config.generator` (`data_owner.stages.generator`, `generator_lists`; the
    CGAN through `stages.cgan` / `stages.lists`, as the reproduction always ran it) and its lists; the generator's
    own metrics as a recommender on the true split. `kd_teacher()` is called only for the families that read it
    (teacher, auto); `secret` keys auto's dry-run exports (default `lab_secret(config.seed)`)."""
    if config.generator != "cgan":
        return _train_list_generator(config, split, train_split, device, kd_teacher, secret)
    started = time.perf_counter()
    gan = stages.cgan(train_split, config, device)
    g_valid, g_test = evaluate_scorer(generator_scorer(gan.generator, train_split.train, config.seed), split, device)
    lists = stages.lists(gan.generator, train_split, config)
    stage = StageResult(gan.generator, g_valid, g_test, time.perf_counter() - started, gan.best_epoch,
                        note=f"best epoch {gan.best_epoch}, {gan.seconds_per_epoch:.2f} s/epoch")
    return GeneratorStage(lists, stage, gan.seconds_per_epoch, lists.observed_share(split.train))


def _train_list_generator(config: LabConfig, split: LeaveOneOutSplit, train_split: LeaveOneOutSplit, device,
                          kd_teacher: Callable[[], StageResult] | None, secret: bytes | None) -> GeneratorStage:
    started = time.perf_counter()
    kd = None
    if config.uses_kd_teacher_for_lists:
        if kd_teacher is None:
            raise ValueError(f"generator {config.generator!r} needs the KD teacher")
        kd = kd_teacher().model
    source, selection = stages.generator(train_split, split, config, device, kd,
                                         lab_secret(config.seed) if secret is None else secret)
    scorer = source.reported_scorer(train_split.train, config.seed, device)
    g_valid, g_test = evaluate_scorer(scorer, split, device)
    lists = stages.generator_lists(source, train_split, config, device)
    stage = StageResult(source, g_valid, g_test, time.perf_counter() - started,
                        int(source.report.chosen.get("epoch", 0)), note=f"{source.family} {source.settings()}",
                        extra={"family": source.family, "settings": source.settings(),
                               "fit": source.report.to_dict(), "selection": selection,
                               "statistics": lists.statistics(split.train)})
    return GeneratorStage(lists, stage, 0.0, lists.observed_share(split.train))


def teacher_top_lists(config: LabConfig, split: LeaveOneOutSplit, train_split: LeaveOneOutSplit,
                      kd_teacher: StageResult, device) -> GeneratorStage:
    """The reference list source: the KD teacher's own top-L per user (same length and include-observed switch as
    the generator's lists), with the teacher's metrics (already measured) in the place of the generator's."""
    started = time.perf_counter()
    model = kd_teacher.model
    model.eval()
    lists = top_lists(model.score_all, train_split.train, config.list_length, config.include_observed,
                      seed=config.seed, device=device)
    stage = StageResult(model, kd_teacher.valid, kd_teacher.test, time.perf_counter() - started, 0,
                        note="KD teacher's top-L")
    return GeneratorStage(lists, stage, 0.0, lists.observed_share(split.train))


def list_stage(config: LabConfig, split: LeaveOneOutSplit, train_split: LeaveOneOutSplit,
               kd_teacher: Callable[[], StageResult], device) -> GeneratorStage:
    """The lists of `config.list_source`: the CGAN's (trained here), or the KD teacher's (`kd_teacher()` is only
    called for those)."""
    if config.list_source == "teacher":
        return teacher_top_lists(config, split, train_split, kd_teacher(), device)
    return train_generator(config, split, train_split, device, kd_teacher)


def train_gd_teacher(config: LabConfig, split: LeaveOneOutSplit, train_split: LeaveOneOutSplit,
                     kd_teacher: Recommender, lists: GeneratedLists, device) -> StageResult:
    """Stage 4 (`data_owner.stages.gd_teacher`): a copy of the KD teacher continued on raw + generated pairs."""
    run = stages.gd_teacher(kd_teacher, split, train_split, lists, config, config.checkpoint_dir)
    return _as_stage(run, split, train_split, device)


def train_gd_student(config: LabConfig, split: LeaveOneOutSplit, gd_teacher: Recommender, lists: GeneratedLists,
                     device, secret: bytes | None = None) -> StageResult:
    """Stages 5-6: the export (`data_owner.stages.export`, what would cross the boundary; keyed by `secret`,
    default `lab_secret(config.seed)`) and the data-free student trained from it alone."""
    secret = lab_secret(config.seed) if secret is None else secret
    export = stages.export(gd_teacher, lists, split, config, secret)
    student = distill_student(
        export,
        DistillConfig(fraction=config.fraction, lam=config.lam, epochs=config.student_epochs,
                      reg_factors=config.student_reg_factors, transfer=config.student_transfer,
                      lr=config.teacher_settings.lr, batch_size=config.batch_size, patience=config.patience,
                      eval_every=config.eval_every, seed=config.seed, progress=config.progress,
                      checkpoint_dir=config.checkpoint_dir),
        device=device,
    )
    token_row = {token: k for k, token in enumerate(student.tokens)}
    users_map = np.array([token_row[user_token(secret, config.consumer_id, str(uid))] for uid in split.user_ids])
    valid, test = evaluate_scorer(student.model.score_all, split, device, users_map)
    return StageResult(student.model, valid, test, student.train.seconds, student.train.best_epoch,
                       note=f"lambda {config.lam}, t {config.temperature}", users_map=users_map,
                       extra={"teacher_params": student.sizing.reference_params, "export": export,
                              "student_reg": student.extra.get("reg"),
                              "reg_candidates": student.extra.get("reg_candidates")})


def student_config(config: LabConfig, split: LeaveOneOutSplit) -> SizedConfig:
    """The student architecture at `config.fraction` of the teacher's parameter count."""
    return config_at_fraction(config.family, config.teacher_settings.model, split.n_users, split.n_items,
                              config.fraction)


def train_raw_student(config: LabConfig, split: LeaveOneOutSplit, device) -> StageResult:
    """Reference: the same-size student trained on the raw data alone (the paper's "Student" row)."""
    sized = student_config(config, split)
    run = train_base_model(split, config.family, sized.config, _train_config(config, config.teacher_epochs),
                           batch_size=config.batch_size, device=device)
    return _as_stage(run, split, split, device)


@dataclass
class OwnerOutputs:
    """What the owner's stages produced in one research run: the model split, the KD teacher, the list source,
    the GD teacher and the export the GD student learns from."""

    train_split: LeaveOneOutSplit
    kd: StageResult
    lists: GeneratorStage
    gd: StageResult
    export: ExportBundle


def run_owner_stages(config: LabConfig, split: LeaveOneOutSplit, device: torch.device,
                     secret: bytes | None = None) -> OwnerOutputs:
    """The owner's stages (`data_owner.stages`) once, in order, as `gdrec-owner train` runs them; `secret` keys the
    randomized response and the export (default: `lab_secret(config.seed)`)."""
    secret = lab_secret(config.seed) if secret is None else secret
    train_split = training_split(split, config, secret)
    kd = train_kd_teacher(config, split, train_split, device)
    gen = list_stage(config, split, train_split, lambda: kd, device)
    gd = train_gd_teacher(config, split, train_split, kd.model, gen.lists, device)
    card = generator_card(*_generator_source(config, gen), gen.lists.statistics(split.train))
    return OwnerOutputs(train_split, kd, gen, gd, stages.export(gd.model, gen.lists, split, config, secret, card))


def _generator_source(config: LabConfig, gen: GeneratorStage) -> tuple[str, dict[str, Any]]:
    """The family and fitted settings of a generator stage, as the owner's generator stage records them."""
    if config.generator == "cgan":
        return "cgan", cgan_settings(replace(config.cgan, seed=config.seed, progress=config.progress))
    return gen.generator.extra["family"], gen.generator.extra["settings"]


def run_chain(config: LabConfig) -> tuple[list[Row], dict[str, Any]]:
    """Every stage once, in order; one Row per stage."""
    device = resolve_device(config.device)
    split = load_split(config.dataset)
    info: dict[str, Any] = {"split": split.summary(), "device": str(device), "rr_epsilon": config.rr_epsilon}

    owner = run_owner_stages(config, split, device)
    kd, gen, gd = owner.kd, owner.lists, owner.gd
    info.update(cgan_seconds_per_epoch=gen.seconds_per_epoch, cgan_best_epoch=gen.generator.best_epoch,
                observed_share=gen.observed_share)
    student = train_gd_student(config, split, gd.model, gen.lists, device)
    raw = train_raw_student(config, split, device)
    rows = [
        Row("Teacher (KD: raw data)", kd.params, kd.valid, kd.test, kd.seconds),
        Row(f"{LIST_GENERATOR_LABELS.get(config.generator, config.generator)} generator as a recommender"
            if config.list_source == "generator"
            else "List source: the KD teacher's top-L (reference)", gen.generator.params, gen.generator.valid,
            gen.generator.test, gen.generator.seconds, gen.generator.note),
        Row("Teacher (GD: raw + generated)", gd.params, gd.valid, gd.test, gd.seconds),
        Row(f"GD student ({config.fraction:.0%}, data-free)", student.params, student.valid, student.test,
            student.seconds, student.note),
        Row(f"Student ({config.fraction:.0%}, raw data)", raw.params, raw.valid, raw.test, raw.seconds),
    ]
    info["kd_teacher_test"] = kd.test["HR@50"]
    return rows, info


def render(rows: list[Row], info: dict[str, Any], config: LabConfig) -> str:
    lines = [
        f"GD-REC chain: {config.dataset}, {config.family}, student {config.fraction:.0%}, seed {config.seed}, "
        f"L={config.list_length}, include_observed={config.include_observed}, device {info['device']}",
        info["split"],
        f"listed items that are the user's own training items: {info['observed_share']:.1%}",
        "",
        "| stage | params | valid HR@50 | test HR@50 | test NDCG@50 | seconds | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row.name} | {row.params:,} | {row.valid['HR@50']:.4f} | {row.test['HR@50']:.4f} | "
                     f"{row.test['NDCG@50']:.4f} | {row.seconds:.0f} | {row.note} |")
    return "\n".join(lines)


def configure_logging(verbose: bool) -> None:
    """The research CLIs' logging: warnings only, or every stage's progress with -v."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    configure_logging(verbose)


ListSource = Annotated[str, typer.Option(
    help="where the GD student's lists come from: generator (GD-REC) or teacher (the KD teacher's own top-L, a "
         "research reference that separates the generator's share of the gap)")]


def list_source_option(value: str) -> str:
    """The --list-source value, or a usage error naming the choices."""
    if value not in LIST_SOURCES:
        raise typer.BadParameter(f"--list-source must be one of {', '.join(LIST_SOURCES)}, got {value!r}")
    return value


@app.command()
def gd(
    dataset: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option(help="bpr or neumf")] = "bpr",
    fraction: Annotated[float, typer.Option(min=0.01, max=1.0)] = STUDENT_FRACTION,
    seed: Annotated[int, typer.Option()] = 0,
    list_length: Annotated[int, typer.Option(min=1)] = LIST_LENGTH,
    include_observed: Annotated[bool, typer.Option(
        "--include-observed/--exclude-observed", help="may a user's own items appear in their list")] = True,
    temperature: Annotated[float, typer.Option(min=1e-3)] = TEMPERATURE,
    lam: Annotated[float, typer.Option(min=0.0)] = GD_LAMBDA,
    generator: Annotated[str, typer.Option(
        help="list generator: cgan (the paper's), itemknn, vae, teacher, ease or auto")] = "cgan",
    generator_json: Annotated[str | None, typer.Option(
        help='settings per generator family as JSON over its defaults, e.g. {"itemknn": {"ks": [50, 100]}}')]
    = None,
    cgan_epochs: Annotated[int, typer.Option(min=1)] = CGAN_EPOCHS,
    cgan_json: Annotated[str | None, typer.Option(help="CGANConfig fields as JSON")] = None,
    student_reg_factors: Annotated[str, typer.Option(
        help="GD student: regularisation factors over the teacher's, comma-separated")] = "1",
    student_transfer: Annotated[str, typer.Option(help="GD student: paper, listwise or weighted")] = "paper",
    device: Annotated[str, typer.Option()] = "auto",
    out: Annotated[Path | None, typer.Option(help="write the rows as JSON here")] = None,
    progress: Annotated[bool, typer.Option()] = True,
    rr_epsilon: Annotated[float | None, typer.Option(
        help="randomized response on the training matrix the CGAN and teachers see (epsilon-LDP per interaction)"
    )] = None,
    rr_true_size_epochs: RrTrueSizeEpochs = False,
    list_source: ListSource = "generator",
) -> None:
    """Run the whole chain in-process and print the table."""
    list_source = list_source_option(list_source)
    try:
        cgan = cgan_preset(dataset, cgan_epochs).with_json(cgan_json)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        config = LabConfig(dataset=dataset, family=model, fraction=fraction, seed=seed, list_length=list_length,
                           include_observed=include_observed, temperature=temperature, lam=lam, cgan=cgan,
                           device=device, progress=progress, rr_epsilon=rr_epsilon,
                           rr_true_size_epochs=rr_true_size_epochs, list_source=list_source, generator=generator,
                           generator_settings=json_object(generator_json, "--generator-json") if generator_json else {},
                           student_reg_factors=tuple(float(x) for x in student_reg_factors.split(",") if x.strip()),
                           student_transfer=student_transfer)
        DistillConfig(transfer=student_transfer, reg_factors=config.student_reg_factors)  # refused now, not later
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    rows, info = run_chain(config)
    typer.echo(render(rows, info, config))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": asdict(config), "info": info,
                   "rows": [asdict(r) for r in rows]}
        out.write_text(json.dumps(payload, indent=2, default=str))


def run_cli(cli: typer.Typer) -> None:
    """Run a research CLI; a dataset that is missing or malformed is the user's to fix, so it ends the command with
    the loader's message (which names the file and line, or where to put the data) and exit status 2, not a
    traceback."""
    try:
        cli()
    except (DataFormatError, DatasetUnavailableError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None

