"""Tests of mtlcourse.autojac, grouped by the promise they check.

Oracles: separate ``torch.autograd.grad`` calls, finite differences, ``Tensor.backward`` of the mean loss,
and torchjd 0.18's ``mtl_backward`` + ``jac_to_grad``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlcourse.aggregation import MGDA, CAGrad, Mean, PCGrad, Random, UPGrad
from mtlcourse.autojac import backward, jacobian, mtl_backward

N_TASKS = 3


class SharedTrunkModel(nn.Module):
    """A shared trunk producing two feature tensors, and one head per task reading both."""

    def __init__(self, n_tasks: int = N_TASKS, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh())
        self.side = nn.Linear(5, 3)
        self.heads = nn.ModuleList(nn.Linear(8 + 3, 1) for _ in range(n_tasks))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.trunk.parameters(), *self.side.parameters()]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        features = [self.trunk(x), self.side(x)]
        joined = torch.cat(features, dim=1)
        targets = torch.linspace(-1, 1, len(self.heads))
        losses = [
            ((head(joined).squeeze(1) - t) ** 2).mean() + 0.1 * i
            for i, (head, t) in enumerate(zip(self.heads, targets, strict=True))
        ]
        return losses, features


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(7, 5, generator=torch.Generator().manual_seed(seed))


def grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() for p in params]


# ---------------------------------------------------------------------------------------------------------
# jacobian: rows in task order, columns in parameter order
# ---------------------------------------------------------------------------------------------------------


def test_jacobian_rows_are_the_gradients_of_each_loss():
    model = SharedTrunkModel()
    losses, _ = model(inputs())
    params = list(model.parameters())
    J = jacobian(losses, iter(params), retain_graph=True)  # an iterator, like model.parameters()
    expected = torch.stack(
        [
            torch.cat(
                [
                    g.flatten()
                    for g in torch.autograd.grad(loss, params, retain_graph=True, materialize_grads=True)
                ]
            )
            for loss in losses
        ]
    )
    assert J.shape == (N_TASKS, sum(p.numel() for p in params))
    torch.testing.assert_close(J, expected)


def test_jacobian_matches_finite_differences():
    x = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64, requires_grad=True)
    W = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64, requires_grad=True)

    def losses_of(x, W):
        return [(x**2).sum() * W[0, 0], torch.sin(x).sum() + (W**3).sum(), (x[0] * W).sum()]

    J = jacobian(torch.stack(losses_of(x, W)), [x, W])  # a 1-D tensor of losses is accepted too
    eps = 1e-6
    columns = []
    for tensor in (x, W):
        for k in range(tensor.numel()):
            with torch.no_grad():
                step = torch.zeros_like(tensor).view(-1)
                step[k] = eps
                step = step.view_as(tensor)
                plus = losses_of(x + step, W) if tensor is x else losses_of(x, W + step)
                minus = losses_of(x - step, W) if tensor is x else losses_of(x, W - step)
            columns.append((torch.stack(plus) - torch.stack(minus)) / (2 * eps))
    torch.testing.assert_close(J, torch.stack(columns, dim=1), rtol=1e-6, atol=1e-8)


def test_jacobian_gives_zero_columns_for_unused_parameters():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.ones(3, requires_grad=True)
    J = jacobian([a.sum(), (a**2).sum()], [a, unused])
    torch.testing.assert_close(J, torch.tensor([[1.0, 1.0, 0, 0, 0], [2.0, 4.0, 0, 0, 0]]))


# ---------------------------------------------------------------------------------------------------------
# backward: aggregator(J) written into .grad, accumulating
# ---------------------------------------------------------------------------------------------------------


def test_backward_with_mean_is_backward_of_the_mean_loss():
    model = SharedTrunkModel()
    losses, _ = model(inputs())
    (sum(losses) / N_TASKS).backward()
    expected = grads(model.parameters())
    model.zero_grad(set_to_none=True)
    losses, _ = model(inputs())
    weights = backward(losses, model.parameters(), Mean())
    for g, e in zip(grads(model.parameters()), expected, strict=True):
        torch.testing.assert_close(g, e)
    torch.testing.assert_close(weights, torch.full((N_TASKS,), 1 / N_TASKS))


def test_backward_writes_the_aggregated_jacobian_and_accumulates():
    model = SharedTrunkModel()
    params = list(model.parameters())
    losses, _ = model(inputs())
    J = jacobian(losses, params)
    expected = UPGrad()(J).split([p.numel() for p in params])
    for p in params:
        p.grad = torch.ones_like(p)  # an existing gradient is added to, like Tensor.backward does
    losses, _ = model(inputs())
    weights = backward(losses, params, UPGrad())
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, 1 + e.view_as(p))
    torch.testing.assert_close(weights, UPGrad().weights(J))


def test_backward_with_a_plain_callable_returns_no_weights():
    model = SharedTrunkModel()
    losses, _ = model(inputs())
    sum(losses).backward()
    expected = grads(model.parameters())
    model.zero_grad(set_to_none=True)
    losses, _ = model(inputs())
    assert backward(losses, model.parameters(), lambda J: J.sum(dim=0)) is None
    for g, e in zip(grads(model.parameters()), expected, strict=True):
        torch.testing.assert_close(g, e)


# ---------------------------------------------------------------------------------------------------------
# mtl_backward: heads get their own gradient, the trunk gets aggregator(J_shared)
# ---------------------------------------------------------------------------------------------------------


def test_mtl_backward_task_params_get_their_own_gradient_and_shared_params_the_aggregation():
    model = SharedTrunkModel()
    losses, _ = model(inputs())
    shared = model.shared_parameters()
    J = jacobian(losses, shared, retain_graph=True)
    head_grads = [
        torch.autograd.grad(loss, list(head.parameters()), retain_graph=True)
        for loss, head in zip(losses, model.heads, strict=True)
    ]
    losses, features = model(inputs())
    weights = mtl_backward(losses, features, [h.parameters() for h in model.heads], iter(shared), UPGrad())
    for head, expected in zip(model.heads, head_grads, strict=True):
        for p, e in zip(head.parameters(), expected, strict=True):
            torch.testing.assert_close(p.grad, e)
    direction = UPGrad()(J).split([p.numel() for p in shared])
    for p, e in zip(shared, direction, strict=True):
        torch.testing.assert_close(p.grad, e.view_as(p))
    torch.testing.assert_close(weights, UPGrad().weights(J))


def test_mtl_backward_accumulates():
    model = SharedTrunkModel()
    for _ in range(2):
        losses, features = model(inputs())
        mtl_backward(
            losses, features, [h.parameters() for h in model.heads], model.shared_parameters(), Mean()
        )
    twice = grads(model.parameters())
    model.zero_grad(set_to_none=True)
    losses, features = model(inputs())
    mtl_backward(losses, features, [h.parameters() for h in model.heads], model.shared_parameters(), Mean())
    for g, once in zip(twice, grads(model.parameters()), strict=True):
        torch.testing.assert_close(g, 2 * once)


@pytest.mark.parametrize("which", ["torchjd-UPGrad", "torchjd-Mean-vs-ours"])
def test_mtl_backward_leaves_the_same_grad_as_torchjd(which):
    tja = pytest.importorskip("torchjd.aggregation")
    tjac = pytest.importorskip("torchjd.autojac")
    theirs_aggregator = tja.UPGrad() if which == "torchjd-UPGrad" else tja.Mean()
    ours_aggregator = theirs_aggregator if which == "torchjd-UPGrad" else Mean()

    model = SharedTrunkModel()
    losses, features = model(inputs())
    shared = model.shared_parameters()
    tjac.mtl_backward(
        losses, features, tasks_params=[list(h.parameters()) for h in model.heads], shared_params=shared
    )
    tjac.jac_to_grad(shared, theirs_aggregator)
    expected = grads(model.parameters())

    model.zero_grad(set_to_none=True)
    losses, features = model(inputs())
    mtl_backward(losses, features, [h.parameters() for h in model.heads], shared, ours_aggregator)
    for g, e in zip(grads(model.parameters()), expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Bad input gets a clear error
# ---------------------------------------------------------------------------------------------------------


def _mtl_call(**overrides):
    model = SharedTrunkModel()
    losses, features = model(inputs())
    kwargs = {
        "losses": losses,
        "features": features,
        "tasks_params": [list(h.parameters()) for h in model.heads],
        "shared_params": model.shared_parameters(),
        "aggregator": UPGrad(),
    }
    kwargs.update({k: (v(model, losses) if callable(v) else v) for k, v in overrides.items()})
    return mtl_backward(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        pytest.param(
            {"losses": lambda m, L: [torch.stack(L)] * 3},
            ValueError,
            r"losses\[0\] must be a scalar",
            id="non-scalar-loss",
        ),
        pytest.param({"losses": []}, ValueError, "No losses", id="no-losses"),
        pytest.param({"features": []}, ValueError, "features is empty", id="no-features"),
        pytest.param(
            {"tasks_params": lambda m, L: [[*h.parameters(), m.trunk[0].bias] for h in m.heads]},
            ValueError,
            "overlap",
            id="overlapping-params",
        ),
        pytest.param(
            {"tasks_params": lambda m, L: [list(h.parameters()) for h in m.heads[:2]]},
            ValueError,
            "3 losses but 2 groups",
            id="fewer-groups",
        ),
        pytest.param(
            {
                "tasks_params": lambda m, L: (
                    [list(h.parameters()) for h in m.heads] + [[torch.ones(1, requires_grad=True)]]
                )
            },
            ValueError,
            "3 losses but 4 groups",
            id="more-groups",
        ),
        pytest.param(
            {"shared_params": [torch.ones(2)]},
            ValueError,
            r"shared_params\[0\].*does not require grad",
            id="no-grad-param",
        ),
    ],
)
def test_mtl_backward_rejects_bad_input(overrides, error, match):
    with pytest.raises(error, match=match):
        _mtl_call(**overrides)


@pytest.mark.parametrize(
    ("losses", "params", "match"),
    [
        pytest.param([], [torch.ones(1, requires_grad=True)], "No losses", id="no-losses"),
        pytest.param(
            torch.ones(2, 2, requires_grad=True),
            [torch.ones(1, requires_grad=True)],
            r"shape \(2, 2\)",
            id="2-D-losses",
        ),
        pytest.param(
            [torch.tensor(1.0)],
            [torch.ones(1, requires_grad=True)],
            "does not require grad",
            id="detached-loss",
        ),
        pytest.param([torch.tensor(1.0, requires_grad=True)], [], "params is empty", id="no-params"),
        pytest.param(
            [torch.tensor(1.0, requires_grad=True)],
            [torch.ones(1)],
            r"params\[0\].*does not require grad",
            id="no-grad-param",
        ),
    ],
)
def test_jacobian_and_backward_reject_bad_input(losses, params, match):
    with pytest.raises(ValueError, match=match):
        jacobian(losses, params)
    with pytest.raises(ValueError, match=match):
        backward(losses, params, Mean())


AGGREGATORS = [Mean(), UPGrad(), MGDA(), PCGrad(), CAGrad(c=0.5), Random()]


@pytest.mark.parametrize("aggregator", AGGREGATORS, ids=repr)
def test_an_infinite_gradient_reaches_grad_as_with_loss_backward(aggregator):
    """GradScaler skips a step only if the overflow reaches .grad: backward must not raise on it."""
    x = torch.tensor([0.0, 1.0], requires_grad=True)
    losses = [torch.sqrt(x).sum(), x.sum()]  # d sqrt(x)/dx = inf at 0
    reference = torch.tensor([0.0, 1.0], requires_grad=True)
    (torch.sqrt(reference).sum() + reference.sum()).backward()  # the oracle: what loss.backward() leaves
    assert not torch.isfinite(reference.grad).all()
    backward(losses, [x], aggregator)
    assert not torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="non-finite"):  # calling the aggregator itself still says so
        aggregator(jacobian([torch.sqrt(x).sum(), x.sum()], [x]))


@pytest.mark.parametrize("aggregator", AGGREGATORS, ids=repr)
def test_a_nan_loss_gives_a_non_finite_grad_in_mtl_backward(aggregator):
    model = SharedTrunkModel()
    losses, features = model(inputs())
    losses = [losses[0], losses[1] * float("nan"), losses[2]]
    weights = mtl_backward(
        losses, features, [list(h.parameters()) for h in model.heads], model.shared_parameters(), aggregator
    )
    assert not all(torch.isfinite(p.grad).all() for p in model.shared_parameters())
    assert not torch.isfinite(model.heads[1].weight.grad).all()
    assert torch.isfinite(model.heads[0].weight.grad).all()  # the other heads are untouched
    assert weights.shape == (3,)


def test_a_finite_jacobian_the_aggregator_rejects_still_raises():
    class Failing(UPGrad):
        def weights_from_gramian(self, G):
            raise ValueError("solver failed")

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="solver failed"):
        backward([x.sum(), (x**2).sum()], [x], Failing())


@pytest.mark.parametrize("aggregator", [Mean(), UPGrad(), MGDA()], ids=repr)
def test_under_bfloat16_autocast_the_direction_is_the_one_without_autocast(aggregator):
    x = torch.randn(2, 40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    losses = [(x**2).sum(), (x * torch.linspace(-1, 1, 40)).sum(), x.sum()]
    expected = aggregator(jacobian(losses, [x], retain_graph=True))  # no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        backward(losses, [x], aggregator)
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad.reshape(-1), expected, rtol=0, atol=0)


@pytest.mark.parametrize("aggregator", [Mean(), UPGrad()], ids=repr)
def test_gradscaler_skips_the_step_and_lowers_its_scale_on_a_float16_overflow(aggregator):
    """End to end on CPU: float16 autocast, a scale so large that the backward pass overflows."""
    model = SharedTrunkModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cpu", dtype=torch.float16):
        losses, features = model(inputs())
    tasks_params = [list(h.parameters()) for h in model.heads]
    scaled = [scaler.scale(loss) for loss in losses]
    mtl_backward(scaled, features, tasks_params, model.shared_parameters(), aggregator)
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**59  # the overflow was seen: scale halved (backoff_factor 0.5)
    for p, p0 in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), p0, rtol=0, atol=0)  # and the step skipped


def _scaled_setup(seed=0):
    torch.manual_seed(seed)
    trunk = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh())
    heads = torch.nn.ModuleList([torch.nn.Linear(6, 1) for _ in range(2)])
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = torch.stack([x[:, 0] - x[:, 1], torch.sin(x[:, 2])], 1)
    return trunk, heads, x, y


def _scaled_losses(trunk, heads, x, y):
    features = trunk(x)
    return [((h(features)[:, 0] - y[:, i]) ** 2).mean() for i, h in enumerate(heads)], features


def test_loss_scale_hands_the_aggregator_the_true_jacobian():
    """Nash-MTL is not positively homogeneous (its direction ignores J's scale): with losses scaled by S for
    mixed precision, loss_scale=S gives S·A(J) on the trunk, as GradScaler expects; without it the step is
    S times too small after unscaling."""
    from mtlcourse.aggregation import NashMTL

    scale = 1024.0
    grads = {}
    for label, factor, loss_scale in [("plain", 1.0, None), ("scaled", scale, scale), ("naive", scale, None)]:
        trunk, heads, x, y = _scaled_setup()
        losses, features = _scaled_losses(trunk, heads, x, y)
        mtl_backward(
            [factor * loss for loss in losses],
            features,
            [list(h.parameters()) for h in heads],
            list(trunk.parameters()),
            NashMTL(),
            loss_scale=loss_scale,
        )
        grads[label] = [p.grad / factor for p in trunk.parameters()]
    for scaled, plain in zip(grads["scaled"], grads["plain"], strict=True):
        torch.testing.assert_close(scaled, plain, rtol=1e-4, atol=1e-7)
    ratio = (
        torch.cat([g.flatten() for g in grads["naive"]]).norm()
        / torch.cat([g.flatten() for g in grads["plain"]]).norm()
    )
    assert ratio == pytest.approx(1 / scale, rel=1e-3)


def test_grad_scaler_step_with_loss_scale_equals_the_unscaled_step():
    from mtlcourse.aggregation import NashMTL

    results = []
    for use_scaler in (False, True):
        trunk, heads, x, y = _scaled_setup()
        params = [*trunk.parameters(), *heads.parameters()]
        opt = torch.optim.SGD(params, lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, enabled=use_scaler)
        losses, features = _scaled_losses(trunk, heads, x, y)
        mtl_backward(
            [scaler.scale(loss) for loss in losses],
            features,
            [list(h.parameters()) for h in heads],
            list(trunk.parameters()),
            NashMTL(),
            loss_scale=scaler.get_scale() if use_scaler else None,
        )
        scaler.step(opt)
        scaler.update()
        results.append([p.detach().clone() for p in params])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def _heads_model(m: int):
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh())
    heads = torch.nn.ModuleList([torch.nn.Linear(5, 1) for _ in range(m)])
    x, y = torch.randn(16, 6), torch.randn(16, m)
    return trunk, heads, x, y


def _counted_step(m: int, stacked: bool):
    """One mtl_backward; returns how often a gradient flowed through a head's output, and the .grads."""
    trunk, heads, x, y = _heads_model(m)
    features = trunk(x)
    outputs = [head(features) for head in heads]
    count = [0]
    for output in outputs:
        output.register_hook(lambda grad: count.__setitem__(0, count[0] + 1))
    losses = [((out[:, 0] - y[:, i]) ** 2).mean() for i, out in enumerate(outputs)]
    mtl_backward(
        torch.stack(losses) if stacked else losses,
        features,
        [h.parameters() for h in heads],
        trunk.parameters(),
        UPGrad(),
    )
    return count[0], [p.grad.clone() for p in [*trunk.parameters(), *heads.parameters()]]


def test_mtl_backward_runs_each_head_once_when_the_losses_come_separately():
    m = 6
    passes, grads = _counted_step(m, stacked=False)
    assert passes == m  # torchjd's mtl_backward: m as well
    passes_stacked, grads_stacked = _counted_step(m, stacked=True)
    assert passes_stacked == m * m  # documented: an entry of a stacked vector reaches every head
    for a, b in zip(grads, grads_stacked, strict=True):
        assert torch.equal(a, b)  # the extra passes carry zeros: the same numbers to the last bit
