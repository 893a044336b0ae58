"""Privacy controls applied before the owner's models see the data (ALGORITHMS.md section 5): randomized response
on the purchase vectors C_u.

Randomized response (Warner 1965) flips each bit of C_u independently with p = 1 / (1 + e^eps). For one bit the
two outputs have probabilities (1 - p, p) under one input and (p, 1 - p) under the other, a ratio of at most
(1 - p) / p = e^eps: each single interaction is protected by epsilon-local differential privacy.

This is a guarantee per interaction, NOT per user. A user's vector holds n_items bits, each randomized with its own
epsilon; by group privacy, two vectors that differ in k items are only (k * epsilon)-indistinguishable, so the
whole history of a user with 30 purchases is protected at 30 * epsilon at best, and a long, distinctive history
stays recognisable in aggregate. Use it to give every single purchase plausible deniability, not to hide who a
user is. Everything computed from the randomized matrix alone (models, lists, soft targets) keeps the per-interaction
guarantee (post-processing), provided the randomness is secret: whoever knows the seed can recompute the flips,
so the owner's pipeline derives the seed from its HMAC secret (`randomized_response_seed`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from dataclasses import replace

import numpy as np

from data_owner.data.split import LeaveOneOutSplit
from shared.interactions import ItemSets

log = logging.getLogger(__name__)

# a stream tag mixed into the seed, so that the flips never reuse the random numbers of a sampler seeded alike
_RR_STREAM = 0x5252_2D4C_4450


def flip_probability(epsilon: float) -> float:
    """p = 1 / (1 + e^eps): the probability that randomized response flips a bit."""
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive finite number (e.g. 1, 2, 4 or 8), got {epsilon!r}")
    return 1.0 / (1.0 + math.exp(epsilon)) if epsilon < 700 else 0.0


def randomized_response_seed(secret: bytes, seed: int) -> int:
    """A 128-bit seed for `randomized_response` derived from the owner's secret and the run's seed: reproducible
    for the owner (resumable stages give the same matrix), unpredictable for anyone without the secret."""
    if len(secret) < 16:
        raise ValueError("the secret deriving the randomized-response seed must be at least 16 bytes long")
    digest = hmac.new(secret, f"gdrec randomized response v1:{seed}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:16], "big")


def randomized_response(train: ItemSets, epsilon: float, seed: int) -> ItemSets:
    """C~ = RR_eps(C): every bit of every user's row (n_items bits) flipped independently with p = 1/(1+e^eps).

    Epsilon-LDP per interaction, not per user (see the module docstring). Cost grows with the output, never with
    n_users * n_items: per user, each of its k items is dropped with probability p, the number of 0 -> 1 flips is
    drawn as Binomial(n_items - k, p), and that many distinct positions are sampled among the user's zeros. The
    expected output holds (1 - p) * k + p * (n_items - k) items per user: at small epsilon the randomized matrix
    is dense (eps = 1 keeps p = 27% of the catalog in every row) and every model trained on it slows down accordingly.

    The same (train, epsilon, seed) always gives the same matrix. Keep `seed` secret (see
    `randomized_response_seed`): with it, the flips can be recomputed and the guarantee is void."""
    p = flip_probability(epsilon)
    rng = np.random.default_rng([_RR_STREAM, *_seed_words(seed)])
    n_items = train.n_items
    lengths = train.lengths()
    keep = rng.random(train.nnz) >= p  # each 1 survives with probability 1 - p
    added = rng.binomial(n_items - lengths, p)  # 0 -> 1 flips per user
    rows: list[np.ndarray] = []
    for u in range(train.n_users):
        own = train.row(u)
        start = train.indptr[u]
        kept = own[keep[start : start + own.size]]
        if added[u]:
            ranks = rng.choice(n_items - own.size, size=int(added[u]), replace=False)
            # the zero of rank r is item r + #{own items o_i with o_i - i <= r}  (own is sorted)
            new = ranks + np.searchsorted(own - np.arange(own.size), ranks, side="right")
            kept = np.sort(np.concatenate([kept, new]))
        rows.append(kept.astype(np.int64, copy=False))
    indptr = np.zeros(train.n_users + 1, dtype=np.int64)
    np.cumsum([row.size for row in rows], out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    randomized = ItemSets(indptr=indptr, indices=indices, n_items=n_items)
    log.info("randomized response eps=%g (p=%.4g): %d interactions in, %d out (%d kept, %d added)", epsilon, p,
             train.nnz, randomized.nnz, int(keep.sum()), int(added.sum()))
    return randomized


def teacher_epoch_pairs(split: LeaveOneOutSplit, rr_epsilon: float | None, true_size_epochs: bool) -> int | None:
    """Pairs per teacher epoch (`TripletSampler(pairs_per_epoch)`): every pair (None), or under randomized response
    with `true_size_epochs` as many as the true training matrix `split.train` holds (the randomized one can hold
    hundreds of times more)."""
    return split.train.nnz if rr_epsilon is not None and true_size_epochs else None


def randomized_split(split: LeaveOneOutSplit, epsilon: float, seed: int) -> LeaveOneOutSplit:
    """The split the owner's models see under randomized response: training sets C~ = RR_eps(C), the held-out
    items unchanged.

    Each user's validation and test items are removed from C~ after the flips: they are the evaluation targets,
    and a model that trained on a target flipped on would score it as seen (the evaluator refuses a target among the
    excluded items). Those two positions per user are therefore always 0 in the models' input, as they are without
    randomized response; in a deployment without a held-out split every bit is randomized."""
    randomized = randomized_response(split.train, epsilon, seed)
    users, items = randomized.to_pairs()
    held_out = np.zeros(items.size, dtype=bool)
    for targets in (split.valid_item, split.test_item):
        held_out |= targets[users] == items
    kept_users, kept_items = users[~held_out], items[~held_out]  # still sorted by (user, item)
    indptr = np.zeros(split.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(kept_users, minlength=split.n_users), out=indptr[1:])
    log.info("randomized response: %d flipped-on held-out item(s) left out of the models' input", int(held_out.sum()))
    return replace(split, train=ItemSets(indptr=indptr, indices=kept_items, n_items=split.n_items),
                   source=f"{split.source} (randomized response, eps={epsilon:g})")


def _seed_words(seed: int) -> list[int]:
    """A non-negative int of any size as 32-bit words (numpy seeds take a sequence of them)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    words = []
    while True:
        words.append(seed & 0xFFFF_FFFF)
        seed >>= 32
        if not seed:
            return words
