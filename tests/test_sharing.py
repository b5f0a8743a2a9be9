"""Tests of mtlcourse.sharing (and hard sharing beside it), grouped by the promise they check.

Oracles: parameter counts in closed form from the layer sizes, the forward formulas written out by hand,
``torch.autograd.grad`` of each loss, torchjd 0.18's ``mtl_backward`` + ``jac_to_grad``, finite differences,
and independent networks trained by the same ``fit``.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from mtlcourse.aggregation import Mean, UPGrad
from mtlcourse.autojac import mtl_backward
from mtlcourse.data import regression_classification
from mtlcourse.exercises import top_k_gate_reference
from mtlcourse.gradnorm import GradNorm, last_linear_weight
from mtlcourse.models import MultiTaskNetwork, hard_sharing_mlp
from mtlcourse.sharing import CrossStitch, MMoE, SoftSharing
from mtlcourse.strategy import JacobianDescent
from mtlcourse.tasks import Task
from mtlcourse.training import fit, task_losses
from mtlcourse.weighting import StaticWeights, UncertaintyWeighting, equal_weights

IN, HIDDEN = 5, [8, 6]
HEADS = {"regression": 1, "classification": 1}
TASKS = [Task("regression", "regression"), Task("classification", "binary")]


def _top2(logits: torch.Tensor) -> torch.Tensor:
    return top_k_gate_reference(logits, 2)


BUILDERS = {
    "hard": lambda heads=HEADS: hard_sharing_mlp(IN, HIDDEN, heads),
    "soft": lambda heads=HEADS: SoftSharing(IN, HIDDEN, heads, strength=0.1),
    "cross-stitch": lambda heads=HEADS: CrossStitch(IN, HIDDEN, heads),
    "mmoe": lambda heads=HEADS: MMoE(IN, HIDDEN, heads, n_experts=3),
    "mmoe-top2": lambda heads=HEADS: MMoE(IN, HIDDEN, heads, n_experts=3, gate=_top2),
}
SHARING = [name for name in BUILDERS if name != "soft"]  # those with shared parameters


def build(name: str, seed: int = 0, heads=HEADS) -> MultiTaskNetwork:
    torch.manual_seed(seed)
    return BUILDERS[name](heads)


@pytest.fixture(scope="module")
def data():
    return regression_classification(n=200, seed=0).train


def losses_on(model: MultiTaskNetwork, data):
    return task_losses(model, TASKS, data.x, data.targets)


def grads_of(loss: torch.Tensor, params) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params, retain_graph=True, materialize_grads=True))


# ---------------------------------------------------------------------------------------------------------
# Shapes, parameter groups, parameter counts
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDERS)
def test_outputs_are_named_and_squeezed_and_the_features_have_the_stated_shapes(name):
    model = build(name, heads={"a": 1, "b": 3, "c": 2})
    outputs, features = model(torch.randn(7, IN), return_features=True)
    assert model.task_names == ["a", "b", "c"]
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"a": (7,), "b": (7, 3), "c": (7, 2)}
    expected = {
        "hard": [(7, 6)],
        "soft": [(7, 6)] * 3,
        "cross-stitch": [(7, 6)] * 3,
        "mmoe": [(7, 3, 6)],
        "mmoe-top2": [(7, 3, 6)],
    }[name]
    features = [features] if isinstance(features, torch.Tensor) else list(features)
    assert [tuple(f.shape) for f in features] == expected
    assert model(torch.randn(7, IN)).keys() == outputs.keys()


@pytest.mark.parametrize("name", BUILDERS)
def test_shared_and_task_parameters_are_disjoint_and_cover_the_model(name):
    model = build(name, heads={"a": 1, "b": 3, "c": 2})
    groups = [{id(p) for p in model.shared_parameters()}]
    groups += [{id(p) for p in ps} for ps in model.task_parameters().values()]
    assert list(model.task_parameters()) == model.task_names
    assert sum(len(g) for g in groups) == len(set.union(*groups))  # pairwise disjoint
    assert set.union(*groups) == {id(p) for p in model.parameters()}


def _mlp_count(sizes) -> int:
    return sum(a * b + b for a, b in pairwise(sizes))


def closed_form_count(
    name: str, in_features: int, hidden: list[int], heads: dict[str, int], experts: int
) -> int:
    m, d = len(heads), hidden[-1]
    column = _mlp_count([in_features, *hidden])
    head_count = sum(d * out + out for out in heads.values())
    return (
        head_count
        + {
            "hard": column,
            "soft": m * column,
            "cross-stitch": m * column + len(hidden) * m * m,
            "mmoe": experts * column + m * (in_features * experts + experts),
            "mmoe-top2": experts * column + m * (in_features * experts + experts),
        }[name]
    )


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize(
    ("in_features", "hidden", "heads"),
    [(5, [8, 6], {"a": 1, "b": 3, "c": 2}), (10, [16], {"a": 1, "b": 1}), (3, [4, 4, 2], {"only": 1})],
)
def test_parameter_counts_are_the_closed_form(name, in_features, hidden, heads):
    builders = {
        "hard": lambda: hard_sharing_mlp(in_features, hidden, heads),
        "soft": lambda: SoftSharing(in_features, hidden, heads, strength=1.0),
        "cross-stitch": lambda: CrossStitch(in_features, hidden, heads),
        "mmoe": lambda: MMoE(in_features, hidden, heads, n_experts=3),
        "mmoe-top2": lambda: MMoE(in_features, hidden, heads, n_experts=3, gate=_top2),
    }
    model = builders[name]()
    assert sum(p.numel() for p in model.parameters()) == closed_form_count(
        name, in_features, hidden, heads, 3
    )


def test_parameter_counts_of_the_chapter_s_small_models():
    # in=10, hidden=[16], two 1-unit heads: a 10->16 column has 176 parameters, a head 17.
    heads = {"a": 1, "b": 1}
    counts = {
        "hard": 176 + 2 * 17,
        "soft": 2 * 176 + 2 * 17,
        "cross-stitch": 2 * 176 + 4 + 2 * 17,
        "mmoe": 3 * 176 + 2 * (10 * 3 + 3) + 2 * 17,
    }
    models = {
        "hard": hard_sharing_mlp(10, [16], heads),
        "soft": SoftSharing(10, [16], heads, strength=1.0),
        "cross-stitch": CrossStitch(10, [16], heads),
        "mmoe": MMoE(10, [16], heads, n_experts=3),
    }
    assert {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()} == counts
    assert counts == {"hard": 210, "soft": 386, "cross-stitch": 390, "mmoe": 628}


# ---------------------------------------------------------------------------------------------------------
# The forward passes are the papers' formulas
# ---------------------------------------------------------------------------------------------------------


def test_cross_stitch_mixes_the_columns_after_each_layer():
    model = build("cross-stitch")
    with torch.no_grad():
        for alpha in model.alphas:
            alpha.copy_(torch.tensor([[0.7, 0.3], [-0.2, 1.1]]))
    x = torch.randn(4, IN)
    h = {t: x for t in model.task_names}
    for depth, alpha in enumerate(model.alphas):
        a = {t: F.relu(model.columns[t][depth][0](h[t])) for t in model.task_names}
        (s, u) = model.task_names
        h = {s: alpha[0, 0] * a[s] + alpha[0, 1] * a[u], u: alpha[1, 0] * a[s] + alpha[1, 1] * a[u]}
    outputs = model(x)
    for t in model.task_names:
        torch.testing.assert_close(outputs[t], model.heads[t](h[t]).squeeze(-1))


@pytest.mark.parametrize(("m", "self_weight"), [(2, 0.9), (3, 0.7), (4, 0.0)])
def test_cross_stitch_units_start_at_self_weight_and_rows_sum_to_one(m, self_weight):
    model = CrossStitch(IN, HIDDEN, {f"t{i}": 1 for i in range(m)}, self_weight=self_weight)
    off = (1 - self_weight) / (m - 1)
    for alpha in model.alphas:
        expected = torch.full((m, m), off) + (self_weight - off) * torch.eye(m)
        torch.testing.assert_close(alpha.detach(), expected)


def test_mmoe_mixes_the_experts_with_each_task_s_softmax_gate():
    model = build("mmoe")
    x = torch.randn(4, IN)
    experts = [expert(x) for expert in model.experts]
    outputs = model(x)
    gates = model.gate_weights(x)
    for t in model.task_names:
        g = torch.softmax(model.gates[t](x), dim=-1)
        torch.testing.assert_close(gates[t], g)
        mixed = sum(g[:, e : e + 1] * experts[e] for e in range(3))
        torch.testing.assert_close(outputs[t], model.heads[t](mixed).squeeze(-1))
        assert not gates[t].requires_grad


def test_a_top_2_gate_uses_exactly_two_experts_per_row():
    model = build("mmoe-top2")
    for weights in model.gate_weights(torch.randn(16, IN)).values():
        assert ((weights > 0).sum(-1) == 2).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(16))


def test_a_gate_of_the_wrong_shape_is_named():
    model = MMoE(IN, HIDDEN, HEADS, n_experts=3, gate=lambda z: z[:, :2])
    with pytest.raises(ValueError, match=r"the gate returned shape \(4, 2\), expected \(4, 3\)"):
        model(torch.randn(4, IN))


# ---------------------------------------------------------------------------------------------------------
# Gradients: every parameter learns, and mtl_backward gets the right split
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDERS)
def test_gradients_reach_every_parameter(name, data):
    model = build(name)
    losses, _, _ = losses_on(model, data)
    total = losses.sum()
    if (penalty := model.penalty()) is not None:
        # columns start apart, so the penalty reaches every column parameter too
        total = total + penalty
    total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", SHARING)
def test_mtl_backward_with_mean_is_the_mean_loss_on_shared_and_each_loss_on_its_own(name, data):
    model = build(name)
    losses, _, features = losses_on(model, data)
    shared, groups = model.shared_parameters(), list(model.task_parameters().values())
    expected_shared = grads_of(losses.mean(), shared)
    expected_tasks = [grads_of(loss, group) for loss, group in zip(losses, groups, strict=True)]
    weights = mtl_backward(losses, features, groups, shared, Mean())
    for p, g in zip(shared, expected_shared, strict=True):
        torch.testing.assert_close(p.grad, g)
    for group, expected in zip(groups, expected_tasks, strict=True):
        for p, g in zip(group, expected, strict=True):
            torch.testing.assert_close(p.grad, g)
    torch.testing.assert_close(weights, torch.full((2,), 0.5))


@pytest.mark.parametrize("name", SHARING)
def test_mtl_backward_leaves_the_same_grad_as_torchjd(name, data):
    tja = pytest.importorskip("torchjd.aggregation")
    tjac = pytest.importorskip("torchjd.autojac")
    from torchjd.linalg import QuadprogProjector

    # torchjd's default UPGrad adds reg_eps = 1e-4 to the Gramian (see tests/test_aggregation.py); without
    # it the two UPGrads solve the same problem. Float64, so that only the plumbing can differ.
    theirs = tja.UPGrad(projector=QuadprogProjector(norm_eps=0.0, reg_eps=0.0))
    model = build(name).double()
    x, targets = data.x.double(), {k: v.double() for k, v in data.targets.items()}
    shared, groups = model.shared_parameters(), list(model.task_parameters().values())
    outputs, features = model(x, return_features=True)
    losses = [task.loss(outputs[task.name], targets[task.name]) for task in TASKS]  # not stacked
    tjac.mtl_backward(losses, features, tasks_params=groups, shared_params=shared)
    tjac.jac_to_grad(shared, theirs)
    expected = [p.grad.clone() for p in model.parameters()]

    model.zero_grad(set_to_none=True)
    losses, _, features = task_losses(model, TASKS, x, targets)
    mtl_backward(losses, features, groups, shared, UPGrad())
    for g, e in zip([p.grad for p in model.parameters()], expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("aggregator", [Mean(), UPGrad()], ids=repr)
def test_jacobian_descent_on_soft_sharing_gives_each_column_its_own_loss_s_gradient(aggregator, data):
    model = build("soft")
    losses, _, features = losses_on(model, data)
    groups = list(model.task_parameters().values())
    expected = [grads_of(loss, group) for loss, group in zip(losses, groups, strict=True)]
    weights = JacobianDescent(aggregator).backward(losses, model, features)
    for group, grads in zip(groups, expected, strict=True):
        for p, g in zip(group, grads, strict=True):
            torch.testing.assert_close(p.grad, g)
    torch.testing.assert_close(weights, torch.ones(2))


def test_gradnorm_asks_for_a_layer_on_a_model_without_trunk_and_works_with_one(data):
    model = build("cross-stitch")
    with pytest.raises(ValueError, match=r"CrossStitch has no trunk.*GradNorm\(layer=\.\.\.\)"):
        last_linear_weight(model)
    hard = build("hard")
    assert last_linear_weight(hard) is hard.trunk[-2].weight  # hard sharing still works
    layer = model.columns["regression"][-1][0].weight
    history = fit(model, TASKS, data, strategy=GradNorm(layer=layer), epochs=3)
    assert len(history) == 3


# ---------------------------------------------------------------------------------------------------------
# fit trains every architecture with every kind of strategy
# ---------------------------------------------------------------------------------------------------------


STRATEGIES = {
    "equal": lambda: equal_weights(2),
    "uncertainty": lambda: UncertaintyWeighting(2),
    "upgrad": lambda: JacobianDescent(UPGrad()),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", BUILDERS)
def test_fit_lowers_the_training_loss(name, strategy, data):
    history = fit(build(name), TASKS, data, strategy=STRATEGIES[strategy](), epochs=40, lr=0.02)
    columns = ["train_loss_regression", "train_loss_classification"]
    first, last = history[columns].iloc[0], history[columns].iloc[-1]
    assert last.sum() < 0.7 * first.sum()
    assert ("train_penalty" in history) == (name == "soft")


# ---------------------------------------------------------------------------------------------------------
# Degenerate settings: independent networks, hard sharing
# ---------------------------------------------------------------------------------------------------------


def _independent(seed: int) -> dict[str, MultiTaskNetwork]:
    torch.manual_seed(seed)
    return {name: hard_sharing_mlp(IN, HIDDEN, {name: out}) for name, out in HEADS.items()}


def _histories_of_independent_networks(nets, data, epochs):
    return {
        task.name: fit(nets[task.name], [task], data, strategy=StaticWeights([1.0]), epochs=epochs)
        for task in TASKS
    }


def test_soft_sharing_with_strength_zero_trains_as_independent_networks(data):
    nets = _independent(seed=3)
    model = SoftSharing(IN, HIDDEN, HEADS, strength=0.0)
    for name, net in nets.items():
        model.columns[name].load_state_dict(net.trunk.state_dict())
        model.heads[name].load_state_dict(net.heads[name].state_dict())
    together = fit(model, TASKS, data, strategy=StaticWeights([1.0, 1.0]), epochs=15)
    apart = _histories_of_independent_networks(nets, data, 15)
    for name, history in apart.items():
        torch.testing.assert_close(
            torch.tensor(together[f"train_loss_{name}"].to_numpy()),
            torch.tensor(history[f"train_loss_{name}"].to_numpy()),
        )
    assert (together["train_penalty"] == 0).all()


def test_cross_stitch_with_self_weight_one_and_frozen_units_trains_as_independent_networks(data):
    nets = _independent(seed=4)
    model = CrossStitch(IN, HIDDEN, HEADS, self_weight=1.0)
    for alpha in model.alphas:
        alpha.requires_grad_(False)
    for name, net in nets.items():
        linears = [layer for layer in net.trunk if isinstance(layer, torch.nn.Linear)]
        for unit, linear in zip(model.columns[name], linears, strict=True):
            unit[0].load_state_dict(linear.state_dict())
        model.heads[name].load_state_dict(net.heads[name].state_dict())
    assert not any(p is a for p in model.shared_parameters() for a in model.alphas)
    together = fit(model, TASKS, data, strategy=StaticWeights([1.0, 1.0]), epochs=15)
    apart = _histories_of_independent_networks(nets, data, 15)
    for name, history in apart.items():
        torch.testing.assert_close(
            torch.tensor(together[f"train_loss_{name}"].to_numpy()),
            torch.tensor(history[f"train_loss_{name}"].to_numpy()),
        )
    # and Jacobian descent accepts the frozen model
    fit(model, TASKS, data, strategy=JacobianDescent(UPGrad()), epochs=2)


def test_mmoe_with_one_expert_is_hard_sharing(data):
    torch.manual_seed(5)
    hard = hard_sharing_mlp(IN, HIDDEN, HEADS)
    mmoe = MMoE(IN, HIDDEN, HEADS, n_experts=1)
    mmoe.experts[0].load_state_dict(hard.trunk.state_dict())
    mmoe.heads.load_state_dict(hard.heads.state_dict())
    x = data.x[:20]
    for name, out in mmoe(x).items():
        torch.testing.assert_close(out, hard(x)[name])
    a = fit(hard, TASKS, data, epochs=10)
    b = fit(mmoe, TASKS, data, epochs=10)
    torch.testing.assert_close(torch.tensor(a.to_numpy()), torch.tensor(b.to_numpy()))


# ---------------------------------------------------------------------------------------------------------
# Soft sharing's penalty
# ---------------------------------------------------------------------------------------------------------


def test_penalty_is_zero_when_the_columns_are_equal():
    model = SoftSharing(IN, HIDDEN, {"a": 1, "b": 1, "c": 2}, strength=3.0)
    for name in ("b", "c"):
        model.columns[name].load_state_dict(model.columns["a"].state_dict())
    assert model.penalty().item() == 0.0


def test_penalty_for_two_tasks_is_half_the_squared_distance_between_the_columns():
    model = SoftSharing(IN, HIDDEN, HEADS, strength=2.5)
    a, b = (torch.cat([p.detach().flatten() for p in c.parameters()]) for c in model.columns.values())
    torch.testing.assert_close(model.penalty().detach(), 2.5 * 0.5 * (a - b).pow(2).sum())


def test_penalty_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = SoftSharing(IN, HIDDEN, {"a": 1, "b": 1, "c": 1}, strength=0.7).double()
    params = list(model.parameters())
    grads = torch.autograd.grad(model.penalty(), params, materialize_grads=True)
    directions = [torch.randn_like(p) for p in params]
    eps = 1e-6
    with torch.no_grad():
        for p, v in zip(params, directions, strict=True):
            p.add_(eps * v)
        plus = model.penalty()
        for p, v in zip(params, directions, strict=True):
            p.sub_(2 * eps * v)
        minus = model.penalty()
    slope = sum((g * v).sum() for g, v in zip(grads, directions, strict=True))
    assert slope.item() == pytest.approx(((plus - minus) / (2 * eps)).item(), rel=1e-6)
    heads = {id(p) for p in model.heads.parameters()}
    assert all((g.abs().sum() == 0) == (id(p) in heads) for p, g in zip(params, grads, strict=True))


def test_fit_adds_the_penalty_and_a_strong_one_pulls_the_columns_together(data):
    def distance(model):
        a, b = (torch.cat([p.detach().flatten() for p in c.parameters()]) for c in model.columns.values())
        return (a - b).norm().item()

    start = distance(build("soft"))
    distances = {}
    for strength in (0.0, 1.0):
        torch.manual_seed(0)
        model = SoftSharing(IN, HIDDEN, HEADS, strength=strength)
        history = fit(model, TASKS, data, epochs=60, lr=0.01)
        distances[strength] = distance(model)
    assert distances[1.0] < 0.5 * start < distances[0.0]
    assert history["train_penalty"].iloc[-1] < history["train_penalty"].iloc[0]


# ---------------------------------------------------------------------------------------------------------
# Bad input gets a clear error
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SoftSharing(IN, HIDDEN, {}, strength=0.1), "at least one head"),
        (lambda: CrossStitch(IN, HIDDEN, {}), "at least one head"),
        (lambda: MMoE(IN, HIDDEN, {}, n_experts=2), "at least one head"),
        (lambda: MMoE(IN, HIDDEN, HEADS, n_experts=0), "n_experts must be at least 1"),
        (lambda: CrossStitch(IN, HIDDEN, HEADS, self_weight=1.5), r"self_weight must lie in \[0, 1\]"),
        (lambda: CrossStitch(IN, HIDDEN, HEADS, self_weight=-0.1), r"self_weight must lie in \[0, 1\]"),
        (lambda: SoftSharing(IN, HIDDEN, HEADS, strength=-1.0), "strength must be non-negative"),
        (lambda: SoftSharing(IN, HIDDEN, HEADS, strength=float("nan")), "strength must be non-negative"),
        (lambda: MMoE(IN, [], HEADS, n_experts=2), "at least one hidden layer"),
        (lambda: CrossStitch(IN, [4, 0], HEADS), "every hidden width must be positive"),
        (lambda: SoftSharing(IN, HIDDEN, {"a": 0}, strength=0.1), "at least one output"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(make, message):
    with pytest.raises(ValueError, match=message):
        make()
