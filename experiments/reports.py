"""`gdrec-lab report`: the paper's tables and figures rendered from the runner's JSONL rows.

    table2.md  test HR@50 / NDCG@50, mean ± std over seeds: Teacher, Student, CD, RD, BD, GD per model and size
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
(`--list-source teacher`, a research reference) are left out of every table and figure."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import typer  # noqa: E402

from experiments.presets import GD_LAMBDA, SELECTION_METRIC  # noqa: E402
from experiments.results import read_rows  # noqa: E402
from shared.checkpoint import atomic_write_text  # noqa: E402

log = logging.getLogger("gdrec.reports")

NOT_RUN = "not run"
METHOD_ORDER = ("teacher", "student", "cd", "rd", "bd", "gd")
METHOD_NAMES = {"teacher": "Teacher", "student": "Student", "cd": "CD", "rd": "RD", "bd": "BD", "gd": "GD"}
FAMILY_NAMES = {"bpr": "BPR", "neumf": "NeuMF"}
# The paper's ml-100k GD numbers (Table 3) and CiteULike Table 2 (ALGORITHMS.md section 7), quoted, never computed.
PAPER_TABLE3_GD = {5: 0.321, 10: 0.504, 20: 0.634}
PAPER_TABLE2_CITEULIKE = {
    "bpr": {"Teacher": "0.139 / 0.037", "Student": "0.072 / 0.015", "RD": "0.078 / -", "CD": "0.080 / -",
            "BD": "0.085 / -", "GD": "0.097 / 0.023"},
    "neumf": {"Teacher": "0.125 / 0.033", "Student": "0.069 / -", "RD": "0.075 / -", "CD": "0.082 / -",
              "BD": "0.092 / -", "GD": "0.105 / 0.027"},
}


# ----------------------------------------------------------------------------------------------------------------
# Rows and selection


def _identity(row: dict[str, Any]) -> tuple:
    return (row["dataset"], row["family"], row["method"], row["seed"], round(float(row["fraction"]), 6),
            json.dumps(row.get("hyperparameters", {}), sort_keys=True))


def _reference_lists(row: dict[str, Any]) -> bool:
    """A GD row whose lists came from somewhere other than the generator (a research reference, not GD-REC)."""
    return row.get("list_source", "generator") != "generator"


def latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell identity (dataset, family, method, seed, fraction, hyperparameters): the last written."""
    out: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        out[_identity(row)] = row
    return list(out.values())


@dataclass(frozen=True)
class Selected:
    hyperparameters: dict[str, float]
    rows: list[dict[str, Any]]  # one per seed
    candidates: int  # hyperparameter settings compared

    @property
    def seeds(self) -> int:
        return len(self.rows)

    def values(self, part: str, metric: str) -> list[float]:
        return [float(row[part][metric]) for row in self.rows if metric in row.get(part, {})]


def settings(rows: Sequence[dict[str, Any]], family: str, method: str, fraction: float,
             where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every hyperparameter setting run for one (model, method, size): its JSON key -> its rows, by seed."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if (row["family"] == family and row["method"] == method and math.isclose(row["fraction"], fraction)
                and (where is None or where(row))):
            groups[json.dumps(row.get("hyperparameters", {}), sort_keys=True)].append(row)
    return {key: sorted(group, key=lambda r: r["seed"]) for key, group in sorted(groups.items())}


