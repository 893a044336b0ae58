"""The paper's tables as markdown, from the runner's rows (GD-REC Tables 2, 3 and 4), and grid.md: every
hyperparameter setting run per (model, method, size), with the one selected (experiments.selection). Table 2 shows
one GD row per list variant (the paper's CGAN, then each other list generator / include-observed run); tables 3
and 4 and grid.md take the rows they are given (`experiments.reports` gives them the paper's GD rows only)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence

from experiments.presets import GD_LAMBDA, SELECTION_METRIC
from experiments.results import CellRow
from experiments.selection import (
    FAMILY_NAMES,
    METHOD_NAMES,
    METHOD_ORDER,
    NOT_RUN,
    PAPER_LISTS,
    Selected,
    compared_settings,
    families_in,
    fmt,
    gd_label,
    gd_lists,
    gd_table2_filter,
    gd_variants,
    hp_label,
    machines_label,
    mean_valid,
    pick,
    seed_list,
    select,
    settings,
    size_label,
    student_fractions,
)

# The paper's ml-100k GD numbers (Table 3) and CiteULike Table 2 (ALGORITHMS.md section 7), quoted, never computed.
PAPER_TABLE3_GD = {5: 0.321, 10: 0.504, 20: 0.634}
PAPER_TABLE2_CITEULIKE = {
    "bpr": {"Teacher": "0.139 / 0.037", "Student": "0.072 / 0.015", "RD": "0.078 / -", "CD": "0.080 / -",
            "BD": "0.085 / -", "GD": "0.097 / 0.023"},
    "neumf": {"Teacher": "0.125 / 0.033", "Student": "0.069 / -", "RD": "0.075 / -", "CD": "0.082 / -",
              "BD": "0.092 / -", "GD": "0.105 / 0.027"},
}


def report_header(title: str, dataset: str, rows: Sequence[CellRow]) -> list[str]:
    seconds = sum(float(r.cell_seconds) for r in rows)
    return [f"# {title}", "", f"Dataset `{dataset}`; {len(rows)} cells; machine: {machines_label(rows)}; "
            f"total cell time {seconds / 3600:.2f} h (cached stages count once).", ""]


def table2(rows: Sequence[CellRow], dataset: str) -> str:
    lines = report_header("Table 2: HR@50 / NDCG@50 on the test item", dataset, rows)
    lines += [f"Mean ± sample std (ddof=1) over seeds. Hyperparameters selected on validation {SELECTION_METRIC} "
              f"(mean over seeds); GD at lambda {GD_LAMBDA:g} when run. Full ranking, training items excluded.", ""]
    lines += _gd_revisions(rows)
    gd_filters = {variant: _gd_filter(rows, variant) for variant in (PAPER_LISTS, *gd_variants(rows))}
    for family in families_in(rows):
        lines += [f"## {FAMILY_NAMES.get(family, family)}", "",
                  "| size | method | test HR@50 | test NDCG@50 | seeds | selected (of settings run) | params | "
                  f"valid {SELECTION_METRIC} |", "|---|---|---|---|---|---|---|---|"]
        teacher = select(rows, family, "teacher", 1.0)
        lines.append(_table2_row("T (100%)", "Teacher", teacher))
        for fraction in student_fractions(rows) or [0.5, 0.3]:
            for method in METHOD_ORDER[1:]:
                if method != "gd":
                    chosen = select(rows, family, method, fraction)
                    lines.append(_table2_row(size_label(fraction), METHOD_NAMES[method], chosen))
                    continue
                for variant, where in gd_filters.items():  # the paper's CGAN first, then the other lists
                    chosen = select(rows, family, method, fraction, where)
                    lines.append(_table2_row(size_label(fraction), gd_label(variant), chosen))
        lines.append("")
    if dataset.startswith("citeulike"):
        lines += ["## The paper's Table 2 (CiteULike), HR@50 / NDCG@50, quoted for comparison", "",
                  "| method | BPR | NeuMF |", "|---|---|---|"]
        bpr, neumf = PAPER_TABLE2_CITEULIKE["bpr"], PAPER_TABLE2_CITEULIKE["neumf"]
        lines += [f"| {name} | {bpr[name]} | {neumf[name]} |" for name in bpr]
        lines.append("")
    return "\n".join(lines)


def _gd_filter(rows: Sequence[CellRow], variant: tuple[str, bool]) -> Callable[[CellRow], bool]:
    """The GD rows of one list variant (`selection.gd_lists`), at the paper's lambda when that variant ran it."""
    mine = [r for r in rows if r.method == "gd" and gd_lists(r) == variant]
    at_lambda = gd_table2_filter(mine) or (lambda r: True)
    return lambda r: gd_lists(r) == variant and at_lambda(r)


def _gd_revisions(rows: Sequence[CellRow]) -> list[str]:
    """A note of which GD student sampler revisions (shared.distillation.SAMPLER_REVISION) the GD rows used;
    rows written before the revision entered the cell settings are revision 1."""
    counts = Counter(int(r.settings.get("student_sampler", 1)) for r in rows if r.method == "gd")
    if not counts:
        return []
    used = ", ".join(f"revision {rev} ({n} rows)" for rev, n in sorted(counts.items()))
    mixed = " - mixed: rerun the GD cells with the current code for one revision" if len(counts) > 1 else ""
    return [f"GD student sampler: {used}{mixed}.", ""]


