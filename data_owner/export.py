"""The export object: everything the consumer may receive (GD-REC Algorithm 1, the owner's side of step 3).

Per pseudonymous user token: the generated list GF(I)_u (external item ids, best first) and the teacher's soft
targets q_ui = sigmoid(z^T_ui / t) on those items; plus a manifest (catalog, list length, temperature, teacher card,
privacy switches, the generator card when known, a content-derived export id). Nothing else about a user crosses:
no raw id, no history.
Tokens are HMAC-SHA256(secret, consumer id, raw user id): pseudonyms, not anonymity."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from data_owner.lists import GeneratedLists
from shared.losses import soft_targets
from shared.models import Recommender
from shared.schemas import (
    MANIFEST_GENERATOR_VERSION,
    SCHEMA_VERSION,
    ExportBundle,
    ExportManifest,
    GeneratorCard,
    PrivacySwitches,
    TeacherCard,
    UserRecord,
    content_sha256,
)

MIN_SECRET_BYTES = 16


def user_token(secret: bytes, consumer_id: str, user_id: str) -> str:
    """Opaque token of a raw user id for one consumer: HMAC-SHA256 keyed by the owner's secret."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the HMAC secret must be at least {MIN_SECRET_BYTES} bytes long")
    message = consumer_id.encode() + b"\x00" + str(user_id).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


@torch.no_grad()
def teacher_soft_targets(teacher: Recommender, lists: np.ndarray, temperature: float, batch_size: int = 1024):
    """q_ui = sigmoid(z^T_ui / t) for each listed item: [n_users, L] float32."""
    teacher.eval()
    out = np.empty(lists.shape, dtype=np.float32)
    device = teacher.device
    for start in range(0, lists.shape[0], batch_size):
        users = torch.arange(start, min(start + batch_size, lists.shape[0]), device=device)
        items = torch.as_tensor(lists[start : start + batch_size], device=device)
        out[start : start + batch_size] = soft_targets(teacher.score(users, items), temperature).cpu().numpy()
    return out


def build_export(
    teacher: Recommender,
    lists: GeneratedLists,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    temperature: float,
    secret: bytes,
    consumer_id: str,
    randomized_response_epsilon: float | None = None,
    created_at: datetime | None = None,
    generator: GeneratorCard | None = None,
) -> ExportBundle:
    """Assemble the export; user k of `lists` is the raw user `user_ids[k]` (teacher's user index k).
    Records are sorted by token, so their order reveals nothing about the raw ids. With a `generator` card the
    manifest is version 1.1 and the card is part of the export id."""
    if lists.items.shape[0] != len(user_ids) or teacher.n_users != len(user_ids):
        raise ValueError("lists, user ids and the teacher must cover the same users")
    targets = teacher_soft_targets(teacher, lists.items, temperature)
    catalog = [str(i) for i in item_ids]
    users = [
        UserRecord(
            token=user_token(secret, consumer_id, str(user_ids[u])),
            items=[catalog[i] for i in lists.items[u]],
            soft_targets=[float(q) for q in targets[u]],
        )
        for u in range(len(user_ids))
    ]
    # token order, not the owner's user order: the latter follows the raw ids and would help re-identify them
    users.sort(key=lambda record: record.token)
    card = TeacherCard(family=teacher.family, num_parameters=teacher.num_parameters(), config=teacher.config())
    privacy = PrivacySwitches(include_observed=lists.include_observed,
                              randomized_response_epsilon=randomized_response_epsilon)
    content: dict[str, Any] = {"catalog": catalog, "L": lists.length, "t": temperature, "teacher": card.model_dump(),
                               "privacy": privacy.model_dump(), "users": content_sha256(users)}
    if generator is not None:
        content["generator"] = generator.model_dump(mode="json")
    fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    manifest = ExportManifest(
        export_id=fingerprint,
        created_at=created_at or datetime.now(UTC),
        n_users=len(users),
        item_ids=catalog,
        list_length=lists.length,
        temperature=temperature,
        teacher=card,
        privacy=privacy,
        generator=generator,
        schema_version=SCHEMA_VERSION if generator is None else MANIFEST_GENERATOR_VERSION,
    )
    return ExportBundle(manifest=manifest, users=users)


def generator_card(family: str | None, settings: dict[str, Any] | None,
                   statistics: dict[str, Any]) -> GeneratorCard | None:
    """The manifest's generator card: the list generator's family and fitted settings, and the numeric statistics of
    its lists (`GeneratedLists.statistics`; flags such as include_observed stay out, the privacy switches say them).
    None when the family is unknown."""
    if family is None:
        return None
    numbers = {k: v for k, v in statistics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return GeneratorCard(family=family, settings=settings or {}, lists=numbers)
