"""`gdrec-owner train-teacher`: one teacher alone, for choosing hyperparameters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from data_owner.cli.common import DatasetOption, DeviceOption, Family, Metric, SeedOption, fail, json_option
from data_owner.config import BATCH_SIZE, EVAL_EVERY, PATIENCE, TEACHER_EPOCHS


def train_teacher(
    dataset: DatasetOption,
    model: Annotated[Family, typer.Option(help="base model family")] = Family.bpr,
    dim: Annotated[int, typer.Option(min=1, help="embedding width")] = 64,
    hidden: Annotated[str | None, typer.Option(help="NeuMF MLP widths, comma-separated")] = None,
    reg: Annotated[float | None, typer.Option(min=0.0, help="L2 weight on the batch embeddings")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = TEACHER_EPOCHS,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1)] = BATCH_SIZE,
    patience: Annotated[int, typer.Option(min=0, help="evaluations without gain before stopping")] = PATIENCE,
    eval_every: Annotated[int, typer.Option(min=1)] = EVAL_EVERY,
    metric: Annotated[Metric, typer.Option(help="validation metric for model selection")] = Metric.ndcg,
    pretrain: Annotated[bool, typer.Option(help="NeuMF: train its GMF and MLP branches alone first (NCF "
                                                "pre-training), then NeuMF from them")] = False,
    pretrain_json: Annotated[str | None, typer.Option(
        help="pre-training settings (implies --pretrain): {\"alpha\": 0.5, \"gmf_reg\": ..., \"mlp_reg\": ..., "
             "\"finetune_lr\": ...}")] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="overrides GDREC_DATA_DIR")] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint directory")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train a teacher on the raw training split, select the epoch on validation, report validation and test."""
    from data_owner.config import Pretraining
    from data_owner.teacher_trial import train_teacher_trial
    from shared.training import TrainConfig

    try:
        pretraining = Pretraining(**json_option(pretrain_json, "pretrain-json")) if pretrain or pretrain_json else None
    except (TypeError, ValueError) as exc:  # an unknown key or a bad value
        raise fail(f"--pretrain-json: {exc}") from None
    train_config = TrainConfig(epochs=epochs, lr=lr, patience=patience, eval_every=eval_every, metric=metric.value,
                               seed=seed, progress=progress)
    try:
        trial = train_teacher_trial(dataset, model.value, train_config, dim=dim, hidden=hidden, reg=reg,
                                    batch_size=batch_size, device=device, data_dir=data_dir, pretrain=pretraining,
                                    out=out)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise fail(str(exc)) from None
    summary = trial.summary
    typer.echo(f"\n{trial.split.summary()}")
    typer.echo(
        f"{model.value} {summary['config']}: {summary['num_parameters']:,} parameters, best epoch "
        f"{summary['best_epoch']} of {summary['epochs_run']}, {summary['train_seconds']} s on {summary['device']}"
    )
    typer.echo(f"{'':10}{'HR@50':>8}{'NDCG@50':>9}")
    for part in ("valid", "test"):
        metrics = summary[part]
        typer.echo(f"{part:10}{metrics['HR@50']:8.4f}{metrics['NDCG@50']:9.4f}")
    typer.echo(f"checkpoint: {trial.out}")
