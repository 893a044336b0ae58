"""`gdrec-demo`: the whole system on one machine, as a newcomer runs it (README "The two commands").

Two processes on loopback, each with its own directory under the work directory: the data owner (`owner/`, trained
on ml-100k when it has no artifacts yet; a rerun skips the finished stages) and the model consumer (`consumer/`),
which pulls the export, distills a student and serves it. The demo shows a sample recommendation and the owner's
remote evaluation of the consumer, stops both services and ends with a summary table. It only drives the two
command lines (`python -m data_owner.cli`, `python -m model_consumer.cli`) as subprocesses and their HTTP APIs;
neither service imports the other, and this package imports neither.

The console shows one line per step with its time, the remote evaluation's progress bar and the summary; every
child process writes to a log file in its party's folder (`owner/train.log`, `consumer/distill.log`, ...). When a
step fails, the demo names that log and prints its last lines.

Both services run as development (`GDREC_OWNER_ENVIRONMENT` / `GDREC_CONSUMER_ENVIRONMENT`), asked for explicitly:
the services default to production. The secrets are strong all the same: the owner's HMAC secret is generated once
into owner/secret (mode 0600, so that a rerun keeps the same tokens) and handed over as a file
(`GDREC_OWNER_SECRET_FILE`), the consumer's API key is new on every run, and the owner's key for the consumer comes
from `gdrec-owner keys add`. No secret is written to a log or shown.

The dataset: $GDREC_DATA_DIR/ml-100k/u.data when present, else downloaded from GroupLens into $GDREC_DATA_DIR
(default ./data). Offline without the file, the demo stops with a message saying where to put it."""

from __future__ import annotations

import codecs
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer

from demo.catalog import catalog_titles

app = typer.Typer(add_completion=False)

MODEST = {
    "owner": ["--teacher-epochs", "150", "--gd-epochs", "20", "--cgan-epochs", "20", "--eval-every", "5",
              "--patience", "3"],
    "consumer": ["--epochs", "100", "--eval-every", "5", "--patience", "2"],
}
FULL: dict[str, list[str]] = {"owner": [], "consumer": []}  # the commands' defaults: the paper's settings
K = 50  # the cutoff of the remote evaluation and of the summary (HR@50, NDCG@50)
TAIL_LINES = 20  # of a failing step's log, shown on the console
TEACHERS = (("gd_teacher", "teacher: owner's GD teacher (local test)"),
            ("kd_teacher", "teacher: owner's KD teacher (local test)"))


class StepFailed(Exception):
    """A step of the demo failed; `log` is the file that says why (None: the reason is in the message)."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    last = [line.rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")[-lines:]]  # a bar: its last frame
    return [line for line in last if line.strip()]


@contextmanager
def _step(title: str, times: dict[str, float], inline: bool = True) -> Iterator[None]:
    """One console line for a step and its time: `title ... 12.3 s`. `inline=False` ends the title line at once
    (for a step that draws a progress bar) and prints the time on a line of its own."""
    typer.echo(f"{title} ...", nl=not inline)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        if inline:
            typer.echo(" failed")
        raise
    seconds = time.perf_counter() - started
    times[title] = seconds
    typer.echo(f" {seconds:.1f} s" if inline else f"  ... {seconds:.1f} s")


def _header(log: Path, args: list[str]) -> IO[str]:
    """Open `log` for appending and record the command about to write to it (its arguments hold no secret)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("a", encoding="utf-8")
    handle.write(f"\n# {datetime.now(UTC).isoformat(timespec='seconds')} $ python -m {' '.join(args)}\n")
    handle.flush()
    return handle


def _run(args: list[str], env: dict[str, str], cwd: Path, log: Path, what: str) -> None:
    """`python -m <args>` with its output appended to `log`; StepFailed naming the log when it fails."""
    with _header(log, args) as handle:
        done = subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, stdout=handle,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise StepFailed(f"{what} failed (exit {done.returncode})", log)