def _table2_row(size: str, name: str, chosen: Selected | None) -> str:
    if chosen is None:
        return f"| {size} | {name} | {NOT_RUN} | {NOT_RUN} | 0 | - | - | - |"
    params = sorted({int(r.params) for r in chosen.rows})
    teacher_params = sorted({int(r.teacher_params) for r in chosen.rows})
    ratio = f" ({params[0] / teacher_params[0]:.1%})" if teacher_params and teacher_params[0] else ""
    return (f"| {size} | {name} | {fmt(chosen.values('test', 'HR@50'))} | {fmt(chosen.values('test', 'NDCG@50'))} | "
            f"{chosen.seeds} | {hp_label(chosen.hyperparameters)} ({chosen.candidates}) | {params[0]:,}{ratio} | "
            f"{fmt(chosen.values('valid', SELECTION_METRIC))} |")


def table3(rows: Sequence[CellRow], dataset: str) -> str:
    lines = report_header("Table 3: Hit@5 / Hit@10 / Hit@20 on the test item, two protocols", dataset, rows)
    negatives = sorted({int(r.test_sampled["negatives"]) for r in rows})
    lines += ["Mean ± sample std over seeds; each method's setting selected on validation "
              f"{SELECTION_METRIC} (full ranking), as in table 2. The two protocols differ: full ranking scores "
              "every item outside the user's training items and validation item; the sampled protocol ranks the "
              f"test item among {', '.join(map(str, negatives)) or '100'} items drawn uniformly from the items the "
              "user never interacted with (fixed per seed).", ""]
    paper = dataset == "ml-100k"
    gd_filter = gd_table2_filter(rows)
    for protocol, part in (("Full ranking (all items)", "test"),
                           (f"Sampled: test item among {', '.join(map(str, negatives)) or '100'} sampled negatives",
                            "test_sampled")):
        lines += [f"## {protocol}", ""]
        for family in families_in(rows):
            lines += [f"### {FAMILY_NAMES.get(family, family)}", "",
                      "| size | method | Hit@5 | Hit@10 | Hit@20 | seeds |", "|---|---|---|---|---|---|"]
            cells = [("T (100%)", "teacher", 1.0)] + [(size_label(f), m, f)
                                                        for f in (student_fractions(rows) or [0.5, 0.3])
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


def table4(rows: Sequence[CellRow], dataset: str) -> str:
    lines = report_header("Table 4: KD teacher (raw data) vs GD teacher (raw + generated lists)", dataset, rows)
    lines += ["Test metrics, mean ± sample std over seeds. The GD teacher is the KD teacher continued on raw + "
              "generated pairs (L_T = L_CF + L_GF); the CGAN row is GF_u itself used as a recommender.", ""]
    for family in families_in(rows):
        lines += [f"## {FAMILY_NAMES.get(family, family)}", "",
                  "| teacher | test HR@50 | test NDCG@50 | valid NDCG@50 | seeds | params |",
                  "|---|---|---|---|---|---|"]
        kd = [r for r in rows if r.family == family and r.method == "teacher"]
        lines.append(_stage_row("KD teacher (raw data)", [(r.test, r.valid, r.params) for r in kd]))
        gd_rows: dict[int, CellRow] = {}
        for r in rows:  # one GD teacher per seed (every GD cell of a seed shares it)
            if r.family == family and r.method == "gd" and r.gd_teacher is not None:
                gd_rows[r.seed] = r
        lines.append(_stage_row("GD teacher (raw + generated)",
                                [(r.gd_teacher["test"], r.gd_teacher["valid"], r.gd_teacher["params"])
                                 for r in gd_rows.values()]))
        lines.append(_stage_row("CGAN generator as a recommender",
                                [(r.generator["test"], r.generator["valid"], r.generator["params"])
                                 for r in gd_rows.values() if r.generator is not None]))
        shares = [r.observed_share for r in gd_rows.values() if r.observed_share is not None]
        if shares:
            lines.append("")
            lines.append(f"Listed items that are the user's own training items: {fmt(shares)} "
                         f"(list length {sorted({r.list_length for r in gd_rows.values()})}).")
        lines.append("")
    return "\n".join(lines)


def grid(rows: Sequence[CellRow], dataset: str) -> str:
    """Every hyperparameter setting run, for each (model, method, size) that ran more than one, with the one that
    Table 2 reports marked: what the selection chose from, for anyone checking it."""
    lines = report_header("Hyperparameter grid: every setting run, and the one selected", dataset, rows)
    lines += [f"Selection: best mean validation {SELECTION_METRIC} among the settings run on the most seeds "
              "(settings with fewer seeds are shown but not compared). Test numbers are mean ± sample std over "
              f"the setting's seeds; the test item selects nothing. GD compares temperatures at lambda {GD_LAMBDA:g} "
              "when run (fig4 shows the lambdas).", ""]
    gd_filter = gd_table2_filter(rows)
    shown = 0
    for family in families_in(rows):
        for fraction in student_fractions(rows):
            for method in METHOD_ORDER[1:]:
                where = gd_filter if method == "gd" else None
                groups = settings(rows, family, method, fraction, where)
                if len(groups) < 2:
                    continue
                chosen = pick(groups)
                compared = set(compared_settings(groups))
                lines += [f"## {FAMILY_NAMES.get(family, family)}, {METHOD_NAMES[method]}, {size_label(fraction)}", "",
                          f"| setting | seeds | valid {SELECTION_METRIC} | test HR@50 | test NDCG@50 | |",
                          "|---|---|---|---|---|---|"]
                for key, group in sorted(groups.items(), key=lambda kv: -mean_valid(kv[1])):
                    hp = json.loads(key)
                    mark = ("**selected**" if chosen is not None and hp == chosen.hyperparameters
                            else "" if key in compared else "fewer seeds: not compared")
                    lines.append(f"| {hp_label(hp)} | {seed_list([r.seed for r in group])} | "
                                 f"{fmt([r.valid[SELECTION_METRIC] for r in group])} | "
                                 f"{fmt([r.test['HR@50'] for r in group])} | "
                                 f"{fmt([r.test['NDCG@50'] for r in group])} | {mark} |")
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
