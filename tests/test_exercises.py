import pytest
import torch
import torch.nn.functional as F

from mtlcourse.aggregation import MGDA, Mean, PCGrad, UPGrad
from mtlcourse.exercises import (
    check_aggregator,
    check_delta_m,
    check_dwa_weights,
    check_gradnorm_loss,
    check_multitask_loss,
    check_shared_step,
    check_top_k_gate,
    check_upgrad_weights,
    delta_m_reference,
    dwa_weights_reference,
    gradnorm_loss_reference,
    multitask_loss_reference,
    shared_step_reference,
    top_k_gate_reference,
    upgrad_weights_reference,
)


def pcgrad_two_tasks(J):
    g1, g2 = J
    inner = g1 @ g2
    if inner < 0:
        return (g1 - inner / (g2 @ g2) * g2) + (g2 - inner / (g1 @ g1) * g1)
    return g1 + g2


def test_a_correct_pcgrad_passes_and_a_mean_instead_of_a_sum_fails(capsys):
    assert check_aggregator(pcgrad_two_tasks, PCGrad())
    assert not check_aggregator(lambda J: pcgrad_two_tasks(J) / 2, PCGrad())
    assert "✗ Jacobian" in capsys.readouterr().out


def test_projecting_without_checking_for_conflict_is_caught():
    def always_project(J):
        g1, g2 = J
        inner = g1 @ g2
        return (g1 - inner / (g2 @ g2) * g2) + (g2 - inner / (g1 @ g1) * g1)

    assert not check_aggregator(always_project, PCGrad())


def test_mgda_closed_form_passes_and_the_mean_fails():
    def mgda_two_tasks(J):
        g1, g2 = J
        gap = (g1 - g2) @ (g1 - g2)
        w1 = 0.5 if gap == 0 else ((g2 - g1) @ g2 / gap).clamp(0.0, 1.0)
        return w1 * g1 + (1 - w1) * g2

    assert check_aggregator(mgda_two_tasks, MGDA())
    assert not check_aggregator(Mean(), MGDA())


def test_upgrad_is_half_of_pcgrad_for_two_tasks():
    assert check_aggregator(lambda J: pcgrad_two_tasks(J) / 2, UPGrad())


def test_a_wrong_shape_is_reported(capsys):
    assert not check_aggregator(lambda J: J, Mean())
    assert "expected a tensor of shape (5,)" in capsys.readouterr().out


def test_gradnorm_loss_with_the_target_detached_passes_and_without_fails(capsys):
    assert check_gradnorm_loss(gradnorm_loss_reference)

    def not_detached(weights, grad_norms, inverse_rates, alpha):
        G = weights * grad_norms
        return (G - G.mean() * inverse_rates**alpha).abs().sum()

    assert not check_gradnorm_loss(not_detached)
    assert "is the target held constant?" in capsys.readouterr().out


