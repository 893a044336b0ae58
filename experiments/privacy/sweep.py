"""The privacy sweep: the GD chain of `experiments.lab` run in-process once per (list generator family, privacy
setting, seed), KD teacher -> list generator -> generated lists -> GD teacher -> export -> data-free GD student, each
finished one appended to the results file as one `PrivacyRow` (the student's metrics beside the export's leakage
report). Settings that share the KD teacher's owner stage key share the KD teacher, and those that also share the
generator's share the generator; a rerun skips the rows already there."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from data_owner import stages
from data_owner.config import RESEARCH_GENERATOR
from data_owner.data import LeaveOneOutSplit
from data_owner.gan import GeneratedLists
from data_owner.pipeline import split_fingerprint, stage_keys
from data_owner.privacy import export_pairs, leakage_report, soft_target_scorer
from data_owner.privacy.leakage import EXPORT_ROW
from data_owner.settings import secret_fingerprint
from experiments import lab
from experiments.lab import GeneratorStage, LabConfig, StageResult
from experiments.measures import machine_info
from experiments.privacy.settings import PrivacySetting, chain_settings, row_key, setting_config
from experiments.results import PrivacyRow, ResultsFile
from shared.checkpoint import exclusive_lock_or_fail
from shared.device import resolve_device

log = logging.getLogger("gdrec.privacy")

RESULTS_NAME = "privacy.jsonl"


@dataclass
class _Teacher:
    """The model split and KD teacher of one config, by the KD teacher's owner stage key
    (`data_owner.pipeline.stage_keys`): the settings (of any family) with the same randomized response share it."""

    key: str
    train_split: LeaveOneOutSplit
    kd: StageResult


@dataclass
class _Stages:
    """The KD teacher and list generator of one config, by their owner stage keys: the settings that differ only in
    how lists are drawn share them."""

    kd_key: str
    generator_key: str  # the list generator's stage key (the CGAN's for the paper's family)
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
        self._teacher_held: _Teacher | None = None
        self._stages_held: _Stages | None = None

    def _teacher(self, config: LabConfig, key: str) -> _Teacher:
        held = self._teacher_held
        if held is None or held.key != key:
            self._teacher_held = self._stages_held = None  # free the previous models first
            train_split = lab.training_split(self.split, config)
            self._teacher_held = _Teacher(key, train_split,
                                          lab.train_kd_teacher(config, self.split, train_split, self.device))
        return self._teacher_held

    def _stages(self, config: LabConfig) -> _Stages:
        keys = stage_keys(config, self.data_fingerprint, secret_fingerprint(lab.lab_secret(config.seed)))
        held = self._stages_held
        if held is None or (held.kd_key, held.generator_key) != (keys["kd_teacher"], keys["generator"]):
            teacher = self._teacher(config, keys["kd_teacher"])
            self._stages_held = None  # free the previous generator first
            kd = teacher.kd
            generator = lab.train_generator(config, self.split, teacher.train_split, self.device,
                                            kd_teacher=lambda: kd)
            self._stages_held = _Stages(keys["kd_teacher"], keys["generator"], teacher.train_split, kd, generator)
        return self._stages_held

    def _lists(self, config: LabConfig, shared: _Stages) -> GeneratedLists:
        made = shared.generator.lists
        if made.include_observed == config.include_observed:
            return made
        source = shared.generator.generator.model
        if config.generator == RESEARCH_GENERATOR:
            return stages.lists(source, shared.train_split, config)
        return stages.generator_lists(source, shared.train_split, config, self.device)

    def run(self, setting: PrivacySetting, seed: int) -> PrivacyRow:
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
        return PrivacyRow(
            key=row_key(self.base, setting, seed),
            dataset=config.dataset,
            family=config.family,
            seed=seed,
            setting={"name": setting.name, **setting.identity()},
            student={"valid": student.valid, "test": student.test, "params": student.params,
                        "best_epoch": student.best_epoch, "seconds": student.seconds},
            leakage=report.to_dict(),
            observed_share=lists.observed_share(self.split.train),
            model_visible_train_pairs=int(shared.train_split.train.nnz),
            true_train_pairs=int(self.split.train.nnz),
            kd_teacher={"test": shared.kd.test, "params": shared.kd.params},
            gd_teacher={"test": gd.test, "params": gd.params},
            generator=generator_record(setting, g),
            settings=chain_settings(config),
            machine=self.machine,
            setting_seconds=time.perf_counter() - started,  # the shared KD teacher and generator count once
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )


def generator_record(setting: PrivacySetting, generator: StageResult) -> dict[str, Any]:
    """The row's `generator`: the generator's own test numbers and selected epoch; for a family other than the
    CGAN also its family and the settings it was fitted with."""
    record: dict[str, Any] = {"test": generator.test, "best_epoch": generator.best_epoch}
    if not setting.is_cgan:
        record.update(family=setting.generator, settings=generator.extra.get("settings"))
    return record


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
    """Run every (setting, seed) whose row is not yet in `results`, appending each row as it finishes. A setting
    holds its list generator family (`with_generators`)."""
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
            # group by (seed, rr_epsilon) so the shared KD teacher is trained once per group, and within it by
            # family so each generator is trained once
            families = list(dict.fromkeys(s.generator for s in settings))
            todo.sort(key=lambda job: (job[0], job[1].rr_epsilon is not None, job[1].rr_epsilon or 0.0,
                                       families.index(job[1].generator), not job[1].include_observed))
            for seed, setting in todo:
                row = runner.run(setting, seed)
                file.append(row)
                log.info("%s seed %d: student test HR@50 %.4f, export precision %.4f (%.0f s)", setting.name, seed,
                         row.student["test"]["HR@50"], row.leak(EXPORT_ROW)["precision"], row.setting_seconds)
    return SweepSummary(len(wanted), len(wanted) - len(todo), len(todo), time.perf_counter() - started)

