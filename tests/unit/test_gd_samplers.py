"""The GD teacher's joint sampler (raw + generated pairs) and the 100-sampled-negatives protocol's draws."""

import logging

import numpy as np
import pytest

from data_owner.data.split import LeaveOneOutSplit
from data_owner.teacher import JointSampler
from experiments.runner import sampled_negatives
from shared.distillation import GDSampler
from shared.interactions import ItemSets

# ---------------------------------------------------------------------------------------------------------------
# runner.sampled_negatives

# 12 items; user 2 has 3 interactions only in training (no held-out items: not evaluated)
TRAIN = [[0, 1, 2], [5], [0, 1, 2], [3, 4, 6, 7, 8, 9]]
VALID = [3, 6, -1, 10]
TEST = [4, 7, -1, 11]


def make_split(train=TRAIN, valid=VALID, test=TEST, n_items=12):
    return LeaveOneOutSplit(train=ItemSets.from_lists(train, n_items), valid_item=np.array(valid),
                            test_item=np.array(test), user_ids=np.array([f"u{u}" for u in range(len(train))]),
                            item_ids=np.array([f"i{i}" for i in range(n_items)]), has_timestamps=True)


def allowed_items(u, n_items=12):
    return sorted(set(range(n_items)) - set(TRAIN[u]) - {VALID[u], TEST[u]})


def test_sampled_negatives_exclude_train_valid_and_test_without_replacement():
    split = make_split()
    # pools: user 0: 12 - 3 - 2 = 7, user 1: 12 - 1 - 2 = 9, user 3: 12 - 6 - 2 = 4 (the smallest)
    assert allowed_items(3) == [0, 1, 2, 5]
    out = sampled_negatives(split, 4, seed=0)
    assert out.shape == (3, 4) and out.dtype == np.int64  # evaluated users 0, 1, 3 only
    for row, u in zip(out, (0, 1, 3), strict=True):
        assert len(set(row.tolist())) == 4  # without replacement
        assert set(row.tolist()) <= set(allowed_items(u))
    assert sorted(out[2].tolist()) == allowed_items(3)  # 4 of a pool of 4: the whole pool
    # over seeds, every allowed item of user 1 is drawn and nothing else (uniform among the allowed ones)
    drawn = np.concatenate([sampled_negatives(split, 4, seed=s)[1] for s in range(200)])
    counts = np.bincount(drawn, minlength=12)
    assert sorted(np.flatnonzero(counts).tolist()) == allowed_items(1)
    assert counts[allowed_items(1)].min() > 0.6 * 200 * 4 / 9  # each allowed item about 4/9 of the time


def test_sampled_negatives_are_seeded():
    split = make_split()
    np.testing.assert_array_equal(sampled_negatives(split, 4, seed=5), sampled_negatives(split, 4, seed=5))
    assert not np.array_equal(sampled_negatives(split, 4, seed=5), sampled_negatives(split, 4, seed=6))


def test_sampled_negatives_shrink_to_the_smallest_pool_and_refuse_an_empty_one(caplog):
    # asking for more than some user's pool gives every user that pool size, with a warning that says so
    with caplog.at_level(logging.WARNING, logger="gdrec.runner"):
        out = sampled_negatives(make_split(), 100, seed=0)
    assert "4 negatives per user instead of 100" in caplog.text
    assert out.shape == (3, 4)
    assert sorted(out[2].tolist()) == allowed_items(3)
    # a user with every item in train + valid + test: a ValueError that says so (not a crash further on)
    full = make_split(train=[[0, 1], list(range(10))], valid=[2, 10], test=[3, 11])
    with pytest.raises(ValueError, match="no item left to sample a negative from"):
        sampled_negatives(full, 100, seed=0)


# ---------------------------------------------------------------------------------------------------------------
# data_owner.teacher.JointSampler: L_T = L_CF (raw pairs) + L_GF (generated pairs)

N_ITEMS = 12
RAW = [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [0, 2, 4, 6, 8, 10]]
LISTS = [[6, 7, 0], [0, 1, 6], [1, 3, 5]]  # may hold the user's own training items (include_observed)


