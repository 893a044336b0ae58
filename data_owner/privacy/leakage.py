"""Leakage metrics of an export against the owner's raw data (ALGORITHMS.md section 5).

Reconstruction: how much of a user's training history T_u its exported list L_u gives away,
    precision_u = |L_u & T_u| / |L_u|,  recall_u = |L_u & T_u| / |T_u|   (means over users),
and the share of users whose whole list lies inside T_u.

Membership: can the exported soft targets q_ui = sigmoid(z_ui / t) tell a training item from an item the user
really chose but the models never saw (the held-out validation and test items)? Both sets are true interests of the
user, so the comparison isolates memorisation from relevance: ROC AUC 0.5 means the soft targets carry no trace of
training membership, 1.0 that a threshold separates them perfectly. Members are the listed items that are in T_u,
scored by the soft targets the export carries. The held-out items are mostly not listed, so the export has no soft
target for them; they are scored with the export teacher's q_ui, the value the export would carry if they were
listed (`soft_target_scorer`). The membership functions therefore take the two score arrays; the report takes a
`PairScorer` (users, items -> q) for the unlisted items and checks it against the exported values where both exist.
TPR at 1% FPR is the attack's hit rate when it may wrongly
flag at most 1% of the held-out items (a low-false-alarm view that an average such as AUC hides).

Reference rows put the numbers in scale: a popularity top-L list (the same list for everyone: what anyone knows)
and exporting T_u itself (the worst case); their membership numbers score their members with the same teacher.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from data_owner.data.split import LeaveOneOutSplit
from data_owner.export import user_token
from shared.interactions import ItemSets
from shared.losses import soft_targets
from shared.models import Recommender
from shared.schemas import ExportBundle

log = logging.getLogger(__name__)

PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # users [N], items [N] (int64) -> q [N] in [0, 1]

DEFAULT_MAX_FPR = 0.01
SOFT_TARGET_TOLERANCE = 1e-3  # the export's q vs the teacher's, recomputed (device and float order differ)


# ----------------------------------------------------------------------------------------------------------------
# Membership: rank statistics


def _scores(values: np.ndarray | list[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{what} is empty: membership needs at least one score on each side")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite scores; check the scorer that produced them")
    return array


def roc_auc(member_scores: np.ndarray | list[float], nonmember_scores: np.ndarray | list[float]) -> float:
    """P(member score > non-member score) + 0.5 P(equal): the ROC AUC of "higher score = member", computed as the
    Mann-Whitney U statistic from mid-ranks (ties count one half), in O(N log N)."""
    members = _scores(member_scores, "member_scores")
    nonmembers = _scores(nonmember_scores, "nonmember_scores")
    pooled = np.concatenate([members, nonmembers])
    _, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    midranks = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mid-rank of each distinct value
    rank_sum = midranks[inverse[: members.size]].sum()
    u = rank_sum - members.size * (members.size + 1) / 2.0
    return float(u / (members.size * nonmembers.size))


def tpr_at_fpr(member_scores: np.ndarray | list[float], nonmember_scores: np.ndarray | list[float],
               max_fpr: float = DEFAULT_MAX_FPR) -> float:
    """The share of members flagged by the rule "score > tau", with tau the lowest threshold that flags at most
    floor(max_fpr * n_nonmembers) non-members (so the false-positive rate is at most `max_fpr`)."""
    if not 0 <= max_fpr < 1:
        raise ValueError(f"max_fpr must lie in [0, 1), got {max_fpr}")
    members = _scores(member_scores, "member_scores")
    nonmembers = np.sort(_scores(nonmember_scores, "nonmember_scores"))[::-1]
    allowed = int(math.floor(max_fpr * nonmembers.size + 1e-9))
    tau = nonmembers[allowed] if allowed < nonmembers.size else -np.inf
    return float(np.mean(members > tau))


@dataclass(frozen=True)
class Membership:
    auc: float
    tpr_at_low_fpr: float
    max_fpr: float
    n_members: int
    n_nonmembers: int


def membership(member_scores: np.ndarray | list[float], nonmember_scores: np.ndarray | list[float],
               max_fpr: float = DEFAULT_MAX_FPR) -> Membership:
    """ROC AUC and TPR at `max_fpr` of separating members (training items) from non-members by their scores."""
    return Membership(auc=roc_auc(member_scores, nonmember_scores),
                      tpr_at_low_fpr=tpr_at_fpr(member_scores, nonmember_scores, max_fpr), max_fpr=max_fpr,
                      n_members=int(np.size(member_scores)), n_nonmembers=int(np.size(nonmember_scores)))


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction


@dataclass(frozen=True)
class Reconstruction:
    precision: float  # mean over users with a list of |L_u & T_u| / |L_u|
    recall: float  # mean over users with a list and a non-empty T_u of |L_u & T_u| / |T_u|
    subset_share: float  # share of users with a list whose list lies inside T_u
    mean_list_length: float
    n_users: int  # users with a non-empty list


def reconstruction(lists: ItemSets, train: ItemSets) -> Reconstruction:
    """Precision, recall and subset share of `lists` against the training sets `train` (same users, same catalog).
    Users with an empty list are left out of every mean."""
    if lists.n_users != train.n_users or lists.n_items != train.n_items:
        raise ValueError(f"lists ({lists.n_users} users x {lists.n_items} items) and training sets "
                         f"({train.n_users} x {train.n_items}) must cover the same users and catalog")
    users, items = lists.to_pairs()
    hits = np.bincount(users[train.contains(users, items)], minlength=lists.n_users)
    length = lists.lengths()
    history = train.lengths()
    listed = length > 0
    if not listed.any():
        raise ValueError("every list is empty: there is nothing to measure")
    with_history = listed & (history > 0)
    return Reconstruction(
        precision=float(np.mean(hits[listed] / length[listed])),
        recall=float(np.mean(hits[with_history] / history[with_history])) if with_history.any() else 0.0,
        subset_share=float(np.mean(hits[listed] == length[listed])),
        mean_list_length=float(length[listed].mean()),
        n_users=int(listed.sum()),
    )


def popularity_lists(train: ItemSets, length: int) -> ItemSets:
    """The same top-`length` items by training count for every user (ties by item index): what anyone knows."""
    if not 0 < length <= train.n_items:
        raise ValueError(f"list length must lie in [1, {train.n_items}], got {length}")
    counts = np.bincount(train.indices, minlength=train.n_items)
    top = np.argsort(-counts, kind="stable")[:length]
    return ItemSets.from_pairs(np.repeat(np.arange(train.n_users), length), np.tile(top, train.n_users),
                               train.n_users, train.n_items)


def held_out_pairs(split: LeaveOneOutSplit) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of every held-out true positive: each user's validation item, then each user's test item."""
    users = [np.flatnonzero(split.valid_item >= 0), np.flatnonzero(split.test_item >= 0)]
    items = [split.valid_item[users[0]], split.test_item[users[1]]]
    return np.concatenate(users).astype(np.int64), np.concatenate(items).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# The export, mapped back to the owner's indices


