"""The teacher's own hyperparameter search on the owner's validation item, for a dataset without a preset.

Optuna drives it: a TPE sampler seeded by the run's seed proposes the settings (BPR: `reg` and `lr` on a log scale,
`dim` among the widths whose parameter count fits the budget; NeuMF: also its MLP tower; every trial keeps the base's
optimizer, whose learning-rate range is searched), and a median pruner reads the validation metric at each evaluation
of the training loop and stops a trial that falls below the median of the earlier trials at the same epoch. Each
trial trains exactly as the KD teacher does (`data_owner.teacher.fit_on_pairs`, the same seeded initialisation and
epoch cap), with the trial's early stopping
(`TeacherTuning.patience`). The first trial is the preset (or the family's default) itself, so the search keeps it
unless a trial validates better; the next are the same with a tenth and a hundredth of its L2 strength (for
per-triple SGD, the tenth also with the other way of drawing negatives, `data_owner.bpr_sgd`). The
study lives in memory; the owner's chain keeps its result as a cached stage.

The search stops starting trials once `TeacherTuning.budget_s` seconds have passed or `n_trials` have run; a trial
still training then stops at its next evaluation (reported as pruned by the budget). The settings of the completed
trial with the best validation metric are chosen; when no trial completes, the preset is kept and the report says so.
The test items are never read."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import optuna
import torch

from data_owner.config import NEGATIVES, TeacherSettings, TeacherTuning
from data_owner.data import LeaveOneOutSplit
from data_owner.teacher import DEFAULT_KS, fit_on_pairs
from shared.models import Recommender, build_model
from shared.models.sizing import model_class
from shared.training import TrainConfig, TrainResult

log = logging.getLogger(__name__)

MIN_STARTUP_TRIALS = 3  # trials the pruner lets finish before it compares against them
WARM_START_REG_FACTORS = (0.1, 0.01)  # the trials after the base: its L2 strength times these
WARMUP_EVALUATIONS = 8  # evaluations of a trial before the pruner may stop it (slow starters are not cut early)


@dataclass(frozen=True)
class TrialRecord:
    """One trial: its settings, how it ended ("complete", "pruned" or "failed"), the best validation metric it
    reached (None before its first evaluation), the epochs it trained, its best epoch, its seconds, and for a pruned
    or failed trial why ("pruner", "budget" or the error)."""

    number: int
    model: dict[str, Any]
    lr: float
    state: str
    valid: float | None
    epochs: int
    best_epoch: int | None
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class TuningResult:
    """The chosen teacher settings, the settings the search started from (`base`), the chosen trial (None: no trial
    completed and `base` is kept), its validation metrics at its best epoch, every trial, and the budget used."""

    settings: TeacherSettings
    base: TeacherSettings
    chosen_trial: int | None
    metric: str
    valid: dict[str, float]
    trials: list[TrialRecord]
    budget_s: float
    seconds: float
    max_params: int

    def counts(self) -> dict[str, int]:
        return {state: sum(t.state == state for t in self.trials) for state in ("complete", "pruned", "failed")}

    def summary_line(self) -> str:
        """One line: trials by state, seconds against the budget, the chosen settings and their validation metric."""
        counts = self.counts()
        head = (f"teacher tuning: {len(self.trials)} trials ({counts['complete']} complete, {counts['pruned']} "
                f"pruned, {counts['failed']} failed) in {self.seconds:.0f} s of {self.budget_s:.0f} s")
        if self.chosen_trial is None:
            return f"{head}; no trial completed, kept {self.settings.model} lr {self.settings.lr:g}"
        how = "" if self.settings.optimizer == "adam" else f" (sgd, {self.settings.negatives} negatives)"
        return (f"{head}; chose trial {self.chosen_trial}: {self.settings.model} lr {self.settings.lr:g}{how}, valid "
                f"{self.metric} {self.valid[self.metric]:.4f}")

    def to_dict(self) -> dict[str, Any]:
        return {"teacher": self.settings.key_payload(), "base": self.base.key_payload(),
                "chosen_trial": self.chosen_trial, "metric": self.metric, "valid": self.valid,
                "budget_s": self.budget_s, "seconds": round(self.seconds, 2), "max_params": self.max_params,
                "counts": self.counts(), "trials": [asdict(t) for t in self.trials]}


class SearchSpace:
    """The architectures within the parameter budget on this catalog, and how a trial draws its settings."""

    def __init__(self, base: TeacherSettings, tuning: TeacherTuning, n_users: int, n_items: int) -> None:
        self.base, self.tuning = base, tuning
        count = model_class(base.family).count_parameters
        self.max_params = tuning.max_params or count(n_users, n_items, **base.model)
        base_dim, base_hidden = self._base_architecture()
        dims = sorted({*tuning.dims, base_dim})
        towers = sorted({*tuning.hidden, base_hidden}) if base.family == "neumf" else [()]
        # per width, the towers (NeuMF) whose model fits the budget; BPR has the one empty tower
        self.towers: dict[int, list[tuple[int, ...]]] = {}
        for dim in dims:
            fitting = [t for t in towers if count(n_users, n_items, **self._architecture(dim, t)) <= self.max_params]
            if fitting:
                self.towers[dim] = fitting
        if not self.towers:
            smallest = min(count(n_users, n_items, **self._architecture(d, t)) for d in dims for t in towers)
            raise ValueError(f"no {base.family} architecture of the tuning space fits {self.max_params:,} parameters "
                             f"on {n_users} users x {n_items} items (the smallest has {smallest:,}); raise the "
                             "parameter budget (TeacherTuning.max_params, --tune-max-params) or add smaller dims")

    @property
    def lr_range(self) -> tuple[float, float]:
        """The learning rates searched: the base optimizer's range (`TeacherTuning.lr` or `sgd_lr`)."""
        return self.tuning.sgd_lr if self.base.optimizer == "sgd" else self.tuning.lr

    def _base_architecture(self) -> tuple[int, tuple[int, ...]]:
        model = self.base.model
        if self.base.family == "bpr":
            return int(model.get("dim", 64)), ()
        return int(model.get("dim_gmf", 32)), tuple(int(h) for h in model.get("hidden", (32, 16)))

    def _architecture(self, dim: int, tower: tuple[int, ...]) -> dict[str, Any]:
        if self.base.family == "bpr":
            return {**self.base.model, "dim": dim}
        return {**self.base.model, "dim_gmf": dim, "dim_mlp": dim, "hidden": list(tower)}

    @staticmethod
    def _tower_name(tower: tuple[int, ...]) -> str:
        return ",".join(map(str, tower))

    def base_params(self) -> dict[str, Any] | None:
        """The base settings as the trial parameters that reproduce them; None when they lie outside the space."""
        dim, tower = self._base_architecture()
        reg, lr = float(self.base.model.get("reg", 0.0)), float(self.base.lr)
        (reg_low, reg_high), (lr_low, lr_high) = self.tuning.reg, self.lr_range
        if dim not in self.towers or tower not in self.towers[dim] or not reg_low <= reg <= reg_high or \
                not lr_low <= lr <= lr_high:
            return None
        params: dict[str, Any] = {"reg": reg, "lr": lr, "dim": dim}
        if self.base.optimizer == "sgd":
            params["negatives"] = self.base.negatives
        if self.base.family == "neumf":
            params[f"hidden_d{dim}"] = self._tower_name(tower)
        return params

    def warm_starts(self) -> list[dict[str, Any]]:
        """The first trials: the base settings, then the same with a tenth and a hundredth of its L2 strength (the
        setting that moves ranking quality most across datasets; TPE's own proposals follow). Empty when the base
        lies outside the space."""
        base = self.base_params()
        if base is None:
            return []
        low = self.tuning.reg[0]
        weaker = [{**base, "reg": base["reg"] * f} for f in WARM_START_REG_FACTORS if base["reg"] * f >= low]
        if "negatives" in base:  # the other way of drawing negatives, which some catalogs need
            other = next(n for n in NEGATIVES if n != base["negatives"])
            weaker.insert(1, {**weaker[0], "negatives": other} if weaker else {**base, "negatives": other})
        return [base, *weaker]

    def suggest(self, trial: optuna.Trial) -> TeacherSettings:
        reg = trial.suggest_float("reg", *self.tuning.reg, log=True)
        lr = trial.suggest_float("lr", *self.lr_range, log=True)
        dim = trial.suggest_categorical("dim", sorted(self.towers))
        tower: tuple[int, ...] = ()
        if self.base.family == "neumf":  # one parameter per width: Optuna's categorical choices may not vary
            names = {self._tower_name(t): t for t in self.towers[dim]}
            tower = names[trial.suggest_categorical(f"hidden_d{dim}", sorted(names))]
        negatives = self.base.negatives
        if self.base.optimizer == "sgd":
            negatives = trial.suggest_categorical("negatives", list(NEGATIVES))
        return TeacherSettings(self.base.family, {**self._architecture(dim, tower), "reg": reg}, lr,
                               optimizer=self.base.optimizer, negatives=negatives)


