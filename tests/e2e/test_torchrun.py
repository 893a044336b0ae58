"""`gdrec-owner train-teacher` under `torchrun --nproc-per-node 2 --standalone` (two gloo processes on this machine)
against the same command in one process, on a tiny synthetic dataset: the two-process teacher ends with the same
validation metrics (within TOLERANCE) and about the same weights, and rank 0 alone writes the checkpoint, the summary
and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import write_users_dat
from tests.e2e.test_two_services import clean_env

# Measured on this dataset: every metric of the two runs equal, the weights within 1e-6 after 10 epochs (the gradients
# differ only in float summation order). A rank training on the wrong rows or an unscaled loss moves them far more.
TOLERANCE = 0.02
TEACHER = ["train-teacher", "--dataset", "users.dat", "--no-tune", "--model", "bpr", "--dim", "16", "--epochs", "10",
           "--eval-every", "2", "--batch-size", "256", "--lr", "0.01", "--device", "cpu", "--no-progress"]


def train(cwd: Path, out: str, processes: int) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--standalone"] if processes > 1 \
        else []
    env = clean_env(OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, *launcher, "-m", "data_owner.cli", *TEACHER, "--out", out], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{processes} process(es) failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.timeout(240)
@pytest.mark.filterwarnings("ignore:.*has no timestamps:UserWarning")
def test_a_two_process_teacher_matches_the_one_process_teacher(tmp_path):
    write_users_dat(tmp_path / "users.dat", n_users=200, n_items=60)
    one = train(tmp_path, "one", 1)
    two = train(tmp_path, "two", 2)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two", "users.dat"]  # nothing else written
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["config.json", "summary.json", "weights.pt"]
    assert two.stdout.count("checkpoint: two") == 1 and "x 2 processes" in two.stdout  # rank 0 alone reports
    assert "checkpoint: one" in one.stdout and "processes" not in one.stdout
    single = json.loads((tmp_path / "one" / "summary.json").read_text())
    double = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (single["processes"], double["processes"]) == (1, 2)
    assert single["epochs_run"] == double["epochs_run"] == 10
    for part in ("valid", "test"):
        assert single[part].keys() == double[part].keys()
        for metric, value in single[part].items():
            assert abs(double[part][metric] - value) <= TOLERANCE, (part, metric, value, double[part][metric])
    for name, tensor in torch.load(tmp_path / "one" / "weights.pt", weights_only=True).items():
        reference = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)[name]
        torch.testing.assert_close(reference, tensor, rtol=1e-4, atol=1e-4)
