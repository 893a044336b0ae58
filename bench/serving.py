"""Serving benchmark of the consumer: requests per second and p50 / p99 latency of GET /v1/recommendations at 1
and 16 concurrent clients, beside the same service's /health (the framework's ceiling; the ratio is reported from
the same run), and the time of one POST /v1/recommendations/batch for 1,000 users; for the teacher-sized student
and the 50% and 30% students, each distilled from a pulled export and served as a real process (uvicorn).

    python -m bench.serving --export <consumer data dir>/export [--epochs 5] [--requests 400]

Writes a Markdown table on stdout and JSON to --out (default reports/bench/serving.json)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from bench._http import free_port, load, machine, service
from model_consumer.settings import ConsumerLayout
from model_consumer.store import ExportStore
from model_consumer.students import distill_and_publish
from shared.distillation import DistillConfig

KEY = "bench-api-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def bench_model(data_dir: Path, tokens: list[str], requests: int) -> dict:
    env = {"GDREC_CONSUMER_DATA_DIR": str(data_dir), "GDREC_CONSUMER_API_KEY": KEY,
           "GDREC_CONSUMER_LOG_LEVEL": "warning", "GDREC_CONSUMER_ENVIRONMENT": "development"}
    with service("model_consumer.cli", env, free_port()) as url:
        card = httpx.get(f"{url}/v1/model", headers=HEADERS).json()
        recs = [f"/v1/recommendations/{tokens[i % len(tokens)]}?k=50" for i in range(requests)]
        result: dict = {"model": f"{card['parameter_ratio']:.0%} ({card['num_parameters']:,} params)",
                        "num_parameters": card["num_parameters"], "parameter_ratio": card["parameter_ratio"]}
        for clients in (1, 16):
            load(url, recs[:32], clients, HEADERS)  # warm-up
            result[f"rec@{clients}"] = load(url, recs, clients, HEADERS)
            result[f"health@{clients}"] = load(url, ["/health"] * requests, clients, HEADERS)
        batch = {"tokens": [tokens[i % len(tokens)] for i in range(1000)], "k": 50}
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
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("reports/bench/serving.json"))
    args = parser.parse_args()
    bundle = ExportStore(args.export).load_bundle()
    tokens = [u.token for u in bundle.users]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fraction in (1.0, 0.5, 0.3):
            root = Path(tmp) / f"f{fraction}"
            shutil.copytree(args.export, root / "export")
            distill_and_publish(bundle, DistillConfig(fraction=fraction, epochs=args.epochs, progress=False),
                                ConsumerLayout(root))
            rows.append(bench_model(root, tokens, args.requests))
    print(f"machine: {machine()}; export: {len(tokens):,} users\n")
    print("| student | clients | rec rps | rec p50 ms | rec p99 ms | /health rps | rec / health | batch 1000 s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for clients in (1, 16):
            rec, health = row[f"rec@{clients}"], row[f"health@{clients}"]
            print(f"| {row['model']} | {clients} | {rec['rps']:.0f} | {rec['p50_ms']:.1f} | {rec['p99_ms']:.1f} | "
                  f"{health['rps']:.0f} | {rec['rps'] / health['rps']:.2f} | {row['batch_1000_s']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "users": len(tokens), "requests": args.requests,
                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
