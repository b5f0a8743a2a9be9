"""Tests of mtlcourse.famo.FAMO: torchjd.scalarization.FAMO as the oracle, the closed form of the weights,
and the reset contract of fit."""

from __future__ import annotations

import math

import pytest
import torch

from mtlcourse.data import regression_classification
from mtlcourse.famo import FAMO
from mtlcourse.models import r_post_model
from mtlcourse.tasks import Task
from mtlcourse.training import fit, task_losses

TASKS = [Task("regression", "regression"), Task("classification", "binary")]
NAMES = [t.name for t in TASKS]


def _splits():
    return regression_classification(n=120, seed=0)


def test_fit_with_famo_follows_torchjd_famo_step_by_step():
    """Full batch: the losses FAMO sees at step t + 1 are the official ``update`` losses of step t."""
    scalarization = pytest.importorskip("torchjd.scalarization")
    train = _splits().train
    torch.manual_seed(0)
    model = r_post_model()
    history = fit(model, TASKS, train, strategy=FAMO(2), epochs=20, lr=0.05)

    torch.manual_seed(0)
    reference = r_post_model()
    theirs = scalarization.FAMO(2).double()  # the logits in float64, as ours
    opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    expected = []
    for _ in range(20):
        losses, _, _ = task_losses(reference, TASKS, train.x, train.targets)
        values = losses.detach().clone().requires_grad_()
        (w,) = torch.autograd.grad(theirs(values), values)  # d/dL of c sum z_i log L_i: the weights
        expected.append(w)
        opt.zero_grad()
        theirs(losses).backward()
        opt.step()
        with torch.no_grad():
            after, _, _ = task_losses(reference, TASKS, train.x, train.targets)
        theirs.update(after)  # the official procedure: same batch, after the step

    weights = torch.tensor(history[[f"weight_{n}" for n in NAMES]].to_numpy())
    torch.testing.assert_close(weights, torch.stack(expected).double(), rtol=1e-5, atol=0)
    assert weights[0].tolist() != weights[-1].tolist()  # the logits did move
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_update_called_by_hand_is_the_official_procedure_and_is_not_applied_twice():
    scalarization = pytest.importorskip("torchjd.scalarization")
    ours, theirs = FAMO(3, min_losses=[0.1, 0.0, 0.2]), scalarization.FAMO(3, torch.tensor([0.1, 0.0, 0.2]))
    theirs = theirs.double()
    g, model = torch.Generator().manual_seed(0), r_post_model()
    for _ in range(20):
        before = 0.3 + torch.rand(3, generator=g, dtype=torch.float64)
        after = 0.3 + torch.rand(3, generator=g, dtype=torch.float64)
        values = before.clone().requires_grad_()
        (w,) = torch.autograd.grad(theirs(values), values)
        torch.testing.assert_close(ours.weights(before, model), w, rtol=1e-12, atol=0)
        ours._previous = ours._shifted(before)  # what backward records
        theirs.update(after)
        ours.update(after)
        ours.update(after)  # a second call has nothing left to apply
    torch.testing.assert_close(ours.logits.detach(), theirs._w.detach(), rtol=1e-12, atol=1e-15)


def test_weights_are_the_gradient_of_c_times_the_weighted_log_losses():
    torch.manual_seed(0)
    model = r_post_model()
    famo = FAMO(2, min_losses=[0.01, 0.02])
    with torch.no_grad():
        famo.logits.copy_(torch.tensor([0.7, -0.4]))
    data = _splits().train
    losses, _, features = task_losses(model, TASKS, data.x, data.targets)
    z, shifted = (
        torch.softmax(torch.tensor([0.7, -0.4]), 0),
        losses.double() - torch.tensor([0.01, 0.02]) + 1e-8,
    )
    c = 1 / (z / shifted.detach()).sum()  # a constant for autograd
    log_form = (c * z * shifted.log()).sum().float()  # the paper's loss, c a constant
    expected = torch.autograd.grad(log_form, list(model.parameters()), retain_graph=True, allow_unused=True)
    w = famo.backward(losses, model, features)
    torch.testing.assert_close(w.double(), c * z / shifted, rtol=1e-6, atol=0)
    assert w.sum().item() == pytest.approx(1.0) and (w > 0).all()
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)
    assert famo.parameters() == []  # fit's optimiser never steps the logits


