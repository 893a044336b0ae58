"""`gdrec-owner`: the data owner's command line (teacher training now; CGAN, export and serving to come)."""

from __future__ import annotations

import json
import logging
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="GD-REC data owner: trains on raw interactions, exports only what may cross.",
    no_args_is_help=True,
    add_completion=False,
)
log = logging.getLogger("gdrec.owner")


class Family(StrEnum):
    bpr = "bpr"
    neumf = "neumf"


class Metric(StrEnum):
    ndcg = "NDCG@50"
    hr = "HR@50"


def teacher_config(family: Family, dim: int, hidden: str | None, reg: float | None) -> dict[str, Any]:
    """Architecture config from CLI flags. NeuMF: both embedding branches `dim` wide, MLP `hidden` (default
    "dim,dim/2")."""
    if family is Family.bpr:
        return {"dim": dim, "reg": 1e-4 if reg is None else reg}
    widths = [int(w) for w in hidden.split(",")] if hidden else [dim, max(1, dim // 2)]
    return {"dim_gmf": dim, "dim_mlp": dim, "hidden": widths, "reg": 1e-5 if reg is None else reg}


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command("train-teacher")
def train_teacher(
    dataset: Annotated[str, typer.Option(help="dataset name (ml-100k, citeulike-t, foursquare) or a file path")],
    model: Annotated[Family, typer.Option(help="base model family")] = Family.bpr,
    dim: Annotated[int, typer.Option(min=1, help="embedding width")] = 64,
    hidden: Annotated[str | None, typer.Option(help="NeuMF MLP widths, comma-separated")] = None,
    reg: Annotated[float | None, typer.Option(min=0.0, help="L2 weight on the batch embeddings")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 300,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1)] = 1000,
    patience: Annotated[int, typer.Option(min=0, help="evaluations without gain before stopping")] = 6,
    eval_every: Annotated[int, typer.Option(min=1)] = 5,
    metric: Annotated[Metric, typer.Option(help="validation metric for model selection")] = Metric.ndcg,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:n]")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="overrides GDREC_DATA_DIR")] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint directory")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train a teacher on the raw training split, select the epoch on validation, report validation and test."""
    import torch

    from data_owner.data import leave_one_out_split, load_dataset
    from data_owner.teacher import train_base_model
    from shared.checkpoint import save_checkpoint
    from shared.device import resolve_device
    from shared.training import TrainConfig

    started = time.perf_counter()
    try:
        table = load_dataset(dataset, data_dir=data_dir)
        split = leave_one_out_split(table)
        resolved = resolve_device(device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    config = teacher_config(model, dim, hidden, reg)
    train_config = TrainConfig(
        epochs=epochs,
        lr=lr,
        patience=patience,
        eval_every=eval_every,
        metric=metric.value,
        seed=seed,
        progress=progress,
    )
    torch.manual_seed(seed)
    run = train_base_model(split, model.value, config, train_config, batch_size=batch_size, device=resolved)
    name = Path(dataset).stem if Path(dataset).exists() else dataset
    out = out or Path("artifacts") / "teachers" / f"{name}-{model.value}-d{dim}-s{seed}"
    summary = {
        "dataset": name,
        "model": model.value,
        "config": config,
        "num_parameters": run.model.num_parameters(),
        "best_epoch": run.train.best_epoch,
        "epochs_run": run.train.epochs_run,
        "valid": run.valid,
        "test": run.test,
        "train_seconds": round(run.train.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "device": str(resolved),
        "seed": seed,
    }
    save_checkpoint(
        out,
        run.model,
        {**summary, "item_ids": [str(i) for i in split.item_ids], "user_ids": [str(u) for u in split.user_ids]},
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    typer.echo(f"\n{split.summary()}")
    typer.echo(
        f"{model.value} {config}: {summary['num_parameters']:,} parameters, best epoch "
        f"{run.train.best_epoch} of {run.train.epochs_run}, {summary['train_seconds']} s on {resolved}"
    )
    typer.echo(f"{'':10}{'HR@50':>8}{'NDCG@50':>9}")
    for part in ("valid", "test"):
        metrics = summary[part]
        typer.echo(f"{part:10}{metrics['HR@50']:8.4f}{metrics['NDCG@50']:9.4f}")
    typer.echo(f"checkpoint: {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
