import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlcourse.data import regression_classification
from mtlcourse.models import r_post_model
from mtlcourse.tasks import Task
from mtlcourse.training import fit
from mtlcourse.weighting import (
    DWA,
    InitialLossNormalisation,
    InverseAccuracy,
    RandomWeighting,
    StaticWeights,
    UncertaintyWeighting,
    equal_weights,
)

CUDA = torch.cuda.is_available()


def _losses_of(model):
    x = torch.randn(8, 5)
    out, features = model(x, return_features=True)
    return torch.stack([out["regression"].pow(2).mean(), out["classification"].abs().mean()]), features


def test_static_weights_backpropagate_the_weighted_sum():
    torch.manual_seed(0)
    model = r_post_model()
    losses, features = _losses_of(model)
    expected = torch.autograd.grad(
        0.2 * losses[0] + 0.8 * losses[1], list(model.parameters()), retain_graph=True
    )
    w = StaticWeights([0.2, 0.8]).backward(losses, model, features)
    torch.testing.assert_close(w, torch.tensor([0.2, 0.8]))
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_named_weights_follow_the_model_s_task_order():
    torch.manual_seed(0)
    model = r_post_model()
    losses, _ = _losses_of(model)
    w = StaticWeights({"classification": 0.9, "regression": 0.1}).weights(losses, model)
    torch.testing.assert_close(w, torch.tensor([0.1, 0.9], dtype=torch.float64))


def test_equal_weights_are_one_over_m():
    assert equal_weights(4).weights(torch.zeros(4), r_post_model()).tolist() == [0.25] * 4


@pytest.mark.parametrize(
    ("weights", "message"),
    [([], "non-empty"), ([1.0, -0.5], "non-negative"), ([1.0, float("nan")], "finite")],
)
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        StaticWeights(weights)


def test_wrong_number_of_weights_is_named():
    with pytest.raises(ValueError, match="3 weights were given for 2 tasks"):
        StaticWeights([1.0, 1.0, 1.0]).weights(torch.zeros(2), r_post_model())


def test_weights_for_unknown_tasks_are_refused():
    with pytest.raises(ValueError, match="the model has"):
        StaticWeights({"regression": 0.5, "ranking": 0.5}).weights(torch.zeros(2), r_post_model())


# --- Helpers for the dynamic schemes ------------------------------------------------------------------

TASKS = [Task("regression", "regression"), Task("classification", "binary")]
NAMES = [t.name for t in TASKS]


def _softmax_times_m(ratios, temperature):
    exps = [math.exp(r / temperature) for r in ratios]
    return [len(exps) * e / sum(exps) for e in exps]


def _fit(strategy, epochs=5, **kwargs):
    torch.manual_seed(0)
    splits = regression_classification(n=300, seed=0)
    model = r_post_model()
    history = fit(model, TASKS, splits.train, splits.val, strategy=strategy, epochs=epochs, **kwargs)
    return model, history


def _weights(history, epoch):
    row = history.loc[history["epoch"] == epoch].iloc[0]
    return [row[f"weight_{name}"] for name in NAMES]


# --- Normalisation: what the weights sum to -----------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    acc=st.floats(0.0, 1.0),
    r2=st.floats(-10.0, 1.0),
    floor=st.floats(0.01, 1.0),
)
def test_inverse_accuracy_weights_sum_to_m_and_favour_the_worse_task(acc, r2, floor):
    strategy = InverseAccuracy(floor=floor)
    strategy.end_epoch({"val_r2_regression": r2, "val_acc_classification": acc})
    w = strategy.weights(torch.zeros(2), r_post_model())
    assert w.sum().item() == pytest.approx(2.0)
    a = [min(max(r2, floor), 1.0), min(max(acc, floor), 1.0)]
    assert (w[0] >= w[1]) == (a[0] <= a[1]) or a[0] == pytest.approx(a[1])


@settings(max_examples=30, deadline=None)
@given(
    history=st.lists(st.tuples(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3)), min_size=2, max_size=4),
    temperature=st.floats(0.1, 10.0),
)
def test_dwa_weights_sum_to_m(history, temperature):
    strategy = DWA(temperature)
    for reg, cls in history:
        strategy.end_epoch({"train_loss_regression": reg, "train_loss_classification": cls})
    w = strategy.weights(torch.zeros(2), r_post_model())
    assert w.sum().item() == pytest.approx(2.0)
    assert (w >= 0).all()


