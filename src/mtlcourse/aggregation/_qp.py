"""Exact solvers for the small m×m quadratic programs behind MGDA, UPGrad, CAGrad and DualProj.

Everything here works on a float64 numpy Gramian ``G = J Jᵀ`` (already normalised by the caller), never on
the Jacobian itself: the problems have m ≤ a few dozen variables, so an active-set method costs
microseconds to milliseconds, is exact in a finite number of steps, and needs no QP library (only
scipy: its NNLS for a starting point on singular Gramians, two LAPACK routines to check definiteness).

Gramians of Jacobians with more tasks than their rank (m > rank J) are singular, and so are many of the
small systems an active-set method meets on the way. Each such system is solved in the least-squares sense
with its numerical rank (:func:`solve_psd`), which the steps below are written to handle: a free set whose
equations are inconsistent is a direction of linear decrease, followed to the boundary. A system is
singular when its Cholesky factorisation has a small pivot or its smallest eigenvalue is small
(:func:`_definite`); the eigenvalues that count as zero are those below the cutoff of
:func:`data_precision`: 1e-14 of the largest (a float64 Gramian's rounding), more for float32 data.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar

import numpy as np
import torch

_TOL = 1e-13  # optimality tolerance on a problem whose Gramian has entries of order 1
_RCOND = 1e-14  # eigenvalues below this fraction of the largest are zero (a float64 Gramian's rounding)
_PIVOT = 1e-9  # a Cholesky pivot below this fraction of its diagonal entry marks a (nearly) singular system
_CUTOFF: ContextVar[float] = ContextVar("cutoff", default=_RCOND)  # _RCOND, or more for float32 data


def _rcond() -> float:
    """The eigenvalue cutoff in force, relative to the largest (:func:`data_precision`)."""
    return _CUTOFF.get()


def _consistent() -> float:
    """sqrt(cutoff): a residual above this times |c| marks free-set equations as unsolvable."""
    return math.sqrt(_CUTOFF.get())


def _definite(L: torch.Tensor, info: torch.Tensor, A: torch.Tensor, estimate: bool = True) -> torch.Tensor:
    """Whether each ``A = L Lᵀ`` (a batch, or one matrix) is safely definite: its Cholesky factorisation
    succeeded (``info``), every pivot is at least a fraction ``1e-9`` of its diagonal entry, and (with
    ``estimate``) a lower bound on its smallest eigenvalue, 1 / trace(A⁻¹) = 1 / ||L⁻¹||², is at least
    ``1e-9`` times its largest diagonal entry (the bound is at most m times too low). The pivots alone can
    miss a near-null vector p: the pivot at which p's dependency closes is about lambda_min / p_j², so it
    passes when p's last coordinate p_j is small (a float32 Jacobian whose rows nearly cancel gave a pivot
    of 1.04e-9 on a system with lambda_min 1e-15, and weights of 2e7 along p).
    """
    pivots = L.diagonal(dim1=-2, dim2=-1) ** 2
    ok = (info == 0) & (pivots >= _PIVOT * A.diagonal(dim1=-2, dim2=-1)).all(dim=-1)
    if not estimate or not ok.any():
        return ok
    identity = torch.eye(A.shape[-1], dtype=L.dtype)
    safe = L if bool(ok.all()) else torch.where(ok[..., None, None], L, identity)
    trace = torch.linalg.solve_triangular(safe, identity, upper=False).square().sum(dim=(-2, -1))
    return ok & (trace * A.diagonal(dim1=-2, dim2=-1).amax(dim=-1) * _PIVOT <= 1.0)


def whole_definite(G: np.ndarray) -> bool:
    """:func:`_definite` for one float64 Gramian, through LAPACK directly (``dpotrf``, ``dtrtri``): 5 µs at
    m = 8 and 70 µs at m = 64, where numpy's or torch's calls for the same checks take 70 to 180 µs."""
    from scipy.linalg import lapack  # here: most callers never import it

    L, info = lapack.dpotrf(G, lower=1, clean=1)
    if info != 0 or (np.diag(L) ** 2 < _PIVOT * np.diag(G)).any():
        return False
    inverse, info = lapack.dtrtri(L, lower=1)
    return info == 0 and float(np.square(inverse).sum()) * np.diag(G).max() * _PIVOT <= 1.0


@contextlib.contextmanager
def data_precision(dtype: torch.dtype, size: int) -> Iterator[None]:
    r"""Solve the problems of a Gramian :math:`G = J J^\top` at the precision of ``J``'s entries.

    A float64 Gramian resolves eigenvalues down to about ``1e-14`` of its largest, and that is the cutoff
    below which the solvers here treat one as zero. A float32 ``J`` does not: rounding its entries (unit
    roundoff :math:`u = \varepsilon / 2`, :math:`\varepsilon` = 1.2e-7) is a perturbation E with
    :math:`\lVert E \rVert_2 \le u \lVert J \rVert_F \le u \sqrt{\text{size}}\,\sigma_{\max}`, ``size`` =
    min(m, n), so the eigenvalues of G below :math:`u^2\,\text{size}` of the largest can be rounding of
    the data. An exact solve on them finds weights of 1e4 to 1e5 along that noise, and the direction then
    changes with the order of the rows (torchjd's float32 permutation test on a 20 × 100 Jacobian of rank
    19 measured 5.6e-7 against its tolerance of 5e-7). In this context the cutoff is
    :math:`\max(10^{-14}, \varepsilon^2\,\text{size})` (four times that bound): unchanged for float64 data,
    2.8e-13 for a float32 ``J`` with 20 rows. It only plays in systems that are not safely definite
    (:func:`_definite`): the others are solved as before, bit for bit.
    """
    token = _CUTOFF.set(max(_RCOND, torch.finfo(dtype).eps ** 2 * size))
    try:
        yield
    finally:
        _CUTOFF.reset(token)


def nonnegative_qp(
    G: np.ndarray, C: np.ndarray, guess: np.ndarray | None = None, definite: bool | None = None
) -> np.ndarray:
    r"""Solve :math:`\min_{x \ge 0} \tfrac12 x^\top G x + c^\top x` exactly, for every row ``c`` of ``C``.

    A primal active-set method (Lawson & Hanson's, extended to a singular ``G``), run in lockstep on all
    the problems (they share ``G``) so that each step is one batched call. ``G`` must be positive
    semi-definite and each problem bounded below (true whenever ``c`` lies in the range of ``G``, or when
    the nonnegative orthant contains no direction ``p`` with ``G p = 0`` and ``c·p < 0``); an unbounded
    problem raises ``ValueError``. Each outer step frees the coordinate whose partial derivative is most
    negative; each inner step minimises over the free set F: if :math:`G_{FF} z_F = -c_F` has a solution,
    the minimum-norm one is the target, and the iterate walks towards it, stopping at the first coordinate
    that would turn negative (which leaves F); if it has none, the part of :math:`-c_F` outside the range
    of :math:`G_{FF}` is a direction of linear decrease, followed until a coordinate reaches 0. The
    objective never increases, and the method stops with the KKT conditions
    :math:`x \ge 0`, :math:`Gx + c \ge 0`, :math:`x \cdot (Gx + c) = 0` satisfied to rounding error.
    ``guess`` (boolean, shape of ``C``) is a warm start: a few primal-dual active-set steps from the
    guessed free sets (:func:`_primal_dual_start`) usually find the optimal support of every problem at
    once (two or three batched solves at m = 64 instead of one per freed coordinate), and otherwise leave a
    nonnegative point stationary on its free set, from which the steps above continue. On a singular ``G``
    whose range holds every ``c`` (UPGrad's, DualProj's and MGDA's problems when m > rank J), where those
    steps cycle, the start is instead each problem solved as a least-squares problem on a factor of ``G``
    (:func:`_factor_start`), kept for the problems where it is stationary on its support to ``1e-13``;
    the others take the primal-dual start. (The steps above only check the sign of the partial
    derivatives off the support, so a start that is not stationary on it would be returned as it is.)
    Either way the answer is the one the steps above certify by the KKT conditions, so the warm start
    changes the time, not the result. Returns an array of the shape of ``C``.

    Where ``G`` itself is safely definite (:func:`_definite`), so is every system on a free set (by
    eigenvalue interlacing, :math:`\lambda_{\min}(G_{FF}) \ge \lambda_{\min}(G)`), and their Cholesky
    pivots suffice; otherwise each system's smallest eigenvalue is bounded too. ``definite`` is
    :func:`whole_definite` of ``G`` where the caller already has it (CAGrad solves many problems on one G).
    """
    C = np.atleast_2d(C)
    k, m = C.shape
    estimate = not (whole_definite(G) if definite is None else definite)  # so are G's principal submatrices
    if guess is None:
        X, free = np.zeros((k, m)), np.zeros((k, m), dtype=bool)
    elif estimate and (start := _factor_start(G, C)) is not None:
        X, free, exact = start
        if not exact.all():  # those problems start from the primal-dual steps, as without a factor start
            rest = ~exact
            X[rest], free[rest] = _primal_dual_start(G, C[rest], np.broadcast_to(guess, C.shape)[rest])
    else:
        X, free = _primal_dual_start(G, C, np.broadcast_to(guess, C.shape), estimate=estimate)
    done = np.zeros(k, dtype=bool)
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
            Z, consistent = _solve_on_free_set(G, C[rows], free[rows], estimate)
            x, f = X[rows], free[rows]
            # Consistent: walk from x towards the target Z (step <= 1). Inconsistent: Z is a direction of
            # linear decrease, followed until a free coordinate reaches 0 (step unbounded otherwise).
            direction = np.where(consistent[:, None], Z - x, Z)
            blocking = f & (direction < 0)
            steps = np.full_like(x, np.inf)
            np.divide(x, -direction, out=steps, where=blocking)
            step = steps.min(axis=1, keepdims=True)
            if not np.isfinite(step[~consistent]).all():
                raise ValueError("The quadratic program is unbounded below (G p = 0, c·p < 0, p >= 0).")
            arrived = consistent & (step[:, 0] >= 1.0)
            step = np.minimum(step, np.where(consistent, 1.0, np.inf)[:, None])
            x = x + step * direction
            x[blocking & (steps <= step)] = 0.0
            x[arrived] = np.where(f[arrived], Z[arrived], 0.0)
            f &= x > 0
            x[~f] = 0.0
            X[rows], free[rows] = x, f
            rows = rows[~arrived]
            if rows.size == 0:
                break
        # Rounding can make the entering coordinate bounce straight back: that problem is then solved.
        done[todo[~free[todo, entering[todo]]]] = True
    return X


def _factor_start(G: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    r"""A starting point for :func:`nonnegative_qp` when ``G`` is singular and its range holds every row
    of ``C``, called when ``G`` is not safely definite; ``None`` (use :func:`_primal_dual_start`) when it
    has no eigenvalue below the cutoff after all, or some ``c`` is not in its range. With
    :math:`G = Q \Lambda Q^\top` restricted to its r eigenvalues above the cutoff (``1e-14``;
    :func:`data_precision`) times the largest, :math:`A = \Lambda^{1/2} Q^\top` (r × m) and
    :math:`b = -\Lambda^{-1/2} Q^\top c`,
    :math:`\tfrac12 \lVert A x - b \rVert^2 = \tfrac12 x^\top G x + c^\top x` + const, so each problem is
    a nonnegative least-squares problem in r equations, solved by Lawson & Hanson's active-set method in
    compiled code (``scipy.optimize.nnls``): its passive columns stay independent, so it does not cycle on
    the singular free sets that stop the primal-dual steps, and its iterations cost microseconds, not a
    batched solve each. Returns the points, their supports, and for each problem whether its point is
    stationary on its support, :math:`|(Gx + c)_i| \le` ``1e-13`` where :math:`x_i > 0`, on ``G`` itself.
    Where it is not, the point must not be used: when 0 is a nonnegative combination p of a few rows of J
    (a "weakly stationary" J: :math:`G p = 0`, :math:`p \ge 0`, so the solutions are unbounded along p),
    the columns of A on p's support are dependent only up to rounding, NNLS admits them all and walks off
    along p (weights of 1e12 on torchjd's rank-19 20 × 100 test matrix, where :math:`Gx + c` is then
    wrong by 1e-3 and the direction by 1e-2). Also where the eigenvalue cutoff or NNLS's own rounding
    leaves the point off the optimum of the problem on ``G``.
    """
    eigenvalues, Q = np.linalg.eigh(G)
    keep = eigenvalues > _rcond() * eigenvalues[-1]
    if keep.all() or not keep.any():
        return None
    root, Q = np.sqrt(eigenvalues[keep]), Q[:, keep]
    A, B = root[:, None] * Q.T, -(C @ Q) / root  # G = Aᵀ A to rounding, and c = -Aᵀ b for c in range(G)
    if np.abs(C + B @ A).max() > _consistent() * np.abs(C).max():
        return None
    from scipy.optimize import nnls  # here: importing scipy.optimize takes most of a second

    try:
        X = np.array([nnls(A, b)[0] for b in B])
    except RuntimeError:  # scipy's iteration limit
        return None
    gradient = X @ G + C
    exact = np.where(X > 0, np.abs(gradient), 0.0).max(axis=1) <= _TOL
    return X, X > 0, exact


def _primal_dual_start(
    G: np.ndarray, C: np.ndarray, guess: np.ndarray, steps: int = 8, estimate: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A starting point for :func:`nonnegative_qp` from the guessed free sets: up to ``steps`` primal-dual
    active-set steps (Hintermüller, Ito & Kunisch 2002), all problems in lockstep. Each step solves on the
    free set F (trimmed, where ``G_FF`` is singular, to its longest leading part that is safely definite:
    :func:`_leading_definite`), keeps the coordinates of F whose solution is positive and frees those
    outside F whose partial derivative is negative; a problem whose F does not change satisfies the KKT
    conditions. For each problem, returns the last point met that is nonnegative and stationary on its
    free set (the invariant of the active-set method, which then finishes the problems that did not
    converge here), or 0. A problem stops here once its free set is singular (on rank-deficient Gramians
    these steps tend to cycle) or after ``steps``. Only Cholesky factorisations, of systems found safely
    definite. Converging or not, this only chooses where the exact method starts.
    """
    k, m = C.shape
    X, free = np.zeros((k, m)), np.zeros((k, m), dtype=bool)
    F, rows = guess.copy(), np.arange(k)
    for _ in range(steps):
        idx, valid, A, B = _gather(G, C[rows], F[rows])
        valid, L, trimmed = _leading_definite(A, valid, estimate)
        z = torch.cholesky_solve(torch.from_numpy(np.where(valid, B, 0.0))[..., None], L)[..., 0].numpy()
        Z, f = np.zeros((len(rows), m)), np.zeros((len(rows), m), dtype=bool)
        np.put_along_axis(Z, idx, np.where(valid, z, 0.0), axis=1)
        np.put_along_axis(f, idx, valid, axis=1)
        feasible = ((Z > 0) | ~f).all(axis=1)
        X[rows[feasible]], free[rows[feasible]] = Z[feasible], f[feasible]
        new = np.where(f, Z > 0, Z @ G + C[rows] < -_TOL)
        changed = (new != F[rows]).any(axis=1)
        F[rows] = new
        rows = rows[changed & ~trimmed]  # a singular free set: the steps cycle there, leave it to the caller
        if rows.size == 0:
            break
    return X, free


def _leading_definite(
    A: np.ndarray, valid: np.ndarray, estimate: bool
) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Trim each gathered system (:func:`_gather`) to its longest leading part that :func:`_definite` finds
    safely definite: cut at the first small Cholesky pivot, or, where every pivot passes but the smallest
    eigenvalue does not (only checked with ``estimate``), at the smallest pivot, and check the rest again.
    Returns the trimmed mask, the Cholesky factors of the trimmed systems, and which systems were trimmed.
    """
    trimmed = np.zeros(len(A), dtype=bool)
    positions = np.arange(A.shape[1])
    while True:
        At = torch.from_numpy(A)
        L, info = torch.linalg.cholesky_ex(At)
        ratio = (L.diagonal(dim1=-2, dim2=-1) ** 2 / At.diagonal(dim1=-2, dim2=-1)).numpy()
        failed_at = np.where(info.numpy() > 0, info.numpy() - 1, len(positions))  # cholesky_ex's info
        bad = (ratio < _PIVOT) | (positions >= failed_at[:, None])
        if estimate:
            hidden = ~bad.any(axis=1) & ~_definite(L, info, At).numpy()
            bad[hidden, np.argmin(np.where(valid, ratio, np.inf), axis=1)[hidden]] = True
        cut = bad.any(axis=1)
        if not cut.any():
            return valid, L, trimmed
        trimmed |= cut
        valid[cut] &= positions < bad[cut].argmax(axis=1)[:, None]
        A = np.where(valid[:, :, None] & valid[:, None, :], A, np.eye(len(positions)))


def _gather(
    G: np.ndarray, C: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The systems ``G_FF z_F = -c_F`` of every row, gathered to the size s of the largest free set: the
    indices ``idx`` (k, s) (F first), the mask of F in that order, and ``A`` (k, s, s), ``B`` (k, s) padded
    with identity rows."""
    idx = np.argsort(~free, axis=1, kind="stable")[:, : max(free.sum(axis=1).max(), 1)]
    valid = np.take_along_axis(free, idx, axis=1)
    A = np.where(valid[:, :, None] & valid[:, None, :], G[idx[:, :, None], idx[:, None, :]], 0.0)
    A[:, np.arange(idx.shape[1]), np.arange(idx.shape[1])] += ~valid
    B = np.where(valid, -np.take_along_axis(C, idx, axis=1), 0.0)
    return idx, valid, A, B


def _solve_on_free_set(
    G: np.ndarray, C: np.ndarray, free: np.ndarray, estimate: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the minimum-norm solution ``z`` of ``G_FF z_F = -c_F`` on its free set F (``z = 0``
    elsewhere) and ``True``; or, where those equations have no solution, the component of ``-c_F`` outside
    the range of ``G_FF`` (a direction along which the objective decreases linearly) and ``False``.

    "No solution" means a residual above sqrt(cutoff) (1e-7 for float64 data) times the scale of the whole
    problem, max |c| (not max |c_F|), because that is what rounding leaves for a c in the range of G: with
    c = G y, the part of c_F along an eigenvector q of G_FF whose eigenvalue lam <= cutoff ||G|| the
    solver treats as 0 is |qᵀ G_F· y| <= sqrt(lam yᵀ G y), which can be as large as sqrt(cutoff) |c| (as
    yᵀ G y >= |c|² / ||G||). Against |c_F| alone, two rows that are opposite up to float32 rounding (an
    eigenvalue ~1e-16 of G_FF, a coupling ~4e-9 to a third row, |c_F| ~4e-9) looked inconsistent, and
    the QP, bounded, was reported unbounded (UPGrad raised on weakly stationary float32 Jacobians)."""
    idx, valid, A, B = _gather(G, C, free)
    z = np.where(valid, solve_psd(A, B, estimate), 0.0)  # a least-squares solver can leave rounding off F
    residual = np.where(valid, B - np.einsum("kij,kj->ki", A, z), 0.0)
    scale = np.abs(A).max(axis=(1, 2)) * np.abs(z).max(axis=1) + np.abs(C).max(axis=1)
    consistent = np.abs(residual).max(axis=1) <= _consistent() * scale
    Z = np.zeros(C.shape)
    np.put_along_axis(Z, idx, np.where(consistent[:, None], z, residual), axis=1)
    return Z, consistent


def solve_psd(A: np.ndarray, B: np.ndarray, estimate: bool = True) -> np.ndarray:
    """Least-squares solution of minimum norm of ``A x = b`` for symmetric PSD ``A``, batched over the
    leading axis (``A``: (k, m, m), ``B``: (k, m)).

    A Cholesky factorisation where ``A`` is safely definite (:func:`_definite`: pivots and, with
    ``estimate``, the smallest eigenvalue at least ``1e-9`` of the scale; the solution is then unique);
    ``estimate=False`` when ``A`` is a principal submatrix of a Gramian already found safely definite,
    whose pivots then suffice. Otherwise an SVD (LAPACK ``gelsd``) that
    treats singular values below the cutoff (``1e-14``; :func:`data_precision`) times the largest as zero.
    (A rank-revealing QR, ``gelsy``, is not enough: on a Gramian with two identical rows, as two identical
    examples give, it returned residuals of 0.2 where the exact least-squares residual is rounding.)
    """
    At, Bt = torch.from_numpy(A), torch.from_numpy(B)[..., None]
    L, info = torch.linalg.cholesky_ex(At)
    definite = _definite(L, info, At, estimate)
    if definite.all():  # the common case, without the cost of masked indexing
        return torch.cholesky_solve(Bt, L)[..., 0].numpy()
    X = torch.empty_like(Bt)
    if definite.any():
        X[definite] = torch.cholesky_solve(Bt[definite], L[definite])
    singular = ~definite
    X[singular] = torch.linalg.lstsq(At[singular], Bt[singular], rcond=_rcond(), driver="gelsd").solution
    return X[..., 0].numpy()


def min_norm_simplex(G: np.ndarray) -> np.ndarray:
    r"""Weights of the min-norm point of the rows' convex hull: :math:`\min_{w \in \Delta_m} w^\top G w`.

    Uses the classical reduction to a nonnegative least-squares problem: with
    :math:`x^\star = \arg\min_{x \ge 0} x^\top G x + (\mathbf 1^\top x - 1)^2`, whose KKT conditions read
    :math:`G x + (\mathbf 1^\top x - 1)\mathbf 1 \ge 0` with equality on the support, the point
    :math:`w = x^\star / \mathbf 1^\top x^\star` satisfies the KKT conditions of the simplex problem.
    (The right-hand side :math:`\mathbf 1` lies in the range of :math:`G + \mathbf 1 \mathbf 1^\top`, so
    every system met on the way has a solution, singular ``G`` or not.)
    """
    m = G.shape[0]
    x = nonnegative_qp(G + 1.0, -np.ones(m), guess=np.ones(m, dtype=bool))[0]
    return x / x.sum()
