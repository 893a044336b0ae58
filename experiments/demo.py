"""`gdrec-demo`: the whole system on one machine, as a newcomer runs it (README "Main job").

Two processes on loopback, each with its own directory: the data owner (trained on ml-100k when it has no
artifacts yet; a rerun skips the finished stages) and the model consumer, which pulls the export, distills a
student and serves it. The demo prints a sample recommendation and the owner's remote evaluation of the consumer,
then stops both services. It only orchestrates the two command lines (`python -m data_owner.cli`,
`python -m model_consumer.cli`) as subprocesses; neither service imports the other.

Both run as development (`GDREC_OWNER_ENVIRONMENT` / `GDREC_CONSUMER_ENVIRONMENT`), asked for explicitly: the
services default to production. The secrets are strong all the same: the owner's HMAC secret is generated once into
owner/secret (mode 0600, so that a rerun keeps the same tokens) and handed over as a file
(`GDREC_OWNER_SECRET_FILE`), and the consumer's API key is new on every run.

The dataset: $GDREC_DATA_DIR/ml-100k/u.data when present, else downloaded from GroupLens into $GDREC_DATA_DIR
(default ./data). Offline without the file, the demo stops with a message saying where to put it."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

app = typer.Typer(add_completion=False)

MODEST = {
    "owner": ["--teacher-epochs", "20", "--gd-epochs", "5", "--cgan-epochs", "20", "--eval-every", "5",
              "--patience", "2"],
    "consumer": ["--epochs", "20", "--eval-every", "5", "--patience", "2"],
}
FULL: dict[str, list[str]] = {"owner": [], "consumer": []}  # the commands' defaults: the paper's settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _step(message: str) -> None:
    typer.secho(f"\n==> {message}", bold=True)


def _run(args: list[str], env: dict[str, str], cwd: Path, capture: bool = False) -> str:
    done = subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, text=True,
                          stdout=subprocess.PIPE if capture else None)
    if done.returncode != 0:
        raise typer.Exit(done.returncode)
    return done.stdout or ""


def _wait_ready(process: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            typer.echo(log.read_text()[-3000:], err=True)
            typer.echo(f"error: the service at {url} exited with {process.returncode} (log: {log})", err=True)
            raise typer.Exit(1)
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    typer.echo(f"error: {url} was not ready after {timeout:.0f} s (log: {log})", err=True)
    raise typer.Exit(1)


def _secret_file(path: Path) -> Path:
    """The file holding the owner's HMAC secret for this demo folder, created once (kept so that a rerun reuses the
    same tokens); readable by its owner only."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return path


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="holds owner/ and consumer/, one folder per party")] = Path("runs/demo"),
    dataset: Annotated[str, typer.Option(help="the owner's dataset")] = "ml-100k",
    full: Annotated[bool, typer.Option("--full", help="the paper's epochs (long on a CPU) instead of a quick run")
                    ] = False,
    fresh: Annotated[bool, typer.Option(help="retrain the owner and start the consumer from nothing")] = False,
) -> None:
    """Owner and consumer as two processes: train, pull, distill, serve, recommend, evaluate, stop."""
    epochs = FULL if full else MODEST
    workdir = workdir.resolve()
    owner_dir, consumer_dir = workdir / "owner", workdir / "consumer"
    if fresh:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    owner_dir.mkdir(parents=True, exist_ok=True)
    consumer_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(os.environ.get("GDREC_DATA_DIR") or "data").resolve()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GDREC_OWNER_", "GDREC_CONSUMER_"))}
    consumer_api_key = secrets.token_hex(32)
    owner_env = {**base, "GDREC_OWNER_ENVIRONMENT": "development",
                 "GDREC_OWNER_SECRET_FILE": str(_secret_file(owner_dir / "secret")), "GDREC_DATA_DIR": str(data_dir),
                 "GDREC_OWNER_ARTIFACTS_DIR": str(owner_dir / "artifacts"),
                 "GDREC_OWNER_CONSUMER_KEY": consumer_api_key}
    owner_port, consumer_port = _free_port(), _free_port()
    owner_url, consumer_url = f"http://127.0.0.1:{owner_port}", f"http://127.0.0.1:{consumer_port}"
    processes: list[subprocess.Popen] = []
    started = time.perf_counter()
    try:
        _step(f"owner: train on {dataset} (data: {data_dir}; finished stages are skipped)")
        if dataset == "ml-100k" and not (data_dir / "ml-100k" / "u.data").is_file():
            typer.echo(f"{data_dir}/ml-100k/u.data is absent: downloading it from GroupLens. Offline? Put the "
                       "unpacked ml-100k folder there, or set GDREC_DATA_DIR to a folder holding it.")
        done = subprocess.run([sys.executable, "-m", "data_owner.cli", "train", "--dataset", dataset,
                               "--consumer-id", "demo-consumer", "--no-progress", *epochs["owner"]],
                              env=owner_env, cwd=owner_dir)
        if done.returncode != 0:
            typer.echo(f"error: the owner could not train (see above). If the dataset is missing and this machine is "
                       f"offline, place ml-100k/u.data under {data_dir} (or set GDREC_DATA_DIR) and rerun.", err=True)
            raise typer.Exit(done.returncode)
        owner_key = _run(["data_owner.cli", "keys", "add"], owner_env, owner_dir, capture=True).strip().splitlines()[-1]

        _step(f"owner: serve the export API on {owner_url}")
        owner_log = owner_dir / "serve.log"
        with owner_log.open("a") as handle:
            processes.append(subprocess.Popen([sys.executable, "-m", "data_owner.cli", "serve", "--port",
                                               str(owner_port)], env=owner_env, cwd=owner_dir, stdout=handle,
                                              stderr=subprocess.STDOUT))
        _wait_ready(processes[-1], owner_url, owner_log)

        consumer_env = {**base, "GDREC_CONSUMER_ENVIRONMENT": "development",
                        "GDREC_CONSUMER_DATA_DIR": str(consumer_dir / "data"),
                        "GDREC_CONSUMER_OWNER_URL": owner_url, "GDREC_CONSUMER_OWNER_KEY": owner_key,
                        "GDREC_CONSUMER_API_KEY": consumer_api_key}
        consumer_env.pop("GDREC_DATA_DIR", None)  # the consumer has no business with raw data
        _step("consumer: pull the export (verified, resumable)")
        _run(["model_consumer.cli", "pull"], consumer_env, consumer_dir)
        _step("consumer: distill a student (50% of the teacher's parameters)")
        _run(["model_consumer.cli", "distill", "--no-progress", *epochs["consumer"]], consumer_env, consumer_dir)
        _step(f"consumer: serve recommendations on {consumer_url}")
        consumer_log = consumer_dir / "serve.log"
        with consumer_log.open("a") as handle:
            processes.append(subprocess.Popen([sys.executable, "-m", "model_consumer.cli", "serve", "--port",
                                               str(consumer_port)], env=consumer_env, cwd=consumer_dir,
                                              stdout=handle, stderr=subprocess.STDOUT))
        _wait_ready(processes[-1], consumer_url, consumer_log)

        _step("a sample recommendation (the consumer only knows the user's pseudonymous token)")
        auth = {"Authorization": f"Bearer {consumer_api_key}"}
        card = httpx.get(f"{consumer_url}/v1/model", headers=auth, timeout=30).json()
        page = json.loads(sorted((consumer_dir / "data" / "export" / "pages").glob("*.json"))[0].read_text())
        token = page["users"][0]["token"]
        answer = httpx.get(f"{consumer_url}/v1/recommendations/{token}", params={"k": 5}, headers=auth,
                           timeout=30).json()
        typer.echo(f"model {card['model_version']}: {card['family']}, {card['num_parameters']:,} parameters "
                   f"({card['parameter_ratio']:.0%} of the teacher), export {card['export_id'][:12]}")
        typer.echo(f"GET /v1/recommendations/{token[:16]}...?k=5")
        for rank, item in enumerate(answer["items"], 1):
            typer.echo(f"  {rank}. item {item['item_id']:>6}  score {item['score']:.3f}")

        _step("owner: evaluate the consumer on the owner's held-out items (only tokens and k cross)")
        _run(["data_owner.cli", "evaluate", "--consumer", consumer_url], owner_env, owner_dir)
    finally:
        _step("stopping both services")
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    typer.echo(f"done in {time.perf_counter() - started:.0f} s; owner: {owner_dir}, consumer: {consumer_dir}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