def test_schemes_give_plain_summed_losses_before_they_know_anything():
    model, losses = r_post_model(), torch.ones(2)
    for strategy in (InverseAccuracy(), DWA()):
        assert strategy.weights(losses, model).tolist() == [1.0, 1.0]
    assert UncertaintyWeighting(2).weights(losses, model).tolist() == [0.5, 0.5]


# --- InitialLossNormalisation -------------------------------------------------------------------------


def test_initial_loss_normalisation_backpropagates_losses_over_their_first_values():
    torch.manual_seed(0)
    model = r_post_model()
    strategy = InitialLossNormalisation()
    first, features = _losses_of(model)
    l0 = first.detach().clone()
    w = strategy.backward(first, model, features)
    torch.testing.assert_close(w, 1 / l0)
    model.zero_grad()
    losses, features = _losses_of(model)  # a second step: new losses, same denominators
    expected = torch.autograd.grad(
        losses[0] / l0[0] + losses[1] / l0[1], list(model.parameters()), retain_graph=True
    )
    strategy.backward(losses, model, features)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


# --- InverseAccuracy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        # 1/a = (2, 1), sum 3: w = 2 * (2/3, 1/3)
        ({"val_acc_regression": 0.5, "val_acc_classification": 1.0}, [4 / 3, 2 / 3]),
        # R² = -0.3 is clipped to the floor 0.05: 1/a = (20, 2), sum 22
        ({"val_r2_regression": -0.3, "val_acc_classification": 0.5}, [40 / 22, 4 / 22]),
        # equal scores: weight 1 each
        ({"val_r2_regression": 0.8, "val_acc_classification": 0.8}, [1.0, 1.0]),
        # an accuracy of 0 is clipped to the floor too: 1/a = (4, 20), sum 24
        ({"val_r2_regression": 0.25, "val_acc_classification": 0.0}, [2 * 4 / 24, 2 * 20 / 24]),
    ],
)
def test_inverse_accuracy_on_hand_cases(record, expected):
    strategy = InverseAccuracy()
    strategy.end_epoch({"epoch": 1, "train_loss_regression": 1.0, **record})
    w = strategy.weights(torch.zeros(2), r_post_model())
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64))


def test_inverse_accuracy_floor_is_a_parameter():
    strategy = InverseAccuracy(floor=0.5)
    strategy.end_epoch({"val_r2_regression": 0.1, "val_acc_classification": 1.0})  # 1/a = (2, 1)
    torch.testing.assert_close(
        strategy.weights(torch.zeros(2), r_post_model()), torch.tensor([4 / 3, 2 / 3], dtype=torch.float64)
    )


def test_inverse_accuracy_follows_the_model_s_task_order():
    strategy = InverseAccuracy()
    strategy.end_epoch({"val_acc_classification": 1.0, "val_r2_regression": 0.5})
    w = strategy.weights(torch.zeros(2), r_post_model())  # model order: regression, classification
    torch.testing.assert_close(w, torch.tensor([4 / 3, 2 / 3], dtype=torch.float64))


# --- UncertaintyWeighting -----------------------------------------------------------------------------


def test_uncertainty_gradient_in_s_has_the_closed_form():
    strategy = UncertaintyWeighting(3)
    with torch.no_grad():
        strategy.log_variances.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    losses = torch.tensor([0.3, 1.0, 5.0])
    strategy.loss(losses).backward()
    s = strategy.log_variances.detach()
    torch.testing.assert_close(strategy.log_variances.grad, 0.5 * (1 - torch.exp(-s) * losses))


def test_uncertainty_minimiser_in_s_is_log_of_the_loss():
    losses = torch.tensor([0.05, 1.0, 7.0])
    strategy = UncertaintyWeighting(3)
    opt = torch.optim.SGD(strategy.parameters(), lr=1.0)  # the loss is convex in s
    for _ in range(100):
        opt.zero_grad()
        strategy.loss(losses).backward()
        opt.step()
    torch.testing.assert_close(strategy.log_variances.detach(), losses.log(), atol=1e-4, rtol=0)
    assert strategy.log_variances.grad.abs().max() < 1e-5  # the closed-form gradient vanishes there
    # at the optimum each term is (1 + log L_i) / 2: negative for L_i < 1/e
    torch.testing.assert_close(
        strategy.loss(losses).detach(), (0.5 * (1 + losses.log())).sum(), atol=1e-5, rtol=0
    )
    small = UncertaintyWeighting(2, init=math.log(0.05))  # at its optimum for L = 0.05 < 1/e
    assert small.loss(torch.full((2,), 0.05)).item() < 0


