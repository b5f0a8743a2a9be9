r"""The common shape of every aggregator: a direction :math:`d = J^\top w` from weights :math:`w`."""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ._qp import data_precision

NON_FINITE = "J has non-finite entries (NaN or inf), or entries so large that the computation overflows."


def check_jacobian(J: object) -> Tensor:
    """Return ``J`` if it is a floating-point matrix with at least one row; raise otherwise.

    Finiteness is not checked here, as a pass over ``J`` would cost as much as :class:`Mean` itself: a NaN
    or inf entry of ``J`` makes the Gramian non-finite (checked before any solve) and the direction
    non-finite (``0 * inf`` is NaN), which :func:`aggregate` checks through its sum.
    """
    if not isinstance(J, Tensor):
        raise TypeError(f"J must be a torch.Tensor of shape (m, n), got {type(J).__name__}.")
    if J.ndim != 2:
        raise ValueError(f"J must be a 2-D matrix of shape (m, n), got a tensor of shape {tuple(J.shape)}.")
    if J.shape[0] == 0:
        raise ValueError(f"J has zero rows (shape {tuple(J.shape)}): there must be at least one task.")
    if not J.is_floating_point():
        raise TypeError(f"J must have a floating-point dtype, got {J.dtype}.")
    return J


def aggregate(
    aggregator: Aggregator, J: Tensor, *, nonfinite: Literal["raise", "propagate"] = "raise"
) -> tuple[Tensor, Tensor]:
    """Validate ``J``; return the direction ``weights @ J`` and the weights, both without autograd graph.

    The whole computation runs with autocast off on ``J``'s device (the Gramian and the direction are
    formed in float64 where the aggregator says so, never in a float16/bfloat16 that an enclosing
    ``torch.autocast`` would pick).

    Parameters
    ----------
    nonfinite : {"raise", "propagate"}, default "raise"
        What a Jacobian with a NaN or infinite entry gives. ``"raise"``: a ``ValueError`` (what calling an
        aggregator does). ``"propagate"``: a non-finite direction, as ``loss.backward()`` gives a non-finite
        ``.grad`` (what :mod:`mtlcourse.autojac` does, so that ``torch.amp.GradScaler`` sees the overflow of a
        float16 backward pass, skips the step and lowers its scale); the weights are then NaN when the
        aggregator could not compute any. This mode adds no host-device synchronisation on the finite path.
    """
    if nonfinite not in ("raise", "propagate"):
        raise ValueError(f"nonfinite must be 'raise' or 'propagate', got {nonfinite!r}.")
    J = check_jacobian(J).detach()
    with autocast_off(J.device):
        try:
            direction, weights = aggregator._direction_and_weights(J)
        except ValueError:
            if nonfinite == "raise" or bool(torch.isfinite(J).all()):
                raise
            # The weights could not be computed (a non-finite Gramian): NaN everywhere, as a solver given NaN
            # would return. A finite-weight path needs nothing: w @ J is non-finite wherever J is.
            return J.new_full((J.shape[1],), math.nan), J.new_full((J.shape[0],), math.nan)
    if nonfinite == "raise" and not math.isfinite(direction.sum().item()):  # NaN or inf makes the sum so
        raise ValueError(NON_FINITE)
    return direction, weights


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """A context in which ``torch.autocast`` is disabled for ``device``'s type (a no-op where it has none)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class Aggregator(ABC):
    r"""Turns a Jacobian :math:`J \in \mathbb{R}^{m \times n}` (one row per task) into an update direction.

    Every method of the course is *weighted*: the direction is :math:`d = J^\top w` for weights
    :math:`w \in \mathbb{R}^m` that depend on :math:`J` (usually only through the Gramian :math:`J J^\top`).
    Subclasses implement :meth:`weights`; calling the aggregator validates ``J`` once and returns
    ``weights(J) @ J``.

    **Autograd contract.** The direction carries no autograd graph, whatever ``J`` carries: it is computed
    from ``J.detach()``, so ``aggregator(J).requires_grad`` is ``False`` even when ``J.requires_grad`` is
    (as in torchjd, whose aggregators are non-differentiable too). The weights come from exact but
    non-smooth solvers (active sets, a root search), through which a gradient would be wrong or undefined;
    an aggregator is meant to produce an update direction, not a differentiable function of ``J``.
    """

    @abstractmethod
    def weights(self, J: Tensor) -> Tensor:
        """Weights :math:`w` of shape ``(m,)``, same dtype and device as ``J`` (not validated here)."""

    def _direction_and_weights(self, J: Tensor) -> tuple[Tensor, Tensor]:
        """``(weights(J) @ J, weights(J))`` for a validated, detached ``J``."""
        weights = self.weights(J).detach()
        return weights @ J, weights

    def __call__(self, J: Tensor) -> Tensor:
        r"""Direction :math:`J^\top w` of shape ``(n,)`` for a Jacobian ``J`` of shape ``(m, n)``.

        Raises ``ValueError`` if ``J`` has a NaN or infinite entry. Computed with autocast off.
        """
        return aggregate(self, J)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def gramian64(J: Tensor, *, check: bool = True) -> Tensor:
    """``J Jᵀ`` of shape ``(m, m)``, computed in float64 from a float64 copy of ``J`` on ``J``'s device.

    Raises ``ValueError`` if it is not finite, i.e. if ``J`` has a NaN or infinite entry (or overflows),
    unless ``check`` is false: the check reads a value back from ``J``'s device (a synchronisation), which a
    caller that passes ``G`` to :func:`gramian_to_numpy` (it checks on the CPU copy) need not pay.
    """
    J = J.detach().to(torch.float64)
    with autocast_off(J.device):  # float64 is not autocast today; this says so and keeps it so
        G = J @ J.T
    if check and not math.isfinite(G.sum().item()):
        raise ValueError(NON_FINITE)
    return G


class GramianWeightedAggregator(Aggregator):
    r"""An aggregator whose weights depend on :math:`J` only through its Gramian :math:`G = J J^\top`.

    This is torchjd's split into a *weighting* :math:`G \mapsto w` and the aggregation
    :math:`d = J^\top w`: subclasses implement :meth:`weights_from_gramian`, which can then be called on a
    Gramian obtained without ever forming :math:`J`. :meth:`weights` forms :math:`G` in float64 (from a
    float64 copy of :math:`J`, whatever its dtype) and calls it, with the eigenvalues of :math:`G` that lie
    below the rounding of :math:`J`'s own dtype counted as zero (:func:`._qp.data_precision`: for a float32
    :math:`J` of shape (m, n), those below :math:`\varepsilon^2 \min(m, n)` of the largest).
    """

    def weights(self, J: Tensor) -> Tensor:
        """Weights ``weights_from_gramian(J Jᵀ)``, the Gramian formed in float64; ``J``'s dtype and device."""
        with autocast_off(J.device), data_precision(J.dtype, min(J.shape)):
            return self.weights_from_gramian(gramian64(J)).to(dtype=J.dtype, device=J.device)

    def _direction_and_weights(self, J: Tensor) -> tuple[Tensor, Tensor]:
        """The direction is formed in float64 from the float64 weights, then rounded once to ``J``'s dtype:
        where rows nearly cancel, the weights can be large and ``w @ J`` in float32 would magnify rounding."""
        J64 = J.to(torch.float64)
        # Every weighting of the course reads G through gramian_to_numpy, which refuses a non-finite G.
        with data_precision(J.dtype, min(J.shape)):  # eigenvalues of G below J's rounding count as 0
            weights = self.weights_from_gramian(gramian64(J64, check=False)).to(device=J.device)
        return (weights @ J64).to(J.dtype), weights.to(J.dtype)

    @abstractmethod
    def weights_from_gramian(self, G: Tensor) -> Tensor:
        """Weights of shape ``(m,)`` for a positive semi-definite Gramian ``G`` of shape ``(m, m)``.

        ``G`` may have any floating-point dtype and device; the computation is done in float64 and the
        weights are returned in ``G``'s dtype and on its device, without an autograd graph.
        """


def gramian_to_numpy(G: Tensor) -> np.ndarray:
    """Check that ``G`` is a finite square floating-point matrix and return it as a float64 numpy array."""
    if not isinstance(G, Tensor):
        raise TypeError(f"G must be a torch.Tensor of shape (m, m), got {type(G).__name__}.")
    if G.ndim != 2 or G.shape[0] != G.shape[1] or G.shape[0] == 0:
        raise ValueError(f"G must be a square (m, m) matrix with m >= 1, got shape {tuple(G.shape)}.")
    if not G.is_floating_point():
        raise TypeError(f"G must have a floating-point dtype, got {G.dtype}.")
    G = G.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(G).all():
        raise ValueError("G has non-finite entries (NaN or inf).")
    return G