@dataclass(frozen=True)
class ExportedPairs:
    """Every (user, item, soft target) of an export in the owner's indices, aligned int64 / int64 / float64."""

    users: np.ndarray
    items: np.ndarray
    soft_targets: np.ndarray
    n_users: int
    n_items: int

    def as_item_sets(self) -> ItemSets:
        return ItemSets.from_pairs(self.users, self.items, self.n_users, self.n_items)


def export_pairs(bundle: ExportBundle, split: LeaveOneOutSplit, secret: bytes, consumer_id: str) -> ExportedPairs:
    """Map an export's tokens back to the owner's users (recomputing every user's token under `secret` and
    `consumer_id`) and its item ids to item indices."""
    catalog = [str(i) for i in split.item_ids]
    if list(bundle.manifest.item_ids) != catalog:
        raise ValueError(f"the export's catalog ({len(bundle.manifest.item_ids)} items) is not the split's "
                         f"({len(catalog)} items, in the same order): audit it against the data it was built from")
    user_of = {user_token(secret, consumer_id, str(uid)): u for u, uid in enumerate(split.user_ids)}
    item_of = {item: i for i, item in enumerate(catalog)}
    unknown = [record.token for record in bundle.users if record.token not in user_of]
    if unknown:
        raise ValueError(f"{len(unknown)} of the export's {len(bundle.users)} tokens (e.g. {unknown[0][:12]}...) are "
                         f"not tokens of this data's users for consumer '{consumer_id}' under this secret: use the "
                         "secret, consumer id and data the export was built with")
    users, items, targets = [], [], []
    for record in bundle.users:
        users.append(np.full(len(record.items), user_of[record.token], dtype=np.int64))
        items.append(np.fromiter((item_of[i] for i in record.items), dtype=np.int64, count=len(record.items)))
        targets.append(np.asarray(record.soft_targets, dtype=np.float64))
    empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
    return ExportedPairs(users=np.concatenate(users or [empty_i]), items=np.concatenate(items or [empty_i]),
                         soft_targets=np.concatenate(targets or [empty_f]), n_users=split.n_users,
                         n_items=split.n_items)


