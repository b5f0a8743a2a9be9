"""Checkers for the exercises: call one on your own implementation and it tells you what is wrong.

Each checker compares a reader's function with the package's tested reference on random inputs,
prints a one-line verdict (or the first counterexample) and returns ``True`` when everything agrees.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _random_jacobians(m: int, n: int, trials: int, seed: int) -> list[torch.Tensor]:
    """Float64 Jacobians, every other one with rows strongly conflicting with the first."""
    generator = torch.Generator().manual_seed(seed)
    jacobians = []
    for k in range(trials):
        J = torch.randn(m, n, generator=generator, dtype=torch.float64)
        if k % 2 and m > 1:
            J[1:] = -torch.rand(m - 1, 1, generator=generator, dtype=torch.float64) * J[0] + 0.3 * J[1:]
        jacobians.append(J)
    return jacobians


def check_aggregator(
    candidate: Callable[[torch.Tensor], torch.Tensor],
    reference: Callable[[torch.Tensor], torch.Tensor],
    *,
    m: int = 2,
    n: int = 5,
    trials: int = 100,
    seed: int = 0,
    atol: float = 1e-8,
) -> bool:
    """Compare an aggregator ``candidate(J) -> d`` with ``reference`` on random ``m × n`` Jacobians.

    Half of the Jacobians have strongly conflicting rows, so that a method which only differs from the
    reference when tasks conflict is caught.

    Parameters
    ----------
    candidate
        Your aggregator: a function from a float64 tensor of shape ``(m, n)`` to one of shape ``(n,)``.
    reference
        The aggregator to agree with, e.g. ``mtlcourse.aggregation.PCGrad()``.
    m, n, trials, seed
        Shape and number of the random Jacobians, and the seed that draws them.
    atol
        Largest absolute difference accepted, entry by entry.

    Returns
    -------
    bool
        ``True`` if every direction agrees; otherwise the first counterexample is printed.
    """
    for k, J in enumerate(_random_jacobians(m, n, trials, seed)):
        expected = reference(J)
        got = candidate(J.clone())
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            print(f"✗ expected a tensor of shape {tuple(expected.shape)}, got {shape}")
            return False
        if not torch.allclose(got.double(), expected, atol=atol, rtol=0):
            print(
                f"✗ Jacobian {k} of {trials} differs (largest difference {(got - expected).abs().max():.2e}):"
            )
            print(f"  J =\n{J.numpy().round(4)}")
            print(f"  expected {expected.numpy().round(4)}\n  got      {got.numpy().round(4)}")
            return False
    print(f"✓ agrees with {reference!r} on {trials} random {m}×{n} Jacobians")
    return True


def gradnorm_loss_reference(
    weights: torch.Tensor, grad_norms: torch.Tensor, inverse_rates: torch.Tensor, alpha: float
) -> torch.Tensor:
    r"""GradNorm's :math:`L_{\mathrm{grad}} = \sum_i |w_i \lVert\nabla_W L_i\rVert - \bar G\, r_i^\alpha|`.

    With :math:`G_i = w_i \lVert\nabla_W L_i\rVert` and the target :math:`\bar G r_i^\alpha` held
    constant (Chen et al. 2018), as :class:`mtlcourse.gradnorm.GradNorm` uses it.
    """
    G = weights * grad_norms
    target = (G.mean() * inverse_rates**alpha).detach()
    return (G - target).abs().sum()


def check_gradnorm_loss(
    candidate: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor],
    *,
    m: int = 3,
    trials: int = 50,
    seed: int = 0,
    rtol: float = 1e-6,
) -> bool:
    """Check ``candidate(weights, grad_norms, inverse_rates, alpha) -> L_grad``: value *and* gradient.

    The gradient with respect to ``weights`` is what GradNorm steps on, and it is where the classic
    mistake shows: forgetting to hold the target :math:`\\bar G r_i^\\alpha` constant changes the
    gradient but not the value.
    """
    generator = torch.Generator().manual_seed(seed)
    for k in range(trials):
        grad_norms = torch.rand(m, generator=generator, dtype=torch.float64) * 10 + 0.1
        inverse_rates = torch.rand(m, generator=generator, dtype=torch.float64) + 0.5
        alpha = float(torch.rand(1, generator=generator)) * 2
        start = torch.rand(m, generator=generator, dtype=torch.float64) + 0.2
        grads = []
        values = []
        for fn in (candidate, gradnorm_loss_reference):
            weights = start.clone().requires_grad_(True)
            value = fn(weights, grad_norms, inverse_rates, alpha)
            (grad,) = torch.autograd.grad(value, weights)
            values.append(value.detach())
            grads.append(grad)
        if not torch.allclose(values[0], values[1], rtol=rtol):
            print(f"✗ case {k}: L_grad = {values[0].item():.6g}, expected {values[1].item():.6g}")
            return False
        if not torch.allclose(grads[0], grads[1], rtol=rtol, atol=1e-12):
            print(f"✗ case {k}: the value is right but the gradient is not — is the target held constant?")
            print(f"  gradient {grads[0].numpy().round(4)}, expected {grads[1].numpy().round(4)}")
            return False
    print(f"✓ value and gradient agree with GradNorm's definition on {trials} random cases")
    return True
