"""`gdrec-privacy`: the privacy-utility report (ALGORITHMS.md section 5) for one dataset and base model.

For each privacy setting (by default: the paper's default, exclude-observed, and randomized response at epsilon
1, 2, 4, 8) and each seed, the GD chain of `experiments.lab` runs in-process: KD teacher -> CGAN -> generated lists
-> GD teacher -> export -> data-free GD student. Each finished (setting, seed) becomes one JSONL row holding

    the GD student's HR/NDCG@{5,10,20,50} on the owner's true validation and test items (training items excluded),
    the leakage report of that setting's export against the owner's TRUE training interactions
    (`data_owner.privacy.leakage_report`: reconstruction precision / recall, subset share, membership AUC and
    TPR at 1% FPR of the soft targets), with the popularity top-L and raw-history reference rows,
    the KD / GD teachers' and the generator's own test numbers, the share of listed items that are the user's own
    training items, the chain's settings, the machine and the seconds it took.

A setting's audited export is the very bundle `lab.train_gd_student` distilled its student from (returned in the
stage's extra; the lab's export key, consumer "lab"). Within one seed,
settings that share the KD teacher's and the CGAN's owner stage keys (`data_owner.pipeline.stage_keys`: the same
`rr_epsilon`) share those stages (exclude-observed only changes how lists are drawn from GF_u); nothing else is shared.

Resuming: rows are appended (flushed and fsync'ed) to --results as each (setting, seed) finishes; rerunning the same
command skips every row whose key (setting, seed and every chain setting it depends on) is already there, so an
interrupted sweep continues where it stopped and a widened one (more seeds, another epsilon) runs only what is new.
Stages are not cached on disk: a setting interrupted mid-chain restarts from its KD teacher.

The report (`privacy.md`, `privacy.png`) is rendered from the rows whose keys belong to the current command: means
over seeds, requested settings without a row printed as "not run", membership cells without members printed as
such; nothing is filled in. It ends with the leakage target, checked from those rows: does any control bring
reconstruction precision within 2x of the popularity reference while the GD student keeps >= 80% of the default
setting's test HR@50?

`--report-only` renders privacy.md and privacy.png from the rows without training. It needs the same chain options
as the run (epochs, CGAN, teacher, L, t, lambda, fraction), since rows are matched by key. A row's key also holds
the GD student's sampler revision (`model_consumer.distill.SAMPLER_REVISION`; revision 1 is keyed without it), and
the report takes, per (setting, seed), the row of the newest revision there is: a run redoes the rows of an older
revision, while `--report-only` renders committed rows as they are and says how many are of an older revision.

A real sweep (from the repository root; rows, markdown and plot land in reports/ml-100k/):

    gdrec-privacy --dataset ml-100k --model bpr --seeds 0,1,2 --cgan-epochs 100 -v
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import typer  # noqa: E402

from data_owner import stages  # noqa: E402
from data_owner.config import (  # noqa: E402
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
from data_owner.data import LeaveOneOutSplit  # noqa: E402
from data_owner.gan import GeneratedLists  # noqa: E402
from data_owner.pipeline import split_fingerprint, stage_keys  # noqa: E402
from data_owner.privacy import export_pairs, leakage_report, soft_target_scorer  # noqa: E402
from data_owner.privacy.leakage import EXPORT_ROW, HISTORY_ROW, POPULARITY_ROW  # noqa: E402
from data_owner.settings import secret_fingerprint  # noqa: E402
from experiments import lab  # noqa: E402
from experiments.lab import GeneratorStage, LabConfig, StageResult  # noqa: E402
from experiments.presets import GD_LAMBDA, STUDENT_EPOCHS, STUDENT_FRACTION  # noqa: E402
from experiments.results import ResultsFile, read_rows  # noqa: E402
from experiments.runner import (  # noqa: E402
    dataset_slug,
    gd_teacher_settings_payload,
    machine_info,
)
from model_consumer.distill import SAMPLER_REVISION as GD_SAMPLER_REVISION  # noqa: E402
from shared.checkpoint import exclusive_lock_or_fail  # noqa: E402
from shared.device import resolve_device  # noqa: E402
from shared.options import json_object  # noqa: E402

log = logging.getLogger("gdrec.privacy")

DEFAULT_SETTINGS = "default,exclude-observed,rr=1,rr=2,rr=4,rr=8"
RESULTS_NAME = "privacy.jsonl"
LEAKAGE_BOUND = 2.0  # the leakage target: within 2x of the popularity reference ...
UTILITY_FLOOR = 0.8  # ... while keeping at least 80% of the default GD student's HR@50
CHECK_METRIC = "precision"  # the leakage metric of the target (reconstruction precision)
NOT_RUN = "not run"
NO_MEMBER = "no member"  # membership undefined: no listed item is a training item (exclude-observed lists)
TARGET_TITLE = "Does a control meet the leakage target?"


# ----------------------------------------------------------------------------------------------------------------
# Privacy settings


@dataclass(frozen=True)
class PrivacySetting:
    """One combination of the export's privacy switches (docs/privacy.md, "The privacy model")."""

    include_observed: bool = True
    rr_epsilon: float | None = None

    @property
    def name(self) -> str:
        parts = [] if self.include_observed else ["exclude-observed"]
        if self.rr_epsilon is not None:
            parts.append(f"rr={self.rr_epsilon:g}")
        return "+".join(parts) or "default"

    @property
    def is_default(self) -> bool:
        return self.include_observed and self.rr_epsilon is None

    def describe(self) -> str:
        if self.is_default:
            return "the paper's mode: lists may hold the user's own training items, no randomized response"
        parts = []
        if not self.include_observed:
            parts.append("lists drawn only from items outside the user's (model-visible) training items")
        if self.rr_epsilon is not None:
            p = 1.0 / (1.0 + math.exp(self.rr_epsilon)) if self.rr_epsilon < 700 else 0.0
            parts.append(f"randomized response on the training matrix, epsilon {self.rr_epsilon:g} per interaction "
                         f"(each bit flipped with p = {p:.3g}; not user-level)")
        return "; ".join(parts)


