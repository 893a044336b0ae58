"""Data-parallel training (`shared.distributed`): batch sharding, the no-op helpers outside torchrun, and, with two
gloo processes on this machine, the known answers: the ranks' averaged gradients on their halves of a batch equal
the one-process gradient on the whole batch (BPR with sparse gradients, NeuMF with sparse and dense ones, an odd
batch, a batch with fewer rows than ranks), and `fit` on two ranks keeps identical replicas, validates and writes its
checkpoint on rank 0 only (a rerun restores it on every rank) and ends where the one-process run ends, to float
tolerance."""

from __future__ import annotations

import dataclasses
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shared import distributed
from shared.models import BPR, NeuMF, PairBatch
from shared.sampling import TripletSampler
from shared.training import TrainConfig, fit
from tests.conftest import checkerboard

WORLD = 2


# ------------------------------------------------------------------------------------------------ one process


@dataclasses.dataclass(frozen=True)
class Nested:
    raw: PairBatch
    generated: PairBatch | None
    scale: float = 1.0


def pairs(n: int, offset: int = 0) -> PairBatch:
    users = torch.arange(offset, offset + n)
    return PairBatch(users, users + 100, users + 200)


def test_a_rank_takes_every_world_th_row_of_every_tensor():
    shard = distributed.shard_batch(pairs(5), 1, 2)
    assert shard.users.tolist() == [1, 3] and shard.pos_items.tolist() == [101, 103]
    assert shard.neg_items.tolist() == [201, 203] and isinstance(shard, PairBatch)
    assert distributed.shard_batch(pairs(5), 0, 2).users.tolist() == [0, 2, 4]


def test_nested_batches_tuples_and_empty_fields_are_sharded_field_by_field():
    batch = Nested(pairs(4), None, 2.0)
    shard = distributed.shard_batch(batch, 0, 2)
    assert shard.raw.users.tolist() == [0, 2] and shard.generated is None and shard.scale == 2.0
    users, items = distributed.shard_batch((torch.arange(3), torch.arange(3) * 10), 1, 2)
    assert users.tolist() == [1] and items.tolist() == [10]
    Pair = namedtuple("Pair", "users items")
    named = distributed.shard_batch(Pair(torch.arange(4), torch.arange(4)), 1, 2)
    assert isinstance(named, Pair) and named.items.tolist() == [1, 3]
    assert distributed.batch_rows(batch) == 4 and distributed.batch_rows((torch.zeros(7, 2),)) == 7
    assert distributed.batch_rows(distributed.shard_batch(pairs(1), 1, 2)) == 0


def test_a_batch_that_cannot_be_split_says_how_to_make_it_splittable():
    with pytest.raises(TypeError, match="dataclass .* of tensors .* shard\\(rank, world\\)"):
        distributed.shard_batch({"users": torch.arange(3)}, 0, 2)
    with pytest.raises(TypeError, match="holds no tensor"):
        distributed.batch_rows(("a", "b"))


def test_the_loss_weights_make_the_mean_over_ranks_the_whole_batch_mean():
    rows, world = 5, 2
    terms = torch.arange(rows, dtype=torch.float64)
    shards = [terms[r::world] for r in range(world)]
    scaled = [distributed.shard_weight(s.numel(), rows, world) * s.mean() for s in shards]
    assert torch.isclose(sum(scaled) / world, terms.mean())


def test_outside_torchrun_every_helper_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun() and not distributed.is_active()
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main() and distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.on_main(lambda: 7) == 7
    distributed.barrier()
    with distributed.session("cpu") as device:
        assert device == torch.device("cpu") and not dist.is_initialized()


def test_backends_follow_the_device():
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 0)) == "nccl"


# ------------------------------------------------------------------------------------------------ two processes


def _join(rank: int, rendezvous: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)


def _batches() -> list[PairBatch]:
    g = torch.Generator().manual_seed(3)
    out = []
    for n in (8, 7, 1):  # even, odd, fewer rows than ranks
        out.append(PairBatch(torch.randint(0, 6, (n,), generator=g), torch.randint(0, 9, (n,), generator=g),
                             torch.randint(0, 9, (n,), generator=g)))
    return out


def _models() -> dict[str, torch.nn.Module]:
    return {"bpr": BPR(6, 9, dim=4, reg=0.01), "neumf": NeuMF(6, 9, dim_gmf=3, dim_mlp=4, hidden=(4, 2), reg=0.01)}


def _dense_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone() for name, p in model.named_parameters()
            if p.grad is not None}


