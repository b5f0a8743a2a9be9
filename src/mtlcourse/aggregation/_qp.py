"""Exact solvers for the small m×m quadratic programs behind MGDA, UPGrad and CAGrad.

Everything here works on a float64 numpy Gramian ``G = J Jᵀ`` (already normalised by the caller), never on
the Jacobian itself: the problems have m ≤ a few dozen variables, so a Python active-set method costs
microseconds, is exact in a finite number of steps, and needs no QP library.
"""

from __future__ import annotations

import numpy as np

_TOL = 1e-13  # optimality tolerance on a problem whose Gramian has entries of order 1


def nonnegative_qp(G: np.ndarray, C: np.ndarray, guess: np.ndarray | None = None) -> np.ndarray:
    r"""Solve :math:`\min_{x \ge 0} \tfrac12 x^\top G x + c^\top x` exactly, for every row ``c`` of ``C``.

    Lawson & Hanson's active-set method, run in lockstep on all the problems (they share ``G``) so that each
    step is one batched numpy call. ``G`` must be positive semi-definite and each problem bounded below (true
    whenever ``c`` lies in the range of ``G``, or ``G`` is definite on the nonnegative orthant). Each outer
    step frees the coordinate whose partial derivative is most negative; each inner step solves the
    stationarity equations on the free set and walks back to the boundary if that solution leaves the
    orthant. It terminates in finitely many steps with the KKT conditions satisfied to rounding error.
    ``guess`` (boolean, shape of ``C``) is a warm start: a problem whose stationary point on its guessed
    support is positive starts from there, which often leaves nothing to do but check optimality.
    Returns an array of the shape of ``C``.
    """
    C = np.atleast_2d(C)
    k, m = C.shape
    X = np.zeros((k, m))
    free = np.zeros((k, m), dtype=bool)
    done = np.zeros(k, dtype=bool)
    if guess is not None:
        guess = np.broadcast_to(guess, C.shape)
        Z = _solve_on_free_set(G, C, guess)
        good = ((Z > 0) | ~guess).all(axis=1)
        X[good], free[good] = Z[good], guess[good]
    for _ in range(4 * m + 8):
        gradient = X @ G + C
        gradient[free | done[:, None]] = np.inf
        entering = gradient.argmin(axis=1)
        todo = np.flatnonzero(gradient[np.arange(k), entering] < -_TOL)
        if todo.size == 0:
            break
        free[todo, entering[todo]] = True
        rows = todo
        for _ in range(4 * m + 8):
            Z = _solve_on_free_set(G, C[rows], free[rows])
            inside = ((Z > 0) | ~free[rows]).all(axis=1)
            X[rows[inside]] = Z[inside]
            rows, Z = rows[~inside], Z[~inside]
            if rows.size == 0:
                break
            x, f = X[rows], free[rows]
            blocking = f & (Z <= 0)
            gap = x - Z  # > 0 on blocking coordinates, except where both are 0, which blocks at once
            steps = np.full_like(x, np.inf)
            np.divide(x, gap, out=steps, where=blocking & (gap > 0))
            steps[blocking & (gap <= 0)] = 0.0
            step = steps.min(axis=1, keepdims=True)
            x = x + step * (Z - x)
            x[blocking & (steps == step)] = 0.0
            f &= x > 0
            x[~f] = 0.0
            X[rows], free[rows] = x, f
        # Rounding can make the entering coordinate bounce straight back: that problem is then solved.
        done[todo[~free[todo, entering[todo]]]] = True
    return X


def _solve_on_free_set(G: np.ndarray, C: np.ndarray, free: np.ndarray) -> np.ndarray:
    """For each row, solve ``G_FF z_F = -c_F`` on its free set F and set ``z = 0`` elsewhere (batched)."""
    A = np.where(free[:, :, None] & free[:, None, :], G, 0.0)
    A[:, np.arange(G.shape[0]), np.arange(G.shape[0])] += ~free
    return solve_symmetric(A, np.where(free, -C, 0.0)[..., None])[..., 0]


def solve_symmetric(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``A x = b`` for small symmetric PSD ``A`` (batched; least squares if singular)."""
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(A, hermitian=True) @ b


def min_norm_simplex(G: np.ndarray) -> np.ndarray:
    r"""Weights of the min-norm point of the rows' convex hull: :math:`\min_{w \in \Delta_m} w^\top G w`.

    Uses the classical reduction to a nonnegative least-squares problem: with
    :math:`x^\star = \arg\min_{x \ge 0} x^\top G x + (\mathbf 1^\top x - 1)^2`, whose KKT conditions read
    :math:`G x + (\mathbf 1^\top x - 1)\mathbf 1 \ge 0` with equality on the support, the point
    :math:`w = x^\star / \mathbf 1^\top x^\star` satisfies the KKT conditions of the simplex problem.
    """
    m = G.shape[0]
    x = nonnegative_qp(G + 1.0, -np.ones(m), guess=np.ones(m, dtype=bool))[0]
    return x / x.sum()
