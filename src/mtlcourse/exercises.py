"""Checkers for the exercises: call one on your own implementation and it tells you what is wrong.

Each checker compares a reader's function with the package's tested reference on random inputs,
prints a one-line verdict (or the first counterexample) and returns ``True`` when everything agrees.
The inputs are CPU tensors; what the reader's function returns is brought to the CPU before it is compared,
so a function that works on the GPU internally is checked too.
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
        got = got.detach().cpu()
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
            values.append(value.detach().cpu())
            grads.append(grad.cpu())
        if not torch.allclose(values[0], values[1], rtol=rtol):
            print(f"✗ case {k}: L_grad = {values[0].item():.6g}, expected {values[1].item():.6g}")
            return False
        if not torch.allclose(grads[0], grads[1], rtol=rtol, atol=1e-12):
            print(f"✗ case {k}: the value is right but the gradient is not — is the target held constant?")
            print(f"  gradient {grads[0].numpy().round(4)}, expected {grads[1].numpy().round(4)}")
            return False
    print(f"✓ value and gradient agree with GradNorm's definition on {trials} random cases")
    return True


def top_k_gate_reference(logits: torch.Tensor, k: int) -> torch.Tensor:
    r"""A top-k gate: softmax over the ``k`` largest logits of each row, exactly 0 elsewhere.

    .. math::
        g(z)_e = \frac{\exp z_e}{\sum_{e' \in T_k(z)} \exp z_{e'}} \text{ if } e \in T_k(z), \quad 0
        \text{ otherwise},

    with :math:`T_k(z)` the indices of the ``k`` largest entries of :math:`z` (Shazeer, Mirhoseini, Maziarz,
    Davis, Le, Hinton & Dean 2017, "Outrageously large neural networks: the sparsely-gated
    mixture-of-experts layer", ICLR; here without their noise). ``logits`` has shape ``(..., n_experts)``;
    ``k = n_experts`` is the softmax. Differentiable with respect to the kept logits.
    """
    n = logits.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of experts ({n}), got {k}")
    top, index = logits.topk(k, dim=-1)
    return torch.zeros_like(logits).scatter(-1, index, torch.softmax(top, dim=-1))


def _top_k_gate_failure(
    candidate: Callable[[torch.Tensor, int], torch.Tensor],
    logits: torch.Tensor,
    k: int,
    perm: torch.Tensor,
    cotangent: torch.Tensor,
    atol: float,
) -> str | None:
    """What is wrong with ``candidate(logits, k)``, or ``None``."""
    shape, n = tuple(logits.shape), logits.shape[-1]
    z = logits.clone().requires_grad_(True)
    try:
        got = candidate(z, k)
        permuted = candidate(logits[..., perm].clone(), k)
    except Exception as error:  # a reader's bug: report it, do not crash the notebook
        return f"raised {type(error).__name__}: {error}"
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        what = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"expected weights of shape {shape}, got {what}"
    weights = got.detach().cpu().double()
    sums = weights.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums)):
        return f"rows must sum to 1, the first rows sum to {sums.flatten()[:4].numpy().round(4)}"
    nonzero = (weights != 0).sum(-1)
    if (nonzero != k).any():
        return f"a row has {nonzero[nonzero != k].flatten()[0].item()} non-zero weights, expected exactly k"
    if not torch.allclose(permuted.detach().cpu().double(), weights[..., perm], atol=atol, rtol=0):
        return "permuting the experts does not permute the weights"
    expected = top_k_gate_reference(logits, k)
    if not torch.allclose(weights, expected, atol=atol, rtol=0):
        row = (weights - expected).abs().reshape(-1, n).max(-1).values.argmax()
        return (
            f"weights differ from the reference (largest difference {(weights - expected).abs().max():.2e})\n"
            f"  logits   {logits.reshape(-1, n)[row].numpy().round(3)}\n"
            f"  expected {expected.reshape(-1, n)[row].numpy().round(4)}\n"
            f"  got      {weights.reshape(-1, n)[row].numpy().round(4)}"
        )
    if not got.requires_grad:
        return "the weights are not differentiable with respect to the logits"
    (grad,) = torch.autograd.grad(got, z, cotangent.to(dtype=got.dtype, device=got.device), allow_unused=True)
    reference_logits = logits.clone().requires_grad_(True)
    reference = top_k_gate_reference(reference_logits, k)
    (expected_grad,) = torch.autograd.grad(reference, reference_logits, cotangent)
    if grad is None or not torch.allclose(grad.cpu().double(), expected_grad, atol=atol, rtol=0):
        return "the weights are right but their gradient with respect to the logits is not"
    return None


def check_top_k_gate(
    candidate: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    n_experts: int = 6,
    trials: int = 10,
    seed: int = 0,
    atol: float = 1e-6,
) -> bool:
    """Check ``candidate(logits, k) -> weights``, a top-k gate, against :func:`top_k_gate_reference`.

    On random float64 logits (no ties) of shapes ``(N, n_experts)`` and ``(B, N, n_experts)``, for every
    ``k`` from 1 (only the best expert) to ``n_experts`` (the plain softmax), it checks in turn: the shape;
    that each row sums to 1; that each row has exactly ``k`` non-zero weights; that permuting the experts
    permutes the weights; that the weights, and their gradient with respect to the logits, are the
    reference's.

    Returns
    -------
    bool
        ``True`` if everything agrees; otherwise the first failure is printed.
    """
    if n_experts < 2:
        raise ValueError(f"n_experts must be at least 2 to tell a top-k gate from a softmax, got {n_experts}")
    generator = torch.Generator().manual_seed(seed)
    shapes = [(8, n_experts), (3, 4, n_experts)]
    for trial in range(trials):
        shape = shapes[trial % len(shapes)]
        logits = 3 * torch.randn(shape, generator=generator, dtype=torch.float64)
        perm = torch.randperm(n_experts, generator=generator)
        cotangent = torch.randn(shape, generator=generator, dtype=torch.float64)
        for k in range(1, n_experts + 1):
            if (failure := _top_k_gate_failure(candidate, logits, k, perm, cotangent, atol)) is not None:
                print(f"✗ trial {trial}, logits of shape {shape}, k={k}: {failure}")
                return False
    print(f"✓ agrees with the top-k softmax gate on {trials} random batches, every k from 1 to {n_experts}")
    return True
