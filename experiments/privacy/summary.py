"""The privacy report's numbers: per requested (list generator family, setting), the rows of the requested seeds
under the command's chain settings (the newest GD student sampler revision per seed), their means over seeds, and the
leakage-target check: does a control bring reconstruction precision within 2x of the popularity reference while the
GD student keeps >= 80% of the default setting's test HR@50?"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_owner.privacy.leakage import EXPORT_ROW, POPULARITY_ROW
from experiments.lab import LabConfig
from experiments.privacy.settings import GD_SAMPLER_REVISION, PrivacySetting, row_key
from experiments.results import PrivacyRow

LEAKAGE_BOUND = 2.0  # the leakage target: within 2x of the popularity reference ...
UTILITY_FLOOR = 0.8  # ... while keeping at least 80% of the default GD student's HR@50
CHECK_METRIC = "precision"  # the leakage metric of the target (reconstruction precision)
NOT_RUN = "not run"
NO_MEMBER = "no member"  # membership undefined: no listed item is a training item (exclude-observed lists)
TARGET_TITLE = "Does a control meet the leakage target?"


@dataclass(frozen=True)
class Stat:
    values: tuple[float, ...]
    missing: int = 0  # seeds without a value (membership without members)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    def cell(self, digits: int = 4) -> str:
        if not self.values:
            return NO_MEMBER if self.missing else NOT_RUN
        text = f"{np.mean(self.values):.{digits}f}"
        if len(self.values) > 1:
            text += f" ± {np.std(self.values, ddof=1):.{digits}f}"
        if self.missing:
            text += f" ({self.missing} seed(s): {NO_MEMBER})"
        return text


def stat_of(values: Sequence[float | None]) -> Stat:
    return Stat(tuple(float(v) for v in values if v is not None), sum(v is None for v in values))


LEAKAGE_FIELDS = ("precision", "recall", "subset_share", "membership_auc", "tpr_at_low_fpr")


@dataclass(frozen=True)
class SettingSummary:
    """One requested setting (a list generator family and its privacy switches) and its rows, one per seed that has
    one."""

    setting: PrivacySetting
    rows: tuple[PrivacyRow, ...]  # one per seed, by seed

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.rows]

    def student(self, part: str, metric: str) -> Stat:
        return stat_of([r.student[part][metric] for r in self.rows])

    def leakage(self, name: str, metric: str) -> Stat:
        return stat_of([r.leak(name)[metric] for r in self.rows])

    def input_ratio(self) -> Stat:
        return stat_of([r.model_visible_train_pairs / r.true_train_pairs for r in self.rows])

    def observed_share(self) -> Stat:
        """The share of listed items that are the user's own (model-visible) training items."""
        return stat_of([r.observed_share for r in self.rows])


def summarise(rows: Sequence[Mapping[str, Any]], base: LabConfig, settings: Sequence[PrivacySetting],
              seeds: Sequence[int]) -> list[SettingSummary]:
    """Per requested setting (a setting holds its family: one summary per (family, switches)), the rows of the
    requested seeds under the given chain settings: for each seed the row of the newest GD student sampler revision
    there is (the last row of a key when it was written twice)."""
    by_key = {row["key"]: row for row in rows if "key" in row}
    revisions = range(GD_SAMPLER_REVISION, 0, -1)
    out = []
    for setting in settings:
        found = []
        for seed in seeds:
            row = next((by_key[k] for k in (row_key(base, setting, seed, r) for r in revisions) if k in by_key), None)
            if row is not None:
                found.append(PrivacyRow.from_dict(row))
        out.append(SettingSummary(setting, tuple(sorted(found, key=lambda r: r.seed))))
    return out


@dataclass(frozen=True)
class TargetCheck:
    verdict: str  # "yes", "no", or "cannot be checked"
    lines: tuple[str, ...]
    passing: tuple[str, ...] = ()


def leakage_target(summaries: Sequence[SettingSummary], metric: str = CHECK_METRIC) -> TargetCheck:
    """Does a control meet the leakage target: `metric` <= 2 x the popularity reference's and test HR@50 >= 80% of
    the default's (means over the seeds each setting ran)?"""
    default = next((s for s in summaries if s.setting.is_default and s.rows), None)
    controls = [s for s in summaries if not s.setting.is_default and s.rows]
    if default is None:
        return TargetCheck("cannot be checked", ("the default setting has no row yet: there is no HR@50 to keep",))
    if not controls:
        return TargetCheck("cannot be checked", ("no control setting has a row yet",))
    base_hr = default.student("test", "HR@50").mean
    popularity = default.leakage(POPULARITY_ROW, metric).mean
    bound = LEAKAGE_BOUND * popularity
    lines = [f"default GD student test HR@50 {base_hr:.4f} (floor {UTILITY_FLOOR:.0%}: {UTILITY_FLOOR * base_hr:.4f}); "
             f"popularity top-L reconstruction {metric} {popularity:.4f} (bound {LEAKAGE_BOUND:g}x: {bound:.4f})"]
    passing = []
    for s in controls:
        leak = s.leakage(EXPORT_ROW, metric).mean
        hr = s.student("test", "HR@50").mean
        kept = hr / base_hr if base_hr > 0 else math.nan
        # at the bound counts as within it (1e-12: float rounding of 0.8 x HR, 2 x precision)
        ok_leak, ok_hr = leak <= bound + 1e-12, base_hr > 0 and hr >= UTILITY_FLOOR * base_hr - 1e-12
        if ok_leak and ok_hr:
            passing.append(s.setting.name)
        ratio = leak / popularity if popularity > 0 else math.inf
        lines.append(f"{s.setting.name}: {metric} {leak:.4f} = {ratio:.2f}x popularity "
                     f"({'within' if ok_leak else 'above'} {LEAKAGE_BOUND:g}x), HR@50 {hr:.4f} = {kept:.1%} of default "
                     f"({'kept' if ok_hr else 'below'} {UTILITY_FLOOR:.0%}) -> {'yes' if ok_leak and ok_hr else 'no'}")
    trivial = [s.setting.name for s in controls if not s.setting.include_observed and s.setting.rr_epsilon is None]
    if trivial:
        lines.append(f"note: {', '.join(trivial)} has reconstruction 0 by construction (the lists avoid T_u); "
                     "the models still learnt T_u, and its membership cannot be measured from lists without members")
    return TargetCheck("yes" if passing else "no", tuple(lines), tuple(passing))

