"""One chain: the research harness (`experiments.lab`) and `gdrec-owner train` (`data_owner.pipeline`) run the same
stage functions on the same settings, so for the same data, seed and secret they produce identical artifacts: the
KD and GD teachers' weights, the generated lists, and the export's users and soft targets, with the paper's CGAN
and with another list generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_owner.config import ChainConfig, TeacherSettings
from data_owner.gan import CGANConfig
from data_owner.pipeline import load_export, load_split, run_pipeline
from data_owner.settings import ArtifactLayout
from experiments import lab
from shared.checkpoint import load_checkpoint
from tests.conftest import write_users_dat

SECRET = b"one-chain-test-secret-0123456789abcdef"
TINY = dict(
    family="bpr", teacher=TeacherSettings("bpr", {"dim": 8, "reg": 1e-3}, 0.02), consumer_id="vendor", seed=3,
    list_length=6, teacher_epochs=4, gd_epochs=2, patience=0, eval_every=2, batch_size=128,
    cgan=CGANConfig(hidden_g=(16,), hidden_d=(8,), noise_dim=4, epochs=3, eval_every=1, batch_size=16, g_steps=1,
                    d_steps=1),
    device="cpu", progress=False,
)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name].cpu(), sb[name].cpu()), f"{name} differs"


@pytest.mark.parametrize(("rr_epsilon", "generator"), [(None, "cgan"), (2.0, "cgan"), (None, "itemknn")],
                         ids=["plain", "randomized-response", "itemknn"])
def test_research_chain_and_owner_train_produce_identical_artifacts(tmp_path, rr_epsilon, generator):
    data = tmp_path / "users.dat"
    write_users_dat(data, n_users=40, n_items=30)
    owner_config = ChainConfig(dataset=str(data), rr_epsilon=rr_epsilon, generator=generator, **TINY)
    research_config = lab.LabConfig(dataset=str(data), rr_epsilon=rr_epsilon, generator=generator, **TINY)

    result = run_pipeline(owner_config, tmp_path / "artifacts", SECRET)
    layout = ArtifactLayout(result.artifacts)
    research = lab.run_owner_stages(research_config, load_split(str(data)), torch.device("cpu"), secret=SECRET)

    assert_same_weights(load_checkpoint(layout.stage("kd_teacher"))[0], research.kd.model)
    assert_same_weights(load_checkpoint(layout.stage("gd_teacher"))[0], research.gd.model)
    with np.load(layout.stage("lists") / "lists.npz") as lists:
        assert np.array_equal(lists["items"], research.lists.lists.items)
        assert np.array_equal(lists["scores"], research.lists.lists.scores)
    bundle, _ = load_export(layout)
    assert bundle.users == research.export.users  # tokens, lists and soft targets, exactly
    assert bundle.users and all(record.soft_targets for record in bundle.users)
    assert bundle.manifest.export_id == research.export.manifest.export_id
    assert bundle.manifest.privacy == research.export.manifest.privacy


def test_a_different_seed_gives_a_different_chain(tmp_path):
    """The comparison above is not vacuous: another seed changes the teacher and the export."""
    data = tmp_path / "users.dat"
    write_users_dat(data, n_users=40, n_items=30)
    split, cpu = load_split(str(data)), torch.device("cpu")
    first = lab.run_owner_stages(lab.LabConfig(dataset=str(data), **TINY), split, cpu, secret=SECRET)
    other = lab.run_owner_stages(lab.LabConfig(dataset=str(data), **{**TINY, "seed": 4}), split, cpu, secret=SECRET)
    assert not torch.equal(first.kd.model.state_dict()["user_emb.weight"], other.kd.model.state_dict()[
        "user_emb.weight"])
    assert first.export.users != other.export.users
