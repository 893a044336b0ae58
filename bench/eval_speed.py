"""Benchmark: one full-ranking evaluation of the BPR and NeuMF teachers on a dataset (default citeulike-t), the
BPR evaluation against its bound (the user x item matmul plus a top-50 per user, in 512-user blocks), and NeuMF's
split all-items scoring against the naive per-(user, item) pass, measured in one run.

    GDREC_DATA_DIR=../shared/datasets python -m bench.eval_speed [--dataset citeulike-t] [--repeats 3]

Prints a markdown table. Timings do not depend on the weights, so freshly initialised models of the teacher
sizes are used unless checkpoints are given."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch

from data_owner.data import leave_one_out_split, load_dataset
from data_owner.teacher import test_result
from shared.checkpoint import load_checkpoint
from shared.device import resolve_device
from shared.models import BPR, NeuMF


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def fmt(times: list[float]) -> str:
    return f"{min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="citeulike-t")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-users", type=int, default=64, help="users scored by both NeuMF passes")
    parser.add_argument("--bpr", help="BPR teacher checkpoint (default: fresh BPR d=100)")
    parser.add_argument("--neumf", help="NeuMF teacher checkpoint (default: fresh NeuMF d=100, MLP --neumf-hidden)")
    parser.add_argument("--neumf-hidden", default="32,16", help="MLP widths of the fresh NeuMF")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = leave_one_out_split(load_dataset(args.dataset))
    n_users, n_items = split.n_users, split.n_items
    torch.manual_seed(0)
    bpr = load_checkpoint(args.bpr, device)[0] if args.bpr else BPR(n_users, n_items, dim=100).to(device)
    neumf = (
        load_checkpoint(args.neumf, device)[0]
        if args.neumf
        else NeuMF(n_users, n_items, dim_gmf=100, dim_mlp=100, hidden=[int(h) for h in args.neumf_hidden.split(",")])
        .to(device)
    )
    assert isinstance(neumf, NeuMF)
    rows, times_of = [], {}
    for name, model in (("BPR", bpr), ("NeuMF", neumf)):
        model.eval()
        times = times_of[name] = timed(lambda m=model: test_result(m, split), args.repeats)
        label = f"{name} {model.config()['hidden']}" if name == "NeuMF" else name
        rows.append((f"full-ranking test evaluation, {label} ({model.num_parameters():,} params)",
                     f"{len(split.eval_users)} users x {n_items} items", fmt(times)))
    users_all = torch.as_tensor(split.eval_users, device=device)

    @torch.no_grad()
    def bound() -> None:  # what any full ranking must do: every score once, plus a top-50 per user
        items = bpr.item_embeddings()
        for start in range(0, users_all.numel(), 512):
            torch.topk(bpr.user_emb(users_all[start:start + 512]) @ items.T, 50, dim=1)

    bound_times = timed(bound, args.repeats)
    rows.append(("BPR bound: user x item matmul + top-50, 512-user blocks", f"{users_all.numel()} users x {n_items} "
                 "items", fmt(bound_times)))
    bpr_ratio = statistics.median(times_of["BPR"]) / statistics.median(bound_times)
    users = torch.arange(min(args.naive_users, n_users), device=device)
    with torch.no_grad():
        split_times = timed(lambda: neumf.score_all(users), args.repeats)
        naive_times = timed(lambda: neumf.score_all_naive(users), args.repeats)
    rows.append(("NeuMF score_all, split first layer", f"{users.numel()} users x {n_items} items", fmt(split_times)))
    rows.append(("NeuMF score_all, naive per-pair MLP", f"{users.numel()} users x {n_items} items", fmt(naive_times)))
    ratio = statistics.median(naive_times) / statistics.median(split_times)
    print(f"# Evaluation speed, {args.dataset}, {device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads), {args.repeats} repeats\n")
    print("| what | size | seconds min / median / max |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    print(f"\nBPR full-ranking evaluation / bound (median): {bpr_ratio:.2f}x (target <= 1.3x)")
    print(f"NeuMF naive / split (median): {ratio:.1f}x")


if __name__ == "__main__":
    main()
