"""`gdrec-lab gd`: the whole GD-REC chain in one process, for research (the services reuse the same code).

KD teacher (raw data) -> CGAN -> generated lists -> GD teacher (raw + generated) -> export -> GD student (from
the export alone) and, for reference, the same-size student trained on raw data. Prints one table: HR@50 /
NDCG@50 on the owner's held-out test items, parameter counts and wall time per stage."""

from __future__ import annotations

import json
import logging
import secrets
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from data_owner.data import LeaveOneOutSplit, leave_one_out_split, load_dataset
from data_owner.export import build_export, user_token
from data_owner.gan import CGANConfig, generated_lists, generator_scorer, train_cgan
from data_owner.teacher import DEFAULT_KS, continue_on_generated, test_result, train_base_model
from experiments.presets import teacher_preset
from model_consumer.distill import DistillConfig, distill_student
from shared.device import resolve_device
from shared.evaluation import evaluate
from shared.models import config_at_fraction
from shared.training import TrainConfig

log = logging.getLogger("gdrec.lab")
app = typer.Typer(help="GD-REC research harness (raw data, in-process).", no_args_is_help=True,
                  add_completion=False)


@dataclass(frozen=True)
class ChainConfig:
    dataset: str
    family: str = "bpr"
    fraction: float = 0.5
    seed: int = 0
    list_length: int = 50
    include_observed: bool = True
    temperature: float = 2.0
    lam: float = 0.7
    teacher_epochs: int = 300
    gd_epochs: int = 100
    student_epochs: int = 200
    patience: int = 6
    eval_every: int = 5
    cgan: CGANConfig = field(default_factory=CGANConfig)
    teacher: dict[str, Any] | None = None  # {"model": {...}, "lr": ...}; None: experiments.presets
    batch_size: int = 1000
    device: str = "auto"
    progress: bool = True


@dataclass
class Row:
    name: str
    params: int
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    note: str = ""


def _split(dataset: str) -> LeaveOneOutSplit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # file-order split: stated in README
        return leave_one_out_split(load_dataset(dataset))


def _eval_pair(score_all, split: LeaveOneOutSplit, device, users_map: np.ndarray | None = None):
    """Validation and test metrics of a scorer over the owner's users (users_map: owner user -> scorer row)."""
    users = split.eval_users

    def scored(batch: torch.Tensor) -> torch.Tensor:  # evaluate passes owner ids; translate to scorer rows
        return score_all(batch if users_map is None else torch.as_tensor(users_map[batch.cpu().numpy()],
                                                                        device=batch.device))

    valid = evaluate(scored, users, split.valid_item[users], [split.train], ks=DEFAULT_KS, device=device)
    test = evaluate(scored, users, split.test_item[users], [split.train], [split.valid_item], ks=DEFAULT_KS,
                    device=device)
    return valid.metrics, test.metrics


