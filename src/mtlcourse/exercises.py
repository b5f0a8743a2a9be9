"""Checkers for the exercises: call one on your own implementation and it tells you what is wrong.

Each checker compares a reader's function with the package's tested reference on random inputs,
prints a one-line verdict (or the first counterexample) and returns ``True`` when everything agrees.
The inputs are CPU tensors; what the reader's function returns is brought to the CPU before it is compared,
so a function that works on the GPU internally is checked too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F


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


# ---------------------------------------------------------------------------------------------------------
# The weighted sum of a regression and a classification loss (Chapter 1)
# ---------------------------------------------------------------------------------------------------------

_TASKS = ("regression", "classification")


def multitask_loss_reference(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: tuple[float, float]
) -> torch.Tensor:
    r"""Chapter 1's training loss, :math:`w_{\text{reg}} L_{\text{reg}} + w_{\text{cls}} L_{\text{cls}}`.

    :math:`L_{\text{reg}}` is the mean squared error of the ``"regression"`` output and
    :math:`L_{\text{cls}}` the mean binary cross-entropy of the ``"classification"`` *logit*, both computed
    by :meth:`mtlcourse.tasks.Task.loss` (the loss ``fit`` trains on). Outputs and targets have shape
    ``(N,)``; ``weights`` is ``(w_reg, w_cls)``, in that order. This is the weighted sum of task losses of
    hard parameter sharing (Caruana 1997, "Multitask learning", Machine Learning 28).
    """
    from mtlcourse.tasks import Task

    regression, classification = Task("regression", "regression"), Task("classification", "binary")
    return weights[0] * regression.loss(outputs["regression"], targets["regression"]) + weights[
        1
    ] * classification.loss(outputs["classification"], targets["classification"])


def _mse(output: torch.Tensor, target: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    squares = (output - target) ** 2
    return squares.sum() if reduce == "sum" else squares.mean()


def _bce(logits: torch.Tensor, target: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    values = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return values.sum() if reduce == "sum" else values.mean()


def _multitask_loss_mistakes(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: tuple[float, float]
) -> dict[str, torch.Tensor]:
    """The values of the classic wrong versions of Chapter 1's loss, keyed by the mistake in plain words."""
    o, y = outputs["regression"], targets["regression"]
    z, c = outputs["classification"], targets["classification"]
    w_reg, w_cls = weights
    mse, bce = _mse(o, y), _bce(z, c)
    return {
        "the sigmoid is applied before the BCE with logits (a double sigmoid): "
        "binary_cross_entropy_with_logits takes the raw logit": (
            w_reg * mse + w_cls * _bce(torch.sigmoid(z), c)
        ),
        "both losses are summed over the batch instead of averaged": (
            w_reg * _mse(o, y, "sum") + w_cls * _bce(z, c, "sum")
        ),
        "the regression loss is summed over the batch instead of averaged": w_reg * _mse(o, y, "sum")
        + w_cls * bce,
        "the classification loss is summed over the batch instead of averaged": (
            w_reg * mse + w_cls * _bce(z, c, "sum")
        ),
        "the weights are swapped: weights[0] is the regression's, weights[1] the classification's": (
            w_cls * mse + w_reg * bce
        ),
        "the weights are ignored (the plain sum of the two losses)": mse + bce,
        "the weights are ignored (the mean of the two losses)": (mse + bce) / 2,
        "an (N, 1) tensor met an (N,) one in the MSE: they broadcast to an N × N grid of squared errors, "
        "whose mean is not the MSE — give output and target the same shape": (
            w_reg * _mse(o[:, None], y) + w_cls * bce
        ),
    }


