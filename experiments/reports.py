"""`gdrec-lab report`: the paper's tables and figures rendered from the runner's JSONL rows (the selection in
experiments.selection, the tables in experiments.tables, the figures in experiments.figures).

    table2.md  test HR@50 / NDCG@50, mean ± std over seeds: Teacher, Student, CD, RD, BD, GD per model and size;
               the paper's GD is "GD (CGAN)", and each other list generator / include-observed variant run
               (`gdrec-lab run --generator ...`) has a GD row of its own, e.g. "GD (kNN)"
    table3.md  Hit@5/10/20 on full ranking and, separately, on the 100-sampled-negatives protocol (the paper's
               ml-100k table, with its GD numbers beside ours when the dataset is ml-100k)
    table4.md  KD teacher (raw data) vs GD teacher (raw + generated), plus the CGAN as a recommender
    fig2.png   accuracy of T / M=50% / S=30%
    fig3.png   full-ranking inference time of one batch of users for T / M / S: per model, the latest run of
               `gdrec-lab timing` in the report folder's inference.jsonl (all sizes timed in one process, interleaved);
               without one, the runner's per-cell timings of the one machine that timed the most of them (timings
               of different machines do not average)
    fig4.png   GD student accuracy vs lambda
    grid.md    every hyperparameter setting run per (model, method, size), and the one selected

Selection: for each (model, method, size) the hyperparameter setting with the highest mean validation NDCG@50 over
the seeds that ran it is chosen, among the settings run on the most seeds (a partial grid cannot win on one lucky
seed); its test numbers are reported (the test item never selects anything). Table 2's GD row uses lambda 0.7 (the
paper's) when such cells exist; fig4 selects the temperature per lambda. When a cell was run more than once (e.g.
under changed settings), the row finished last counts. Several results files (runs split over work dirs to use
more cores) are read together: `--results` repeated, rows merged in the order they finished, copies of one row (a
results file pre-seeded with another's rows) counted once; `--save-rows` writes that union for committing. Cells
that were not run are printed as "not run"; nothing is filled in. GD rows whose lists came from the teacher
(`--list-source teacher`, a research reference) are left out of every table and figure; GD rows of list
generators other than the paper's CGAN (or with include-observed switched) appear in table 2 only, tables 3 and 4,
grid.md and the figures reproduce the paper from the CGAN's GD rows."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from experiments.figures import fig2, fig3, fig4
from experiments.results import CellRow, TimingRow, read_rows
from experiments.selection import NOT_RUN, cell_rows, latest_rows, paper_lists, reference_lists, timing_rows
from experiments.tables import grid, table2, table3, table4
from shared.checkpoint import atomic_write_text

log = logging.getLogger("gdrec.reports")


def render_reports(rows: Iterable[CellRow | Mapping[str, Any]], out_dir: Path, dataset: str | None = None,
                   timings: Sequence[TimingRow | Mapping[str, Any]] = ()) -> list[Path]:
    """Write table2/3/4.md, grid.md and fig2/3/4.png for one dataset; returns the paths written. `timings` are
    `gdrec-lab timing` rows (experiments.timing) for fig3."""
    rows = cell_rows(rows)
    timings = timing_rows(timings)
    datasets = sorted({r.dataset for r in rows})
    if dataset is None:
        if len(datasets) > 1:
            raise ValueError(f"the results hold several datasets ({', '.join(datasets)}); name one")
        dataset = datasets[0] if datasets else "(no results)"
    reference = [r for r in rows if r.dataset == dataset and reference_lists(r)]
    if reference:
        log.warning("left out %d row(s) whose lists did not come from the generator (list source %s)",
                    len(reference), ", ".join(sorted({r.list_source for r in reference})))
    chosen = latest_rows(r for r in rows if r.dataset == dataset and not reference_lists(r))
    if not chosen:
        log.warning("no rows for dataset %s; every cell renders as %r", dataset, NOT_RUN)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    paper = [r for r in chosen if paper_lists(r)]  # tables 3 and 4, grid.md, the figures: the paper's GD lists
    for name, build, shown in (("table2.md", table2, chosen), ("table3.md", table3, paper),
                                ("table4.md", table4, paper), ("grid.md", grid, paper)):
        target = out_dir / name
        target.write_text(build(shown, dataset) + "\n", encoding="utf-8")
        written.append(target)
    written.append(fig2(paper, dataset, out_dir / "fig2.png"))
    written.append(fig3(paper, dataset, out_dir / "fig3.png", timings))
    written.append(fig4(paper, dataset, out_dir / "fig4.png"))
    return written


def merged_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The rows of several results files as one list, in the order the cells finished (a file's own order breaks
    ties); a row present in more than one file (same cell key and finish time) is kept once."""
    seen: set[str] = set()
    rows = []
    for path in paths:
        for row in read_rows(path):
            identity = (json.dumps([row["key"], row["finished_at"]]) if "key" in row and "finished_at" in row
                        else json.dumps(row, sort_keys=True))
            if identity not in seen:
                seen.add(identity)
                rows.append(row)
    return sorted(rows, key=lambda row: str(row.get("finished_at", "")))


def report_command(
    results: Annotated[list[Path], typer.Option(
        help="the runner's JSONL results; repeat to merge runs split over several work dirs")],
    out: Annotated[Path, typer.Option(help="folder for the tables and figures, e.g. reports/ml-100k/")],
    dataset: Annotated[str | None, typer.Option(help="which dataset of the results (default: the only one)")] = None,
    save_rows: Annotated[Path | None, typer.Option(
        help="also write the merged rows here (e.g. reports/ml-100k/results.jsonl, to commit beside the reports)")
    ] = None,
    timings: Annotated[Path | None, typer.Option(
        help="`gdrec-lab timing` rows for fig3 (default: <out>/inference.jsonl when it exists)")] = None,
) -> None:
    """Render table2/3/4.md, grid.md and fig2/3/4.png from one or more results files."""
    missing = [str(path) for path in results if not path.is_file()]
    if timings is not None and not timings.is_file():
        missing.append(f"{timings} (--timings)")
    if missing:
        raise typer.BadParameter(f"no results file at {', '.join(missing)}; pass the results.jsonl of a "
                                 "`gdrec-lab run` work dir, and for --timings the file `gdrec-lab timing` wrote")
    rows = merged_rows(results)
    timing_rows = read_rows(timings if timings is not None else Path(out) / "inference.jsonl")
    try:
        written = render_reports(rows, out, dataset, timing_rows)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if save_rows is not None:
        atomic_write_text(save_rows, "".join(json.dumps(row) + "\n" for row in rows))
        written.append(save_rows)
    typer.echo("\n".join(str(p) for p in written))
