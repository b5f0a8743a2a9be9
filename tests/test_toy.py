"""Tests of mtlcourse.toy, grouped by the promise they check.

Oracles: the papers' formulas re-written with ``math``, ``torch.autograd.gradcheck`` and central finite
differences, autograd for the scalar Jacobians, ``torch.optim.Adam``/plain loops, the closed form of SGD on
the element-wise quadratic, the aggregators' own ``weights`` (for the scalar closed forms), the generic torch
path (for the scalar engine) and torchjd's Mean. Properties: anti-parallel gradients and a vanishing MGDA
direction on the Pareto set, the mirror symmetry of the CAGrad toy.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchjd.aggregation

from mtlcourse.aggregation import MGDA, CAGrad, Mean, PCGrad, UPGrad
from mtlcourse.toy import (
    EWQ,
    BatchedAdam,
    CAGradToy,
    PCGradToy,
    Trajectories,
    _jacobians,
    _scalar_weights,
    landscape,
    trajectories,
)

PROBLEMS = [PCGradToy(), CAGradToy(), EWQ()]
F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------
# The papers' formulas, written independently with math
# ---------------------------------------------------------------------------------------------------------


def logfloor(a: float) -> float:
    return math.log(max(abs(a), 5e-6))


def pcgrad_toy_math(t1: float, t2: float) -> list[float]:
    return [20 * logfloor(0.5 * t1 + math.tanh(t2)), 25 * logfloor(0.5 * t1 - math.tanh(t2) + 2)]


def cagrad_toy_math(x1: float, x2: float) -> list[float]:
    f1 = logfloor(0.5 * (-x1 - 7) - math.tanh(-x2)) + 6
    f2 = logfloor(0.5 * (-x1 + 3) + math.tanh(-x2) + 2) + 6
    g1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    g2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c1, c2 = max(math.tanh(0.5 * x2), 0.0), max(math.tanh(-0.5 * x2), 0.0)
    return [c1 * f1 + c2 * g1, c1 * f2 + c2 * g2]


def ewq_math(x1: float, x2: float) -> list[float]:
    return [x1 * x1, x2 * x2]


MATH = {PCGradToy: pcgrad_toy_math, CAGradToy: cagrad_toy_math, EWQ: ewq_math}
POINTS = [
    (0.5, -3.0),
    (-8.5, 7.5),
    (0.0, 0.0),
    (9.0, 9.0),
    (10.0, -8.0),
    (1.3, 0.7),
    (-2.0, 9.5),
    (3.0, -0.2),
]
# Points on a clamp: 0.5 t1 + tanh t2 = 0 (PCGrad toy) and 0.5(-x1 - 7) - tanh(-x2) = 0 (CAGrad toy).
KINKS = {PCGradToy: (-2 * math.tanh(0.4), 0.4), CAGradToy: (2 * math.tanh(1.0) - 7, 1.0)}


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_losses_match_the_papers_formulas(problem):
    points = [*POINTS, KINKS.get(type(problem), (1.0, 2.0))]
    x = torch.tensor(points, dtype=F64)
    expected = torch.tensor([MATH[type(problem)](*p) for p in points], dtype=F64)
    torch.testing.assert_close(problem.losses(x), expected, rtol=1e-12, atol=1e-12)
    # Any leading shape, and __call__
    torch.testing.assert_close(problem(x.reshape(3, 3, 2)), expected.reshape(3, 3, 2), rtol=1e-14, atol=0)


def test_clamp_floors_the_log_valleys():
    assert PCGradToy().losses(torch.tensor(KINKS[PCGradToy], dtype=F64))[0].item() == pytest.approx(
        20 * math.log(5e-6)
    )
    assert CAGradToy().losses(torch.tensor(KINKS[CAGradToy], dtype=F64))[0].item() == pytest.approx(
        math.tanh(0.5) * (math.log(5e-6) + 6)
    )


# Away from the kinks of |.|, the clamps and the switch at x2 = 0.
SMOOTH = [(0.5, -3.0), (-8.5, 7.5), (9.0, 9.0), (10.0, -8.0), (1.3, 0.7), (-3.0, -5.0)]


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
@pytest.mark.parametrize("point", SMOOTH)
def test_gradients_pass_gradcheck(problem, point):
    x = torch.tensor(point, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(problem.losses, (x,))


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_batched_jacobians_match_central_differences_of_the_formulas(problem):
    formula, h = MATH[type(problem)], 1e-6
    x = torch.tensor(SMOOTH, dtype=F64)
    losses, J = _jacobians(problem, x, 2)
    assert J.shape == (len(SMOOTH), 2, 2)
    for s, (a, b) in enumerate(SMOOTH):
        columns = [
            [(p - q) / (2 * h) for p, q in zip(formula(a + h, b), formula(a - h, b), strict=True)],
            [(p - q) / (2 * h) for p, q in zip(formula(a, b + h), formula(a, b - h), strict=True)],
        ]
        expected = torch.tensor(columns, dtype=F64).T  # rows: objectives, columns: x1, x2
        torch.testing.assert_close(J[s], expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(losses[s], torch.tensor(formula(a, b), dtype=F64))


def scalar_test_points(problem) -> list[tuple[float, float]]:
    """Random points over the papers' plots, the starts, the kinks and points inside the clamp bands."""
    g = torch.Generator().manual_seed(2)
    points = (torch.rand(500, 2, generator=g, dtype=F64) * 24 - 12).tolist()
    points += [*problem.STARTS, *POINTS, KINKS.get(type(problem), (0.0, 0.0)), (0.0, 0.0), (1.5, 0.0)]
    for x2 in (0.4, 2.0, -1.0):  # |u| = 1e-6 < 5e-6 and 1e-5 > 5e-6 in the first loss's logarithm
        for u in (1e-6, -1e-6, 1e-5):
            points.append(
                ((u - math.tanh(x2)) * 2, x2)
                if isinstance(problem, PCGradToy)
                else (2 * (math.tanh(x2) - u) - 7, x2)
            )
    return points


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_scalar_losses_and_jacobians_are_autograds(problem):
    points = scalar_test_points(problem)
    losses, J = _jacobians(problem, torch.tensor(points, dtype=F64), 2)
    scalar_losses = torch.tensor([problem.losses_scalar(*p) for p in points], dtype=F64)
    scalar_J = torch.tensor([problem.jacobian_scalar(*p) for p in points], dtype=F64)
    torch.testing.assert_close(scalar_losses, losses, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scalar_J, J, rtol=1e-10, atol=1e-12)
    # Inside a clamp band the gradient of that loss is exactly zero, as with autograd.
    assert (scalar_J.abs() == 0).sum() == (J.abs() == 0).sum()


