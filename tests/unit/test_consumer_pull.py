"""`model_consumer.client.pull` against a fake owner (httpx.MockTransport) that fails in the ways a network does:
connection errors, 5xx and 429 are retried, a page whose content does not match its sha256 is fetched again, an
interrupted pull resumes after the last verified page, and a changed export starts over."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from model_consumer.client import PullError, pull
from model_consumer.store import ExportStore, StoreError
from shared.http import make_client
from shared.models import BPR
from shared.schemas import (
    ExportBundle,
    ExportManifest,
    ExportPage,
    PrivacySwitches,
    TeacherCard,
    UserRecord,
    content_sha256,
)

KEY = "owner-issued-key-0123"


def synthetic_export(n_users: int = 24, n_items: int = 16, length: int = 5, seed: int = 0) -> ExportBundle:
    """Two taste groups over halves of the catalog; soft targets decreasing along each list."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    items = [f"item-{i:03d}" for i in range(n_items)]
    users = []
    for u in range(n_users):
        own = rng.choice(half, size=length, replace=False) + (0 if u % 2 == 0 else half)
        token = f"{u:04x}" + "ab" * 14
        users.append(UserRecord(token=token, items=[items[i] for i in own],
                                soft_targets=[round(0.9 - 0.1 * r, 3) for r in range(length)]))
    teacher = {"dim": 8, "reg": 1e-4}
    manifest = ExportManifest(
        export_id=content_sha256(users), created_at=datetime(2026, 1, 1, tzinfo=UTC), n_users=n_users,
        item_ids=items, list_length=length, temperature=2.0,
        teacher=TeacherCard(family="bpr", num_parameters=BPR.count_parameters(n_users, n_items, **teacher),
                            config=teacher),
        privacy=PrivacySwitches(include_observed=True))
    return ExportBundle(manifest=manifest, users=users)


class FakeOwner:
    """Serves a bundle over the owner's export API; `faults[(path, offset)]` is a list of failures to produce
    before answering properly: 'down' (connection refused), a status code, or 'corrupt' (a wrong sha256)."""

    def __init__(self, bundle: ExportBundle) -> None:
        self.bundle = bundle
        self.faults: dict[tuple[str, int], list] = {}
        self.requests: list[tuple[str, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        cursor = request.url.params.get("cursor")
        offset = int(cursor) if cursor else 0
        where = (request.url.path, offset)
        self.requests.append(where)
        pending = self.faults.get(where, [])
        fault = pending.pop(0) if pending else None
        if fault == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(fault, int):
            return httpx.Response(fault, json={"detail": "try later"}, headers={"Retry-After": "0"})
        if request.url.path.endswith("/manifest"):
            return httpx.Response(200, content=self.bundle.manifest.model_dump_json())
        limit = int(request.url.params["limit"])
        users = self.bundle.users[offset: offset + limit]
        following = offset + limit if offset + limit < len(self.bundle.users) else None
        page = ExportPage(export_id=self.bundle.manifest.export_id, cursor=cursor, users=users,
                          next_cursor=None if following is None else str(following), sha256=content_sha256(users))
        body = json.loads(page.model_dump_json())
        if fault == "corrupt":
            body["users"][0]["soft_targets"][0] = 0.0
        return httpx.Response(200, json=body)


def client_for(owner: FakeOwner) -> httpx.Client:
    return make_client("http://owner.test", KEY, transport=httpx.MockTransport(owner))


def no_sleep(_: float) -> None:
    pass


def test_pull_retries_transient_failures_and_refetches_a_corrupt_page(tmp_path):
    bundle = synthetic_export()
    owner = FakeOwner(bundle)
    owner.faults = {("/v1/export/manifest", 0): ["down"], ("/v1/export/users", 5): [503, 429],
                    ("/v1/export/users", 10): ["corrupt"], ("/v1/export/users", 15): [500]}
    store = ExportStore(tmp_path / "export")
    result = pull(client_for(owner), store, limit=5, attempts=3, sleep=no_sleep)
    assert result.complete and result.pages == 5 and result.users == 24
    assert store.load_bundle() == bundle
    assert owner.requests.count(("/v1/export/users", 10)) == 2


def test_pull_gives_up_after_its_attempts_and_keeps_what_it_stored(tmp_path):
    owner = FakeOwner(synthetic_export())
    owner.faults = {("/v1/export/users", 10): ["down"] * 3}
    store = ExportStore(tmp_path / "export")
    with pytest.raises(PullError, match="after 3 tries.*resume"):
        pull(client_for(owner), store, limit=5, attempts=3, sleep=no_sleep)
    assert len(store.progress().pages) == 2 and not store.progress().complete
    with pytest.raises(StoreError, match="incomplete"):
        store.load_bundle()
    result = pull(client_for(owner), store, limit=5, attempts=3, sleep=no_sleep)
    assert result.resumed_at == 3 and result.fetched == 3 and result.complete
    assert [r for r in owner.requests if r[1] in (0, 5)].count(("/v1/export/users", 0)) == 1  # not fetched again


def test_a_refused_key_is_not_retried(tmp_path):
    owner = FakeOwner(synthetic_export())
    owner.faults = {("/v1/export/manifest", 0): [401]}
    with pytest.raises(PullError, match="refused the key.*GDREC_CONSUMER_OWNER_KEY"):
        pull(client_for(owner), ExportStore(tmp_path), attempts=3, sleep=no_sleep)
    assert len(owner.requests) == 1


def test_max_pages_then_resume_gives_the_same_data_as_one_pull(tmp_path):
    bundle = synthetic_export()
    stepwise = ExportStore(tmp_path / "a")
    first = pull(client_for(FakeOwner(bundle)), stepwise, limit=4, max_pages=2)
    assert not first.complete and first.pages == 2
    second = pull(client_for(FakeOwner(bundle)), stepwise, limit=4)
    assert second.resumed_at == 3 and second.complete
    whole = ExportStore(tmp_path / "b")
    pull(client_for(FakeOwner(bundle)), whole, limit=4)
    assert stepwise.content_digest() == whole.content_digest() == content_sha256(bundle.users)
    assert not list((tmp_path / "a").rglob(".*"))  # no temporary file left


def test_a_new_export_on_the_owner_starts_the_pull_over(tmp_path):
    store = ExportStore(tmp_path)
    pull(client_for(FakeOwner(synthetic_export(seed=0))), store, limit=5, max_pages=2)
    newer = synthetic_export(seed=1)
    result = pull(client_for(FakeOwner(newer)), store, limit=5)
    assert result.resumed_at == 1 and result.complete and store.load_bundle() == newer


def test_a_damaged_page_on_disk_is_detected(tmp_path):
    store = ExportStore(tmp_path)
    pull(client_for(FakeOwner(synthetic_export())), store, limit=10)
    path = store.page_path(2)
    path.write_text(path.read_text().replace("0.9", "0.1", 1))
    with pytest.raises(StoreError, match="damaged"):
        store.load_bundle()
