"""Tests of mtlcourse.aggregation, grouped by the promise they check.

Every test compares against an oracle (torchjd 0.18, a closed form, an independent cvxpy solve, a direct
re-implementation on vectors) or checks a property (KKT conditions, non-conflict, homogeneity, invariance).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from referees import cagrad_primal_optimum

from mtlcourse.aggregation import MGDA, Aggregator, CAGrad, Mean, PCGrad, UPGrad
from mtlcourse.aggregation.base import GramianWeightedAggregator

ALL = [Mean(), PCGrad(), MGDA(), UPGrad(), CAGrad()]
ALL_IDS = [repr(a) for a in ALL]
NON_CONFLICTING = [MGDA(), UPGrad()]


# ---------------------------------------------------------------------------------------------------------
# Test matrices
# ---------------------------------------------------------------------------------------------------------


def make_jacobian(
    kind: str, m: int, n: int = 20, dtype: torch.dtype = torch.float64, seed: int = 0
) -> torch.Tensor:
    """A reproducible (m, n) Jacobian: 'random', 'conflicting' (strong negative inner products) or
    'rank_deficient' (rank 2 when possible, so the Gramian is singular)."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(m, n, generator=g, dtype=torch.float64)
    if kind == "conflicting":
        J[0] = -J[1:].sum(dim=0) + 0.3 * J[0] if m > 1 else J[0]
        J[-1] = -2.0 * J[0] + 0.2 * J[-1] if m > 1 else J[-1]
    elif kind == "rank_deficient":
        r = min(2, m, n)
        J = torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(
            r, n, generator=g, dtype=torch.float64
        )
    return J.to(dtype)


CASES = [
    pytest.param(kind, m, dtype, id=f"{kind}-m{m}-{str(dtype).removeprefix('torch.')}")
    for kind in ["random", "conflicting", "rank_deficient"]
    for m in [1, 2, 3, 5, 16]
    for dtype in [torch.float32, torch.float64]
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / max(b.norm().item(), a.norm().item(), 1e-300)).item()


def agree(ours: torch.Tensor, theirs: torch.Tensor, J: torch.Tensor, rtol: float = 1e-5) -> bool:
    """||ours - theirs|| <= rtol ||theirs||, up to rounding: when the rows cancel (d much shorter than the
    rows), the rounding error scales with ||J|| rather than with ||d||, so a multiple of ||J||_F machine
    epsilons is added to the reference norm."""
    floor = J.double().norm() * (1.0 if J.dtype == torch.float32 else 1e-4)
    return (ours.double() - theirs.double()).norm() <= rtol * (theirs.double().norm() + floor)


def conflict(J: torch.Tensor, d: torch.Tensor, w: torch.Tensor) -> float:
    """Largest violation of g_i . d >= 0, relative to the scale of its rounding error,
    ||g_i|| (sum_j |w_j| ||g_j|| + max_j ||g_j||): d = J^T w is rounded at the scale of its terms, and
    weights computed on a normalised Gramian are rounded relative to the largest task."""
    J, d, w = J.double(), d.double(), w.double()
    norms = J.norm(dim=1)
    scale = norms * (w.abs() @ norms + norms.max())
    return (-(J @ d) / torch.where(scale > 0, scale, 1.0)).clamp(min=0).max().item()


def mgda_kkt_residual(J: torch.Tensor, w: torch.Tensor) -> float:
    """KKT residual of min_{w in simplex} w^T G w, relative to max_i G_ii."""
    G = (J @ J.T).double()
    w = w.double()
    Gw = G @ w
    lam = Gw.min()
    scale = G.diagonal().max().clamp(min=1e-300)
    support = w > 1e-9
    stationarity = (Gw[support] - lam).abs().max()
    feasibility = max((-w).clamp(min=0).max(), (w.sum() - 1).abs())
    return max(stationarity.item() / scale.item(), feasibility.item())


# ---------------------------------------------------------------------------------------------------------
# Contract: the door validates, the output has the right shape, dtype, device; d = weights @ J
# ---------------------------------------------------------------------------------------------------------