def test_gradnorm_reference_gradient_is_the_closed_form():
    w = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    norms = torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64)
    rates = torch.tensor([1.2, 0.8, 1.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(gradnorm_loss_reference(w, norms, rates, 1.5), w)
    G = w.detach() * norms
    expected = torch.sign(G - G.mean() * rates**1.5) * norms
    torch.testing.assert_close(grad, expected)


def test_the_reference_loss_has_the_gradient_the_gradnorm_strategy_steps_on():
    from mtlcourse.gradnorm import GradNorm
    from mtlcourse.models import hard_sharing_mlp

    torch.manual_seed(0)
    model = hard_sharing_mlp(4, [6, 5], {"a": 1, "b": 1})
    x, ya, yb = torch.randn(16, 4), torch.randn(16), 10 * torch.randn(16)
    strategy = GradNorm(alpha=1.5)
    for _ in range(2):  # on the second step the inverse training rates differ from 1
        outputs, features = model(x, return_features=True)
        losses = torch.stack([(outputs["a"] - ya).pow(2).mean(), (outputs["b"] - yb).pow(2).mean()])
        model.zero_grad()
        used = strategy.backward(losses, model, features).double()
    norms = strategy.last_grad_norms.double() / used
    weights = used.clone().requires_grad_(True)
    rates = strategy.last_inverse_rates.double()
    (grad,) = torch.autograd.grad(gradnorm_loss_reference(weights, norms, rates, 1.5), weights)
    torch.testing.assert_close(grad, strategy.last_weight_grad.double())


# ---------------------------------------------------------------------------------------------------------
# The top-k gate (Chapter 8)
# ---------------------------------------------------------------------------------------------------------


def masked_softmax_gate(logits, k):
    """A reader's correct answer, written differently from the reference: mask, then softmax."""
    threshold = logits.topk(k, dim=-1).values[..., -1:]
    return torch.softmax(logits.masked_fill(logits < threshold, float("-inf")), dim=-1)


def test_a_correct_top_k_gate_passes(capsys):
    assert check_top_k_gate(masked_softmax_gate)
    assert check_top_k_gate(top_k_gate_reference)
    assert "✓" in capsys.readouterr().out


def softmax_over_all(logits, k):
    return torch.softmax(logits, dim=-1)


def top_k_not_renormalised(logits, k):
    weights = torch.softmax(logits, dim=-1)
    threshold = logits.topk(k, dim=-1).values[..., -1:]
    return weights * (logits >= threshold)


def top_k_minus_one(logits, k):
    return masked_softmax_gate(logits, max(k - 1, 1))


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (softmax_over_all, "non-zero weights, expected exactly k"),
        (top_k_not_renormalised, "rows must sum to 1"),
        (top_k_minus_one, "non-zero weights, expected exactly k"),
        (lambda logits, k: logits.topk(k).values, "expected weights of shape"),
        (lambda logits, k: 1 / 0, "raised ZeroDivisionError"),
    ],
    ids=["softmax-over-all", "not-renormalised", "top-(k-1)", "values-not-weights", "raises"],
)
def test_plausible_wrong_gates_are_rejected_with_a_readable_message(wrong, message, capsys):
    assert not check_top_k_gate(wrong)
    out = capsys.readouterr().out
    assert out.startswith("✗ trial 0")
    assert message in out


def test_a_gate_that_breaks_the_gradient_is_rejected(capsys):
    assert not check_top_k_gate(lambda logits, k: top_k_gate_reference(logits.detach(), k))
    assert "not differentiable" in capsys.readouterr().out


def test_the_reference_is_the_softmax_renormalised_over_the_k_largest_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [0.0, 1.0, -2.0, -3.0]], dtype=torch.float64)
    # closed form for k=2: rows keep {3.0, 2.0} and {1.0, 0.0}
    e = torch.exp
    expected = torch.tensor(
        [
            [e(torch.tensor(2.0)) / (e(torch.tensor(2.0)) + e(torch.tensor(3.0))), 0, 0, 0],
            [1 / (1 + e(torch.tensor(1.0))), e(torch.tensor(1.0)) / (1 + e(torch.tensor(1.0))), 0, 0],
        ],
        dtype=torch.float64,
    )
    expected[0, 3] = 1 - expected[0, 0]
    torch.testing.assert_close(top_k_gate_reference(logits, 2), expected)
    torch.testing.assert_close(top_k_gate_reference(logits, 4), torch.softmax(logits, dim=-1))


@pytest.mark.parametrize("k", [0, 5])
def test_the_reference_refuses_k_outside_1_to_n_experts(k):
    with pytest.raises(ValueError, match="k must be between 1 and the number of experts"):
        top_k_gate_reference(torch.zeros(2, 4), k)


# ---------------------------------------------------------------------------------------------------------
# The weighted sum of MSE and BCE with logits (Chapter 1)
# ---------------------------------------------------------------------------------------------------------


def loss_with_modules(outputs, targets, weights):
    """A reader's correct answer with torch.nn's loss modules."""
    mse, bce = torch.nn.MSELoss(), torch.nn.BCEWithLogitsLoss()
    return weights[0] * mse(outputs["regression"], targets["regression"]) + weights[1] * bce(
        outputs["classification"], targets["classification"]
    )


