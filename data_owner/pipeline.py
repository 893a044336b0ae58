"""`gdrec-owner train`: the owner's side of GD-REC Algorithm 1, as resumable stages in an artifacts directory.

    tune_teacher  (a dataset without a teacher preset, or `tune=True`) the teacher's settings searched on the
                validation item within a wall-clock budget (`data_owner.tuning`); the KD teacher trains with them
    kd_teacher  the teacher on the raw training split (L_CF), epoch selected on the validation item
    generator   the list generator (`data_owner.generators`: the paper's CGAN, item kNN, Mult-VAE, the teacher
                with Gumbel noise, EASE; or "auto", the family whose dry-run student validates best)
    lists       the generated lists GF(I)_u (top-L of the generator's scores; own training items included or not)
    gd_teacher  the KD teacher continued on raw + generated pairs (L_T = L_CF + L_GF)
    export      per user token: the list and the teacher's soft targets sigmoid(z / t); the manifest

What each stage computes is a function of `data_owner.stages` (the research harness runs the same ones), with the
settings of `data_owner.config.ChainConfig`; this module keeps their storage, keys and resumption.

Privacy switches (ALGORITHMS.md section 5), both recorded in the manifest and so in every audit-log entry:
`include_observed=False` lists only items outside the user's (model-input) training set; `rr_epsilon` trains the
CGAN and both teachers on, and generates the lists from, a randomized-response copy of the training sets
(`data_owner.privacy.randomized_split`, keyed by the secret), so that what is exported is computed from the
randomized matrix: epsilon-LDP per training interaction, not per user. Model selection (the best epoch of each stage)
still reads the held-out validation items, and the reported valid/test metrics use the raw split's protocol; both
stay at the owner.

Each stage writes `stages/<name>/` through a temporary folder renamed into place, its `stage.json` last, and
records a key: the sha256 of everything its output depends on (the data, its settings, the keys of the stages it
reads), and the output ids of the stages it read. A rerun skips every stage whose key and inputs are unchanged
and redoes the others, so an interrupted run resumes where it stopped and a changed setting redoes exactly the
stages it affects. Inside a stage, the two teachers' training saves its state at most every 5 minutes under
`stages/.partial-<name>-<key>/` (shared.training), so a rerun continues an interrupted teacher from its last saved
epoch, with the same result as an uninterrupted run; the folder goes once the stage finishes. Nothing of the raw
data is written into the artifacts except what the models learnt; raw user ids stay in the data files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_owner import stages
from data_owner.config import ChainConfig, TeacherSettings
from data_owner.data import LeaveOneOutSplit, leave_one_out_split, load_dataset
from data_owner.export import generator_card
from data_owner.generators import ListGenerator, load_generator, validation_metrics
from data_owner.lists import GeneratedLists
from data_owner.settings import ArtifactLayout, secret_fingerprint
from data_owner.teacher import DEFAULT_KS
from shared.checkpoint import atomic_write_text, exclusive_lock_or_fail, fsync_dir, load_checkpoint, save_checkpoint
from shared.device import resolve_device
from shared.models import Recommender
from shared.schemas import ExportBundle, GeneratorCard

log = logging.getLogger(__name__)

STAGES = ("kd_teacher", "generator", "lists", "gd_teacher", "export")
TUNING_STAGE = "tune_teacher"  # runs before STAGES when the chain tunes its teacher (`ChainConfig.tunes_teacher`)
INPUTS: dict[str, tuple[str, ...]] = {  # the stages whose output each stage reads (and see `inputs_of`)
    TUNING_STAGE: (),
    "kd_teacher": (),  # + the tuning stage when the chain tunes its teacher
    "generator": (),  # + the KD teacher for the teacher family and for auto's dry-run students
    "lists": ("generator",),
    "gd_teacher": ("kd_teacher", "lists"),
    "export": ("gd_teacher", "lists"),
}
STAGE_FILE = "stage.json"


@dataclass
class StageReport:
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    summary: dict[str, Any]


@dataclass
class PipelineResult:
    artifacts: Path
    export_path: Path
    export_id: str
    stages: list[StageReport]
    split_summary: str

    def stage(self, name: str) -> StageReport:
        return next(s for s in self.stages if s.name == name)


def load_split(dataset: str, data_dir: str | Path | None = None) -> LeaveOneOutSplit:
    """The owner's leave-one-out split of a dataset (named, or a file path). The file-order warning of datasets
    without timestamps is logged rather than shown as a Python warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        split = leave_one_out_split(load_dataset(dataset, data_dir=data_dir))
    for warning in caught:
        log.warning("%s", warning.message)
    return split