BAD_INPUTS = [
    pytest.param([[1.0, 2.0]], TypeError, "torch.Tensor", id="list"),
    pytest.param(np.ones((2, 3)), TypeError, "torch.Tensor", id="numpy"),
    pytest.param(torch.ones(3), ValueError, r"\(3,\)", id="1-D"),
    pytest.param(torch.ones(2, 3, 4), ValueError, r"\(2, 3, 4\)", id="3-D"),
    pytest.param(torch.ones(0, 3), ValueError, "zero rows", id="zero-rows"),
    pytest.param(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), ValueError, "non-finite", id="nan"),
    pytest.param(torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), ValueError, "non-finite", id="inf"),
    pytest.param(torch.ones(2, 3, dtype=torch.int64), TypeError, "floating", id="int"),
]


@pytest.mark.parametrize("aggregator", ALL, ids=ALL_IDS)
@pytest.mark.parametrize(("J", "error", "match"), BAD_INPUTS)
def test_bad_input_is_rejected_with_a_clear_message(aggregator, J, error, match):
    with pytest.raises(error, match=match):
        aggregator(J)


@pytest.mark.parametrize("aggregator", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_direction_is_weights_times_jacobian_with_input_dtype(aggregator, dtype):
    J = make_jacobian("conflicting", 4, 7, dtype)
    torch.manual_seed(0)
    d = aggregator(J)
    torch.manual_seed(0)
    w = aggregator.weights(J)
    assert isinstance(aggregator, Aggregator)
    assert d.shape == (7,) and d.dtype == dtype and d.device == J.device
    assert w.shape == (4,) and w.dtype == dtype
    torch.testing.assert_close(d, w @ J)


@pytest.mark.parametrize("aggregator", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_weights_from_the_gramian_equal_weights_from_the_jacobian(aggregator, dtype):
    J = make_jacobian("conflicting", 5, 9, dtype)
    torch.manual_seed(0)  # PCGrad draws its task orders from the global RNG
    w = aggregator.weights(J)
    torch.manual_seed(0)
    w_gramian = aggregator.weights_from_gramian(J.double() @ J.double().T)
    assert isinstance(aggregator, GramianWeightedAggregator)
    assert w_gramian.dtype == torch.float64 and not w_gramian.requires_grad
    torch.testing.assert_close(w_gramian.to(dtype), w, rtol=0, atol=0)


@pytest.mark.parametrize("aggregator", ALL, ids=ALL_IDS)
@pytest.mark.parametrize(
    ("G", "error", "match"),
    [
        pytest.param(torch.ones(2, 3), ValueError, "square", id="not-square"),
        pytest.param(torch.ones(2, 2, dtype=torch.int64), TypeError, "floating", id="int"),
        pytest.param(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), ValueError, "non-finite", id="nan"),
    ],
)
def test_bad_gramian_is_rejected_with_a_clear_message(aggregator, G, error, match):
    with pytest.raises(error, match=match):
        aggregator.weights_from_gramian(G)


def test_repr_names_the_method_and_its_parameters():
    assert [repr(a) for a in ALL] == ["Mean()", "PCGrad()", "MGDA()", "UPGrad()", "CAGrad(c=0.5)"]
    assert repr(CAGrad(c=0.2)) == "CAGrad(c=0.2)"
    with pytest.raises(ValueError, match="c must be nonnegative"):
        CAGrad(c=-0.1)


# ---------------------------------------------------------------------------------------------------------
# Agreement with torchjd 0.18 on the same J
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "m", "dtype"), CASES)
def test_mean_and_pcgrad_match_torchjd(kind, m, dtype):
    tja = pytest.importorskip("torchjd.aggregation")
    J = make_jacobian(kind, m, dtype=dtype)
    torch.testing.assert_close(Mean()(J), tja.Mean()(J), rtol=1e-5, atol=1e-6)
    # Same global seed: our PCGrad draws exactly the permutations torchjd draws, so this holds for any m.
    torch.manual_seed(m)
    ours = PCGrad()(J)
    torch.manual_seed(m)
    theirs = tja.PCGrad()(J)
    assert agree(ours, theirs, J)


