"""Benchmark: the owner's KD teacher on a dataset without a preset, (a) with its settings searched on the validation
item (what `gdrec-owner train` does with no flags), (b) with the family's default settings (`--no-tune`), against
(c) `implicit`'s BPR (CPU, one thread) with its factors, regularization, learning rate and iterations chosen on the
same validation items from a small grid. One leave-one-out split (the owner's), full ranking with the user's training
items excluded, scored by `shared.evaluation.evaluate` for all three.

    OMP_NUM_THREADS=1 python -m bench.teacher_tuning [--dataset PATH] [--tune-budget 900] [--grid small|quick]

Needs the `bench` extra (`pip install -e '.[bench]'`: implicit). Prints a markdown table: parameters, validation and
test HR@50 / NDCG@50 and seconds of each, and the ratio (a)/(c) of test HR@50 (target >= 0.95)."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from data_owner import stages
from data_owner.config import OPTIMIZERS, TEACHER_EPOCHS, ChainConfig, TeacherTuning, product_optimizer
from data_owner.data import LeaveOneOutSplit
from data_owner.pipeline import load_split
from shared.evaluation import evaluate

CITEULIKE_A = "/work/datasets-extra/citeulike-a/users.dat"
KS = (50,)
GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "small": {"factors": (32, 64), "regularization": (1e-2, 1e-3, 1e-4), "learning_rate": (0.01, 0.05)},
    "quick": {"factors": (64,), "regularization": (1e-2,), "learning_rate": (0.05,)},
}
ITERATION_STEP = 50  # implicit's iterations are chosen among multiples of this, on validation


@dataclass
class Row:
    name: str
    settings: str
    params: int
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float


def owner_teacher(split: LeaveOneOutSplit, config: ChainConfig) -> Row:
    """The owner's KD teacher as its chain trains it: the search first when the config tunes, then the teacher."""
    device = torch.device("cpu")
    started = time.perf_counter()
    note = ""
    if config.tunes_teacher:
        tuning = stages.tuned_teacher_settings(split, split, config, device)
        config = replace(config, teacher=tuning.settings, tune=False)
        note = f" ({len(tuning.trials)} trials, {tuning.seconds:.0f} s of search)"
    run = stages.kd_teacher(split, split, config, device)
    teacher = config.teacher_settings
    return Row("(a) owner, tuned" if note else "(b) owner, --no-tune",
               f"{teacher.model} lr {teacher.lr:g} {teacher.optimizer}"
               + (f" ({teacher.negatives} negatives)" if teacher.optimizer == "sgd" else "")
               + f", best epoch {run.train.best_epoch}{note}",
               run.model.num_parameters(), run.valid, run.test, time.perf_counter() - started)