def test_uncertainty_backward_scales_each_task_gradient_by_its_reported_weight():
    torch.manual_seed(0)
    model = r_post_model()
    strategy = UncertaintyWeighting(2, init=0.7)
    losses, features = _losses_of(model)
    expected = torch.autograd.grad(
        0.5 * math.exp(-0.7) * losses.sum(), list(model.parameters()), retain_graph=True
    )
    w = strategy.backward(losses, model, features)
    torch.testing.assert_close(w, torch.full((2,), 0.5 * math.exp(-0.7)))
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert strategy.log_variances.grad is not None
    assert strategy.parameters() == [strategy.log_variances]


# --- DWA ----------------------------------------------------------------------------------------------


def test_dwa_on_a_hand_computed_loss_history():
    history = [(1.0, 0.8), (0.5, 0.6), (0.4, 0.3), (0.2, 0.3)]
    strategy = DWA(temperature=2.0)
    model = r_post_model()
    seen = []
    for reg, cls in history:
        seen.append(strategy.weights(torch.zeros(2), model).tolist())
        strategy.end_epoch(
            {"epoch": len(seen), "train_loss_regression": reg, "train_loss_classification": cls}
        )
    seen.append(strategy.weights(torch.zeros(2), model).tolist())
    assert seen[0] == seen[1] == [1.0, 1.0]
    # epoch 3 uses L(2)/L(1) = (0.5, 0.75), epoch 4 (0.8, 0.5), epoch 5 (0.5, 1.0)
    for got, ratios in zip(
        seen[2:], [(0.5 / 1.0, 0.6 / 0.8), (0.4 / 0.5, 0.3 / 0.6), (0.2 / 0.4, 1.0)], strict=True
    ):
        assert got == pytest.approx(_softmax_times_m(ratios, 2.0))


def test_dwa_temperature_flattens_the_weights():
    def weights(temperature):
        strategy = DWA(temperature)
        for reg, cls in [(1.0, 1.0), (0.5, 1.0)]:
            strategy.end_epoch({"train_loss_regression": reg, "train_loss_classification": cls})
        return strategy.weights(torch.zeros(2), r_post_model())

    spreads = [(weights(t)[1] - weights(t)[0]).item() for t in (0.5, 2.0, 50.0)]
    assert spreads[0] > spreads[1] > spreads[2] > 0


# --- Agreement with torchjd ---------------------------------------------------------------------------


def test_uncertainty_weighting_equals_torchjd_uw():
    scalarization = pytest.importorskip("torchjd.scalarization")
    theirs = scalarization.UW(3)
    ours = UncertaintyWeighting(3)
    s = torch.tensor([-0.4, 0.0, 1.3])
    with torch.no_grad():
        theirs.log_var.copy_(s)
        ours.log_variances.copy_(s)
    losses = torch.tensor([0.2, 1.5, 3.0], requires_grad=True)
    (g_ours,) = torch.autograd.grad(ours.loss(losses), losses)
    (g_theirs,) = torch.autograd.grad(theirs(losses), losses)
    torch.testing.assert_close(ours.loss(losses), theirs(losses))
    torch.testing.assert_close(g_ours, g_theirs)
    ours.loss(losses).backward()
    theirs(losses).backward()
    torch.testing.assert_close(ours.log_variances.grad, theirs.log_var.grad)


def test_the_common_variant_without_halves_is_exactly_twice_ours():
    ours = UncertaintyWeighting(2, init=0.3)
    losses = torch.tensor([0.4, 2.0])
    s = ours.log_variances.detach()
    torch.testing.assert_close(2 * ours.loss(losses), (torch.exp(-s) * losses + s).sum())