def test_the_task_that_improved_less_gains_weight():
    famo, model = FAMO(2), r_post_model()
    famo._previous = famo._shifted(torch.tensor([1.0, 1.0]))
    famo.update(torch.tensor([0.5, 0.9]))  # task 0 fell by log 2, task 1 by log(1/0.9)
    w = famo.weights(torch.tensor([1.0, 1.0]), model)
    assert w[1] > w[0]
    # Adam's first step moves each logit by lr against the sign of its gradient z_i (delta_i - z.delta)
    torch.testing.assert_close(famo.logits.detach(), torch.tensor([-0.025, 0.025], dtype=torch.float64))


def test_two_fit_runs_with_one_famo_give_the_same_history():
    splits, famo = _splits(), FAMO(2)

    def run(seed):
        torch.manual_seed(seed)
        return fit(r_post_model(), TASKS, splits.train, strategy=famo, epochs=3, batch_size=40, seed=seed)

    first = run(0)
    run(1)
    assert first.equals(run(0))
    assert not torch.equal(famo.logits.detach(), torch.zeros(2, dtype=torch.float64))
    famo.reset()
    assert torch.equal(famo.logits.detach(), torch.zeros(2, dtype=torch.float64)) and famo._previous is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"m": 0}, "at least one task"),
        ({"m": 2, "lr": -1.0}, "lr must be"),
        ({"m": 2, "weight_decay": math.nan}, "weight_decay must be"),
        ({"m": 2, "min_losses": [0.0]}, "min_losses must be 2"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FAMO(**kwargs)


@pytest.mark.parametrize("losses", [[0.5, 0.0], [0.5, -1.0], [math.inf, 1.0]])
def test_losses_not_above_their_bound_are_refused(losses):
    with pytest.raises(ValueError, match="above its lower bound"):
        FAMO(2).weights(torch.tensor(losses), r_post_model())


def test_wrong_number_of_losses_is_named_and_repr_names_the_parameters():
    with pytest.raises(ValueError, match="built for 3 tasks"):
        FAMO(3).weights(torch.ones(2), r_post_model())
    assert repr(FAMO(2)) == "FAMO(m=2, min_losses=[0.0, 0.0], lr=0.025, weight_decay=0.001)"


def test_fit_with_mini_batches_follows_the_official_procedure():
    """Mini-batches: fit's after_step hook gives FAMO the losses recomputed on the same batch after the
    step, as the official code does (torchjd's FAMO driven by hand as the oracle)."""
    scalarization = pytest.importorskip("torchjd.scalarization")
    train = _splits().train
    torch.manual_seed(0)
    model = r_post_model()
    history = fit(model, TASKS, train, strategy=FAMO(2), epochs=3, lr=0.05, batch_size=16, seed=4)

    torch.manual_seed(0)
    reference = r_post_model()
    theirs = scalarization.FAMO(2).double()
    opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(train), 16):
            idx = order[start : start + 16]
            x, targets = train.x[idx], {k: v[idx] for k, v in train.targets.items()}
            losses, _, _ = task_losses(reference, TASKS, x, targets)
            opt.zero_grad()
            theirs(losses).backward()
            opt.step()
            with torch.no_grad():
                after, _, _ = task_losses(reference, TASKS, x, targets)
            theirs.update(after)
    assert len(history) == 3
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_strategies_without_the_hook_cost_no_extra_forward_pass():
    """Equal weights: one trunk forward per step; FAMO: one more, for the update after the step."""
    calls = []
    model = r_post_model()
    model.trunk = torch.nn.Sequential(model.trunk, _Recorder(calls))
    fit(model, TASKS, _splits().train, epochs=2, batch_size=40)
    equal_weight_calls = len(calls)
    calls.clear()
    fit(model, TASKS, _splits().train, strategy=FAMO(2), epochs=2, batch_size=40)
    assert len(calls) == 2 * equal_weight_calls


class _Recorder(torch.nn.Module):
    """Identity layer that records every forward call."""

    def __init__(self, calls: list) -> None:
        super().__init__()
        self.calls = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return x