def run_chain(config: ChainConfig) -> tuple[list[Row], dict[str, Any]]:
    device = resolve_device(config.device)
    split = _split(config.dataset)
    preset = config.teacher or teacher_preset(config.dataset, config.family)
    rows: list[Row] = []
    info: dict[str, Any] = {"split": split.summary(), "device": str(device)}

    def train_config(epochs: int, lr: float) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=lr, patience=config.patience, eval_every=config.eval_every,
                           seed=config.seed, progress=config.progress)

    # 1. KD teacher on raw data (L_CF)
    torch.manual_seed(config.seed)
    kd = train_base_model(split, config.family, preset["model"], train_config(config.teacher_epochs, preset["lr"]),
                          batch_size=config.batch_size, device=device)
    rows.append(Row("Teacher (KD: raw data)", kd.model.num_parameters(), kd.valid, kd.test, kd.train.seconds))

    # 2. CGAN, selected on validation HR@50 of GF_u used as a recommender
    cgan_config = replace(config.cgan, seed=config.seed, progress=config.progress)
    users = split.eval_users

    def cgan_valid(G) -> float:
        scorer = generator_scorer(G, split.train, seed=config.seed)
        return evaluate(scorer, users, split.valid_item[users], [split.train], ks=(50,), device=device)["HR@50"]

    started = time.perf_counter()
    gan = train_cgan(split.train, cgan_config, validate=cgan_valid, device=device)
    g_valid, g_test = _eval_pair(generator_scorer(gan.generator, split.train, config.seed), split, device)
    g_params = sum(p.numel() for p in gan.generator.parameters())
    rows.append(Row("CGAN generator as a recommender", g_params, g_valid, g_test, time.perf_counter() - started,
                    f"best epoch {gan.best_epoch}, {gan.seconds_per_epoch:.2f} s/epoch"))
    info["cgan_seconds_per_epoch"] = gan.seconds_per_epoch
    info["cgan_best_epoch"] = gan.best_epoch

    # 3. generated lists
    lists = generated_lists(gan.generator, split.train, config.list_length, config.include_observed,
                            seed=config.seed)
    info["observed_share"] = lists.observed_share(split.train)

    # 4. GD teacher (L_T = L_CF + L_GF)
    gd = continue_on_generated(kd.model, split, lists.as_item_sets(), train_config(config.gd_epochs, preset["lr"]),
                               batch_size=config.batch_size)
    rows.append(Row("Teacher (GD: raw + generated)", gd.model.num_parameters(), gd.valid, gd.test,
                    gd.train.seconds))

    # 5. export (what would cross the boundary), 6. GD student from the export alone
    secret = secrets.token_bytes(32)
    export = build_export(gd.model, lists, split.user_ids, split.item_ids, config.temperature, secret, "lab")
    student = distill_student(
        export,
        DistillConfig(fraction=config.fraction, lam=config.lam, epochs=config.student_epochs, lr=preset["lr"],
                      batch_size=config.batch_size,
                      patience=config.patience, eval_every=config.eval_every, seed=config.seed,
                      progress=config.progress),
        device=device,
    )
    token_row = {token: k for k, token in enumerate(student.tokens)}
    users_map = np.array([token_row[user_token(secret, "lab", str(uid))] for uid in split.user_ids])
    s_valid, s_test = _eval_pair(student.model.score_all, split, device, users_map)
    rows.append(Row(f"GD student ({config.fraction:.0%}, data-free)", student.model.num_parameters(), s_valid,
                    s_test, student.train.seconds, f"lambda {config.lam}, t {config.temperature}"))

    # 7. reference: the same-size student trained on raw data
    sized = config_at_fraction(config.family, preset["model"], split.n_users, split.n_items, config.fraction)
    raw_student = train_base_model(split, config.family, sized.config,
                                   train_config(config.teacher_epochs, preset["lr"]), batch_size=config.batch_size,
                                   device=device)
    rows.append(Row(f"Student ({config.fraction:.0%}, raw data)", raw_student.model.num_parameters(),
                    raw_student.valid, raw_student.test, raw_student.train.seconds))
    info["kd_teacher_test"] = test_result(kd.model, split).metrics["HR@50"]
    return rows, info


def render(rows: list[Row], info: dict[str, Any], config: ChainConfig) -> str:
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


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def gd(
    dataset: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option(help="bpr or neumf")] = "bpr",
    fraction: Annotated[float, typer.Option(min=0.01, max=1.0)] = 0.5,
    seed: Annotated[int, typer.Option()] = 0,
    list_length: Annotated[int, typer.Option(min=1)] = 50,
    include_observed: Annotated[bool, typer.Option(help="may a user's own items appear in their list")] = True,
    temperature: Annotated[float, typer.Option(min=1e-3)] = 2.0,
    lam: Annotated[float, typer.Option(min=0.0)] = 0.7,
    cgan_epochs: Annotated[int, typer.Option(min=1)] = 200,
    cgan_json: Annotated[str | None, typer.Option(help="CGANConfig fields as JSON")] = None,
    device: Annotated[str, typer.Option()] = "auto",
    out: Annotated[Path | None, typer.Option(help="write the rows as JSON here")] = None,
    progress: Annotated[bool, typer.Option()] = True,
) -> None:
    """Run the whole chain in-process and print the table."""
    cgan_fields = json.loads(cgan_json) if cgan_json else {}
    for key in ("hidden_g", "hidden_d"):
        if key in cgan_fields:
            cgan_fields[key] = tuple(cgan_fields[key])
    config = ChainConfig(dataset=dataset, family=model, fraction=fraction, seed=seed, list_length=list_length,
                         include_observed=include_observed, temperature=temperature, lam=lam,
                         cgan=CGANConfig(**{"epochs": cgan_epochs, **cgan_fields}), device=device,
                         progress=progress)
    rows, info = run_chain(config)
    typer.echo(render(rows, info, config))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": {**asdict(config), "cgan": asdict(config.cgan)}, "info": info,
                   "rows": [asdict(r) for r in rows]}
        out.write_text(json.dumps(payload, indent=2, default=str))


def main() -> None:
    app()