_RR = re.compile(r"^rr\s*[=:]?\s*(\S+)$")


def parse_settings(text: str) -> tuple[PrivacySetting, ...]:
    """Comma-separated settings; each is `default`, or `+`-joined switches `exclude-observed` and `rr=EPS`,
    e.g. "default,exclude-observed,rr=1,exclude-observed+rr=4"."""
    settings: list[PrivacySetting] = []
    for token in (t.strip().lower() for t in text.split(",")):
        if not token:
            continue
        include_observed, epsilon = True, None
        if token != "default":
            for part in (p.strip() for p in token.split("+")):
                match = _RR.match(part)
                if part in ("exclude-observed", "exclude_observed", "no-observed"):
                    include_observed = False
                elif match:
                    try:
                        epsilon = float(match.group(1))
                    except ValueError:
                        raise ValueError(f"{part!r}: epsilon must be a number, e.g. rr=4") from None
                    if not (math.isfinite(epsilon) and epsilon > 0):
                        raise ValueError(f"{part!r}: epsilon must be positive and finite")
                else:
                    raise ValueError(f"unknown privacy setting {part!r} in {token!r}; use default, exclude-observed, "
                                     "rr=EPS, or switches joined with '+' (exclude-observed+rr=4)")
        setting = PrivacySetting(include_observed, epsilon)
        if setting in settings:
            raise ValueError(f"privacy setting {setting.name!r} is listed twice")
        settings.append(setting)
    if not settings:
        raise ValueError("no privacy setting given; e.g. " + DEFAULT_SETTINGS)
    return tuple(settings)


def setting_config(base: LabConfig, setting: PrivacySetting, seed: int) -> LabConfig:
    return replace(base, seed=seed, include_observed=setting.include_observed, rr_epsilon=setting.rr_epsilon)


def chain_settings(config: LabConfig, sampler_revision: int = GD_SAMPLER_REVISION) -> dict[str, Any]:
    """Everything a row depends on besides (setting, seed): a change gives the row a new key. Sampler revision 1
    is keyed without a `student_sampler` field."""
    settings: dict[str, Any] = {"gd_teacher": gd_teacher_settings_payload(config),
                                "student_epochs": config.student_epochs, "fraction": config.fraction,
                                "temperature": config.temperature, "lam": config.lam, "family": config.family}
    if sampler_revision > 1:
        settings["student_sampler"] = sampler_revision
    return settings