def loss_by_hand(outputs, targets, weights):
    """The closed form: BCE with logits is softplus(z) - y z, computed here in float32."""
    o, y = outputs["regression"].float(), targets["regression"].float()
    z, c = outputs["classification"].float(), targets["classification"].float()
    return weights[0] * ((o - y) ** 2).mean() + weights[1] * (F.softplus(z) - c * z).mean()


@pytest.mark.parametrize("candidate", [multitask_loss_reference, loss_with_modules, loss_by_hand])
def test_a_correct_multitask_loss_passes(candidate, capsys):
    assert check_multitask_loss(candidate)
    assert capsys.readouterr().out.startswith("✓")


def test_the_reference_is_the_weighted_closed_form_and_its_gradient_the_textbook_one():
    generator = torch.Generator().manual_seed(1)
    o, y, z = (torch.randn(7, generator=generator, dtype=torch.float64) for _ in range(3))
    c = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    o.requires_grad_(True)
    z.requires_grad_(True)
    loss = multitask_loss_reference(
        {"regression": o, "classification": z}, {"regression": y, "classification": c}, (0.3, 1.7)
    )
    mse = ((o - y) ** 2).sum() / 7
    bce = -(c * torch.log(torch.sigmoid(z)) + (1 - c) * torch.log(1 - torch.sigmoid(z))).sum() / 7
    torch.testing.assert_close(loss, 0.3 * mse + 1.7 * bce)
    grad_o, grad_z = torch.autograd.grad(loss, [o, z])
    torch.testing.assert_close(grad_o, 0.3 * 2 * (o - y).detach() / 7)
    torch.testing.assert_close(grad_z, 1.7 * (torch.sigmoid(z) - c).detach() / 7)


def _mse(outputs, targets, **kwargs):
    return F.mse_loss(outputs["regression"], targets["regression"], **kwargs)


def _bce(outputs, targets, **kwargs):
    return F.binary_cross_entropy_with_logits(outputs["classification"], targets["classification"], **kwargs)


def double_sigmoid(o, t, w):
    return w[0] * _mse(o, t) + w[1] * F.binary_cross_entropy_with_logits(
        torch.sigmoid(o["classification"]), t["classification"]
    )


def bce_loss_on_logits(o, t, w):
    return w[0] * _mse(o, t) + w[1] * torch.nn.BCELoss()(o["classification"], t["classification"])


def bce_formula_on_logits(o, t, w):
    z, c = o["classification"], t["classification"]
    return w[0] * _mse(o, t) - w[1] * (c * z.log() + (1 - c) * (1 - z).log()).mean()


def summed_over_the_batch(o, t, w):
    return w[0] * _mse(o, t, reduction="sum") + w[1] * _bce(o, t, reduction="sum")


def regression_summed(o, t, w):
    return w[0] * _mse(o, t, reduction="sum") + w[1] * _bce(o, t)


def weights_swapped(o, t, w):
    return w[1] * _mse(o, t) + w[0] * _bce(o, t)


def weights_ignored(o, t, w):
    return _mse(o, t) + _bce(o, t)


def weights_averaged(o, t, w):
    return (_mse(o, t) + _bce(o, t)) / 2


def target_as_a_column(o, t, w):
    """(N,) outputs against (N, 1) targets: F.mse_loss broadcasts them to (N, N) (with a warning)."""
    return w[0] * F.mse_loss(o["regression"], t["regression"].view(-1, 1)) + w[1] * _bce(o, t)


def class_targets_as_integers(o, t, w):
    return w[0] * _mse(o, t) + w[1] * F.binary_cross_entropy_with_logits(
        o["classification"], t["classification"].long()
    )


def computed_with_item(o, t, w):
    return torch.tensor(loss_with_modules(o, t, w).item())


def no_mean(o, t, w):
    return _mse(o, t, reduction="none")


def outputs_detached(o, t, w):
    return loss_with_modules({name: output.detach() for name, output in o.items()}, t, w)


def raises(o, t, w):
    return 1 / 0