def soft_target_scorer(teacher: Recommender, temperature: float, batch_size: int = 65536) -> PairScorer:
    """q_ui = sigmoid(z_ui / t) of the teacher for aligned (user, item) pairs, the value an export carries."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")

    @torch.no_grad()
    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        teacher.eval()
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        out = np.empty(users.size, dtype=np.float64)
        for start in range(0, users.size, batch_size):
            u = torch.as_tensor(users[start : start + batch_size], device=teacher.device)
            i = torch.as_tensor(items[start : start + batch_size], device=teacher.device)
            out[start : start + batch_size] = soft_targets(teacher.score(u, i), temperature).double().cpu().numpy()
        return out

    return score


# ----------------------------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class LeakageRow:
    name: str
    precision: float
    recall: float
    subset_share: float
    mean_list_length: float
    membership_auc: float | None  # None: no member (no listed training item) or no scorer
    tpr_at_low_fpr: float | None
    n_members: int
    n_nonmembers: int


@dataclass(frozen=True)
class LeakageReport:
    rows: tuple[LeakageRow, ...]
    max_fpr: float
    context: dict[str, Any] = field(default_factory=dict)  # dataset, export id, switches (for the reader)
    notes: tuple[str, ...] = ()

    def row(self, name: str) -> LeakageRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; the rows are {[r.name for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_fpr": self.max_fpr, "context": self.context, "rows": [asdict(r) for r in self.rows],
                "notes": list(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    def to_markdown(self) -> str:
        fpr = f"{self.max_fpr:.0%}"

        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        lines = []
        if self.context:
            lines += [", ".join(f"{k}: {v}" for k, v in self.context.items()), ""]
        lines += [f"| list | mean L | precision | recall | subset of T_u | membership AUC | TPR@{fpr} FPR | "
                  "members / held-out |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.mean_list_length:.1f} | {r.precision:.4f} | {r.recall:.4f} | "
                         f"{r.subset_share:.4f} | {cell(r.membership_auc)} | {cell(r.tpr_at_low_fpr)} | "
                         f"{r.n_members} / {r.n_nonmembers} |")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


EXPORT_ROW = "export"
POPULARITY_ROW = "popularity top-L (reference)"
HISTORY_ROW = "raw history T_u (reference)"


def _row(name: str, lists: ItemSets, train: ItemSets, member_scores: np.ndarray | None,
         nonmember_scores: np.ndarray | None, max_fpr: float) -> LeakageRow:
    rec = reconstruction(lists, train)
    inference = None
    if member_scores is not None and nonmember_scores is not None and member_scores.size and nonmember_scores.size:
        inference = membership(member_scores, nonmember_scores, max_fpr)
    return LeakageRow(name=name, precision=rec.precision, recall=rec.recall, subset_share=rec.subset_share,
                      mean_list_length=rec.mean_list_length,
                      membership_auc=None if inference is None else inference.auc,
                      tpr_at_low_fpr=None if inference is None else inference.tpr_at_low_fpr,
                      n_members=0 if member_scores is None else int(member_scores.size),
                      n_nonmembers=0 if nonmember_scores is None else int(nonmember_scores.size))


def leakage_report(split: LeaveOneOutSplit, exported: ExportedPairs, scorer: PairScorer | None,
                   max_fpr: float = DEFAULT_MAX_FPR, context: dict[str, Any] | None = None) -> LeakageReport:
    """The export's leakage against the raw split, with the popularity and raw-history reference rows.

    Membership (see the module docstring): members of a row are its listed items that are training items; the
    export's members carry their exported soft targets, the reference rows' members and every held-out
    item are scored by `scorer` (the export teacher's q). With `scorer=None` the membership columns stay empty.
    When given, `scorer` must reproduce the exported soft targets (within SOFT_TARGET_TOLERANCE), else ValueError:
    it would not be the export's teacher."""
    if exported.n_users != split.n_users or exported.n_items != split.n_items:
        raise ValueError("the exported pairs and the split must cover the same users and items")
    train = split.train
    lists = exported.as_item_sets()
    if lists.nnz == 0:
        raise ValueError("the export lists no item: there is nothing to audit")
    length = int(round(lists.lengths()[lists.lengths() > 0].mean()))
    notes: list[str] = []
    context = dict(context or {})
    member_mask = train.contains(exported.users, exported.items)
    export_members = exported.soft_targets[member_mask]
    nonmember_scores = pop_members = history_members = None
    if scorer is not None:
        recomputed = scorer(exported.users, exported.items)
        deviation = float(np.max(np.abs(recomputed - exported.soft_targets)))
        context["soft_target_max_deviation"] = float(f"{deviation:.3g}")
        if deviation > SOFT_TARGET_TOLERANCE:
            raise ValueError(f"the teacher's soft targets differ from the exported ones by up to {deviation:.3g}: "
                             "it is not the teacher (or temperature) this export was built with")
        held_users, held_items = held_out_pairs(split)
        nonmember_scores = scorer(held_users, held_items)
        popularity = popularity_lists(train, min(length, split.n_items))
        users, items = popularity.to_pairs()
        inside = train.contains(users, items)
        pop_members = scorer(users[inside], items[inside])
        history_members = scorer(*train.to_pairs())
    else:
        popularity = popularity_lists(train, min(length, split.n_items))
        notes.append("membership not computed: no teacher to score the held-out items")
    if not export_members.size:
        notes.append("no listed item is a training item of its user: no member to infer (exclude-observed lists)")
    rows = (
        _row(EXPORT_ROW, lists, train, export_members if scorer is not None else None, nonmember_scores, max_fpr),
        _row(POPULARITY_ROW, popularity, train, pop_members, nonmember_scores, max_fpr),
        _row(HISTORY_ROW, train, train, history_members, nonmember_scores, max_fpr),
    )
    notes.append("members: a row's listed items that are training items; held-out: each user's validation and test "
                 "item, scored with the export teacher's soft target sigmoid(z/t) (0.5 AUC = no memorisation)")
    auc = rows[0].membership_auc
    log.info("leakage of %s: precision %.4f, recall %.4f, subset %.4f, membership AUC %s",
             str(context.get("export_id", "the export"))[:16], rows[0].precision, rows[0].recall,
             rows[0].subset_share, "-" if auc is None else f"{auc:.4f}")
    return LeakageReport(rows=rows, max_fpr=max_fpr, context=context, notes=tuple(notes))
