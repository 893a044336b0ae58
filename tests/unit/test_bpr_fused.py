"""BPR's fused loss (gradient written out) against the same loss through autograd's embedding lookups."""

from __future__ import annotations

import pytest
import torch

from shared.models import BPR
from shared.models.base import PairBatch


def _batch(generator: torch.Generator, n: int = 64) -> PairBatch:
    # few users and items: the batch repeats rows, as real batches do
    return PairBatch(torch.randint(0, 7, (n,), generator=generator), torch.randint(0, 11, (n,), generator=generator),
                     torch.randint(0, 11, (n,), generator=generator))


@pytest.mark.parametrize("weighted", [False, True])
def test_fused_loss_and_gradients_equal_autograd(weighted):
    g = torch.Generator().manual_seed(0)
    model = BPR(7, 11, dim=5, reg=0.03)
    batch = _batch(g)
    weights = torch.rand(len(batch), generator=g) if weighted else None
    fused = model.loss(batch, weights)
    fused.backward()
    fused_grads = [w.grad.to_dense().clone() for w in (model.user_emb.weight, model.item_emb.weight)]
    model.zero_grad()
    reference = model.autograd_loss(batch, weights)
    reference.backward()
    torch.testing.assert_close(fused, reference)
    for got, want in zip(fused_grads, (model.user_emb.weight.grad, model.item_emb.weight.grad), strict=True):
        torch.testing.assert_close(got, want.to_dense(), rtol=1e-5, atol=1e-7)


def test_scaled_output_gradient_and_no_grad_evaluation():
    g = torch.Generator().manual_seed(1)
    model = BPR(7, 11, dim=3, reg=0.1)
    batch = _batch(g, 16)
    (3.0 * model.loss(batch)).backward()
    fused = model.item_emb.weight.grad.to_dense().clone()
    model.zero_grad()
    (3.0 * model.autograd_loss(batch)).backward()
    torch.testing.assert_close(fused, model.item_emb.weight.grad.to_dense(), rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # evaluation of the loss takes the plain path and gives the same value
        torch.testing.assert_close(model.loss(batch), model.autograd_loss(batch))
