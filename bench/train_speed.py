"""Benchmark: the owner's BPR teacher against `implicit`'s BPR, side by side in one run on the same leave-one-out
split, one thread each.

    GDREC_DATA_DIR=../shared/datasets python -m bench.train_speed [--datasets ml-100k,citeulike-t] [--epochs 3]

For each dataset it prints (markdown):
- seconds per training epoch (min / median / max over `--epochs` epochs, no validation) of the project's BPR with the
  product's preset (`--optimizer sgd`, the default: per-triple SGD, `data_owner.bpr_sgd`, compiled once before the
  clock starts; `--optimizer adam`: the paper's Adam on batches), against one `implicit` iteration (same number of
  factors);
- time to the selected teacher: the owner's KD teacher schedule (data_owner.config: validation every EVAL_EVERY
  epochs, PATIENCE evaluations without gain, best epoch restored) against `implicit` trained EVAL_EVERY iterations at
  a time under the same selection rule, with its learning rate and regularisation chosen on validation from a small
  grid (the time of the chosen setting's run is compared, as the preset's own search is not counted), each with its
  test HR@50 / NDCG@50 (full ranking, training items and the validation item excluded, `shared.evaluation` for both);
- the ratios project / implicit.
`implicit` is the optional extra `bench` (pip install -e '.[bench]')."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from data_owner.bpr_sgd import BPRSGDEpochs
from data_owner.config import BATCH_SIZE, EVAL_EVERY, PATIENCE, TEACHER_EPOCHS, teacher_preset
from data_owner.data import LeaveOneOutSplit, leave_one_out_split, load_dataset
from data_owner.teacher import test_result, train_base_model, validation_result
from shared.models import BPR
from shared.sampling import TripletSampler
from shared.training import TrainConfig, fit


@dataclass
class Selected:
    seconds: float
    epochs: int
    best_epoch: int
    valid_hr: float
    valid_ndcg: float
    test_hr: float
    test_ndcg: float


class Factors(torch.nn.Module):
    """implicit's factors behind the project's scorer contract (score_all), for the project's evaluation."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        super().__init__()
        self.users, self.items = torch.from_numpy(users), torch.from_numpy(items)
        self.device = torch.device("cpu")

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.users[users] @ self.items.T


def csr(split: LeaveOneOutSplit):  # noqa: ANN201 (scipy comes with the bench extra's implicit)
    import scipy.sparse as sp

    users, items = split.train.to_pairs()
    return sp.csr_matrix((np.ones(users.size, np.float32), (users, items)), shape=(split.n_users, split.n_items))


def project_epochs(split: LeaveOneOutSplit, dataset: str, epochs: int, optimizer: str) -> list[float]:
    preset = teacher_preset(dataset, "bpr", optimizer)
    model = BPR(split.n_users, split.n_items, **preset.model)
    sampler = TripletSampler(split.train, batch_size=BATCH_SIZE)
    sgd = BPRSGDEpochs(model, split.train, preset.lr, negatives=preset.negatives) if optimizer == "sgd" else None
    if sgd is not None:
        sgd(0, np.random.default_rng(0))  # compile (or load the cached machine code) before timing
    times: list[float] = []
    for epoch in range(epochs):
        start = time.perf_counter()
        fit(model, sampler, None, TrainConfig(epochs=1, lr=preset.lr, seed=epoch, progress=False), epoch_fn=sgd)
        times.append(time.perf_counter() - start)
    return times


def implicit_model(dim: int, lr: float, reg: float, iterations: int, seed: int):  # noqa: ANN201
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    return BayesianPersonalizedRanking(factors=dim, learning_rate=lr, regularization=reg, iterations=iterations,
                                       num_threads=1, random_state=seed)


def implicit_epochs(split: LeaveOneOutSplit, dim: int, lr: float, reg: float, epochs: int) -> list[float]:
    model, matrix, times = implicit_model(dim, lr, reg, 1, 0), csr(split), []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(matrix, show_progress=False)
        times.append(time.perf_counter() - start)
    return times


def project_selected(split: LeaveOneOutSplit, dataset: str, seed: int, optimizer: str) -> Selected:
    preset = teacher_preset(dataset, "bpr", optimizer)
    config = TrainConfig(epochs=TEACHER_EPOCHS, lr=preset.lr, eval_every=EVAL_EVERY, patience=PATIENCE, seed=seed,
                         progress=False)
    start = time.perf_counter()
    run = train_base_model(split, "bpr", dict(preset.model), config, batch_size=BATCH_SIZE, optimizer=optimizer,
                           negatives=preset.negatives)
    seconds = time.perf_counter() - start
    return Selected(seconds, run.train.epochs_run, run.train.best_epoch, run.valid["HR@50"], run.valid["NDCG@50"],
                    run.test["HR@50"], run.test["NDCG@50"])


