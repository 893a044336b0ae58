"""Load benchmark of the owner's export endpoint: pages per second and p50 / p99 latency of GET /v1/export/users
at 1, 8 and 32 concurrent clients on loopback, with the payload size, beside the same service's /health measured
in the same run at the same concurrency (the framework's ceiling). The owner runs as a real process (uvicorn, one
worker); every export request is authenticated and recorded in the audit log, durably (fsync) before it is
answered, exactly as in production, so that cost is part of the numbers.

    python -m bench.export_load --artifacts <owner artifacts dir> [--limit 100] [--seconds 3]
    python -m bench.export_load --synthetic-users 5219 [--list-length 50] [--catalog 25181]

`--synthetic-users` serves a generated export of that shape (random lists and soft targets: the service's cost
depends on the payload's size, not on its values) so that the benchmark runs without a trained model. Each client
count is a closed loop (each client sends its next request when the previous one answered) that runs for a fixed
time (`--seconds`), so the whole run is bounded whatever the machine's speed. Rate limits are turned off for the
benchmark's service. The audit log, the benchmark's API key and a synthetic export live in a scratch folder
(`--scratch`, default the system's temporary directory; its file system is printed, as an fsync on tmpfs costs
nothing); the artifacts directory is only read.

Writes a Markdown table on stdout and JSON to --out (default reports/bench/export_load.json)."""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from bench._http import free_port, machine, service
from data_owner.api.state import load_served_export
from data_owner.keys import KeyStore
from data_owner.settings import ArtifactLayout
from shared.schemas import ExportBundle, ExportManifest, PrivacySwitches, TeacherCard, UserRecord, content_sha256


def synthetic_export(root: Path, users: int, list_length: int, catalog: int, seed: int = 0) -> Path:
    """Write an artifacts directory holding only an export stage of the given shape; returns its root."""
    rng = np.random.default_rng(seed)
    item_ids = [str(i) for i in range(catalog)]
    records = []
    for _ in range(users):
        items = rng.choice(catalog, size=list_length, replace=False)
        targets = np.round(rng.random(list_length), 6)
        records.append(UserRecord(token=secrets.token_hex(32), items=[item_ids[i] for i in items],
                                  soft_targets=targets.tolist()))
    manifest = ExportManifest(export_id=content_sha256(records), created_at=datetime.now(UTC), n_users=users,
                              item_ids=item_ids, list_length=list_length, temperature=2.0,
                              teacher=TeacherCard(family="bpr", num_parameters=(users + catalog) * 64,
                                                  config={"dim": 64}),
                              privacy=PrivacySwitches(include_observed=True))
    layout = ArtifactLayout(root)
    folder = layout.stage("export")
    folder.mkdir(parents=True, exist_ok=True)
    layout.export_file.write_text(ExportBundle(manifest=manifest, users=records).model_dump_json())
    summary = {"export_id": manifest.export_id, "consumer_id": "bench", "secret_fingerprint": None}
    layout.export_stage_file.write_text(json.dumps({"stage": "export", "key": "bench", "summary": summary}))
    return root