def test_dwa_equals_torchjd_dwa_with_equal_batches():
    scalarization = pytest.importorskip("torchjd.scalarization")
    torch.manual_seed(0)
    theirs, ours, model = scalarization.DWA(temperature=2.0), DWA(temperature=2.0), r_post_model()
    for epoch in range(1, 6):
        batches = [torch.rand(2) + 0.1 for _ in range(3)]  # three equal-sized batches per epoch
        for losses in batches:
            values = losses.clone().requires_grad_()
            (w_theirs,) = torch.autograd.grad(theirs(values), values)  # d(sum w_i L_i)/dL = w
            torch.testing.assert_close(ours.weights(losses, model).float(), w_theirs)
        theirs.step()
        mean = torch.stack(batches).mean(0)
        ours.end_epoch(
            {"epoch": epoch, **{f"train_loss_{n}": v.item() for n, v in zip(NAMES, mean, strict=True)}}
        )


# --- Integration with fit -----------------------------------------------------------------------------


def test_fit_with_initial_loss_normalisation_keeps_one_over_the_first_losses():
    _, history = _fit(InitialLossNormalisation())  # full batch: epoch 1's loss is the first step's
    first = [history[f"train_loss_{n}"].iloc[0] for n in NAMES]
    for epoch in history["epoch"]:
        assert _weights(history, epoch) == pytest.approx([1 / v for v in first], rel=1e-6)


def test_fit_with_inverse_accuracy_reweights_from_the_previous_validation():
    _, history = _fit(InverseAccuracy(floor=0.05))
    assert _weights(history, 1) == [1.0, 1.0]
    for epoch in history["epoch"].iloc[1:]:
        prev = history.loc[history["epoch"] == epoch - 1].iloc[0]
        inv = [1 / min(max(prev["val_r2_regression"], 0.05), 1.0), 1 / prev["val_acc_classification"]]
        assert _weights(history, epoch) == pytest.approx([2 * v / sum(inv) for v in inv])


def test_fit_with_uncertainty_weighting_learns_the_log_variances():
    strategy, lr = UncertaintyWeighting(2), 0.05
    _, history = _fit(strategy, epochs=5, lr=lr)
    # full batch, one step per epoch: epoch k reports ½ exp(-s) for the s before its step
    assert _weights(history, 1) == [0.5, 0.5]
    # Adam's first step moves s by lr against the sign of dL/ds = ½ (1 - exp(-s) L), here at s = 0
    first = [history[f"train_loss_{n}"].iloc[0] for n in NAMES]
    expected = [0.5 * math.exp(lr * math.copysign(1.0, 1 - v)) for v in first]
    assert _weights(history, 2) == pytest.approx(expected, rel=1e-5)
    assert (strategy.log_variances.detach() != 0).all()
    assert strategy.log_variances.grad is not None


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]
)
def test_uncertainty_weighting_moves_its_log_variances_and_their_gradient_in_place(device):
    strategy = UncertaintyWeighting(2, init=0.5)
    parameter = strategy.log_variances
    parameter.grad = torch.ones(2)
    assert strategy.to(device) is strategy
    assert strategy.parameters()[0] is parameter  # the object an optimiser may already hold
    assert parameter.device.type == device and parameter.grad.device.type == device
    assert parameter.tolist() == [0.5, 0.5] and parameter.grad.tolist() == [1.0, 1.0]


def test_fit_with_dwa_uses_the_documented_weights():
    _, history = _fit(DWA(temperature=2.0), batch_size=56)  # 168 training rows: three equal batches
    assert _weights(history, 1) == [1.0, 1.0]
    assert _weights(history, 2) == [1.0, 1.0]
    for epoch in history["epoch"].iloc[2:]:
        older, newer = (history.loc[history["epoch"] == e].iloc[0] for e in (epoch - 2, epoch - 1))
        ratios = [newer[f"train_loss_{n}"] / older[f"train_loss_{n}"] for n in NAMES]
        assert _weights(history, epoch) == pytest.approx(_softmax_times_m(ratios, 2.0), rel=1e-6)


# --- Bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [[0.0, 1.0], [1.0, -0.5], [1.0, float("nan")], [float("inf"), 1.0]])
def test_initial_loss_normalisation_refuses_bad_first_losses(first):
    name = NAMES[0] if not (math.isfinite(first[0]) and first[0] > 0) else NAMES[1]
    with pytest.raises(ValueError, match=rf"initial loss of task '{name}'.*positive and finite"):
        InitialLossNormalisation().weights(torch.tensor(first), r_post_model())


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_dwa_refuses_epoch_losses_it_cannot_take_a_ratio_of(value):
    with pytest.raises(ValueError, match=r"task 'classification'.*positive, finite"):
        DWA().end_epoch({"train_loss_regression": 1.0, "train_loss_classification": value})


