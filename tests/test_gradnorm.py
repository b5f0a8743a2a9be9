import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mtlcourse.data import gradnorm_synthetic
from mtlcourse.gradnorm import GradNorm
from mtlcourse.models import MultiTaskModel, hard_sharing_mlp
from mtlcourse.tasks import Task
from mtlcourse.training import fit

# --- Helpers -----------------------------------------------------------------------------------------


def _linear_model(weight, names=("a", "b")):
    """Trunk: one bias-free Linear whose weight is ``weight`` (W itself); heads: identities."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    trunk = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        trunk.weight.copy_(weight)
    return MultiTaskModel(trunk, {name: nn.Identity() for name in names})


def _mlp_and_losses(m=3, seed=0):
    """A small hard-sharing MLP and a function giving its m task losses on a fixed batch."""
    torch.manual_seed(seed)
    names = [f"t{i}" for i in range(m)]
    model = hard_sharing_mlp(4, [6, 5], dict.fromkeys(names, 1))
    x = torch.randn(16, 4)
    ys = {name: (i + 1.0) * torch.randn(16) for i, name in enumerate(names)}

    def losses():
        out, features = model(x, return_features=True)
        return torch.stack([(out[n] - ys[n]).pow(2).mean() for n in names]), features

    return model, losses


def _explicit_weight_grad(weights, losses, shared, initial, alpha, detach_target=True):
    """GradNorm's gradient dL_grad/dw by autograd on the paper's expression (double backward)."""
    w = weights.clone().double().requires_grad_(True)
    g = torch.stack(
        [
            torch.linalg.vector_norm(
                torch.autograd.grad(w[i] * losses[i].double(), shared, retain_graph=True, create_graph=True)[
                    0
                ]
            )
            for i in range(len(losses))
        ]
    )
    ratios = losses.detach().double() / initial
    r = ratios / ratios.mean()
    target = g.mean() * r**alpha
    if detach_target:
        target = target.detach()
    (grad,) = torch.autograd.grad((g - target).abs().sum(), w)
    return grad


# --- The weights -------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    total=st.sampled_from([None, 0.5, 1.0, 3.5]),
    lr=st.sampled_from([1e-3, 0.1, 1.0, 10.0]),
    optimizer=st.sampled_from(["adam", "sgd"]),
    seed=st.integers(0, 1000),
)
def test_weights_stay_normalised_and_positive(total, lr, optimizer, seed):
    model, losses = _mlp_and_losses(m=3, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gn = GradNorm(alpha=1.5, lr=lr, total=total, optimizer=optimizer)
    expected_sum = 3.0 if total is None else total
    for _ in range(8):
        opt.zero_grad()
        used = gn.backward(*losses()[:1], model, None)
        opt.step()
        for w in (used, gn.current_weights):
            assert w.sum().item() == pytest.approx(expected_sum, rel=1e-9)
            assert (w > 0).all()


def test_a_too_large_learning_rate_is_caught_by_the_floor():
    # SGD with lr 10 on gradients of size ||grad_W L_i|| sends one weight far below 0: the floor keeps
    # it at min_weight before the renormalisation (the paper's collapse, made harmless).
    model, losses = _mlp_and_losses(m=2)
    gn = GradNorm(alpha=0.0, lr=10.0, optimizer="sgd", min_weight=1e-3)
    gn.backward(losses()[0], model, None)
    n = gn.last_grad_norms.tolist()  # the weights were 1: G_i = ||grad_W L_i||
    big, small = (0, 1) if n[0] > n[1] else (1, 0)
    assert 1 - 10 * n[big] < 0  # the plain step would have collapsed the weight
    grown = 1 + 10 * n[small]
    expected = torch.zeros(2, dtype=torch.float64)
    expected[big], expected[small] = 2 * 1e-3 / (1e-3 + grown), 2 * grown / (1e-3 + grown)
    torch.testing.assert_close(gn.current_weights, expected)


def test_weight_gradient_is_the_closed_form_with_a_detached_target():
    model, losses = _mlp_and_losses(m=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gn = GradNorm(alpha=1.5, lr=0.05)
    shared = model.trunk[-2].weight  # the last Linear of the trunk
    for _ in range(3):  # move away from equal weights and unit inverse rates
        opt.zero_grad()
        gn.backward(losses()[0], model, None)
        opt.step()
    before = gn.current_weights
    current, _ = losses()
    explicit = _explicit_weight_grad(before, current, shared, gn.initial_losses, alpha=1.5)
    not_detached = _explicit_weight_grad(
        before, current, shared, gn.initial_losses, alpha=1.5, detach_target=False
    )
    gn.backward(current, model, None)
    assert not torch.allclose(gn.last_inverse_rates, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(gn.last_weight_grad, explicit, rtol=1e-5, atol=1e-7)
    # the oracle can tell: letting the gradient flow through the target G_bar r^alpha changes it
    assert not torch.allclose(not_detached, explicit, rtol=1e-3)
    # and the closed form, written out: sign(G_i - target_i) ||grad_W L_i||
    norms = gn.last_grad_norms / before
    torch.testing.assert_close(
        gn.last_weight_grad, torch.sign(gn.last_grad_norms - gn.last_targets) * norms, rtol=0, atol=0
    )


def test_hand_checked_steps_on_a_two_task_linear_model():
    # W = [[1, 2]]; L_a = (W . (1, 0))^2, L_b = 4 ||W||^2.
    model = _linear_model([[1.0, 2.0]])
    W = model.trunk.weight

    def losses():
        return torch.stack([(W[0, 0]) ** 2, 4 * W.pow(2).sum()])

    gn = GradNorm(alpha=1.5, lr=0.01)  # the default update: a plain gradient step, as in the paper

    # Step 1: L = (1, 20); grad_W L_a = (2, 0), grad_W L_b = 8 W = (8, 16): norms 2 and 8 sqrt(5) = 17.889.
    n = (2.0, 8 * math.sqrt(5))
    used = gn.backward(losses(), model, None)
    G = n  # weights 1, 1
    G_bar = sum(G) / 2  # 9.944
    # first step: L(t) = L(0), every ratio is 1, so r = (1, 1) and both targets are G_bar
    torch.testing.assert_close(gn.last_inverse_rates, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(gn.last_grad_norms, torch.tensor(G, dtype=torch.float64))
    assert gn.last_gradnorm_loss == pytest.approx(abs(G[0] - G_bar) + abs(G[1] - G_bar))  # 15.889
    grad = (-n[0], +n[1])  # G_a below its target, G_b above
    torch.testing.assert_close(gn.last_weight_grad, torch.tensor(grad, dtype=torch.float64))
    stepped = (1 - 0.01 * grad[0], 1 - 0.01 * grad[1])  # (1.02, 0.8211)
    new = tuple(2 * s / sum(stepped) for s in stepped)  # (1.1080, 0.8920)
    torch.testing.assert_close(used, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(gn.current_weights, torch.tensor(new, dtype=torch.float64))
    # the network got grad of 1 * L_a + 1 * L_b = (2, 0) + (8, 16)
    torch.testing.assert_close(W.grad, torch.tensor([[10.0, 16.0]]))

    # Step 2: W = [[0.5, 0.5]]: L = (0.25, 2); grads (1, 0) and (4, 4): norms 1 and 4 sqrt(2).
    with torch.no_grad():
        W.copy_(torch.tensor([[0.5, 0.5]]))
    W.grad = None
    w = new
    n = (1.0, 4 * math.sqrt(2))
    G = (w[0] * n[0], w[1] * n[1])  # (1.108, 5.046)
    G_bar = sum(G) / 2
    ratios = (0.25 / 1.0, 2.0 / 20.0)  # (0.25, 0.1)
    r = tuple(q / (sum(ratios) / 2) for q in ratios)  # (1.4286, 0.5714)
    targets = tuple(G_bar * ri**1.5 for ri in r)  # (5.254, 1.329)
    l_grad = abs(G[0] - targets[0]) + abs(G[1] - targets[1])  # 7.862
    grad = (-n[0], +n[1])  # G_a = 1.108 < 5.254, G_b = 5.046 > 1.329
    stepped = (w[0] - 0.01 * grad[0], w[1] - 0.01 * grad[1])
    new = tuple(2 * s / sum(stepped) for s in stepped)  # (1.1447, 0.8553)

    used = gn.backward(losses(), model, None)
    torch.testing.assert_close(used, torch.tensor(w, dtype=torch.float64))
    torch.testing.assert_close(gn.last_grad_norms, torch.tensor(G, dtype=torch.float64))
    torch.testing.assert_close(gn.last_inverse_rates, torch.tensor(r, dtype=torch.float64))
    torch.testing.assert_close(gn.last_targets, torch.tensor(targets, dtype=torch.float64))
    assert gn.last_gradnorm_loss == pytest.approx(l_grad)
    torch.testing.assert_close(gn.last_weight_grad, torch.tensor(grad, dtype=torch.float64))
    torch.testing.assert_close(gn.current_weights, torch.tensor(new, dtype=torch.float64))
    expected = torch.tensor([[w[0] * 1.0 + w[1] * 4.0, w[1] * 4.0]])
    torch.testing.assert_close(W.grad, expected)


def test_adam_s_first_step_moves_each_weight_by_lr():
    # Adam's first step is lr * g / (|g| + eps), i.e. lr * sign(g), whatever the scale of g.
    model = _linear_model([[1.0, 2.0]])
    W = model.trunk.weight
    gn = GradNorm(alpha=1.5, lr=0.01, optimizer="adam")
    gn.backward(torch.stack([W[0, 0] ** 2, 4000 * W.pow(2).sum()]), model, None)
    # (1 + 0.01, 1 - 0.01) already sums to 2
    torch.testing.assert_close(gn.current_weights, torch.tensor([1.01, 0.99], dtype=torch.float64))


@pytest.mark.parametrize("total", [None, 0.5])
def test_the_default_update_is_a_gradient_step_on_the_weights_then_renormalisation(total):
    # Oracle: the gradient of the paper's L_grad by double-backward autograd; the step is the paper's
    # Algorithm 1, w <- w - lr * grad, then w <- T w / sum(w) (no clamp is hit at this lr).
    model, losses = _mlp_and_losses(m=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lr = 0.02
    gn = GradNorm(alpha=1.5, lr=lr, total=total)
    assert gn.optimizer == "sgd"
    shared = model.trunk[-2].weight
    T = 3.0 if total is None else total
    for _ in range(4):
        before = gn.weights(torch.zeros(3), model)
        current, _ = losses()
        initial = current.detach().double() if gn.initial_losses is None else gn.initial_losses
        grad = _explicit_weight_grad(before, current, shared, initial, alpha=1.5)
        stepped = before - lr * grad
        assert (stepped > gn.min_weight).all()
        opt.zero_grad()
        gn.backward(current, model, None)
        torch.testing.assert_close(gn.current_weights, T * stepped / stepped.sum())
        assert gn.current_weights.sum().item() == pytest.approx(T, rel=1e-12)
        opt.step()


def test_reset_forgets_the_run():
    model, losses = _mlp_and_losses(m=2)
    gn = GradNorm(alpha=1.5, lr=0.05)
    for _ in range(3):
        model.zero_grad()
        gn.backward(losses()[0], model, None)
    assert not torch.allclose(gn.current_weights, torch.ones(2, dtype=torch.float64))
    gn.reset()
    assert gn.current_weights is None and gn.initial_losses is None and gn.last_grad_norms is None
    torch.testing.assert_close(gn.weights(torch.zeros(2), model), torch.ones(2, dtype=torch.float64))
    # the next step starts a new run: its losses become L_i(0), so every inverse rate is 1 again
    model.zero_grad()
    current = losses()[0]
    gn.backward(current, model, None)
    torch.testing.assert_close(gn.initial_losses, current.detach().double())
    torch.testing.assert_close(gn.last_inverse_rates, torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_fits_in_a_row_with_one_instance_give_the_same_history(optimizer):
    splits = gradnorm_synthetic(60, 20, 5, sigmas=(1.0, 10.0), in_features=5, out_features=3, seed=1)
    tasks = [Task("task_0", "regression"), Task("task_1", "regression")]
    gn = GradNorm(alpha=0.12, lr=0.01, optimizer=optimizer)
    histories = []
    for _ in range(2):
        torch.manual_seed(0)
        model = hard_sharing_mlp(5, [8, 8], {"task_0": 3, "task_1": 3})
        histories.append(fit(model, tasks, splits.train, splits.val, strategy=gn, epochs=5, batch_size=20))
    assert histories[0]["weight_task_1"].nunique() > 1  # the weights did move
    pd.testing.assert_frame_equal(histories[0], histories[1])


def test_the_network_gets_the_gradient_of_the_weighted_sum_with_the_weights_before_the_update():
    model, losses = _mlp_and_losses(m=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gn = GradNorm(alpha=1.0, lr=0.1)
    for step in range(4):
        before = gn.weights(torch.zeros(3), model)
        current, features = losses()
        expected = torch.autograd.grad(
            (before.float() * current).sum(), list(model.parameters()), retain_graph=True
        )
        opt.zero_grad()
        used = gn.backward(current, model, features)
        torch.testing.assert_close(used, before)
        for p, g in zip(model.parameters(), expected, strict=True):
            torch.testing.assert_close(p.grad, g)
        if step:
            assert not torch.allclose(gn.current_weights, before)  # the update came after
        opt.step()


@settings(max_examples=10, deadline=None)
@given(
    scales=st.lists(st.floats(0.1, 10.0), min_size=2, max_size=4).filter(lambda c: 2 < max(c) / min(c) < 10),
    seed=st.integers(0, 1000),
)
def test_with_alpha_zero_the_gradient_norms_move_toward_equality(scales, seed):
    # A fixed network, so every loss ratio stays 1 and alpha = 0 makes every target G_bar: the weights
    # alone change G_i = w_i ||grad_W L_i||. With L_i = c_i ||W||^2 / 2, ||grad_W L_i|| = c_i ||W||, and
    # equal G_i means w_i proportional to 1 / c_i.
    m = len(scales)
    gen = torch.Generator().manual_seed(seed)
    model = _linear_model(torch.randn(1, 3, generator=gen), names=[f"t{i}" for i in range(m)])
    W = model.trunk.weight
    c = torch.tensor(scales, dtype=torch.float64)
    equalising = m * (1 / c) / (1 / c).sum()

    def step(gn):
        gn.backward(torch.stack([ci * W.pow(2).sum() / 2 for ci in scales]), model, None)
        g = gn.last_grad_norms
        return (g.max() / g.min()).item(), (gn.current_weights - equalising).abs().max().item()

    # The paper's update steps w_i by lr * c_i ||W||: lr is set so that the largest step is 0.02. Adam
    # moves each weight by about lr = 0.05 a step, whatever c_i.
    for gn in (
        GradNorm(alpha=0.0, lr=0.02 / (max(scales) * W.norm().item())),
        GradNorm(alpha=0.0, lr=0.05, optimizer="adam"),
    ):
        first_spread, first_distance = step(gn)
        assert first_spread == pytest.approx(max(scales) / min(scales))
        for _ in range(200):
            spread, distance = step(gn)
        assert spread < first_spread
        assert distance < first_distance
        # the weights end up oscillating within a few steps of the equalising ones
        assert distance < 0.1
        assert spread < 1.25


def test_training_the_paper_s_synthetic_tasks_gives_the_large_task_a_small_weight():
    # Chen et al. (2018), Sec. 4: two tasks of scales 1 and 100; the paper reports weights about
    # proportional to 1/sigma, (1.98, 0.02) at T = 2. A small version (Chapter 5's): 10 inputs and
    # outputs, 3-layer ReLU trunk of width 50, 500 rows, 200 Adam steps for the network, the paper's
    # update on the weights; alpha = 0.12 as in the paper's synthetic experiment.
    splits = gradnorm_synthetic(500, 10, 10, sigmas=(1.0, 100.0), seed=0, in_features=10, out_features=10)
    torch.manual_seed(0)
    model = hard_sharing_mlp(10, [50] * 3, {"task_0": 10, "task_1": 10})
    tasks = [Task(f"task_{i}", "regression") for i in range(2)]
    gn = GradNorm(alpha=0.12, lr=1e-3)
    history = fit(model, tasks, splits.train, strategy=gn, epochs=40, lr=3e-3, batch_size=100)
    w = history[["weight_task_0", "weight_task_1"]].to_numpy()
    assert w.sum(axis=1) == pytest.approx(2.0)
    late = w[-10:].mean(axis=0)  # the last 50 steps
    assert late[0] > 1.75 and late[1] < 0.25
    assert late[0] / late[1] > 10
    assert gn.current_weights[1] < 0.25
    assert gn.last_grad_norms.shape == gn.last_inverse_rates.shape == (2,)


# --- Bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"total": 0.0}, "total"),
        ({"total": -2.0}, "total"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"min_weight": 0.0}, "min_weight"),
        ({"total": 1.0, "min_weight": 1.0}, "min_weight"),
        ({"layer": nn.ReLU()}, "no weight"),
        ({"layer": torch.zeros(3)}, "requires grad"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradNorm(**kwargs)


def test_a_trunk_without_linear_layer_needs_a_layer():
    model = MultiTaskModel(nn.Tanh(), {"a": nn.Linear(3, 1), "b": nn.Linear(3, 1)})
    out = model(torch.randn(4, 3))
    losses = torch.stack([out["a"].pow(2).mean() + 1, out["b"].pow(2).mean() + 1])
    with pytest.raises(ValueError, match=r"no nn\.Linear layer.*layer="):
        GradNorm().backward(losses, model, None)


def test_a_layer_outside_the_trunk_is_refused():
    model, losses = _mlp_and_losses(m=2)
    with pytest.raises(ValueError, match=r"not a parameter of model\.trunk"):
        GradNorm(layer=model.heads["t0"]).backward(losses()[0], model, None)


def test_an_explicit_layer_is_used():
    model, losses = _mlp_and_losses(m=2)
    first = model.trunk[0].weight
    gn = GradNorm(layer=first)
    current, _ = losses()
    norms = [
        torch.linalg.vector_norm(torch.autograd.grad(current[i], first, retain_graph=True)[0]) for i in (0, 1)
    ]
    gn.backward(current, model, None)
    torch.testing.assert_close(gn.last_grad_norms, torch.stack(norms).double())


@pytest.mark.parametrize("first", [0.0, -1.0, float("nan")])
def test_a_non_positive_initial_loss_is_refused(first):
    model = _linear_model([[1.0, 2.0]])
    W = model.trunk.weight
    losses = torch.stack([W.sum() * 0 + first, W.pow(2).sum()])
    with pytest.raises(ValueError, match="initial loss of task 'a'"):
        GradNorm().backward(losses, model, None)


def test_a_negative_loss_later_and_a_changed_number_of_tasks_are_refused():
    model = _linear_model([[1.0, 2.0]])
    W = model.trunk.weight
    gn = GradNorm()
    gn.backward(torch.stack([W.sum(), W.pow(2).sum()]), model, None)
    with pytest.raises(ValueError, match="non-negative"):
        gn.backward(torch.stack([-W.sum(), W.pow(2).sum()]), model, None)
    with pytest.raises(ValueError, match="3 losses for a model with 2 tasks"):
        gn.backward(torch.stack([W.sum(), W.sum(), W.sum()]), model, None)
    with pytest.raises(ValueError, match="started with 2 tasks, got 3"):
        gn.backward(torch.stack([W.sum(), W.sum(), W.sum()]), _linear_model([[1.0, 2.0]], "abc"), None)


def test_repr_names_the_settings():
    assert repr(GradNorm(alpha=0.12, lr=0.02)) == (
        "GradNorm(alpha=0.12, lr=0.02, total=None, layer=last Linear of the trunk, optimizer='sgd', "
        "min_weight=0.0001)"
    )


# --- The synthetic data ------------------------------------------------------------------------------


def test_synthetic_splits_have_the_paper_s_shapes():
    s = gradnorm_synthetic(30, 20, 10, sigmas=(1.0, 10.0, 100.0))
    for part, n in [(s.train, 30), (s.val, 20), (s.test, 10)]:
        assert part.x.shape == (n, 250) and part.x.dtype == torch.float32
        assert part.task_names == ["task_0", "task_1", "task_2"]
        for name, sigma in zip(part.task_names, (1.0, 10.0, 100.0), strict=True):
            y = part.targets[name]
            assert y.shape == (n, 100) and y.dtype == torch.float32
            assert y.abs().max().item() <= sigma


def test_synthetic_targets_are_scaled_tanh_of_related_linear_maps():
    # Oracle: atanh(y_i / sigma_i) is linear in x, with matrix s (B + eps_i); least squares recovers it.
    d, out, b, e = 20, 50, 10.0, 3.5
    s = gradnorm_synthetic(400, 1, 1, sigmas=(2.0, 50.0), in_features=d, out_features=out, seed=3)
    x = s.train.x.double()
    maps = []
    for name, sigma in [("task_0", 2.0), ("task_1", 50.0)]:
        z = torch.atanh((s.train.targets[name].double() / sigma).clamp(-1 + 1e-6, 1 - 1e-6))
        fit_ = torch.linalg.lstsq(x, z).solution  # (d, out)
        keep = z.abs().max(dim=1).values < 4  # rows where float32 tanh is not too close to +-1
        assert (x[keep] @ fit_ - z[keep]).abs().max().item() < 0.05
        maps.append(fit_.T)
    scale = 1 / math.sqrt(d * (b**2 + e**2))
    # entries of s (B + eps_i) have sd s sqrt(b^2 + e^2) = 1/sqrt(d); the difference of two tasks' maps is
    # s (eps_1 - eps_0), of sd s e sqrt(2): the tasks share B
    assert maps[0].std().item() == pytest.approx(1 / math.sqrt(d), rel=0.1)
    assert (maps[1] - maps[0]).std().item() == pytest.approx(scale * e * math.sqrt(2), rel=0.1)
    assert torch.corrcoef(torch.stack([maps[0].flatten(), maps[1].flatten()]))[0, 1].item() == pytest.approx(
        b**2 / (b**2 + e**2), abs=0.05
    )


def test_default_scale_avoids_saturation_and_standard_normal_inputs_saturate():
    default = gradnorm_synthetic(200, 1, 1, sigmas=(1.0,)).train
    literal = gradnorm_synthetic(200, 1, 1, sigmas=(1.0,), input_scale=1.0).train
    for part in (default, literal):
        assert part.x.mean().abs().item() < 0.02 and part.x.std().item() == pytest.approx(1.0, rel=0.02)
    # E tanh(Z)^2 for Z ~ N(0, 1) is 0.394; with pre-activations of sd 168 it is 1 up to ~0.5 %
    assert default.targets["task_0"].pow(2).mean().item() == pytest.approx(0.394, abs=0.03)
    assert literal.targets["task_0"].pow(2).mean().item() > 0.99


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (gradnorm_synthetic(5, 5, 5, seed=k) for k in (1, 1, 2))
    assert torch.equal(a.train.targets["task_1"], b.train.targets["task_1"])
    assert not torch.equal(a.train.targets["task_1"], c.train.targets["task_1"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_train": 0}, "at least one row"),
        ({"n_test": -1}, "at least one row"),
        ({"sigmas": ()}, "at least one task"),
        ({"sigmas": (1.0, 0.0)}, "positive"),
        ({"sigmas": (1.0, float("inf"))}, "positive and finite"),
        ({"in_features": 0}, "in_features"),
        ({"out_features": 0}, "out_features"),
        ({"b_std": -1.0}, "b_std"),
        ({"eps_std": float("nan")}, "eps_std"),
        ({"b_std": 0.0, "eps_std": 0.0}, "both 0"),
        ({"input_scale": 0.0}, "input_scale"),
    ],
)
def test_synthetic_data_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gradnorm_synthetic(**{"n_train": 5, "n_val": 5, "n_test": 5, **kwargs})
