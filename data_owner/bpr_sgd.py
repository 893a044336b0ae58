"""BPR trained by per-triple stochastic gradient descent, compiled: the original BPR's LearnBPR (Rendle et al., UAI
2009), the update `implicit` and LightFM use, as an alternative to the loop's Adam on batches of 1,000 triples.

Each epoch takes as many steps as there are positive pairs (or `pairs_per_epoch`), each on a pair drawn uniformly
with replacement (LearnBPR's bootstrap sampling) and one negative item drawn outside the user's excluded set
(rejection sampling against the sorted CSR row): one SGD step on that triple's share of `BPR.loss`: softplus(-(s_ui
- s_uj)) + reg * (|p_u|^2 + |q_i|^2 + |q_j|^2), so `reg` means what it means for the batched loss (the gradient of
the L2 term is 2 * reg * row). The embedding tables are updated in place through numpy views of the model's CPU
tensors, so the training loop's validation, checkpoints and early stopping apply unchanged
(`shared.training.fit(epoch_fn=...)`); SGD keeps no optimiser state. The random draws come from a seed the loop's
generator gives each epoch, so a run is reproducible and resumes exactly.

Two sets of positives can share an epoch (the GD teacher's raw pairs and generated pairs, Algorithm 1): their pairs
are drawn from together, and each set draws its negatives outside its own excluded set.

The kernel is compiled by numba on first use (about a second; the machine code is cached beside this module or in
NUMBA_CACHE_DIR). One thread: each step reads and writes three rows, as `implicit` does with one thread."""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from shared.interactions import ItemSets
from shared.models import BPR

# fast-math without the no-NaN / no-infinity assumptions, so that a diverged run still shows as one
_FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}


@njit(cache=True, nogil=True, inline="always")
def _found(indices, low, high, item):  # noqa: ANN001, ANN202
    """Whether `item` is in the sorted slice indices[low:high] (binary search)."""
    end = high
    while low < high:
        mid = (low + high) >> 1
        if indices[mid] < item:
            low = mid + 1
        else:
            high = mid
    return low < end and indices[low] == item


@njit(cache=True, nogil=True)
def _negative(indptr, indices, user, candidate, negative_pool, n_items):  # noqa: ANN001, ANN202
    """`candidate` if it lies outside `user`'s sorted CSR row, else a redraw (uniform over the catalog, or over
    `negative_pool` when it is not empty) until one does (callers guarantee a candidate outside the row exists)."""
    pool = negative_pool.shape[0]
    low, high = indptr[user], indptr[user + 1]
    j = candidate
    while _found(indices, low, high, j):
        j = negative_pool[np.random.randint(pool)] if pool > 0 else np.random.randint(n_items)
    return j


@njit(cache=True, nogil=True)
def _negatives(indptr, indices, users, candidates, negative_pool, n_items, seed):  # noqa: ANN001, ANN202
    np.random.seed(seed)
    out = np.empty(users.shape[0], dtype=np.int64)
    for k in range(users.shape[0]):
        out[k] = _negative(indptr, indices, users[k], candidates[k], negative_pool, n_items)
    return out


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _sgd_epoch(user_factors, item_factors, users, items, first_generated, raw_indptr, raw_indices, gen_indptr,
               gen_indices, negative_pool, order, candidates, lr, reg, seed):  # noqa: ANN001, ANN202 (numba types)
    """One SGD step per entry of `order` (indices into users/items), its negative `candidates[step]` unless that lies in
    the user's excluded row (gen_* sets for entries >= first_generated, raw_* for the others), else redrawn (uniform
    over the catalog, or over `negative_pool` when it is not empty). Returns the summed BPR data loss of the steps."""
    np.random.seed(seed)
    n_items = item_factors.shape[0]
    dim = user_factors.shape[1]
    step_size = np.float32(lr)
    decay = np.float32(2.0 * reg)
    total = 0.0
    for step in range(order.shape[0]):
        entry = order[step]
        u = users[entry]
        i = items[entry]
        j = candidates[step]
        if entry >= first_generated:
            if _found(gen_indices, gen_indptr[u], gen_indptr[u + 1], j):
                j = _negative(gen_indptr, gen_indices, u, j, negative_pool, n_items)
        elif _found(raw_indices, raw_indptr[u], raw_indptr[u + 1], j):
            j = _negative(raw_indptr, raw_indices, u, j, negative_pool, n_items)
        p, qi, qj = user_factors[u], item_factors[i], item_factors[j]
        x = np.float32(0.0)
        for f in range(dim):
            x += p[f] * (qi[f] - qj[f])
        z = np.float32(1.0) / (np.float32(1.0) + np.exp(x))  # sigmoid(-x), the step's weight
        # the data loss softplus(-x) = -log(1 - z), in double; far out, where 1 - z underflows, it is -x
        total += -float(x) if x < -30.0 else -math.log1p(-float(z))
        for f in range(dim):
            pf, qif, qjf = p[f], qi[f], qj[f]
            p[f] = pf + step_size * (z * (qif - qjf) - decay * pf)
            qi[f] = qif + step_size * (z * pf - decay * qif)
            qj[f] = qjf + step_size * (-z * pf - decay * qjf)
    return total


