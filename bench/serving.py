"""Serving benchmark of the consumer, each student distilled from a pulled export and served as a real process
(`gdrec-consumer serve`, uvicorn): requests per second and p50 / p99 latency of GET /v1/recommendations?k=50 beside
the same service's /health (the framework's ceiling), at 1 client and at `--clients` concurrent clients, with one
worker and with two (`--workers 2`), and the time of one POST /v1/recommendations/batch for 1,000 users. From one
run it prints (a) recommendation requests/s over /health requests/s with 1 client and one worker, and (b) the
requests/s of two workers over one at `--clients` clients.

    OMP_NUM_THREADS=1 python -m bench.serving --export <consumer data dir>/export [--epochs 2] [--requests 400]

The load generator runs in this process on the same machine as the service: by default the asyncio one
(`bench._http.load_raw`, a few tens of microseconds of CPU per request, so that two workers have the cores to
themselves); `--client httpx` uses one httpx thread and connection per client, which on a small machine competes
with the workers for the cores. Writes a Markdown table on
stdout and JSON to --out (default reports/bench/serving.json)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from bench._http import free_port, load_raw, machine, service
from bench._http import load as load_httpx
from model_consumer.settings import ConsumerLayout
from model_consumer.store import ExportStore
from model_consumer.students import distill_and_publish
from shared.distillation import DistillConfig

KEY = "bench-api-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}
K = 50


def bench_model(data_dir: Path, tokens: list[str], requests: int, workers: int, clients: int,
                raw: bool = True) -> dict:
    env = {"GDREC_CONSUMER_DATA_DIR": str(data_dir), "GDREC_CONSUMER_API_KEY": KEY,
           "GDREC_CONSUMER_LOG_LEVEL": "warning", "GDREC_CONSUMER_ENVIRONMENT": "development",
           "GDREC_CONSUMER_WORKERS": str(workers), "GDREC_CONSUMER_KEY_RATE_PER_S": "0"}
    with service("model_consumer.cli", env, free_port()) as url:
        card = httpx.get(f"{url}/v1/model", headers=HEADERS).json()
        recs = [f"/v1/recommendations/{tokens[i % len(tokens)]}?k={K}" for i in range(requests)]
        result: dict = {"model": f"{card['parameter_ratio']:.0%} ({card['num_parameters']:,} params)",
                        "num_parameters": card["num_parameters"], "parameter_ratio": card["parameter_ratio"],
                        "workers": workers}
        load = load_raw if raw else load_httpx
        for n in (1, clients):
            load(url, recs[: 16 * n], n, HEADERS)  # warm-up: connections opened, every worker reached
            result[f"rec@{n}"] = load(url, recs, n, HEADERS)
            result[f"health@{n}"] = load(url, ["/health"] * requests, n, HEADERS)
        batch = {"tokens": [tokens[i % len(tokens)] for i in range(1000)], "k": K}
        with httpx.Client(base_url=url, headers=HEADERS, timeout=300) as client:
            client.post("/v1/recommendations/batch", json=batch).raise_for_status()
            started = time.perf_counter()
            client.post("/v1/recommendations/batch", json=batch).raise_for_status()
            result["batch_1000_s"] = time.perf_counter() - started
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, required=True, help="a consumer's pulled export folder")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--fractions", default="0.5", help="student sizes, comma-separated (e.g. 1.0,0.5,0.3)")
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=32,
                        help="concurrent clients (keep-alive connections) of the second measurement; each connection "
                             "stays with the worker that accepted it, so a few connections can leave one worker idle")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="load generator: asyncio streams (light) or httpx threads")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/serving.json"))
    args = parser.parse_args()
    bundle = ExportStore(args.export).load_bundle()
    tokens = [u.token for u in bundle.users]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fraction in (float(f) for f in args.fractions.split(",")):
            root = Path(tmp) / f"f{fraction}"
            shutil.copytree(args.export, root / "export")
            distill_and_publish(bundle, DistillConfig(fraction=fraction, epochs=args.epochs, progress=False),
                                ConsumerLayout(root))
            for workers in (1, 2):
                rows.append(bench_model(root, tokens, args.requests, workers, args.clients, args.client == "raw"))
    print(f"machine: {machine()}; export: {len(tokens):,} users, {len(bundle.manifest.item_ids):,} items; "
          f"k={K}; {args.requests} requests per cell; load generator {args.client}\n")
    print("| student | workers | clients | rec rps | rec p50 ms | rec p99 ms | /health rps | rec / health | "
          "batch 1000 s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for clients in (1, args.clients):
            rec, health = row[f"rec@{clients}"], row[f"health@{clients}"]
            print(f"| {row['model']} | {row['workers']} | {clients} | {rec['rps']:.0f} | {rec['p50_ms']:.1f} | "
                  f"{rec['p99_ms']:.1f} | {health['rps']:.0f} | {rec['rps'] / health['rps']:.2f} | "
                  f"{row['batch_1000_s']:.2f} |")
    print()
    summary = []
    for one, two in zip(rows[::2], rows[1::2], strict=True):
        ratio = one["rec@1"]["rps"] / one["health@1"]["rps"]
        scale = two[f"rec@{args.clients}"]["rps"] / one[f"rec@{args.clients}"]["rps"]
        summary.append({"model": one["model"], "rec_over_health_1_client": ratio,
                        f"workers2_over_workers1_{args.clients}_clients": scale})
        print(f"{one['model']}: (a) rec / health, 1 client, 1 worker: {ratio:.2f} (target >= 0.80); "
              f"(b) rec rps with 2 workers / 1 worker at {args.clients} clients: {scale:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "users": len(tokens), "requests": args.requests,
                                    "clients": args.clients, "rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