# ---------------------------------------------------------------------------------------------------------
# The CAGrad toy's Pareto set
# ---------------------------------------------------------------------------------------------------------


def gradients(problem, x1: float, x2: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([x1, x2], dtype=F64, requires_grad=True)
    losses = problem.losses(x)
    return tuple(torch.autograd.grad(losses[i], x, retain_graph=True)[0] for i in range(2))


def one_plus_cosine(problem, x1: float, x2: float) -> float:
    g1, g2 = gradients(problem, x1, x2)
    return 1.0 + (g1 @ g2 / (g1.norm() * g2.norm())).item()


X1S = [-6.5, -4.0, -1.0, 0.0, 2.5, 5.0, 6.9]


@pytest.mark.parametrize("x1", X1S)
def test_cagrad_toy_gradients_are_anti_parallel_on_the_pareto_arc_only(x1):
    problem = CAGradToy()
    x2 = CAGradToy.pareto_x2(x1).item()
    assert one_plus_cosine(problem, x1, x2) < 1e-12
    for shift in (-0.2, 0.2):
        assert one_plus_cosine(problem, x1, x2 + shift) > 1e-6


@pytest.mark.parametrize("x1", X1S)
def test_mgda_is_zero_on_the_pareto_arc_with_the_balancing_weights(x1):
    problem = CAGradToy()
    x2 = CAGradToy.pareto_x2(x1).item()
    J = torch.stack(gradients(problem, x1, x2))
    assert MGDA()(J).norm() < 1e-10 * J.norm()
    # The x1-components t(x1 - 7)/5 and t(x1 + 7)/5 cancel only for w = ((x1 + 7)/14, (7 - x1)/14).
    torch.testing.assert_close(MGDA().weights(J), torch.tensor([(x1 + 7) / 14, (7 - x1) / 14], dtype=F64))
    J_off = torch.stack(gradients(problem, x1, x2 + 0.2))
    assert MGDA()(J_off).norm() > 1e-4 * J_off.norm()


def test_the_papers_segment_x2_minus_8_3552_is_the_arc_near_its_middle():
    assert CAGradToy.pareto_x2(0.0).item() == pytest.approx(CAGradToy.PAPER_PARETO_X2, abs=1.5e-4)
    problem = CAGradToy()
    for x1 in (-2.0, 0.0, 1.0):
        on_line = one_plus_cosine(problem, x1, -8.3552)
        assert on_line < 1e-7
        assert one_plus_cosine(problem, x1, -8.3552 + 0.5) > 1e3 * on_line
        assert one_plus_cosine(problem, x1, -8.3552 - 0.5) > 1e3 * on_line
    # The arc is symmetric, highest at x1 = 0, and spans -7 <= x1 <= 7 only.
    arc = CAGradToy.pareto_points(41)
    torch.testing.assert_close(arc[:, 1], arc.flip(0)[:, 1])
    assert arc[:, 1].argmax() == 20 and arc[:, 1].min() > -8.44
    with pytest.raises(ValueError, match="-7 <= x1 <= 7"):
        CAGradToy.pareto_x2(7.5)


# ---------------------------------------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------------------------------------


def test_batched_adam_is_torch_adam_on_every_row():
    g = torch.Generator().manual_seed(0)
    S, steps = 3, 60
    starts = torch.randn(S, 2, generator=g, dtype=F64)
    directions = (
        torch.randn(steps, S, 2, generator=g, dtype=F64)
        * torch.logspace(-3, 1, steps, dtype=F64)[:, None, None]
    )
    x, adam = starts.clone(), BatchedAdam(lr=0.01)
    for d in directions:
        adam.step(x, d)
    for s in range(S):
        param = torch.nn.Parameter(starts[s].clone())
        reference = torch.optim.Adam([param], lr=0.01)
        for d in directions[:, s]:
            param.grad = d.clone()
            reference.step()
        torch.testing.assert_close(x[s], param.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps", [None, 1e-3])
@pytest.mark.parametrize("fast", [True, False])
def test_adam_trajectory_matches_a_torch_adam_loop_on_the_mean_loss(fast, eps):
    problem, steps = PCGradToy(), 150
    options = {} if eps is None else {"eps": eps}  # None: both use their defaults
    run = trajectories(
        problem, Mean(), problem.starts(), steps=steps, lr=problem.LR, optimizer="adam", fast=fast, **options
    )
    param = torch.nn.Parameter(problem.starts()[0].clone())
    reference = torch.optim.Adam([param], lr=problem.LR, **options)
    for t in range(steps):
        torch.testing.assert_close(run.points[0, t], param.detach(), rtol=0, atol=1e-12)
        reference.zero_grad()
        problem.losses(param).mean().backward()
        reference.step()
    torch.testing.assert_close(run.points[0, steps], param.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("aggregator", [Mean(), UPGrad()], ids=repr)
@pytest.mark.parametrize("fast", [True, False])
def test_sgd_on_ewq_follows_the_closed_form(aggregator, fast):
    # J = diag(2 x1, 2 x2) never conflicts, so UPGrad is the mean: d = (2 x1, 2 x2) / 2 = x, and
    # x_{t+1} = x_t - 0.075 x_t, i.e. x_t = 0.925^t x_0.
    problem = EWQ()
    starts = problem.starts()
    run = trajectories(
        problem, aggregator, starts, steps=EWQ.STEPS, lr=EWQ.LR, optimizer=EWQ.OPTIMIZER, fast=fast
    )
    expected = torch.stack([(1 - EWQ.LR) ** t * starts for t in range(EWQ.STEPS + 1)], 1)
    torch.testing.assert_close(run.points, expected, rtol=1e-13, atol=1e-300)
    torch.testing.assert_close(run.losses, expected**2, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(run.weights, torch.full((5, EWQ.STEPS + 1, 2), 0.5, dtype=F64))


# ---------------------------------------------------------------------------------------------------------
# Aggregators: closed forms, plain callables
# ---------------------------------------------------------------------------------------------------------


def two_task_jacobians() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    J = torch.randn(400, 2, 2, generator=g, dtype=F64)
    J[1] = torch.tensor([[1.0, 2.0], [-2.0, -4.0]])  # anti-parallel
    J[2] = torch.tensor([[1.0, 2.0], [1.0, 2.0]])  # identical
    J[3] = torch.tensor([[0.0, 0.0], [1.0, -3.0]])  # one zero row
    J[4] = 0.0  # all zero
    J[5] = torch.tensor([[1.0, 0.0], [-1.0, 1e-9]])  # nearly anti-parallel, g0 nearly 0
    J[6] = torch.tensor([[3.0, 0.0], [0.0, 1e-8]])  # orthogonal, very different scales
    J[7] = torch.tensor([[1.0, 1.0], [2.0, 2.0]])  # parallel, same direction
    J[8] = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])  # g0 = 0
    # Near-degenerate families: nearly (anti-)parallel rows, rows of very different norms.
    k = torch.rand(60, 1, generator=g, dtype=F64) * 3
    noise = torch.randn(60, 2, generator=g, dtype=F64) * 10 ** -torch.randint(4, 12, (60, 1), generator=g)
    J[10:70, 1] = -k * J[10:70, 0] + noise
    J[70:130, 1] = k * J[70:130, 0] + noise
    J[130:190, 1] *= 10.0 ** -torch.randint(3, 9, (60, 1), generator=g)
    J[190:] *= torch.exp(3 * torch.randn(210, 2, 1, generator=g, dtype=F64))  # rows of any scale
    return J


CLOSED_FORMS = [Mean(), PCGrad(), MGDA(), UPGrad(), CAGrad(0.5), CAGrad(2.0), CAGrad(0.0)]


@pytest.mark.parametrize("aggregator", CLOSED_FORMS, ids=repr)
def test_scalar_weights_are_the_aggregators(aggregator):
    J = two_task_jacobians()
    weigh = _scalar_weights(aggregator)
    for s in range(J.shape[0]):
        expected = aggregator.weights(J[s])
        w = torch.tensor(weigh(*J[s].flatten().tolist()), dtype=F64)
        scale = max(1.0, expected.abs().max().item())
        # The directions agree everywhere (where the weights are not unique, e.g. g1 = g2, they may differ)...
        torch.testing.assert_close(w @ J[s], expected @ J[s], rtol=0, atol=1e-11 * scale * J[s].norm().item())
        # ... and the weights wherever the rows are independent and not nearly dependent.
        if s >= 190:
            torch.testing.assert_close(w, expected, rtol=1e-9, atol=1e-12)


def test_the_scalar_engine_is_used_only_for_the_exact_classes():
    class MyMean(Mean):
        pass

    class Shifted(EWQ):  # same scalar methods, different losses: must not use them
        def losses(self, x):
            return (x - 1.0) ** 2

    assert _scalar_weights(MyMean()) is None and _scalar_weights(torchjd.aggregation.Mean()) is None
    assert _scalar_weights(CAGrad(0.3)) is not None
    run = trajectories(Shifted(), Mean(), [[3.0, -2.0]], steps=5, lr=0.1, optimizer="sgd", dtype=F64)
    torch.testing.assert_close(run.points[0, -1], 1.0 + 0.9**5 * torch.tensor([2.0, -3.0], dtype=F64))

    # A PCGrad subclass goes through its weights (the generic path): at steps 0 to 3, from 5 starts.
    class CountingPCGrad(PCGrad):
        calls = 0

        def weights(self, J):
            CountingPCGrad.calls += 1
            return super().weights(J)

    trajectories(EWQ(), CountingPCGrad(), EWQ.starts(), steps=3, lr=0.1)
    assert CountingPCGrad.calls == 4 * 5


def assert_same_runs(fast: Trajectories, slow: Trajectories) -> None:
    for name in ("points", "losses", "weights"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=1e-9, atol=1e-9)
    assert fast.steps.tolist() == slow.steps.tolist()


@pytest.mark.parametrize(
    "aggregator", [Mean(), PCGrad(), MGDA(), UPGrad(), CAGrad(0.5), CAGrad(2.0)], ids=repr
)
@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_scalar_engine_is_the_generic_path_in_the_papers_settings(problem, aggregator):
    starts = problem.starts()
    if isinstance(problem, CAGradToy) and isinstance(aggregator, MGDA | CAGrad):
        starts = starts[[0, 1, 3, 4]]  # (0, 0): see test_the_symmetric_start_stays_on_the_mirror_line
    # EWQ: the paper's 50 steps. MGDA's diagonal |x1| = |x2| is unstable (start (-4, 4)): the torch path
    # leaves it at rounding level, the scalar engine does not, and after 300 steps that shows.
    steps = problem.STEPS or 300
    kwargs = {"steps": steps, "lr": problem.LR, "optimizer": problem.OPTIMIZER, "record_every": 7}
    fast = trajectories(problem, aggregator, starts, **kwargs)
    assert_same_runs(fast, trajectories(problem, aggregator, starts, **kwargs, fast=False))


@pytest.mark.parametrize("aggregator", [PCGrad(), MGDA(), UPGrad(), CAGrad(0.5)], ids=repr)
def test_scalar_engine_is_the_generic_path_with_sgd(aggregator):
    problem = CAGradToy()
    kwargs = {"steps": 100, "lr": 0.05, "optimizer": "sgd", "record_every": 3}
    starts = problem.starts()[[0, 1, 3, 4]]
    fast = trajectories(problem, aggregator, starts, **kwargs, fast=True)
    assert_same_runs(fast, trajectories(problem, aggregator, starts, **kwargs, fast=False))


@pytest.mark.parametrize("aggregator", [Mean(), PCGrad(), MGDA()], ids=repr)
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_scalar_engine_is_the_generic_path_with_another_adam_eps(aggregator, eps):
    problem = CAGradToy()
    kwargs = {"steps": 300, "lr": problem.LR, "record_every": 7, "eps": eps}
    starts = problem.starts()[[0, 1, 3, 4]]
    fast = trajectories(problem, aggregator, starts, **kwargs, fast=True)
    assert_same_runs(fast, trajectories(problem, aggregator, starts, **kwargs, fast=False))
    # eps matters: a different eps gives a different run.
    other = trajectories(problem, aggregator, starts, **{**kwargs, "eps": 1e-8})
    assert (other.points[:, -1] - fast.points[:, -1]).abs().max() > 1e-6


@pytest.mark.parametrize("aggregator", [MGDA(), CAGrad(0.5)], ids=repr)
def test_the_symmetric_start_stays_on_the_mirror_line(aggregator):
    # The CAGrad toy is symmetric under x1 -> -x1 with the tasks swapped, so from (0, 0) the iterates stay on
    # x1 = 0, and the scalar engine keeps x1 exactly 0. The torch path leaves it at rounding level: near
    # x2 = 0, g1 and g2 are nearly equal, MGDA's and CAGrad's weights are ill-conditioned, and Adam turns the
    # resulting tiny x1-component of the direction into x1 steps of up to ~lr, back and forth, so the two
    # paths differ by more than 1e-9 within a few steps (though both stay near x1 = 0). The first steps agree,
    # the weights up to the direction they give: at (0, 0) itself g1 = g2 and the weights are not unique.
    problem = CAGradToy()
    run = trajectories(problem, aggregator, [[0.0, 0.0]], steps=2000, lr=problem.LR, dtype=F64)
    assert (run.points[0, :, 0] == 0).all() and (run.losses[0, :, 0] == run.losses[0, :, 1]).all()
    slow = trajectories(problem, aggregator, [[0.0, 0.0]], steps=2, lr=problem.LR, dtype=F64, fast=False)
    torch.testing.assert_close(run.points[:, :2], slow.points[:, :2], rtol=1e-12, atol=1e-12)
    _, J = _jacobians(problem, run.points[0, :2], 2)
    torch.testing.assert_close(
        torch.einsum("tm,tmn->tn", run.weights[0, :2], J), torch.einsum("tm,tmn->tn", slow.weights[0, :2], J)
    )


def test_plain_callables_are_accepted():
    problem = CAGradToy()
    ours = trajectories(problem, Mean(), problem.starts(), steps=30, lr=1e-2)
    lambda_run = trajectories(problem, lambda J: J.mean(0), problem.starts(), steps=30, lr=1e-2)
    torchjd_run = trajectories(problem, torchjd.aggregation.Mean(), problem.starts(), steps=30, lr=1e-2)
    assert lambda_run.weights is None and torchjd_run.weights is None
    torch.testing.assert_close(lambda_run.points, ours.points, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torchjd_run.points, ours.points, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="directions of shape"):
        trajectories(problem, lambda J: J.sum(), problem.starts(), steps=3, lr=1e-2)


@pytest.mark.parametrize("fast", [True, False])
def test_cagrad_records_its_weights(fast):
    problem = CAGradToy()
    run = trajectories(problem, CAGrad(), problem.starts()[[0, 1, 3, 4]], steps=5, lr=1e-2, fast=fast)
    for s in range(4):
        _, J = _jacobians(problem, run.points[s, 2:3], 2)
        torch.testing.assert_close(run.weights[s, 2], CAGrad().weights(J[0]))


# ---------------------------------------------------------------------------------------------------------
# Shapes, recording, landscape, bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(("steps", "record_every"), [(10, 1), (10, 3), (12, 4), (1, 5)])
def test_shapes_and_recorded_steps(steps, record_every, fast):
    problem = CAGradToy()
    every = trajectories(problem, UPGrad(), problem.starts(), steps=steps, lr=1e-2, fast=fast)
    run = trajectories(
        problem, UPGrad(), problem.starts(), steps=steps, lr=1e-2, record_every=record_every, fast=fast
    )
    T = steps // record_every + 1
    assert isinstance(run, Trajectories)
    assert run.points.shape == (5, T, 2) and run.losses.shape == (5, T, 2) and run.weights.shape == (5, T, 2)
    assert run.steps.tolist() == [record_every * k for k in range(T)]
    torch.testing.assert_close(run.points, every.points[:, run.steps], rtol=0, atol=0)
    torch.testing.assert_close(run.weights, every.weights[:, run.steps], rtol=0, atol=0)
    torch.testing.assert_close(run.points[:, 0], problem.starts(), rtol=0, atol=0)
    torch.testing.assert_close(run.losses, problem.losses(run.points), rtol=1e-15, atol=1e-15)  # math.log


def test_dtype_follows_the_starts_or_the_argument():
    problem = EWQ()
    assert trajectories(problem, Mean(), problem.starts(), steps=2, lr=0.1).points.dtype == F64
    assert trajectories(problem, Mean(), [[1.0, 2.0]], steps=2, lr=0.1).points.dtype == torch.float32
    run = trajectories(problem, MGDA(), [[1.0, 2.0]], steps=2, lr=0.1, dtype=F64)
    assert run.points.dtype == run.weights.dtype == F64


def test_landscape_is_the_losses_on_an_xy_grid():
    problem = CAGradToy()
    X1, X2, losses = landscape(problem, (-10.0, 10.0), (-9.0, 9.0), 7)
    assert X1.shape == X2.shape == (7, 7) and losses.shape == (7, 7, 2)
    assert X1[0].tolist() == pytest.approx([-10 + 20 * j / 6 for j in range(7)])
    assert X2[:, 0].tolist() == pytest.approx([-9 + 18 * i / 6 for i in range(7)])
    assert losses[2, 5].tolist() == pytest.approx(cagrad_toy_math(X1[2, 5].item(), X2[2, 5].item()))
    assert not losses.requires_grad


def test_problem_settings_are_the_papers():
    assert PCGradToy.STARTS == ((0.5, -3.0),) and PCGradToy.LR == 1e-3 and PCGradToy.OPTIMIZER == "adam"
    assert CAGradToy.starts().shape == (5, 2) and CAGradToy.LR == 1e-3 and CAGradToy.OPTIMIZER == "adam"
    assert (EWQ.LR, EWQ.STEPS, EWQ.OPTIMIZER) == (0.075, 50, "sgd")
    assert all(isinstance(p.name, str) and p.pareto_set for p in PROBLEMS)


@pytest.mark.parametrize(
    ("starts", "kwargs", "match"),
    [
        ([1.0, 2.0], {}, r"starts must have shape \(S, 2\)"),
        ([[1.0, 2.0, 3.0]], {}, r"starts must have shape \(S, 2\)"),
        (torch.empty(0, 2), {}, r"starts must have shape \(S, 2\)"),
        ([[1.0, 2.0]], {"steps": 0}, "steps must be an integer >= 1"),
        ([[1.0, 2.0]], {"steps": 2.5}, "steps must be an integer >= 1"),
        ([[1.0, 2.0]], {"optimizer": "rmsprop"}, "optimizer must be 'adam' or 'sgd'"),
        ([[1.0, 2.0]], {"lr": 0.0}, "lr must be a positive number"),
        ([[1.0, 2.0]], {"lr": float("nan")}, "lr must be a positive number"),
        ([[1.0, 2.0]], {"record_every": 0}, "record_every must be an integer >= 1"),
        ([[1.0, 2.0]], {"eps": 0.0}, "eps must be a positive number"),
        ([[1.0, 2.0]], {"eps": float("inf")}, "eps must be a positive number"),
    ],
)
def test_bad_trajectory_input_raises_a_clear_value_error(starts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        trajectories(EWQ(), Mean(), starts, **{"steps": 3, "lr": 0.1, **kwargs})


def test_bad_problem_and_landscape_input_raises():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        CAGradToy().losses(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="resolution"):
        landscape(EWQ(), (-1.0, 1.0), (-1.0, 1.0), 1)
    with pytest.raises(ValueError, match="low < high"):
        landscape(EWQ(), (1.0, -1.0), (-1.0, 1.0), 10)
    with pytest.raises(TypeError, match="aggregator"):
        trajectories(EWQ(), "mean", [[1.0, 2.0]], steps=3, lr=0.1)
