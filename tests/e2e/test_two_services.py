"""Both services as real processes on loopback, each with its own temporary directory, on tiny synthetic data:
owner train, keys add, serve; consumer pull (interrupted: the owner is killed mid-pull and restarted, the pull
retries and resumes), distill, serve; the owner's remote evaluation of the consumer. The consumer's directory
must hold no raw interaction file and no raw user id, and the resumed pull the same data as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from model_consumer.client import pull
from model_consumer.store import ExportStore
from shared.http import make_client

SECRET = "e2e-owner-secret-0123456789abcdef0123"
CONSUMER_KEY = "e2e-consumer-api-key-0123456789"
RAW_USER_PREFIX = "person-raw-"
OWNER_TINY = [
    "--list-length", "6", "--teacher-epochs", "4", "--gd-epochs", "2", "--cgan-epochs", "2",
    "--cgan-json", '{"hidden_g": [16], "hidden_d": [8], "noise_dim": 4, "batch_size": 16, "g_steps": 1, '
                   '"d_steps": 1, "eval_every": 2}',
    "--teacher-json", '{"model": {"dim": 8, "reg": 0.001}, "lr": 0.02}',
    "--patience", "0", "--eval-every", "2", "--batch-size", "128", "--device", "cpu", "--no-progress",
    "--consumer-id", "vendor",
]


def write_interactions(path: Path, n_users: int = 40, n_items: int = 24, seed: int = 0) -> None:
    """Two taste groups over halves of the catalog; raw user ids that are easy to look for."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    lines = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        own = rng.choice(half, size=int(rng.integers(6, 10)), replace=False) + (0 if u % 2 == 0 else half)
        lines += [f"{RAW_USER_PREFIX}{u:04d},film-{i:03d},{1000 * u + t}" for t, i in enumerate(own)]
    path.write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args: list[str], env: dict[str, str], cwd: Path, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"{args[:2]} failed:\n{done.stdout}\n{done.stderr}"
    return done


class Service:
    """A service process (`python -m <module> serve`), its output in a log file."""

    def __init__(self, module: str, port: int, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("a") as handle:
            self.process = subprocess.Popen([sys.executable, "-m", module, "serve", "--port", str(port)], env=env,
                                            cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.url} exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{self.url} not ready after {timeout} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GDREC_OWNER_", "GDREC_CONSUMER_"))}
    env.pop("GDREC_DATA_DIR", None)
    # the test's secret and keys are readable values, weak for production (the default)
    return {**env, "GDREC_OWNER_ENVIRONMENT": "development", "GDREC_CONSUMER_ENVIRONMENT": "development", **extra}


@pytest.mark.timeout(240)
def test_owner_and_consumer_as_two_processes(tmp_path):
    owner_dir, consumer_dir, reference_dir = tmp_path / "owner", tmp_path / "consumer", tmp_path / "reference"
    for folder in (owner_dir, consumer_dir, reference_dir):
        folder.mkdir()
    write_interactions(owner_dir / "interactions.csv")
    owner_env = clean_env(GDREC_OWNER_SECRET=SECRET, GDREC_OWNER_ARTIFACTS_DIR=str(owner_dir / "artifacts"),
                          GDREC_OWNER_CONSUMER_KEY=CONSUMER_KEY)
    run(["data_owner.cli", "train", "--dataset", "interactions.csv", *OWNER_TINY], owner_env, owner_dir)
    owner_key = run(["data_owner.cli", "keys", "add"], owner_env, owner_dir).stdout.strip().splitlines()[-1]
    owner_port, consumer_port = free_port(), free_port()
    owner = Service("data_owner.cli", owner_port, owner_env, owner_dir, tmp_path / "owner.log")
    consumer_env = clean_env(GDREC_CONSUMER_DATA_DIR=str(consumer_dir / "data"), GDREC_CONSUMER_OWNER_KEY=owner_key,
                             GDREC_CONSUMER_OWNER_URL=owner.url, GDREC_CONSUMER_API_KEY=CONSUMER_KEY)
    consumer = None
    try:
        owner.wait_ready()
        # an uninterrupted pull, for reference (in this process: the same code as the command's)
        with make_client(owner.url, owner_key) as client:
            assert pull(client, ExportStore(reference_dir / "export"), limit=7).complete
        # the pull interrupted after 3 pages, then the owner killed
        first = run(["model_consumer.cli", "pull", "--limit", "7", "--max-pages", "3"], consumer_env, consumer_dir)
        assert "incomplete" in first.stdout
        owner.kill()
        refused = run(["model_consumer.cli", "pull", "--limit", "7", "--attempts", "2", "--backoff", "0.05"],
                      consumer_env, consumer_dir, check=False)
        assert refused.returncode == 1 and "resume" in refused.stderr
        store = ExportStore(consumer_dir / "data" / "export")
        assert len(store.progress().pages) == 3 and not store.progress().complete
        # a pull that keeps retrying while the owner comes back
        resumed = subprocess.Popen([sys.executable, "-m", "model_consumer.cli", "pull", "--limit", "7", "--attempts",
                                    "8", "--backoff", "0.5"], env=consumer_env, cwd=consumer_dir,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        owner = Service("data_owner.cli", owner_port, owner_env, owner_dir, tmp_path / "owner.log")
        out, err = resumed.communicate(timeout=90)
        assert resumed.returncode == 0, out + err
        assert "fetched now starting at page 4" in out and "complete" in out
        assert store.load_bundle() == ExportStore(reference_dir / "export").load_bundle()

        run(["model_consumer.cli", "distill", "--epochs", "3", "--eval-every", "1", "--batch-size", "128",
             "--no-progress", "--device", "cpu"], consumer_env, consumer_dir)
        consumer = Service("model_consumer.cli", consumer_port, consumer_env, consumer_dir, tmp_path / "consumer.log")
        consumer.wait_ready()
        token = store.load_bundle().users[0].token
        auth = {"Authorization": f"Bearer {CONSUMER_KEY}"}
        answer = httpx.get(f"{consumer.url}/v1/recommendations/{token}?k=5", headers=auth).json()
        assert len(answer["items"]) == 5 and answer["items"][0]["item_id"].startswith("film-")
        assert httpx.get(f"{consumer.url}/v1/recommendations/{'0' * 32}", headers=auth).status_code == 404

        owner.wait_ready()
        evaluation = run(["data_owner.cli", "evaluate", "--consumer", consumer.url, "--k", "10"], owner_env, owner_dir)
        assert "HR@10" in evaluation.stdout
        assert list((owner_dir / "artifacts" / "evaluations").glob("remote-*.json"))
    finally:
        for service in (consumer, owner):
            if service is not None:
                service.stop()

    consumer_log = (tmp_path / "consumer.log").read_text()
    assert "GET /v1/recommendations/" in consumer_log and "exclude=" not in consumer_log  # no history crossed
    files = [p for p in consumer_dir.rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix in (".csv", ".dat", ".data", ".inter", ".parquet")]
    assert not [p for p in files if RAW_USER_PREFIX.encode() in p.read_bytes()]