MULTITASK_LOSS_MISTAKES = [
    (double_sigmoid, "(a double sigmoid)"),
    (bce_loss_on_logits, "binary_cross_entropy (BCELoss) takes probabilities"),
    (bce_formula_on_logits, "the loss is nan: a log of the logit itself?"),
    (summed_over_the_batch, "both losses are summed over the batch instead of averaged"),
    (regression_summed, "the regression loss is summed over the batch"),
    (weights_swapped, "the weights are swapped"),
    (weights_ignored, "the weights are ignored (the plain sum"),
    (weights_averaged, "the weights are ignored (the mean"),
    (target_as_a_column, "broadcast to an N × N grid"),
    (class_targets_as_integers, "keep the class targets floating point"),
    (no_mean, "expected one number"),
    (computed_with_item, "not differentiable"),
    (outputs_detached, "not differentiable"),
    (raises, "raised ZeroDivisionError"),
]


@pytest.mark.parametrize(
    ("wrong", "message"),
    MULTITASK_LOSS_MISTAKES,
    ids=[wrong.__name__ for wrong, _ in MULTITASK_LOSS_MISTAKES],
)
def test_each_classic_multitask_loss_mistake_is_named(wrong, message, capsys):
    assert not check_multitask_loss(wrong)
    out = capsys.readouterr().out
    assert out.startswith("✗ batch 0")
    assert message in out


def test_a_loss_right_in_value_but_not_in_gradient_is_caught(capsys):
    def gradient_scaled(o, t, w):
        loss = loss_with_modules(o, t, w)
        scaled = loss_with_modules(
            {"regression": 2 * o["regression"], "classification": o["classification"]}, t, w
        )
        return loss + (scaled - scaled.detach())

    assert not check_multitask_loss(gradient_scaled)
    assert "its gradient with respect to the regression output is not" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# Dynamic Weight Average (Chapter 3)
# ---------------------------------------------------------------------------------------------------------


def dwa_with_exp(previous_losses, older_losses, temperature):
    """A reader's correct answer, written out: m exp(r_i / T) / sum_j exp(r_j / T)."""
    e = torch.exp(previous_losses / older_losses / temperature)
    return len(e) * e / e.sum()


@pytest.mark.parametrize("candidate", [dwa_weights_reference, dwa_with_exp])
def test_correct_dwa_weights_pass(candidate, capsys):
    assert check_dwa_weights(candidate)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("temperature", [0.3, 2.0, 5.0])
def test_the_dwa_reference_is_torchjds_dwa(temperature):
    scalarization = pytest.importorskip("torchjd.scalarization")
    generator = torch.Generator().manual_seed(2)
    older, previous = 0.1 + torch.rand(2, 4, generator=generator, dtype=torch.float64)
    theirs = scalarization.DWA(temperature=temperature)
    for epoch_losses in (older, previous):
        theirs(epoch_losses)  # one batch per epoch: the epoch loss is this batch's
        theirs.step()
    values = torch.ones(4, dtype=torch.float64, requires_grad=True)
    (w_theirs,) = torch.autograd.grad(theirs(values), values)  # d(sum w_i L_i)/dL = w
    torch.testing.assert_close(dwa_weights_reference(previous, older, temperature), w_theirs)


def test_the_dwa_reference_for_two_tasks_is_the_closed_form():
    previous, older = (
        torch.tensor([0.9, 0.3], dtype=torch.float64),
        torch.tensor([1.0, 0.6], dtype=torch.float64),
    )
    w = dwa_weights_reference(previous, older, 2.0)
    # two tasks: w_0 = 2 exp(r_0/T) / (exp(r_0/T) + exp(r_1/T)) = 2 sigmoid((r_0 - r_1) / T), r = (0.9, 0.5)
    expected_0 = 2 * torch.sigmoid(torch.tensor((0.9 - 0.5) / 2.0, dtype=torch.float64))
    torch.testing.assert_close(w, torch.stack([expected_0, 2 - expected_0]))


