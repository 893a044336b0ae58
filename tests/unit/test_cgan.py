"""CGAN with the mask mechanism: both players learn, masks are right, lists are reproducible."""

import numpy as np
import pytest
import torch

from data_owner.gan import CGANConfig, Discriminator, Generator, cgan, generated_lists, top_lists, train_cgan
from data_owner.gan.cgan import _bags, _batch, _dense, bag_sum, drop_items, sample_negative_mask
from shared.interactions import ItemSets
from tests.conftest import checkerboard

TINY = dict(hidden_g=(32,), hidden_d=(16,), noise_dim=4, batch_size=8, g_steps=1, d_steps=1, progress=False)


def test_mask_has_the_right_shape_and_ratio():
    purchased = torch.zeros(50, 1000)
    purchased[:, :100] = 1
    mask = sample_negative_mask(purchased, 0.3, torch.Generator().manual_seed(0))
    assert mask.shape == (50, 1000)
    assert mask[:, :100].sum() == 0  # never an interacted item
    assert mask[:, 100:].mean().item() == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("dense_share", [2.0, 0.0], ids=["bag", "dense"])
def test_the_sparse_input_layer_equals_a_dense_matmul(dense_share, monkeypatch):
    monkeypatch.setattr(cgan, "DENSE_INPUT_SHARE", dense_share)  # force one path of bag_sum
    train = ItemSets.from_lists([[0, 3], [1], [2, 3, 4]], 6)
    G = Generator(6, hidden=(5,), noise_dim=0)
    users = np.arange(3)
    items, offsets = _bags(train, users, torch.device("cpu"))
    dense = _dense(train, users, torch.device("cpu"))
    expected = torch.sigmoid(G.net.out(torch.sigmoid(dense @ G.net.bag.weight + G.net.bias)))
    torch.testing.assert_close(G(items, offsets, None), expected)
    D = Discriminator(6, hidden=(4,))
    # the real sample x = C_u takes the sparse path; passing C_u densely must give the same logit
    torch.testing.assert_close(D(items, offsets, None), D(items, offsets, dense))


def test_bag_sum_takes_the_dense_path_for_dense_bags_with_the_same_values_and_gradients(monkeypatch):
    rng = np.random.default_rng(0)
    weight = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    for share in (0.02, 0.5):  # sparse bags, then bags with half the catalog set
        lists = [sorted(rng.choice(40, size=max(1, int(share * 40)), replace=False)) for _ in range(5)]
        items, offsets = _bags(ItemSets.from_lists(lists, 40), np.arange(5), torch.device("cpu"))
        weights = torch.rand(items.numel(), dtype=torch.float64)
        results = []
        for forced in (2.0, 0.0):  # bag, dense
            monkeypatch.setattr(cgan, "DENSE_INPUT_SHARE", forced)
            out = bag_sum(weight, items, offsets, weights)
            (grad,) = torch.autograd.grad(out.pow(2).sum(), weight)
            results.append((out, grad))
        torch.testing.assert_close(results[0], results[1])
        expected = torch.stack([(weights[offsets[b]:offsets[b] + len(lst), None] * weight[lst]).sum(0)
                                for b, lst in enumerate(lists)])
        torch.testing.assert_close(results[0][0], expected)


def test_column_outputs_equal_the_dense_computation_restricted_to_those_columns():
    train = ItemSets.from_lists([[0, 3], [1], [2, 3, 4]], 7)
    users = np.arange(3)
    items, offsets = _bags(train, users, torch.device("cpu"))
    G, D = Generator(7, hidden=(5,), noise_dim=2), Discriminator(7, hidden=(4,))
    noise = torch.randn(3, 2)
    columns = torch.tensor([1, 3, 4, 6])
    torch.testing.assert_close(G(items, offsets, noise, columns), G(items, offsets, noise)[:, columns])
    x = torch.rand(3, 4)
    padded = torch.zeros(3, 7)
    padded[:, columns] = x
    torch.testing.assert_close(D(items, offsets, x, columns), D(items, offsets, padded))


