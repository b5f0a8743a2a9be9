import pytest
import torch

from mtlcourse.aggregation import MGDA, Mean, PCGrad, UPGrad
from mtlcourse.exercises import (
    check_aggregator,
    check_gradnorm_loss,
    check_top_k_gate,
    gradnorm_loss_reference,
    top_k_gate_reference,
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