def test_the_dwa_reference_refuses_losses_of_different_shapes():
    with pytest.raises(ValueError, match="two 1-D tensors of the same shape"):
        dwa_weights_reference(torch.ones(3), torch.ones(2), 2.0)


def ratio_inverted(previous_losses, older_losses, temperature):
    return dwa_with_exp(older_losses, previous_losses, temperature)


def not_times_m(previous_losses, older_losses, temperature):
    return torch.softmax(previous_losses / older_losses / temperature, dim=0)


def no_temperature(previous_losses, older_losses, temperature):
    return len(previous_losses) * torch.softmax(previous_losses / older_losses, dim=0)


def times_the_temperature(previous_losses, older_losses, temperature):
    return len(previous_losses) * torch.softmax(previous_losses / older_losses * temperature, dim=0)


def softmax_of_the_losses(previous_losses, older_losses, temperature):
    return len(previous_losses) * torch.softmax(previous_losses / temperature, dim=0)


def exp_not_normalised(previous_losses, older_losses, temperature):
    return torch.exp(previous_losses / older_losses / temperature)


def a_list(previous_losses, older_losses, temperature):
    return dwa_with_exp(previous_losses, older_losses, temperature).tolist()


DWA_MISTAKES = [
    (ratio_inverted, "the ratio is inverted"),
    (not_times_m, "the weights sum to 1, DWA's sum to m"),
    (no_temperature, "the softmax is taken without the temperature"),
    (times_the_temperature, "the ratio is multiplied by the temperature"),
    (softmax_of_the_losses, "the softmax is taken of the losses instead of their ratios"),
    (exp_not_normalised, "DWA's sum to m = "),
    (a_list, "expected one weight per task"),
    (raises, "raised ZeroDivisionError"),
]


@pytest.mark.parametrize(
    ("wrong", "message"), DWA_MISTAKES, ids=[wrong.__name__ for wrong, _ in DWA_MISTAKES]
)
def test_each_classic_dwa_mistake_is_named(wrong, message, capsys):
    assert not check_dwa_weights(wrong)
    out = capsys.readouterr().out
    assert out.startswith("✗ case 0")
    assert message in out


# ---------------------------------------------------------------------------------------------------------
# UPGrad's weights from the Gramian (Chapter 7)
# ---------------------------------------------------------------------------------------------------------


def upgrad_two_tasks(G):
    """A closed form for m = 2: v_1 = (1, max(0, -G_12 / G_22)), v_2 symmetric, w = (v_1 + v_2) / 2."""
    g11, g12, g22 = G[0, 0], G[0, 1], G[1, 1]
    t1 = (-g12 / g22).clamp(min=0) if g22 > 0 else G.new_zeros(())
    t2 = (-g12 / g11).clamp(min=0) if g11 > 0 else G.new_zeros(())
    return torch.stack([1 + t2, 1 + t1]) / 2


def upgrad_by_cvxpy(G):
    """An independent solve of the m problems min_{v >= e_i} v^T G v (Quinton & Rey, Proposition 1)."""
    cp = pytest.importorskip("cvxpy")
    eigenvalues, vectors = torch.linalg.eigh(G)
    factor = (vectors * eigenvalues.clamp(min=0).sqrt()).numpy()  # G = factor factor^T
    m = len(G)
    solutions = []
    for i in range(m):
        v = cp.Variable(m)
        lower = torch.eye(m, dtype=torch.float64)[i].numpy()
        cp.Problem(cp.Minimize(cp.sum_squares(factor.T @ v)), [v >= lower]).solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10
        )
        solutions.append(torch.as_tensor(v.value))
    return torch.stack(solutions).mean(0)


@pytest.mark.parametrize(
    ("candidate", "tasks"),
    [(upgrad_weights_reference, (2, 3, 4, 5)), (upgrad_by_cvxpy, (2, 3, 4, 5)), (upgrad_two_tasks, (2,))],
    ids=["reference", "cvxpy", "closed-form-m2"],
)
def test_correct_upgrad_weights_pass(candidate, tasks, capsys):
    assert check_upgrad_weights(candidate, tasks=tasks)
    assert capsys.readouterr().out.startswith("✓")


