"""`gdrec-privacy`: the privacy-utility report (ALGORITHMS.md section 5) for one dataset and base model. This module
is its command line; the settings and row keys, the sweep, the summary and the rendering are in experiments.privacy.

For each list generator family (`--generators`, by default the paper's CGAN alone; others take their settings
from `--generator-json`), each privacy setting (by default: the paper's default, exclude-observed, and randomized
response at epsilon 1, 2, 4, 8) and each seed, the GD chain of `experiments.lab` runs in-process: KD teacher -> list
generator -> generated lists -> GD teacher -> export -> data-free GD student. Each finished (family, setting, seed)
becomes one JSONL row holding

    the GD student's HR/NDCG@{5,10,20,50} on the owner's true validation and test items (training items excluded),
    the leakage report of that setting's export against the owner's TRUE training interactions
    (`data_owner.privacy.leakage_report`: reconstruction precision / recall, subset share, membership AUC and
    TPR at 1% FPR of the soft targets), with the popularity top-L and raw-history reference rows,
    the KD / GD teachers' and the generator's own test numbers, the share of listed items that are the user's own
    training items, the chain's settings, the machine and the seconds it took.

A setting's audited export is the very bundle `lab.train_gd_student` distilled its student from (returned in the
stage's extra; the lab's export key, consumer "lab"). Within one seed,
settings that share the KD teacher's owner stage key (`data_owner.pipeline.stage_keys`: the same `rr_epsilon`)
share the KD teacher, and those of one family that also share its generator's key share the generator
(exclude-observed only changes how lists are drawn from it); nothing else is shared. A CGAN row is keyed and named
as it always was; a row of another family names it (`itemknn:exclude-observed`; "generator" in its setting and in
its generator record) and is keyed by its family's generator settings.

Resuming: rows are appended (flushed and fsync'ed) to --results as each (setting, seed) finishes; rerunning the same
command skips every row whose key (setting, seed and every chain setting it depends on) is already there, so an
interrupted sweep continues where it stopped and a widened one (more seeds, another epsilon) runs only what is new.
Stages are not cached on disk: a setting interrupted mid-chain restarts from its KD teacher.

The report (`privacy.md`, `privacy.png`) is rendered from the rows whose keys belong to the current command: means
over seeds, requested settings without a row printed as "not run", membership cells without members printed as
such; nothing is filled in. It ends with the leakage target, checked from those rows: does any control bring
reconstruction precision within 2x of the popularity reference while the GD student keeps >= 80% of the default
setting's test HR@50? The default is the paper's mode (the CGAN, own items allowed, no randomized response); the
settings of other families are controls beside it. With a family other than the CGAN the report also has "Leakage by
list generator": per (family, include / exclude observed), utility, reconstruction, the share of own items in the
lists and membership AUC beside the reference rows.

`--report-only` renders privacy.md and privacy.png from the rows without training. It needs the same chain options
as the run (epochs, CGAN, teacher, L, t, lambda, fraction), since rows are matched by key. A row's key also holds
the GD student's sampler revision (`shared.distillation.SAMPLER_REVISION`; revision 1 is keyed without it), and
the report takes, per (family, setting, seed), the row of the newest revision there is: a run redoes the rows of an
older revision, while `--report-only` renders committed rows as they are and says how many are of an older revision.

A real sweep (from the repository root; rows, markdown and plot land in reports/ml-100k/):

    gdrec-privacy --dataset ml-100k --model bpr --seeds 0,1,2 --cgan-epochs 100 -v
    gdrec-privacy --dataset ml-100k --seeds 0,1 --cgan-epochs 50 --generators cgan,itemknn,ease \
        --settings default,exclude-observed -v
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from data_owner.config import (
    BATCH_SIZE,
    CGAN_EPOCHS,
    EVAL_EVERY,
    GD_EPOCHS,
    LIST_LENGTH,
    PATIENCE,
    TEACHER_EPOCHS,
    TEMPERATURE,
    RrTrueSizeEpochs,
    cgan_preset,
    teacher_from_fields,
)
from experiments import lab
from experiments.grid import dataset_slug
from experiments.lab import LabConfig
from experiments.presets import GD_LAMBDA, STUDENT_EPOCHS, STUDENT_FRACTION
from experiments.privacy.render import write_report
from experiments.privacy.settings import (
    DEFAULT_GENERATORS,
    DEFAULT_SETTINGS,
    GD_SAMPLER_REVISION,
    parse_generators,
    parse_settings,
    with_generators,
)
from experiments.privacy.summary import CHECK_METRIC, LEAKAGE_BOUND, UTILITY_FLOOR, leakage_target, summarise
from experiments.privacy.sweep import RESULTS_NAME, run_sweep
from experiments.results import read_rows
from shared.options import json_object

app = typer.Typer(help="Privacy-utility report: the GD chain per privacy setting, student utility beside the "
                       "export's leakage.", add_completion=False)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise typer.BadParameter("give at least one seed")
    return values


def default_out_dir(dataset: str) -> Path:
    return Path("reports") / dataset_slug(dataset)


@app.command()
def privacy(
    dataset: Annotated[str, typer.Option(help="registry name (ml-100k, citeulike-t, ...) or a data file")],
    model: Annotated[str, typer.Option(help="bpr or neumf")] = "bpr",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0",
    settings: Annotated[str, typer.Option(
        help="comma-separated privacy settings: default, exclude-observed, rr=EPS, or '+'-joined switches "
             "(exclude-observed+rr=4)")] = DEFAULT_SETTINGS,
    generators: Annotated[str, typer.Option(
        help="comma-separated list generator families (cgan, itemknn, vae, teacher, ease); every setting runs under "
             "each")] = DEFAULT_GENERATORS,
    generator_json: Annotated[str | None, typer.Option(
        help='settings of the families other than the CGAN over their defaults, e.g. {"itemknn": {"ks": [50]}} '
             "(the CGAN's: --cgan-json)")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="privacy.md / privacy.png here (default reports/<dataset>)")]
    = None,
    results: Annotated[Path | None, typer.Option(help="JSONL rows (default <out-dir>/privacy.jsonl)")] = None,
    report_only: Annotated[bool, typer.Option(
        help="render from the existing rows, train nothing (give the run's chain options: rows are matched by key)")]
    = False,
    fraction: Annotated[float, typer.Option(min=0.01, max=1.0, help="GD student size / teacher size")] = (
        STUDENT_FRACTION),
    list_length: Annotated[int, typer.Option(min=1)] = LIST_LENGTH,
    temperature: Annotated[float, typer.Option(min=1e-3)] = TEMPERATURE,
    lam: Annotated[float, typer.Option(min=0.0, max=1.0)] = GD_LAMBDA,
    teacher_epochs: Annotated[int, typer.Option(min=1, help="KD teacher")] = TEACHER_EPOCHS,
    cgan_epochs: Annotated[int, typer.Option(min=1)] = CGAN_EPOCHS,
    gd_epochs: Annotated[int, typer.Option(min=1, help="GD teacher continuation")] = GD_EPOCHS,
    student_epochs: Annotated[int, typer.Option(min=1, help="GD student")] = STUDENT_EPOCHS,
    patience: Annotated[int, typer.Option(min=0)] = PATIENCE,
    eval_every: Annotated[int, typer.Option(min=1)] = EVAL_EVERY,
    batch_size: Annotated[int, typer.Option(min=1)] = BATCH_SIZE,
    cgan_json: Annotated[str | None, typer.Option(help="CGANConfig fields as JSON (epochs: --cgan-epochs)")] = None,
    teacher_json: Annotated[str | None, typer.Option(
        help='teacher override {"model": {...}, "lr": ..., "pretrain": {...} or null} over the owner\'s preset '
             '(data_owner.config)')] = None,
    rr_true_size_epochs: RrTrueSizeEpochs = False,
    device: Annotated[str, typer.Option()] = "auto",
    progress: Annotated[bool, typer.Option()] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run (or continue) the privacy sweep and render privacy.md and privacy.png; a rerun skips finished rows."""
    lab.configure_logging(verbose)
    try:
        chosen = with_generators(parse_settings(settings), parse_generators(generators))
        generator_settings = json_object(generator_json, "--generator-json") if generator_json else {}
        family = model.lower()
        teacher = (teacher_from_fields(dataset, family, json_object(teacher_json, "--teacher-json"))
                   if teacher_json else None)
        base = LabConfig(dataset=dataset, family=family, fraction=fraction, list_length=list_length,
                         temperature=temperature, lam=lam, teacher_epochs=teacher_epochs, gd_epochs=gd_epochs,
                         student_epochs=student_epochs, patience=patience, eval_every=eval_every,
                         cgan=cgan_preset(dataset, cgan_epochs).with_json(cgan_json), teacher=teacher,
                         batch_size=batch_size, device=device, progress=progress,
                         rr_true_size_epochs=rr_true_size_epochs, generator_settings=generator_settings)
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    seed_list = _ints(seeds)
    out = out_dir if out_dir is not None else default_out_dir(dataset)
    rows_path = results if results is not None else out / RESULTS_NAME
    elapsed = None
    if not report_only:
        summary = run_sweep(base, chosen, seed_list, rows_path)
        elapsed = summary.seconds
        typer.echo(f"{summary.total} (setting, seed) rows: {summary.skipped} already finished, {summary.ran} run now; "
                   f"rows in {rows_path}")
    written = write_report(rows_path, out, base, chosen, seed_list, elapsed)
    summaries = summarise(read_rows(rows_path), base, chosen, seed_list)
    older = sorted({r.sampler_revision for s in summaries for r in s.rows} - {GD_SAMPLER_REVISION})
    if older:
        count = sum(r.sampler_revision != GD_SAMPLER_REVISION for s in summaries for r in s.rows)
        typer.echo(f"{count} row(s) hold GD students of sampler revision {', '.join(map(str, older))} (current: "
                   f"{GD_SAMPLER_REVISION}); the same command without --report-only redoes them")
    check = leakage_target(summaries)
    typer.echo(f"leakage target (reconstruction {CHECK_METRIC} within {LEAKAGE_BOUND:g}x popularity, GD student "
               f"HR@50 >= {UTILITY_FLOOR:.0%} of default): {check.verdict}")
    for line in check.lines:
        typer.echo(f"  {line}")
    typer.echo("report: " + ", ".join(str(p) for p in written))


def main() -> None:
    lab.run_cli(app)


if __name__ == "__main__":
    main()

