"""Load benchmark of the owner's export endpoint: pages per second and p50 / p99 latency of
GET /v1/export/users at 1 and 16 concurrent clients on loopback, with the payload size, beside the same service's
/health (the framework's ceiling, same run). The owner runs as a real process (uvicorn, one worker) on a finished
artifacts directory; every export request is authenticated and appended to the hash-chained audit log with an
fsync before it is answered, exactly as in production, so that cost is part of the numbers.

    python -m bench.export_load --artifacts <owner artifacts dir> [--limit 100] [--passes 3]

The benchmark's own API key and audit log live in a temporary folder: the artifacts directory is only read.
Writes a Markdown table on stdout and JSON to --out (default reports/bench/export_load.json)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import httpx

from bench._http import free_port, load, machine, service
from data_owner.api.state import load_served_export
from data_owner.keys import KeyStore
from data_owner.settings import ArtifactLayout


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


def run(artifacts: Path, limit: int, passes: int, clients_list: list[int]) -> dict:
    export = load_served_export(ArtifactLayout(artifacts))  # fails early, with the reason, on a bad directory
    with tempfile.TemporaryDirectory() as tmp:
        store = KeyStore(Path(tmp) / "keys.json")
        _, plain = store.add(export.consumer_id, ["export"])
        headers = {"Authorization": f"Bearer {plain}"}
        env = {"GDREC_OWNER_ARTIFACTS_DIR": str(artifacts), "GDREC_OWNER_KEYS_FILE": str(store.path),
               "GDREC_OWNER_AUDIT_LOG": str(Path(tmp) / "audit.jsonl"), "GDREC_OWNER_LOG_LEVEL": "warning"}
        with service("data_owner.cli", env, free_port()) as url:
            paths, users = page_paths(url, headers, limit)
            result = {"artifacts": str(artifacts), "export_id": export.export_id, "users": users,
                      "list_length": export.manifest.list_length, "catalog": len(export.manifest.item_ids),
                      "page_limit": limit, "pages": len(paths), "machine": machine(), "runs": []}
            for clients in clients_list:
                load(url, paths[: 4 * clients], clients, headers)  # warm-up (page hash cache, connections)
                pages = load(url, paths * passes, clients, headers)
                health = load(url, ["/health"] * len(paths) * passes, clients, headers)
                result["runs"].append({"clients": clients, "export": pages, "health": health})
    return result


def render(result: dict) -> str:
    lines = [f"machine: {result['machine']}",
             f"export {result['export_id'][:12]}: {result['users']:,} users, L={result['list_length']}, catalog "
             f"{result['catalog']:,} items; {result['pages']} pages of {result['page_limit']} users",
             "",
             "| clients | pages/s | users/s | MB/s | p50 ms | p99 ms | KiB/page | /health rps | pages ÷ health |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run_ in result["runs"]:
        e, h = run_["export"], run_["health"]
        users_per_page = result["users"] / result["pages"]
        lines.append(f"| {run_['clients']} | {e['rps']:.1f} | {e['rps'] * users_per_page:,.0f} | "
                     f"{e['rps'] * e['bytes_per_request'] / 1e6:.1f} | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | "
                     f"{e['bytes_per_request'] / 1024:.0f} | {h['rps']:.0f} | {e['rps'] / h['rps']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True, help="an owner artifacts dir with a finished export")
    parser.add_argument("--limit", type=int, default=100, help="users per page (the API's default is 100)")
    parser.add_argument("--passes", type=int, default=3, help="walks of the whole export per client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--out", type=Path, default=Path("reports/bench/export_load.json"))
    args = parser.parse_args()
    result = run(args.artifacts, args.limit, args.passes, args.clients)
    print(render(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