def _compared(groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The settings that compete: those run on the most seeds, so that every candidate is judged on as many seeds
    (a grid still running, or run on fewer seeds, cannot win on one lucky seed)."""
    most = max((len(group) for group in groups.values()), default=0)
    return [key for key, group in groups.items() if len(group) == most]


def _mean_valid(group: Sequence[dict[str, Any]]) -> float:
    return float(np.mean([r["valid"][SELECTION_METRIC] for r in group]))


def select(rows: Sequence[dict[str, Any]], family: str, method: str, fraction: float,
           where: Callable[[dict[str, Any]], bool] | None = None) -> Selected | None:
    """The setting with the best mean validation NDCG@50 over seeds, among the settings run on the most seeds;
    None when no cell ran."""
    return _pick(settings(rows, family, method, fraction, where))


def _pick(groups: dict[str, list[dict[str, Any]]]) -> Selected | None:
    if not groups:
        return None
    compared = _compared(groups)
    best = max(compared, key=lambda k: _mean_valid(groups[k]))
    return Selected(json.loads(best), groups[best], len(compared))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def fmt(values: Sequence[float]) -> str:
    if not values:
        return NOT_RUN
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f} (1 seed)"


def _hp(hp: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in hp.items()) or "-"


def _fractions(rows: Sequence[dict[str, Any]]) -> list[float]:
    return sorted({float(r["fraction"]) for r in rows if r["method"] != "teacher"}, reverse=True)


def _families(rows: Sequence[dict[str, Any]]) -> list[str]:
    present = {r["family"] for r in rows}
    return [f for f in FAMILY_NAMES if f in present] + sorted(present - set(FAMILY_NAMES))


def _size(fraction: float) -> str:
    if math.isclose(fraction, 1.0):
        return "T (100%)"
    return {0.5: "M (50%)", 0.3: "S (30%)"}.get(round(fraction, 6), f"{fraction:.0%}")


def _gd_table2_filter(rows: Sequence[dict[str, Any]]) -> Callable[[dict[str, Any]], bool] | None:
    """GD rows at the paper's lambda when there are any, else every GD row."""
    if any(r["method"] == "gd" and math.isclose(r["hyperparameters"].get("lambda", -1), GD_LAMBDA) for r in rows):
        return lambda r: math.isclose(r["hyperparameters"].get("lambda", -1), GD_LAMBDA)
    return None


def _machine(row: dict[str, Any]) -> str:
    m = row.get("machine") or {}
    return f"{m.get('gpu') or m.get('cpu')} ({m.get('device')}, {m.get('torch_threads')} threads)"


def _machines(rows: Sequence[dict[str, Any]]) -> str:
    return "; ".join(sorted({_machine(r) for r in rows if "machine" in r})) or "unknown"


def inference_times(rows: Sequence[dict[str, Any]], family: str, sizes: Sequence[float]
                    ) -> tuple[str | None, dict[float, list[float]]]:
    """Full-ranking milliseconds per batch for each size (teacher rows at 1.0), from one machine only: timings from
    different CPUs or GPUs do not average. The machine that timed the most of this family's rows is used."""
    by_machine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["family"] == family and "inference" in r:
            by_machine[_machine(r)].append(r)
    if not by_machine:
        return None, {}
    machine = max(by_machine, key=lambda name: (len(by_machine[name]), name))
    times: dict[float, list[float]] = {}
    for fraction in sizes:
        found = [1e3 * r["inference"]["seconds"] for r in by_machine[machine]
                 if math.isclose(r["fraction"], fraction) and (r["method"] == "teacher") == math.isclose(fraction, 1.0)]
        if found:
            times[fraction] = found
    return machine, times


def one_run_times(timings: Sequence[dict[str, Any]], family: str, dataset: str
                  ) -> tuple[str | None, dict[float, list[float]]]:
    """Milliseconds per round for each size from the latest `gdrec-lab timing` run of this model and dataset
    (experiments.timing), with its machine; (None, {}) when there is none."""
    return _run_times(_latest_timing_run(timings, family, dataset))


def _run_times(run: Sequence[dict[str, Any]]) -> tuple[str | None, dict[float, list[float]]]:
    """(machine, {size: milliseconds per round}) of one timing run's rows; (None, {}) for none."""
    if not run:
        return None, {}
    return _machine(run[0]), {float(t["fraction"]): [1e3 * s for s in t["seconds"]] for t in run}


def _latest_timing_run(timings: Sequence[dict[str, Any]], family: str, dataset: str) -> list[dict[str, Any]]:
    """The rows of the latest `gdrec-lab timing` run of this model and dataset, the teacher first."""
    mine = [t for t in timings if t.get("family") == family and t.get("dataset") == dataset]
    if not mine:
        return []
    run = max(t["run"] for t in mine)
    return sorted((t for t in mine if t["run"] == run), key=lambda t: -t["fraction"])


def _header(title: str, dataset: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    seconds = sum(float(r.get("cell_seconds", 0.0)) for r in rows)
    return [f"# {title}", "", f"Dataset `{dataset}`; {len(rows)} cells; machine: {_machines(rows)}; "
            f"total cell time {seconds / 3600:.2f} h (cached stages count once).", ""]


# ----------------------------------------------------------------------------------------------------------------
# Tables


def table2(rows: Sequence[dict[str, Any]], dataset: str) -> str:
    lines = _header("Table 2: HR@50 / NDCG@50 on the test item", dataset, rows)
    lines += [f"Mean ± sample std (ddof=1) over seeds. Hyperparameters selected on validation {SELECTION_METRIC} "
              f"(mean over seeds); GD at lambda {GD_LAMBDA:g} when run. Full ranking, training items excluded.", ""]
    lines += _gd_revisions(rows)
    gd_filter = _gd_table2_filter(rows)
    for family in _families(rows):
        lines += [f"## {FAMILY_NAMES.get(family, family)}", "",
                  "| size | method | test HR@50 | test NDCG@50 | seeds | selected (of settings run) | params | "
                  f"valid {SELECTION_METRIC} |", "|---|---|---|---|---|---|---|---|"]
        teacher = select(rows, family, "teacher", 1.0)
        lines.append(_table2_row("T (100%)", "Teacher", teacher))
        for fraction in _fractions(rows) or [0.5, 0.3]:
            for method in METHOD_ORDER[1:]:
                chosen = select(rows, family, method, fraction, gd_filter if method == "gd" else None)
                lines.append(_table2_row(_size(fraction), METHOD_NAMES[method], chosen))
        lines.append("")
    if dataset.startswith("citeulike"):
        lines += ["## The paper's Table 2 (CiteULike), HR@50 / NDCG@50, quoted for comparison", "",
                  "| method | BPR | NeuMF |", "|---|---|---|"]
        bpr, neumf = PAPER_TABLE2_CITEULIKE["bpr"], PAPER_TABLE2_CITEULIKE["neumf"]
        lines += [f"| {name} | {bpr[name]} | {neumf[name]} |" for name in bpr]
        lines.append("")
    return "\n".join(lines)


def _gd_revisions(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A note of which GD student sampler revisions (model_consumer.distill.SAMPLER_REVISION) the GD rows used;
    rows written before the revision entered the cell settings are revision 1."""
    counts = Counter(int(r.get("settings", {}).get("student_sampler", 1)) for r in rows if r["method"] == "gd")
    if not counts:
        return []
    used = ", ".join(f"revision {rev} ({n} rows)" for rev, n in sorted(counts.items()))
    mixed = " - mixed: rerun the GD cells with the current code for one revision" if len(counts) > 1 else ""
    return [f"GD student sampler: {used}{mixed}.", ""]


def _table2_row(size: str, name: str, chosen: Selected | None) -> str:
    if chosen is None:
        return f"| {size} | {name} | {NOT_RUN} | {NOT_RUN} | 0 | - | - | - |"
    params = sorted({int(r["params"]) for r in chosen.rows})
    teacher_params = sorted({int(r.get("teacher_params", 0)) for r in chosen.rows})
    ratio = f" ({params[0] / teacher_params[0]:.1%})" if teacher_params and teacher_params[0] else ""
    return (f"| {size} | {name} | {fmt(chosen.values('test', 'HR@50'))} | {fmt(chosen.values('test', 'NDCG@50'))} | "
            f"{chosen.seeds} | {_hp(chosen.hyperparameters)} ({chosen.candidates}) | {params[0]:,}{ratio} | "
            f"{fmt(chosen.values('valid', SELECTION_METRIC))} |")


def table3(rows: Sequence[dict[str, Any]], dataset: str) -> str:
    lines = _header("Table 3: Hit@5 / Hit@10 / Hit@20 on the test item, two protocols", dataset, rows)
    negatives = sorted({int(r["test_sampled"]["negatives"]) for r in rows if "test_sampled" in r})
    lines += ["Mean ± sample std over seeds; each method's setting selected on validation "
              f"{SELECTION_METRIC} (full ranking), as in table 2. The two protocols differ: full ranking scores "
              "every item outside the user's training items and validation item; the sampled protocol ranks the "
              f"test item among {', '.join(map(str, negatives)) or '100'} items drawn uniformly from the items the "
              "user never interacted with (fixed per seed).", ""]
    paper = dataset == "ml-100k"
    gd_filter = _gd_table2_filter(rows)
    for protocol, part in (("Full ranking (all items)", "test"),
                           (f"Sampled: test item among {', '.join(map(str, negatives)) or '100'} sampled negatives",
                            "test_sampled")):
        lines += [f"## {protocol}", ""]
        for family in _families(rows):
            lines += [f"### {FAMILY_NAMES.get(family, family)}", "",
                      "| size | method | Hit@5 | Hit@10 | Hit@20 | seeds |", "|---|---|---|---|---|---|"]
            cells = [("T (100%)", "teacher", 1.0)] + [(_size(f), m, f) for f in (_fractions(rows) or [0.5, 0.3])
                                                        for m in METHOD_ORDER[1:]]
            for size, method, fraction in cells:
                chosen = select(rows, family, method, fraction, gd_filter if method == "gd" else None)
                if chosen is None:
                    lines.append(f"| {size} | {METHOD_NAMES[method]} | {NOT_RUN} | {NOT_RUN} | {NOT_RUN} | 0 |")
                    continue
                hits = [fmt(chosen.values(part, f"HR@{k}")) for k in (5, 10, 20)]
                lines.append(f"| {size} | {METHOD_NAMES[method]} | {' | '.join(hits)} | {chosen.seeds} |")
            if paper:
                lines.append("| paper | GD (as published, protocol not restated here) | "
                             + " | ".join(f"{PAPER_TABLE3_GD[k]:.3f}" for k in (5, 10, 20)) + " | - |")
            lines.append("")
    if paper:
        lines += ["The paper's GD figures are quoted, not computed. Their size (Hit@10 0.504, where full-ranking "
                  "HR@50 of BPR on ml-100k is about 0.3) matches the sampled protocol, not full ranking.", ""]
    else:
        lines += ["The paper reports this table for ml-100k only; no published numbers for this dataset.", ""]
    return "\n".join(lines)


def table4(rows: Sequence[dict[str, Any]], dataset: str) -> str:
    lines = _header("Table 4: KD teacher (raw data) vs GD teacher (raw + generated lists)", dataset, rows)
    lines += ["Test metrics, mean ± sample std over seeds. The GD teacher is the KD teacher continued on raw + "
              "generated pairs (L_T = L_CF + L_GF); the CGAN row is GF_u itself used as a recommender.", ""]
    for family in _families(rows):
        lines += [f"## {FAMILY_NAMES.get(family, family)}", "",
                  "| teacher | test HR@50 | test NDCG@50 | valid NDCG@50 | seeds | params |",
                  "|---|---|---|---|---|---|"]
        kd = [r for r in rows if r["family"] == family and r["method"] == "teacher"]
        lines.append(_stage_row("KD teacher (raw data)", [(r["test"], r["valid"], r["params"]) for r in kd]))
        gd_rows: dict[int, dict[str, Any]] = {}
        for r in rows:  # one GD teacher per seed (every GD cell of a seed shares it)
            if r["family"] == family and r["method"] == "gd" and "gd_teacher" in r:
                gd_rows[r["seed"]] = r
        lines.append(_stage_row("GD teacher (raw + generated)",
                                [(r["gd_teacher"]["test"], r["gd_teacher"]["valid"], r["gd_teacher"]["params"])
                                 for r in gd_rows.values()]))
        lines.append(_stage_row("CGAN generator as a recommender",
                                [(r["generator"]["test"], r["generator"]["valid"], r["generator"]["params"])
                                 for r in gd_rows.values() if "generator" in r]))
        shares = [r["observed_share"] for r in gd_rows.values() if "observed_share" in r]
        if shares:
            lines.append("")
            lines.append(f"Listed items that are the user's own training items: {fmt(shares)} "
                         f"(list length {sorted({r.get('list_length') for r in gd_rows.values()})}).")
        lines.append("")
    return "\n".join(lines)


def grid(rows: Sequence[dict[str, Any]], dataset: str) -> str:
    """Every hyperparameter setting run, for each (model, method, size) that ran more than one, with the one that
    Table 2 reports marked: what the selection chose from, for anyone checking it."""
    lines = _header("Hyperparameter grid: every setting run, and the one selected", dataset, rows)
    lines += [f"Selection: best mean validation {SELECTION_METRIC} among the settings run on the most seeds "
              "(settings with fewer seeds are shown but not compared). Test numbers are mean ± sample std over "
              f"the setting's seeds; the test item selects nothing. GD compares temperatures at lambda {GD_LAMBDA:g} "
              "when run (fig4 shows the lambdas).", ""]
    gd_filter = _gd_table2_filter(rows)
    shown = 0
    for family in _families(rows):
        for fraction in _fractions(rows):
            for method in METHOD_ORDER[1:]:
                where = gd_filter if method == "gd" else None
                groups = settings(rows, family, method, fraction, where)
                if len(groups) < 2:
                    continue
                chosen = _pick(groups)
                compared = set(_compared(groups))
                lines += [f"## {FAMILY_NAMES.get(family, family)}, {METHOD_NAMES[method]}, {_size(fraction)}", "",
                          f"| setting | seeds | valid {SELECTION_METRIC} | test HR@50 | test NDCG@50 | |",
                          "|---|---|---|---|---|---|"]
                for key, group in sorted(groups.items(), key=lambda kv: -_mean_valid(kv[1])):
                    hp = json.loads(key)
                    mark = ("**selected**" if chosen is not None and hp == chosen.hyperparameters
                            else "" if key in compared else "fewer seeds: not compared")
                    lines.append(f"| {_hp(hp)} | {_seed_list([r['seed'] for r in group])} | "
                                 f"{fmt([r['valid'][SELECTION_METRIC] for r in group])} | "
                                 f"{fmt([r['test']['HR@50'] for r in group])} | "
                                 f"{fmt([r['test']['NDCG@50'] for r in group])} | {mark} |")
                lines.append("")
                shown += 1
    if not shown:
        lines += ["Every (model, method, size) ran a single setting: there was no grid to select from.", ""]
    return "\n".join(lines)


def _stage_row(name: str, entries: list[tuple[dict, dict, int]]) -> str:
    if not entries:
        return f"| {name} | {NOT_RUN} | {NOT_RUN} | {NOT_RUN} | 0 | - |"
    return (f"| {name} | {fmt([t['HR@50'] for t, _, _ in entries])} | {fmt([t['NDCG@50'] for t, _, _ in entries])} | "
            f"{fmt([v[SELECTION_METRIC] for _, v, _ in entries])} | {len(entries)} | {entries[0][2]:,} |")


# ----------------------------------------------------------------------------------------------------------------
# Figures


def _not_run(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: not run", ha="center", va="center", transform=ax.transAxes)


def _subplots(count: int, width: float = 5.0):
    fig, axes = plt.subplots(1, max(count, 1), figsize=(width * max(count, 1), 4.0), squeeze=False)
    return fig, list(axes[0])


def fig2(rows: Sequence[dict[str, Any]], dataset: str, path: Path) -> Path:
    """Test HR@50 of each method at T / M / S (selected settings), error bars = sample std over seeds."""
    families = _families(rows)
    fig, axes = _subplots(len(families))
    gd_filter = _gd_table2_filter(rows)
    sizes = [1.0] + (_fractions(rows) or [0.5, 0.3])
    methods = METHOD_ORDER
    width = 0.8 / (len(methods) - 1)
    for ax, family in zip(axes, families or ["(none)"], strict=False):
        drawn = False
        top = 0.0
        for m_index, method in enumerate(methods):
            xs, ys, errs = [], [], []
            for s_index, fraction in enumerate(sizes):
                if (method == "teacher") != math.isclose(fraction, 1.0):
                    continue
                chosen = select(rows, family, method, fraction, gd_filter if method == "gd" else None)
                if chosen is None:
                    continue
                mean, std = mean_std(chosen.values("test", "HR@50"))
                # the teacher stands alone at T; the five students share each of M and S
                xs.append(s_index if method == "teacher" else s_index + (m_index - 1 - (len(methods) - 2) / 2) * width)
                ys.append(mean)
                errs.append(0.0 if math.isnan(std) else std)
            if xs:
                ax.bar(xs, ys, width, yerr=errs, capsize=2, label=METHOD_NAMES[method])
                drawn = True
                top = max(top, max(y + e for y, e in zip(ys, errs, strict=True)))
        ax.set_xticks(range(len(sizes)), [_size(f) for f in sizes])
        ax.set_xlabel("model size (share of the teacher's parameters)")
        ax.set_ylabel("test HR@50 (share of users)")
        ax.set_title(f"{dataset}: {FAMILY_NAMES.get(family, family)}")
        if drawn:
            ax.set_ylim(0, 1.35 * top if top > 0 else 1)  # room for the legend above the bars
            ax.legend(fontsize=7, ncol=3, loc="upper center")
        else:
            _not_run(ax, "accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fig3(rows: Sequence[dict[str, Any]], dataset: str, path: Path, timings: Sequence[dict[str, Any]] = ()) -> Path:
    """Full-ranking time of one batch of users per model size: the latest `gdrec-lab timing` run of each model
    (median over its interleaved rounds, bars from the 25th to the 75th percentile) or, without one, the runner's
    per-cell medians of one machine (mean ± std over the cells)."""
    families = _families(rows) or sorted({t["family"] for t in timings if t.get("dataset") == dataset})
    fig, axes = _subplots(len(families))
    sizes = [1.0] + (_fractions(rows) or [0.5, 0.3])
    sources = set()
    for ax, family in zip(axes, families or ["(none)"], strict=False):
        latest = _latest_timing_run(timings, family, dataset)
        machine, times = _run_times(latest)
        if times:
            sources.add("one run")
            batch = sorted({int(t["batch_users"]) for t in latest})
            centre = [float(np.median(v)) for v in times.values()]
            low = [c - float(np.percentile(v, 25)) for c, v in zip(centre, times.values(), strict=True)]
            high = [float(np.percentile(v, 75)) - c for c, v in zip(centre, times.values(), strict=True)]
            rounds = min(len(v) for v in times.values())
            how = f"one run: median of {rounds} interleaved rounds, bars 25th-75th percentile"
        else:
            machine, times = inference_times(rows, family, sizes)
            sources.add("cells")
            batch = sorted({int(r["inference"]["batch_users"]) for r in rows
                            if "inference" in r and r["family"] == family})
            stats = [mean_std(found) for found in times.values()]
            centre = [mean for mean, _ in stats]
            low = high = [0.0 if math.isnan(std) else std for _, std in stats]
            how = "the cells' own timings: mean ± std over the cells"
        if centre:
            ax.bar([_size(f) for f in times], centre, yerr=[low, high], capsize=3,
                   color=["tab:blue", "tab:orange", "tab:green", "tab:purple"][:len(centre)])
        else:
            _not_run(ax, "inference time")
        ax.set_xlabel("model size (share of the teacher's parameters)")
        ax.set_ylabel(f"full-ranking time per batch of {'/'.join(map(str, batch)) or '?'} users (ms)")
        ax.set_title(f"{dataset}: {FAMILY_NAMES.get(family, family)}\ntimed on {machine or 'unknown'}"
                     + (f"\n{how}" if centre else ""), fontsize=9)
    if "cells" in sources:
        fig.suptitle("without a `gdrec-lab timing` run, a model's bars are the runner's per-cell timings from one "
                     "machine (the one that timed most of its rows)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def lambda_sweep(rows: Sequence[dict[str, Any]], family: str, fraction: float
                 ) -> tuple[list[float], list[float], list[float], list[int]]:
    """(lambdas, mean test HR@50, std, seeds) of the GD students of one family and size, over the seeds that ran
    every lambda of the sweep, so each point averages the same seeds (all seeds when none ran them all)."""
    gd = [r for r in rows if r["family"] == family and r["method"] == "gd" and math.isclose(r["fraction"], fraction)]
    lambdas = sorted({float(r["hyperparameters"]["lambda"]) for r in gd})
    seeds_of = [{r["seed"] for r in gd if math.isclose(r["hyperparameters"]["lambda"], lam)} for lam in lambdas]
    common = set.intersection(*seeds_of) if seeds_of else set()
    seeds = common or set().union(*seeds_of)
    xs, ys, errs = [], [], []
    for lam in lambdas:
        chosen = select(rows, family, "gd", fraction,
                        lambda r, lam=lam: math.isclose(r["hyperparameters"]["lambda"], lam) and r["seed"] in seeds)
        if chosen is None:
            continue
        mean, std = mean_std(chosen.values("test", "HR@50"))
        xs.append(lam)
        ys.append(mean)
        errs.append(0.0 if math.isnan(std) else std)
    return xs, ys, errs, sorted(seeds)


def _seed_list(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds))


def fig4(rows: Sequence[dict[str, Any]], dataset: str, path: Path) -> Path:
    """GD student test HR@50 vs lambda (temperature selected on validation for each lambda), over the seeds that
    ran the whole sweep."""
    families = _families(rows)
    fig, axes = _subplots(len(families))
    for ax, family in zip(axes, families or ["(none)"], strict=False):
        drawn = False
        for fraction in _fractions(rows):
            xs, ys, errs, seeds = lambda_sweep(rows, family, fraction)
            if xs:
                label = f"GD student {_size(fraction)}, seed{'s' if len(seeds) > 1 else ''} {_seed_list(seeds)}"
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
                drawn = True
        ax.set_xlim(-0.05, 1.05)
        ax.set_xlabel("lambda (weight of L_GD, dimensionless)")
        ax.set_ylabel("test HR@50 (share of users)")
        ax.set_title(f"{dataset}: {FAMILY_NAMES.get(family, family)}")
        if drawn:
            ax.legend(fontsize=8)
        else:
            _not_run(ax, "GD lambda sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def render_reports(rows: Iterable[dict[str, Any]], out_dir: Path, dataset: str | None = None,
                   timings: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Write table2/3/4.md, grid.md and fig2/3/4.png for one dataset; returns the paths written. `timings` are
    `gdrec-lab timing` rows (experiments.timing) for fig3."""
    rows = list(rows)
    datasets = sorted({r["dataset"] for r in rows})
    if dataset is None:
        if len(datasets) > 1:
            raise ValueError(f"the results hold several datasets ({', '.join(datasets)}); name one")
        dataset = datasets[0] if datasets else "(no results)"
    reference = [r for r in rows if r["dataset"] == dataset and _reference_lists(r)]
    if reference:
        log.warning("left out %d row(s) whose lists did not come from the generator (list source %s)",
                    len(reference), ", ".join(sorted({r["list_source"] for r in reference})))
    chosen = latest_rows(r for r in rows if r["dataset"] == dataset and not _reference_lists(r))
    if not chosen:
        log.warning("no rows for dataset %s; every cell renders as %r", dataset, NOT_RUN)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in (("table2.md", table2), ("table3.md", table3), ("table4.md", table4), ("grid.md", grid)):
        target = out_dir / name
        target.write_text(build(chosen, dataset) + "\n", encoding="utf-8")
        written.append(target)
    written.append(fig2(chosen, dataset, out_dir / "fig2.png"))
    written.append(fig3(chosen, dataset, out_dir / "fig3.png", timings))
    written.append(fig4(chosen, dataset, out_dir / "fig4.png"))
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