@pytest.mark.parametrize(("kind", "m", "dtype"), CASES)
def test_cagrad_matches_torchjd_and_is_at_least_as_optimal(kind, m, dtype):
    tja = pytest.importorskip("torchjd.aggregation")
    pytest.importorskip("cvxpy")
    J = make_jacobian(kind, m, dtype=dtype).double()  # compare the solvers, not float32 rounding
    ours, theirs = CAGrad(c=0.5)(J), tja.CAGrad(c=0.5)(J)
    g0 = J.mean(dim=0)
    if (J @ ours).min() > 1e-9 * J.norm() ** 2:  # not the degenerate "0 in the hull" case (documented)
        # torchjd's Clarabel solve is accurate to ~1e-4 relative on d; ours is exact up to rounding, so
        # ours must reach at least torchjd's worst-case improvement within the same ball.
        assert rel_err(ours, theirs) <= 1e-3
        assert (J @ ours).min() >= (J @ theirs).min() - 1e-10 * J.norm() ** 2
    assert (ours - g0).norm() <= 0.5 * g0.norm() * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize(
    ("kind", "m"), [(k, m) for k in ["random", "conflicting"] for m in [1, 2, 3, 5, 8, 16]]
)
def test_upgrad_matches_torchjd_without_its_thresholds(kind, m):
    tja = pytest.importorskip("torchjd.aggregation")
    from torchjd.linalg import QuadprogProjector

    J = make_jacobian(kind, m, n=40)  # m <= n: well-conditioned, so quadprog accepts reg_eps = 0
    theirs = tja.UPGrad(projector=QuadprogProjector(norm_eps=0.0, reg_eps=0.0))
    assert rel_err(UPGrad()(J), theirs(J)) <= 1e-5
    torch.testing.assert_close(UPGrad().weights(J), theirs.weighting(J), rtol=1e-5, atol=1e-8)
    if kind == "random":  # no small task: torchjd's defaults only move the result by O(reg_eps = 1e-4)
        assert rel_err(UPGrad()(J), tja.UPGrad()(J)) <= 1e-2


# ---------------------------------------------------------------------------------------------------------
# Exactness: KKT conditions and independent solves
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "m", "dtype"), CASES)
def test_mgda_is_the_exact_min_norm_point_and_beats_frank_wolfe(kind, m, dtype):
    J = make_jacobian(kind, m, dtype=dtype)
    ours = mgda_kkt_residual(J, MGDA().weights(J))
    assert ours <= (1e-10 if dtype == torch.float64 else 1e-5)
    tja = pytest.importorskip("torchjd.aggregation")
    theirs = mgda_kkt_residual(J, tja.MGDA().weighting(J))
    assert ours <= theirs + 1e-12


@pytest.mark.parametrize(
    ("kind", "m"), [(k, m) for k in ["random", "conflicting", "rank_deficient"] for m in [2, 3, 6]]
)
def test_upgrad_is_the_mean_of_exact_projections_onto_the_dual_cone(kind, m):
    cp = pytest.importorskip("cvxpy")
    J = make_jacobian(kind, m, n=6)
    A = J.numpy()
    projections = []
    for g in A:  # primal problem, solved independently: argmin ||x - g|| s.t. J x >= 0
        x = cp.Variable(A.shape[1])
        cp.Problem(cp.Minimize(cp.sum_squares(x - g)), [A @ x >= 0]).solve(cp.CLARABEL)
        projections.append(x.value)
    expected = torch.as_tensor(np.mean(projections, axis=0))
    assert (UPGrad()(J) - expected).norm() <= 1e-6 * J.norm()


@pytest.mark.parametrize(
    ("kind", "m"), [(k, m) for k in ["random", "conflicting", "rank_deficient"] for m in [1, 2, 4, 8]]
)
def test_cagrad_satisfies_the_optimality_conditions_of_its_max_min_problem(kind, m):
    """d maximises min_i g_i.d over the ball B(g0, rho): d - g0 = J^T nu with nu >= 0 supported on the
    tasks achieving the minimum, and ||d - g0|| = rho (or nu = 0 when g0 itself is optimal)."""
    J = make_jacobian(kind, m)
    c = 0.5
    w = CAGrad(c).weights(J)
    nu = w - 1.0 / m
    d = w @ J
    g0 = J.mean(dim=0)
    rho = c * g0.norm()
    scale = J.norm() ** 2
    products = J @ d
    assert nu.min() >= -1e-12
    assert ((d - g0).norm() - rho).abs() <= 1e-9 * rho
    active = nu > 1e-9 * nu.max()
    assert (products[active] - products.min()).abs().max() <= 1e-9 * scale


