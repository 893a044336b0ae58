"""Benchmark: CGAN seconds per epoch (d_steps D passes + g_steps G passes over all users) on a dataset
(default citeulike-t), on the CPU and, when present, on CUDA.

    GDREC_DATA_DIR=../shared/datasets python -m bench.cgan_speed [--dataset citeulike-t] [--epochs 2]

Prints a markdown table: device, K_u sampling (per user, the paper's; per batch, the shared column sample that
computes only the needed output columns), seconds per epoch (min / median / max over the epochs run), and each
sampling's speed-up over per-user on the same device in the same run."""

from __future__ import annotations

import argparse
import platform
import statistics
import warnings
from dataclasses import replace

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
    parser.add_argument("--g-steps", type=int, default=4)
    parser.add_argument("--d-steps", type=int, default=2)
    parser.add_argument("--mask-sampling", default="per_user,per_batch", help="comma-separated K_u samplings")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = leave_one_out_split(load_dataset(args.dataset))
    config = CGANConfig(hidden_g=(args.hidden_g,), hidden_d=(args.hidden_d,), batch_size=args.batch_size,
                        g_steps=args.g_steps, d_steps=args.d_steps, epochs=args.epochs, progress=False)
    print(f"# CGAN speed, {args.dataset}: {split.n_users} users x {split.n_items} items, hidden G {args.hidden_g} "
          f"/ D {args.hidden_d}, batch {args.batch_size}, G/D passes {config.g_steps}/{config.d_steps} per epoch\n")
    print("| device | K_u sampling | seconds per epoch min / median / max | epochs | speed-up vs per user |")
    print("|---|---|---|---|---|")
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("| cuda | - | (no GPU here) | - | - |")
            continue
        label = (torch.cuda.get_device_name() if name == "cuda"
                 else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
        medians: dict[str, float] = {}
        for sampling in args.mask_sampling.split(","):
            result = train_cgan(split.train, replace(config, mask_sampling=sampling), validate=None, device=name)
            times = [r["seconds"] for r in result.history]
            medians[sampling] = statistics.median(times)
            ratio = f"{medians['per_user'] / medians[sampling]:.2f}x" if "per_user" in medians else "-"
            print(f"| {label} | {sampling} | {min(times):.2f} / {medians[sampling]:.2f} / {max(times):.2f} "
                  f"| {len(times)} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
