"""`gdrec-lab run`: the paper's comparison grid (Teacher, Student, RD, CD, BD, GD) over models, seeds, student
sizes and KD hyperparameters, with cached stages, resumable JSONL results and progress bars.

A grid cell (experiments.grid) is (dataset, family, method, seed, fraction, hyperparameters):

    teacher   the KD teacher (raw data, L_CF) at the preset size; fraction 1.0, no hyperparameters
    student   the base model at `fraction` of the teacher's parameters, raw data alone
    rd        Ranking Distillation, one cell per KD weight                    (experiments.baselines)
    cd, bd    Collaborative / Bidirectional Distillation, KD weight x temperature (experiments.baselines)
    gd        the data-free GD student from the export alone, temperature x lambda (lambda 0.7 unless swept);
              its lists from the paper's CGAN, or from the list generator of --generator (the row's
              `list_generator`: the family, "auto:<family chosen>" under auto)

Every cell trains on the training split with its epoch chosen on the validation item, and records validation
and test HR/NDCG@{5,10,20,50} (full ranking), test Hit/NDCG@{5,10,20} on the 100-sampled-negatives protocol, the
parameter counts, the training seconds, the median time of one full-ranking `score_all` over a batch of users
(measured in this process, for fig3), and the machine (experiments.measures). Hyperparameters are selected later, in
`experiments.selection`, on the validation NDCG@50 only (mean over seeds); test numbers are only reported.

Caching (experiments.cache, under --work-dir, so later cells and later runs reuse them):

    cache/<dataset>/teachers/<family>-seed<k>-<key>/      the KD teacher checkpoint (shared.checkpoint)
    cache/<dataset>/lists/seed<k>-<key>/                  the generated lists (lists.npz, data_owner.lists) and
                                                          meta.json (metrics, the generator's family, fit report
                                                          and list statistics)
    cache/<dataset>/gd_teachers/<family>-seed<k>-<key>/   the GD teacher checkpoint

Each key is the owner's stage key (`data_owner.pipeline.stage_keys`: the data's fingerprint, the stage's settings,
the keys of the stages it reads, the randomized response keyed by the lab's secret), so a changed setting trains
afresh instead of reusing a stale stage, exactly where `gdrec-owner train` would redo a stage. Checkpoints and lists are
written to temporary names and renamed into place; a half-written cache entry is never read.

Results: one JSON line per finished cell (`experiments.results.CellRow`), appended to --results (default
<work-dir>/results.jsonl) and flushed and fsync'ed before the next cell starts. The line's `key` hashes the cell
and the settings it depends on.

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
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from tqdm.auto import tqdm

from data_owner.config import (
    AUTO_BUDGET_S,
    AUTO_FAMILIES,
    BATCH_SIZE,
    CGAN_EPOCHS,
    EVAL_EVERY,
    GD_EPOCHS,
    GENERATOR_CHOICES,
    LIST_LENGTH,
    PATIENCE,
    RESEARCH_GENERATOR,
    TEACHER_EPOCHS,
    RrTrueSizeEpochs,
    cgan_preset,
    teacher_from_fields,
)
from data_owner.data import LeaveOneOutSplit
from experiments import lab
from experiments.cache import StageCache
from experiments.grid import (
    DEFAULT_STUDENT_REG_FACTORS,
    DEFAULT_STUDENT_TRANSFER,
    KD_METHODS,
    METHODS,
    Cell,
    GridSpec,
    cell_config,
    cell_key,
    cell_settings,
    grid_cells,
)
from experiments.lab import LabConfig, StageResult
from experiments.measures import full_ranking_seconds, machine_info, sampled_metrics, sampled_negatives
from experiments.presets import (
    FRACTIONS,
    GD_LAMBDA,
    KD_WEIGHTS,
    LAMBDA_SWEEP,
    SELECTION_METRIC,
    STUDENT_EPOCHS,
    TEMPERATURES,
)
from experiments.results import CellRow, ResultsFile, json_default, read_rows
from shared.checkpoint import exclusive_lock_or_fail
from shared.device import resolve_device
from shared.distillation import TRANSFERS
from shared.options import json_object

log = logging.getLogger("gdrec.runner")


def work_dir_lock(work_dir: Path):
    return exclusive_lock_or_fail(work_dir / ".runner.lock",
                          f"another `gdrec-lab run` is using {work_dir}; wait for it or use another --work-dir")


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


def list_generator_label(config: LabConfig, family: str) -> str | None:
    """The `list_generator` of a GD row: None for the paper's CGAN (and for lists not from a generator), else the
    family, "auto:<family chosen>" under auto."""
    if config.list_source != "generator" or config.generator == "cgan":
        return None
    return f"auto:{family}" if config.generator == "auto" else config.generator


def cell_partial(cell: Cell, ctx: CellContext) -> Path:
    return ctx.stages.partial(f"cell-{cell_key(ctx.spec, cell)}")


def run_cell(cell: Cell, ctx: CellContext) -> CellRow:
    """Train and evaluate one cell; the result row (not yet written)."""
    config = replace(cell_config(ctx.spec, cell), checkpoint_dir=str(cell_partial(cell, ctx)))
    started = time.perf_counter()
    gd: dict[str, Any] = {}
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
        gd = {"gd_teacher": {"valid": gd_teacher.valid, "test": gd_teacher.test, "seconds": gd_teacher.seconds,
                             "best_epoch": gd_teacher.best_epoch, "params": gd_teacher.params},
              "generator": gen.meta["generator"], "observed_share": gen.meta["observed_share"],
              "list_length": config.list_length, "include_observed": config.include_observed,
              "list_source": config.list_source if config.list_source != "generator" else None,
              "list_generator": list_generator_label(config, gen.family)}
        if result.extra.get("reg_candidates"):  # the student's regularisation, chosen by list fidelity
            gd["student"] = {"reg": result.extra.get("student_reg"), "reg_candidates": result.extra["reg_candidates"]}
    else:  # grid_cells only makes the methods above
        raise ValueError(f"unknown method {cell.method!r}")
    model = result.model
    seconds = full_ranking_seconds(model, model.n_users, ctx.spec.inference_users, ctx.spec.inference_repeats,
                                   ctx.device)
    return CellRow(
        key=cell_key(ctx.spec, cell),
        dataset=config.dataset,
        family=cell.family,
        method=cell.method,
        seed=cell.seed,
        fraction=cell.fraction,
        hyperparameters=cell.hyperparameters(),
        valid=result.valid,
        test=result.test,
        test_sampled=sampled_metrics(model, ctx.split, ctx.sampled(cell.seed), ctx.device, result.users_map),
        params=result.params,
        teacher_params=(result.params if cell.method == "teacher"
                        else lab.student_config(config, ctx.split).reference_params),
        train_seconds=result.seconds,
        cell_seconds=time.perf_counter() - started,
        best_epoch=result.best_epoch,
        inference={"batch_users": int(min(ctx.spec.inference_users, model.n_users)),
                   "seconds": seconds, "repeats": ctx.spec.inference_repeats},
        settings=cell_settings(cell, config, ctx.spec.baseline_options),
        rr_epsilon=config.rr_epsilon,
        selection_metric=f"valid {SELECTION_METRIC}",
        machine=ctx.machine,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        baseline=result.extra.get("baseline"),
        **gd,
    )


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
                         row.valid[SELECTION_METRIC], row.test["HR@50"], row.cell_seconds)
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
    include_observed: Annotated[bool, typer.Option(
        "--include-observed/--exclude-observed",
        help="may a user's own items appear in their list (the paper's lists may)")] = True,
    generator: Annotated[str, typer.Option(
        help=f"list generator: one of {', '.join(GENERATOR_CHOICES)}; cgan is the paper's (the reproduction), auto "
             "keeps the candidate of --auto-families whose dry-run student ranks the validation items best")]
    = RESEARCH_GENERATOR,
    generator_json: Annotated[str | None, typer.Option(
        help='settings per generator family as JSON over its defaults, e.g. {"itemknn": {"ks": [50, 100]}}')]
    = None,
    auto_families: Annotated[str, typer.Option(
        help="--generator auto: the candidate families, comma-separated, tried in this order")]
    = ",".join(AUTO_FAMILIES),
    auto_budget: Annotated[float, typer.Option(
        min=1, help="--generator auto: seconds after which no further candidate is started")] = AUTO_BUDGET_S,
    cgan_epochs: Annotated[int, typer.Option(min=1)] = CGAN_EPOCHS,
    cgan_json: Annotated[str | None, typer.Option(help="CGANConfig fields as JSON")] = None,
    student_reg_factors: Annotated[str, typer.Option(
        help="GD student: regularisation factors over the teacher's, comma-separated; with several, one student "
             "per factor and the best on validation is kept")] = _sequence(DEFAULT_STUDENT_REG_FACTORS),
    student_transfer: Annotated[str, typer.Option(
        help=f"GD student: the transfer, one of {', '.join(TRANSFERS)} (paper: the paper's L_GD)")]
    = DEFAULT_STUDENT_TRANSFER,
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
        if student_transfer not in TRANSFERS:
            raise ValueError(f"--student-transfer must be one of {', '.join(TRANSFERS)}, got {student_transfer!r}")
        reg_factors = _floats(student_reg_factors)
        if not reg_factors or min(reg_factors) < 0:
            raise ValueError(f"--student-reg-factors must be non-negative numbers, got {student_reg_factors!r}")
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
                         list_source=lab.list_source_option(list_source), generator=generator,
                         generator_settings=json_object(generator_json, "--generator-json") if generator_json else {},
                         auto_families=_names(auto_families), auto_budget_s=auto_budget,
                         student_reg_factors=reg_factors, student_transfer=student_transfer)
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

