"""Data-free student distillation from an export alone (GD-REC section 3.3):

    L_S = L_GF(theta_S) + lambda * L_GD(theta_S; theta_T)

L_GF: the base model's own loss on generated pairs (listed items as positives, negatives sampled uniformly from
the catalog outside the user's list); L_GD (eq. 6): BCE between sigmoid(z^S / t) and the owner's soft targets on
the listed items. Both terms are means over the batch's pairs; for NeuMF L_GF is the mean of the positive and
the negative BCE terms, half their per-pair sum, so against a per-pair sum form lambda weighs twice as much there
(the KD baselines' L_CF has the same form). The student has `fraction` of the teacher's parameter count (same
family). Its user index is the export's token order. The function takes an `ExportBundle` and nothing else: it
cannot be handed raw data.

Ranking-aware transfer (`DistillConfig.transfer`), beyond the paper's equal positives and pointwise L_GD:
    "paper"     L_GF with every listed item an equal positive, L_GD the BCE of eq. 6 (the default, the paper's);
    "listwise"  per user, the student's softmax over the list and `negatives` sampled catalog items (at t) is fitted
                to the teacher's softmax over the list (z^T = t * logit(q), recovered from the shipped targets):
                L_S = L_GF + lambda * (L_GD + L_list), L_list = -sum_i p^T_ui log p^S_ui. It carries the teacher's
                order within the list and pushes the sampled items below it;
    "weighted"  L_GF with each listed item weighted by its soft target (w = q / mean of the user's q), so items
                the teacher ranks low count less as positives; L_GD as in the paper.

Model selection without data: one listed item per user (chosen at random) is held out of training and the epoch
is selected on how well the student ranks it among the items outside the rest of the list ("list fidelity").

Every random draw follows `DistillConfig.seed`: the student's initial weights and the hold-out from it directly, the
epochs' shuffling and negatives from the training loop's generator, which `shared.training` checkpoints with the
torch generators and the optimiser, so a resumed run ends as an uninterrupted one. `run_fingerprint` keys that
resumable state by the export's content and every setting that changes the result."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from shared.evaluation import evaluate
from shared.interactions import ItemSets
from shared.losses import retemper, soft_target_bce
from shared.models import PairBatch, Recommender, SizedConfig, build_model, config_at_fraction
from shared.sampling import sample_negatives
from shared.schemas import ExportBundle, content_sha256
from shared.training import TrainConfig, TrainResult, fit

log = logging.getLogger(__name__)


# The student learns the teacher's lists, not noisy raw data, and is best regularised less than the teacher
# (docs/experiments.md "List generators and data-free students"); the list fidelity that picks among these factors
# needs no data.
REG_FACTORS = (1.0, 0.1, 0.01)


@dataclass(frozen=True)
class DistillConfig:
    fraction: float = 0.5
    lam: float = 0.7  # lambda: weight of L_GD
    temperature: float | None = None  # None: the export's; another t re-tempers the soft targets to it
    epochs: int = 100
    lr: float = 5e-3
    batch_size: int = 1000
    reg: float | None = None  # None: the teacher's
    patience: int = 5
    eval_every: int = 5
    holdout: bool = True  # hold one listed item per user out for model selection
    seed: int = 0
    progress: bool = True
    checkpoint_dir: str | None = None  # resumable training state (shared.training); None: none kept
    checkpoint_every_s: float = 300.0
    transfer: str = "paper"  # "paper", "listwise" or "weighted" (see the module docstring)
    negatives: int = 50  # listwise: catalog items sampled per user outside the list, each epoch
    # the student's regularisation: `reg` (None: the teacher's) times each factor, one student each, the one with
    # the best list fidelity kept; (1.0,) trains one student at `reg` (the paper's single student)
    reg_factors: tuple[float, ...] = REG_FACTORS

    def __post_init__(self) -> None:
        if self.transfer not in TRANSFERS:
            raise ValueError(f"transfer must be one of {list(TRANSFERS)}, got {self.transfer!r}")
        if self.negatives < 1:
            raise ValueError(f"negatives must be at least 1, got {self.negatives}")
        if not self.reg_factors or min(self.reg_factors) < 0:
            raise ValueError(f"reg_factors must be non-negative numbers, at least one, got {self.reg_factors}")


TRANSFERS = ("paper", "listwise", "weighted")
# settings added after the paper's transfer: left out of the fingerprint at their defaults, so that the runs keyed
# before they existed keep their keys
_FINGERPRINT_DEFAULTS = {"transfer": "paper", "negatives": 50, "reg_factors": (1.0,)}


@dataclass(frozen=True)
class GDBatch:
    pairs: PairBatch
    soft_targets: torch.Tensor  # float32 [B], q of pairs.pos_items

    def to(self, device: torch.device | str) -> GDBatch:
        return GDBatch(self.pairs.to(device), self.soft_targets.to(device))


@dataclass
class StudentRun:
    model: Recommender
    tokens: list[str]  # user index -> token
    item_ids: list[str]  # item index -> external id
    sizing: SizedConfig
    train: TrainResult
    config: DistillConfig
    temperature: float
    export_id: str
    extra: dict[str, Any] = field(default_factory=dict)


def export_arrays(export: ExportBundle) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(lists [n_users, L] item indices, soft targets [n_users, L], item id -> index) from an export."""
    index = {item: i for i, item in enumerate(export.manifest.item_ids)}
    length = export.manifest.list_length
    lists = np.full((len(export.users), length), -1, dtype=np.int64)
    targets = np.zeros((len(export.users), length), dtype=np.float32)
    for u, record in enumerate(export.users):
        lists[u, : len(record.items)] = [index[i] for i in record.items]
        targets[u, : len(record.items)] = record.soft_targets
    return lists, targets, index


