"""Resumable training (shared.training, `TrainConfig.checkpoint_dir`): a run interrupted after a saved epoch and
started again ends exactly as the uninterrupted run, for the plain loop, the NeuMF pre-training chain and the KD
baselines whose samplers keep state between epochs (CD's top lists, BD's sampling pools)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import shared.training as training
from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import Pretraining, train_base_model
from experiments.baselines import train_kd_student
from shared.distillation import DistillConfig, distill_student
from shared.models import config_at_fraction
from shared.training import TrainConfig
from tests.unit.test_baselines import FAMILIES, board_split
from tests.unit.test_export_distill import make_export

CONFIG = TrainConfig(epochs=12, lr=0.02, eval_every=2, patience=0, progress=False, metric="HR@5",
                     checkpoint_every_s=0)


class Interrupted(Exception):
    pass


@pytest.fixture
def interrupt_after(monkeypatch):
    """interrupt_after(n): the n-th mid-run save is written, then the run dies (as a killed process would)."""
    save = training._Checkpoint.save

    def arm(n: int):
        count = {"saves": 0}

        def dying_save(self, state):
            save(self, state)
            if not state["finished"]:
                count["saves"] += 1
                if count["saves"] == n:
                    monkeypatch.setattr(training._Checkpoint, "save", save)
                    raise Interrupted(f"killed after epoch {state['epoch']}")

        monkeypatch.setattr(training._Checkpoint, "save", dying_save)

    return arm


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def teacher_run(split: LeaveOneOutSplit, config: TrainConfig, family: str = "bpr", pretrain=None):
    return train_base_model(split, family, FAMILIES[family], config, batch_size=64, pretrain=pretrain)


def test_an_interrupted_fit_resumes_and_ends_as_the_uninterrupted_run(tmp_path, interrupt_after, caplog):
    split = board_split()
    plain = teacher_run(split, CONFIG)
    resumable = replace(CONFIG, checkpoint_dir=str(tmp_path))
    interrupt_after(5)  # epoch 5: between two evaluations, after the best weights have been kept
    with pytest.raises(Interrupted, match="after epoch 5"):
        teacher_run(split, resumable)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    with caplog.at_level("INFO", logger="shared.training"):
        resumed = teacher_run(split, resumable)
    assert "resuming after epoch 5" in caplog.text
    assert same_state(resumed.model, plain.model)
    assert resumed.train.best_epoch == plain.train.best_epoch and resumed.valid == plain.valid
    assert resumed.train.history == plain.train.history  # the epochs before the interruption are kept too
    assert resumed.test == plain.test


def test_a_finished_fit_is_restored_without_training_and_other_settings_start_over(tmp_path, monkeypatch, caplog):
    split = board_split()
    resumable = replace(CONFIG, checkpoint_dir=str(tmp_path))
    first = teacher_run(split, resumable)
    assert first.train.epochs_run == CONFIG.epochs
    with caplog.at_level("INFO", logger="shared.training"):
        again = teacher_run(split, resumable)
    assert "finished before" in caplog.text
    assert same_state(again.model, first.model) and again.train.history == first.train.history
    assert again.train.seconds == first.train.seconds

    caplog.clear()
    other = teacher_run(split, replace(resumable, lr=0.01))  # another run: its own file, trained from the start
    assert "finished before" not in caplog.text and "resuming" not in caplog.text
    assert not same_state(other.model, first.model)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_a_damaged_checkpoint_is_ignored_with_a_warning(tmp_path, interrupt_after, caplog):
    split = board_split()
    resumable = replace(CONFIG, checkpoint_dir=str(tmp_path))
    interrupt_after(3)
    with pytest.raises(Interrupted):
        teacher_run(split, resumable)
    (saved,) = tmp_path.glob("*.pt")
    saved.write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING", logger="shared.training"):
        run = teacher_run(split, resumable)
    assert "unreadable training checkpoint" in caplog.text and str(saved) in caplog.text
    assert same_state(run.model, teacher_run(split, CONFIG).model)


def test_the_neumf_pretraining_chain_repeats_no_finished_branch(tmp_path, interrupt_after, monkeypatch):
    split = board_split()
    pretrain = Pretraining(mlp_reg=1e-4, finetune_lr=0.01)
    plain = teacher_run(split, CONFIG, "neumf", pretrain)
    resumable = replace(CONFIG, checkpoint_dir=str(tmp_path))
    interrupt_after(2 * (CONFIG.epochs - 1) + 4)  # both branches ran through; NeuMF itself dies after epoch 4
    with pytest.raises(Interrupted, match="after epoch 4"):
        teacher_run(split, resumable, "neumf", pretrain)
    assert len(list(tmp_path.glob("*.pt"))) == 3  # the two branches' final records and NeuMF's partial state

    trained_epochs = []
    loop = training.fit

    def counting_fit(model, batches, *args, **kwargs):
        def counted(epoch, rng):
            trained_epochs.append(epoch)
            return batches(epoch, rng)
        return loop(model, counted, *args, **kwargs)

    monkeypatch.setattr("data_owner.teacher.fit", counting_fit)
    resumed = teacher_run(split, resumable, "neumf", pretrain)
    assert trained_epochs == list(range(5, CONFIG.epochs + 1))  # only NeuMF's remaining epochs
    assert same_state(resumed.model, plain.model) and resumed.test == plain.test
    assert resumed.train.history == plain.train.history  # the losses of the epochs after the interruption too
    assert resumed.extra["pretrain"] == plain.extra["pretrain"] | {
        name: {**plain.extra["pretrain"][name], "seconds": resumed.extra["pretrain"][name]["seconds"]}
        for name in ("gmf", "mlp")}


@pytest.mark.parametrize("method", ["rd", "cd", "bd"])
def test_a_kd_student_resumes_mid_period_exactly(tmp_path, interrupt_after, method):
    split = board_split()
    teacher = teacher_run(split, replace(CONFIG, epochs=10)).model
    student_config = config_at_fraction("bpr", FAMILIES["bpr"], split.n_users, split.n_items, 0.5,
                                        tolerance=0.1).config
    # CD is guided by the student and refreshes its lists every 4 epochs, BD its pools: epoch 6 is mid-period
    options = {"rd": {"warmup_epochs": 3, "probe_items": 10}, "cd": {"top_n": 5, "refresh_every": 4},
               "bd": {"refresh_every": 4}}[method]

    def run(config):
        return train_kd_student(method, split, teacher, student_config, config, kd_weight=0.5, temperature=2.0,
                                batch_size=64, options=options)

    plain = run(CONFIG)
    resumable = replace(CONFIG, checkpoint_dir=str(tmp_path))
    interrupt_after(6)
    with pytest.raises(Interrupted, match="after epoch 6"):
        run(resumable)
    resumed = run(resumable)
    assert same_state(resumed.model, plain.model)
    assert resumed.train.history == plain.train.history and resumed.test == plain.test
    if method == "bd":
        assert same_state(resumed.extra["teacher"], plain.extra["teacher"])


def test_the_gd_student_resumes_exactly(tmp_path, interrupt_after):
    export, _, _ = make_export(n_items=40, length=12)
    config = DistillConfig(epochs=12, lr=0.05, eval_every=2, patience=0, batch_size=64, progress=False,
                           checkpoint_every_s=0)
    plain = distill_student(export, config)
    resumable = replace(config, checkpoint_dir=str(tmp_path))
    interrupt_after(7)
    with pytest.raises(Interrupted, match="after epoch 7"):
        distill_student(export, resumable)
    resumed = distill_student(export, resumable)
    assert same_state(resumed.model, plain.model) and resumed.train.history == plain.train.history


def test_the_gd_student_does_not_resume_the_state_of_other_data_or_settings(tmp_path, interrupt_after, caplog):
    export, _, _ = make_export(n_items=40, length=12)
    config = DistillConfig(epochs=12, lr=0.05, eval_every=2, patience=0, batch_size=64, progress=False,
                           checkpoint_dir=str(tmp_path), checkpoint_every_s=0)
    interrupt_after(5)
    with pytest.raises(Interrupted):
        distill_student(export, config)
    # same manifest and shapes, other soft targets: only the content hash tells the exports apart
    users = [r.model_copy(update={"soft_targets": [round(q * 0.9, 6) for q in r.soft_targets]}) for r in export.users]
    relabelled = export.model_copy(update={"users": users})
    for other_export, other in [(relabelled, config), (export, replace(config, lam=0.3)),
                                (export, replace(config, temperature=3.0)), (export, replace(config, batch_size=32))]:
        caplog.clear()
        with caplog.at_level("INFO", logger="shared.training"):
            run = distill_student(other_export, other)
        assert "resuming" not in caplog.text and "finished before" not in caplog.text
        assert same_state(run.model, distill_student(other_export, replace(other, checkpoint_dir=None)).model)
    with caplog.at_level("INFO", logger="shared.training"):
        distill_student(export, config)  # the interrupted run's own state is still there
    assert "resuming after epoch 5" in caplog.text


class DropoutScorer(torch.nn.Module):
    """A model whose loss draws from the torch generator of its device (dropout) on every step."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(20, 8)
        self.out = torch.nn.Linear(8, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        self.drop = torch.nn.Dropout(0.5)

    def loss(self, batch) -> torch.Tensor:
        logits = self.out(self.drop(self.emb(batch.items))).squeeze(1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)


class ItemBatch:
    def __init__(self, items: torch.Tensor, labels: torch.Tensor) -> None:
        self.items, self.labels = items, labels

    def to(self, device):
        return ItemBatch(self.items.to(device), self.labels.to(device))


def item_batches(epoch, rng):
    for _ in range(3):
        items = rng.integers(0, 20, size=32)
        yield ItemBatch(torch.from_numpy(items), torch.from_numpy((items % 2).astype(np.float32)))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_dropout_draws_continue_exactly_after_a_resume(tmp_path, interrupt_after, device):
    config = replace(CONFIG, epochs=8)
    plain = DropoutScorer()
    training.fit(plain, item_batches, None, config, device=device)
    resumable = replace(config, checkpoint_dir=str(tmp_path))
    interrupt_after(3)
    with pytest.raises(Interrupted, match="after epoch 3"):
        training.fit(DropoutScorer(), item_batches, None, resumable, device=device)
    torch.manual_seed(1234)  # whatever ran in between moved the global generators
    if device == "cuda":
        torch.cuda.manual_seed(1234)
    resumed = DropoutScorer()
    training.fit(resumed, item_batches, None, resumable, device=device)
    assert same_state(resumed, plain)


def test_a_state_saved_on_another_kind_of_device_resumes_with_a_warning(tmp_path, interrupt_after, caplog):
    resumable = replace(CONFIG, epochs=6, checkpoint_dir=str(tmp_path))
    interrupt_after(2)
    with pytest.raises(Interrupted):
        training.fit(DropoutScorer(), item_batches, None, resumable)
    (saved,) = tmp_path.glob("*.pt")
    state = torch.load(saved, weights_only=True)
    training.atomic_torch_save(saved, {**state, "device_type": "cuda", "cuda_rng": torch.zeros(16, dtype=torch.uint8)})
    with caplog.at_level("INFO", logger="shared.training"):
        result = training.fit(DropoutScorer(), item_batches, None, resumable)
    assert "resuming after epoch 2" in caplog.text and "the saved state was trained on cuda, this run is on cpu" in \
        caplog.text and result.epochs_run == 6