def test_cagrad_worst_improvement_matches_an_independent_socp_solve():
    cp = pytest.importorskip("cvxpy")
    for seed in range(5):
        J = make_jacobian("conflicting", 4, n=10, seed=seed)
        A, g0 = J.numpy(), J.mean(dim=0).numpy()
        x, t = cp.Variable(10), cp.Variable()
        cp.Problem(cp.Maximize(t), [A @ x >= t, cp.norm(x - g0) <= 0.5 * np.linalg.norm(g0)]).solve(
            cp.CLARABEL
        )
        ours = (J @ CAGrad(0.5)(J)).min().item()
        assert ours == pytest.approx(t.value, rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------
# Non-conflict at any scale and any disparity between tasks; positive homogeneity
# ---------------------------------------------------------------------------------------------------------

SCALES = [1e-6, 1e-3, 1.0, 1e3, 1e6]


@pytest.mark.parametrize("aggregator", NON_CONFLICTING, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("disparity", [1.0, 1e-2, 1e-4, 1e-6], ids=lambda r: f"disparity{r:g}")
def test_non_conflicting_at_any_scale_and_task_disparity(aggregator, dtype, disparity):
    # Rounding only: the float32 Gramian's error, amplified by the conditioning of rank-deficient J, and,
    # for MGDA (solved on G / max_i G_ii), errors relative to the largest task.
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for seed in range(8):
        for kind in ["random", "conflicting", "rank_deficient"]:
            J = make_jacobian(kind, 2 + seed % 5, n=12, seed=seed)
            J[0] *= disparity
            for s in SCALES:
                Js = (s * J).to(dtype)
                assert conflict(Js, aggregator(Js), aggregator.weights(Js)) <= tol, (seed, kind, s)


@pytest.mark.parametrize(
    "J",
    [
        pytest.param(1e-3 * torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]), id="small-norm"),
        pytest.param(torch.tensor([[1.0, 0.0], [-1e-4, 1e-5]]), id="disparity-1e4"),
    ],
)
def test_upgrad_stays_non_conflicting_where_torchjd_defaults_do_not(J):
    tja = pytest.importorskip("torchjd.aggregation")
    assert (J @ tja.UPGrad()(J)).min() < 0  # the documented effect of norm_eps / reg_eps
    assert conflict(J, UPGrad()(J), UPGrad().weights(J)) <= 1e-6