NEGATIVES = ("uniform", "popularity")


class BPRSGDEpochs:
    """The epochs of `model` (a CPU BPR) trained by per-triple SGD at `lr` on the pairs of `train` (negatives outside
    the user's training items), plus optionally `generated` pairs (negatives outside training and generated items);
    an epoch takes as many steps as there are pairs, or `pairs_per_epoch`. `negatives`: "uniform" over
    the catalog (BPR's), or "popularity", proportional to each item's training pairs (`implicit`'s; it helps on some
    catalogs and hurts on others, so the teacher's search tries both). Called as `epoch_fn(epoch, rng)` by
    `shared.training.fit`, it returns the epoch's mean BPR data loss."""

    def __init__(self, model: BPR, train: ItemSets, lr: float, generated: ItemSets | None = None,
                 pairs_per_epoch: int | None = None, negatives: str = "uniform") -> None:
        if not isinstance(model, BPR):
            raise ValueError(f"per-triple SGD trains BPR models, not {type(model).__name__}; use optimizer 'adam'")
        if model.user_emb.weight.device.type != "cpu":
            raise ValueError("per-triple SGD runs on the CPU (it updates the tables in place, one triple at a time); "
                             "train on device 'cpu' or use optimizer 'adam' on a GPU")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if pairs_per_epoch is not None and pairs_per_epoch < 1:
            raise ValueError(f"pairs_per_epoch must be at least 1, got {pairs_per_epoch}")
        self.model, self.lr, self.reg = model, float(lr), float(model.reg)
        users, items = [train.user_of_each_entry()], [train.indices]
        self.raw = train
        self.excluded = train
        if generated is not None:
            users.append(generated.user_of_each_entry())
            items.append(generated.indices)
            self.excluded = ItemSets.from_pairs(np.concatenate(users), np.concatenate(items), train.n_users,
                                                train.n_items)
        self.users = np.ascontiguousarray(np.concatenate(users), dtype=np.int64)
        self.items = np.ascontiguousarray(np.concatenate(items), dtype=np.int64)
        self.first_generated = int(train.nnz)
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {list(NEGATIVES)}, got {negatives!r}")
        # popularity: an item drawn with probability proportional to its training pairs (a random pair's item)
        self.negative_pool = np.ascontiguousarray(train.indices if negatives == "popularity" else np.empty(0),
                                                  dtype=np.int64)
        candidates = np.unique(self.negative_pool) if negatives == "popularity" else np.arange(train.n_items)
        for sets in (train,) if generated is None else (train, self.excluded):
            covered = np.bincount(sets.user_of_each_entry()[np.isin(sets.indices, candidates)],
                                  minlength=train.n_users)
            stuck = np.flatnonzero((covered >= candidates.size) & (sets.lengths() > 0))
            if stuck.size:
                raise ValueError(f"user {int(stuck[0])} has every candidate negative item ({negatives}) among their "
                                 "own items: no negative can be drawn; drop the user or use uniform negatives")
        self.negatives = negatives
        self.pairs_per_epoch = pairs_per_epoch

    def __call__(self, epoch: int, rng: np.random.Generator) -> float:
        n = self.users.size
        if n == 0:
            return 0.0
        count = n if self.pairs_per_epoch is None else self.pairs_per_epoch
        order = rng.integers(0, n, size=count)
        candidates = self._candidates(rng, count)
        seed = int(rng.integers(2**31 - 1))
        with torch.no_grad():
            user_factors = self.model.user_emb.weight.detach().numpy()
            item_factors = self.model.item_emb.weight.detach().numpy()
            total = _sgd_epoch(user_factors, item_factors, self.users, self.items, self.first_generated,
                               self.raw.indptr, self.raw.indices, self.excluded.indptr, self.excluded.indices,
                               self.negative_pool, order, candidates, self.lr, self.reg, seed)
            if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
                return math.nan  # the loop stops the run with its divergence message
        return float(total) / order.size

    def _candidates(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """First-choice negatives, drawn in one numpy call (numba's per-draw generator is the slower part of a step):
        uniform over the catalog, or a random training pair's item (popularity)."""
        if self.negative_pool.size:
            return self.negative_pool[rng.integers(0, self.negative_pool.size, size=count)]
        return rng.integers(0, self.raw.n_items, size=count)


def draw_negatives(epochs: BPRSGDEpochs, users: np.ndarray, seed: int) -> np.ndarray:
    """The negatives an epoch's sampler draws for raw pairs of `users` (one each), from `seed`: the first choices as
    `BPRSGDEpochs` draws them and the kernel's redraws, for checking their distribution."""
    users = np.ascontiguousarray(users, dtype=np.int64)
    rng = np.random.default_rng(seed)
    candidates = epochs._candidates(rng, users.size)
    return _negatives(epochs.raw.indptr, epochs.raw.indices, users, candidates, epochs.negative_pool,
                      epochs.raw.n_items, int(rng.integers(2**31 - 1)))