@pytest.mark.parametrize("temperature", [0.0, -2.0, float("nan"), float("inf")])
def test_dwa_refuses_a_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be positive"):
        DWA(temperature)


@pytest.mark.parametrize("floor", [0.0, -0.1, 1.5, float("nan")])
def test_inverse_accuracy_refuses_a_floor_outside_0_1(floor):
    with pytest.raises(ValueError, match=r"floor must be in \(0, 1\]"):
        InverseAccuracy(floor)


def test_inverse_accuracy_without_validation_data_names_the_missing_score():
    splits = regression_classification(n=300, seed=0)
    with pytest.raises(ValueError, match=r"no validation score for task 'regression'.*val="):
        fit(r_post_model(), TASKS, splits.train, strategy=InverseAccuracy(), epochs=2)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"val_acc_regression": 1.5, "val_acc_classification": 0.5}, "accuracy of task 'regression'"),
        ({"val_r2_regression": float("nan"), "val_acc_classification": 0.5}, "R² of task 'regression'"),
        ({"epoch": 1}, "names no task"),
    ],
)
def test_inverse_accuracy_refuses_bad_scores(record, message):
    with pytest.raises(ValueError, match=message):
        InverseAccuracy().end_epoch(record)


def test_dynamic_schemes_refuse_records_for_other_tasks():
    model = r_post_model()
    dwa, inverse = DWA(), InverseAccuracy()
    for _ in range(2):
        dwa.end_epoch({"train_loss_regression": 1.0, "train_loss_ranking": 1.0})
    inverse.end_epoch({"val_r2_regression": 1.0, "val_acc_ranking": 1.0})
    for strategy in (dwa, inverse):
        with pytest.raises(ValueError, match="the model has"):
            strategy.weights(torch.zeros(2), model)


def test_wrong_number_of_losses_is_named():
    with pytest.raises(ValueError, match="2 log-variances for 3 task losses"):
        UncertaintyWeighting(2).loss(torch.ones(3))
    strategy = InitialLossNormalisation()
    strategy.weights(torch.ones(2), r_post_model())
    with pytest.raises(ValueError, match="2 initial losses are known, got 3"):
        strategy.weights(torch.ones(3), r_post_model())


class _ThreeWeights(InverseAccuracy):
    def weights(self, losses, model):
        return torch.ones(3)


def test_a_weighting_returning_the_wrong_number_of_weights_is_named():
    torch.manual_seed(0)
    model = r_post_model()
    losses, features = _losses_of(model)
    with pytest.raises(ValueError, match=r"\(3,\) weights for \(2,\) task losses"):
        _ThreeWeights().backward(losses, model, features)


@pytest.mark.parametrize(("m", "init", "message"), [(0, 0.0, "at least one task"), (2, math.inf, "finite")])
def test_uncertainty_weighting_refuses_bad_arguments(m, init, message):
    with pytest.raises(ValueError, match=message):
        UncertaintyWeighting(m, init)


def test_reprs_name_the_parameters():
    assert repr(DWA(3.0)) == "DWA(temperature=3.0)"
    assert repr(InverseAccuracy(0.1)) == "InverseAccuracy(floor=0.1)"
    assert repr(UncertaintyWeighting(2, init=-0.5)) == "UncertaintyWeighting(m=2, init=-0.5)"
    strategy = InitialLossNormalisation()
    assert repr(strategy) == "InitialLossNormalisation(initial_losses=None)"
    strategy.weights(torch.tensor([2.0, 0.5]), r_post_model())
    assert repr(strategy) == "InitialLossNormalisation(initial_losses=[2.0, 0.5])"


# --- reset(): a strategy object can serve several runs -----------------------------------------------


def _fit_on(strategy, seed, epochs=4, **kwargs):
    torch.manual_seed(seed)
    splits = regression_classification(n=120, seed=seed)
    return fit(r_post_model(), TASKS, splits.train, splits.val, strategy=strategy, epochs=epochs, **kwargs)