def test_per_batch_masks_cover_the_history_and_keep_the_ratio():
    rng = np.random.default_rng(0)
    train = ItemSets.from_lists([sorted(rng.choice(2000, 40, replace=False)) for _ in range(30)], 2000)
    users = np.arange(30)
    config = CGANConfig(mask_sampling="per_batch", mask_ratio=0.3)
    b = _batch(train, users, config, torch.Generator().manual_seed(0), torch.device("cpu"))
    dense = _dense(train, users, torch.device("cpu"))
    assert b.columns is not None and torch.all(b.columns[1:] > b.columns[:-1])
    torch.testing.assert_close(b.purchased, dense[:, b.columns])  # every history item is a column
    assert b.purchased.sum() == dense.sum()
    assert (b.negatives * b.purchased).sum() == 0  # K_u never holds one of u's items
    share = b.negatives.sum() / (train.n_items * 30 - dense.sum())
    assert share.item() == pytest.approx(0.3, abs=0.03)  # each non-interacted pair joins with probability rho
    assert b.columns.numel() < 0.3 * train.n_items + 30 * 40  # only the sample and the batch's history


def test_input_dropout_hides_items_within_their_own_bags():
    train = ItemSets.from_lists([list(range(0, 400)), [], list(range(400, 1000)), [7]], 1000)
    users = np.arange(4)
    items, offsets = _bags(train, users, torch.device("cpu"))
    kept, new_offsets, weights = drop_items(items, offsets, 0.25, torch.Generator().manual_seed(0))
    bounds = [*new_offsets.tolist(), kept.numel()]
    bags = [kept[bounds[k]:bounds[k + 1]].tolist() for k in range(4)]
    for user, bag in enumerate(bags):
        assert set(bag) <= set(train.row(user).tolist())  # nothing moves to another user's bag
    assert bags[1] == []
    assert len(bags[0]) / 400 == pytest.approx(0.75, abs=0.07) and len(bags[2]) / 600 == pytest.approx(0.75, abs=0.06)
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / 0.75))  # inverted dropout
    config = CGANConfig(input_dropout=0.25)
    b = _batch(train, users, config, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert b.g_input is not None and b.g_input[0].numel() < items.numel()
    assert torch.equal(b.items, items)  # D's condition and E_u keep the whole history
    assert b.purchased.sum() == items.numel()


@pytest.mark.parametrize("mask_sampling", ["per_user", "per_batch"])
def test_both_players_receive_gradients_and_change(mask_sampling):
    """Regression for the PyTorch CFGAN port whose adversarial loss was computed on detached numpy arrays."""
    train, _, _ = checkerboard(n_users=16, n_items=12)
    result = train_cgan(train, CGANConfig(epochs=2, seed=0, mask_sampling=mask_sampling, **TINY))
    torch.manual_seed(0)  # the same initialisation as inside train_cgan
    g_init, d_init = Generator(12, (32,), 4), Discriminator(12, (16,))
    for trained, initial in ((result.generator, g_init), (result.discriminator, d_init)):
        for (name, p_trained), p_init in zip(trained.named_parameters(), initial.parameters(), strict=True):
            assert not torch.equal(p_trained, p_init), f"{type(trained).__name__}.{name} did not change"


def test_adversarial_loss_reaches_the_generator():
    train, _, _ = checkerboard(n_users=8, n_items=12)
    G, D = Generator(12, (8,), 2), Discriminator(12, (4,))
    users = np.arange(8)
    items, offsets = _bags(train, users, torch.device("cpu"))
    fake = G(items, offsets, torch.randn(8, 2))
    logit = D(items, offsets, fake)
    torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.ones_like(logit)).backward()
    assert G.net.out.weight.grad is not None and G.net.out.weight.grad.abs().sum() > 0
    assert D.x_weight.grad is not None and D.x_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mask_sampling", ["per_user", "per_batch"])
@pytest.mark.parametrize("input_dropout", [0.0, 0.3])
def test_generator_learns_the_checkerboard(mask_sampling, input_dropout):
    """Outside the user's history, the generator's top-2 must come from the user's own half (chance: 0.5)."""
    train, _, _ = checkerboard(n_users=40, n_items=20)
    config = CGANConfig(epochs=60, lr_g=1e-2, lr_d=1e-3, alpha=0.1, eval_every=1000, patience=0, seed=1,
                        mask_sampling=mask_sampling, input_dropout=input_dropout,
                        **{**TINY, "g_steps": 2, "batch_size": 10})
    result = train_cgan(train, config)
    lists = generated_lists(result.generator, train, length=2, include_observed=False)
    own_half = np.array([(lists.items[u] < 10) == (u % 2 == 0) for u in range(40)])
    assert own_half.mean() > 0.85


