"""One teacher trained alone on the raw training split (for choosing hyperparameters): its architecture config from
a few widths, or from the teacher's own search on the validation item (`data_owner.tuning`), training with selection
on validation, and a checkpoint with a JSON summary.

Under `torchrun` every rank trains its share of each batch (`shared.training`); rank 0 alone writes the checkpoint
and the summary, and the other ranks return once it has."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from data_owner.config import Pretraining, TeacherTuning, teacher_preset
from data_owner.data import DATASETS, LeaveOneOutSplit, leave_one_out_split, load_dataset
from data_owner.teacher import train_base_model
from data_owner.tuning import TuningResult, tune_teacher
from shared import distributed
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
    """A dataset's short name, unique per dataset: a registered name itself; for a file path its stem and the first 8
    hex digits of the sha256 of its resolved path (two `users.dat` in two folders get two names)."""
    path = Path(dataset).expanduser()
    if dataset in DATASETS or not path.exists():
        return dataset
    resolved = str(path.resolve())
    return f"{path.stem}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class TeacherTrial:
    """A trained teacher: the split it saw, its summary (config, metrics, timings), its checkpoint folder, and the
    search that chose its settings (None: they were given)."""

    split: LeaveOneOutSplit
    summary: dict[str, Any]
    out: Path
    tuning: TuningResult | None = None


def train_teacher_trial(
    dataset: str,
    family: str,
    train_config: TrainConfig,
    *,
    dim: int = 64,
    hidden: str | None = None,
    reg: float | None = None,
    batch_size: int,
    device: str = "auto",
    data_dir: Path | None = None,
    pretrain: Pretraining | None = None,
    out: Path | None = None,
    tuning: TeacherTuning | None = None,
    optimizer: str = "adam",
) -> TeacherTrial:
    """Train a `family` teacher on `dataset`'s leave-one-out training split, select its epoch on validation, and save
    the checkpoint (with the id maps) and `summary.json` under `out` (default
    artifacts/teachers/<name>-<family>-d<dim>-s<seed>, `name` from `dataset_name`). With `tuning`, the architecture
    and the learning rate come from the search on the validation item (`data_owner.tuning`, starting from the
    dataset's preset or the family's default; `dim`, `hidden`, `reg` and `train_config.lr` are not used) and the
    summary holds its report. `optimizer`: "adam" or "sgd" (BPR's per-triple SGD; one process). Raises
    FileNotFoundError, ValueError or RuntimeError for a missing dataset, a bad config or an unavailable device."""
    started = time.perf_counter()
    split = leave_one_out_split(load_dataset(dataset, data_dir=data_dir))
    resolved = resolve_device(device)
    tuned, negatives = None, "uniform"
    if tuning is not None:
        if distributed.is_active():
            raise ValueError("the teacher's settings search runs in one process (its time budget would end the trials "
                             "at different points on different ranks): run it without torchrun, or give the settings "
                             "(--dim, --lr, ... or --no-tune) to train them under torchrun")
        if pretrain is not None:
            raise ValueError("tuning trains its trials without NCF pre-training; tune or pre-train, not both")
        tuned = tune_teacher(split, teacher_preset(dataset, family, optimizer), tuning, train_config,
                             batch_size=batch_size, device=resolved)
        config, train_config = dict(tuned.settings.model), replace(train_config, lr=tuned.settings.lr)
        negatives = tuned.settings.negatives
        dim = int(config["dim"] if family == "bpr" else config["dim_gmf"])
    else:
        config = teacher_config(family, dim, hidden, reg)
    run = train_base_model(split, family, config, train_config, batch_size=batch_size, device=resolved,
                           pretrain=pretrain, optimizer=optimizer, negatives=negatives)
    name = dataset_name(dataset)
    out = out or Path("artifacts") / "teachers" / f"{name}-{family}-d{dim}-s{train_config.seed}"
    summary = {
        "dataset": name,
        "model": family,
        "config": config,
        "lr": train_config.lr,
        "optimizer": optimizer,
        "negatives": negatives,
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
        "tuning": None if tuned is None else tuned.to_dict(),
        "processes": distributed.world_size(),  # data-parallel ranks (torchrun); 1: one process
    }

    def write() -> None:
        save_checkpoint(
            out,
            run.model,
            {**summary, "item_ids": [str(i) for i in split.item_ids], "user_ids": [str(u) for u in split.user_ids]},
        )
        (out / "summary.json").write_text(json.dumps(summary, indent=2))

    distributed.on_main(write)
    return TeacherTrial(split=split, summary=summary, out=out, tuning=tuned)
