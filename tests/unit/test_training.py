import json

import numpy as np
import pytest
import torch

from shared.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from shared.device import resolve_device
from shared.interactions import ItemSets
from shared.models import BPR, NeuMF
from shared.sampling import TripletSampler, sample_negatives
from shared.training import TrainConfig, fit


def test_early_stopping_restores_the_best_epoch():
    model = BPR(4, 6, dim=2)
    train = ItemSets.from_lists([[0], [1], [2], [3]], 6)
    scripted = iter([0.1, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    snapshots = {}

    def validate():
        value = next(scripted)
        snapshots[value] = model.user_emb.weight.detach().clone()
        return {"NDCG@50": value}

    result = fit(model, TripletSampler(train, 2), validate, TrainConfig(epochs=20, lr=0.1, patience=3, progress=False))
    assert result.best_epoch == 1
    assert result.stopped_early and result.epochs_run == 4
    torch.testing.assert_close(model.user_emb.weight, snapshots[0.5])


def test_nan_loss_raises_with_a_remedy():
    model = BPR(2, 3, dim=2)
    train = ItemSets.from_lists([[0], [1]], 3)
    with pytest.raises(FloatingPointError, match="lower learning rate"):
        fit(
            model,
            TripletSampler(train, 2),
            None,
            TrainConfig(epochs=1, progress=False),
            loss_fn=lambda batch: torch.tensor(float("nan"), requires_grad=True),
        )


def test_selection_metric_missing_is_reported():
    model = BPR(2, 3, dim=2)
    with pytest.raises(KeyError, match="HR@50"):
        fit(
            model,
            TripletSampler(ItemSets.from_lists([[0], [1]], 3), 2),
            lambda: {"NDCG@50": 0.0},
            TrainConfig(epochs=1, metric="HR@50", progress=False),
        )


def test_same_seed_same_result():
    train = ItemSets.from_lists([[0, 1], [2], [3, 4]], 6)

    def run():
        torch.manual_seed(3)
        model = BPR(3, 6, dim=4)
        fit(model, TripletSampler(train, 2), None, TrainConfig(epochs=3, seed=7, progress=False))
        return model.item_emb.weight.detach().clone()

    torch.testing.assert_close(run(), run())


def test_negatives_avoid_positives():
    rng = np.random.default_rng(0)
    positives = ItemSets.from_lists([[0, 1, 2], [3]], 5)
    users = np.array([0] * 500 + [1] * 500)
    negatives = sample_negatives(users, positives, rng)
    assert not positives.contains(users, negatives).any()
    assert set(negatives[:500]) == {3, 4}


def _epoch_pairs(sampler: TripletSampler, epoch: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    return [(int(u), int(i)) for b in sampler(epoch, rng) for u, i in zip(b.users, b.pos_items, strict=True)]


def test_an_epoch_without_a_cap_yields_every_pair_once():
    train = ItemSets.from_lists([[0, 1, 2], [3], [1, 4]], 6)
    pairs = _epoch_pairs(TripletSampler(train, batch_size=2), 0, np.random.default_rng(0))
    assert sorted(pairs) == [(0, 0), (0, 1), (0, 2), (1, 3), (2, 1), (2, 4)]


def test_pairs_per_epoch_draws_that_many_distinct_pairs_afresh_each_epoch():
    train = ItemSets.from_lists([list(range(k, 40 + k)) for k in range(10)], 60)  # 400 pairs
    sampler = TripletSampler(train, batch_size=32, pairs_per_epoch=100)
    assert len(sampler) == 4  # ceil(100 / 32) batches
    rng = np.random.default_rng(0)
    first, second = _epoch_pairs(sampler, 0, rng), _epoch_pairs(sampler, 1, rng)
    everything = set(zip(*train.to_pairs(), strict=True))
    for pairs in (first, second):
        assert len(pairs) == 100 and len(set(pairs)) == 100  # without replacement
        assert set(pairs) <= everything
    assert set(first) != set(second)
    # over many epochs every pair is drawn about equally often (uniform): 100 / 400 of the epochs each
    counts = {}
    for epoch in range(200):
        for pair in _epoch_pairs(sampler, epoch, rng):
            counts[pair] = counts.get(pair, 0) + 1
    assert len(counts) == 400 and 25 <= min(counts.values()) and max(counts.values()) <= 80


def test_a_cap_above_the_pair_count_changes_nothing():
    train = ItemSets.from_lists([[0, 1], [2]], 4)
    capped = TripletSampler(train, batch_size=2, pairs_per_epoch=10)
    plain = TripletSampler(train, batch_size=2)
    assert len(capped) == len(plain) == 2
    assert _epoch_pairs(capped, 0, np.random.default_rng(3)) == _epoch_pairs(plain, 0, np.random.default_rng(3))
    with pytest.raises(ValueError, match="pairs_per_epoch"):
        TripletSampler(train, pairs_per_epoch=0)


def test_a_user_who_has_every_item_cannot_get_a_negative():
    positives = ItemSets.from_lists([[0, 1]], 2)
    with pytest.raises(ValueError, match="user 0"):
        sample_negatives(np.array([0]), positives, np.random.default_rng(0), max_rounds=3)


@pytest.mark.parametrize("model", [BPR(3, 5, dim=4), NeuMF(3, 5, dim_gmf=2, dim_mlp=3, hidden=[4, 2])])
def test_checkpoint_round_trip(tmp_path, model):
    save_checkpoint(tmp_path / "ckpt", model, {"item_ids": ["a", "b", "c", "d", "e"]})
    loaded, config = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded) is type(model)
    assert config["metadata"]["item_ids"][0] == "a"
    torch.testing.assert_close(loaded.score_all(torch.arange(3)), model.score_all(torch.arange(3)))
    assert not list((tmp_path / "ckpt").glob(".*"))  # no temporary files left behind


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        read_checkpoint_config(tmp_path)
    (tmp_path / "config.json").write_text("{\n  bad")
    with pytest.raises(ValueError, match="line 2"):
        read_checkpoint_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="unsupported"):
        read_checkpoint_config(tmp_path)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type in {"cpu", "cuda"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