# Revision of the student's training draws; part of the research runner's GD cell key, so a change that moves the
# numbers (2: negatives are drawn outside the whole list, the held-out item included) reruns the GD cells.
SAMPLER_REVISION = 2


class GDSampler:
    """Each epoch: every (user, listed item, soft target) once, shuffled, with a catalog negative outside the list.

    `lists` holds the training pairs (-1 = no item); negatives are drawn outside `exclude` (default: `lists`),
    which must hold every listed item, the one held out for model selection too: a held-out item drawn as a
    negative would be pushed down by the very loss whose epochs it selects."""

    def __init__(self, lists: np.ndarray, targets: np.ndarray, n_items: int, batch_size: int,
                 exclude: np.ndarray | None = None) -> None:
        keep = lists >= 0
        self.users = np.nonzero(keep)[0].astype(np.int64)
        self.items = lists[keep]
        self.targets = targets[keep]
        exclude = lists if exclude is None else exclude
        listed = exclude >= 0
        self.listed = ItemSets.from_pairs(np.nonzero(listed)[0].astype(np.int64), exclude[listed], lists.shape[0],
                                          n_items)
        self.batch_size = batch_size

    def __call__(self, epoch: int, rng: np.random.Generator):
        order = rng.permutation(self.users.size)
        users, items, targets = self.users[order], self.items[order], self.targets[order]
        negatives = sample_negatives(users, self.listed, rng)
        for start in range(0, users.size, self.batch_size):
            sl = slice(start, start + self.batch_size)
            pairs = PairBatch(torch.from_numpy(users[sl]), torch.from_numpy(items[sl]), torch.from_numpy(negatives[sl]))
            yield GDBatch(pairs, torch.from_numpy(targets[sl]))


@dataclass(frozen=True)
class ListBatch:
    users: torch.Tensor  # int64 [B]
    items: torch.Tensor  # int64 [B, L], -1 = no item (held out)
    soft_targets: torch.Tensor  # float32 [B, L]
    negatives: torch.Tensor  # int64 [B, M], outside each user's list

    def to(self, device: torch.device | str) -> ListBatch:
        return ListBatch(self.users.to(device), self.items.to(device), self.soft_targets.to(device),
                         self.negatives.to(device))


