"""The runner's stage cache: the KD teacher, the generated lists and the GD teacher of each (family, seed) under
<work-dir>/cache/<dataset>/, keyed on the owner's stage keys (`data_owner.pipeline.stage_keys`). It trains a stage
through `experiments.lab` (the owner's `data_owner.stages` functions) only when its key has no entry yet, and writes
entries to temporary names renamed into place, so a half-written entry is never read."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from data_owner.data import LeaveOneOutSplit
from data_owner.lists import GeneratedLists
from data_owner.pipeline import split_fingerprint, stage_keys
from data_owner.settings import secret_fingerprint
from experiments import lab
from experiments.grid import GridSpec, dataset_slug, digest, lists_settings_payload
from experiments.lab import GeneratorStage, LabConfig, StageResult
from experiments.results import json_default
from shared.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint

log = logging.getLogger("gdrec.runner")


class StageCache:
    """The KD teacher, the generated lists and the GD teacher of each (family, seed), from disk or trained once."""

    def __init__(self, spec: GridSpec, split: LeaveOneOutSplit, device: torch.device) -> None:
        self.spec = spec
        self.split = split
        self.device = device
        self.root = spec.work_dir / "cache" / dataset_slug(spec.base.dataset)
        self.data_fingerprint = split_fingerprint(split)
        self._memory: dict[tuple, Any] = {}
        self._train_splits: dict[tuple[int, float | None], LeaveOneOutSplit] = {}
        self.trained: list[str] = []  # which stages were trained (not loaded) in this process, for the log

    def train_split(self, config: LabConfig) -> LeaveOneOutSplit:
        key = (config.seed, config.rr_epsilon)  # the randomized matrix depends on both
        if key not in self._train_splits:
            self._train_splits[key] = lab.training_split(self.split, config)
        return self._train_splits[key]

    def keys(self, config: LabConfig) -> dict[str, str]:
        """The cache key of each stage: the owner's stage key (`data_owner.pipeline.stage_keys`: the data, the
        settings and the keys of the stages it reads, the randomized response keyed by the lab's secret), with the
        list source for the research reference of the KD teacher's own lists."""
        keys = stage_keys(config, self.data_fingerprint, secret_fingerprint(lab.lab_secret(config.seed)))
        if config.list_source != "generator":
            keys["lists"] = digest({"kd": keys["kd_teacher"], "list_source": config.list_source,
                                     "length": config.list_length, "include_observed": config.include_observed}, 64)
            keys["gd_teacher"] = digest({"gd_teacher": keys["gd_teacher"], "lists": keys["lists"]}, 64)
        return {name: key[:16] for name, key in keys.items()}

    def _remember(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key not in self._memory:
            if len(self._memory) > 6:  # keep a few (family, seed) stages; the rest stay on disk
                self._memory.pop(next(iter(self._memory)))
            self._memory[key] = build()
        return self._memory[key]

    def partial(self, name: str) -> Path:
        """Where a stage or cell still in training keeps its resumable state (removed once it is kept)."""
        return self.root / "partial" / name

    def _checkpointed(self, directory: Path, train: Callable[[], StageResult], what: str) -> StageResult:
        if (directory / "config.json").is_file():
            model, saved = load_checkpoint(directory, self.device)
            meta = saved["metadata"]
            log.info("%s: loaded from %s", what, directory)
            return StageResult(model, meta["valid"], meta["test"], meta["seconds"], meta["best_epoch"],
                               extra={"cached": True})
        stage = train()
        save_checkpoint(directory, stage.model, {"valid": stage.valid, "test": stage.test, "seconds": stage.seconds,
                                                 "best_epoch": stage.best_epoch, "what": what})
        shutil.rmtree(self.partial(directory.name), ignore_errors=True)
        self.trained.append(what)
        stage.extra["cached"] = False
        return stage

    def kd_teacher(self, config: LabConfig) -> StageResult:
        key = self.keys(config)["kd_teacher"]
        directory = self.root / "teachers" / f"{config.family}-seed{config.seed}-{key}"
        resumable = replace(config, checkpoint_dir=str(self.partial(directory.name)))
        return self._remember(("kd", key), lambda: self._checkpointed(
            directory, lambda: lab.train_kd_teacher(resumable, self.split, self.train_split(config), self.device),
            f"KD teacher {config.family} seed {config.seed}"))

    def generator(self, config: LabConfig) -> CachedLists:
        key = self.keys(config)["lists"]
        folder = self.root / "lists" / f"seed{config.seed}-{key}"
        return self._remember(("lists", key), lambda: self._lists(config, folder))

    def _lists(self, config: LabConfig, folder: Path) -> CachedLists:
        """The lists in the owner's one lists format (`GeneratedLists.save` / `load`), with what was measured when
        they were made in `meta.json` beside them (written last: a folder without it is redone)."""
        meta_file = folder / "meta.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            log.info("generated lists: loaded from %s", folder)
            return CachedLists(GeneratedLists.load(folder), meta)
        stage: GeneratorStage = lab.list_stage(config, self.split, self.train_split(config),
                                               lambda: self.kd_teacher(config), self.device)
        g = stage.generator
        meta = {"include_observed": stage.lists.include_observed, "seed": stage.lists.seed,
                "n_items": stage.lists.n_items, "seconds_per_epoch": stage.seconds_per_epoch,
                "observed_share": stage.observed_share,
                "generator": {"valid": g.valid, "test": g.test, "seconds": g.seconds, "best_epoch": g.best_epoch,
                              "params": g.params},
                "settings": lists_settings_payload(config)}
        if "family" in g.extra:  # a list generator other than the CGAN: which one, how it was fitted, its lists
            meta.update(family=g.extra["family"], generator_settings=g.extra["settings"], fit=g.extra["fit"],
                        statistics=g.extra["statistics"], selection=g.extra.get("selection"))
            meta["generator"].update(family=g.extra["family"], settings=g.extra["settings"])
        else:
            meta.update(family=config.generator if config.list_source == "generator" else "kd-teacher-top-l",
                        statistics=stage.lists.statistics(self.split.train))
        folder.mkdir(parents=True, exist_ok=True)
        stage.lists.save(folder)
        atomic_write_text(meta_file, json.dumps(meta, default=json_default))
        self.trained.append(f"{meta['family'] if config.list_source == 'generator' else 'teacher'} lists seed "
                            f"{config.seed}")
        return CachedLists(stage.lists, meta)

    def gd_teacher(self, config: LabConfig) -> StageResult:
        key = self.keys(config)["gd_teacher"]
        directory = self.root / "gd_teachers" / f"{config.family}-seed{config.seed}-{key}"

        def train() -> StageResult:
            kd = self.kd_teacher(config)
            lists = self.generator(config).lists
            resumable = replace(config, checkpoint_dir=str(self.partial(directory.name)))
            return lab.train_gd_teacher(resumable, self.split, self.train_split(config), kd.model, lists,
                                        self.device)

        return self._remember(("gd", key), lambda: self._checkpointed(
            directory, train, f"GD teacher {config.family} seed {config.seed}"))


@dataclass
class CachedLists:
    """Generated lists with what was measured when they were made (the generator itself is not needed again)."""

    lists: GeneratedLists
    # the generator's family and metrics as a recommender, seconds per epoch, observed share, list statistics,
    # settings; for a family other than the CGAN also its settings, fit report and (auto) selection report
    meta: dict[str, Any]

    @property
    def family(self) -> str:
        """The list generator that made the lists ("cgan", "itemknn", ...; under auto the chosen family)."""
        return str(self.meta.get("family", "cgan"))