def test_same_seed_same_lists_and_excluding_observed_items():
    train, _, _ = checkerboard(n_users=10, n_items=12)
    result = train_cgan(train, CGANConfig(epochs=3, seed=0, **TINY))
    a = generated_lists(result.generator, train, 4, seed=5)
    b = generated_lists(result.generator, train, 4, seed=5)
    np.testing.assert_array_equal(a.items, b.items)
    excluded = generated_lists(result.generator, train, 4, include_observed=False)
    assert excluded.observed_share(train) == 0.0
    assert excluded.as_item_sets().n_items == 12
    with pytest.raises(ValueError, match="list length"):
        generated_lists(result.generator, train, 0)


def test_top_lists_of_any_scorer_best_first_with_or_without_the_users_own_items():
    train = ItemSets.from_pairs(np.array([0, 0, 1]), np.array([4, 2, 0]), n_users=2, n_items=5)
    table = torch.tensor([[0.1, 0.5, 0.9, 0.3, 0.7], [0.8, 0.2, 0.4, 0.6, 0.0]])

    def score_all(users):
        return table[users].clone()

    kept = top_lists(score_all, train, 3, include_observed=True, seed=7)
    np.testing.assert_array_equal(kept.items, [[2, 4, 1], [0, 3, 2]])
    np.testing.assert_allclose(kept.scores, [[0.9, 0.7, 0.5], [0.8, 0.6, 0.4]])
    assert kept.observed_share(train) == pytest.approx(3 / 6) and kept.seed == 7
    excluded = top_lists(score_all, train, 3, include_observed=False)
    np.testing.assert_array_equal(excluded.items, [[1, 3, 0], [3, 2, 1]])
    assert excluded.observed_share(train) == 0.0
    with pytest.raises(ValueError, match=r"list length must lie in \[1, 5\]"):
        top_lists(score_all, train, 6)


def test_config_is_validated():
    with pytest.raises(ValueError, match="mask_ratio"):
        CGANConfig(mask_ratio=1.5)
    with pytest.raises(ValueError, match="activation"):
        CGANConfig(activation="swish")
    with pytest.raises(ValueError, match="mask_sampling"):
        CGANConfig(mask_sampling="per_item")
    with pytest.raises(ValueError, match="input_dropout"):
        CGANConfig(input_dropout=1.0)


def test_identity_leaves_out_progress_and_the_default_mask_sampling():
    assert "progress" not in CGANConfig().identity()
    assert "mask_sampling" not in CGANConfig().identity()  # keys made before the switch stay valid
    assert "input_dropout" not in CGANConfig().identity()
    assert CGANConfig(input_dropout=0.5).identity()["input_dropout"] == 0.5
    assert CGANConfig(mask_sampling="per_batch").identity()["mask_sampling"] == "per_batch"


def test_with_json_lays_fields_over_the_config_and_names_what_is_wrong():
    base = CGANConfig(epochs=7)
    assert base.with_json(None) is base and base.with_json("") is base
    tuned = base.with_json('{"alpha": 0.3, "hidden_g": [64, 32], "hidden_d": 16, "mask_sampling": "per_batch"}')
    assert (tuned.epochs, tuned.alpha, tuned.hidden_g, tuned.hidden_d) == (7, 0.3, (64, 32), (16,))
    for text, message in (("{bad", "--cgan-json: not JSON"), ("[1]", "expected a JSON object"),
                          ('{"lr": 1}', "unknown CGANConfig field(s) ['lr']"),
                          ('{"mask_ratio": 3}', "--cgan-json: mask_ratio must lie in [0, 1]")):
        with pytest.raises(ValueError) as caught:
            base.with_json(text)
        assert message in str(caught.value)


class _Recorded:
    """Stand-ins for the CGAN's players that record every call of the training loop (outputs detached)."""

    def __init__(self, monkeypatch):
        record = self
        self.g_calls, self.d_calls = [], []

        class RecordingGenerator(Generator):
            def forward(self, items, offsets, noise, columns=None, weights=None):
                out = super().forward(items, offsets, noise, columns, weights)
                record.g_calls.append(out.detach().clone())
                return out

        class RecordingDiscriminator(Discriminator):
            def forward(self, items, offsets, x, columns=None):
                out = super().forward(items, offsets, x, columns)
                record.d_calls.append(dict(items=items.clone(), offsets=offsets.clone(), columns=columns,
                                           x=None if x is None else x.detach().clone(), logit=out.detach().clone()))
                return out

        monkeypatch.setattr(cgan, "Generator", RecordingGenerator)
        monkeypatch.setattr(cgan, "Discriminator", RecordingDiscriminator)


