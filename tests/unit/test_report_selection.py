"""Hyperparameter selection in the reports: validation only, among the settings run on the most seeds; grid.md."""

from dataclasses import replace

from experiments.results import CellRow
from experiments.selection import select
from experiments.tables import grid, table2
from tests.unit.test_results_rows import grid_row


def row(seed: int, valid: float, test: float, kd_weight: float = 1.0, temperature: float = 2.0,
        method: str = "cd", fraction: float = 0.5) -> CellRow:
    return CellRow.from_dict(grid_row(method=method, fraction=fraction, seed=seed,
                                      hyperparameters={"kd_weight": kd_weight, "temperature": temperature},
                                      valid={"NDCG@50": valid}, test={"HR@50": test, "NDCG@50": test / 2}))


def test_the_best_mean_validation_wins_and_the_test_item_selects_nothing():
    rows = [row(0, 0.10, 0.90, kd_weight=1.0), row(1, 0.12, 0.90, kd_weight=1.0),  # mean valid 0.11, test high
            row(0, 0.13, 0.20, kd_weight=0.1), row(1, 0.11, 0.30, kd_weight=0.1)]  # mean valid 0.12: wins
    chosen = select(rows, "bpr", "cd", 0.5)
    assert chosen.hyperparameters == {"kd_weight": 0.1, "temperature": 2.0}
    assert chosen.candidates == 2 and [r.seed for r in chosen.rows] == [0, 1]
    assert chosen.values("test", "HR@50") == [0.20, 0.30]


def test_a_setting_run_on_fewer_seeds_cannot_win_on_one_lucky_seed():
    rows = [row(s, 0.10, 0.5) for s in range(3)] + [row(0, 0.50, 0.9, kd_weight=0.01)]
    chosen = select(rows, "bpr", "cd", 0.5)
    assert chosen.hyperparameters["kd_weight"] == 1.0
    assert chosen.candidates == 1 and chosen.seeds == 3
    assert select(rows, "bpr", "rd", 0.5) is None


def test_grid_lists_every_setting_marks_the_selected_one_and_the_partial_ones():
    rows = ([row(s, 0.10, 0.5) for s in range(2)] + [row(s, 0.20, 0.4, temperature=5.0) for s in range(2)]
            + [row(0, 0.50, 0.9, kd_weight=0.01)]
            + [row(0, 0.1, 0.3, method="rd", fraction=0.3)])  # a single setting: no grid to show
    text = grid(rows, "d")
    assert "## BPR, CD, M (50%)" in text and "RD" not in text
    lines = [line for line in text.splitlines() if line.startswith("| kd_weight")]
    assert lines == [  # ordered by mean validation NDCG@50
        "| kd_weight 0.01, temperature 2 | 0 | 0.5000 (1 seed) | 0.9000 (1 seed) | 0.4500 (1 seed) "
        "| fewer seeds: not compared |",
        "| kd_weight 1, temperature 5 | 0, 1 | 0.2000 ± 0.0000 | 0.4000 ± 0.0000 | 0.2000 ± 0.0000 | **selected** |",
        "| kd_weight 1, temperature 2 | 0, 1 | 0.1000 ± 0.0000 | 0.5000 ± 0.0000 | 0.2500 ± 0.0000 |  |",
    ]


def test_grid_says_so_when_nothing_had_more_than_one_setting():
    assert "there was no grid to select from" in grid([row(0, 0.1, 0.2)], "d")


def test_grid_compares_gd_temperatures_at_the_papers_lambda():
    def gd(seed, valid, temperature, lam):
        return replace(row(seed, valid, 0.2, method="gd"), hyperparameters={"lambda": lam, "temperature": temperature})
    rows = [gd(0, 0.1, 1.0, 0.7), gd(0, 0.2, 2.0, 0.7), gd(0, 0.9, 2.0, 0.3)]  # lambda 0.3 belongs to fig4
    text = grid(rows, "d")
    assert "lambda 0.3" not in text
    assert "| lambda 0.7, temperature 2 | 0 | 0.2000 (1 seed) |" in text and "**selected**" in text


def test_table2_says_which_gd_sampler_revisions_its_rows_used():
    def gd(seed, revision=None):
        return replace(row(seed, 0.1, 0.2, method="gd"), hyperparameters={"lambda": 0.7, "temperature": 2.0},
                       params=10, teacher_params=20, settings={} if revision is None else {"student_sampler": revision})
    assert "GD student sampler: revision 2 (2 rows)." in table2([gd(0, 2), gd(1, 2)], "d")
    mixed = table2([gd(0), gd(1, 2)], "d")  # a row without the field predates the revision: 1
    assert "revision 1 (1 rows), revision 2 (1 rows) - mixed" in mixed
    assert "GD student sampler" not in table2([replace(row(0, 0.1, 0.2), params=10)], "d")


def test_inference_times_come_from_one_machine_the_one_with_most_rows():
    from experiments.selection import inference_times

    def timed(method: str, fraction: float, seconds: float, cpu: str, family: str = "neumf") -> CellRow:
        return CellRow.from_dict(grid_row(family=family, method=method, fraction=fraction,
                                          inference={"seconds": seconds},
                                          machine={"cpu": cpu, "device": "cpu", "torch_threads": 1}))

    rows = [timed("teacher", 1.0, 0.010, "A"), timed("student", 0.5, 0.004, "A"), timed("cd", 0.5, 0.006, "A"),
            timed("teacher", 1.0, 0.100, "B"), timed("gd", 0.5, 0.050, "B"),  # a slower CPU, fewer rows
            timed("teacher", 1.0, 9.0, "B", family="bpr")]
    machine, times = inference_times(rows, "neumf", [1.0, 0.5, 0.3])
    assert machine == "A (cpu, 1 threads)"
    assert times == {1.0: [10.0], 0.5: [4.0, 6.0]}  # ms; machine B's rows are left out, no row timed 30%
    assert inference_times(rows, "bpr", [1.0, 0.5]) == ("B (cpu, 1 threads)", {1.0: [9000.0]})
    assert inference_times(rows, "mf", [1.0]) == (None, {})
