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


def exact_dual_cone_projections(J: torch.Tensor, G: torch.Tensor) -> np.ndarray:
    """:func:`dual_cone_projections` to rounding error, also where the cone {u : J u >= 0} has an empty
    interior (a nonnegative combination of rows of ``J`` is 0), where Clarabel on that problem answers
    "optimal" 1e-4 off, or far off. Clarabel solves the dual, min ||b + Jᵀλ||² over λ >= 0 (plus
    1e-10 ||J||² ||λ||², without which the multipliers run off to 1e20 along that combination) for each
    row b of ``G``; from its u = b + Jᵀλ the active constraints J_A u = 0 are guessed (|J_i u| <= t |J_i| |b|)
    and u is replaced by the projection p of b onto the null space of J_A, from an SVD of J_A. p is the
    projection onto the cone if it lies in the cone (J p >= 0, to 1e-12 of the scale) and p - b = J_Aᵀ λ
    for some λ >= 0 (λ = y + N z, y the minimum-norm solution and N a basis of the null space of J_Aᵀ,
    where the rows of J_A are dependent: a linear program in z, to 1e-9 of |y|). A row whose guess fails
    that certificate is guessed again (other t, then Clarabel with other tolerances, which sometimes fails
    outright at the tightest); one that never passes raises, so no wrong guess passes for the answer."""
    import cvxpy as cp
    from scipy.optimize import linprog

    A, B = J.double().numpy(), G.double().numpy()
    rows = np.linalg.norm(A, axis=1)

    def certified(b: np.ndarray, u: np.ndarray) -> np.ndarray | None:
        for t in (1e-6, 1e-8, 1e-4):
            active = A[np.abs(A @ u) <= t * rows * np.linalg.norm(b)]
            if len(active) == 0:
                p, y, N = b, np.zeros(0), np.zeros((0, 0))
            else:
                left, sv, right = np.linalg.svd(active.T, full_matrices=False)  # active.T = left sv right
                rank = int((sv > 1e-12 * sv[0]).sum())
                y = right[:rank].T @ ((left[:, :rank].T @ b) / sv[:rank])  # active.T y = b's part in range
                p, N = b - active.T @ y, right[rank:].T  # p - b = active.T (-y); λ = -y + N z
            if (A @ p).min() < -1e-12 * rows.max() * np.linalg.norm(b):
                continue
            slack = 1e-9 * max(np.abs(y).max(initial=0.0), 1e-300)
            if N.shape[1] == 0:
                if (-y).min(initial=0.0) >= -slack:
                    return p
            elif linprog(np.zeros(N.shape[1]), A_ub=-N, b_ub=slack - y, bounds=(None, None)).status == 0:
                return p
        return None

    projections: list[np.ndarray | None] = [None] * len(B)
    for tol in (1e-10, 1e-9, 1e-8, None):
        L = cp.Variable((len(B), len(A)), nonneg=True)  # U = B + L A: the multipliers, a cone with interior
        options = {} if tol is None else dict(tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, max_iter=500)
        ridge = 1e-10 * (A**2).sum() * cp.sum_squares(L)  # bounded multipliers where L A = 0 has L >= 0
        try:
            cp.Problem(cp.Minimize(cp.sum_squares(B + L @ A) + ridge)).solve(solver=cp.CLARABEL, **options)
        except cp.error.SolverError:
            continue
        for i, (b, u) in enumerate(zip(B, B + L.value @ A, strict=True)):
            if projections[i] is None:
                projections[i] = certified(b, u)
        if all(p is not None for p in projections):
            return np.array(projections)
    raise AssertionError("no certified projection")