@pytest.mark.parametrize("aggregator", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("kind", ["random", "conflicting", "rank_deficient"])
def test_positively_homogeneous(aggregator, kind):
    J = make_jacobian(kind, 4, n=9)
    torch.manual_seed(0)
    reference = aggregator(J)
    for s in SCALES:
        torch.manual_seed(0)
        assert agree(aggregator(s * J), s * reference, s * J, rtol=1e-9), s


# ---------------------------------------------------------------------------------------------------------
# Invariance to the order of the tasks
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregator", [Mean(), MGDA(), UPGrad(), CAGrad()], ids=repr)
@pytest.mark.parametrize("kind", ["random", "conflicting", "rank_deficient"])
def test_permuting_tasks_permutes_weights_and_keeps_direction(aggregator, kind):
    for seed in range(4):
        J = make_jacobian(kind, 5, n=8, seed=seed)
        perm = torch.randperm(5, generator=torch.Generator().manual_seed(seed))
        assert agree(aggregator(J[perm]), aggregator(J), J, rtol=1e-9)
        if kind != "rank_deficient":  # weights are unique only when the rows are independent
            torch.testing.assert_close(aggregator.weights(J[perm]), aggregator.weights(J)[perm])


# ---------------------------------------------------------------------------------------------------------
# PCGrad: closed form for two tasks, relation to UPGrad, seeded order for more tasks
# ---------------------------------------------------------------------------------------------------------


def projected_gradient(J: torch.Tensor, i: int, order: list[int]) -> torch.Tensor:
    """g_i^PC of Algorithm 1 of Yu et al. (2020), written on the gradients themselves (not the Gramian)."""
    g = J[i].clone()
    for j in order:
        if j != i and g @ J[j] < 0:
            g = g - (g @ J[j]) / (J[j] @ J[j]) * J[j]
    return g


def pcgrad_on_vectors(J: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    return sum(projected_gradient(J, i, order) for i, order in enumerate(orders))


@pytest.mark.parametrize("kind", ["random", "conflicting", "rank_deficient"])
def test_pcgrad_two_tasks_closed_form_and_twice_upgrad(kind):
    for seed in range(10):
        g1, g2 = make_jacobian(kind, 2, n=5, seed=seed)
        if seed % 2:
            g2 = g2 - 2 * (g1 @ g2).abs() / (g1 @ g1) * g1  # force a conflict half of the time
        J = torch.stack([g1, g2])
        inner = g1 @ g2
        closed = g1 + g2 if inner >= 0 else (g1 - inner / (g2 @ g2) * g2) + (g2 - inner / (g1 @ g1) * g1)
        assert rel_err(PCGrad()(J), closed) <= 1e-12
        # For m = 2 the half-space of the other gradient is the dual cone: PCGrad (sum) = 2 UPGrad (mean).
        assert rel_err(PCGrad()(J), 2 * UPGrad()(J)) <= 1e-10


def test_pcgrad_with_a_generator_is_reproducible_and_follows_algorithm_1():
    J = make_jacobian("conflicting", 6, n=10)
    seeded = [PCGrad(generator=torch.Generator().manual_seed(3))(J) for _ in range(2)]
    torch.testing.assert_close(seeded[0], seeded[1], rtol=0, atol=0)
    g = torch.Generator().manual_seed(3)
    orders = [torch.randperm(6, generator=g).tolist() for _ in range(6)]
    assert rel_err(seeded[0], pcgrad_on_vectors(J, orders)) <= 1e-12


def test_pcgrad_projected_gradients_do_not_conflict_with_the_last_task_visited():
    """With m > 2 the order is random; what always holds: each g_i^PC does not conflict with the last task
    it was projected against, and PCGrad returns the sum of the g_i^PC for the orders it drew."""
    J = make_jacobian("conflicting", 5, n=10)
    g = torch.Generator().manual_seed(0)
    orders = [torch.randperm(5, generator=g).tolist() for _ in range(5)]
    assert (
        rel_err(PCGrad(generator=torch.Generator().manual_seed(0))(J), pcgrad_on_vectors(J, orders)) <= 1e-12
    )
    for i, order in enumerate(orders):
        last = [j for j in order if j != i][-1]
        assert projected_gradient(J, i, order) @ J[last] >= -1e-12 * J.norm() ** 2


# ---------------------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregator", [Mean(), PCGrad(), MGDA(), UPGrad()], ids=repr)
def test_one_task_gives_its_gradient(aggregator):
    J = make_jacobian("random", 1, n=6)
    torch.testing.assert_close(aggregator(J), J[0])


def test_cagrad_one_task_gives_one_plus_c_times_its_gradient_as_torchjd():
    J = make_jacobian("random", 1, n=6)
    torch.testing.assert_close(CAGrad(0.4)(J), 1.4 * J[0])
    tja = pytest.importorskip("torchjd.aggregation")
    pytest.importorskip("cvxpy")
    torch.testing.assert_close(CAGrad(0.4)(J), tja.CAGrad(0.4)(J), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("aggregator", "factor"),
    [(Mean(), 1.0), (MGDA(), 1.0), (UPGrad(), 1.0), (PCGrad(), 3.0), (CAGrad(0.5), 1.5)],
    ids=lambda x: repr(x) if isinstance(x, Aggregator) else f"x{x}",
)
def test_identical_rows(aggregator, factor):
    g = make_jacobian("random", 1, n=6)[0]
    torch.testing.assert_close(aggregator(torch.stack([g, g, g])), factor * g)


@pytest.mark.parametrize("aggregator", [MGDA(), UPGrad(), PCGrad(), CAGrad()], ids=repr)
def test_opposite_rows_give_zero(aggregator):
    g = make_jacobian("random", 1, n=6)[0]
    assert aggregator(torch.stack([g, -g])).norm() <= 1e-12 * g.norm()


@pytest.mark.parametrize("aggregator", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("m", [1, 3])
def test_all_zero_jacobian_gives_zero_and_finite_weights(aggregator, m):
    J = torch.zeros(m, 5)
    assert torch.equal(aggregator(J), torch.zeros(5))
    assert torch.isfinite(aggregator.weights(J)).all()


@pytest.mark.parametrize("aggregator", ALL, ids=ALL_IDS)
def test_a_zero_row_among_others_is_harmless(aggregator):
    J = make_jacobian("conflicting", 3, n=6)
    J[1] = 0.0
    d = aggregator(J)
    assert torch.isfinite(d).all()
    if aggregator in NON_CONFLICTING:
        assert conflict(J, d, aggregator.weights(J)) <= 1e-12


def test_cagrad_with_c_zero_is_the_mean():
    J = make_jacobian("conflicting", 4)
    torch.testing.assert_close(CAGrad(c=0.0)(J), Mean()(J))


# ---------------------------------------------------------------------------------------------------------
# Regressions: the three inputs of issue 13, and the autograd contract
# ---------------------------------------------------------------------------------------------------------


def test_issue13_cagrad_singular_gramian_reaches_the_primal_optimum():
    J = torch.tensor([[-1.7, -0.05], [-0.21, -1.5], [-1.03, -0.64]], dtype=torch.float64)
    d = CAGrad(c=0.5)(J)
    g0 = J.mean(dim=0)
    assert (d - g0).norm() <= 0.5 * g0.norm() * (1 + 1e-12)
    assert (J @ d).min().item() == pytest.approx(cagrad_primal_optimum(J, 0.5), rel=1e-7)


def test_issue13_cagrad_c09_stays_inside_its_ball_at_the_optimum():
    J = torch.randn(5, 3, generator=torch.Generator().manual_seed(1726), dtype=torch.float64)
    d = CAGrad(c=0.9)(J)
    g0 = J.mean(dim=0)
    assert (d - g0).norm() <= 0.9 * g0.norm() * (1 + 1e-12)  # was 2.19 times the radius
    assert (J @ d).min().item() == pytest.approx(cagrad_primal_optimum(J, 0.9), rel=1e-7)


@pytest.mark.parametrize("c", [1.0, 2.0, 10.0])
def test_issue13_cagrad_float32_rows_cancelling_gives_zero(c):
    # Dyadic entries: the positive combination g_1 + g_2 + g_3 + g_4 + 2 g_5 is exactly 0 in float32, so
    # 0 is in the convex hull, no direction improves every task, and the only d in {J d >= 0} is 0.
    g = torch.Generator().manual_seed(27)
    R = torch.round(torch.rand(4, 3, generator=g, dtype=torch.float64) * 4096 - 2048) / 1024
    J = torch.cat([R, -R.sum(dim=0, keepdim=True) / 2]).float()
    assert (J.double()[:4].sum(dim=0) + 2 * J.double()[4]).abs().max() == 0
    d = CAGrad(c=c)(J)
    assert d.norm() <= 1e-6 * J.mean(dim=0).norm()
    assert (J @ d).min() >= -1e-6 * J.norm(dim=1).max() * J.norm(dim=1).max()


@pytest.mark.parametrize("aggregator", ALL, ids=ALL_IDS)
def test_direction_carries_no_autograd_graph(aggregator):
    J = torch.ones(3, 5, requires_grad=True)
    assert aggregator(J).requires_grad is False
    assert aggregator.weights(J).requires_grad is False
    J2 = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], requires_grad=True)
    assert aggregator(J2 * 1.0).requires_grad is False


@pytest.mark.parametrize("seed", [3, 23, 25, 58])
def test_upgrad_on_a_batch_with_repeated_examples(seed):
    """Two identical examples give two identical rows of a per-example Jacobian (IWRM), so the Gramian is
    exactly singular on many free sets. A least-squares solve that misjudged the rank there (LAPACK gelsy)
    made UPGrad declare these bounded problems unbounded; these seeds all raised."""
    gen = torch.Generator().manual_seed(seed)
    rank = int(torch.randint(3, 16, (1,), generator=gen))
    J = torch.randn(16, rank, generator=gen, dtype=torch.float64)
    J = J @ torch.randn(rank, 200, generator=gen, dtype=torch.float64)
    J[9], J[11] = J[8], J[3]
    J = J.float()
    d = UPGrad()(J).double()
    J64 = J.double()
    cosines = (J64 @ d) / (J64.norm(dim=1) * d.norm())
    assert cosines.min() >= -1e-6
