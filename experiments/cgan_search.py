"""`gdrec-cgan-search`: tune the CGAN on the validation item (on sparse data the generator is the crux of GD-REC).

Each candidate is a set of CGANConfig fields (JSON) laid over a base (the dataset's CGAN preset, then --base). It
trains on the owner's training interactions; every `eval_every` epochs GF_u is scored as a recommender on each
user's validation item (HR@50, training items excluded), the best generator is kept (early stopping after
`patience` stale checks), and one JSONL row is appended with the candidate, its validation and test HR/NDCG, the
validation history, the seconds per epoch and the machine. Rerunning the same command skips finished candidates
(rows are keyed by dataset, seed and the full config), so a long search resumes where it stopped. Select on
validation; the test column is printed for information only.

    GDREC_DATA_DIR=../shared/datasets gdrec-cgan-search --dataset citeulike-t \\
        --base '{"batch_size": 256, "g_steps": 1, "d_steps": 1, "mask_sampling": "per_batch", "epochs": 40}' \\
        --try '{"lr_g": 5e-4, "lr_d": 5e-4}' --try '{"lr_g": 5e-4, "lr_d": 5e-4, "l2_g": 1e-4}'
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from data_owner.config import cgan_preset
from data_owner.gan import CGANConfig, generator_scorer, train_cgan
from data_owner.stages import cgan_validator
from experiments.grid import dataset_identity, dataset_slug, digest
from experiments.lab import configure_logging, evaluate_scorer, load_split, run_cli
from experiments.measures import machine_info
from experiments.results import ResultsFile
from shared.device import resolve_device

log = logging.getLogger("gdrec.cgan_search")
app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])

def parse_config(text: str, base: CGANConfig, where: str = "--try") -> CGANConfig:
    try:
        return base.with_json(text, option=where)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def candidate_key(dataset: str, config: CGANConfig) -> str:
    return digest({"dataset": dataset_identity(dataset), "cgan": config.identity()})


def run_candidate(split, config: CGANConfig, device) -> dict[str, Any]:
    """Train one CGAN, selected as the owner's chain selects it (`data_owner.stages.cgan_validator`: validation
    HR@50 of GF_u); the best generator's validation and test metrics."""
    started = time.perf_counter()
    gan = train_cgan(split.train, config, validate=cgan_validator(split, config.seed, device), device=device)
    valid, test = evaluate_scorer(generator_scorer(gan.generator, split.train, config.seed), split, device)
    return {"best_epoch": gan.best_epoch, "epochs_run": len(gan.history), "valid": valid, "test": test,
            "seconds": time.perf_counter() - started, "seconds_per_epoch": gan.seconds_per_epoch,
            "history": [{k: r[k] for k in ("epoch", "loss_d", "loss_g", "valid") if k in r} for r in gan.history]}


@app.command()
def search(
    dataset: Annotated[str, typer.Option(help="registry name (ml-100k, citeulike-t, ...) or a data file")],
    tries: Annotated[list[str], typer.Option("--try", help="CGANConfig fields as JSON, over --base (repeatable)")],
    base: Annotated[str, typer.Option(help="CGANConfig fields as JSON shared by every candidate")] = "{}",
    seed: Annotated[int, typer.Option()] = 0,
    results: Annotated[Path | None, typer.Option(help="JSONL rows (default runs/<dataset>/cgan-search.jsonl)")]
    = None,
    device: Annotated[str, typer.Option()] = "auto",
    progress: Annotated[bool, typer.Option()] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train each candidate CGAN (skipping finished ones) and print a table ranked by validation HR@50."""
    configure_logging(verbose)
    base_config = parse_config(base, replace(cgan_preset(dataset), seed=seed, progress=progress), where="--base")
    candidates = [parse_config(text, base_config) for text in tries]
    out = ResultsFile(results or Path("runs") / dataset_slug(dataset) / "cgan-search.jsonl")
    torch_device = resolve_device(device)
    split = load_split(dataset)
    done = {row["key"]: row for row in out.rows()}
    for config, text in zip(candidates, tries, strict=True):
        key = candidate_key(dataset, config)
        if key in done:
            typer.echo(f"skip (finished): {text}")
            continue
        typer.echo(f"train: {text}")
        row = {"key": key, "dataset": dataset, "seed": seed, "try": json.loads(text), "cgan": config.identity(),
               **run_candidate(split, config, torch_device), "machine": machine_info(torch_device),
               "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        out.append(row)
        done[key] = row
    rows = sorted((done[candidate_key(dataset, c)] for c in candidates), key=lambda r: -r["valid"]["HR@50"])
    typer.echo(f"\n# CGAN search, {dataset}, seed {seed} (GF_u as a recommender; selected on validation)\n")
    typer.echo("| candidate | best epoch / run | valid HR@50 | test HR@50 | test NDCG@50 | s/epoch |")
    typer.echo("|---|---|---|---|---|---|")
    for row in rows:
        typer.echo(f"| `{json.dumps(row['try'])}` | {row['best_epoch']} / {row['epochs_run']} "
                   f"| {row['valid']['HR@50']:.4f} | {row['test']['HR@50']:.4f} | {row['test']['NDCG@50']:.4f} "
                   f"| {row['seconds_per_epoch']:.1f} |")


def main() -> None:
    run_cli(app)


if __name__ == "__main__":
    main()
