"""privacy.md and privacy.png of `gdrec-privacy`, rendered from the summaries of its rows
(experiments.privacy.summary): utility and leakage per setting, the reference rows, when a family other than the
paper's CGAN was requested the leakage per (list generator, include / exclude observed), the leakage-target verdict,
and the plot of utility against reconstruction precision and membership AUC."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from data_owner.config import RESEARCH_GENERATOR  # noqa: E402
from data_owner.privacy.leakage import EXPORT_ROW, HISTORY_ROW, POPULARITY_ROW  # noqa: E402
from experiments.lab import LabConfig  # noqa: E402
from experiments.privacy.settings import PrivacySetting  # noqa: E402
from experiments.privacy.summary import (  # noqa: E402
    CHECK_METRIC,
    LEAKAGE_BOUND,
    LEAKAGE_FIELDS,
    NO_MEMBER,
    NOT_RUN,
    TARGET_TITLE,
    UTILITY_FLOOR,
    SettingSummary,
    leakage_target,
    summarise,
)
from experiments.results import PrivacyRow, read_rows  # noqa: E402

GENERATOR_TITLE = "Leakage by list generator"


def machines_label(rows: Sequence[PrivacyRow]) -> str:
    seen = sorted({f"{r.machine.get('gpu') or r.machine.get('cpu')} (device {r.machine.get('device')}, "
                   f"{r.machine.get('torch_threads')} torch threads, torch {r.machine.get('torch')})"
                   for r in rows})
    return "; ".join(seen) or "unknown"


def render_markdown(summaries: Sequence[SettingSummary], base: LabConfig, seeds: Sequence[int],
                    invocation_seconds: float | None = None) -> str:
    rows = [r for s in summaries for r in s.rows]
    fpr = rows[0].leakage["max_fpr"] if rows else 0.01
    dataset = base.dataset
    cgan = {k: v for k, v in base.cgan.identity().items() if k != "seed"}
    lines = [
        f"# Privacy-utility report: {dataset}, {base.family.upper()}", "",
        "What a consumer receives under each privacy setting, measured against the owner's true training "
        "interactions T_u (ALGORITHMS.md section 5), beside the utility of the data-free GD student trained from that "
        "export alone (test item, full ranking, training items excluded). Rendered by `gdrec-privacy` "
        "(experiments/privacy_report.py) from its JSONL rows; means (± sample std) over seeds; "
        f"\"{NOT_RUN}\" = no row, nothing filled in.", "",
        f"- dataset: `{dataset}`; model: {base.family}; student at {base.fraction:.0%} of the teacher; "
        f"L = {base.list_length}; temperature {base.temperature:g}; lambda {base.lam:g}",
        f"- seeds requested: {', '.join(map(str, seeds))}",
        f"- epochs: KD teacher {base.teacher_epochs}, CGAN {base.cgan.epochs}, GD teacher {base.gd_epochs}, "
        f"GD student {base.student_epochs} (patience {base.patience}, evaluated every {base.eval_every}); "
        f"CGAN {json.dumps(cgan, default=str)}"
        + ("; under randomized response every teacher epoch samples as many pairs as the true training matrix "
           "holds (`--rr-true-size-epochs`)" if base.rr_true_size_epochs else ""),
        *generators_line(summaries, base),
        f"- machine: {machines_label(rows)}",
        f"- run time: {sum(r.setting_seconds for r in rows) / 60:.1f} min summed over the rows' chains "
        "(a KD teacher and CGAN shared by settings counts in the first of them)"
        + (f"; this invocation {invocation_seconds / 60:.1f} min" if invocation_seconds is not None else ""),
        "", "## Settings", "",
    ]
    for s in summaries:
        ran = ", ".join(map(str, s.seeds)) or "none"
        lines.append(f"- `{s.setting.name}`: {s.setting.describe()} (seeds run: {ran})")
    lines += [
        "", "## Utility and leakage", "",
        f"| setting | seeds | GD student test HR@50 | test NDCG@50 | HR@50 vs default | precision | recall | "
        f"subset of T_u | membership AUC | TPR@{fpr:.0%} FPR | model input pairs / true |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    default = next((s for s in summaries if s.setting.is_default and s.rows), None)
    base_hr = default.student("test", "HR@50").mean if default else None
    for s in summaries:
        if not s.rows:
            lines.append(f"| {s.setting.name} | 0 | " + " | ".join([NOT_RUN] * 9) + " |")
            continue
        hr = s.student("test", "HR@50")
        vs = f"{hr.mean / base_hr:.1%}" if base_hr else "-"
        cells = [s.leakage(EXPORT_ROW, m).cell() for m in LEAKAGE_FIELDS]
        lines.append(f"| {s.setting.name} | {len(s.rows)} | {hr.cell()} | {s.student('test', 'NDCG@50').cell()} | "
                     f"{vs} | " + " | ".join(cells) + f" | {s.input_ratio().cell(2)} |")
    reference = default or next((s for s in summaries if s.rows), None)
    lines += ["", "## Reference rows", ""]
    if reference is None:
        lines.append(f"{NOT_RUN}: no setting has a row yet.")
    else:
        lines += [
            "Reconstruction numbers of the reference rows depend only on the data and L; their membership columns "
            f"score the members with the GD teacher of the `{reference.setting.name}` setting.", "",
            f"| list | precision | recall | subset of T_u | membership AUC | TPR@{fpr:.0%} FPR |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in (POPULARITY_ROW, HISTORY_ROW):
            lines.append(f"| {name} | " + " | ".join(reference.leakage(name, m).cell() for m in LEAKAGE_FIELDS) + " |")
    if any(not s.setting.is_cgan for s in summaries):
        lines += generator_table(summaries, reference)
    check = leakage_target(summaries)
    lines += [
        "", f"## {TARGET_TITLE}", "",
        f"The target: a control brings the export's reconstruction {CHECK_METRIC} within {LEAKAGE_BOUND:g}x of the "
        f"popularity reference while the GD student keeps >= {UTILITY_FLOOR:.0%} of the default setting's test "
        f"HR@50 (means over seeds), on `{dataset}`.", "",
    ]
    lines += [f"- {line}" for line in check.lines]
    answer = f"**A control meets the target: {check.verdict}**"
    if check.passing:
        answer += f" ({', '.join(check.passing)})"
    lines += ["", answer, "",
              "Notes: precision |L_u & T_u| / |L_u|, recall |L_u & T_u| / |T_u| and the subset share are means over "
              "users against the true T_u, also under randomized response (the models saw a randomized matrix, the "
              "audit uses the real one). Membership AUC: the export's soft targets on listed training items vs the "
              "GD teacher's soft targets on each user's held-out validation and test items (0.5 = no memorisation); "
              f"\"{NO_MEMBER}\" where no listed item is a training item. \"model input pairs / true\": training "
              "pairs the owner's models saw over the true ones (above 1 under randomized response: the flipped-on "
              "zeros). Under randomized response read the membership AUC with care: the held-out items are kept out "
              "of the randomized input (they are the evaluation targets), so the comparison is between training "
              "items that survived the flips as model-input positives and items the models never saw as positives; "
              "an AUC near 1 there says the models learnt their (randomized) input, not that the true history "
              "leaks, and when precision is near 0 it rests on a handful of listed members.", ""]
    return "\n".join(lines)


def generators_line(summaries: Sequence[SettingSummary], base: LabConfig) -> list[str]:
    """The header line naming the list generator families and their settings; none when only the CGAN ran."""
    families = list(dict.fromkeys(s.setting.generator for s in summaries))
    if families == [RESEARCH_GENERATOR]:
        return []
    named = [f if f == RESEARCH_GENERATOR else f"{f} {json.dumps(base.generator_settings.get(f, {}), default=str)}"
             for f in families]
    return [f"- list generators: {', '.join(named)} (settings over each family's defaults; a setting of a family "
            "other than the CGAN is named `family:switches`)"]


def generator_table(summaries: Sequence[SettingSummary], reference: SettingSummary | None) -> list[str]:
    """"Leakage by list generator": one row per (family, include / exclude observed) without randomized response,
    then the popularity and raw-history reference rows."""
    lines = ["", f"## {GENERATOR_TITLE}", "",
             "The settings without randomized response, per list generator family (randomized response: the table "
             "\"Utility and leakage\"). \"own items in the list\": the share of listed items that are the user's own "
             "training items; for a reference list it is its precision (the same ratio).", "",
             "| list generator | lists | seeds | GD student test HR@50 | precision | recall | own items in the list | "
             "membership AUC |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    plain = [s for s in summaries if s.setting.rr_epsilon is None]
    for s in plain:
        lists = "include observed" if s.setting.include_observed else "exclude observed"
        if not s.rows:
            lines.append(f"| {s.setting.generator} | {lists} | 0 | " + " | ".join([NOT_RUN] * 5) + " |")
            continue
        lines.append(f"| {s.setting.generator} | {lists} | {len(s.rows)} | {s.student('test', 'HR@50').cell()} | "
                     f"{s.leakage(EXPORT_ROW, 'precision').cell()} | {s.leakage(EXPORT_ROW, 'recall').cell()} | "
                     f"{s.observed_share().cell()} | {s.leakage(EXPORT_ROW, 'membership_auc').cell()} |")
    if not plain:
        lines.append(f"| - | - | 0 | {NOT_RUN} | {NOT_RUN} | {NOT_RUN} | {NOT_RUN} | {NOT_RUN} |")
    if reference is not None:
        for name in (POPULARITY_ROW, HISTORY_ROW):
            precision = reference.leakage(name, "precision")
            lines.append(f"| {name} | - | {len(reference.rows)} | - | {precision.cell()} | "
                         f"{reference.leakage(name, 'recall').cell()} | {precision.cell()} | "
                         f"{reference.leakage(name, 'membership_auc').cell()} |")
    return lines


def render_plot(summaries: Sequence[SettingSummary], path: Path, title: str) -> None:
    """Utility (GD student test HR@50) against leakage: reconstruction precision, and membership AUC. One colour
    and marker per setting in both panels; a setting without a value (no member) has no point in that panel."""
    ran = [s for s in summaries if s.rows]
    default = next((s for s in ran if s.setting.is_default), None)
    reference = default or (ran[0] if ran else None)
    colours = plt.get_cmap("tab10")
    markers = "osD^vP*Xph"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    settings_legend: dict[str, Any] = {}
    for ax, metric, label in ((axes[0], "precision", "reconstruction precision |L_u & T_u| / |L_u| (export)"),
                              (axes[1], "membership_auc", "membership ROC AUC of the soft targets (export)")):
        for k, s in enumerate(ran):
            x, y = s.leakage(EXPORT_ROW, metric).mean, s.student("test", "HR@50").mean
            if x is None:  # no member: the point does not exist
                continue
            settings_legend[s.setting.name] = ax.scatter([x], [y], s=45, zorder=3, color=colours(k % 10),
                                                         marker=markers[k % len(markers)], alpha=0.85)
        if reference is not None:
            pop = reference.leakage(POPULARITY_ROW, metric).mean
            if pop is not None:
                ax.axvline(pop, color="grey", linestyle=":", label="popularity top-L (reference)")
                if metric == CHECK_METRIC:
                    ax.axvline(LEAKAGE_BOUND * pop, color="grey", linestyle="--",
                               label=f"{LEAKAGE_BOUND:g}x popularity")
            history = reference.leakage(HISTORY_ROW, metric).mean
            if history is not None:
                ax.axvline(history, color="black", linestyle="-.", label="raw history T_u (reference)")
        if default is not None:
            ax.axhline(UTILITY_FLOOR * default.student("test", "HR@50").mean, color="tab:red", linestyle="--",
                       label=f"{UTILITY_FLOOR:.0%} of default HR@50")
        if metric == "membership_auc":
            ax.axvline(0.5, color="tab:green", linestyle=":", label="0.5 (no memorisation)")
        ax.set_xlabel(label)
        ax.set_ylabel("GD student test HR@50")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    if settings_legend:
        fig.legend(list(settings_legend.values()), list(settings_legend), title="setting", fontsize=8,
                   loc="outside right center")
    else:
        axes[0].text(0.5, 0.5, "no setting has a row yet", transform=axes[0].transAxes, ha="center")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: Path, out_dir: Path, base: LabConfig, settings: Sequence[PrivacySetting],
                 seeds: Sequence[int], invocation_seconds: float | None = None) -> list[Path]:
    summaries = summarise(read_rows(results), base, settings, seeds)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, png = out_dir / "privacy.md", out_dir / "privacy.png"
    md.write_text(render_markdown(summaries, base, seeds, invocation_seconds), encoding="utf-8")
    render_plot(summaries, png, f"Privacy vs utility: {base.dataset}, {base.family.upper()} "
                                f"(mean over seeds {', '.join(map(str, seeds))})")
    return [md, png]

