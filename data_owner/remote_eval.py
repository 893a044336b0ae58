"""Remote evaluation (ARCHITECTURE.md flow step 5): the owner scores the consumer's served model on its own
held-out test items, without sending them, or anything of a user's history, anywhere.

For each evaluated user the owner computes the token (HMAC of the raw id, as in the export) and asks the consumer
for `GET /v1/recommendations/{token}?k=K+extra` (`shared.schemas.RecommendationList`). `extra` is one number for
every user (default: the longest training history among the evaluated users, plus one for the validation item),
so that the request reveals nothing about the user; the owner then drops the user's training items and validation
item from the answer, locally, and ranks the test item among what is left: the same full-ranking protocol as
`shared.evaluation` (HR@K = rank < K, NDCG@K = 1/log2(rank + 2)), with the consumer's order as the ranking.
Requests go out in a random order (the owner's user order says something about raw ids). A token the consumer does
not know (404) counts as a miss and is reported."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from data_owner.data import LeaveOneOutSplit
from data_owner.export import user_token
from shared.http import get_with_retries
from shared.metrics import ranking_metrics
from shared.schemas import RecommendationList

log = logging.getLogger(__name__)

RECOMMENDATIONS_PATH = "/v1/recommendations/{token}"


class RemoteEvalError(RuntimeError):
    """The consumer could not be evaluated (refused key, rejected request, broken contract, unreachable)."""


@dataclass(frozen=True)
class RemoteEvalConfig:
    k: int = 50
    ks: tuple[int, ...] = (5, 10, 20, 50)  # also reported, where <= k
    extra: int | None = None  # None: the longest training history among the evaluated users + 1
    concurrency: int = 8
    attempts: int = 3
    seed: int | None = None  # request order; None: a fresh random order

    def __post_init__(self) -> None:
        if self.k < 1 or self.concurrency < 1 or self.attempts < 1:
            raise ValueError("k, concurrency and attempts must be at least 1")
        if self.extra is not None and self.extra < 0:
            raise ValueError(f"extra must be non-negative, got {self.extra}")

    @property
    def cutoffs(self) -> list[int]:
        return sorted({k for k in self.ks if k <= self.k} | {self.k})


@dataclass
class RemoteEvalResult:
    consumer: str
    k: int
    k_requested: int
    metrics: dict[str, float]
    users: int  # evaluated users (those with a validation and a test item)
    answered: int  # users the consumer returned a list for
    unknown_tokens: int  # users the consumer did not know (404): counted as misses
    short_lists: int  # answers with fewer than k items left after removing the user's history, test item absent
    model_versions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    started_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def user_tokens(split: LeaveOneOutSplit, secret: bytes, consumer_id: str) -> list[str]:
    """The export's token of every user of the split (index = the owner's user index)."""
    return [user_token(secret, consumer_id, str(uid)) for uid in split.user_ids]


def rank_in_answer(answer: Sequence[str], test_item: str, history: set[str], k: int) -> tuple[int | None, bool]:
    """0-based rank of `test_item` in `answer` once `history` is removed (None: absent), and whether fewer than
    `k` items were left (a short list, which may hide a hit)."""
    position = 0
    for item in answer:
        if item in history:
            continue
        if item == test_item:
            return position, False
        position += 1
    return None, position < k


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text[:200] or response.reason_phrase


def evaluate_remote(
    client: httpx.Client,
    split: LeaveOneOutSplit,
    tokens: Sequence[str],
    config: RemoteEvalConfig = RemoteEvalConfig(),
    consumer: str = "",
    progress: bool = False,
) -> RemoteEvalResult:
    """HR@K / NDCG@K of the consumer's answers on the split's test items (see the module docstring).
    `client` has the consumer's base URL and key; `tokens[u]` is the token of the owner's user u. `progress` shows a
    tqdm bar over the evaluated users (on stderr)."""
    if len(tokens) != split.n_users:
        raise ValueError(f"expected one token per user ({split.n_users}), got {len(tokens)}")
    users = split.eval_users
    if users.size == 0:
        raise ValueError("no user has a test item to evaluate")
    catalog = [str(i) for i in split.item_ids]
    longest = int(split.train.lengths()[users].max())
    extra = longest + 1 if config.extra is None else config.extra
    k_requested = min(config.k + extra, split.n_items)
    miss = k_requested  # any rank >= k is a miss for every cutoff
    ranks = np.full(users.size, miss, dtype=np.int64)
    versions: Counter[str] = Counter()
    counts = Counter[str]()
    stop = threading.Event()
    lock = threading.Lock()

    def evaluate_one(position: int) -> None:
        if stop.is_set():
            return
        user = int(users[position])
        token = tokens[user]
        response = get_with_retries(client, RECOMMENDATIONS_PATH.format(token=token), params={"k": k_requested},
                                    attempts=config.attempts)
        if response.status_code == 404:
            with lock:
                counts["unknown"] += 1
            return
        if response.status_code in (401, 403):
            raise RemoteEvalError(f"the consumer refused the key ({response.status_code}: {_detail(response)}); pass "
                                  "the consumer's API key with --key or GDREC_OWNER_CONSUMER_KEY")
        if response.status_code in (400, 422):
            raise RemoteEvalError(f"the consumer rejected k={k_requested} ({response.status_code}: "
                                  f"{_detail(response)}); if it caps k, pass a smaller --extra (now {extra})")
        if response.status_code != 200:
            raise RemoteEvalError(f"the consumer answered {response.status_code} ({_detail(response)})")
        try:
            answer = RecommendationList.model_validate_json(response.content)
        except ValidationError as exc:
            raise RemoteEvalError(f"the consumer's answer does not follow the RecommendationList contract "
                                  f"(shared/schemas.py): {exc.errors()[0]['msg']} at "
                                  f"{'.'.join(map(str, exc.errors()[0]['loc']))}") from None
        if answer.token != token:
            raise RemoteEvalError("the consumer answered for another token than the one asked for")
        history = {catalog[i] for i in split.train.row(user)}
        history.add(catalog[int(split.valid_item[user])])
        rank, short = rank_in_answer([item.item_id for item in answer.items],
                                     catalog[int(split.test_item[user])], history, config.k)
        with lock:
            counts["answered"] += 1
            counts["short"] += int(short)
            versions[answer.model_version] += 1
            if rank is not None:
                ranks[position] = rank

    def guarded(position: int) -> None:
        try:
            evaluate_one(position)
        except BaseException:
            stop.set()
            raise

    rng = np.random.default_rng(config.seed)
    order = rng.permutation(users.size)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    log.info("evaluating %s on %d test users: k=%d asked per user (K=%d + %d)", consumer or "the consumer",
             users.size, k_requested, config.k, extra)
    try:
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="remote-eval") as pool:
            for _ in tqdm(pool.map(guarded, order), total=users.size, desc="remote evaluation", unit="user",
                          disable=not progress):
                pass
    except httpx.TransportError as exc:
        raise RemoteEvalError(f"cannot reach the consumer at {consumer or client.base_url}: {exc}") from exc
    return RemoteEvalResult(
        consumer=consumer or str(client.base_url),
        k=config.k,
        k_requested=k_requested,
        metrics=ranking_metrics(ranks, config.cutoffs),
        users=int(users.size),
        answered=counts["answered"],
        unknown_tokens=counts["unknown"],
        short_lists=counts["short"],
        model_versions=dict(versions),
        seconds=round(time.perf_counter() - started, 2),
        started_at=started_at,
    )


def render(result: RemoteEvalResult, reference: dict[str, dict[str, float]] | None = None) -> str:
    """A table of the consumer's HR@K / NDCG@K, with the owner's own models as reference rows."""
    cutoffs = sorted({int(name.split("@")[1]) for name in result.metrics})
    versions = ", ".join(f"{v} ({n})" for v, n in sorted(result.model_versions.items())) or "none"
    lines = [
        f"remote evaluation of {result.consumer}: {result.users} test users, {result.answered} answered, "
        f"{result.unknown_tokens} unknown token(s), {result.short_lists} short list(s); asked for "
        f"{result.k_requested} items per user; model version(s): {versions}; {result.seconds:.1f} s",
        "",
        "| model | " + " | ".join(f"HR@{k} | NDCG@{k}" for k in cutoffs) + " |",
        "|---" * (1 + 2 * len(cutoffs)) + "|",
    ]
    rows = [("consumer (remote)", result.metrics)] + list((reference or {}).items())
    for name, metrics in rows:
        cells = [f"{metrics[f'HR@{k}']:.4f} | {metrics[f'NDCG@{k}']:.4f}" if f"HR@{k}" in metrics else "- | -"
                 for k in cutoffs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
