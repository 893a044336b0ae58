"""shared.optim.LazyAdam against torch's SparseAdam (the reference it must equal) and by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from shared.optim import LazyAdam


def _twin_embeddings(n: int = 30, d: int = 4) -> tuple[nn.Embedding, nn.Embedding]:
    a = nn.Embedding(n, d, sparse=True)
    b = nn.Embedding(n, d, sparse=True)
    b.weight.data.copy_(a.weight.data)
    return a, b


def test_lazy_adam_equals_sparse_adam_over_many_steps_with_repeated_rows():
    torch.manual_seed(0)
    ours, ref = _twin_embeddings()
    opt_ours, opt_ref = LazyAdam(ours.parameters(), lr=0.01), torch.optim.SparseAdam(ref.parameters(), lr=0.01)
    for step in range(40):
        rows = torch.randint(0, 30 if step % 5 else 8, (25,))  # repeated rows; some steps touch only a few rows
        target = torch.randn(25, 4)
        for emb, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            ((emb(rows) - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-5, atol=1e-6)
    state_ours, state_ref = opt_ours.state[ours.weight], opt_ref.state[ref.weight]
    torch.testing.assert_close(state_ours["exp_avg_sq"], state_ref["exp_avg_sq"], rtol=1e-5, atol=1e-9)


def test_first_step_by_hand_moves_only_touched_rows_by_lr():
    emb = nn.Embedding(5, 2, sparse=True)
    emb.weight.data.zero_()
    opt = LazyAdam(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 1, 3])).sum().backward()  # row 1 gets gradient 2, row 3 gets 1 (per coordinate)
    opt.step()
    # first Adam step: m = (1-b1) g, v = (1-b2) g^2, update = lr * sqrt(1-b2) / (1-b1) * m / (sqrt(v) + eps) = lr
    expected = torch.zeros(5, 2)
    expected[[1, 3]] = -0.1 / (1 + 1e-8 / math.sqrt(1e-3) / torch.tensor([[2.0], [1.0]]))
    torch.testing.assert_close(emb.weight.data, expected)


def test_state_round_trips_and_resumes_identically():
    torch.manual_seed(1)
    a, b = _twin_embeddings()
    opt_a = LazyAdam(a.parameters(), lr=0.05)
    rows = [torch.randint(0, 30, (12,)) for _ in range(6)]

    def run(emb: nn.Embedding, opt: LazyAdam, batches: list[torch.Tensor]) -> None:
        for r in batches:
            opt.zero_grad()
            emb(r).pow(2).sum().backward()
            opt.step()

    run(a, opt_a, rows[:3])
    b.weight.data.copy_(a.weight.data)
    opt_b = LazyAdam(b.parameters(), lr=0.05)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as a checkpoint file holds it
    run(a, opt_a, rows[3:])
    run(b, opt_b, rows[3:])
    torch.testing.assert_close(a.weight, b.weight)


def test_dense_gradient_and_bad_settings_are_refused():
    dense = nn.Embedding(4, 2)
    opt = LazyAdam(dense.parameters())
    dense(torch.tensor([0])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    with pytest.raises(ValueError, match="lr"):
        LazyAdam(dense.parameters(), lr=0)
    with pytest.raises(ValueError, match="betas"):
        LazyAdam(dense.parameters(), betas=(1.0, 0.9))