def test_the_upgrad_reference_gives_a_direction_that_conflicts_with_no_task():
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        J = torch.randn(4, 7, generator=generator, dtype=torch.float64)
        J[1:] -= 1.5 * J[0]  # rows 1-3 conflict with row 0
        w = upgrad_weights_reference(J @ J.T)
        assert (w >= 0.25 - 1e-12).all()  # w = mean of v_i >= e_i
        assert (J @ (J.T @ w) >= -1e-10 * J.norm() ** 2).all()


def test_the_upgrad_reference_refuses_a_gramian_that_is_not_square():
    with pytest.raises(ValueError, match="square Gramian"):
        upgrad_weights_reference(torch.ones(2, 3))


def test_the_upgrad_checker_refuses_an_empty_list_of_tasks():
    with pytest.raises(ValueError, match="tasks must be"):
        check_upgrad_weights(upgrad_weights_reference, tasks=())


def the_mean(G):
    return G.new_full((len(G),), 1 / len(G))


def mgda_weights(G):
    return MGDA().weights_from_gramian(G)


def projections_summed(G):
    return len(G) * upgrad_weights_reference(G)


def projection_sign_flipped(G):
    """v_i = e_i + min(0, G_ij / G_jj) e_j: the correction pushes g_i further against g_j."""
    g11, g12, g22 = G[0, 0], G[0, 1], G[1, 1]
    return torch.stack([1 + (g12 / g11).clamp(max=0), 1 + (g12 / g22).clamp(max=0)]) / 2


def upgrad_as_a_list(G):
    return upgrad_weights_reference(G).tolist()


def upgrad_raises(G):
    return torch.linalg.solve(G.new_zeros(len(G), len(G)), G[0])


UPGRAD_MISTAKES = [
    (the_mean, (2, 3), "the plain mean's weights 1/m"),
    (mgda_weights, (2, 3), "MGDA's weights, the minimum-norm point"),
    (projections_summed, (3,), "the projections are summed, not averaged: divide by m = 3"),
    (projection_sign_flipped, (2,), "conflicts with task 1 (G w = "),
    (upgrad_as_a_list, (2,), "expected one weight per task"),
    (upgrad_raises, (2,), "raised "),
]


@pytest.mark.parametrize(
    ("wrong", "tasks", "message"), UPGRAD_MISTAKES, ids=[wrong.__name__ for wrong, _, _ in UPGRAD_MISTAKES]
)
def test_each_classic_upgrad_mistake_is_named(wrong, tasks, message, capsys):
    assert not check_upgrad_weights(wrong, tasks=tasks)
    out = capsys.readouterr().out
    assert out.startswith("✗ Gramian")
    assert message in out


# ---------------------------------------------------------------------------------------------------------
# One training step of a shared-trunk model (Chapter 2)
# ---------------------------------------------------------------------------------------------------------


def _weighted_loss(model, x, targets, weights):
    out = model(x)
    return weights[0] * F.mse_loss(out["sin"], targets["sin"]) + weights[1] * F.mse_loss(
        out["cos"], targets["cos"]
    )


def step_returning_a_tensor(model, x, targets, weights, optimizer, max_norm):
    optimizer.zero_grad(set_to_none=False)
    loss = _weighted_loss(model, x, targets, weights)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss


@pytest.mark.parametrize("candidate", [shared_step_reference, step_returning_a_tensor])
def test_a_correct_shared_step_passes(candidate, capsys):
    assert check_shared_step(candidate)
    assert capsys.readouterr().out.startswith("✓")