def _multitask_loss_failure(
    candidate: Callable[[dict, dict, tuple], torch.Tensor],
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    weights: tuple[float, float],
    rtol: float,
) -> str | None:
    """What is wrong with ``candidate(outputs, targets, weights)`` on this batch, or ``None``."""
    leaves = {name: outputs[name].clone().requires_grad_(True) for name in _TASKS}
    try:
        with warnings.catch_warnings():  # F.mse_loss warns on a broadcast; the verdict below says more
            warnings.simplefilter("ignore")
            got = candidate(dict(leaves), {name: targets[name].clone() for name in _TASKS}, weights)
    except Exception as error:  # a reader's bug: report it, do not crash the notebook
        hint = ""
        if "between 0 and 1" in str(error):
            hint = (
                " — binary_cross_entropy (BCELoss) takes probabilities, the classification head gives a "
                "logit: use binary_cross_entropy_with_logits (BCEWithLogitsLoss)"
            )
        elif "can't be cast" in str(error):
            hint = " — keep the class targets floating point (0.0 / 1.0): the BCE is computed in floats"
        return f"raised {type(error).__name__}: {str(error).splitlines()[0]}{hint}"
    if not isinstance(got, torch.Tensor) or got.numel() != 1:
        what = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"expected one number (a tensor with a single element), got {what} — is a mean missing?"
    value = got.detach().cpu().double().reshape(())
    if not torch.isfinite(value):
        return (
            f"the loss is {value.item()}: a log of the logit itself? The BCE formula (and BCELoss) takes "
            "probabilities; on a logit use binary_cross_entropy_with_logits"
        )
    expected = multitask_loss_reference(outputs, targets, weights)
    if not torch.isclose(value, expected, rtol=rtol, atol=0):
        for mistake, wrong in _multitask_loss_mistakes(outputs, targets, weights).items():
            if torch.isclose(value, wrong, rtol=rtol, atol=0):
                return f"loss = {value.item():.6g}, expected {expected.item():.6g}: {mistake}"
        return f"loss = {value.item():.6g}, expected {expected.item():.6g}"
    if not got.requires_grad:
        return "the value is right but not differentiable: was it computed with .item(), numpy or .detach()?"
    grads = torch.autograd.grad(got.reshape(()), [leaves[name] for name in _TASKS], allow_unused=True)
    reference = {name: outputs[name].clone().requires_grad_(True) for name in _TASKS}
    expected_grads = torch.autograd.grad(
        multitask_loss_reference(reference, targets, weights), [reference[name] for name in _TASKS]
    )
    for name, grad, expected_grad in zip(_TASKS, grads, expected_grads, strict=True):
        atol = rtol * expected_grad.abs().max()  # a loss computed in float32 passes
        if grad is None or not torch.allclose(grad.cpu().double(), expected_grad, rtol=rtol, atol=atol):
            return f"the value is right but its gradient with respect to the {name} output is not"
    return None


def check_multitask_loss(
    candidate: Callable[[dict, dict, tuple[float, float]], torch.Tensor],
    *,
    trials: int = 20,
    seed: int = 0,
    rtol: float = 1e-5,
) -> bool:
    """Check ``candidate(outputs, targets, weights) -> loss``, Chapter 1's weighted sum of MSE and BCE.

    ``outputs`` and ``targets`` are dictionaries with the keys ``"regression"`` and ``"classification"``
    holding float64 tensors of shape ``(N,)`` (as :class:`~mtlcourse.models.MultiTaskModel` returns them:
    a real prediction, and a *logit* for class 1; class targets 0.0/1.0); ``weights`` is
    ``(w_reg, w_cls)``. On random batches of varying size, with random unequal weights, the value and its
    gradient with respect to both outputs are compared with :func:`multitask_loss_reference`. A wrong value
    is matched against the classic mistakes (double sigmoid, BCELoss on logits, sum instead of mean, weights
    ignored or swapped, an ``(N, 1)`` by ``(N,)`` broadcast) and the one it matches is named.

    The tolerance ``rtol`` lets a loss computed in float32 pass.

    Returns
    -------
    bool
        ``True`` if everything agrees; otherwise the first failure is printed.
    """
    generator = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        n = int(torch.randint(5, 40, (1,), generator=generator))
        outputs = {
            "regression": torch.randn(n, generator=generator, dtype=torch.float64),
            "classification": 3 * torch.randn(n, generator=generator, dtype=torch.float64),
        }
        targets = {
            "regression": torch.randn(n, generator=generator, dtype=torch.float64),
            "classification": torch.randint(0, 2, (n,), generator=generator).double(),
        }
        w_reg, w_cls = (0.1 + 1.9 * torch.rand(2, generator=generator, dtype=torch.float64)).tolist()
        failure = _multitask_loss_failure(candidate, outputs, targets, (w_reg, w_cls), rtol)
        if failure is not None:
            print(f"✗ batch {trial} (N = {n}, weights = ({w_reg:.3f}, {w_cls:.3f})): {failure}")
            return False
    print(f"✓ value and gradient agree with w_reg · MSE + w_cls · BCE-with-logits on {trials} random batches")
    return True


# ---------------------------------------------------------------------------------------------------------
# Dynamic Weight Average (Chapter 3)
# ---------------------------------------------------------------------------------------------------------


def dwa_weights_reference(
    previous_losses: torch.Tensor, older_losses: torch.Tensor, temperature: float
) -> torch.Tensor:
    r"""DWA's weights, :math:`w_i = m \operatorname{softmax}_i(r / T)` with :math:`r_i = L_i(t-1) / L_i(t-2)`.

    Liu, Johns & Davison (2019), "End-to-End Multi-Task Learning with Attention", CVPR. Computed by
    :class:`mtlcourse.weighting.DWA` itself, fed the two epochs' losses: ``previous_losses`` are
    :math:`L_i(t-1)`, ``older_losses`` :math:`L_i(t-2)`, both positive, of shape ``(m,)``; the result has
    shape ``(m,)`` and sums to :math:`m`.
    """
    from types import SimpleNamespace

    from mtlcourse.weighting import DWA

    if previous_losses.ndim != 1 or previous_losses.shape != older_losses.shape:
        raise ValueError(
            f"expected two 1-D tensors of the same shape (one loss per task), got "
            f"{tuple(previous_losses.shape)} and {tuple(older_losses.shape)}"
        )
    names = [f"task_{i}" for i in range(len(previous_losses))]
    dwa = DWA(temperature)
    for losses in (older_losses, previous_losses):
        dwa.end_epoch(
            {f"train_loss_{name}": value for name, value in zip(names, losses.tolist(), strict=True)}
        )
    return dwa.weights(previous_losses, SimpleNamespace(task_names=names))  # DWA reads only task_names


