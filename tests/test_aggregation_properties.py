"""Property tests of mtlcourse.aggregation on seeded sweeps of hard Jacobians (issue 13).

The sweep covers m = 1…16 tasks and n = 1…300 parameters, m > n included, rank-deficient J, rows that
cancel (0 in the convex hull, with positive weights), task scales spread over 10⁸, float32 and float64.
Each test checks a promise that could fail: the KKT conditions of the quadratic programs, non-conflict where
it is promised, CAGrad inside its ball and at the optimum of its primal problem (referee: cvxpy), and
permutation invariance. What CAGrad promises: ``||d - g0|| <= c ||g0||`` and
``min_i g_i·d >= min_i g_i·g0`` for every c; non-conflict (``J d >= 0``) only for c >= 1, where the ball
contains 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from referees import cagrad_primal_optimum, dual_cone_projections, exact_dual_cone_projections

from mtlcourse.aggregation import MGDA, CAGrad, DualProj, Mean, PCGrad, UPGrad, _qp
from mtlcourse.aggregation._qp import min_norm_simplex, nonnegative_qp

KINDS = ["normal", "rank_deficient", "cancelling", "scales"]


def sample(kind: str, m: int, n: int, seed: int) -> torch.Tensor:
    """A float64 (m, n) Jacobian of the given kind."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(m, n, generator=g, dtype=torch.float64)
    if kind == "rank_deficient":
        r = max(1, min(m, n) // 3)
        J = torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(
            r, n, generator=g, dtype=torch.float64
        )
    elif kind == "cancelling" and m > 1:  # w > 0 with w^T J = 0: last row = -(sum_i w_i g_i) / w_m
        w = torch.rand(m, generator=g, dtype=torch.float64) + 0.5
        J[-1] = -(w[:-1] @ J[:-1]) / w[-1]
    elif kind == "scales":
        J *= torch.logspace(-4, 4, m, dtype=torch.float64)[torch.randperm(m, generator=g)][:, None]
    return J


def sweep(count: int, seed: int = 0) -> list:
    """``count`` seeded (kind, m, n, dtype, seed) cases; shapes drawn so that m > n happens often."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        m = int(rng.integers(1, 17))
        n = int(rng.choice([rng.integers(1, 8), rng.integers(1, 301)]))
        dtype = [torch.float64, torch.float32][(i // len(KINDS)) % 2]
        cases.append(pytest.param(kind, m, n, dtype, i, id=f"{kind}-{m}x{n}-{str(dtype)[-7:]}-{i}"))
    return cases


CASES = sweep(24)


def jacobian(kind: str, m: int, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return sample(kind, m, n, seed).to(dtype)


def conflict(J: torch.Tensor, d: torch.Tensor) -> float:
    """Largest violation of g_i . d >= 0, relative to max_j ||g_j||²: the Gramian, hence the weights, are
    exact up to rounding at the scale of the largest task (MGDA and CAGrad normalise it by its largest entry
    or its trace), so a task 1e8 times smaller sees a relative error 1e8 times larger."""
    J, d = J.double(), d.double()
    scale = (J.norm(dim=1).max() ** 2).clamp(min=1e-300)
    return (-(J @ d) / scale).clamp(min=0).max().item()


def eps(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 1e-11


# ---------------------------------------------------------------------------------------------------------
# The QP layer: KKT conditions on Gramians of every kind
# ---------------------------------------------------------------------------------------------------------


def normalised_gramian(J: torch.Tensor) -> np.ndarray:
    J = J.double()
    G = (J @ J.T).numpy()
    return G / max(G.trace(), 1e-300)


@pytest.mark.parametrize(("kind", "m", "n", "dtype", "seed"), CASES)
def test_nonnegative_qp_satisfies_kkt_on_upgrad_problems(kind, m, n, dtype, seed):
    """min_{x >= 0} x^T G x / 2 + c^T x for every row c of G (UPGrad's problems): x >= 0, Gx + c >= 0,
    x . (Gx + c) = 0, to rounding error."""
    G = normalised_gramian(jacobian(kind, m, n, dtype, seed))
    X = nonnegative_qp(G, G, guess=G < 0)
    gradient = X @ G + G
    scale = 1.0 + np.abs(X).max()
    assert X.min() >= 0.0
    assert gradient.min() >= -1e-9 * scale
    assert np.abs(X * gradient).max() <= 1e-9 * scale


@pytest.mark.parametrize(("kind", "m", "n", "dtype", "seed"), CASES)
def test_min_norm_simplex_satisfies_kkt(kind, m, n, dtype, seed):
    """w in the simplex, (Gw)_i >= w^T G w for all i, with equality on the support."""
    G = normalised_gramian(jacobian(kind, m, n, dtype, seed))
    w = min_norm_simplex(G)
    Gw = G @ w
    lam = w @ Gw
    assert w.min() >= 0.0 and abs(w.sum() - 1.0) <= 1e-12
    assert Gw.min() >= lam - 1e-10
    assert np.abs(w * (Gw - lam)).max() <= 1e-10


def check_kkt(G: np.ndarray, C: np.ndarray, X: np.ndarray, tol: float = 1e-9) -> None:
    """x >= 0, Gx + c >= 0 and x . (Gx + c) = 0 for every row, to ``tol`` times the size of x."""
    gradient = X @ G + C
    scale = 1.0 + np.abs(X).max()
    assert X.min() >= 0.0
    assert gradient.min() >= -tol * scale
    assert np.abs(X * gradient).max() <= tol * scale


@pytest.mark.parametrize("m", [16, 24, 32, 48, 64])
@pytest.mark.parametrize("rank", ["full", "m/4", "m/2 + 1", "10"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_qps_of_upgrad_dualproj_and_mgda_satisfy_kkt_at_large_m(m, rank, dtype):
    """Many tasks (m = 16…64, a batch of per-example losses): full rank, and rank m/4, m/2 + 1, 10 < m.
    The warm-started solve (primal-dual steps, then the active-set method) and the cold one (active-set
    method from 0) must both reach the KKT point; the problems are strictly convex on the range of G, so
    G x, hence the direction, is the same for both."""
    r = {"full": m, "m/4": m // 4, "m/2 + 1": m // 2 + 1, "10": 10}[rank]
    g = torch.Generator().manual_seed(m + r)
    J = torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(r, 300, generator=g).double()
    G = normalised_gramian(J.to(dtype))
    norms = np.sqrt(G.diagonal())
    correlation = G / np.outer(norms, norms)
    warm = nonnegative_qp(correlation, correlation, guess=correlation < 0)  # UPGrad's m problems
    check_kkt(correlation, correlation, warm)
    cold = nonnegative_qp(correlation, correlation)
    np.testing.assert_allclose(warm @ correlation, cold @ correlation, rtol=0, atol=1e-8)
    u = norms / m / (norms / m).max()  # DualProj's problem for the mean
    c = (correlation @ u)[None, :]
    check_kkt(correlation, c, nonnegative_qp(correlation, c, guess=c < 0))
    w = min_norm_simplex(G)  # MGDA
    Gw = G @ w
    assert w.min() >= 0.0 and abs(w.sum() - 1.0) <= 1e-12
    assert Gw.min() >= w @ Gw - 1e-10 and np.abs(w * (Gw - w @ Gw)).max() <= 1e-10


def singular_jacobian(m: int, n: int, seed: int) -> torch.Tensor:
    """An (m, n) float64 Jacobian with m > n (a singular Gramian), rows scaled over 10²."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(m, n, generator=g, dtype=torch.float64)
    return J * torch.logspace(-1, 1, m, dtype=torch.float64)[torch.randperm(m, generator=g)][:, None]


@pytest.mark.parametrize("m", [16, 32, 64])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
def test_upgrad_and_dualproj_on_singular_gramians_match_a_cvxpy_projection(m, n):
    """m > n: the Gramian is singular and the weights need not be unique, but the projections are. UPGrad
    against the mean of the m projections of the rows onto the dual cone, DualProj against the projection of
    the mean row, both solved by cvxpy in the n-dimensional primal; the QPs themselves satisfy the KKT
    conditions and agree with the active-set method started from 0 (``guess=None``) on ``G x``."""
    J = singular_jacobian(m, n, 100 * m + n)
    scale = J.norm(dim=1).max().item()
    projections = dual_cone_projections(J, torch.cat([J, J.mean(dim=0, keepdim=True)]))
    np.testing.assert_allclose(UPGrad()(J).numpy(), projections[:m].mean(axis=0), rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(DualProj()(J).numpy(), projections[m], rtol=0, atol=1e-6 * scale)
    G = normalised_gramian(J)
    correlation = G / np.sqrt(np.outer(G.diagonal(), G.diagonal()))
    X = nonnegative_qp(correlation, correlation, guess=correlation < 0)
    check_kkt(correlation, correlation, X)
    cold = nonnegative_qp(correlation, correlation)
    np.testing.assert_allclose(X @ correlation, cold @ correlation, rtol=0, atol=1e-9)


def test_singular_gramians_need_no_batched_active_set_solve(monkeypatch):
    """At m > rank J the primal-dual steps cycle on singular free sets, and the active-set method used to
    take over freeing one coordinate per batched solve (10 to 18 solves at n = 10). The start from a factor
    of G (``_factor_start``) is the solution: the active-set method only checks it."""
    calls = []
    solve = _qp._solve_on_free_set
    monkeypatch.setattr(_qp, "_solve_on_free_set", lambda *args: calls.append(1) or solve(*args))
    for m in (16, 32, 64):
        J = torch.randn(m, 10, generator=torch.Generator().manual_seed(m))
        for aggregator in (UPGrad(), DualProj(), MGDA()):
            aggregator(J)
    assert calls == []
    G = np.array([[1.0, -0.5], [-0.5, 1.0]])
    nonnegative_qp(G, G)  # the counter counts: from 0, the active-set method solves
    assert calls != []


def strictly_weak_jacobian(m: int, n: int, rank: int, seed: int) -> torch.Tensor:
    """torchjd's ``StrictlyWeakSampler`` (its tests' ``typical_matrices[18]`` is one at (20, 100, 19)), in
    numpy: J = U[:, 1 : rank + 1] S Vᵀ with U orthonormal, its first two columns v, v' >= 0 on disjoint
    supports, so that vᵀ J = 0 (0 is a nonnegative combination of the rows of v's support) but no positive
    combination of all rows is 0. Here v's support has at least 2 rows (torchjd's may have 1: a row of J
    that is 0 up to rounding, whose direction, hence its constraint, is noise)."""
    rng = np.random.default_rng(seed)
    u, order, k = np.abs(rng.standard_normal(m)), rng.permutation(m), int(rng.integers(2, m))
    V = np.zeros((m, 2))
    for j, rows in enumerate((order[:k], order[k:])):
        V[rows, j] = u[rows] / np.linalg.norm(u[rows])
    B = rng.standard_normal((m, m - 2))
    U = np.hstack([V, np.linalg.qr(B - V @ (V.T @ B))[0]])
    right = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return torch.from_numpy(U[:, 1 : rank + 1] * np.abs(rng.standard_normal(rank)) @ right[:rank])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upgrad_and_dualproj_exact_on_strictly_weakly_stationary_jacobians(seed):
    """Regression (torchjd's own test_permutation_invariant[matrix18] failed at 1.4e-3, UPGrad, and 2.7e-4,
    DualProj, in float64): with 0 a nonnegative combination p of some rows, p is a null vector of G and the
    QPs' solutions are unbounded along it; scipy's NNLS on the factor of G (``_factor_start``) walked off
    along it to weights of 1e12, where G x carries errors of 1e-3, and that start was kept. Exact now: the
    weights stay O(1), every row order gives the same direction to 1e-9, and that direction is the cone
    projection of a referee (Clarabel, then its active set solved exactly and certified)."""
    J = strictly_weak_jacobian(20, 100, 19, seed)
    projections = exact_dual_cone_projections(J, torch.cat([J, J.mean(dim=0, keepdim=True)]))
    g = torch.Generator().manual_seed(seed)
    for aggregator, reference in ((UPGrad(), projections[:20].mean(axis=0)), (DualProj(), projections[20])):
        atol = 1e-9 * np.abs(reference).max()
        np.testing.assert_allclose(aggregator(J).numpy(), reference, rtol=0, atol=atol)
        assert aggregator.weights(J).abs().max() < 1e3
        for _ in range(3):
            order = torch.randperm(20, generator=g)
            np.testing.assert_allclose(aggregator(J[order]).numpy(), reference, rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("m", "n", "rank", "seed"), [(3, 8, 2, 4), (18, 19, 2, 10), (12, 37, 8, 26), (7, 72, 4, 31)]
)
def test_upgrad_on_float32_rows_opposite_up_to_rounding(m, n, rank, seed):
    """Regression (``ValueError: ... unbounded`` on 11-15 of 150 float32 weakly stationary J): two rows of
    the float32 J are opposite up to its rounding (at an angle pi - 1e-8, so that 1 + cos is 5e-17, below the
    float64 Gramian's rounding), while their correlations with a third row miss being opposite by 4e-9. The
    free-set equations on those two rows were judged against |c_F| ~ 4e-9, not |c| ~ 1, and found
    inconsistent: a bounded QP reported unbounded. Now a direction comes back, non-conflicting, and the
    QP satisfies its KKT conditions to sqrt(_RCOND) = 1e-7 (what the Gramian's rounding leaves undetermined
    there)."""
    J = strictly_weak_jacobian(m, n, rank, seed).float()
    for aggregator in (UPGrad(), DualProj()):
        d = aggregator(J)
        assert torch.isfinite(d).all() and conflict(J, d) <= 100 * eps(torch.float32)
    G = normalised_gramian(J)
    correlation = G / np.sqrt(np.outer(G.diagonal(), G.diagonal()))
    check_kkt(correlation, correlation, nonnegative_qp(correlation, correlation, guess=correlation < 0), 1e-7)


def strongly_stationary_jacobian(m: int, n: int, rank: int, seed: int) -> torch.Tensor:
    """torchjd's ``StrongSampler`` (its tests' ``typical_matrices[13]`` is one at (20, 100, 19)), in numpy:
    J = U S Vᵀ with U orthonormal and orthogonal to a v > 0, so that vᵀ J = 0 with every v_i > 0."""
    rng = np.random.default_rng(seed)
    v = np.abs(rng.standard_normal(m))
    v /= np.linalg.norm(v)
    B = rng.standard_normal((m, m - 1))
    U = np.linalg.qr(B - np.outer(v, v @ B))[0]
    right = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return torch.from_numpy(U[:, :rank] * np.abs(rng.standard_normal(rank)) @ right[:rank])


@pytest.mark.parametrize(
    ("m", "n", "rank", "seed", "dtype"),
    [
        (20, 100, 19, 4, "float32"),
        (20, 100, 19, 5, "float32"),
        (5, 8, 4, 13, "float32"),
        (3, 4, 2, 7, "float64"),
        (20, 10, 1, 4, "float64"),
    ],
)
def test_cagrad_c1_on_a_strongly_stationary_jacobian(m, n, rank, seed, dtype):
    """Regression (torchjd's test_non_conflicting[aggregator13-matrix13], CAGrad(c=1), float32, conflict
    0.034): with v > 0 and vᵀ J = 0, {d : J d >= 0} = {d : J d = 0}, at distance |g_0| from g_0 (which
    lies in the rows' span), so for c = 1 the answer, d = 0, lies on the ball's boundary at tau = 0. There
    dist2 - rho2 is rounding, +1e-11 rho2 on matrix13 (|nu| >> |mean|), outside the window of 1e-13 rho2:
    the root search never found a point inside and returned d = g_0, which conflicts. Now the window is
    the rounding of dist2 itself, m·eps |nu|ᵀ|G||nu|: non-conflicting and inside the ball."""
    dtype = getattr(torch, dtype)
    J = strongly_stationary_jacobian(m, n, rank, seed).to(dtype)
    d, Jd, g0 = CAGrad(c=1.0)(J).double(), J.double(), J.double().mean(dim=0)
    assert conflict(J, d) <= 100 * eps(dtype)
    assert (d - g0).norm() <= g0.norm() * (1 + 100 * eps(dtype)) + 100 * eps(dtype) * Jd.norm(dim=1).max()


def test_nonnegative_qp_rejects_an_unbounded_problem():
    G = np.array([[1.0, -1.0], [-1.0, 1.0]])  # G (1, 1) = 0, and c . (1, 1) < 0: unbounded along (1, 1)
    with pytest.raises(ValueError, match="unbounded"):
        nonnegative_qp(G, np.array([-1.0, -1.0]))


# ---------------------------------------------------------------------------------------------------------
# Non-conflict where promised
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aggregator", [MGDA(), UPGrad(), CAGrad(c=1.0), CAGrad(c=2.0), CAGrad(c=10.0)], ids=repr
)
@pytest.mark.parametrize(("kind", "m", "n", "dtype", "seed"), CASES)
def test_non_conflicting_where_promised(aggregator, kind, m, n, dtype, seed):
    J = jacobian(kind, m, n, dtype, seed)
    d = aggregator(J)
    assert d.dtype == dtype and torch.isfinite(d).all()
    assert conflict(J, d) <= 100 * eps(dtype)


@pytest.mark.parametrize("kind", ["cancelling"])
@pytest.mark.parametrize("m", [2, 5, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_mgda_is_zero_when_rows_cancel(kind, m, dtype):
    J = jacobian(kind, m, 40, dtype, m)
    assert MGDA()(J).norm() <= 100 * eps(dtype) * J.norm(dim=1).max()


# ---------------------------------------------------------------------------------------------------------
# CAGrad: inside its ball, at the optimum of its primal problem
# ---------------------------------------------------------------------------------------------------------


CAGRAD_CASES = [p for p in sweep(12, seed=1) if p.values[0] != "scales"]  # cvxpy is not exact over 1e8


@pytest.mark.parametrize("c", [0.0, 0.1, 0.5, 0.9, 1.0, 2.0, 10.0])
@pytest.mark.parametrize(("kind", "m", "n", "dtype", "seed"), CAGRAD_CASES)
def test_cagrad_inside_its_ball_and_at_its_primal_optimum(c, kind, m, n, dtype, seed):
    J = jacobian(kind, m, n, torch.float64, seed)
    d = CAGrad(c=c)(J)
    g0 = J.mean(dim=0)
    scale = J.norm(dim=1).max().item()
    assert (d - g0).norm() <= c * g0.norm() * (1 + 1e-9) + 1e-12 * scale
    worst = (J @ d).min().item()
    assert worst >= (J @ g0).min().item() - 1e-10 * scale**2
    if c > 0 and g0.norm() > 1e-8 * scale:
        assert worst >= cagrad_primal_optimum(J, c) - 1e-6 * scale**2


@pytest.mark.parametrize("c", [0.5, 2.0])
@pytest.mark.parametrize(("kind", "m", "n", "dtype", "seed"), CASES[::3])
def test_cagrad_float32_inside_its_ball(c, kind, m, n, dtype, seed):
    J = jacobian(kind, m, n, torch.float32, seed)
    d, g0 = CAGrad(c=c)(J).double(), J.double().mean(dim=0)
    assert (d - g0).norm() <= c * g0.norm() * (1 + 1e-5) + 1e-6 * J.double().norm(dim=1).max()


# ---------------------------------------------------------------------------------------------------------
# Permutation invariance, and the Gramian path
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregator", [Mean(), MGDA(), UPGrad(), CAGrad()], ids=repr)
@pytest.mark.parametrize(("kind", "m", "n", "dtype", "seed"), CASES[::2])
def test_permuting_tasks_keeps_the_direction(aggregator, kind, m, n, dtype, seed):
    J = jacobian(kind, m, n, dtype, seed)
    d = aggregator(J).double()
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed))
    d_perm = aggregator(J[perm]).double()
    tol = (1e-4 if dtype == torch.float32 else 1e-8) * J.double().norm(dim=1).max()
    assert (d - d_perm).norm() <= tol


@pytest.mark.parametrize("seed", [18, 104, 117])
def test_float32_rows_that_cancel_up_to_rounding_give_the_float64_answer(seed):
    """Regression: on these float32 strictly weakly stationary J (20 x 100, rank 19; 117 has the largest
    weights, and passed this test before by the luck of its permutations) the weights reached
    2e7 along the near-null vector p of G, where Jᵀp is float32 rounding, and the direction changed by
    20 % of its norm with the order of the rows. A Cholesky factorisation whose pivots all passed had hidden
    an eigenvalue of 1e-15 (:func:`_qp._definite`), and eigenvalues below J's own rounding now count as 0
    (:func:`_qp.data_precision`). The weights are now as large as those of the float64 J (60 to 1800), the
    direction is within 1e-2 of the float64 J's (4.5e-3 at seed 117: J's rounding moves the problem, and
    that much is the problem's own sensitivity), and it is permutation invariant at torchjd's tolerance."""
    J64 = strictly_weak_jacobian(20, 100, 19, seed)
    J = J64.float()
    g = torch.Generator().manual_seed(seed)
    for aggregator in (UPGrad(), DualProj()):
        assert aggregator.weights(J).abs().max() <= 1.1 * aggregator.weights(J64).abs().max()
        d, d64 = aggregator(J), aggregator(J64)
        assert (d.double() - d64).norm() <= 1e-2 * d64.norm()
        for _ in range(3):
            order = torch.randperm(20, generator=g)
            torch.testing.assert_close(aggregator(J[order]), d, rtol=5e-7, atol=5e-7)


def hidden_null_system(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 3 x 3 PSD system with eigenvalues (1e-15, 1, 0.5) and near-null vector p ~ (1, 1, 3e-4): its last
    Cholesky pivot is lambda_min / p_3² ~ 3e-8 of its diagonal entry, above the pivot test's 1e-9. Returns
    the system, its eigenvectors (p first) and p."""
    p = np.array([1.0, 1.0, 3e-4]) / np.linalg.norm([1.0, 1.0, 3e-4])
    Q = np.linalg.qr(np.column_stack([p, rng.standard_normal((3, 2))]))[0]
    return Q @ np.diag([1e-15, 1.0, 0.5]) @ Q.T, Q, p


def test_a_nearly_singular_system_whose_pivots_all_pass_is_solved_in_the_least_squares_sense():
    """Cholesky alone took :func:`hidden_null_system` as definite and returned y + t p with t ~ rounding /
    1e-15."""
    A, Q, _ = hidden_null_system(np.random.default_rng(0))
    L = np.linalg.cholesky(A)
    assert (np.diag(L) ** 2 >= 1e-9 * np.diag(A)).all()  # the pivots alone see nothing wrong
    y = Q[:, 1:] @ np.array([1.0, -2.0])  # orthogonal to p: the minimum-norm solution of A x = A y
    np.testing.assert_allclose(_qp.solve_psd(A[None], (A @ y)[None])[0], y, atol=1e-6)


def test_a_trimmed_free_set_is_checked_again():
    """The primal-dual start trims a nearly singular free set at its smallest pivot, which can lie after the
    near-null vector's last coordinate: here G (4 x 4) holds :func:`hidden_null_system` and a
    fourth coordinate whose pivot, 3e-9 of its diagonal, is the smallest, so the first cut leaves the
    3 x 3 block and its hidden eigenvalue of 1e-15. Solved by Cholesky, the weights reached 7e5 on a
    problem whose answer is below 1; the trimmed block is now checked again and cut further."""
    rng = np.random.default_rng(0)
    A, _, p = hidden_null_system(rng)
    factor = np.linalg.cholesky(A)
    row = 0.3 * factor[0] - 0.7 * factor[1]
    row -= (row @ (factor.T @ p)) / np.linalg.norm(factor.T @ p) ** 2 * (factor.T @ p)
    J = np.zeros((4, 4))
    J[:3, :3], J[3, :3], J[3, 3] = factor, row, np.sqrt(3e-9)
    G = J @ J.T
    for _ in range(1000):
        y = np.append(rng.uniform(0.1, 1.0, 3), 0.0)
        C = -(G @ y)[None] - 1e-9 * np.append(p, 0.0)[None]  # the optimum y, and rounding along p
        x = nonnegative_qp(G, C, guess=np.ones((1, 4), dtype=bool))[0]
        assert np.abs(x).max() < 10.0


def test_upgrad_float32_permutation_invariance_at_torchjd_tolerance():
    """torchjd's own tolerance (5e-7, absolute) on 9 x 11 float32 Jacobians of rank 5, where the weights are
    not unique (issue 13 saw 9.8e-7 there): d is unique, and ours is its float32 rounding."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        J = (torch.randn(9, 5, generator=g) @ torch.randn(5, 11, generator=g)).float()
        perm = torch.randperm(9, generator=g)
        torch.testing.assert_close(UPGrad()(J[perm]), UPGrad()(J), rtol=0, atol=5e-7)


@pytest.mark.parametrize("aggregator", [Mean(), PCGrad(), MGDA(), UPGrad(), CAGrad()], ids=repr)
def test_no_graph_for_any_input(aggregator):
    J = jacobian("cancelling", 6, 4, torch.float32, 0).requires_grad_()
    assert aggregator(J).requires_grad is False
    assert J.grad is None
