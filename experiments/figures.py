"""The paper's figures as PNG, from the runner's rows: fig2 (accuracy of T / M / S per method), fig3 (full-ranking
inference time per model size, from a `gdrec-lab timing` run or the cells' own timings) and fig4 (the GD student's
accuracy against lambda)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.results import CellRow, TimingRow  # noqa: E402
from experiments.selection import (  # noqa: E402
    FAMILY_NAMES,
    METHOD_NAMES,
    METHOD_ORDER,
    families_in,
    gd_table2_filter,
    inference_times,
    latest_timing_run,
    mean_std,
    run_times,
    seed_list,
    select,
    size_label,
    student_fractions,
)


def _not_run(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: not run", ha="center", va="center", transform=ax.transAxes)


def _subplots(count: int, width: float = 5.0):
    fig, axes = plt.subplots(1, max(count, 1), figsize=(width * max(count, 1), 4.0), squeeze=False)
    return fig, list(axes[0])


def fig2(rows: Sequence[CellRow], dataset: str, path: Path) -> Path:
    """Test HR@50 of each method at T / M / S (selected settings), error bars = sample std over seeds."""
    families = families_in(rows)
    fig, axes = _subplots(len(families))
    gd_filter = gd_table2_filter(rows)
    sizes = [1.0] + (student_fractions(rows) or [0.5, 0.3])
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
        ax.set_xticks(range(len(sizes)), [size_label(f) for f in sizes])
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


def fig3(rows: Sequence[CellRow], dataset: str, path: Path, timings: Sequence[TimingRow] = ()) -> Path:
    """Full-ranking time of one batch of users per model size: the latest `gdrec-lab timing` run of each model
    (median over its interleaved rounds, bars from the 25th to the 75th percentile) or, without one, the runner's
    per-cell medians of one machine (mean ± std over the cells)."""
    families = families_in(rows) or sorted({t.family for t in timings if t.dataset == dataset})
    fig, axes = _subplots(len(families))
    sizes = [1.0] + (student_fractions(rows) or [0.5, 0.3])
    sources = set()
    for ax, family in zip(axes, families or ["(none)"], strict=False):
        latest = latest_timing_run(timings, family, dataset)
        machine, times = run_times(latest)
        if times:
            sources.add("one run")
            batch = sorted({int(t.batch_users) for t in latest})
            centre = [float(np.median(v)) for v in times.values()]
            low = [c - float(np.percentile(v, 25)) for c, v in zip(centre, times.values(), strict=True)]
            high = [float(np.percentile(v, 75)) - c for c, v in zip(centre, times.values(), strict=True)]
            rounds = min(len(v) for v in times.values())
            how = f"one run: median of {rounds} interleaved rounds, bars 25th-75th percentile"
        else:
            machine, times = inference_times(rows, family, sizes)
            sources.add("cells")
            batch = sorted({int(r.inference["batch_users"]) for r in rows if r.family == family})
            stats = [mean_std(found) for found in times.values()]
            centre = [mean for mean, _ in stats]
            low = high = [0.0 if math.isnan(std) else std for _, std in stats]
            how = "the cells' own timings: mean ± std over the cells"
        if centre:
            ax.bar([size_label(f) for f in times], centre, yerr=[low, high], capsize=3,
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


def lambda_sweep(rows: Sequence[CellRow], family: str, fraction: float
                 ) -> tuple[list[float], list[float], list[float], list[int]]:
    """(lambdas, mean test HR@50, std, seeds) of the GD students of one family and size, over the seeds that ran
    every lambda of the sweep, so each point averages the same seeds (all seeds when none ran them all)."""
    gd = [r for r in rows if r.family == family and r.method == "gd" and math.isclose(r.fraction, fraction)]
    lambdas = sorted({float(r.hyperparameters["lambda"]) for r in gd})
    seeds_of = [{r.seed for r in gd if math.isclose(r.hyperparameters["lambda"], lam)} for lam in lambdas]
    common = set.intersection(*seeds_of) if seeds_of else set()
    seeds = common or set().union(*seeds_of)
    xs, ys, errs = [], [], []
    for lam in lambdas:
        chosen = select(rows, family, "gd", fraction,
                        lambda r, lam=lam: math.isclose(r.hyperparameters["lambda"], lam) and r.seed in seeds)
        if chosen is None:
            continue
        mean, std = mean_std(chosen.values("test", "HR@50"))
        xs.append(lam)
        ys.append(mean)
        errs.append(0.0 if math.isnan(std) else std)
    return xs, ys, errs, sorted(seeds)


def fig4(rows: Sequence[CellRow], dataset: str, path: Path) -> Path:
    """GD student test HR@50 vs lambda (temperature selected on validation for each lambda), over the seeds that
    ran the whole sweep."""
    families = families_in(rows)
    fig, axes = _subplots(len(families))
    for ax, family in zip(axes, families or ["(none)"], strict=False):
        drawn = False
        for fraction in student_fractions(rows):
            xs, ys, errs, seeds = lambda_sweep(rows, family, fraction)
            if xs:
                label = f"GD student {size_label(fraction)}, seed{'s' if len(seeds) > 1 else ''} {seed_list(seeds)}"
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