def first_free_item_mask(purchased, ratio, generator):
    """A fixed K_u for the test: the user's lowest-numbered non-interacted item, nothing else."""
    mask = torch.zeros_like(purchased)
    for row in range(purchased.shape[0]):
        mask[row, int(torch.nonzero(purchased[row] == 0)[0])] = 1.0
    return mask


# 3 users, 5 items; E_u and the fixed K_u = the first item not in E_u
MASK_TRAIN = {0: [0, 1], 1: [2], 2: [0, 3, 4]}
MASK_K = {0: 2, 1: 0, 2: 1}


def one_step_of_cgan(monkeypatch, alpha):
    """One epoch, one D step, one G step, one batch of all 3 users, with the fixed masks; the recorded calls."""
    monkeypatch.setattr(cgan, "sample_negative_mask", first_free_item_mask)
    recorded = _Recorded(monkeypatch)
    train = ItemSets.from_lists([MASK_TRAIN[u] for u in range(3)], 5)
    result = train_cgan(train, CGANConfig(epochs=1, seed=3, alpha=alpha, **{**TINY, "hidden_g": (4,),
                                                                              "hidden_d": (3,), "noise_dim": 2}))
    assert len(recorded.g_calls) == 2 and len(recorded.d_calls) == 3  # D: real, fake; G: fake
    return result, recorded


def rows_of(call):
    """Which user each row of a recorded D call is (the batch is a permutation of the users), from its bags."""
    bounds = [*call["offsets"].tolist(), call["items"].numel()]
    bags = [call["items"][bounds[k]:bounds[k + 1]].tolist() for k in range(len(bounds) - 1)]
    return [next(u for u, row in MASK_TRAIN.items() if row == bag) for bag in bags]


def test_the_discriminators_fake_input_is_gf_times_e_plus_k(monkeypatch):
    _, recorded = one_step_of_cgan(monkeypatch, alpha=0.5)
    assert recorded.d_calls[0]["x"] is None  # the real sample x = C_u goes in as the condition's bag
    # D step's fake (G's first output) and G step's fake (its second): x_uj = GF_uj if j in E_u or j = K_u, else 0
    for call, gf in ((recorded.d_calls[1], recorded.g_calls[0]), (recorded.d_calls[2], recorded.g_calls[1])):
        assert call["columns"] is None and call["x"].shape == (3, 5)
        for row, user in enumerate(rows_of(call)):
            for j in range(5):
                on_mask = j in MASK_TRAIN[user] or j == MASK_K[user]
                assert call["x"][row, j].item() == (gf[row, j].item() if on_mask else 0.0), (user, j)
                assert 0 < gf[row, j].item() < 1  # a sigmoid: a zero in x comes from the mask alone


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_generator_and_discriminator_loss_values_by_hand(monkeypatch, alpha):
    result, recorded = one_step_of_cgan(monkeypatch, alpha)
    real, fake_d, fake_g = (call["logit"].double().numpy() for call in recorded.d_calls)
    # L_D = mean -log sigmoid(D(C_u)) + mean -log(1 - sigmoid(D(fake))) = mean softplus(-real) + mean softplus(fake)
    loss_d = np.mean(np.log1p(np.exp(-real))) + np.mean(np.log1p(np.exp(fake_d)))
    assert result.history[0]["loss_d"] == pytest.approx(loss_d, rel=1e-5)
    # L_G = mean -log sigmoid(D(GF * (E + K))) + alpha * mean_u sum_{j: K_uj = 1} GF_uj^2 (one K item per user)
    gf = recorded.g_calls[1].double().numpy()
    users = rows_of(recorded.d_calls[2])
    zero_reconstruction = np.mean([gf[row, MASK_K[user]] ** 2 for row, user in enumerate(users)])
    loss_g = np.mean(np.log1p(np.exp(-fake_g))) + alpha * zero_reconstruction
    assert result.history[0]["loss_g"] == pytest.approx(loss_g, rel=1e-5)
    assert zero_reconstruction > 0.01  # the alpha term is large enough to be seen
