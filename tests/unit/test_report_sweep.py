"""fig4's lambda sweep: every point averages the same seeds (those that ran the whole sweep)."""

import pytest

from experiments.figures import lambda_sweep
from experiments.results import CellRow
from tests.unit.test_results_rows import grid_row


def gd_row(seed: int, lam: float, hr: float, fraction: float = 0.5, family: str = "bpr") -> CellRow:
    return CellRow.from_dict(grid_row(family=family, method="gd", fraction=fraction, seed=seed,
                                      hyperparameters={"lambda": lam, "temperature": 2.0}, test={"HR@50": hr}))


def test_points_average_only_the_seeds_that_ran_every_lambda():
    rows = [gd_row(0, 0.0, 0.20), gd_row(0, 0.7, 0.30), gd_row(1, 0.0, 0.22), gd_row(1, 0.7, 0.32),
            gd_row(2, 0.7, 0.90), gd_row(3, 0.7, 0.90),  # seeds 2 and 3 ran lambda 0.7 only: left out
            gd_row(0, 0.7, 0.99, fraction=0.3), gd_row(0, 0.7, 0.99, family="neumf")]  # other cells
    xs, ys, errs, seeds = lambda_sweep(rows, "bpr", 0.5)
    assert xs == [0.0, 0.7] and seeds == [0, 1]
    assert ys == pytest.approx([0.21, 0.31])
    assert errs == pytest.approx([0.0141421, 0.0141421], rel=1e-4)  # sample std of two values 0.02 apart


def test_without_a_seed_common_to_all_lambdas_every_seed_counts():
    rows = [gd_row(0, 0.0, 0.2), gd_row(1, 0.5, 0.4)]
    xs, ys, errs, seeds = lambda_sweep(rows, "bpr", 0.5)
    assert (xs, ys, errs, seeds) == ([0.0, 0.5], [0.2, 0.4], [0.0, 0.0], [0, 1])
    assert lambda_sweep(rows, "neumf", 0.5) == ([], [], [], [])
