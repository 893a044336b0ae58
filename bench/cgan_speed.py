"""Benchmark: CGAN seconds per epoch (d_steps D passes + g_steps G passes over all users) on a dataset
(default citeulike-t), on the CPU and, when present, on CUDA.

    GDREC_DATA_DIR=../shared/datasets python -m bench.cgan_speed [--dataset citeulike-t] [--epochs 2]

Prints a markdown table: device, sizes, seconds per epoch (min / median / max over the epochs run)."""

from __future__ import annotations

import argparse
import platform
import statistics
import warnings

import torch

from data_owner.data import leave_one_out_split, load_dataset
from data_owner.gan import CGANConfig, train_cgan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="citeulike-t")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden-g", type=int, default=400)
    parser.add_argument("--hidden-d", type=int, default=125)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = leave_one_out_split(load_dataset(args.dataset))
    config = CGANConfig(hidden_g=(args.hidden_g,), hidden_d=(args.hidden_d,), batch_size=args.batch_size,
                        epochs=args.epochs, progress=False)
    print(f"# CGAN speed, {args.dataset}: {split.n_users} users x {split.n_items} items, hidden G {args.hidden_g} "
          f"/ D {args.hidden_d}, batch {args.batch_size}, G/D passes {config.g_steps}/{config.d_steps} per epoch\n")
    print("| device | seconds per epoch min / median / max | epochs |")
    print("|---|---|---|")
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("| cuda | (no GPU here) | - |")
            continue
        result = train_cgan(split.train, config, validate=None, device=name)
        times = [r["seconds"] for r in result.history]
        label = (torch.cuda.get_device_name() if name == "cuda"
                 else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
        print(f"| {label} | {min(times):.2f} / {statistics.median(times):.2f} / {max(times):.2f} | {len(times)} |")


if __name__ == "__main__":
    main()