@pytest.mark.parametrize(
    "make",
    [InitialLossNormalisation, InverseAccuracy, lambda: UncertaintyWeighting(2), DWA, RandomWeighting],
    ids=["InitialLossNormalisation", "InverseAccuracy", "UncertaintyWeighting", "DWA", "RandomWeighting"],
)
def test_a_run_after_another_run_repeats_a_fresh_strategy_s_history(make):
    fresh = _fit_on(make(), seed=0, batch_size=40)
    strategy = make()
    _fit_on(strategy, seed=1, batch_size=40)  # a different run first: different losses, scores, weights
    again = _fit_on(strategy, seed=0, batch_size=40)
    pd.testing.assert_frame_equal(again, fresh, check_exact=True)


def test_reset_forgets_what_each_strategy_recorded():
    model = r_post_model()
    ilm = InitialLossNormalisation()
    ilm.weights(torch.tensor([2.0, 4.0]), model)
    ilm.reset()
    torch.testing.assert_close(ilm.weights(torch.tensor([0.5, 0.25]), model), torch.tensor([2.0, 4.0]))
    record = {"train_loss_regression": 1.0, "train_loss_classification": 2.0}
    inverse, dwa = InverseAccuracy(), DWA()
    inverse.end_epoch({"val_r2_regression": 0.2, "val_acc_classification": 0.9})
    dwa.end_epoch(record)
    dwa.end_epoch({**record, "train_loss_regression": 0.1})
    for strategy in (inverse, dwa):
        assert strategy.weights(torch.zeros(2), model).tolist() != [1.0, 1.0]
        strategy.reset()
        assert strategy.weights(torch.zeros(2), model).tolist() == [1.0, 1.0]


def test_uncertainty_reset_restores_init_in_the_same_parameter():
    strategy = UncertaintyWeighting(3, init=0.4)
    parameter = strategy.log_variances
    opt = torch.optim.SGD(strategy.parameters(), lr=0.5)
    strategy.loss(torch.tensor([0.1, 1.0, 9.0])).backward()
    opt.step()
    assert not torch.equal(parameter.detach(), torch.full((3,), 0.4))
    strategy.reset()
    assert strategy.log_variances is parameter and parameter.grad is None
    torch.testing.assert_close(parameter.detach(), torch.full((3,), 0.4))


# --- RandomWeighting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_weighting_equals_torchjd_random_with_the_same_seed(dtype):
    scalarization = pytest.importorskip("torchjd.scalarization")
    ours, theirs, model = RandomWeighting(seed=7), scalarization.Random(), r_post_model()
    data = torch.Generator().manual_seed(99)  # the losses must not draw from the global generator
    torch.manual_seed(7)
    for _ in range(20):
        losses = torch.rand(3, dtype=dtype, generator=data).requires_grad_()
        (w_theirs,) = torch.autograd.grad(theirs(losses), losses)  # d(sum w_i L_i)/dL = w
        torch.testing.assert_close(ours.weights(losses.detach(), model), w_theirs, rtol=1e-6, atol=0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), m=st.integers(1, 12))
def test_random_weights_are_positive_and_sum_to_one(seed, m):
    strategy = RandomWeighting(seed)
    for _ in range(5):
        w = strategy.weights(torch.zeros(m, dtype=torch.float64), r_post_model())
        assert w.shape == (m,) and (w > 0).all()
        assert w.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_random_weights_average_to_one_over_m_and_ignore_the_global_random_state():
    strategy, model = RandomWeighting(seed=3), r_post_model()
    torch.manual_seed(0)
    draws = torch.stack([strategy.weights(torch.zeros(4), model) for _ in range(4000)])
    # exchangeable weights on the simplex: the mean is 1/m; 4000 draws put it within ~1e-2 (std ~0.2/63)
    torch.testing.assert_close(draws.mean(0), torch.full((4,), 0.25), atol=0.02, rtol=0)
    strategy.reset()
    torch.manual_seed(12345)  # the global generator does not matter
    torch.testing.assert_close(strategy.weights(torch.zeros(4), model), draws[0])


def test_random_weighting_backpropagates_the_weighted_sum_it_reports():
    torch.manual_seed(0)
    model = r_post_model()
    losses, features = _losses_of(model)
    w = RandomWeighting(seed=1).weights(losses, model)
    expected = torch.autograd.grad(w @ losses, list(model.parameters()), retain_graph=True)
    reported = RandomWeighting(seed=1).backward(losses, model, features)
    torch.testing.assert_close(reported, w)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("seed", [1.5, "0", True])
def test_random_weighting_refuses_a_seed_that_is_not_an_int(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        RandomWeighting(seed)