def test_the_shared_step_reference_is_one_clipped_sgd_step_on_the_weighted_loss():
    from mtlcourse.models import hard_sharing_mlp

    torch.manual_seed(0)
    model = hard_sharing_mlp(1, [4, 4], {"sin": 1, "cos": 1}).double()
    x = torch.linspace(-2, 2, 11, dtype=torch.float64)[:, None]
    targets = {"sin": x[:, 0].sin(), "cos": 3 * x[:, 0].cos()}
    weights, lr, max_norm = (0.3, 1.7), 0.1, 0.05
    params = [p.detach().clone() for p in model.parameters()]
    loss = _weighted_loss(model, x, targets, weights)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    norm = torch.cat([g.flatten() for g in grads]).norm()
    assert norm > max_norm  # the clipping bites
    expected = [p - lr * max_norm / norm * g for p, g in zip(params, grads, strict=True)]
    value = shared_step_reference(
        model, x, targets, weights, torch.optim.SGD(model.parameters(), lr), max_norm
    )
    assert value == pytest.approx(loss.item(), rel=1e-12)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(
            p.detach(), e, rtol=1e-6, atol=1e-9
        )  # clip_grad_norm_ adds 1e-6 to the norm


def without_zero_grad(model, x, targets, weights, optimizer, max_norm):
    loss = _weighted_loss(model, x, targets, weights)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def step_before_backward(model, x, targets, weights, optimizer, max_norm):
    optimizer.zero_grad()
    loss = _weighted_loss(model, x, targets, weights)
    optimizer.step()
    loss.backward()
    return loss.item()


def optimiser_on_the_heads(model, x, targets, weights, optimizer, max_norm):
    heads_only = torch.optim.SGD(model.heads.parameters(), lr=0.1)
    return step_returning_a_tensor(model, x, targets, weights, heads_only, max_norm)


def clipped_before_backward(model, x, targets, weights, optimizer, max_norm):
    optimizer.zero_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    loss = _weighted_loss(model, x, targets, weights)
    loss.backward()
    optimizer.step()
    return loss.item()


def weights_ignored(model, x, targets, weights, optimizer, max_norm):
    return step_returning_a_tensor(model, x, targets, (1.0, 1.0), optimizer, max_norm)


def weights_swapped(model, x, targets, weights, optimizer, max_norm):
    return step_returning_a_tensor(model, x, targets, weights[::-1], optimizer, max_norm)


def returns_the_outputs(model, x, targets, weights, optimizer, max_norm):
    step_returning_a_tensor(model, x, targets, weights, optimizer, max_norm)
    return model(x)


def step_raises(model, x, targets, weights, optimizer, max_norm):
    return model(x)["tan"]


SHARED_STEP_MISTAKES = [
    (without_zero_grad, "call 2: the parameters after the step differ: optimizer.zero_grad() is missing"),
    (step_before_backward, "call 1: no parameter moved — is optimizer.step() called before loss.backward()?"),
    (optimiser_on_the_heads, "the trunk never did — is the optimiser built on the heads' parameters only?"),
    (clipped_before_backward, "clip_grad_norm_ called before backward() sees no gradient yet"),
    (weights_ignored, "the weights are ignored"),
    (weights_swapped, "the weights are swapped"),
    (returns_the_outputs, "expected the loss as a number, got dict"),
    (step_raises, "raised KeyError"),
]


@pytest.mark.parametrize(
    ("wrong", "message"), SHARED_STEP_MISTAKES, ids=[wrong.__name__ for wrong, _ in SHARED_STEP_MISTAKES]
)
def test_each_classic_shared_step_mistake_is_named(wrong, message, capsys):
    assert not check_shared_step(wrong)
    out = capsys.readouterr().out
    assert out.startswith("✗ trial 0")
    assert message in out


def test_the_shared_step_checker_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    check_shared_step(shared_step_reference, trials=1)
    assert torch.equal(torch.random.get_rng_state(), state)


# ---------------------------------------------------------------- check_layer_gramian (Chapter 10)


def test_layer_gramian_reference_is_j_jt_from_autograd():
    from mtlcourse.exercises import _layer_gramian_case, layer_gramian_reference

    generator = torch.Generator().manual_seed(3)
    for bias in (True, False):
        a, delta, expected = _layer_gramian_case(generator, 7, 4, 3, bias)
        assert torch.allclose(layer_gramian_reference(a, delta, bias=bias), expected, rtol=1e-10, atol=1e-12)


