"""Which rows the reports show: one row per cell (the last written), and for each (model, method, size) the
hyperparameter setting with the best mean validation NDCG@50 among the settings run on the most seeds (the test item
selects nothing); the formatting of means over seeds, and the labels of sizes, models and machines shared by the
tables (experiments.tables) and figures (experiments.figures)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.presets import GD_LAMBDA, SELECTION_METRIC
from experiments.results import CellRow, TimingRow

NOT_RUN = "not run"
METHOD_ORDER = ("teacher", "student", "cd", "rd", "bd", "gd")
METHOD_NAMES = {"teacher": "Teacher", "student": "Student", "cd": "CD", "rd": "RD", "bd": "BD", "gd": "GD"}
FAMILY_NAMES = {"bpr": "BPR", "neumf": "NeuMF"}


def cell_rows(rows: Iterable[CellRow | Mapping[str, Any]]) -> list[CellRow]:
    """The rows as `CellRow`s (rows read from a results file are plain JSON objects)."""
    return [row if isinstance(row, CellRow) else CellRow.from_dict(row) for row in rows]


def timing_rows(rows: Iterable[TimingRow | Mapping[str, Any]]) -> list[TimingRow]:
    """The rows as `TimingRow`s (rows read from inference.jsonl are plain JSON objects)."""
    return [row if isinstance(row, TimingRow) else TimingRow.from_dict(row) for row in rows]


# the names of the list generators (data_owner.generators) in the reports
LIST_GENERATOR_NAMES = {"cgan": "CGAN", "itemknn": "kNN", "vae": "VAE", "teacher": "teacher", "ease": "EASE"}
PAPER_LISTS = ("cgan", True)  # the paper's GD lists: the CGAN's, a user's own items allowed in


def cell_identity(row: CellRow) -> tuple:
    """(dataset, family, method, seed, fraction, hyperparameters), with a GD row's (list generator,
    include-observed) where they are not the paper's (so rows of different lists stay apart, and the paper's GD
    rows, recording include-observed or not, dedupe as they always did)."""
    identity: tuple = (row.dataset, row.family, row.method, row.seed, round(float(row.fraction), 6),
                       json.dumps(row.hyperparameters, sort_keys=True))
    if not paper_lists(row):
        identity += (("lists", *gd_lists(row)),)
    return identity


def gd_lists(row: CellRow) -> tuple[str, bool]:
    """(list generator, include_observed) of a GD row: ("cgan", True) for the paper's lists; a row that does not
    record include-observed made its lists the paper's way."""
    return (row.list_generator or "cgan", True if row.include_observed is None else bool(row.include_observed))


def paper_lists(row: CellRow) -> bool:
    """Not a GD row, or a GD row whose lists are the paper's (`PAPER_LISTS`): the rows that reproduce the paper."""
    return row.method != "gd" or gd_lists(row) == PAPER_LISTS


def gd_variants(rows: Iterable[CellRow]) -> list[tuple[str, bool]]:
    """The (list generator, include_observed) of the GD rows other than the paper's, in the order of
    `LIST_GENERATOR_NAMES` (auto's after the families), own items out before in."""
    order = list(LIST_GENERATOR_NAMES)

    def rank(variant: tuple[str, bool]) -> tuple:
        name = variant[0]
        base = name.split(":", 1)[-1]
        return (name.startswith("auto:"), order.index(base) if base in order else len(order), name, variant[1])

    return sorted({gd_lists(r) for r in rows if r.method == "gd"} - {PAPER_LISTS}, key=rank)


def gd_label(variant: tuple[str, bool]) -> str:
    """The table label of a GD variant: "GD (CGAN)", "GD (kNN)", "GD (auto: VAE)", "GD (EASE, own items in)"; the
    suffix names the switch where it differs from the family's usual setting (the CGAN's lists keep a user's own
    items, the other families' leave them out)."""
    name, include_observed = variant
    base = name.split(":", 1)[-1]
    shown = LIST_GENERATOR_NAMES.get(base, base)
    if name.startswith("auto:"):
        shown = f"auto: {shown}"
    if name == "cgan":
        suffix = "" if include_observed else ", own items out"
    else:
        suffix = ", own items in" if include_observed else ""
    return f"GD ({shown}{suffix})"


def reference_lists(row: CellRow) -> bool:
    """A GD row whose lists came from somewhere other than the generator (a research reference, not GD-REC)."""
    return (row.list_source or "generator") != "generator"


def latest_rows(rows: Iterable[CellRow]) -> list[CellRow]:
    """One row per cell identity (`cell_identity`: dataset, family, method, seed, fraction, hyperparameters, and
    the lists where recorded): the last written."""
    out: dict[tuple, CellRow] = {}
    for row in rows:
        out[cell_identity(row)] = row
    return list(out.values())


@dataclass(frozen=True)
class Selected:
    hyperparameters: dict[str, float]
    rows: list[CellRow]  # one per seed
    candidates: int  # hyperparameter settings compared

    @property
    def seeds(self) -> int:
        return len(self.rows)

    def values(self, part: str, metric: str) -> list[float]:
        """`metric` of each seed's row in `part` ("valid", "test" or "test_sampled"), where the row has it."""
        return [float(getattr(row, part)[metric]) for row in self.rows if metric in getattr(row, part)]


