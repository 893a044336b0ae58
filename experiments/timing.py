"""`gdrec-lab timing`: fig3's inference times of T / M / S measured in one run, on an otherwise idle machine.

The runner times each cell's model once, right after training it, so its timings come from hours apart and from
whatever else the machine was doing then. This command builds the teacher and the students at each fraction of
its parameters, with the architectures the runner trains (`data_owner.config`, `shared.models.config_at_fraction`)
at the dataset's user and item counts, and times one full-ranking batch of each in interleaved rounds (T, M, S,
T, M, S, ... with the order rotated every round), so a burst of load hits every size alike. The weights are random:
the time of `score_all` does not depend on their values. One JSONL row per (model, size) is appended to `--out`
(by default `reports/<dataset>/inference.jsonl`), all rows of one call sharing one `run` stamp; `gdrec-lab report`
draws fig3 from the latest run per model found there."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from data_owner.config import teacher_from_fields, teacher_preset
from experiments import lab
from experiments.grid import dataset_slug
from experiments.measures import machine_info
from experiments.results import TimingRow
from shared.device import resolve_device, synchronize
from shared.models import build_model, config_at_fraction


def sized_models(dataset: str, family: str, n_users: int, n_items: int, fractions: list[float],
                 teacher: dict[str, Any] | None = None, seed: int = 0) -> dict[float, torch.nn.Module]:
    """{1.0: the teacher, fraction: the student at that share of its parameters} with random weights; `teacher` is
    the runner's `--teacher-json` override ({"model": {...}, ...}), None for the preset."""
    settings = teacher_from_fields(dataset, family, teacher) if teacher else teacher_preset(dataset, family)
    reference = dict(settings.model)
    configs = {1.0: reference}
    for fraction in fractions:
        configs[fraction] = config_at_fraction(family, reference, n_users, n_items, fraction).config
    init = torch.Generator().manual_seed(seed)
    return {fraction: build_model(family, n_users, n_items, generator=init, **config)
            for fraction, config in configs.items()}


@torch.no_grad()
def interleaved_seconds(models: dict[float, torch.nn.Module], batch_users: int, rounds: int,
                        device: torch.device) -> dict[float, list[float]]:
    """Wall seconds of one `score_all` over the first `batch_users` users, per model and round; each model is
    called once untimed first, and round r times the models in the order rotated by r."""
    order = list(models)
    users = {size: torch.arange(min(batch_users, model.n_users), device=device) for size, model in models.items()}
    for size, model in models.items():
        model.to(device).eval()
        model.score_all(users[size])
    synchronize(device)
    seconds: dict[float, list[float]] = {size: [] for size in order}
    for r in range(rounds):
        shift = r % len(order)
        for size in order[shift:] + order[:shift]:
            started = time.perf_counter()
            models[size].score_all(users[size])
            synchronize(device)
            seconds[size].append(time.perf_counter() - started)
    return seconds


def timing_rows(dataset: str, family: str, seconds: dict[float, list[float]], models: dict[float, torch.nn.Module],
                batch_users: int, machine: dict[str, Any], run: str) -> list[dict[str, Any]]:
    teacher = seconds[1.0]
    rows = []
    for size, found in seconds.items():
        # paired per round: this size's time over the teacher's in the same round (load bursts cancel)
        ratio = float(np.median(np.asarray(found) / np.asarray(teacher)))
        rows.append(TimingRow(dataset=dataset, family=family, fraction=size,
                              params=sum(p.numel() for p in models[size].parameters()),
                              batch_users=int(min(batch_users, models[size].n_users)), rounds=len(found),
                              seconds=found, median_seconds=float(np.median(found)), ratio_to_teacher=ratio,
                              machine=machine, run=run).to_dict())
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | size | params | median ms | min-max ms | time / teacher's (median of rounds) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ms = 1e3 * np.asarray(r["seconds"])
        lines.append(f"| {r['family']} | {r['fraction']:.0%} | {r['params']:,} | {1e3 * r['median_seconds']:.1f} | "
                     f"{ms.min():.1f}-{ms.max():.1f} | {r['ratio_to_teacher']:.2f} |")
    return "\n".join(lines)


def timing_command(
    dataset: Annotated[str, typer.Option(help="registry name (ml-100k, citeulike-t, foursquare) or a data file")],
    models: Annotated[str, typer.Option(help="comma-separated: bpr,neumf")] = "bpr,neumf",
    fractions: Annotated[str, typer.Option(help="student sizes as fractions of the teacher")] = "0.5,0.3",
    batch_users: Annotated[int, typer.Option(min=1, help="users per full-ranking batch")] = 256,
    rounds: Annotated[int, typer.Option(min=1, help="timed calls per model")] = 20,
    teacher_json: Annotated[str | None, typer.Option(
        help='teacher override {"model": {...}} as given to `gdrec-lab run` (default: the owner\'s preset)')] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    out: Annotated[Path | None, typer.Option(
        help="JSONL to append the rows to (default reports/<dataset>/inference.jsonl)")] = None,
) -> None:
    """Time one full-ranking batch of the teacher and each student size, interleaved, in one process."""
    try:
        sizes = [float(x) for x in fractions.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--fractions must be comma-separated numbers, got {fractions!r}") from None
    if not sizes or not all(0 < size < 1 for size in sizes):
        raise typer.BadParameter(f"--fractions must be student sizes between 0 and 1 (e.g. 0.5,0.3), got {fractions!r}")
    families = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(families) - {"bpr", "neumf"})
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {', '.join(unknown)}; choose from bpr, neumf")
    try:
        teacher = json.loads(teacher_json) if teacher_json else None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--teacher-json is not valid JSON ({exc})") from None
    if teacher is not None and not isinstance(teacher.get("model") if isinstance(teacher, dict) else None, dict):
        raise typer.BadParameter('--teacher-json needs a "model" object, e.g. {"model": {"dim": 64, "reg": 0.01}}')
    split = lab.load_split(dataset)
    target = out or Path("reports") / dataset_slug(dataset) / "inference.jsonl"
    torch_device = resolve_device(device)
    machine = machine_info(torch_device)
    run = datetime.now(UTC).isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    for family in families:
        try:
            built = sized_models(dataset, family, split.n_users, split.n_items, sizes, teacher)
        except (TypeError, ValueError) as exc:  # a --teacher-json the model does not take, or no size that fits
            raise typer.BadParameter(f"{family}: {exc}") from None
        seconds = interleaved_seconds(built, batch_users, rounds, torch_device)
        rows += timing_rows(dataset, family, seconds, built, batch_users, machine, run)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    typer.echo(f"{dataset}: full ranking of {batch_users} users, {rounds} interleaved rounds on "
               f"{machine.get('gpu') or machine.get('cpu')} ({machine['device']}, {machine['torch_threads']} threads)")
    typer.echo(render_table(rows))
    typer.echo(f"appended {len(rows)} rows to {target}")
