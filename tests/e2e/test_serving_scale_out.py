"""Serving scaled out, as real processes on loopback over one small published model: two separate consumer servers
(one with one worker, one with two) on the same model folder made read-only answer the same recommendations and
leave the folder exactly as it was; with several workers each one loads the model and each follows a new
publication."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest

from model_consumer.settings import ConsumerLayout
from model_consumer.students import distill_and_publish
from shared.distillation import DistillConfig
from tests.e2e.test_two_services import Service, clean_env, free_port
from tests.unit.test_consumer_pull import synthetic_export

KEY = "scale-out-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINY = DistillConfig(epochs=2, batch_size=64, progress=False)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `root` with its mode, size and modification time (ns)."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        out[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return out


def set_read_only(root: Path, read_only: bool) -> None:
    for path in sorted(root.rglob("*"), reverse=True) + [root]:
        if path.is_dir():
            path.chmod(0o555 if read_only else 0o755)
        else:
            path.chmod(0o444 if read_only else 0o644)


def answers(url: str, tokens: list[str]) -> list[dict]:
    """The JSON of single and batch recommendations for `tokens`, with and without exclusions, one fresh
    connection per request (so that the workers of one server share them)."""
    out = []
    for token in tokens:
        for params in ({"k": 3}, {"k": 16}, {"k": 5, "exclude": ["item-002", "item-011"]}):
            response = httpx.get(f"{url}/v1/recommendations/{token}", params=params, headers=AUTH, timeout=10)
            assert response.status_code == 200, response.text
            out.append(response.json())
    batch = httpx.post(f"{url}/v1/recommendations/batch", json={"tokens": tokens, "k": 4}, headers=AUTH, timeout=10)
    assert batch.status_code == 200, batch.text
    return [*out, batch.json()]


def worker_pids_serving(log: Path, version: str) -> set[str]:
    return set(re.findall(rf"\[(\d+)\]: serving model {re.escape(version)} ", log.read_text()))


@pytest.mark.timeout(240)
def test_two_servers_on_one_read_only_model_folder_answer_alike_and_write_nothing(tmp_path):
    root = tmp_path / "consumer"
    bundle = synthetic_export()
    card = distill_and_publish(bundle, TINY, ConsumerLayout(root))
    tokens = [user.token for user in bundle.users]
    env = clean_env(GDREC_CONSUMER_DATA_DIR=str(root), GDREC_CONSUMER_API_KEY=KEY, GDREC_CONSUMER_LOG_LEVEL="info",
                    OMP_NUM_THREADS="1")
    set_read_only(root, True)
    before = snapshot(root)
    assert not os.access(root / "models", os.W_OK) or os.geteuid() == 0  # root writes anyway: the snapshot decides
    one = Service("model_consumer.cli", free_port(), env, tmp_path, tmp_path / "one.log")
    two = Service("model_consumer.cli", free_port(), {**env, "GDREC_CONSUMER_WORKERS": "2"}, tmp_path,
                  tmp_path / "two.log")
    try:
        one.wait_ready()
        two.wait_ready()
        first, second = answers(one.url, tokens), answers(two.url, tokens)
        assert first == second
        assert {a["model_version"] for a in first} == {card.model_version}
        assert len(first[1]["items"]) == len(bundle.manifest.item_ids)
        assert not {"item-002", "item-011"} & {i["item_id"] for i in first[2]["items"]}
        deadline = time.monotonic() + 60
        while len(worker_pids_serving(tmp_path / "two.log", card.model_version)) < 2:  # both workers loaded it
            assert time.monotonic() < deadline, (tmp_path / "two.log").read_text()
            time.sleep(0.2)
        assert (tmp_path / "one.log").read_text().count(f"serving model {card.model_version} ") == 1
    finally:
        one.stop()
        two.stop()
        after = snapshot(root)
        set_read_only(root, False)
    assert after == before


@pytest.mark.timeout(240)
def test_every_worker_follows_a_new_publication(tmp_path):
    root = tmp_path / "consumer"
    bundle = synthetic_export()
    layout = ConsumerLayout(root)
    first = distill_and_publish(bundle, TINY, layout)
    env = clean_env(GDREC_CONSUMER_DATA_DIR=str(root), GDREC_CONSUMER_API_KEY=KEY, GDREC_CONSUMER_LOG_LEVEL="info",
                    GDREC_CONSUMER_RELOAD_POLL_S="0.2", GDREC_CONSUMER_WORKERS="2", OMP_NUM_THREADS="1")
    server = Service("model_consumer.cli", free_port(), env, tmp_path, tmp_path / "server.log")
    try:
        server.wait_ready()
        second = distill_and_publish(bundle, DistillConfig(epochs=3, batch_size=64, progress=False), layout)
        assert second.model_version != first.model_version
        deadline = time.monotonic() + 60
        while len(worker_pids_serving(tmp_path / "server.log", second.model_version)) < 2:
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        token = bundle.users[0].token
        versions = {httpx.get(f"{server.url}/v1/recommendations/{token}", headers=AUTH, timeout=10).json()[
            "model_version"] for _ in range(20)}
        assert versions == {second.model_version}
    finally:
        server.stop()