def test_check_layer_gramian_accepts_the_formula_and_an_explicit_jacobian(capsys):
    from mtlcourse.exercises import check_layer_gramian, layer_gramian_reference

    def per_example_gradients(a, delta, bias=True):
        # the rows of J built by hand: vec(δ_n a_nᵀ) and δ_n
        rows = [torch.outer(d, x).flatten() for d, x in zip(delta, a, strict=True)]
        J = torch.stack(rows)
        if bias:
            J = torch.cat([J, delta], dim=1)
        return J @ J.T

    assert check_layer_gramian(layer_gramian_reference)
    assert check_layer_gramian(per_example_gradients)
    assert "with and without a bias" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "named"),
    [
        (lambda a, d: (d @ d.T) * (a @ a.T), "bias term is missing"),
        (lambda a, d: (d @ d.T) @ (a @ a.T + 1.0), "matrix product"),
        (lambda a, d: d @ d.T + a @ a.T + 1.0, "added instead of multiplied"),
        (lambda a, d, bias=True: (d @ d.T) * (a @ a.T + 1.0), "layer has no bias"),
        (lambda a, d: d.T @ d, "returned shape"),
        (lambda a, d: (d @ d.T).numpy(), "not a tensor"),
        (lambda a, d: 2 * (d @ d.T) * (a @ a.T + 1.0), "differs from J Jᵀ"),
    ],
)
def test_check_layer_gramian_names_the_mistake(wrong, named, capsys):
    from mtlcourse.exercises import check_layer_gramian

    assert not check_layer_gramian(wrong)
    out = capsys.readouterr().out
    assert out.startswith("✗") and named in out


# --- Δm% (Chapter 9) -----------------------------------------------------------------------------------


def delta_m_by_hand(model, baseline, higher):
    signed = [(-1 if higher[k] else 1) * (model[k] - baseline[k]) / baseline[k] for k in model]
    return 100 * sum(signed) / len(signed)


def test_the_delta_m_reference_is_the_formula_on_a_hand_example():
    # accuracy up 0.1 from 0.8 (−12.5 %), error up 0.1 from 0.4 (+25 %): mean +6.25 %, i.e. worse
    model, baseline = {"acc": 0.9, "err": 0.5}, {"acc": 0.8, "err": 0.4}
    assert delta_m_reference(model, baseline, {"acc": True, "err": False}) == pytest.approx(6.25)


@pytest.mark.parametrize(
    "candidate",
    [delta_m_reference, delta_m_by_hand, lambda a, b, h: torch.tensor(delta_m_by_hand(a, b, h))],
)
def test_a_correct_delta_m_passes(candidate, capsys):
    assert check_delta_m(candidate)
    assert "✓" in capsys.readouterr().out


def _relative(model, baseline, higher, divide_by=None):
    return [(model[k] - baseline[k]) / (divide_by or baseline)[k] for k in model]


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda a, b, h: -delta_m_by_hand(a, b, h), "sign is flipped"),
        (lambda a, b, h: delta_m_by_hand(a, b, h) / 100, "factor 100"),
        (lambda a, b, h: 100 * sum(_relative(a, b, h)) / len(a), "lower-is-better"),
        (
            lambda a, b, h: (
                100
                * sum(
                    (-1 if h[k] else 1) * r for k, r in zip(a, _relative(a, b, h, divide_by=a), strict=True)
                )
                / len(a)
            ),
            "divided by the method's value",
        ),
        (lambda a, b, h: len(a) * delta_m_by_hand(a, b, h), "summed"),
        (
            lambda a, b, h: 100 * sum((-1 if h[k] else 1) * (a[k] - b[k]) for k in a) / len(a),
            "absolute changes",
        ),
        (lambda a, b, h: 1 / 0, "raised ZeroDivisionError"),
        (lambda a, b, h: [delta_m_by_hand(a, b, h)], "expected one number"),
    ],
)
def test_each_classic_delta_m_mistake_is_named(wrong, message, capsys):
    assert not check_delta_m(wrong)
    assert message in capsys.readouterr().out