def _run_secret_output(args: list[str], env: dict[str, str], cwd: Path, log: Path, what: str) -> str:
    """`python -m <args>` whose stdout is a secret (a new API key): kept in memory only; stderr goes to `log`."""
    with _header(log, args) as handle:
        done = subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                              stderr=handle, stdin=subprocess.DEVNULL, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise StepFailed(f"{what} failed (exit {done.returncode})", log)
    return done.stdout.strip().splitlines()[-1]


class BarRelay:
    """Splits a child's stderr: everything goes to its log; the console gets only its tqdm progress bar. tqdm draws
    each frame as `\\r<frame>` and ends the bar with `\\n`, while log records are whole lines that start without
    `\\r`: from a `\\r` to the next newline the text is the bar (and whatever the child writes while it is drawn)."""

    def __init__(self, log: IO[str], console: IO[str]) -> None:
        self.log, self.console = log, console
        self.in_bar = False

    def feed(self, text: str) -> None:
        self.log.write(text)
        self.log.flush()
        shown = []
        while text:
            if self.in_bar:
                end = text.find("\n")
                if end < 0:
                    shown.append(text)
                    break
                shown.append(text[:end + 1])
                text, self.in_bar = text[end + 1:], False
            else:
                start = text.find("\r")
                if start < 0:
                    break
                text, self.in_bar = text[start:], True
        if shown:
            self.console.write("".join(shown))
            self.console.flush()


def _run_with_bar(args: list[str], env: dict[str, str], cwd: Path, log: Path, what: str) -> None:
    """`python -m <args>` whose stderr carries a progress bar: its output goes to `log`, and the bar also to the
    console as it comes (so that it moves)."""
    with _header(log, args) as handle:
        process = subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=cwd, stdout=handle,
                                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        relay_to = BarRelay(handle, sys.stderr)

        def relay() -> None:
            assert process.stderr is not None
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
            while chunk := os.read(process.stderr.fileno(), 4096):
                relay_to.feed(decoder.decode(chunk))
            relay_to.feed(decoder.decode(b"", final=True))

        reader = threading.Thread(target=relay, name="demo-relay", daemon=True)
        reader.start()
        returncode = process.wait()
        reader.join(10)
    if returncode != 0:
        raise StepFailed(f"{what} failed (exit {returncode})", log)


