"""The stages of the owner's GD-REC chain (Algorithm 1) as plain functions, with no storage concern.

    model_split  what the models train on: the split, or under randomized response its randomized copy
    tuned_teacher_settings  the teacher's settings searched on the validation item (a dataset without a preset)
    kd_teacher   the teacher on the model split (L_CF), epoch selected on the validation item
    cgan         the CGAN with the mask mechanism, selected on validation HR@50 of GF_u as a recommender
    lists        the generated lists GF(I)_u (top-L of GF_u; own training items included or not)
    gd_teacher   the KD teacher continued on raw + generated pairs (L_T = L_CF + L_GF)
    export       per user token: the list and the teacher's soft targets sigmoid(z / t); the manifest

Each is a function of its inputs, a `data_owner.config.ChainConfig`, and a device, returning its output.
`gdrec-owner train` (`data_owner.pipeline`) runs them as resumable stages in an artifacts folder; the research
harness (`experiments`) runs the very same functions, so what it measures is what the product computes."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch

from data_owner.config import ChainConfig
from data_owner.data import LeaveOneOutSplit
from data_owner.export import build_export
from data_owner.gan import CGANResult, Generator, generated_lists, train_cgan
from data_owner.generators import ListGenerator, fit_generator
from data_owner.generators.cgan import cgan_validator
from data_owner.generators.select import choose_generator
from data_owner.lists import GeneratedLists
from data_owner.privacy.controls import randomized_response_seed, randomized_split, teacher_epoch_pairs
from data_owner.teacher import TeacherRun, continue_on_generated, test_result, train_base_model, validation_result
from data_owner.tuning import TuningResult, tune_teacher
from shared.models import Recommender
from shared.schemas import ExportBundle, GeneratorCard
from shared.training import TrainConfig

log = logging.getLogger(__name__)



def model_split(split: LeaveOneOutSplit, config: ChainConfig, secret: bytes) -> LeaveOneOutSplit:
    """What the models train on and are conditioned on: `split` itself, or under `config.rr_epsilon` the split with
    randomized training sets, the flips seeded by `randomized_response_seed(secret, config.seed)` (reproducible
    for whoever holds the secret, unpredictable for anyone else)."""
    if config.rr_epsilon is None:
        return split
    return randomized_split(split, config.rr_epsilon, randomized_response_seed(secret, config.seed))


def epoch_pairs(split: LeaveOneOutSplit, config: ChainConfig) -> int | None:
    """The teachers' pairs per epoch: every pair, or under `rr_true_size_epochs` the true matrix's size."""
    return teacher_epoch_pairs(split, config.rr_epsilon, config.rr_true_size_epochs)


def train_config(config: ChainConfig, epochs: int, checkpoint_dir: str | None = None) -> TrainConfig:
    """The teachers' training schedule: `epochs`, the teacher's learning rate, the config's early stopping."""
    return TrainConfig(epochs=epochs, lr=config.teacher_settings.lr, patience=config.patience,
                       eval_every=config.eval_every, seed=config.seed, progress=config.progress,
                       checkpoint_dir=checkpoint_dir)


def tuned_teacher_settings(split: LeaveOneOutSplit, trained_on: LeaveOneOutSplit, config: ChainConfig,
                           device: torch.device) -> TuningResult:
    """The teacher's settings searched on the model split's validation item (`data_owner.tuning`), starting from the
    preset (or the family's default), each trial trained as `kd_teacher` trains (its epochs, evaluation interval,
    seed and epoch size) within `config.tuning`'s budget."""
    return tune_teacher(trained_on, config.teacher_settings, config.tuning,
                        train_config(config, config.teacher_epochs), batch_size=config.batch_size, device=device,
                        pairs_per_epoch=epoch_pairs(split, config))


def kd_teacher(split: LeaveOneOutSplit, trained_on: LeaveOneOutSplit, config: ChainConfig, device: torch.device,
               checkpoint_dir: str | None = None) -> TeacherRun:
    """The KD teacher on `trained_on` (the model split), L_CF; NeuMF pre-trained branch by branch when the teacher
    settings say so. `split` (the true one) sets the epoch size under `rr_true_size_epochs`."""
    teacher = config.teacher_settings
    return train_base_model(trained_on, config.family, dict(teacher.model),
                            train_config(config, config.teacher_epochs, checkpoint_dir), batch_size=config.batch_size,
                            device=device, pretrain=teacher.pretrain, pairs_per_epoch=epoch_pairs(split, config),
                            optimizer=teacher.optimizer, negatives=teacher.negatives)


def cgan(trained_on: LeaveOneOutSplit, config: ChainConfig, device: torch.device) -> CGANResult:
    """The CGAN on the model split's training sets (`config.cgan` with the chain's seed), selected on validation."""
    cgan_config = replace(config.cgan, seed=config.seed, progress=config.progress)
    validate = cgan_validator(trained_on, config.seed, device) if trained_on.eval_users.size else None
    return train_cgan(trained_on.train, cgan_config, validate=validate, device=device)


