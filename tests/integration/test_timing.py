"""`gdrec-lab timing` (experiments.timing): T / M / S timed in one process, interleaved, and fig3 drawn from it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from experiments.cli import full_app
from experiments.results import TimingRow
from experiments.selection import one_run_times
from experiments.timing import interleaved_seconds, sized_models
from tests.conftest import write_users_dat

TEACHER = '{"model": {"dim": 20, "reg": 0.001}, "lr": 0.02}'


def flat(output: str) -> str:
    """A CLI error as one line: rich draws it in a box and wraps it at the terminal's width."""
    return " ".join(output.replace("│", " ").split())


class Recorder(torch.nn.Module):
    """Stands in for a model: records the order of its `score_all` calls."""

    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__()
        self.name, self.calls, self.n_users = name, calls, 10

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        self.calls.append(self.name)
        return torch.zeros(len(users), 3)


def test_rounds_rotate_the_order_after_one_untimed_call_each():
    calls: list[str] = []
    models = {1.0: Recorder("T", calls), 0.5: Recorder("M", calls), 0.3: Recorder("S", calls)}
    seconds = interleaved_seconds(models, batch_users=4, rounds=4, device=torch.device("cpu"))
    assert calls == ["T", "M", "S"] + ["T", "M", "S", "M", "S", "T", "S", "T", "M", "T", "M", "S"]
    assert {size: len(found) for size, found in seconds.items()} == {1.0: 4, 0.5: 4, 0.3: 4}
    assert all(s >= 0 for found in seconds.values() for s in found)


def test_sized_models_are_the_runners_architectures_at_each_fraction():
    models = sized_models("x.dat", "bpr", 40, 30, [0.5, 0.3], teacher=json.loads(TEACHER))
    params = {size: sum(p.numel() for p in m.parameters()) for size, m in models.items()}
    assert params[1.0] == (40 + 30) * 20
    assert params[0.5] == (40 + 30) * 10
    assert params[0.3] == (40 + 30) * 6


def test_one_run_times_takes_the_latest_run_of_the_model_and_dataset():
    def row(run, fraction, seconds, family="bpr", dataset="d", cpu="A"):
        return TimingRow(run=run, fraction=fraction, seconds=seconds, family=family, dataset=dataset, params=10,
                         batch_users=8, rounds=len(seconds), median_seconds=seconds[0], ratio_to_teacher=1.0,
                         machine={"cpu": cpu, "device": "cpu", "torch_threads": 1})

    timings = [row("2026-01-01T00:00:00+00:00", 1.0, [1.0]), row("2026-01-01T00:00:00+00:00", 0.5, [0.5]),
               row("2026-02-01T00:00:00+00:00", 1.0, [0.002, 0.004], cpu="B"),
               row("2026-02-01T00:00:00+00:00", 0.5, [0.001], cpu="B"),
               row("2026-03-01T00:00:00+00:00", 1.0, [9.0], family="neumf"),
               row("2026-04-01T00:00:00+00:00", 1.0, [9.0], dataset="other")]
    assert one_run_times(timings, "bpr", "d") == ("B (cpu, 1 threads)", {1.0: [2.0, 4.0], 0.5: [1.0]})
    assert one_run_times(timings, "mf", "d") == (None, {})


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "users.dat"
    write_users_dat(path, n_users=40, n_items=30)
    return path


def test_timing_command_appends_one_run_and_the_report_draws_fig3_from_it(tmp_path, data):
    cli = CliRunner()
    out = tmp_path / "reports" / "inference.jsonl"
    args = ["timing", "--dataset", str(data), "--fractions", "0.5,0.3", "--rounds", "3", "--batch-users", "8",
            "--device", "cpu", "--out", str(out)]
    result = cli.invoke(full_app(), args + ["--models", "bpr", "--teacher-json", TEACHER])
    assert result.exit_code == 0, result.output
    assert "| bpr | 50% |" in result.output
    neumf = cli.invoke(full_app(), args + ["--models", "neumf"])  # the family's preset architecture
    assert neumf.exit_code == 0, neumf.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["family"], r["fraction"]) for r in rows) == [
        ("bpr", 0.3), ("bpr", 0.5), ("bpr", 1.0), ("neumf", 0.3), ("neumf", 0.5), ("neumf", 1.0)]
    assert len({r["run"] for r in rows if r["family"] == "bpr"}) == 1
    assert all(len(r["seconds"]) == 3 and r["batch_users"] == 8 for r in rows)
    teacher = {r["family"]: r for r in rows if r["fraction"] == 1.0}
    assert teacher["bpr"]["ratio_to_teacher"] == 1.0 and teacher["bpr"]["params"] == (40 + 30) * 20
    for family in ("bpr", "neumf"):
        small = next(r for r in rows if r["family"] == family and r["fraction"] == 0.3)
        assert small["params"] == pytest.approx(0.3 * teacher[family]["params"], rel=0.02)

    results = tmp_path / "results.jsonl"
    results.write_text("")
    report = cli.invoke(full_app(), ["report", "--results", str(results), "--out", str(out.parent)])
    assert report.exit_code == 0, report.output
    assert (out.parent / "fig3.png").is_file()
    missing = cli.invoke(full_app(), ["report", "--results", str(results), "--out", str(tmp_path / "r"),
                                      "--timings", str(tmp_path / "none.jsonl")])
    assert missing.exit_code != 0 and "none.jsonl (--timings)" in flat(missing.output)


def test_timing_command_rejects_bad_options_with_a_clear_message(data):
    cli = CliRunner()
    base = ["timing", "--dataset", str(data), "--device", "cpu"]
    bad_model = cli.invoke(full_app(), base + ["--models", "mf"])
    assert bad_model.exit_code != 0 and "unknown model(s) mf" in flat(bad_model.output)
    bad_json = cli.invoke(full_app(), base + ["--teacher-json", "{dim: 3"])
    assert bad_json.exit_code != 0 and "not valid JSON" in flat(bad_json.output)
    bad_fraction = cli.invoke(full_app(), base + ["--fractions", "half"])
    assert bad_fraction.exit_code != 0 and "comma-separated numbers" in flat(bad_fraction.output)
    whole = cli.invoke(full_app(), base + ["--fractions", "1.5"])
    assert whole.exit_code != 0 and "between 0 and 1" in flat(whole.output)
    wrong_model = cli.invoke(full_app(), base + ["--models", "neumf", "--teacher-json", TEACHER])
    assert wrong_model.exit_code != 0 and "neumf:" in flat(wrong_model.output)
