"""BPR trained by per-triple stochastic gradient descent, compiled: the original BPR's LearnBPR (Rendle et al., UAI
2009), the update `implicit` and LightFM use, as an alternative to the loop's Adam on batches of 1,000 triples.

Each epoch visits every positive pair once in a fresh random order (or `pairs_per_epoch` of them), draws one negative
item uniformly outside the user's excluded set (rejection sampling against the sorted CSR row), and takes one SGD step
on that triple's share of `BPR.loss`: softplus(-(s_ui - s_uj)) + reg * (|p_u|^2 + |q_i|^2 + |q_j|^2), so `reg` means
what it means for the batched loss (the gradient of the L2 term is 2 * reg * row). The embedding tables are updated in
place through numpy views of the model's CPU tensors, so the training loop's validation, checkpoints and early stopping
apply unchanged (`shared.training.fit(epoch_fn=...)`); SGD keeps no optimiser state. The random draws come from a
seed the loop's generator gives each epoch, so a run is reproducible and resumes exactly.

Two sets of positives can share an epoch (the GD teacher's raw pairs and generated pairs, Algorithm 1): their pairs
are shuffled together, and each set draws its negatives outside its own excluded set.

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


@njit(cache=True, nogil=True)
def _negative(indptr, indices, user, negative_pool, n_items):  # noqa: ANN001, ANN202
    """An item outside `user`'s sorted CSR row: uniform over the catalog, or over `negative_pool` when it is not
    empty, redrawn while it falls in the row (callers guarantee a candidate outside it exists)."""
    pool = negative_pool.shape[0]
    low, high = indptr[user], indptr[user + 1]
    while True:
        j = negative_pool[np.random.randint(pool)] if pool > 0 else np.random.randint(n_items)
        a, b = low, high
        while a < b:
            mid = (a + b) >> 1
            if indices[mid] < j:
                a = mid + 1
            else:
                b = mid
        if a == high or indices[a] != j:
            return j


@njit(cache=True, nogil=True)
def _negatives(indptr, indices, users, negative_pool, n_items, seed):  # noqa: ANN001, ANN202
    np.random.seed(seed)
    out = np.empty(users.shape[0], dtype=np.int64)
    for k in range(users.shape[0]):
        out[k] = _negative(indptr, indices, users[k], negative_pool, n_items)
    return out


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _sgd_epoch(user_factors, item_factors, users, items, first_generated, raw_indptr, raw_indices, gen_indptr,
               gen_indices, negative_pool, order, lr, reg, seed):  # noqa: ANN001, ANN202 (numba types the arguments)
    """One SGD step per entry of `order` (indices into users/items); entries >= first_generated draw their negative
    outside the gen_* sets, the others outside the raw_* sets; candidates are uniform over the catalog, or uniform
    over `negative_pool` when it is not empty. Returns the summed BPR data loss of the steps."""
    np.random.seed(seed)
    n_items = item_factors.shape[0]
    dim = user_factors.shape[1]
    decay = 2.0 * reg
    total = 0.0
    for step in range(order.shape[0]):
        entry = order[step]
        u = users[entry]
        i = items[entry]
        if entry >= first_generated:
            indptr, indices = gen_indptr, gen_indices
        else:
            indptr, indices = raw_indptr, raw_indices
        j = _negative(indptr, indices, u, negative_pool, n_items)
        x = 0.0
        for f in range(dim):
            x += user_factors[u, f] * (item_factors[i, f] - item_factors[j, f])
        if x > 0.0:  # softplus(-x) and sigmoid(-x), stable on both sides
            e = math.exp(-x)
            total += math.log1p(e)
            z = e / (1.0 + e)
        else:
            e = math.exp(x)
            total += -x + math.log1p(e)
            z = 1.0 / (1.0 + e)
        for f in range(dim):
            pu = user_factors[u, f]
            qi = item_factors[i, f]
            qj = item_factors[j, f]
            user_factors[u, f] = pu + lr * (z * (qi - qj) - decay * pu)
            item_factors[i, f] = qi + lr * (z * pu - decay * qi)
            item_factors[j, f] = qj + lr * (-z * pu - decay * qj)
    return total


NEGATIVES = ("uniform", "popularity")


class BPRSGDEpochs:
    """The epochs of `model` (a CPU BPR) trained by per-triple SGD at `lr` on the pairs of `train` (negatives outside
    the user's training items), plus optionally `generated` pairs (negatives outside training and generated items);
    `pairs_per_epoch` (None: every pair) caps an epoch at that many pairs drawn afresh. `negatives`: "uniform" over
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
        for sets in {id(train): train, id(self.excluded): self.excluded}.values():
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
        order = rng.permutation(n)
        if self.pairs_per_epoch is not None and self.pairs_per_epoch < n:
            order = order[: self.pairs_per_epoch]
        seed = int(rng.integers(2**31 - 1))
        with torch.no_grad():
            user_factors = self.model.user_emb.weight.detach().numpy()
            item_factors = self.model.item_emb.weight.detach().numpy()
            total = _sgd_epoch(user_factors, item_factors, self.users, self.items, self.first_generated,
                               self.raw.indptr, self.raw.indices, self.excluded.indptr, self.excluded.indices,
                               self.negative_pool, order, self.lr, self.reg, seed)
            if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
                return math.nan  # the loop stops the run with its divergence message
        return float(total) / order.size


def draw_negatives(epochs: BPRSGDEpochs, users: np.ndarray, seed: int) -> np.ndarray:
    """The negatives the kernel's sampler draws for raw pairs of `users` (one each), from `seed`: what an epoch
    samples, for checking its distribution."""
    return _negatives(epochs.raw.indptr, epochs.raw.indices, np.ascontiguousarray(users, dtype=np.int64),
                      epochs.negative_pool, epochs.raw.n_items, seed)