def _dwa_mistakes(previous: torch.Tensor, older: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """The weights of the classic wrong versions of DWA, keyed by the mistake in plain words."""
    m, ratio = len(previous), previous / older
    return {
        "the ratio is inverted: r_i = L_i(t-1) / L_i(t-2), the newer loss over the older, so that the task "
        "whose loss fell least gets the most weight": m * torch.softmax(older / previous / temperature, 0),
        "the softmax is taken without the temperature: divide the ratios by T, softmax(r / T)": m
        * torch.softmax(ratio, 0),
        "the ratio is multiplied by the temperature: softmax(r / T), not softmax(r · T)": (
            m * torch.softmax(ratio * temperature, 0)
        ),
        "the softmax is taken of the losses instead of their ratios r_i = L_i(t-1) / L_i(t-2)": (
            m * torch.softmax(previous / temperature, 0)
        ),
    }


def _dwa_failure(
    candidate: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
    previous: torch.Tensor,
    older: torch.Tensor,
    temperature: float,
    rtol: float,
) -> str | None:
    """What is wrong with ``candidate(previous, older, temperature)``, or ``None``."""
    m = len(previous)
    try:
        got = candidate(previous.clone(), older.clone(), temperature)
    except Exception as error:  # a reader's bug: report it, do not crash the notebook
        return f"raised {type(error).__name__}: {str(error).splitlines()[0]}"
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (m,):
        what = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"expected one weight per task, a tensor of shape ({m},), got {what}"
    weights = got.detach().cpu().double()
    if not torch.isfinite(weights).all():
        return f"the weights are not finite: {weights.numpy().round(4)}"
    total = weights.sum().item()
    if abs(total - 1) < 1e-4:
        return (
            f"the weights sum to 1, DWA's sum to m = {m}: multiply the softmax by the number of tasks "
            "(equal progress then gives every task weight 1, the plain sum of the losses)"
        )
    if abs(total - m) > 1e-4 * m:
        return f"the weights sum to {total:.4f}, DWA's sum to m = {m}"
    expected = dwa_weights_reference(previous, older, temperature)
    if torch.allclose(weights, expected, rtol=rtol, atol=1e-8):
        return None
    found = f"weights {weights.numpy().round(4)}, expected {expected.numpy().round(4)}"
    for mistake, wrong in _dwa_mistakes(previous, older, temperature).items():
        if torch.allclose(weights, wrong, rtol=rtol, atol=1e-8):
            return f"{found}: {mistake}"
    return found


def check_dwa_weights(
    candidate: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
    *,
    trials: int = 20,
    seed: int = 0,
    rtol: float = 1e-5,
) -> bool:
    """Check ``candidate(previous_losses, older_losses, temperature) -> weights``, DWA's weights.

    ``previous_losses`` are the tasks' epoch losses :math:`L_i(t-1)`, ``older_losses`` those of the epoch
    before, :math:`L_i(t-2)`: positive float64 tensors of shape ``(m,)``. On random losses for 2 to 6 tasks
    and temperatures other than 1 (where forgetting :math:`T` would not show), it checks the shape, that the
    weights sum to :math:`m`, and that they are :func:`dwa_weights_reference`'s; wrong weights are matched
    against the classic mistakes (ratio inverted, no factor :math:`m`, no temperature) and the one they
    match is named.

    Returns
    -------
    bool
        ``True`` if everything agrees; otherwise the first failure is printed.
    """
    generator = torch.Generator().manual_seed(seed)
    temperatures = [2.0, 0.5, 5.0, 0.3]
    for trial in range(trials):
        m = int(torch.randint(2, 7, (1,), generator=generator))
        previous, older = 0.05 + 3 * torch.rand(2, m, generator=generator, dtype=torch.float64)
        temperature = temperatures[trial % len(temperatures)]
        if (failure := _dwa_failure(candidate, previous, older, temperature, rtol)) is not None:
            print(f"✗ case {trial} (m = {m}, T = {temperature}): {failure}")
            print(f"  L(t-1) = {previous.numpy().round(4)}, L(t-2) = {older.numpy().round(4)}")
            return False
    print(f"✓ agrees with DWA's weights m · softmax(r / T) on {trials} random cases, 2 to 6 tasks")
    return True


# ---------------------------------------------------------------------------------------------------------
# UPGrad's weights from the Gramian (Chapter 7)
# ---------------------------------------------------------------------------------------------------------


def upgrad_weights_reference(G: torch.Tensor) -> torch.Tensor:
    r"""UPGrad's weights :math:`w = \frac{1}{m}\sum_i v_i`, :math:`v_i = \arg\min_{v \ge e_i} v^\top G v`.

    Quinton & Rey (2024), "Jacobian Descent for Multi-Objective Optimization", Proposition 1: the projection
    of the task gradient :math:`g_i` onto the dual cone :math:`\{u : J u \ge 0\}` is :math:`J^\top v_i`, so
    UPGrad's direction is :math:`d = J^\top w`. Computed by
    :meth:`mtlcourse.aggregation.UPGrad.weights_from_gramian` itself; ``G`` is the :math:`m \times m`
    Gramian :math:`J J^\top` (symmetric positive semi-definite), the result has shape ``(m,)``.
    """
    from mtlcourse.aggregation import UPGrad

    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"expected a square Gramian G = J Jᵀ of shape (m, m), got {tuple(G.shape)}")
    return UPGrad().weights_from_gramian(G)