def row_key(base: LabConfig, setting: PrivacySetting, seed: int, sampler_revision: int = GD_SAMPLER_REVISION) -> str:
    config = setting_config(base, setting, seed)
    payload = {"setting": asdict(setting), "seed": seed, "settings": chain_settings(config, sampler_revision)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def row_sampler_revision(row: dict[str, Any]) -> int:
    """The GD student sampler revision a row was made with (1 when its settings do not name one)."""
    return int(row.get("settings", {}).get("student_sampler", 1))


# ----------------------------------------------------------------------------------------------------------------
# Running the chain per setting


@dataclass
class _Stages:
    """The KD teacher and CGAN of one config, by their owner stage keys (`data_owner.pipeline.stage_keys`): the
    settings that differ only in how lists are drawn share them."""

    kd_key: str
    cgan_key: str
    train_split: LeaveOneOutSplit
    kd: StageResult
    generator: GeneratorStage


class PrivacyRunner:
    def __init__(self, base: LabConfig, split: LeaveOneOutSplit, device: torch.device) -> None:
        self.base = base
        self.split = split
        self.device = device
        self.machine = machine_info(device)
        self.data_fingerprint = split_fingerprint(split)
        self._stages_held: _Stages | None = None

    def _stages(self, config: LabConfig) -> _Stages:
        keys = stage_keys(config, self.data_fingerprint, secret_fingerprint(lab.lab_secret(config.seed)))
        held = self._stages_held
        if held is None or (held.kd_key, held.cgan_key) != (keys["kd_teacher"], keys["cgan"]):
            self._stages_held = None  # free the previous models first
            train_split = lab.training_split(self.split, config)
            kd = lab.train_kd_teacher(config, self.split, train_split, self.device)
            generator = lab.train_generator(config, self.split, train_split, self.device)
            self._stages_held = _Stages(keys["kd_teacher"], keys["cgan"], train_split, kd, generator)
        return self._stages_held

    def _lists(self, config: LabConfig, shared: _Stages) -> GeneratedLists:
        made = shared.generator.lists
        if made.include_observed == config.include_observed:
            return made
        return stages.lists(shared.generator.generator.model, shared.train_split, config)

    def run(self, setting: PrivacySetting, seed: int) -> dict[str, Any]:
        """One (setting, seed): the chain, the student's metrics and the export's leakage; the row (not written)."""
        config = setting_config(self.base, setting, seed)
        started = time.perf_counter()
        shared = self._stages(config)
        lists = self._lists(config, shared)
        gd = lab.train_gd_teacher(config, self.split, shared.train_split, shared.kd.model, lists, self.device)
        student = lab.train_gd_student(config, self.split, gd.model, lists, self.device)
        secret = lab.lab_secret(seed)
        bundle = student.extra["export"]  # exactly what the student learnt from
        report = leakage_report(self.split, export_pairs(bundle, self.split, secret, config.consumer_id),
                                soft_target_scorer(gd.model, config.temperature),
                                context={"setting": setting.name, "seed": seed})
        g = shared.generator.generator
        return {
            "key": row_key(self.base, setting, seed),
            "dataset": config.dataset,
            "family": config.family,
            "seed": seed,
            "setting": {"name": setting.name, **asdict(setting)},
            "student": {"valid": student.valid, "test": student.test, "params": student.params,
                        "best_epoch": student.best_epoch, "seconds": student.seconds},
            "leakage": report.to_dict(),
            "observed_share": lists.observed_share(self.split.train),
            "model_visible_train_pairs": int(shared.train_split.train.nnz),
            "true_train_pairs": int(self.split.train.nnz),
            "kd_teacher": {"test": shared.kd.test, "params": shared.kd.params},
            "gd_teacher": {"test": gd.test, "params": gd.params},
            "generator": {"test": g.test, "best_epoch": g.best_epoch},
            "settings": chain_settings(config),
            "machine": self.machine,
            "setting_seconds": time.perf_counter() - started,  # the shared KD teacher and CGAN count once
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def results_lock(results: Path):
    return exclusive_lock_or_fail(results.with_name(f".{results.name}.lock"),
                          f"another gdrec-privacy run is writing {results}; wait for it or pass another --results")


@dataclass
class SweepSummary:
    total: int
    skipped: int
    ran: int
    seconds: float


def run_sweep(base: LabConfig, settings: Sequence[PrivacySetting], seeds: Sequence[int],
              results: Path) -> SweepSummary:
    """Run every (setting, seed) whose row is not yet in `results`, appending each row as it finishes."""
    started = time.perf_counter()
    wanted = [(seed, s) for seed in seeds for s in settings]
    with results_lock(results):
        file = ResultsFile(results)
        finished = file.finished_keys()
        todo = [(seed, s) for seed, s in wanted if row_key(base, s, seed) not in finished]
        log.info("%d (setting, seed) rows wanted, %d already in %s, %d to run", len(wanted), len(wanted) - len(todo),
                 results, len(todo))
        if todo:
            device = resolve_device(base.device)
            runner = PrivacyRunner(base, lab.load_split(base.dataset), device)
            # group by (seed, rr_epsilon) so the shared KD teacher and CGAN are trained once per group
            todo.sort(key=lambda job: (job[0], job[1].rr_epsilon is not None, job[1].rr_epsilon or 0.0,
                                       not job[1].include_observed))
            for seed, setting in todo:
                row = runner.run(setting, seed)
                file.append(row)
                export = _leak(row, EXPORT_ROW)
                log.info("%s seed %d: student test HR@50 %.4f, export precision %.4f (%.0f s)", setting.name, seed,
                         row["student"]["test"]["HR@50"], export["precision"], row["setting_seconds"])
    return SweepSummary(len(wanted), len(wanted) - len(todo), len(todo), time.perf_counter() - started)


# ----------------------------------------------------------------------------------------------------------------
# Aggregation


def _leak(row: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in row["leakage"]["rows"]:
        if entry["name"] == name:
            return entry
    raise KeyError(f"row {row.get('key')} has no leakage row {name!r}")


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


def _stat(values: Sequence[float | None]) -> Stat:
    return Stat(tuple(float(v) for v in values if v is not None), sum(v is None for v in values))


LEAKAGE_FIELDS = ("precision", "recall", "subset_share", "membership_auc", "tpr_at_low_fpr")


@dataclass(frozen=True)
class SettingSummary:
    setting: PrivacySetting
    rows: tuple[dict[str, Any], ...]  # one per seed, by seed

    @property
    def seeds(self) -> list[int]:
        return [int(r["seed"]) for r in self.rows]

    def student(self, part: str, metric: str) -> Stat:
        return _stat([r["student"][part][metric] for r in self.rows])

    def leakage(self, name: str, metric: str) -> Stat:
        return _stat([_leak(r, name)[metric] for r in self.rows])

    def input_ratio(self) -> Stat:
        return _stat([r["model_visible_train_pairs"] / r["true_train_pairs"] for r in self.rows])


def summarise(rows: Sequence[dict[str, Any]], base: LabConfig, settings: Sequence[PrivacySetting],
              seeds: Sequence[int]) -> list[SettingSummary]:
    """Per requested setting, the rows of the requested seeds under the given chain settings: for each seed the row
    of the newest GD student sampler revision there is (the last row of a key when it was written twice)."""
    by_key = {row["key"]: row for row in rows if "key" in row}
    revisions = range(GD_SAMPLER_REVISION, 0, -1)
    out = []
    for setting in settings:
        found = []
        for seed in seeds:
            row = next((by_key[k] for k in (row_key(base, setting, seed, r) for r in revisions) if k in by_key), None)
            if row is not None:
                found.append(row)
        out.append(SettingSummary(setting, tuple(sorted(found, key=lambda r: r["seed"]))))
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


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def _machines(rows: Sequence[dict[str, Any]]) -> str:
    seen = sorted({f"{r['machine'].get('gpu') or r['machine'].get('cpu')} (device {r['machine'].get('device')}, "
                   f"{r['machine'].get('torch_threads')} torch threads, torch {r['machine'].get('torch')})"
                   for r in rows if "machine" in r})
    return "; ".join(seen) or "unknown"


def render_markdown(summaries: Sequence[SettingSummary], base: LabConfig, seeds: Sequence[int],
                    invocation_seconds: float | None = None) -> str:
    rows = [r for s in summaries for r in s.rows]
    fpr = rows[0]["leakage"]["max_fpr"] if rows else 0.01
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
        f"- machine: {_machines(rows)}",
        f"- run time: {sum(float(r['setting_seconds']) for r in rows) / 60:.1f} min summed over the rows' chains "
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


# ----------------------------------------------------------------------------------------------------------------
# CLI

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
        chosen = parse_settings(settings)
        family = model.lower()
        teacher = (teacher_from_fields(dataset, family, json_object(teacher_json, "--teacher-json"))
                   if teacher_json else None)
        base = LabConfig(dataset=dataset, family=family, fraction=fraction, list_length=list_length,
                         temperature=temperature, lam=lam, teacher_epochs=teacher_epochs, gd_epochs=gd_epochs,
                         student_epochs=student_epochs, patience=patience, eval_every=eval_every,
                         cgan=cgan_preset(dataset, cgan_epochs).with_json(cgan_json), teacher=teacher,
                         batch_size=batch_size, device=device, progress=progress,
                         rr_true_size_epochs=rr_true_size_epochs)
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
    older = sorted({row_sampler_revision(r) for s in summaries for r in s.rows} - {GD_SAMPLER_REVISION})
    if older:
        count = sum(row_sampler_revision(r) != GD_SAMPLER_REVISION for s in summaries for r in s.rows)
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
