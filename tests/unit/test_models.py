"""Every model honours the scorer contract and learns the checkerboard (one mixin for all families)."""

import numpy as np
import pytest
import torch

from shared.evaluation import evaluate
from shared.models import BPR, GMF, MLP, NeuMF, PairBatch, build_at_fraction, build_model, config_at_fraction
from shared.sampling import TripletSampler
from shared.training import TrainConfig, fit
from tests.conftest import checkerboard

FAMILIES = {
    "bpr": {"dim": 8, "reg": 1e-4},
    "neumf": {"dim_gmf": 8, "dim_mlp": 8, "hidden": [16, 8], "reg": 1e-5},
    "gmf": {"dim": 8, "reg": 1e-5},
    "mlp": {"dim": 8, "hidden": [16, 8], "reg": 1e-5},
}


@pytest.mark.parametrize("family", FAMILIES)
class TestScorerContract:
    def test_shapes(self, family):
        model = build_model(family, 5, 7, **FAMILIES[family])
        users = torch.tensor([0, 3])
        assert model.score(users, torch.tensor([1, 6])).shape == (2,)
        assert model.score(users, torch.tensor([[1, 2, 3], [4, 5, 6]])).shape == (2, 3)
        assert model.score_all(users).shape == (2, 7)
        loss = model.loss(PairBatch(users, torch.tensor([1, 2]), torch.tensor([3, 4])))
        assert loss.dim() == 0 and torch.isfinite(loss)

    def test_score_all_agrees_with_score(self, family):
        model = build_model(family, 5, 7, **FAMILIES[family])
        users = torch.tensor([0, 2, 4])
        items = torch.arange(7).expand(3, -1)
        torch.testing.assert_close(model.score_all(users), model.score(users, items), rtol=1e-5, atol=1e-5)

    def test_parameter_count_formula(self, family):
        model = build_model(family, 11, 13, **FAMILIES[family])
        assert model.num_parameters() == type(model).count_parameters(11, 13, **model.config())

    def test_learns_the_checkerboard(self, family):
        torch.manual_seed(0)
        train, valid, test = checkerboard(n_users=40, n_items=20)
        model = build_model(family, 40, 20, **FAMILIES[family])
        users = np.arange(40)
        result = fit(
            model,
            TripletSampler(train, batch_size=64),
            lambda: evaluate(model.score_all, users, valid, [train], ks=(2,)).metrics,
            TrainConfig(epochs=60, lr=0.02, metric="HR@2", patience=0, progress=False),
        )
        # the two held-out items of each user are the only unseen items of their own half: both in the top 2
        test_hr = evaluate(model.score_all, users, test, [train], [valid], ks=(1,))["HR@1"]
        assert result.best_metrics["HR@2"] >= 0.95
        assert test_hr >= 0.95


def test_neumf_split_scoring_equals_naive_per_pair_pass():
    torch.manual_seed(0)
    model = NeuMF(50, 300, dim_gmf=6, dim_mlp=10, hidden=[12, 5])
    users = torch.arange(50)
    torch.testing.assert_close(model.score_all(users), model.score_all_naive(users), rtol=1e-4, atol=1e-5)


def test_neumf_split_scoring_chunks_over_items(monkeypatch):
    import shared.models.neumf as neumf

    monkeypatch.setattr(neumf, "_PAIR_CHUNK_ELEMENTS", 64)  # forces many item chunks
    model = NeuMF(4, 37, dim_gmf=3, dim_mlp=4, hidden=[5, 3])
    users = torch.arange(4)
    torch.testing.assert_close(model.score_all(users), model.score_all_naive(users), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_bpr_sizing_is_exact_for_divisible_dims(fraction):
    teacher = BPR(5219, 25181, dim=100)
    student, sized = build_at_fraction(teacher, fraction)
    assert student.dim == round(100 * fraction)
    assert sized.reference_params == teacher.num_parameters()
    assert sized.params == student.num_parameters()
    assert sized.ratio == pytest.approx(fraction)


@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_neumf_sizing_within_two_percent(fraction):
    teacher = NeuMF(943, 1682, dim_gmf=64, dim_mlp=64, hidden=[64, 32])
    student, sized = build_at_fraction(teacher, fraction)
    assert isinstance(student, NeuMF)
    assert abs(student.num_parameters() / teacher.num_parameters() - fraction) <= 0.02 * fraction


def test_sizing_refuses_an_unreachable_target():
    with pytest.raises(ValueError, match="within"):
        config_at_fraction("bpr", {"dim": 2}, 10, 10, 0.3)
    with pytest.raises(ValueError, match="unknown model family"):
        config_at_fraction("svd", {}, 10, 10, 0.5)


def test_invalid_sizes_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        BPR(0, 5)
    with pytest.raises(ValueError, match="dim"):
        BPR(3, 5, dim=0)


@pytest.mark.parametrize(("alpha", "expected"), [(1.0, "gmf"), (0.0, "mlp")])
def test_neumf_from_pretrained_scores_as_the_branch_it_is_weighted_to(alpha, expected):
    torch.manual_seed(0)
    gmf, mlp = GMF(6, 9, dim=4), MLP(6, 9, dim=5, hidden=[7, 3])
    for module in (gmf.out, mlp.out):  # non-trivial output layers
        torch.nn.init.normal_(module.weight)
        torch.nn.init.normal_(module.bias)
    model = NeuMF.from_pretrained(gmf, mlp, alpha=alpha)
    users = torch.arange(6)
    branch = gmf if expected == "gmf" else mlp
    torch.testing.assert_close(model.score_all(users), branch.score_all(users))


def test_neumf_from_pretrained_mixes_the_branches_and_keeps_them_untouched():
    torch.manual_seed(1)
    gmf, mlp = GMF(4, 5, dim=3), MLP(4, 5, dim=2, hidden=[4, 2])
    before = {k: v.clone() for k, v in gmf.state_dict().items()}
    model = NeuMF.from_pretrained(gmf, mlp, alpha=0.25)
    users = torch.arange(4)
    # the output layer is linear in [h_gmf; h_mlp]: 0.25 * GMF logit + 0.75 * MLP logit
    torch.testing.assert_close(model.score_all(users), 0.25 * gmf.score_all(users) + 0.75 * mlp.score_all(users))
    with torch.no_grad():
        model.user_gmf.weight.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in gmf.state_dict().items())
    with pytest.raises(ValueError, match="alpha"):
        NeuMF.from_pretrained(gmf, mlp, alpha=1.5)