def lists(generator: Generator, trained_on: LeaveOneOutSplit, config: ChainConfig) -> GeneratedLists:
    """The generated lists: top-L of GF_u conditioned on (and, exclude-observed, excluding) the model split's
    training sets; L is cut to the catalog's size, with a warning."""
    length = min(config.list_length, trained_on.n_items)
    if length < config.list_length:
        log.warning("list length %d exceeds the catalog (%d items); using %d", config.list_length,
                    trained_on.n_items, length)
    return generated_lists(generator, trained_on.train, length, config.include_observed, seed=config.seed)


def list_length(trained_on: LeaveOneOutSplit, config: ChainConfig) -> int:
    """L, cut to the catalog's size (with a warning)."""
    length = min(config.list_length, trained_on.n_items)
    if length < config.list_length:
        log.warning("list length %d exceeds the catalog (%d items); using %d", config.list_length,
                    trained_on.n_items, length)
    return length


def generator(trained_on: LeaveOneOutSplit, split: LeaveOneOutSplit, config: ChainConfig, device: torch.device,
              kd: Recommender | None = None, secret: bytes | None = None
              ) -> tuple[ListGenerator, dict[str, Any] | None]:
    """The list generator of `config.generator`, fitted on the model split and selected on its validation items;
    under "auto" the candidate families of `config.auto_families` compete by the validation numbers of the student
    each one's export produces (`data_owner.generators.select`; needs the KD teacher and the secret). Returns the
    generator and, under auto, the selection report."""
    cgan_config = replace(config.cgan, seed=config.seed)
    if config.generator != "auto":
        fitted = fit_generator(config.generator, trained_on, seed=config.seed, device=device,
                               settings=config.generator_settings.get(config.generator), cgan=cgan_config,
                               teacher=kd, progress=config.progress)
        return fitted, None
    if kd is None or secret is None:
        raise ValueError("generator 'auto' needs the KD teacher and the owner's secret (its dry-run exports)")
    selection = choose_generator(
        config.auto_families, trained_on, split, kd, list_length=list_length(trained_on, config),
        include_observed=config.include_observed, temperature=config.temperature, secret=secret,
        consumer_id=config.consumer_id, seed=config.seed, budget_s=config.auto_budget_s,
        settings=config.generator_settings, cgan=cgan_config, device=device, progress=config.progress)
    return selection.chosen.generator, selection.report(split.train)


def generator_lists(source: ListGenerator, trained_on: LeaveOneOutSplit, config: ChainConfig,
                    device: torch.device) -> GeneratedLists:
    """A draw of the generator's lists: top-L (with its noise) conditioned on, and exclude-observed excluding, the
    model split's training sets, seeded by the chain's seed."""
    return source.lists(trained_on.train, list_length(trained_on, config), config.include_observed, config.seed,
                        device)


def gd_teacher(kd: Recommender, split: LeaveOneOutSplit, trained_on: LeaveOneOutSplit, made: GeneratedLists,
               config: ChainConfig, checkpoint_dir: str | None = None) -> TeacherRun:
    """A copy of the KD teacher continued on the model split's pairs + the generated pairs (L_T = L_CF + L_GF)."""
    return continue_on_generated(kd, trained_on, made.as_item_sets(),
                                 train_config(config, config.gd_epochs, checkpoint_dir),
                                 batch_size=config.batch_size, pairs_per_epoch=epoch_pairs(split, config),
                                 optimizer=config.teacher_settings.optimizer,
                                 negatives=config.teacher_settings.negatives)


def export(gd: Recommender, made: GeneratedLists, split: LeaveOneOutSplit, config: ChainConfig,
           secret: bytes, generator: GeneratorCard | None = None) -> ExportBundle:
    """The export for `config.consumer_id`: per token, the list and the GD teacher's soft targets sigmoid(z / t);
    `generator`: the card of the lists' generator for the manifest (None: a version 1 manifest without one)."""
    return build_export(gd, made, split.user_ids, split.item_ids, config.temperature, secret, config.consumer_id,
                        randomized_response_epsilon=config.rr_epsilon, generator=generator)


def reported_metrics(model: Recommender, split: LeaveOneOutSplit, config: ChainConfig, run_valid: dict[str, float],
                     run_test: dict[str, float]) -> dict[str, Any]:
    """valid/test as the true split's protocol scores them (the user's real history excluded), comparable across
    privacy settings; under randomized response also the validation numbers the selection saw."""
    if config.rr_epsilon is None:
        return {"valid": run_valid, "test": run_test}
    return {"valid": validation_result(model, split).metrics, "test": test_result(model, split).metrics,
            "valid_on_randomized": run_valid, "rr_epsilon": config.rr_epsilon}


__all__ = [
    "cgan",
    "cgan_validator",
    "epoch_pairs",
    "export",
    "gd_teacher",
    "generator",
    "generator_lists",
    "list_length",
    "kd_teacher",
    "lists",
    "model_split",
    "reported_metrics",
    "train_config",
    "tuned_teacher_settings",
]