def _gradient_worker(rank: int, rendezvous: Path, out: Path) -> None:
    _join(rank, rendezvous)
    torch.manual_seed(0)
    results = {}
    for name, model in _models().items():
        distributed.broadcast_module(model)
        averager = distributed.GradientAverager(model)
        for k, batch in enumerate(_batches()):
            model.zero_grad(set_to_none=True)
            shard = distributed.shard_batch(batch, rank, WORLD)
            rows = distributed.batch_rows(shard)
            loss = None
            if rows:
                loss = model.loss(shard) * distributed.shard_weight(rows, len(batch), WORLD)
                loss.backward()
            value = averager.average(loss, torch.device("cpu"))
            results[f"{name}/{k}"] = {"loss": value, "grads": _dense_grads(model),
                                      "state": {n: t.clone() for n, t in model.state_dict().items()}}
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def _spawn(worker, tmp_path: Path, run: int = 0) -> list:
    mp.spawn(worker, args=(tmp_path / f"rendezvous-{run}", tmp_path), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_averaged_gradients_of_the_shards_equal_the_whole_batch_gradient(tmp_path):
    ranks = _spawn(_gradient_worker, tmp_path)
    torch.manual_seed(0)
    for name, model in _models().items():
        for k, batch in enumerate(_batches()):
            model.load_state_dict(ranks[0][f"{name}/{k}"]["state"])
            model.zero_grad(set_to_none=True)
            loss = model.loss(batch)
            loss.backward()
            expected = _dense_grads(model)
            for got in ranks:
                entry = got[f"{name}/{k}"]
                assert entry["loss"] == pytest.approx(loss.item(), rel=1e-5), (name, k)
                assert entry["grads"].keys() == expected.keys()
                for param, grad in expected.items():
                    torch.testing.assert_close(entry["grads"][param], grad, rtol=1e-5, atol=1e-7,
                                               msg=f"{name} batch {k} {param}")
            for param, grad in ranks[0][f"{name}/{k}"]["grads"].items():  # every rank holds the very same bytes
                assert torch.equal(grad, ranks[1][f"{name}/{k}"]["grads"][param])


def _fit_setup(checkpoint_dir: Path | None):
    train, valid, _ = checkerboard(n_users=40, n_items=20)
    model = BPR(40, 20, dim=8, reg=1e-3)
    with torch.no_grad():
        model.reset_parameters(torch.Generator().manual_seed(1))
    sampler = TripletSampler(train, batch_size=64)
    config = TrainConfig(epochs=6, lr=0.02, eval_every=2, patience=0, metric="HR@5", progress=False,
                         checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir), checkpoint_every_s=0)

    def validate() -> dict[str, float]:
        scores = model.score_all(torch.arange(40))
        scores[torch.from_numpy(train.user_of_each_entry()), torch.from_numpy(train.indices)] = -torch.inf
        top = scores.topk(5, dim=1).indices.numpy()
        return {"HR@5": float((top == valid[:, None]).any(1).mean())}

    return model, sampler, validate, config


def _fit_worker(rank: int, rendezvous: Path, out: Path) -> None:
    _join(rank, rendezvous)
    model, sampler, validate, config = _fit_setup(out / "checkpoints")
    if rank == 1:  # a replica that starts elsewhere takes rank 0's weights
        with torch.no_grad():
            model.reset_parameters(torch.Generator().manual_seed(99))
    calls = []

    def counted() -> dict[str, float]:
        calls.append(1)
        return validate()

    result = fit(model, sampler, counted, config, description="bpr ddp")
    trained = {"state": model.state_dict(), "history": result.history, "best_epoch": result.best_epoch,
               "validations": len(calls)}
    with torch.no_grad():  # a rerun restores the finished run from the record rank 0 wrote, on every rank
        model.reset_parameters(torch.Generator().manual_seed(7 + rank))
    again = fit(model, sampler, counted, config, description="bpr ddp")
    trained["rerun"] = {"state": model.state_dict(), "history": again.history, "validations": len(calls)}
    torch.save(trained, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_train_identical_replicas_that_end_where_one_process_ends(tmp_path):
    ranks = _spawn(_fit_worker, tmp_path)
    for name, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][name]), name
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["best_epoch"] == ranks[1]["best_epoch"]
    assert ranks[0]["validations"] == 4 and ranks[1]["validations"] == 0  # before training, epochs 2, 4, 6
    saved = list((tmp_path / "checkpoints").iterdir())
    assert len(saved) == 1 and torch.load(saved[0], weights_only=True)["finished"]
    for got in ranks:
        assert got["rerun"]["validations"] == got["validations"] and got["rerun"]["history"] == got["history"]
        for name, tensor in got["rerun"]["state"].items():
            assert torch.equal(tensor, ranks[0]["state"][name]), name

    model, sampler, validate, config = _fit_setup(None)
    single = fit(model, sampler, validate, config, description="bpr ddp")
    assert single.best_epoch == ranks[0]["best_epoch"]
    for got, want in zip(ranks[0]["history"], single.history, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], tensor, rtol=1e-4, atol=1e-5)


def _distill_worker(rank: int, rendezvous: Path, out: Path) -> None:
    from model_consumer.settings import ConsumerLayout
    from model_consumer.students import distill_and_publish
    from shared.distillation import DistillConfig
    from tests.unit.test_consumer_pull import synthetic_export

    _join(rank, rendezvous)
    config = DistillConfig(epochs=4, eval_every=2, batch_size=32, reg_factors=(1.0,), progress=False,
                           checkpoint_every_s=0)
    card = distill_and_publish(synthetic_export(), config, ConsumerLayout(out / "consumer"), "cpu", resumable=True)
    torch.save({"card": card.model_dump(mode="json")}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_distill_one_student_that_rank_0_publishes(tmp_path):
    from model_consumer.settings import ConsumerLayout
    from model_consumer.students import current_version

    ranks = _spawn(_distill_worker, tmp_path)
    layout = ConsumerLayout(tmp_path / "consumer")
    assert ranks[0]["card"] == ranks[1]["card"]
    version = ranks[0]["card"]["model_version"]
    assert current_version(layout) == version and ranks[0]["card"]["epochs_run"] == 4
    published = {p.name for p in layout.models.iterdir()}
    assert published == {".publish.lock", "current.json", version}  # one model, no staging left
    assert not any(p.is_dir() for p in layout.training.iterdir())  # the training state went with the publication
