"""Accumulating the Jacobian over micro-batches and aggregating once = one step on the whole batch."""

import pytest
import torch
from torch import nn

from mtlcourse.accumulation import JacobianAccumulator
from mtlcourse.aggregation import MGDA, CAGrad, Mean, UPGrad
from mtlcourse.autojac import mtl_backward


def _model():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 5), nn.ReLU()).double()
    heads = nn.ModuleList([nn.Linear(5, 1).double() for _ in range(3)])
    return trunk, heads


def _data():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(24, 4, generator=gen, dtype=torch.float64)
    y = torch.stack([x[:, 0] * x[:, 1], -x[:, 0] + x[:, 2], torch.cos(x[:, 3])], 1)
    return x, y


def _losses(trunk, heads, x, y):
    features = trunk(x)
    return [((h(features)[:, 0] - y[:, i]) ** 2).mean() for i, h in enumerate(heads)], features


def _grads(trunk, heads):
    return [p.grad.clone() for p in [*trunk.parameters(), *heads.parameters()]]


def _whole_batch(aggregator):
    trunk, heads = _model()
    x, y = _data()
    losses, features = _losses(trunk, heads, x, y)
    weights = mtl_backward(
        losses, features, [list(h.parameters()) for h in heads], list(trunk.parameters()), aggregator
    )
    return _grads(trunk, heads), weights


def _accumulated(aggregator, k):
    trunk, heads = _model()
    x, y = _data()
    accumulator = JacobianAccumulator()
    for xb, yb in zip(x.chunk(k), y.chunk(k), strict=True):
        losses, features = _losses(trunk, heads, xb, yb)
        accumulator.mtl_backward(
            losses, features, [list(h.parameters()) for h in heads], list(trunk.parameters())
        )
    weights = accumulator.step(aggregator)
    return _grads(trunk, heads), weights


@pytest.mark.parametrize("aggregator", [Mean(), UPGrad(), MGDA(), CAGrad(0.5)], ids=repr)
@pytest.mark.parametrize("k", [2, 4])
def test_accumulating_k_micro_batches_equals_the_whole_batch(aggregator, k):
    expected, expected_weights = _whole_batch(aggregator)
    grads, weights = _accumulated(aggregator, k)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-8, atol=1e-10)


def test_aggregating_each_micro_batch_is_not_the_same_step():
    """The naive way — mtl_backward with UPGrad on every micro-batch, gradients summed and averaged —
    moves the trunk's gradient away from the whole batch's."""
    expected, _ = _whole_batch(UPGrad())
    trunk, heads = _model()
    x, y = _data()
    for xb, yb in zip(x.chunk(4), y.chunk(4), strict=True):
        losses, features = _losses(trunk, heads, xb, yb)
        mtl_backward(
            losses, features, [list(h.parameters()) for h in heads], list(trunk.parameters()), UPGrad()
        )
    naive = [p.grad / 4 for p in trunk.parameters()]
    difference = max((n - e).norm() / e.norm() for n, e in zip(naive, expected, strict=False))
    assert difference > 1e-3


def test_the_accumulator_resets_after_a_step_and_refuses_an_empty_step():
    accumulator = JacobianAccumulator()
    with pytest.raises(RuntimeError, match="before any micro-batch"):
        accumulator.step(UPGrad())
    _accumulated(UPGrad(), 2)  # a full cycle leaves nothing behind in a fresh accumulator
    trunk, heads = _model()
    x, y = _data()
    losses, features = _losses(trunk, heads, x, y)
    accumulator.mtl_backward(
        losses, features, [list(h.parameters()) for h in heads], list(trunk.parameters())
    )
    accumulator.step(Mean())
    with pytest.raises(RuntimeError):
        accumulator.step(Mean())


def test_shared_parameters_must_not_change_between_micro_batches():
    trunk, heads = _model()
    x, y = _data()
    accumulator = JacobianAccumulator()
    losses, features = _losses(trunk, heads, x, y)
    accumulator.mtl_backward(
        losses, features, [list(h.parameters()) for h in heads], list(trunk.parameters())
    )
    losses, features = _losses(trunk, heads, x, y)
    with pytest.raises(ValueError, match="same shared parameters"):
        accumulator.mtl_backward(
            losses, features, [list(h.parameters()) for h in heads], list(trunk.parameters())[::-1]
        )