class ListSampler:
    """Each epoch: every user once, shuffled, with their whole list, its soft targets and `negatives` catalog items
    drawn outside the list (held-out item included, as in `GDSampler`); about `batch_size` listed pairs a batch."""

    def __init__(self, lists: np.ndarray, targets: np.ndarray, n_items: int, batch_size: int, negatives: int,
                 exclude: np.ndarray | None = None) -> None:
        self.lists, self.targets, self.negatives = lists, targets, negatives
        exclude = lists if exclude is None else exclude
        listed = exclude >= 0
        self.listed = ItemSets.from_pairs(np.nonzero(listed)[0].astype(np.int64), exclude[listed], lists.shape[0],
                                          n_items)
        self.users = np.flatnonzero((lists >= 0).any(1)).astype(np.int64)
        self.per_batch = max(1, batch_size // max(1, lists.shape[1]))

    def __call__(self, epoch: int, rng: np.random.Generator):
        order = rng.permutation(self.users)
        negatives = sample_negatives(np.repeat(order, self.negatives), self.listed, rng).reshape(order.size, -1)
        for start in range(0, order.size, self.per_batch):
            users = order[start : start + self.per_batch]
            yield ListBatch(torch.from_numpy(users), torch.from_numpy(self.lists[users]),
                            torch.from_numpy(self.targets[users]),
                            torch.from_numpy(negatives[start : start + self.per_batch]))


def listwise_loss(model: Recommender, batch: ListBatch, temperature: float, lam: float) -> torch.Tensor:
    """L_GF + lambda * (L_GD + L_list) on one batch of whole lists (see the module docstring): L_GF pairs each listed
    item with one of the user's sampled items, L_GD is eq. 6 on the listed items, L_list the cross-entropy of the
    student's softmax over list + sampled items against the teacher's softmax over the list."""
    valid = batch.items >= 0
    items = batch.items.clamp_min(0)
    users = batch.users[:, None]
    n_users, length = items.shape
    negatives = batch.negatives
    paired = negatives[:, torch.arange(length, device=items.device) % negatives.shape[1]]
    flat_users = users.expand(-1, length)[valid]
    l_gf = model.loss(PairBatch(flat_users, items[valid], paired[valid]))
    s_list = model.score(users.expand(-1, length).reshape(-1), items.reshape(-1)).reshape(n_users, length)
    s_neg = model.score(users.expand(-1, negatives.shape[1]).reshape(-1), negatives.reshape(-1)).reshape(
        n_users, -1)
    l_gd = soft_target_bce(s_list[valid], batch.soft_targets[valid], temperature)
    tiny = torch.finfo(torch.float32).eps
    teacher = torch.logit(batch.soft_targets.clamp(tiny, 1 - tiny))  # = z^T / t
    teacher = teacher.masked_fill(~valid, -torch.inf)
    p_teacher = torch.softmax(teacher, dim=1)
    student = torch.cat([s_list.masked_fill(~valid, -torch.inf), s_neg], dim=1) / temperature
    log_p = torch.log_softmax(student, dim=1)[:, :length]
    l_list = -(p_teacher * log_p.masked_fill(~valid, 0.0)).sum(1).mean()
    return l_gf + lam * (l_gd + l_list)


# DistillConfig fields that change how a run is watched or saved, not what it computes
_NOT_IN_FINGERPRINT = ("progress", "checkpoint_dir", "checkpoint_every_s")


def settings_fingerprint(config: DistillConfig) -> str:
    """sha256 of the settings that change the student (all but progress display and checkpointing) and the sampler
    revision."""
    settings = {k: v for k, v in asdict(config).items() if k not in _NOT_IN_FINGERPRINT
                and not (k in _FINGERPRINT_DEFAULTS and v == _FINGERPRINT_DEFAULTS[k])}
    return hashlib.sha256(json.dumps({"settings": settings, "sampler": SAMPLER_REVISION}, sort_keys=True).encode()
                          ).hexdigest()


def run_fingerprint(export: ExportBundle, config: DistillConfig) -> str:
    """sha256 of everything a student's training depends on: the export (its manifest but for the creation time, and
    every user record) and `settings_fingerprint`. Two runs with the same fingerprint train the same student, so one
    may continue the other's saved state."""
    payload = {
        "manifest": export.manifest.model_dump(mode="json", exclude={"created_at"}),
        "users": content_sha256(export.users),
        "settings": settings_fingerprint(config),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class _PairWeights:
    """w_ui = q_ui / mean of user u's listed q (1 on average per user), looked up by (user, item) on any device."""

    def __init__(self, lists: np.ndarray, targets: np.ndarray) -> None:
        keep = lists >= 0
        users = np.nonzero(keep)[0].astype(np.int64)
        q = targets[keep].astype(np.float64)
        mean = np.bincount(users, weights=q, minlength=lists.shape[0]) / np.maximum(
            1, np.bincount(users, minlength=lists.shape[0]))
        self.n_items = int(lists.max()) + 1 if keep.any() else 1
        self.keys = torch.from_numpy(users * self.n_items + lists[keep])
        order = torch.argsort(self.keys)
        self.keys = self.keys[order]
        self.values = torch.from_numpy((q / np.maximum(mean[users], 1e-12)).astype(np.float32))[order]

    def __getitem__(self, index: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        users, items = index
        query = (users.cpu() * self.n_items + items.cpu())
        position = torch.searchsorted(self.keys, query).clamp_max(self.keys.numel() - 1)
        return self.values[position].to(users.device)


def distill_student(export: ExportBundle, config: DistillConfig, device: torch.device | str = "cpu") -> StudentRun:
    """Train a student of `config.fraction` of the teacher's size from the export alone (with
    `config.checkpoint_dir`: resumable, keyed by `run_fingerprint`). With several `reg_factors`, one student per
    regularisation strength (the base strength times each factor), kept by list fidelity (data-free)."""
    base = config.reg if config.reg is not None else export.manifest.teacher.config.get("reg")
    factors = tuple(dict.fromkeys(config.reg_factors))
    if len(factors) == 1 or base is None:
        return _distill_once(export, config, device, None if config.reg is None and factors == (1.0,) else
                             (None if base is None else float(base) * factors[0]))
    if not config.holdout or export.manifest.list_length < 3:
        log.info("no held-out listed item to choose the student's regularisation by (holdout off or lists shorter "
                 "than 3): one student at factor %g", factors[0])
        return _distill_once(export, config, device, float(base) * factors[0])
    runs = []
    for factor in factors:
        run = _distill_once(export, config, device, float(base) * factor)
        runs.append(run)
        log.info("student with reg %.3g: list fidelity NDCG@50 %.4f", float(base) * factor,
                 run.train.best_metrics.get("NDCG@50", float("nan")))
    best = max(runs, key=lambda r: r.train.best_metrics.get("NDCG@50", -1.0))
    best.extra["reg_candidates"] = [{"reg": r.extra["reg"], "fidelity_ndcg50": r.train.best_metrics.get("NDCG@50"),
                                     "best_epoch": r.train.best_epoch} for r in runs]
    return best


def _distill_once(export: ExportBundle, config: DistillConfig, device: torch.device | str, reg: float | None
                  ) -> StudentRun:
    """One student at regularisation `reg` (None: the teacher's)."""
    manifest = export.manifest
    temperature = config.temperature or manifest.temperature
    lists, targets, _ = export_arrays(export)
    if temperature != manifest.temperature:  # eq. 6 uses one t for q and P: re-temper the shipped q
        log.info("soft targets re-tempered from the export's t=%g to t=%g", manifest.temperature, temperature)
        targets = retemper(torch.from_numpy(targets), manifest.temperature, temperature).numpy()
    n_users, n_items = lists.shape[0], len(manifest.item_ids)
    teacher_config = dict(manifest.teacher.config)
    sizing = config_at_fraction(manifest.teacher.family, teacher_config, n_users, n_items, config.fraction)
    student_config = dict(sizing.config)
    if reg is not None:
        student_config["reg"] = reg
    init = torch.Generator().manual_seed(config.seed)
    model = build_model(manifest.teacher.family, n_users, n_items, generator=init, **student_config).to(device)

    rng = np.random.default_rng(config.seed)
    validate = None
    train_lists, train_targets = lists, targets
    if config.holdout and lists.shape[1] >= 3:
        column = rng.integers(0, lists.shape[1], size=n_users)
        held = lists[np.arange(n_users), column]
        mask = np.ones_like(lists, dtype=bool)
        mask[np.arange(n_users), column] = False
        train_lists = np.where(mask, lists, -1)
        kept_users = np.nonzero(mask)[0].astype(np.int64)
        rest_sets = ItemSets.from_pairs(kept_users, lists[mask], n_users, n_items)
        users = np.arange(n_users, dtype=np.int64)

        def validate() -> dict[str, float]:
            return evaluate(model.score_all, users, held, exclude=[rest_sets], ks=(50,), device=device).metrics

    if config.transfer == "listwise":
        sampler: GDSampler | ListSampler = ListSampler(train_lists, train_targets, n_items, config.batch_size,
                                                       config.negatives, exclude=lists)
    else:
        sampler = GDSampler(train_lists, train_targets, n_items, config.batch_size, exclude=lists)
    weights = _PairWeights(train_lists, train_targets) if config.transfer == "weighted" else None

    def loss_fn(batch: Any) -> torch.Tensor:
        if isinstance(batch, ListBatch):
            return listwise_loss(model, batch, temperature, config.lam)
        w = None if weights is None else weights[batch.pairs.users, batch.pairs.pos_items]
        l_gf = model.loss(batch.pairs, w)
        student_logits = model.score(batch.pairs.users, batch.pairs.pos_items)
        l_gd = soft_target_bce(student_logits, batch.soft_targets, temperature)
        return l_gf + config.lam * l_gd

    train_config = TrainConfig(epochs=config.epochs, lr=config.lr, patience=config.patience,
                               eval_every=config.eval_every, metric="NDCG@50", seed=config.seed,
                               progress=config.progress, checkpoint_dir=config.checkpoint_dir,
                               checkpoint_every_s=config.checkpoint_every_s)
    started = time.perf_counter()
    once = replace(config, reg=reg, reg_factors=(1.0,))
    identity = run_fingerprint(export, once) if config.checkpoint_dir is not None else None
    label = "" if len(config.reg_factors) == 1 else f" reg {reg:.3g}"
    result = fit(model, sampler, validate, train_config, loss_fn=loss_fn, device=device,
                 description=f"student {config.fraction:.0%}{label}", identity=identity)
    log.info("student: %d params (%.1f%% of the teacher), best epoch %d, %.1f s", sizing.params,
             100 * sizing.ratio, result.best_epoch, time.perf_counter() - started)
    return StudentRun(model=model, tokens=[r.token for r in export.users], item_ids=list(manifest.item_ids),
                      sizing=sizing, train=result, config=config, temperature=temperature,
                      export_id=manifest.export_id, extra={"reg": student_config.get("reg")})