def implicit_selected(split: LeaveOneOutSplit, dim: int, lr: float, reg: float, seed: int) -> Selected:
    """implicit trained EVAL_EVERY iterations at a time, validated after each block, stopped after PATIENCE blocks
    without a validation NDCG@50 gain, the best block's factors kept (the owner's selection rule)."""
    start = time.perf_counter()
    model, matrix = implicit_model(dim, lr, reg, EVAL_EVERY, seed), csr(split)
    best, best_factors, best_epoch, stale, epoch = -np.inf, None, 0, 0, 0
    while epoch < TEACHER_EPOCHS and stale < PATIENCE:
        model.fit(matrix, show_progress=False)
        epoch += EVAL_EVERY
        scorer = Factors(model.user_factors, model.item_factors)
        metric = validation_result(scorer, split)["NDCG@50"]  # type: ignore[arg-type]
        if metric > best:
            best, best_epoch, stale = metric, epoch, 0
            best_factors = (model.user_factors.copy(), model.item_factors.copy())
        else:
            stale += 1
    seconds = time.perf_counter() - start
    scorer = Factors(*best_factors)  # type: ignore[misc]
    valid, test = validation_result(scorer, split), test_result(scorer, split)  # type: ignore[arg-type]
    return Selected(seconds, epoch, best_epoch, valid["HR@50"], valid["NDCG@50"], test["HR@50"], test["NDCG@50"])


def spread(times: list[float]) -> str:
    return f"{min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="ml-100k,citeulike-t", help="comma-separated registry names or paths")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed for the per-epoch rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--implicit-lr", default="0.01,0.05,0.1", help="comma-separated; the grid's point with the "
                        "best validation NDCG@50 is the reference (its own run's time is compared; the preset's "
                        "search is not counted either)")
    parser.add_argument("--implicit-reg", default="0.01,0.001", help="comma-separated")
    parser.add_argument("--skip-selected", action="store_true", help="only the per-epoch rows")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="the project's teacher: the product's per-triple SGD preset, or the paper's Adam preset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    machine = platform.processor() or platform.machine()
    print(f"# BPR training speed: project ({args.optimizer}) against implicit, 1 thread each ({machine}"
          f", torch {torch.__version__})\n")
    print("| dataset | what | project | implicit | ratio |")
    print("|---|---|---|---|---|")
    for dataset in args.datasets.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            split = leave_one_out_split(load_dataset(dataset))
        dim = int(teacher_preset(dataset, "bpr", args.optimizer).model["dim"])
        lrs, regs = [float(v) for v in args.implicit_lr.split(",")], [float(v) for v in args.implicit_reg.split(",")]
        ours = project_epochs(split, dataset, args.epochs, args.optimizer)
        theirs = implicit_epochs(split, dim, lrs[0], regs[0], args.epochs)
        print(f"| {dataset} | seconds per epoch (min / median / max), d={dim} | {spread(ours)} | {spread(theirs)} | "
              f"{statistics.median(ours) / statistics.median(theirs):.2f}x |", flush=True)
        if args.skip_selected:
            continue
        a = project_selected(split, dataset, args.seed, args.optimizer)
        grid = {(lr, reg): implicit_selected(split, dim, lr, reg, args.seed) for lr in lrs for reg in regs}
        (lr, reg), b = max(grid.items(), key=lambda kv: kv[1].valid_ndcg)
        print(f"| {dataset} | time to the selected teacher, s (epochs run, best); implicit lr {lr:g}, reg {reg:g} "
              f"chosen on validation from {len(grid)} | {a.seconds:.1f} ({a.epochs}, {a.best_epoch}) | "
              f"{b.seconds:.1f} ({b.epochs}, {b.best_epoch}) | {a.seconds / b.seconds:.2f}x |")
        print(f"| {dataset} | selected teacher test HR@50 / NDCG@50 (valid HR@50) | {a.test_hr:.4f} / "
              f"{a.test_ndcg:.4f} ({a.valid_hr:.4f}) | {b.test_hr:.4f} / {b.test_ndcg:.4f} ({b.valid_hr:.4f}) | "
              f"{a.test_hr / b.test_hr:.2f} |", flush=True)


if __name__ == "__main__":
    main()
