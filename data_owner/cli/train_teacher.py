"""`gdrec-owner train-teacher`: one teacher alone, for choosing hyperparameters; on a dataset without a teacher preset
and without explicit settings, its settings are searched on the validation item first.

Started by `torchrun --nproc-per-node N` it trains data-parallel on N processes (docs/scale-out.md): every rank
trains on its share of each batch, rank 0 writes the checkpoint and prints the report, the others end quietly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from data_owner.cli.common import (
    OPTIMIZER_HELP,
    DatasetOption,
    DeviceOption,
    Family,
    Metric,
    Optimizer,
    SeedOption,
    TuneBudgetOption,
    TuneMaxParamsOption,
    TuneOption,
    TuneTrialsOption,
    fail,
    json_option,
    refuse_unused_tuning,
    tuning_fields,
)
from data_owner.config import BATCH_SIZE, EVAL_EVERY, PATIENCE, TEACHER_EPOCHS

DEFAULT_DIM = 64
DEFAULT_LR = 1e-3


def train_teacher(
    dataset: DatasetOption,
    model: Annotated[Family, typer.Option(help="base model family")] = Family.bpr,
    dim: Annotated[int | None, typer.Option(min=1, help=f"embedding width (default {DEFAULT_DIM})")] = None,
    hidden: Annotated[str | None, typer.Option(help="NeuMF MLP widths, comma-separated")] = None,
    reg: Annotated[float | None, typer.Option(min=0.0, help="L2 weight on the batch embeddings")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = TEACHER_EPOCHS,
    lr: Annotated[float | None, typer.Option(min=0.0, help=f"learning rate (default {DEFAULT_LR:g})")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = BATCH_SIZE,
    patience: Annotated[int, typer.Option(min=0, help="evaluations without gain before stopping")] = PATIENCE,
    eval_every: Annotated[int, typer.Option(min=1)] = EVAL_EVERY,
    metric: Annotated[Metric, typer.Option(help="validation metric for model selection")] = Metric.ndcg,
    pretrain: Annotated[bool, typer.Option(help="NeuMF: train its GMF and MLP branches alone first (NCF "
                                                "pre-training), then NeuMF from them")] = False,
    pretrain_json: Annotated[str | None, typer.Option(
        help="pre-training settings (implies --pretrain): {\"alpha\": 0.5, \"gmf_reg\": ..., \"mlp_reg\": ..., "
             "\"finetune_lr\": ...}")] = None,
    optimizer: Annotated[Optimizer, typer.Option(help=OPTIMIZER_HELP)] = Optimizer.adam,
    tune: TuneOption = None,
    tune_budget: TuneBudgetOption = None,
    tune_trials: TuneTrialsOption = None,
    tune_max_params: TuneMaxParamsOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="overrides GDREC_DATA_DIR")] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint directory")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train a teacher on the raw training split, select the epoch on validation, report validation and test."""
    from data_owner.config import Pretraining, TeacherTuning, has_teacher_preset
    from data_owner.teacher_trial import train_teacher_trial
    from shared import distributed
    from shared.device import resolve_device
    from shared.training import TrainConfig

    try:
        pretraining = Pretraining(**json_option(pretrain_json, "pretrain-json")) if pretrain or pretrain_json else None
    except (TypeError, ValueError) as exc:  # an unknown key or a bad value
        raise fail(f"--pretrain-json: {exc}") from None
    explicit = [flag for flag, value in (("--dim", dim), ("--hidden", hidden), ("--reg", reg), ("--lr", lr),
                                         ("--pretrain", pretraining)) if value is not None]
    if tune is None:
        tune = not explicit and not has_teacher_preset(dataset, model.value, optimizer.value)
    elif tune and explicit:
        raise fail(f"--tune searches the teacher's settings itself: drop {', '.join(explicit)}, or pass --no-tune to "
                   "train the given settings")
    search = tuning_fields(tune_budget, tune_trials, tune_max_params)
    refuse_unused_tuning(search, tune)
    try:
        tuning = TeacherTuning(**search) if tune else None
        train_config = TrainConfig(epochs=epochs, lr=DEFAULT_LR if lr is None else lr, patience=patience,
                                   eval_every=eval_every, metric=metric.value, seed=seed, progress=progress)
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        with distributed.session(resolve_device(device)) as rank_device:
            trial = train_teacher_trial(dataset, model.value, train_config, dim=DEFAULT_DIM if dim is None else dim,
                                        hidden=hidden, reg=reg, batch_size=batch_size, device=str(rank_device),
                                        data_dir=data_dir, pretrain=pretraining, out=out, tuning=tuning,
                                        optimizer=optimizer.value)
            main = distributed.is_main()
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise fail(str(exc)) from None
    if not main:
        return
    summary = trial.summary
    typer.echo(f"\n{trial.split.summary()}")
    if trial.tuning is not None:
        typer.echo(trial.tuning.summary_line())
    typer.echo(
        f"{model.value} {summary['config']} lr {summary['lr']:g}: {summary['num_parameters']:,} parameters, best epoch "
        f"{summary['best_epoch']} of {summary['epochs_run']}, {summary['train_seconds']} s on {summary['device']}"
        + (f" x {summary['processes']} processes" if summary["processes"] > 1 else "")
    )
    typer.echo(f"{'':10}{'HR@50':>8}{'NDCG@50':>9}")
    for part in ("valid", "test"):
        metrics = summary[part]
        typer.echo(f"{part:10}{metrics['HR@50']:8.4f}{metrics['NDCG@50']:9.4f}")
    typer.echo(f"checkpoint: {trial.out}")