def implicit_bpr(split: LeaveOneOutSplit, grid: dict[str, tuple[Any, ...]], max_iterations: int, seed: int) -> Row:
    """implicit's BPR, one thread, every grid point trained in steps of ITERATION_STEP iterations (a fit continues
    from the factors it holds), validated after each step; the best (settings, iterations) on validation HR@50 is
    scored on test. Early stop per grid point after 2 steps without gain."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    users = split.eval_users
    rows = split.train.user_of_each_entry()
    user_items = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, split.train.indices)),
                               shape=(split.n_users, split.n_items))
    started = time.perf_counter()
    best: tuple[float, dict[str, Any], np.ndarray, np.ndarray] | None = None
    for factors, reg, lr in itertools.product(grid["factors"], grid["regularization"], grid["learning_rate"]):
        model = BayesianPersonalizedRanking(factors=factors, learning_rate=lr, regularization=reg,
                                            iterations=ITERATION_STEP, num_threads=1, random_state=seed)
        point_best, stale, iterations = -1.0, 0, 0
        while iterations < max_iterations and stale < 2:
            model.fit(user_items, show_progress=False)
            iterations += ITERATION_STEP
            user_f, item_f = np.asarray(model.user_factors), np.asarray(model.item_factors)
            valid = evaluate(scorer(user_f, item_f), users, split.valid_item[users], exclude=[split.train], ks=KS)
            logging.info("implicit factors %d reg %g lr %g iterations %d: valid HR@50 %.4f", factors, reg, lr,
                         iterations, valid["HR@50"])
            if valid["HR@50"] > point_best:
                point_best, stale = valid["HR@50"], 0
                if best is None or valid["HR@50"] > best[0]:
                    best = (valid["HR@50"], {"factors": factors, "regularization": reg, "learning_rate": lr,
                                             "iterations": iterations}, user_f.copy(), item_f.copy())
            else:
                stale += 1
    assert best is not None
    _, chosen, user_f, item_f = best
    score = scorer(user_f, item_f)
    valid = evaluate(score, users, split.valid_item[users], exclude=[split.train], ks=KS).metrics
    test = evaluate(score, users, split.test_item[users], exclude=[split.train], exclude_items=[split.valid_item],
                    ks=KS).metrics
    return Row("(c) implicit BPR", str(chosen), int(user_f.size + item_f.size), valid, test,
               time.perf_counter() - started)


def scorer(user_factors: np.ndarray, item_factors: np.ndarray):
    """score_all for shared.evaluation: users [B] -> user_factors[users] @ item_factors.T (the bias column included)."""
    users_t, items_t = torch.from_numpy(user_factors), torch.from_numpy(item_factors)
    return lambda users: users_t[users.cpu()] @ items_t.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=CITEULIKE_A, help="a dataset path (or name) without a teacher preset")
    parser.add_argument("--family", default="bpr", choices=("bpr", "neumf"))
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                        help="the teacher's optimizer (default: the product's, sgd for BPR, adam for NeuMF)")
    parser.add_argument("--tune-budget", type=float, default=TeacherTuning().budget_s, help="seconds of search")
    parser.add_argument("--tune-trials", type=int, default=TeacherTuning().n_trials)
    parser.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS)
    parser.add_argument("--grid", default="small", choices=sorted(GRIDS), help="implicit's grid")
    parser.add_argument("--implicit-iterations", type=int, default=500, help="at most this many BPR iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (implicit always uses one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every trial and epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("data_owner.tuning").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    split = load_split(args.dataset)
    config = ChainConfig(dataset=args.dataset, family=args.family, seed=args.seed, teacher_epochs=args.teacher_epochs,
                         teacher_optimizer=args.optimizer or product_optimizer(args.family),
                         tuning=TeacherTuning(budget_s=args.tune_budget, n_trials=args.tune_trials), device="cpu",
                         progress=False)
    if not config.tunes_teacher:
        raise SystemExit(f"{args.dataset} has a teacher preset for {args.family}; give a dataset without one")
    rows = [owner_teacher(split, config), owner_teacher(split, replace(config, tune=False)),
            implicit_bpr(split, GRIDS[args.grid], args.implicit_iterations, args.seed)]
    print(f"{split.summary()}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, torch {torch.__version__} on {args.threads} thread(s), "
          f"tuning budget {args.tune_budget:.0f} s, teacher epochs <= {args.teacher_epochs}, implicit grid "
          f"{args.grid}\n")
    print("| teacher | settings | parameters | valid HR@50 | test HR@50 | test NDCG@50 | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row.name} | {row.settings} | {row.params:,} | {row.valid['HR@50']:.4f} | {row.test['HR@50']:.4f} | "
              f"{row.test['NDCG@50']:.4f} | {row.seconds:.0f} |")
    ratio = rows[0].test["HR@50"] / rows[2].test["HR@50"]
    print(f"\n(a)/(c) test HR@50: {ratio:.3f} (target >= 0.95: {'met' if ratio >= 0.95 else 'not met'})")


if __name__ == "__main__":
    main()
