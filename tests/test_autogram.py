"""The Gramian of instance-wise losses without the Jacobian: against J Jᵀ, torchjd's autogram, and the
autojac route's .grad."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlcourse.aggregation import MGDA, Mean, UPGrad
from mtlcourse.autogram import LinearGramian, gramian_backward
from mtlcourse.autojac import backward, jacobian


def _mlp(dtype=torch.float64, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 9, bias=bias), nn.Tanh(), nn.Linear(9, 7, bias=bias), nn.ReLU(), nn.Linear(7, 4)
    ).to(dtype)


def _batch(n=11, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen, dtype=dtype), torch.randint(0, 4, (n,), generator=gen)


@pytest.mark.parametrize("bias", [True, False])
def test_gramian_equals_jacobian_times_its_transpose(bias):
    model = _mlp(bias=bias)
    x, y = _batch()
    with LinearGramian(model) as engine:
        losses = F.cross_entropy(model(x), y, reduction="none")
    G = engine.gramian(losses, retain_graph=True)
    J = jacobian(losses, model.parameters())
    torch.testing.assert_close(G, J @ J.T, rtol=1e-10, atol=1e-12)


def test_frozen_layers_are_left_out_of_the_gramian():
    model = _mlp()
    model[0].weight.requires_grad_(False)
    model[2].requires_grad_(False)
    x, y = _batch()
    with LinearGramian(model) as engine:
        losses = F.cross_entropy(model(x), y, reduction="none")
    G = engine.gramian(losses, retain_graph=True)
    J = jacobian(losses, [p for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(G, J @ J.T, rtol=1e-10, atol=1e-12)


def test_gramian_matches_torchjd_autogram():
    autogram = pytest.importorskip("torchjd.autogram")
    model = _mlp(dtype=torch.float32)
    x, y = _batch(n=16, dtype=torch.float32)
    with LinearGramian(model) as engine:
        losses = F.cross_entropy(model(x), y, reduction="none")
    ours = engine.gramian(losses)
    theirs = autogram.Engine(model, batch_dim=0).compute_gramian(
        F.cross_entropy(model(x), y, reduction="none")
    )
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("aggregator", [Mean(), MGDA(), UPGrad()], ids=repr)
def test_gramian_backward_leaves_the_grad_of_the_jacobian_route(aggregator):
    x, y = _batch(n=8)
    model = _mlp()
    w = gramian_backward(
        model, lambda: F.cross_entropy(model(x), y, reduction="none"), aggregator.weights_from_gramian
    )
    ours = [p.grad.clone() for p in model.parameters()]
    reference = _mlp()
    expected_w = backward(
        F.cross_entropy(reference(x), y, reduction="none"), reference.parameters(), aggregator
    )
    torch.testing.assert_close(w, expected_w, rtol=1e-8, atol=1e-10)
    for g, p in zip(ours, reference.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-8, atol=1e-10)


def test_hooks_are_removed_after_the_block():
    model = _mlp()
    x, _ = _batch()
    with LinearGramian(model):
        model(x)
    assert all(not layer._forward_hooks for layer in model if isinstance(layer, nn.Linear))


def test_refuses_parameters_outside_linear_layers():
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match=r"not in an nn\.Linear"):
        LinearGramian(model)


def test_refuses_a_layer_called_twice():
    layer = nn.Linear(4, 4).double()
    with pytest.raises(ValueError, match="called twice"):
        with LinearGramian(layer):
            layer(layer(torch.randn(3, 4, dtype=torch.float64)))


def test_refuses_sequence_inputs_and_non_vector_losses():
    model = _mlp()
    with pytest.raises(ValueError, match=r"shape \(N, features\)"):
        with LinearGramian(model):
            model(torch.randn(2, 3, 6, dtype=torch.float64))
    x, _ = _batch()
    with LinearGramian(model) as engine:
        out = model(x)
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        engine.gramian(out)


def test_autojac_gramian_equals_the_linear_route_and_is_float64():
    from mtlcourse.autojac import gramian

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(9, 5), torch.randint(0, 3, (9,))
    with LinearGramian(model) as engine:
        losses = nn.functional.cross_entropy(model(x), y, reduction="none")
    via_layers = engine.gramian(losses, retain_graph=True)
    via_jacobian = gramian(losses, model.parameters())
    assert via_jacobian.dtype == torch.float64 and via_jacobian.shape == (9, 9)
    assert torch.allclose(via_jacobian, via_layers, rtol=1e-5, atol=1e-7)


def test_gramian_backward_takes_the_general_route_for_a_layer_that_is_not_linear():
    from mtlcourse.aggregation import UPGrad
    from mtlcourse.autojac import backward

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    twin = copy.deepcopy(model)
    with pytest.raises(ValueError, match=r"not in an nn\.Linear layer"):
        LinearGramian(model)  # the fast route refuses the LayerNorm's scale and shift

    weights = gramian_backward(
        model,
        lambda: nn.functional.cross_entropy(model(x), y, reduction="none"),
        UPGrad().weights_from_gramian,
    )
    backward(nn.functional.cross_entropy(twin(x), y, reduction="none"), list(twin.parameters()), UPGrad())
    assert weights.shape == (10,)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12)