def split_fingerprint(split: LeaveOneOutSplit) -> str:
    """sha256 of the split (training sets, held-out items, id maps): any change to the data changes it."""
    digest = hashlib.sha256()
    for array in (split.train.indptr, split.train.indices, split.valid_item, split.test_item):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    for ids in (split.user_ids, split.item_ids):
        digest.update("\x00".join(map(str, ids)).encode())
        digest.update(b"\x01")
    return digest.hexdigest()


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def stage_keys(config: ChainConfig, data: str, secret_fp: str) -> dict[str, str]:
    """The key of each stage: what its output depends on (device and progress bars excluded)."""
    teacher = config.teacher_settings.key_payload()
    schedule = {"patience": config.patience, "eval_every": config.eval_every, "seed": config.seed,
                "batch_size": config.batch_size}
    cgan = replace(config.cgan, seed=config.seed).identity()
    # the randomized matrix depends on epsilon, the secret (its seed) and the seed; absent when off, so that the
    # keys of runs without randomized response stay what they were
    rr = {} if config.rr_epsilon is None else {"rr_epsilon": config.rr_epsilon, "rr_secret": secret_fp}
    # the teachers' epoch size (the GD teacher's key holds the KD teacher's)
    epochs_rr = {**rr, "rr_true_size_epochs": True} if rr and config.rr_true_size_epochs else rr
    keys: dict[str, str] = {}
    keys["kd_teacher"] = _key({"data": data, "teacher": teacher, "epochs": config.teacher_epochs, **schedule,
                               **epochs_rr})
    if config.generator == "cgan":  # the paper's chain keeps the keys it always had
        keys["generator"] = keys["cgan"] = _key({"data": data, "cgan": cgan, **rr})
    else:
        auto = {"families": list(config.auto_families), "budget_s": config.auto_budget_s,
                "length": config.list_length, "include_observed": config.include_observed,
                "temperature": config.temperature, "consumer_id": config.consumer_id, "secret": secret_fp,
                "cgan": cgan} if config.generator == "auto" else {}
        reads_kd = {"kd": keys["kd_teacher"]} if config.uses_kd_teacher_for_lists else {}
        keys["generator"] = _key({"data": data, "generator": config.generator, "seed": config.seed,
                                  "settings": config.generator_settings, **auto, **reads_kd, **rr})
    keys["lists"] = _key({"cgan" if config.generator == "cgan" else "generator": keys["generator"],
                          "length": config.list_length, "include_observed": config.include_observed,
                          "seed": config.seed})
    keys["gd_teacher"] = _key({"kd": keys["kd_teacher"], "lists": keys["lists"], "epochs": config.gd_epochs,
                               "lr": teacher["lr"], **schedule})
    keys["export"] = _key({"gd": keys["gd_teacher"], "lists": keys["lists"], "temperature": config.temperature,
                           "consumer_id": config.consumer_id, "secret": secret_fp})
    return keys


def stages_of(config: ChainConfig) -> tuple[str, ...]:
    """The stages a run of `config` goes through, in order."""
    return (TUNING_STAGE, *STAGES) if config.tunes_teacher else STAGES


def tuning_key(config: ChainConfig, data: str, secret_fp: str) -> str:
    """The tuning stage's key: the data, the settings it starts from, the search (budget, trials, space, parameter
    budget), the trials' schedule and seed, and under randomized response the randomized matrix it trains on."""
    rr = {} if config.rr_epsilon is None else {"rr_epsilon": config.rr_epsilon, "rr_secret": secret_fp,
                                               "rr_true_size_epochs": config.rr_true_size_epochs}
    return _key({"data": data, "base": config.teacher_settings.key_payload(), "tuning": config.tuning.key_payload(),
                 "epochs": config.teacher_epochs, "eval_every": config.eval_every, "seed": config.seed,
                 "batch_size": config.batch_size, **rr})


