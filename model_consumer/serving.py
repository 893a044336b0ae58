"""The served student: top-K for a token (catalog order by the student's logits, caller's exclusions removed) and
item-to-item neighbours by cosine similarity of the student's item embeddings. One `LoadedModel` is immutable
once built; the service swaps a whole new one in to change models.

Rankings follow one total order: score descending, equal scores in catalog order. When a model loads, every
token's first `depth` items of that order are computed once (`TopK`: int32 catalog indices and float32 scores), so a
request without exclusions is a slice of a precomputed row; a request with exclusions, or deeper than `depth`,
scores the whole catalog. Both give the same items in the same order. `depth` is the deepest k the service allows
(its `max_k`, at most the catalog and `PRECOMPUTE_DEPTH`), reduced so that the table stays within
`PRECOMPUTE_LIMIT_BYTES`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from model_consumer.settings import ConsumerLayout
from model_consumer.students import REPUBLISH, PublishedModelError, current_version, model_dir
from shared.checkpoint import load_checkpoint
from shared.models import Recommender
from shared.schemas import ModelCard, ScoredItem

log = logging.getLogger(__name__)

PRECOMPUTE_LIMIT_BYTES = 512 * 2**20  # the most memory one model's precomputed top-K table may take
PRECOMPUTE_DEPTH = 200  # the deepest precomputed k: deeper requests are rare and are scored in full
SCORE_CHUNK_ELEMENTS = 2**24  # scores held at once while the table is computed (64 MiB of float32)
_ENTRY_BYTES = 8  # an int32 index and a float32 score


class NoModelError(RuntimeError):
    """There is no published model to serve (run `gdrec-consumer distill`)."""


@dataclass(frozen=True)
class Ranking:
    """One token's answer: catalog item ids, best first, and the student's score of each."""

    item_ids: list[str]
    scores: list[float]


@dataclass(frozen=True)
class TopK:
    """Every token's first `depth` items: `indices` [n_users, depth] int32 catalog rows, `scores` [n_users, depth]
    float32, best first."""

    indices: np.ndarray
    scores: np.ndarray

    @property
    def depth(self) -> int:
        return self.indices.shape[1]


def ranked_top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k items of each row in the service's order (score descending, equal scores by ascending index):
    scores [B, n] -> (values [B, k], indices [B, k]), k <= n. A NaN score raises ValueError (the model diverged).
    `torch.topk` answers every row without equal scores among or at the edge of its first k; the others, where
    topk's choice and order of equal scores is arbitrary, are redone in that order."""
    if torch.isnan(scores).any():
        raise ValueError("the served model gives NaN scores: republish a model trained without divergence "
                         f"({REPUBLISH})")
    values, indices = torch.topk(scores, k, dim=1)
    kth = values[:, -1:]
    left_out_ties = (scores == kth).sum(dim=1) > (values == kth).sum(dim=1)
    inner_ties = (values[:, 1:] == values[:, :-1]).any(dim=1)
    redo = (left_out_ties | inner_ties).nonzero().squeeze(1)
    if len(redo):
        values[redo], indices[redo] = _ranked_top_with_ties(scores[redo], k)
    return values, indices


