"""The privacy sweep: the GD chain of `experiments.lab` run in-process once per (privacy setting, seed), KD
teacher -> CGAN -> generated lists -> GD teacher -> export -> data-free GD student, each finished (setting, seed)
appended to the results file as one `PrivacyRow` (the student's metrics beside the export's leakage report).
Settings that share the KD teacher's and the CGAN's owner stage keys share those stages; a rerun skips the rows
already there."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from data_owner import stages
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
            setting={"name": setting.name, **asdict(setting)},
            student={"valid": student.valid, "test": student.test, "params": student.params,
                        "best_epoch": student.best_epoch, "seconds": student.seconds},
            leakage=report.to_dict(),
            observed_share=lists.observed_share(self.split.train),
            model_visible_train_pairs=int(shared.train_split.train.nnz),
            true_train_pairs=int(self.split.train.nnz),
            kd_teacher={"test": shared.kd.test, "params": shared.kd.params},
            gd_teacher={"test": gd.test, "params": gd.params},
            generator={"test": g.test, "best_epoch": g.best_epoch},
            settings=chain_settings(config),
            machine=self.machine,
            setting_seconds=time.perf_counter() - started,  # the shared KD teacher and CGAN count once
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )


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
                log.info("%s seed %d: student test HR@50 %.4f, export precision %.4f (%.0f s)", setting.name, seed,
                         row.student["test"]["HR@50"], row.leak(EXPORT_ROW)["precision"], row.setting_seconds)
    return SweepSummary(len(wanted), len(wanted) - len(todo), len(todo), time.perf_counter() - started)