def settings(rows: Sequence[CellRow], family: str, method: str, fraction: float,
             where: Callable[[CellRow], bool] | None = None) -> dict[str, list[CellRow]]:
    """Every hyperparameter setting run for one (model, method, size): its JSON key -> its rows, by seed."""
    groups: dict[str, list[CellRow]] = defaultdict(list)
    for row in rows:
        if (row.family == family and row.method == method and math.isclose(row.fraction, fraction)
                and (where is None or where(row))):
            groups[json.dumps(row.hyperparameters, sort_keys=True)].append(row)
    return {key: sorted(group, key=lambda r: r.seed) for key, group in sorted(groups.items())}


def compared_settings(groups: dict[str, list[CellRow]]) -> list[str]:
    """The settings that compete: those run on the most seeds, so that every candidate is judged on as many seeds
    (a grid still running, or run on fewer seeds, cannot win on one lucky seed)."""
    most = max((len(group) for group in groups.values()), default=0)
    return [key for key, group in groups.items() if len(group) == most]


def mean_valid(group: Sequence[CellRow]) -> float:
    return float(np.mean([r.valid[SELECTION_METRIC] for r in group]))


def select(rows: Sequence[CellRow], family: str, method: str, fraction: float,
           where: Callable[[CellRow], bool] | None = None) -> Selected | None:
    """The setting with the best mean validation NDCG@50 over seeds, among the settings run on the most seeds;
    None when no cell ran."""
    return pick(settings(rows, family, method, fraction, where))


def pick(groups: dict[str, list[CellRow]]) -> Selected | None:
    if not groups:
        return None
    compared = compared_settings(groups)
    best = max(compared, key=lambda k: mean_valid(groups[k]))
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


def hp_label(hp: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in hp.items()) or "-"


def student_fractions(rows: Sequence[CellRow]) -> list[float]:
    return sorted({float(r.fraction) for r in rows if r.method != "teacher"}, reverse=True)


def families_in(rows: Sequence[CellRow]) -> list[str]:
    present = {r.family for r in rows}
    return [f for f in FAMILY_NAMES if f in present] + sorted(present - set(FAMILY_NAMES))


def size_label(fraction: float) -> str:
    if math.isclose(fraction, 1.0):
        return "T (100%)"
    return {0.5: "M (50%)", 0.3: "S (30%)"}.get(round(fraction, 6), f"{fraction:.0%}")


def gd_table2_filter(rows: Sequence[CellRow]) -> Callable[[CellRow], bool] | None:
    """GD rows at the paper's lambda when there are any, else every GD row."""
    if any(r.method == "gd" and math.isclose(r.hyperparameters.get("lambda", -1), GD_LAMBDA) for r in rows):
        return lambda r: math.isclose(r.hyperparameters.get("lambda", -1), GD_LAMBDA)
    return None


def machine_label(machine: Mapping[str, Any]) -> str:
    """A machine as the reports name it: its GPU or CPU, device and torch threads."""
    return (f"{machine.get('gpu') or machine.get('cpu')} ({machine.get('device')}, "
            f"{machine.get('torch_threads')} threads)")


def machines_label(rows: Sequence[CellRow]) -> str:
    return "; ".join(sorted({machine_label(r.machine) for r in rows})) or "unknown"


def inference_times(rows: Sequence[CellRow], family: str, sizes: Sequence[float]
                    ) -> tuple[str | None, dict[float, list[float]]]:
    """Full-ranking milliseconds per batch for each size (teacher rows at 1.0), from one machine only: timings from
    different CPUs or GPUs do not average. The machine that timed the most of this family's rows is used."""
    by_machine: dict[str, list[CellRow]] = defaultdict(list)
    for r in rows:
        if r.family == family:
            by_machine[machine_label(r.machine)].append(r)
    if not by_machine:
        return None, {}
    machine = max(by_machine, key=lambda name: (len(by_machine[name]), name))
    times: dict[float, list[float]] = {}
    for fraction in sizes:
        found = [1e3 * r.inference["seconds"] for r in by_machine[machine]
                 if math.isclose(r.fraction, fraction) and (r.method == "teacher") == math.isclose(fraction, 1.0)]
        if found:
            times[fraction] = found
    return machine, times


def one_run_times(timings: Sequence[TimingRow], family: str, dataset: str
                  ) -> tuple[str | None, dict[float, list[float]]]:
    """Milliseconds per round for each size from the latest `gdrec-lab timing` run of this model and dataset
    (experiments.timing), with its machine; (None, {}) when there is none."""
    return run_times(latest_timing_run(timings, family, dataset))


def run_times(run: Sequence[TimingRow]) -> tuple[str | None, dict[float, list[float]]]:
    """(machine, {size: milliseconds per round}) of one timing run's rows; (None, {}) for none."""
    if not run:
        return None, {}
    return machine_label(run[0].machine), {float(t.fraction): [1e3 * s for s in t.seconds] for t in run}


def latest_timing_run(timings: Sequence[TimingRow], family: str, dataset: str) -> list[TimingRow]:
    """The rows of the latest `gdrec-lab timing` run of this model and dataset, the teacher first."""
    mine = [t for t in timings if t.family == family and t.dataset == dataset]
    if not mine:
        return []
    run = max(t.run for t in mine)
    return sorted((t for t in mine if t.run == run), key=lambda t: -t.fraction)


def seed_list(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds))