def pairs(batch):
    return list(zip(batch.users.tolist(), batch.pos_items.tolist(), strict=True))


# (5, None): 4 raw batches but 3 generated ones (9 pairs in batches of ceil(9 / 4) = 3): the last raw batch trains alone
@pytest.mark.parametrize("batch_size,pairs_per_epoch", [(4, None), (18, None), (5, 10), (5, None)])
def test_joint_sampler_yields_raw_and_generated_pairs_with_negatives_outside_list_and_train(batch_size,
                                                                                            pairs_per_epoch):
    train, generated = ItemSets.from_lists(RAW, N_ITEMS), ItemSets.from_lists(LISTS, N_ITEMS)
    sampler = JointSampler(train, generated, batch_size=batch_size, pairs_per_epoch=pairs_per_epoch)
    raw_pairs = {(u, i) for u, row in enumerate(RAW) for i in row}
    gen_pairs = {(u, i) for u, row in enumerate(LISTS) for i in row}
    # per user, the only items a generated pair's negative may be: outside the list and the training items
    gen_allowed = {u: set(range(N_ITEMS)) - set(RAW[u]) - set(LISTS[u]) for u in range(3)}
    assert gen_allowed == {0: {8, 9, 10, 11}, 1: {2, 3, 4, 5}, 2: {7, 9, 11}}
    gen_negatives = set()
    for epoch in range(30):
        raw_seen, gen_seen, alone = [], [], 0
        for batch in sampler(epoch, np.random.default_rng(epoch)):
            raw_seen += pairs(batch.raw)
            for u, j in zip(batch.raw.users.tolist(), batch.raw.neg_items.tolist(), strict=True):
                assert j not in RAW[u]
            if batch.generated is None:  # the generated pairs ran out first: the raw batch trains alone
                alone += 1
                continue
            gen_seen += pairs(batch.generated)
            for u, j in zip(batch.generated.users.tolist(), batch.generated.neg_items.tolist(), strict=True):
                assert j in gen_allowed[u], (u, j)
                gen_negatives.add((u, j))
        if pairs_per_epoch is None:
            assert sorted(raw_seen) == sorted(raw_pairs)  # every raw pair once
        else:
            assert len(raw_seen) == len(set(raw_seen)) == pairs_per_epoch and set(raw_seen) <= raw_pairs
        assert sorted(gen_seen) == sorted(gen_pairs)  # every generated pair once, none cut off by the zip
        assert alone == (1 if (batch_size, pairs_per_epoch) == (5, None) else 0)
    # the negatives are not stuck on one item: every allowed one turns up
    assert gen_negatives == {(u, j) for u, items in gen_allowed.items() for j in items}


# ---------------------------------------------------------------------------------------------------------------
# the data-free student's sampler (shared.distillation.GDSampler)


def test_gd_student_negatives_never_hit_the_held_out_list_item():
    # 2 users, 8 items, lists of 4; column 1 of each list is held out of training for model selection
    lists = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    train_lists = lists.copy()
    train_lists[:, 1] = -1
    targets = np.full(lists.shape, 0.5, dtype=np.float32)
    sampler = GDSampler(train_lists, targets, n_items=8, batch_size=64, exclude=lists)
    rng = np.random.default_rng(0)
    for epoch in range(200):
        for batch in sampler(epoch, rng):
            users = batch.pairs.users.numpy()
            # each user's only items outside the whole list are the other user's four
            assert set(batch.pairs.pos_items.numpy().tolist()) <= {0, 2, 3, 4, 6, 7}  # never the held-out 1 or 5
            assert all(int(j) not in lists[u] for u, j in zip(users, batch.pairs.neg_items.numpy(), strict=True))
    # without `exclude`, negatives come from outside the training lists only: the held-out items get drawn
    loose = GDSampler(train_lists, targets, n_items=8, batch_size=64)
    drawn = np.concatenate([b.pairs.neg_items.numpy() for e in range(50) for b in loose(e, rng)])
    assert {1, 5} <= set(drawn.tolist())