def _ranked_top_with_ties(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`ranked_top` for rows with equal scores: the items above each row's k-th score, then as many of those equal
    to it as fit, by catalog order; sorted by score with a stable sort (catalog order among equals)."""
    rows = scores.shape[0]
    kth = torch.topk(scores, k, dim=1).values[:, -1:]  # [B, 1]
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))
    indices = chosen.nonzero()[:, 1].view(rows, k)  # row-major: ascending catalog index within each row
    values = scores.gather(1, indices)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), indices.gather(1, order)


def precompute_top(model: Recommender, n_users: int, n_items: int, depth: int, device: torch.device) -> TopK:
    """Every user's first `depth` items (`ranked_top`), scored in chunks of users."""
    chunk = max(1, SCORE_CHUNK_ELEMENTS // max(1, n_items))
    indices = np.empty((n_users, depth), dtype=np.int32)
    values = np.empty((n_users, depth), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n_users, chunk):
            users = torch.arange(start, min(start + chunk, n_users), device=device)
            top_values, top_indices = ranked_top(model.score_all(users).float(), depth)
            indices[start:start + len(users)] = top_indices.to(torch.int32).cpu().numpy()
            values[start:start + len(users)] = top_values.cpu().numpy()
    if not np.isfinite(values).all():
        raise ValueError(f"the served model gives infinite scores: {REPUBLISH}")
    return TopK(indices=indices, scores=values)


def precompute_depth(n_users: int, n_items: int, max_k: int, limit_bytes: int | None = None,
                     max_depth: int | None = None) -> int:
    """How deep the top-K table goes: max_k (at most the catalog and `max_depth`, default `PRECOMPUTE_DEPTH`), less
    when n_users x depth x 8 bytes would pass `limit_bytes` (default `PRECOMPUTE_LIMIT_BYTES`; 0: no table)."""
    limit = PRECOMPUTE_LIMIT_BYTES if limit_bytes is None else limit_bytes
    wanted = min(max_k, n_items, PRECOMPUTE_DEPTH if max_depth is None else max_depth)
    affordable = limit // max(1, n_users * _ENTRY_BYTES)
    return max(0, min(wanted, affordable))


@dataclass(frozen=True)
class LoadedModel:
    model: Recommender
    card: ModelCard
    token_index: dict[str, int]
    item_ids: list[str]
    item_index: dict[str, int]
    item_unit: torch.Tensor  # [n_items, d] L2-normalised item embeddings
    device: torch.device
    top: TopK | None = None  # precomputed first items of every token; None: every request is scored

    @property
    def version(self) -> str:
        return self.card.model_version

    def precomputed(self, k: int, exclude: Sequence[str] = ()) -> bool:
        """Whether `recommend(..., k, exclude)` reads the precomputed table (microseconds, no scoring)."""
        return (self.top is not None and min(k, len(self.item_ids)) <= self.top.depth
                and not any(i in self.item_index for i in exclude))

    def recommend(self, tokens: Sequence[str], k: int, exclude: Sequence[str] = ()) -> list[Ranking]:
        """Top-k items per (known) token, best first; `exclude` ids are left out (unknown ids are ignored)."""
        rows = [self.token_index[t] for t in tokens]
        drop = sorted({self.item_index[i] for i in exclude if i in self.item_index})
        k = min(k, len(self.item_ids) - len(drop))
        if k <= 0:
            return [Ranking([], []) for _ in tokens]
        if self.precomputed(k, exclude):
            indices, scores = self.top.indices[rows, :k].tolist(), self.top.scores[rows, :k].tolist()
        else:
            indices, scores = self._score(rows, k, drop)
        ids = self.item_ids
        return [Ranking([ids[i] for i in row], values) for row, values in zip(indices, scores, strict=True)]

    @torch.no_grad()
    def _score(self, rows: list[int], k: int, drop: list[int]) -> tuple[list[list[int]], list[list[float]]]:
        """The exact path: score the whole catalog, mask `drop`, take the first k."""
        scores = self.model.score_all(torch.tensor(rows, dtype=torch.long, device=self.device)).float()
        if drop:
            scores[:, drop] = float("-inf")
        values, indices = ranked_top(scores, k)
        if not torch.isfinite(values).all():
            raise ValueError(f"the served model gives infinite scores: {REPUBLISH}")
        return indices.cpu().tolist(), values.cpu().tolist()

    @torch.no_grad()
    def similar(self, item_id: str, k: int) -> list[ScoredItem]:
        row = self.item_index[item_id]
        sims = self.item_unit @ self.item_unit[row]
        sims[row] = float("-inf")
        k = min(k, len(self.item_ids) - 1)
        top = torch.topk(sims, k)
        return [ScoredItem(item_id=self.item_ids[i], score=s)
                for s, i in zip(top.values.cpu().tolist(), top.indices.cpu().tolist(), strict=True)]


def load_model(layout: ConsumerLayout, device: torch.device | str = "cpu", version: str | None = None,
               max_k: int = 0) -> LoadedModel:
    """The published model (`models/current.json`), or the given version. With `max_k` > 0, every token's first
    items are precomputed up to that depth (see the module's docstring); 0 scores every request. Only reads the
    model folder."""
    version = version or current_version(layout)
    if version is None:
        raise NoModelError(f"no model in {layout.models}: run `gdrec-consumer distill` first")
    directory = model_dir(layout, version)
    if not directory.is_dir():
        raise PublishedModelError(f"model version {version!r} (from {layout.current_model}) has no folder "
                                  f"{directory}; {REPUBLISH}")
    try:
        model, config = load_checkpoint(directory, device)
        meta = config["metadata"]
        card = ModelCard.model_validate(meta["card"])
        tokens, item_ids = list(meta["tokens"]), list(meta["item_ids"])
    except Exception as exc:  # torch.load of a damaged file raises almost anything (IndexError, UnpicklingError...)
        raise PublishedModelError(f"the model in {directory} cannot be loaded ({type(exc).__name__}: {exc}); "
                                  f"{REPUBLISH}") from exc
    model.eval()
    device = torch.device(device)
    with torch.no_grad():
        unit = torch.nn.functional.normalize(model.item_embeddings().detach().float(), dim=1)
    served = LoadedModel(model=model, card=card, token_index={t: i for i, t in enumerate(tokens)},
                         item_ids=item_ids, item_index={item: i for i, item in enumerate(item_ids)}, item_unit=unit,
                         device=device)
    return precomputed(served, max_k) if max_k > 0 else served


def precomputed(served: LoadedModel, max_k: int) -> LoadedModel:
    """`served` with every token's first items precomputed, up to max_k (at most the catalog) or what
    `PRECOMPUTE_LIMIT_BYTES` allows. PublishedModelError when the model gives NaN or infinite scores."""
    n_users, n_items = len(served.token_index), len(served.item_ids)
    wanted = min(max_k, n_items, PRECOMPUTE_DEPTH)
    depth = precompute_depth(n_users, n_items, max_k)
    if depth < wanted:
        log.warning("model %s: a top-%d table for %d tokens would take %.4g MiB, over the %.4g MiB limit; "
                    "precomputing the first %d items, deeper requests are scored in full", served.version, wanted,
                    n_users, n_users * wanted * _ENTRY_BYTES / 2**20, PRECOMPUTE_LIMIT_BYTES / 2**20, depth)
    if depth == 0 or n_users == 0:
        return replace(served, top=None)
    try:
        top = precompute_top(served.model, n_users, n_items, depth, served.device)
    except ValueError as exc:
        raise PublishedModelError(f"model {served.version} cannot be served: {exc}") from None
    log.info("model %s: first %d items of %d tokens precomputed (%.1f MiB)", served.version, depth, n_users,
             (top.indices.nbytes + top.scores.nbytes) / 2**20)
    return replace(served, top=top)