def file_system(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts; 'unknown' elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    resolved, best, kind = str(path.resolve()), "", "unknown"
    for fields in mounts:
        point = fields[1]
        if (resolved == point or resolved.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def page_paths(url: str, headers: dict[str, str], limit: int) -> tuple[list[str], int]:
    """Walk the export once: the path of every page (cursor included) and the number of users seen."""
    paths, users, cursor = [], 0, None
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while True:
            path = f"/v1/export/users?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            response = client.get(path)
            response.raise_for_status()
            page = response.json()
            paths.append(path)
            users += len(page["users"])
            cursor = page["next_cursor"]
            if cursor is None:
                return paths, users


def timed_load(url: str, paths: Sequence[str], clients: int, headers: dict[str, str], seconds: float) -> dict:
    """`clients` closed-loop clients, one keep-alive connection each, cycling through `paths` (each client from its
    own starting point) for `seconds`: requests per second, p50 / p99 latency in ms, response bytes per request
    (mean) and the number of answers other than 200."""
    start = threading.Barrier(clients + 1)
    results: list[list[tuple[float, int, int]]] = [[] for _ in range(clients)]
    deadline = [0.0]

    def worker(index: int) -> None:
        samples = results[index]
        position = index * len(paths) // clients
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            start.wait()
            while time.perf_counter() < deadline[0]:
                began = time.perf_counter()
                response = client.get(paths[position % len(paths)])
                samples.append((time.perf_counter() - began, len(response.content), response.status_code))
                position += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    samples = [s for part in results for s in part]
    latencies = sorted(s for s, _, _ in samples)
    return {"requests": len(samples), "seconds": elapsed, "rps": len(samples) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "bytes_per_request": statistics.fmean(b for _, b, _ in samples),
            "errors": sum(1 for _, _, code in samples if code != 200)}


def run(artifacts: Path | None, synthetic: tuple[int, int, int] | None, limit: int, seconds: float,
        clients_list: list[int], scratch: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="gdrec-export-load-", dir=scratch) as tmp:
        work = Path(tmp)
        if artifacts is None:
            assert synthetic is not None
            artifacts = synthetic_export(work / "artifacts", *synthetic)
        export = load_served_export(ArtifactLayout(artifacts))  # fails early, with the reason, on a bad directory
        store = KeyStore(work / "keys.json")
        _, plain = store.add(export.consumer_id, ["export"])
        headers = {"Authorization": f"Bearer {plain}"}
        audit_log = work / "audit" / "audit.jsonl"
        env = {"GDREC_OWNER_ARTIFACTS_DIR": str(artifacts), "GDREC_OWNER_KEYS_FILE": str(store.path),
               "GDREC_OWNER_AUDIT_LOG": str(audit_log), "GDREC_OWNER_LOG_LEVEL": "warning",
               "GDREC_OWNER_ENVIRONMENT": "development", "GDREC_OWNER_SECRET": secrets.token_hex(32),
               "GDREC_OWNER_KEY_RATE_PER_S": "0", "GDREC_OWNER_ADDRESS_RATE_PER_S": "0"}
        with service("data_owner.cli", env, free_port()) as url:
            paths, users = page_paths(url, headers, limit)
            result = {"artifacts": "synthetic" if synthetic else str(artifacts), "export_id": export.export_id,
                      "users": users, "list_length": export.manifest.list_length,
                      "catalog": len(export.manifest.item_ids), "page_limit": limit, "pages": len(paths),
                      "seconds_per_level": seconds, "machine": machine(),
                      "audit_file_system": file_system(work), "runs": []}
            for clients in clients_list:
                timed_load(url, paths, clients, headers, min(1.0, seconds))  # warm-up (page hash cache, connections)
                pages = timed_load(url, paths, clients, headers, seconds)
                health = timed_load(url, ["/health"], clients, headers, seconds)
                result["runs"].append({"clients": clients, "export": pages, "health": health})
            result["audit_lines"] = sum(1 for _ in open(audit_log, "rb")) if audit_log.exists() else None
    return result


def render(result: dict) -> str:
    lines = [f"machine: {result['machine']}; audit log on {result['audit_file_system']}",
             f"export {result['export_id'][:12]} ({result['artifacts']}): {result['users']:,} users, "
             f"L={result['list_length']}, catalog {result['catalog']:,} items; {result['pages']} pages of "
             f"{result['page_limit']} users; {result['seconds_per_level']:g} s per row and endpoint",
             "",
             "| clients | pages/s | users/s | MB/s | p50 ms | p99 ms | KiB/page | errors | /health rps | "
             "/health p99 ms | pages ÷ health |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    users_per_page = result["users"] / result["pages"]
    for run_ in result["runs"]:
        e, h = run_["export"], run_["health"]
        lines.append(f"| {run_['clients']} | {e['rps']:.1f} | {e['rps'] * users_per_page:,.0f} | "
                     f"{e['rps'] * e['bytes_per_request'] / 1e6:.1f} | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | "
                     f"{e['bytes_per_request'] / 1024:.0f} | {e['errors'] + h['errors']} | {h['rps']:.0f} | "
                     f"{h['p99_ms']:.1f} | {e['rps'] / h['rps']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--artifacts", type=Path, help="an owner artifacts dir with a finished export")
    source.add_argument("--synthetic-users", type=int, help="serve a generated export with this many users")
    parser.add_argument("--list-length", type=int, default=50, help="items per user (synthetic export)")
    parser.add_argument("--catalog", type=int, default=25_181, help="catalog size (synthetic export)")
    parser.add_argument("--limit", type=int, default=100, help="users per page (the API's default is 100)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each row, per endpoint")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--scratch", type=Path, default=None, help="where the audit log and key file are written")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/export_load.json"))
    args = parser.parse_args()
    if args.synthetic_users is not None and min(args.synthetic_users, args.list_length, args.catalog) < 1:
        parser.error("--synthetic-users, --list-length and --catalog must be positive")
    if args.synthetic_users is not None and args.list_length > args.catalog:
        parser.error("--list-length cannot exceed --catalog")
    if args.seconds <= 0 or args.limit < 1 or min(args.clients) < 1:
        parser.error("--seconds, --limit and --clients must be positive")
    synthetic = None if args.synthetic_users is None else (args.synthetic_users, args.list_length, args.catalog)
    result = run(args.artifacts, synthetic, args.limit, args.seconds, args.clients, args.scratch)
    print(render(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