def _upgrad_mistakes(G: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weights of the classic wrong versions of UPGrad, keyed by the mistake in plain words."""
    from mtlcourse.aggregation import MGDA

    m = G.shape[0]
    return {
        "these are the plain mean's weights 1/m: project each gradient onto the dual cone first, "
        "v_i = argmin_{v ≥ e_i} vᵀ G v, then average the v_i": G.new_full((m,), 1.0 / m),
        "these are MGDA's weights, the minimum-norm point of the convex hull of the gradients: UPGrad "
        "averages the m projections v_i = argmin_{v ≥ e_i} vᵀ G v instead": MGDA().weights_from_gramian(G),
        f"the projections are summed, not averaged: divide by m = {m} (summing is PCGrad's convention)": m
        * upgrad_weights_reference(G),
    }


def _upgrad_failure(
    candidate: Callable[[torch.Tensor], torch.Tensor], G: torch.Tensor, rtol: float
) -> str | None:
    """What is wrong with ``candidate(G)``, or ``None``."""
    m = G.shape[0]
    try:
        got = candidate(G.clone())
    except Exception as error:  # a reader's bug: report it, do not crash the notebook
        return f"raised {type(error).__name__}: {str(error).splitlines()[0]}"
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (m,):
        what = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"expected one weight per task, a tensor of shape ({m},), got {what}"
    weights = got.detach().cpu().double()
    if not torch.isfinite(weights).all():
        return f"the weights are not finite: {weights.numpy().round(4)}"
    expected = upgrad_weights_reference(G)
    atol = rtol * expected.abs().max()
    if torch.allclose(weights, expected, rtol=rtol, atol=atol):
        return None
    found = f"weights {weights.numpy().round(4)}, expected {expected.numpy().round(4)}"
    for mistake, wrong in _upgrad_mistakes(G).items():
        if torch.allclose(weights, wrong, rtol=rtol, atol=atol):
            return f"{found}: {mistake}"
    products = G @ weights  # J d with d = Jᵀ w: the inner products of the direction with each gradient
    scale = G.diagonal().sqrt()
    if (conflicts := products < -rtol * scale * (scale * weights.abs()).sum()).any():
        task = int(conflicts.nonzero()[0]) + 1  # counted from 1, as g_1, …, g_m in the text
        return (
            f"{found}: the direction d = Jᵀw conflicts with task {task} (G w = {products.numpy().round(4)} "
            f"has a negative entry, g_{task} · d < 0); UPGrad's direction never conflicts with a task"
        )
    return found


def check_upgrad_weights(
    candidate: Callable[[torch.Tensor], torch.Tensor],
    *,
    tasks: tuple[int, ...] = (2, 3, 4, 5),
    trials: int = 20,
    seed: int = 0,
    rtol: float = 1e-5,
) -> bool:
    r"""Check ``candidate(G) -> weights``, UPGrad's weights from the Gramian :math:`G = J J^\top`.

    On random float64 Gramians of ``trials`` Jacobians for each number of tasks in ``tasks`` (half of them
    with strongly conflicting rows, rows of norms spread over two orders of magnitude), the weights are
    compared with :func:`upgrad_weights_reference`; wrong weights are matched against the classic mistakes
    (the plain mean, MGDA's min-norm weights, the projections summed instead of averaged) and the one they
    match is named; otherwise, a direction :math:`d = J^\top w` that conflicts with a task (:math:`G w` has
    a negative entry) is reported as such. A closed form for two tasks is checked with ``tasks=(2,)``.

    Returns
    -------
    bool
        ``True`` if everything agrees; otherwise the first failure is printed.
    """
    if not tasks or min(tasks) < 1:
        raise ValueError(f"tasks must be a non-empty list of numbers of tasks (at least 1), got {tasks}")
    generator = torch.Generator().manual_seed(seed)
    for m in tasks:
        for trial, J in enumerate(_random_jacobians(m, 6, trials, seed + m)):
            J = J * 10 ** (2 * torch.rand(m, 1, generator=generator, dtype=torch.float64) - 1)
            G = J @ J.T
            if (failure := _upgrad_failure(candidate, G, rtol)) is not None:
                print(f"✗ Gramian {trial} with m = {m} tasks: {failure}")
                print(f"  G =\n{G.numpy().round(4)}")
                return False
    counts = ", ".join(str(m) for m in tasks)
    print(f"✓ agrees with UPGrad's weights on {trials} random Gramians for each m = {counts}")
    return True


# ---------------------------------------------------------------------------------------------------------
# One training step of a shared-trunk model (Chapter 2)
# ---------------------------------------------------------------------------------------------------------

_SIN_COS = ("sin", "cos")


def shared_step_reference(
    model: torch.nn.Module,
    x: torch.Tensor,
    targets: dict[str, torch.Tensor],
    weights: tuple[float, float],
    optimizer: torch.optim.Optimizer,
    max_norm: float,
    *,
    zero_grad: bool = True,
    clip: bool = True,
) -> float:
    r"""One step on :math:`L = w_{\sin} \mathrm{MSE}_{\sin} + w_{\cos} \mathrm{MSE}_{\cos}`, which it returns.

    ``optimizer.zero_grad()``, forward, the weighted loss, ``backward()``, the gradient of all parameters
    clipped to total norm ``max_norm`` (``torch.nn.utils.clip_grad_norm_``, which only sees the gradient
    once ``backward()`` has written it), ``optimizer.step()``: the loop of :func:`mtlcourse.training.fit`
    with :class:`~mtlcourse.weighting.StaticWeights` (Caruana 1997's shared trunk, two heads).
    ``model`` returns a dictionary with the keys ``"sin"`` and ``"cos"``; ``targets`` has the same keys.
    ``zero_grad=False`` and ``clip=False`` give two classic mistakes, for the checker to recognise.
    """
    if zero_grad:
        optimizer.zero_grad()
    outputs = model(x)
    loss = sum(
        w * F.mse_loss(outputs[name], targets[name]) for w, name in zip(weights, _SIN_COS, strict=True)
    )
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def _parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().cpu().double().flatten() for p in model.parameters()])


def _shared_step_failure(
    candidate: Callable[..., object], seed: int, n: int, weights: tuple[float, float], rtol: float
) -> str | None:
    """What is wrong with two calls of ``candidate`` on a fresh model, or ``None``."""
    import copy

    from mtlcourse.models import hard_sharing_mlp

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # the reader's random state is left as it was
        torch.manual_seed(seed)
        model = hard_sharing_mlp(1, [8, 8], dict.fromkeys(_SIN_COS, 1)).double()
    batches = []
    for _ in range(2):
        x = 4 * torch.rand(n, 1, generator=generator, dtype=torch.float64) - 2
        batches.append((x, {"sin": torch.sin(x[:, 0]), "cos": 3 * torch.cos(x[:, 0])}))
    # Clip at half the first gradient's norm, so that clipping changes the step.
    probe = copy.deepcopy(model)
    sum(
        w * F.mse_loss(probe(batches[0][0])[k], batches[0][1][k])
        for w, k in zip(weights, _SIN_COS, strict=True)
    ).backward()
    max_norm = 0.5 * torch.cat([p.grad.flatten() for p in probe.parameters()]).norm().item()

    def run(
        step: Callable[..., object], step_weights: tuple[float, float], **options: bool
    ) -> tuple[list[object], list[torch.Tensor]]:
        net = copy.deepcopy(model)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        losses, states = [], []
        for x, y in batches:
            losses.append(step(net, x.clone(), dict(y), step_weights, optimizer, max_norm, **options))
            states.append(_parameters(net))
        return losses, states

    try:
        got_losses, got_states = run(candidate, weights)
    except Exception as error:  # a reader's bug: report it, do not crash the notebook
        return f"raised {type(error).__name__}: {str(error).splitlines()[0]}"
    losses, states = run(shared_step_reference, weights)
    w_sin, w_cos = weights
    simulated = {
        "the weights are ignored: the loss is w_sin · MSE_sin + w_cos · MSE_cos": run(
            shared_step_reference, (1.0, 1.0)
        ),
        "the weights are swapped: w_sin multiplies the sine's MSE, w_cos the cosine's": run(
            shared_step_reference, (w_cos, w_sin)
        ),
        "the gradient was not clipped: clip_grad_norm_ called before backward() sees no gradient yet "
        "(a no-op); call it between loss.backward() and optimizer.step()": run(
            shared_step_reference, weights, clip=False
        ),
        "optimizer.zero_grad() is missing: the second step used the sum of both batches' gradients": run(
            shared_step_reference, weights, zero_grad=False
        ),
    }
    initial = _parameters(model)
    n_trunk = sum(p.numel() for p in model.trunk.parameters())
    for call in range(2):
        got_loss = got_losses[call]
        try:
            got_value = float(got_loss.detach() if isinstance(got_loss, torch.Tensor) else got_loss)
        except (TypeError, ValueError, RuntimeError):
            return f"call {call + 1}: expected the loss as a number, got {type(got_loss).__name__}"
        if abs(got_value - losses[call]) > rtol * abs(losses[call]):
            for mistake, (wrong_losses, _) in simulated.items():
                if abs(got_value - wrong_losses[call]) <= rtol * abs(wrong_losses[call]):
                    return f"call {call + 1}: loss {got_value:.6g}, expected {losses[call]:.6g}: {mistake}"
            return f"call {call + 1}: loss {got_value:.6g}, expected {losses[call]:.6g}"
        got, expected = got_states[call], states[call]
        if torch.allclose(got, expected, rtol=rtol, atol=rtol * expected.abs().max()):
            continue
        before = initial if call == 0 else got_states[0]
        moved = (got - before).abs() > 0
        if call == 0 and not moved.any():
            return (
                "call 1: no parameter moved — is optimizer.step() called before loss.backward()? The step "
                "then finds no gradient (or the previous batch's): zero_grad, forward, loss, backward, clip, "
                "step"
            )
        if call == 0 and not moved[:n_trunk].any():
            return (
                "call 1: the heads moved but the trunk never did — is the optimiser built on the heads' "
                "parameters only? Give it model.parameters()"
            )
        for mistake, (_, wrong_states) in simulated.items():
            if torch.allclose(got, wrong_states[call], rtol=rtol, atol=rtol * expected.abs().max()):
                return f"call {call + 1}: the parameters after the step differ: {mistake}"
        return (
            f"call {call + 1}: the parameters after the step differ from the reference's "
            f"(largest difference {(got - expected).abs().max():.2e})"
        )
    return None


def check_shared_step(
    candidate: Callable[..., object],
    *,
    trials: int = 5,
    seed: int = 0,
    rtol: float = 1e-6,
) -> bool:
    """Check ``candidate(model, x, targets, weights, optimizer, max_norm) -> loss``, one training step.

    Chapter 2's step of a shared trunk with two heads (:func:`mtlcourse.models.hard_sharing_mlp`, outputs
    ``"sin"`` and ``"cos"``) on the weighted sum of the two MSE losses, as :func:`shared_step_reference`
    takes it: zero the gradients, forward, weighted loss, backward, clip the gradient to ``max_norm``,
    step; the loss is returned as a number (or a one-element tensor). On small random float64 models and
    batches, with unequal weights and a plain SGD optimiser over ``model.parameters()``, the candidate and
    the reference each make two steps from the same initial weights; the returned losses and the parameters
    after each step are compared. A difference is matched against the classic mistakes (no ``zero_grad``,
    ``step`` before ``backward``, an optimiser that never moves the trunk, ``clip_grad_norm_`` before
    ``backward``, weights ignored or swapped) and the one it matches is named.

    Returns
    -------
    bool
        ``True`` if everything agrees; otherwise the first failure is printed.
    """
    generator = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        n = int(torch.randint(8, 33, (1,), generator=generator))
        w_sin, w_cos = (0.2 + 1.6 * torch.rand(2, generator=generator, dtype=torch.float64)).tolist()
        if (failure := _shared_step_failure(candidate, seed + trial, n, (w_sin, w_cos), rtol)) is not None:
            print(f"✗ trial {trial} (N = {n}, weights = ({w_sin:.3f}, {w_cos:.3f})): {failure}")
            return False
    print(
        f"✓ two steps agree with the reference's (losses and parameters) on {trials} random models and "
        "batches"
    )
    return True


# ---------------------------------------------------------------------------------------------------------
# The Gramian of per-example losses through one linear layer (Chapter 10)
# ---------------------------------------------------------------------------------------------------------


def layer_gramian_reference(a: torch.Tensor, delta: torch.Tensor, bias: bool = True) -> torch.Tensor:
    r"""The Gramian of per-example losses through one ``nn.Linear`` layer, from its inputs and signals.

    With inputs :math:`A` (one row :math:`a_n` per example) and back-propagated signals :math:`\Delta`
    (:math:`\delta_n = \partial \ell_n / \partial z_n`), the gradient of :math:`\ell_n` is
    :math:`\delta_n a_n^\top` for the weight and :math:`\delta_n` for the bias, so

    .. math::
        G = (\Delta \Delta^\top) \odot (A A^\top + \mathbf 1),

    without the :math:`+\mathbf 1` when the layer has no bias (Goodfellow 2015, "Efficient per-example
    gradient computations", for the norms; :mod:`mtlcourse.autogram` for whole networks).
    """
    return (delta @ delta.T) * (a @ a.T + (1.0 if bias else 0.0))


def _layer_gramian_case(generator: torch.Generator, n: int, d_in: int, d_out: int, bias: bool):
    """A random layer, inputs and targets; returns ``(a, delta, J Jᵀ)`` with J from autograd."""
    from mtlcourse.autojac import jacobian

    layer = torch.nn.Linear(d_in, d_out, bias=bias).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    a = torch.randn(n, d_in, generator=generator, dtype=torch.float64)
    targets = torch.randn(n, d_out, generator=generator, dtype=torch.float64)
    z = layer(a)
    losses = ((z - targets) ** 2).sum(dim=1)
    (delta,) = torch.autograd.grad(losses.sum(), z, retain_graph=True)
    J = jacobian(losses, list(layer.parameters()))
    return a, delta.detach(), J @ J.T


def _layer_gramian_failure(
    candidate: Callable[..., torch.Tensor],
    a: torch.Tensor,
    delta: torch.Tensor,
    bias: bool,
    expected: torch.Tensor,
) -> str | None:
    kwargs = {} if bias else {"bias": False}
    try:
        G = candidate(a.clone(), delta.clone(), **kwargs)
    except Exception as error:  # any error of the reader's code is the verdict
        return f"raised {type(error).__name__}: {error}"
    if not isinstance(G, torch.Tensor):
        return f"returned a {type(G).__name__}, not a tensor"
    G = G.detach().cpu().double()
    if G.shape != expected.shape:
        return (
            f"returned shape {tuple(G.shape)}, expected ({len(a)}, {len(a)}): one row and column per example"
        )
    if torch.allclose(G, expected, rtol=1e-8, atol=1e-10):
        return None
    mistakes = {
        "the bias term is missing (the + 1)": (delta @ delta.T) * (a @ a.T),
        "the + 1 is there but the layer has no bias": (delta @ delta.T) * (a @ a.T + 1.0),
        "a matrix product where the formula multiplies elementwise": (delta @ delta.T) @ (a @ a.T + 1.0),
        "the two Gramians are added instead of multiplied": delta @ delta.T + a @ a.T + 1.0,
    }
    for name, value in mistakes.items():
        if value.shape == G.shape and torch.allclose(G, value, rtol=1e-8, atol=1e-10):
            return name
    return f"differs from J Jᵀ by up to {(G - expected).abs().max().item():.3g}"


def check_layer_gramian(candidate: Callable[..., torch.Tensor], *, trials: int = 10, seed: int = 0) -> bool:
    r"""Check ``candidate(a, delta) -> G``, the Gramian of per-example losses through one linear layer.

    On random float64 layers (with and without a bias: ``candidate(a, delta, bias=False)`` is called for
    the latter when it accepts a ``bias`` keyword) and per-example squared errors, the candidate's
    :math:`G` is compared with :math:`J J^\top`, :math:`J` computed by autograd
    (:func:`mtlcourse.autojac.jacobian`) — not with the formula. A wrong answer is matched against the
    usual mistakes (no :math:`+1` for the bias, a matrix product instead of the elementwise one, the two
    Gramians added), and the one it matches is named.

    Returns
    -------
    bool
        ``True`` if everything agrees; otherwise the first failure is printed.
    """
    import inspect

    try:
        takes_bias = "bias" in inspect.signature(candidate).parameters
    except (TypeError, ValueError):
        takes_bias = False
    generator = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        n, d_in, d_out = (int(v) for v in torch.randint(2, 9, (3,), generator=generator))
        for bias in (True, False) if takes_bias else (True,):
            a, delta, expected = _layer_gramian_case(generator, n, d_in, d_out, bias)
            if (failure := _layer_gramian_failure(candidate, a, delta, bias, expected)) is not None:
                print(f"✗ layer {trial} ({d_in} → {d_out}, {n} examples, bias={bias}): {failure}")
                return False
    which = "with and without a bias" if takes_bias else "with a bias"
    print(f"✓ equals J Jᵀ on {trials} random linear layers {which}")
    return True


# ---------------------------------------------------------------------------------------------------------
# Δm% against single-task baselines (Chapter 9)
# ---------------------------------------------------------------------------------------------------------


def delta_m_reference(
    model_metrics: dict[str, float], baseline_metrics: dict[str, float], higher_is_better: dict[str, bool]
) -> float:
    r""":math:`\Delta_m\% = \frac{100}{K}\sum_k (-1)^{\ell_k} (M_{a,k} - M_{b,k}) / M_{b,k}` (> 0: worse).

    Maninis et al. (2019, CVPR), with the sign of the CAGrad and Nash-MTL tables; computed by
    :func:`mtlcourse.metrics.delta_m` itself.
    """
    from mtlcourse.metrics import delta_m

    return delta_m(model_metrics, baseline_metrics, higher_is_better)


def _delta_m_mistakes(
    model: dict[str, float], baseline: dict[str, float], higher: dict[str, bool]
) -> dict[str, float]:
    """The values of the classic wrong versions of Δm%, keyed by the mistake in plain words."""
    names = list(model)
    sign = {k: -1.0 if higher[k] else 1.0 for k in names}
    relative = {k: (model[k] - baseline[k]) / baseline[k] for k in names}
    correct = 100 * sum(sign[k] * relative[k] for k in names) / len(names)
    absolute = 100 * sum(sign[k] * (model[k] - baseline[k]) for k in names) / len(names)
    return {
        "the sign is flipped: in this course (and the CAGrad and Nash-MTL tables) a positive Δm% means "
        "worse than the single-task baselines; LibMTL's Δp counts improvements as positive": -correct,
        "the factor 100 is missing: Δm% is in percent": correct / 100,
        "every metric is treated as lower-is-better: where higher is better (an accuracy), a rise is an "
        "improvement, so its relative change enters with a minus sign, (−1)^ℓ_k": 100
        * sum(relative.values())
        / len(names),
        "each change is divided by the method's value; divide by the baseline's, (M_a − M_b) / M_b": 100
        * sum(sign[k] * (model[k] - baseline[k]) / model[k] for k in names)
        / len(names),
        f"the relative changes are summed; average them over the K = {len(names)} metrics": len(names)
        * correct,
        "absolute changes are averaged; divide each by the baseline's value, so that metrics of different "
        "units and scales count alike": absolute,
    }


def _delta_m_failure(
    candidate: Callable[..., float],
    model: dict[str, float],
    baseline: dict[str, float],
    higher: dict[str, bool],
    rtol: float,
) -> str | None:
    """What is wrong with ``candidate(model, baseline, higher)``, or ``None``."""
    try:
        got = candidate(dict(model), dict(baseline), dict(higher))
    except Exception as error:  # a reader's bug: report it, do not crash the notebook
        return f"raised {type(error).__name__}: {str(error).splitlines()[0]}"
    try:
        value = float(got.item() if isinstance(got, torch.Tensor) else got)
    except (TypeError, ValueError, RuntimeError):
        return f"expected one number, got {type(got).__name__}"
    expected = delta_m_reference(model, baseline, higher)
    tolerance = rtol * max(abs(expected), 1e-3)
    if abs(value - expected) <= tolerance:
        return None
    found = f"got {value:+.4f}, expected {expected:+.4f}"
    for mistake, wrong in _delta_m_mistakes(model, baseline, higher).items():
        if abs(value - wrong) <= rtol * max(abs(wrong), 1e-3):
            return f"{found}: {mistake}"
    return found


def check_delta_m(
    candidate: Callable[[dict[str, float], dict[str, float], dict[str, bool]], float],
    *,
    trials: int = 20,
    seed: int = 0,
    rtol: float = 1e-6,
) -> bool:
    r"""Check ``candidate(model_metrics, baseline_metrics, higher_is_better) -> Δm%``.

    The three arguments are dicts keyed by metric name, as for :func:`mtlcourse.metrics.delta_m`. On random
    tables of 2 to 6 metrics — always some where higher is better (scores, e.g. accuracies) and some where
    lower is (errors), of scales from 0.01 to 100 — the result is compared with
    :func:`delta_m_reference`; a wrong value is matched against the classic mistakes (the sign flipped,
    no factor 100, the direction of a metric ignored, dividing by the method's value, summing instead of
    averaging, absolute instead of relative changes) and the one it matches is named.

    Returns
    -------
    bool
        ``True`` if everything agrees; otherwise the first failure is printed.
    """
    generator = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        k = int(torch.randint(2, 7, (1,), generator=generator))
        flags = [True, False] + [bool(b) for b in torch.rand(k - 2, generator=generator) < 0.5]
        scales = 10.0 ** torch.randint(-2, 3, (k,), generator=generator)
        base = scales * (0.2 + torch.rand(k, generator=generator))
        change = 1 + 0.4 * (torch.rand(k, generator=generator) - 0.5)
        names = [f"{'score' if h else 'error'} {i}" for i, h in enumerate(flags)]
        model = {n: float(b * c) for n, b, c in zip(names, base, change, strict=True)}
        baseline = {n: float(b) for n, b in zip(names, base, strict=True)}
        higher = dict(zip(names, flags, strict=True))
        if (failure := _delta_m_failure(candidate, model, baseline, higher, rtol)) is not None:
            print(f"✗ case {trial} ({k} metrics): {failure}")
            for label, table in (("model", model), ("baseline", baseline)):
                print(f"  {label}: " + ", ".join(f"{n} {v:.4g}" for n, v in table.items()))
            return False
    print(f"✓ agrees with Δm% on {trials} random tables of 2 to 6 metrics, scores and errors mixed")
    return True