def read_stage(layout: ArtifactLayout, name: str) -> dict[str, Any] | None:
    """The finished record of a stage, or None when it has not finished."""
    try:
        return json.loads((layout.stage(name) / STAGE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class _Chain:
    """The stages of one run: each output is computed, or loaded from its finished stage folder, on demand."""

    def __init__(self, config: ChainConfig, layout: ArtifactLayout, split: LeaveOneOutSplit, secret: bytes,
                 keys: dict[str, str], device: torch.device, inputs: dict[str, Any]) -> None:
        self.config, self.layout, self.split, self.secret = config, layout, split, secret
        self.keys, self.device, self.inputs = keys, device, inputs
        self.names = stages_of(config)
        self._memo: dict[str, Any] = {}
        self._model_split: LeaveOneOutSplit | None = None

    @property
    def model_split(self) -> LeaveOneOutSplit:
        """What the models train on and are conditioned on: the raw split, or under randomized response the split
        with randomized training sets (built on first use: the stages that skip never pay for it)."""
        if self._model_split is None:
            self._model_split = stages.model_split(self.split, self.config, self.secret)
        return self._model_split

    def partial(self, name: str) -> Path:
        """Where stage `name`'s training keeps its resumable state (shared.training) until the stage finishes: a
        folder per key and input outputs, so a changed setting or a redone input never continues a stale run."""
        digest = _key({"key": self.keys[name], "inputs": self.inputs_of(name)})[:16]
        return self.layout.stages / f".partial-{name}-{digest}"

    def inputs_of(self, name: str) -> dict[str, str | None]:
        """The output id of each stage that stage `name` reads, as their finished records hold them now."""
        deps = INPUTS[name]
        if name == "generator" and self.config.uses_kd_teacher_for_lists:
            deps = ("kd_teacher",)
        if name == "kd_teacher" and TUNING_STAGE in self.names:
            deps = (TUNING_STAGE,)
        return {dep: (read_stage(self.layout, dep) or {}).get("output_id") for dep in deps}

    # -- outputs, loaded lazily from finished stages
    def output(self, name: str) -> Any:
        if name not in self._memo:
            self._memo[name] = getattr(self, f"_load_{name}")(self.layout.stage(name))
        return self._memo[name]

    def adopt_tuned_teacher(self, data_fp: str, secret_fp: str) -> None:
        """Train the rest of the chain with the tuning stage's settings: the config takes them as its teacher, and the
        keys of the later stages follow (the KD teacher's key holds the tuned settings)."""
        settings: TeacherSettings = self.output(TUNING_STAGE)
        self.config = replace(self.config, teacher=settings, tune=False)
        self.keys = {**stage_keys(self.config, data_fp, secret_fp), TUNING_STAGE: self.keys[TUNING_STAGE]}

    def _load_tune_teacher(self, folder: Path) -> TeacherSettings:
        return TeacherSettings.from_payload(json.loads((folder / STAGE_FILE).read_text())["summary"]["teacher"])

    def _load_kd_teacher(self, folder: Path) -> Recommender:
        return load_checkpoint(folder, self.device)[0]

    _load_gd_teacher = _load_kd_teacher

    def _load_generator(self, folder: Path) -> ListGenerator:
        return load_generator(folder, self.device)

    def _load_lists(self, folder: Path) -> GeneratedLists:
        return GeneratedLists.load(folder)

    # -- stage bodies: compute (data_owner.stages), write into `folder`, return (output, summary)
    def _run_tune_teacher(self, folder: Path) -> tuple[Any, dict[str, Any]]:
        result = stages.tuned_teacher_settings(self.split, self.model_split, self.config, self.device)
        report = result.to_dict()
        atomic_write_text(folder / "tuning.json", json.dumps(report, indent=2, default=str))
        summary = {**{k: v for k, v in report.items() if k != "trials"}, "summary_line": result.summary_line()}
        return result.settings, summary

    def _run_kd_teacher(self, folder: Path) -> tuple[Any, dict[str, Any]]:
        c = self.config
        run = stages.kd_teacher(self.split, self.model_split, c, self.device, str(self.partial("kd_teacher")))
        summary = {"num_parameters": run.model.num_parameters(), "config": run.model.config(),
                   "lr": c.teacher_settings.lr, "optimizer": c.teacher_settings.optimizer,
                   "negatives": c.teacher_settings.negatives, "tuned": TUNING_STAGE in self.names,
                   "best_epoch": run.train.best_epoch, "epochs_run": run.train.epochs_run,
                   **stages.reported_metrics(run.model, self.split, c, run.valid, run.test)}
        save_checkpoint(folder, run.model, {"stage": "kd_teacher", **summary})
        return run.model, summary

    def _run_generator(self, folder: Path) -> tuple[Any, dict[str, Any]]:
        c, split, raw = self.config, self.model_split, self.split
        kd = self.output("kd_teacher") if c.uses_kd_teacher_for_lists else None
        source, selection = stages.generator(split, raw, c, self.device, kd, self.secret)
        source.save(folder)
        summary: dict[str, Any] = {"family": source.family, "settings": source.settings(),
                                   "fit": source.report.to_dict()}
        if selection is not None:
            summary["selection"] = selection
        if split.eval_users.size:  # the generator reads the (randomized) input rows; the ranking excludes the real
            scorer = source.reported_scorer(split.train, c.seed, self.device)
            summary["valid"] = validation_metrics(scorer, raw, self.device, DEFAULT_KS)
            summary["test"] = validation_metrics(scorer, raw, self.device, DEFAULT_KS, test=True)
        if c.rr_epsilon is not None:
            summary.update(rr_epsilon=c.rr_epsilon, randomized_interactions=split.train.nnz)
        return source, summary

    def _run_lists(self, folder: Path) -> tuple[Any, dict[str, Any]]:
        c = self.config
        # conditioned on, and (exclude-observed) excluding, the models' input: under randomized response C~, not C
        made = stages.generator_lists(self.output("generator"), self.model_split, c, self.device)
        made.save(folder)
        return made, {**made.statistics(self.split.train), "include_observed": made.include_observed,
                      "rr_epsilon": c.rr_epsilon, "generator": self.output("generator").family}

    def _run_gd_teacher(self, folder: Path) -> tuple[Any, dict[str, Any]]:
        c = self.config
        run = stages.gd_teacher(self.output("kd_teacher"), self.split, self.model_split, self.output("lists"), c,
                                str(self.partial("gd_teacher")))
        summary = {"num_parameters": run.model.num_parameters(), "best_epoch": run.train.best_epoch,
                   "epochs_run": run.train.epochs_run,
                   **stages.reported_metrics(run.model, self.split, c, run.valid, run.test)}
        save_checkpoint(folder, run.model, {"stage": "gd_teacher", **summary})
        return run.model, summary

    def _run_export(self, folder: Path) -> tuple[Any, dict[str, Any]]:
        c = self.config
        bundle = stages.export(self.output("gd_teacher"), self.output("lists"), self.split, c, self.secret,
                               self._generator_card())
        atomic_write_text(folder / "export.json", bundle.model_dump_json())
        return bundle, {"export_id": bundle.manifest.export_id, "n_users": bundle.manifest.n_users,
                        "n_items": len(bundle.manifest.item_ids), "list_length": bundle.manifest.list_length,
                        "temperature": bundle.manifest.temperature, "consumer_id": c.consumer_id,
                        "privacy": bundle.manifest.privacy.model_dump(), **self._list_source(), **self.inputs}

    def _generator_card(self) -> GeneratorCard | None:
        source = self._list_source()
        return generator_card(source["generator"]["family"], source["generator"]["settings"], source["lists"])

    def _list_source(self) -> dict[str, Any]:
        """What the export's lists came from, as the generator and lists stages recorded it: the family, its
        settings and the lists' statistics (what an auditor reads beside the export)."""
        generator = (read_stage(self.layout, "generator") or {}).get("summary", {})
        lists = (read_stage(self.layout, "lists") or {}).get("summary", {})
        return {"generator": {"family": generator.get("family"), "settings": generator.get("settings")},
                "lists": {k: v for k, v in lists.items() if k not in ("generator", "rr_epsilon")}}

    def run(self, name: str, index: int, restart: bool) -> StageReport:
        """Run stage `name` unless it finished under the same key from the very outputs its input stages hold
        now. Every finished stage gets a fresh `output_id` and records those of its inputs: a redone input (in
        this run or in an interrupted one) may differ, e.g. under GPU nondeterminism, so what read it is redone."""
        record = read_stage(self.layout, name)
        step = f"[{index}/{len(self.names)}] {name}"
        inputs = self.inputs_of(name)
        same_key = record is not None and record.get("key") == self.keys[name]
        same_inputs = record is not None and record.get("inputs") == inputs
        if not restart and same_key and same_inputs:
            log.info("%s: done %s, skipped", step, record.get("finished_at", "earlier"))
            return StageReport(name, "skipped", 0.0, record.get("summary", {}))
        if record is None:
            reason = "first run"
        elif restart:
            reason = "restart"
        elif not same_key:
            reason = "its settings or inputs changed"
        else:
            reason = "an input stage was redone since"
        log.info("%s: running (%s)", step, reason)
        started = time.perf_counter()
        partial = self.partial(name)
        for stale in self.layout.stages.glob(f".partial-{name}-*"):  # another key's, or --restart: start afresh
            if restart or stale != partial:
                shutil.rmtree(stale, ignore_errors=True)
        work = self.layout.stages / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            output, summary = getattr(self, f"_run_{name}")(work)
            seconds = round(time.perf_counter() - started, 2)
            finished = {"stage": name, "key": self.keys[name], "output_id": uuid.uuid4().hex, "inputs": inputs,
                        "finished_at": datetime.now(UTC).isoformat(), "seconds": seconds, "summary": summary}
            atomic_write_text(work / STAGE_FILE, json.dumps(finished, indent=2, default=str))
            target = self.layout.stage(name)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
            fsync_dir(self.layout.stages)
            shutil.rmtree(partial, ignore_errors=True)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._memo[name] = output
        log.info("%s: finished in %.1f s", step, seconds)
        return StageReport(name, "ran", seconds, summary)


def run_pipeline(
    config: ChainConfig,
    artifacts: str | Path,
    secret: bytes,
    data_dir: str | Path | None = None,
    restart: bool = False,
) -> PipelineResult:
    """Run (or resume) the owner's stages into `artifacts`; see the module docstring."""
    layout = ArtifactLayout(Path(artifacts))
    layout.stages.mkdir(parents=True, exist_ok=True)
    with exclusive_lock_or_fail(layout.train_lock, f"another `gdrec-owner train` is running on {layout.root}"):
        for stale in layout.stages.glob(".tmp-*"):  # left by an interrupted run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        return _run_locked(config, layout, secret, data_dir, restart)


def _run_locked(config: ChainConfig, layout: ArtifactLayout, secret: bytes, data_dir: str | Path | None,
                restart: bool) -> PipelineResult:
    device = resolve_device(config.device)
    split = load_split(config.dataset, data_dir)
    if split.eval_users.size == 0:
        raise ValueError(f"{config.dataset}: no user has the 3 interactions a leave-one-out split needs")
    data_fp = split_fingerprint(split)
    secret_fp = secret_fingerprint(secret)
    keys = stage_keys(config, data_fp, secret_fp)
    as_path = Path(config.dataset).expanduser()
    dataset = str(as_path.resolve()) if as_path.exists() else config.dataset  # found again from any directory
    inputs = {"dataset": dataset, "data_dir": None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
              "data_fingerprint": data_fp, "secret_fingerprint": secret_fp}
    log.info("%s; artifacts in %s, device %s", split.summary(), layout.root, device)
    if config.tunes_teacher:
        keys[TUNING_STAGE] = tuning_key(config, data_fp, secret_fp)
    chain = _Chain(config, layout, split, secret, keys, device, inputs)
    reports = []
    for index, name in enumerate(chain.names, start=1):
        reports.append(chain.run(name, index, restart))
        if name == TUNING_STAGE:
            chain.adopt_tuned_teacher(data_fp, secret_fp)
    config, keys = chain.config, chain.keys
    export_record = read_stage(layout, "export") or {}
    summary = {
        "dataset": config.dataset,
        "teacher": {**config.teacher_settings.key_payload(), "tuned": TUNING_STAGE in chain.names},
        "split": split.summary(),
        "export_id": export_record.get("summary", {}).get("export_id"),
        "stages": {r.name: {"status": r.status, "seconds": r.seconds, **r.summary} for r in reports},
        "updated_at": datetime.now(UTC).isoformat(),
    }
    atomic_write_text(layout.summary_file, json.dumps(summary, indent=2, default=str))
    atomic_write_text(layout.run_file, json.dumps({"config": config.to_dict(), "stage_keys": keys, **inputs},
                                                  indent=2, default=str))
    return PipelineResult(artifacts=layout.root, export_path=layout.export_file,
                          export_id=summary["export_id"], stages=reports, split_summary=split.summary())


def load_export(layout: ArtifactLayout) -> tuple[ExportBundle, dict[str, Any]]:
    """The finished export and its stage record (consumer id, dataset, fingerprints)."""
    record = read_stage(layout, "export")
    if record is None or not layout.export_file.is_file():
        raise FileNotFoundError(f"no finished export under {layout.root}: run `gdrec-owner train` first")
    return ExportBundle.model_validate_json(layout.export_file.read_bytes()), record["summary"]


__all__ = [
    "INPUTS",
    "STAGES",
    "TUNING_STAGE",
    "PipelineResult",
    "StageReport",
    "load_export",
    "load_split",
    "read_stage",
    "run_pipeline",
    "split_fingerprint",
    "stage_keys",
    "stages_of",
    "tuning_key",
]

