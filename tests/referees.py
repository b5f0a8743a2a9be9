"""Independent solvers the tests referee against (never used by the package)."""

import numpy as np
import torch


def cagrad_primal_optimum(J: torch.Tensor, c: float) -> float:
    """max over ||d - g0|| <= c ||g0|| of min_i g_i . d, solved as an SOCP by cvxpy (Clarabel)."""
    import cvxpy as cp

    A = J.double().numpy()
    g0 = A.mean(axis=0)
    d, t = cp.Variable(A.shape[1]), cp.Variable()
    cp.Problem(cp.Maximize(t), [A @ d >= t, cp.norm(d - g0) <= c * np.linalg.norm(g0)]).solve(
        solver=cp.CLARABEL
    )
    return float(t.value)
