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


def dual_cone_projections(J: torch.Tensor, G: torch.Tensor) -> np.ndarray:
    """The projections of the rows of ``G`` (k × n) onto the dual cone {u : J u >= 0} of the rows of ``J``,
    all in one problem, min ||U - G||² s.t. J Uᵀ >= 0, solved by cvxpy (Clarabel)."""
    import cvxpy as cp

    A, B = J.double().numpy(), G.double().numpy()
    U = cp.Variable(B.shape)
    cp.Problem(cp.Minimize(cp.sum_squares(U - B)), [A @ U.T >= 0]).solve(solver=cp.CLARABEL)
    return U.value
