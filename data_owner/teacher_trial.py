"""One teacher trained alone on the raw training split (for choosing hyperparameters): its architecture config from
a few widths, training with selection on validation, and a checkpoint with a JSON summary."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_owner.config import Pretraining
from data_owner.data import LeaveOneOutSplit, leave_one_out_split, load_dataset
from data_owner.teacher import train_base_model
from shared.checkpoint import save_checkpoint
from shared.device import resolve_device
from shared.training import TrainConfig


def teacher_config(family: str, dim: int, hidden: str | None, reg: float | None) -> dict[str, Any]:
    """Architecture config of a teacher family ("bpr" or "neumf"). BPR: `dim` wide, reg 1e-4 by default. NeuMF: both
    embedding branches `dim` wide, MLP `hidden` (comma-separated widths, default "dim,dim/2"), reg 1e-5 by
    default."""
    if family == "bpr":
        return {"dim": dim, "reg": 1e-4 if reg is None else reg}
    widths = [int(w) for w in hidden.split(",")] if hidden else [dim, max(1, dim // 2)]
    return {"dim_gmf": dim, "dim_mlp": dim, "hidden": widths, "reg": 1e-5 if reg is None else reg}


def dataset_name(dataset: str) -> str:
    """A dataset's short name: the stem of a file path, or the registered name itself."""
    return Path(dataset).stem if Path(dataset).exists() else dataset


@dataclass(frozen=True)
class TeacherTrial:
    """A trained teacher: the split it saw, its summary (config, metrics, timings) and its checkpoint folder."""

    split: LeaveOneOutSplit
    summary: dict[str, Any]
    out: Path


def train_teacher_trial(
    dataset: str,
    family: str,
    train_config: TrainConfig,
    *,
    dim: int,
    hidden: str | None = None,
    reg: float | None = None,
    batch_size: int,
    device: str = "auto",
    data_dir: Path | None = None,
    pretrain: Pretraining | None = None,
    out: Path | None = None,
) -> TeacherTrial:
    """Train a `family` teacher on `dataset`'s leave-one-out training split, select its epoch on validation, and save
    the checkpoint (with the id maps) and `summary.json` under `out` (default
    artifacts/teachers/<name>-<family>-d<dim>-s<seed>). Raises FileNotFoundError, ValueError or RuntimeError for a
    missing dataset, a bad config or an unavailable device."""
    started = time.perf_counter()
    split = leave_one_out_split(load_dataset(dataset, data_dir=data_dir))
    resolved = resolve_device(device)
    config = teacher_config(family, dim, hidden, reg)
    run = train_base_model(split, family, config, train_config, batch_size=batch_size, device=resolved,
                           pretrain=pretrain)
    name = dataset_name(dataset)
    out = out or Path("artifacts") / "teachers" / f"{name}-{family}-d{dim}-s{train_config.seed}"
    summary = {
        "dataset": name,
        "model": family,
        "config": config,
        "num_parameters": run.model.num_parameters(),
        "best_epoch": run.train.best_epoch,
        "epochs_run": run.train.epochs_run,
        "valid": run.valid,
        "test": run.test,
        "train_seconds": round(run.train.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "device": str(resolved),
        "seed": train_config.seed,
        "pretrain": None if pretrain is None else {**asdict(pretrain), "branches": run.extra["pretrain"]},
    }
    save_checkpoint(
        out,
        run.model,
        {**summary, "item_ids": [str(i) for i in split.item_ids], "user_ids": [str(u) for u in split.user_ids]},
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return TeacherTrial(split=split, summary=summary, out=out)