def _wait_ready(process: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StepFailed(f"the service at {url} exited with {process.returncode}", log)
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise StepFailed(f"{url} was not ready after {timeout:.0f} s", log)


def _serve(module: str, port: int, env: dict[str, str], cwd: Path, log: Path,
           processes: list[subprocess.Popen]) -> str:
    """Start `python -m <module> serve --port <port>` (output in `log`) and wait until it is ready; its URL."""
    args = [module, "serve", "--port", str(port)]
    with _header(log, args) as handle:
        processes.append(subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=cwd, stdout=handle,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    url = f"http://127.0.0.1:{port}"
    _wait_ready(processes[-1], url, log)
    return url


def _secret_file(path: Path) -> Path:
    """The file holding the owner's HMAC secret for this demo folder, created once (kept so that a rerun reuses the
    same tokens); readable by its owner only."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _titles(dataset: str, data_dir: Path) -> dict[str, str]:
    """Item titles for the sample recommendation. The demo plays the owner's catalog team here: it reads the public
    catalog file (titles are catalog data, not user data) from the owner's data folder; the consumer never sees it
    and only knows item ids. No titles file: {} (the items are shown by id)."""
    try:
        titles, _ = catalog_titles(dataset, data_dir)
    except (OSError, ValueError) as exc:
        typer.echo(f"warning: item titles unavailable, showing item ids ({exc})", err=True)
        return {}
    return titles


def _sample(consumer_url: str, api_key: str, consumer_dir: Path, titles: dict[str, str]) -> dict[str, Any]:
    """Show one user's top 5 from the consumer's REST API (the consumer only knows the pseudonymous token); the
    model card."""
    auth = {"Authorization": f"Bearer {api_key}"}
    pages = sorted((consumer_dir / "data" / "export" / "pages").glob("*.json"))
    if not pages:
        raise StepFailed(f"the consumer holds no export page under {consumer_dir / 'data' / 'export' / 'pages'}")
    token = json.loads(pages[0].read_text(encoding="utf-8"))["users"][0]["token"]
    try:
        card_response = httpx.get(f"{consumer_url}/v1/model", headers=auth, timeout=30)
        response = httpx.get(f"{consumer_url}/v1/recommendations/{token}", params={"k": 5}, headers=auth, timeout=30)
    except httpx.HTTPError as exc:
        raise StepFailed(f"the consumer at {consumer_url} did not answer ({exc})", consumer_dir / "serve.log") from None
    for answer in (card_response, response):
        if answer.status_code != 200:
            raise StepFailed(f"GET {answer.request.url.path} answered {answer.status_code}: {answer.text[:200]}",
                             consumer_dir / "serve.log")
    card = card_response.json()
    typer.echo(f"  model {card['model_version']}: {card['family']}, {card['num_parameters']:,} parameters "
               f"({card['parameter_ratio']:.0%} of the teacher), export {card['export_id'][:12]}")
    typer.echo(f"  GET /v1/recommendations/{token[:16]}...?k=5")
    for rank, item in enumerate(response.json()["items"], 1):
        item_id = str(item["item_id"])
        label = f"{titles[item_id]}  (item {item_id})" if item_id in titles else f"item {item_id}"
        typer.echo(f"  {rank}. {label}  score {item['score']:.3f}")
    return card


def _summary(evaluation: dict[str, Any], owner_summary: dict[str, Any], card: dict[str, Any],
             times: dict[str, float], train_step: str, distill_step: str) -> str:
    """Teacher(s) against student on HR@50 / NDCG@50 (the owner's held-out test items), sizes and times."""
    stages = owner_summary.get("stages", {})
    rows = []
    for stage, label in TEACHERS:
        metrics = stages.get(stage, {}).get("test")
        if not metrics:
            continue
        parameters = stages[stage].get("num_parameters")
        seconds = stages[stage].get("seconds")
        spent = ("earlier run" if stages[stage].get("status") == "skipped" else
                 f"{seconds:.1f} s (stage)" if seconds is not None else "-")
        rows.append((label, f"{parameters:,}" if parameters else "-", metrics.get(f"HR@{K}"),
                     metrics.get(f"NDCG@{K}"), spent))
    student = evaluation.get("metrics", {})
    ratio = card.get("parameter_ratio")
    rows.append(("student: consumer's model (remote test)",
                 f"{card['num_parameters']:,}" + (f" ({ratio:.0%})" if ratio is not None else ""),
                 student.get(f"HR@{K}"), student.get(f"NDCG@{K}"), f"{times.get(distill_step, 0.0):.1f} s (distill)"))

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"| model | parameters | HR@{K} | NDCG@{K} | training time |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {size} | {cell(hr)} | {cell(ndcg)} | {spent} |" for name, size, hr, ndcg, spent in rows]
    lines.append("")
    lines.append(f"remote evaluation: {evaluation.get('users', '?')} test users, {evaluation.get('answered', '?')} "
                 f"answered, {evaluation.get('seconds', 0.0):.1f} s; owner train step {times.get(train_step, 0.0):.1f}"
                 f" s (finished stages are skipped on a rerun)")
    return "\n".join(lines)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="holds owner/ and consumer/, one folder per party")] = Path("runs/demo"),
    dataset: Annotated[str, typer.Option(help="the owner's dataset: a name (ml-100k) or a file path")] = "ml-100k",
    full: Annotated[bool, typer.Option("--full", help="the paper's epochs (long on a CPU) instead of a quick run")
                    ] = False,
    fresh: Annotated[bool, typer.Option(help="retrain the owner and start the consumer from nothing")] = False,
    device: Annotated[str, typer.Option(help="where both parties train: auto, cpu or cuda[:n]")] = "auto",
) -> None:
    """Owner and consumer as two processes: train, pull, distill, serve, recommend, evaluate, stop, summarize."""
    epochs = FULL if full else MODEST
    workdir = workdir.resolve()
    owner_dir, consumer_dir = workdir / "owner", workdir / "consumer"
    if fresh:
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
    consumer_env = {**base, "GDREC_CONSUMER_ENVIRONMENT": "development",
                    "GDREC_CONSUMER_DATA_DIR": str(consumer_dir / "data"), "GDREC_CONSUMER_API_KEY": consumer_api_key}
    consumer_env.pop("GDREC_DATA_DIR", None)  # the consumer has no business with raw data
    processes: list[subprocess.Popen] = []
    times: dict[str, float] = {}
    started = time.perf_counter()
    typer.echo(f"GD-REC demo: owner in {owner_dir}, consumer in {consumer_dir} (logs: <party>/*.log)")
    try:
        if dataset == "ml-100k" and not (data_dir / "ml-100k" / "u.data").is_file():
            typer.echo(f"{data_dir}/ml-100k/u.data is absent: the owner downloads it from GroupLens. Offline? Put the "
                       "unpacked ml-100k folder there, or set GDREC_DATA_DIR to a folder holding it.")
        train_step = f"owner: train on {dataset} (finished stages are skipped)"
        with _step(train_step, times):
            try:
                _run(["data_owner.cli", "train", "--dataset", dataset, "--consumer-id", "demo-consumer",
                      "--device", device, "--no-progress", *epochs["owner"]], owner_env, owner_dir,
                     owner_dir / "train.log", "the owner's training")
            except StepFailed as exc:
                if dataset != "ml-100k":
                    raise
                raise StepFailed(f"{exc}. If the dataset is missing and this machine is offline, place "
                                 f"ml-100k/u.data under {data_dir} (or set GDREC_DATA_DIR) and rerun",
                                 exc.log) from None
        with _step("owner: create an API key for the consumer", times):
            owner_key = _run_secret_output(["data_owner.cli", "keys", "add"], owner_env, owner_dir,
                                           owner_dir / "keys.log", "creating the consumer's key")
        with _step("owner: serve the export API", times):
            owner_url = _serve("data_owner.cli", _free_port(), owner_env, owner_dir, owner_dir / "serve.log",
                               processes)
        consumer_env |= {"GDREC_CONSUMER_OWNER_URL": owner_url, "GDREC_CONSUMER_OWNER_KEY": owner_key}
        with _step("consumer: pull the export (verified, resumable)", times):
            _run(["model_consumer.cli", "pull"], consumer_env, consumer_dir, consumer_dir / "pull.log",
                 "the consumer's pull")
        distill_step = "consumer: distill a student (50% of the teacher's parameters)"
        with _step(distill_step, times):
            _run(["model_consumer.cli", "distill", "--device", device, "--no-progress", *epochs["consumer"]],
                 consumer_env, consumer_dir, consumer_dir / "distill.log", "the consumer's distillation")
        with _step("consumer: serve recommendations", times):
            consumer_url = _serve("model_consumer.cli", _free_port(), consumer_env, consumer_dir,
                                  consumer_dir / "serve.log", processes)
        typer.echo("a sample recommendation (the consumer only knows the user's pseudonymous token):")
        card = _sample(consumer_url, consumer_api_key, consumer_dir, _titles(dataset, data_dir))
        evaluation_file = owner_dir / "artifacts" / "evaluations" / (
            f"remote-demo-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json")
        with _step("owner: evaluate the consumer on the owner's held-out items (only tokens and k cross)", times,
                   inline=False):
            _run_with_bar(["data_owner.cli", "evaluate", "--consumer", consumer_url, "--k", str(K), "--out",
                           str(evaluation_file), "--progress"], owner_env, owner_dir, owner_dir / "evaluate.log",
                          "the owner's remote evaluation")
    except StepFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        if exc.log is not None:
            typer.echo(f"log: {exc.log}; its last lines:", err=True)
            for line in _tail(exc.log):
                typer.echo(f"  {line}", err=True)
        raise typer.Exit(1) from None
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if processes:
            typer.echo("both services stopped")
    typer.echo("")
    typer.echo(_summary(_read_json(evaluation_file), _read_json(owner_dir / "artifacts" / "summary.json"), card, times,
                        train_step, distill_step))
    typer.echo(f"done in {time.perf_counter() - started:.0f} s; owner: {owner_dir}, consumer: {consumer_dir}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