def train_trial(split: LeaveOneOutSplit, settings: TeacherSettings, schedule: TrainConfig, *, batch_size: int,
                device: torch.device | str, pairs_per_epoch: int | None = None,
                on_evaluation: Callable[[dict[str, float]], None] | None = None,
                description: str = "tuning trial") -> tuple[Recommender, TrainResult]:
    """Train the teacher `settings` describe as the KD teacher trains (`data_owner.teacher.train_base_model`
    without pre-training: the model initialised from `schedule.seed`, the `TripletSampler` of the training pairs,
    `fit` selecting the epoch on the validation item) with `settings.lr`. `on_evaluation(metrics)` sees each
    validation (the one before training included) and may raise to stop the trial."""
    config = replace(schedule, lr=settings.lr)
    init = torch.Generator().manual_seed(config.seed)
    model = build_model(settings.family, split.n_users, split.n_items, generator=init, **settings.model).to(device)
    result = fit_on_pairs(model, split, config, batch_size=batch_size, device=device, ks=DEFAULT_KS,
                          pairs_per_epoch=pairs_per_epoch, on_evaluation=on_evaluation, description=description,
                          optimizer=settings.optimizer, negatives=settings.negatives)
    return model, result


def tune_teacher(split: LeaveOneOutSplit, base: TeacherSettings, tuning: TeacherTuning, schedule: TrainConfig, *,
                 batch_size: int, device: torch.device | str, pairs_per_epoch: int | None = None) -> TuningResult:
    """Search the teacher's settings on `split`'s validation item within `tuning`'s budget (see the module's
    docstring). `base` (the preset or the family's default) is the first trial and the fallback; `schedule` gives
    each trial's epoch cap, evaluation interval, selection metric, seed and progress bar (its lr and patience are the
    trial's own). Raises ValueError when no architecture fits the parameter budget or nobody can be evaluated."""
    if split.eval_users.size == 0:
        raise ValueError("tuning needs users with a validation item (at least 3 interactions each)")
    space = SearchSpace(base, tuning, split.n_users, split.n_items)
    schedule = replace(schedule, patience=tuning.patience, checkpoint_dir=None)
    metric, eval_every, epochs = schedule.metric, schedule.eval_every, schedule.epochs
    sampler = optuna.samplers.TPESampler(seed=schedule.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=MIN_STARTUP_TRIALS,
                                         n_warmup_steps=WARMUP_EVALUATIONS * eval_every)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for params in space.warm_starts():
        study.enqueue_trial(params)
    started = time.perf_counter()
    deadline = started + tuning.budget_s
    log.info("tuning the teacher for at most %.0f s (%d trials at most; %s within %s parameters, %s on validation)",
             tuning.budget_s, tuning.n_trials, base.family, f"{space.max_params:,}", metric)

    def objective(trial: optuna.Trial) -> float:
        settings = space.suggest(trial)
        trial.set_user_attr("settings", settings.key_payload())
        trial_started = time.perf_counter()
        evaluations = 0
        best = -math.inf

        def on_evaluation(metrics: dict[str, float]) -> None:
            nonlocal evaluations, best
            epoch = min(evaluations * eval_every, epochs)  # fit validates before training, then every eval_every
            evaluations += 1
            best = max(best, metrics[metric])
            trial.set_user_attr("epochs", epoch)
            trial.set_user_attr("best_value", best)
            trial.set_user_attr("seconds", time.perf_counter() - trial_started)
            if epoch == 0:
                return
            trial.report(metrics[metric], step=epoch)
            if time.perf_counter() > deadline:
                trial.set_user_attr("note", "budget")
                raise optuna.TrialPruned(f"the tuning budget of {tuning.budget_s:.0f} s ran out at epoch {epoch}")
            if trial.should_prune():
                trial.set_user_attr("note", "pruner")
                raise optuna.TrialPruned(f"below the median of earlier trials at epoch {epoch}")

        try:
            _, result = train_trial(split, settings, schedule, batch_size=batch_size, device=device,
                                    pairs_per_epoch=pairs_per_epoch, on_evaluation=on_evaluation,
                                    description=f"tuning trial {trial.number}")
        except FloatingPointError as exc:  # a diverged trial (lr too high for its reg) fails; the search goes on
            trial.set_user_attr("note", str(exc))
            trial.set_user_attr("seconds", time.perf_counter() - trial_started)
            raise
        trial.set_user_attr("epochs", result.epochs_run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("valid", result.best_metrics)
        trial.set_user_attr("seconds", time.perf_counter() - trial_started)
        return result.best_metrics[metric]

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        record = _record(trial)
        log.info("tuning trial %d %s: %s lr %.2g, valid %s %s, %d epochs, %.0f s%s", record.number, record.state,
                 record.model, record.lr, metric, "-" if record.valid is None else f"{record.valid:.4f}",
                 record.epochs, record.seconds, f" ({record.note})" if record.note else "")

    study.optimize(objective, n_trials=tuning.n_trials, timeout=tuning.budget_s, catch=(FloatingPointError,),
                   callbacks=[log_trial], gc_after_trial=False, show_progress_bar=False)
    seconds = time.perf_counter() - started
    unfinished = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)  # WAITING: enqueued, never run
    trials = [_record(t) for t in study.trials if t.state not in unfinished]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best_trial = max(complete, key=lambda t: (t.value, -t.number))
        chosen = TeacherSettings.from_payload(best_trial.user_attrs["settings"])
        result = TuningResult(chosen, base, best_trial.number, metric, dict(best_trial.user_attrs["valid"]), trials,
                              tuning.budget_s, seconds, space.max_params)
    else:
        log.warning("no tuning trial completed within %.0f s; the teacher keeps %s lr %g (raise the budget)",
                    tuning.budget_s, base.model, base.lr)
        result = TuningResult(base, base, None, metric, {}, trials, tuning.budget_s, seconds, space.max_params)
    log.info("%s", result.summary_line())
    return result


_STATES = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
           optuna.trial.TrialState.FAIL: "failed"}


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    settings = attrs.get("settings", {"model": {}, "lr": math.nan})
    state = _STATES.get(trial.state, trial.state.name.lower())
    valid = trial.value if state == "complete" else attrs.get("best_value")
    if valid is not None and not math.isfinite(valid):
        valid = None
    return TrialRecord(number=trial.number, model=dict(settings["model"]), lr=float(settings["lr"]), state=state,
                       valid=valid, epochs=int(attrs.get("epochs", 0)), best_epoch=attrs.get("best_epoch"),
                       seconds=round(float(attrs.get("seconds", 0.0)), 2), note=str(attrs.get("note", "")))


__all__ = ["SearchSpace", "TrialRecord", "TuningResult", "train_trial", "tune_teacher"]
