"""Tests that the package works wherever the reader's tensors are: CPU, CUDA, or a mix of both.

Every promise is checked on each available device (the CUDA cases are skipped without a GPU), against the
same computation on the CPU as oracle. Without a GPU, the bugs of mixing devices are reproduced with a
stand-in: the ``meta`` device where an operation accepts it, and :class:`OnOtherDevice`, a CPU tensor that
refuses to be mixed with plain tensors (``RuntimeError``) or converted to NumPy (``TypeError``) until it
is brought back with ``.cpu()`` or ``.to("cpu")``, as a CUDA tensor does.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from mtlcourse import exercises
from mtlcourse.aggregation import IMTLG, MGDA, CAGrad, DualProj, Mean, NashMTL, PCGrad, Random, UPGrad
from mtlcourse.autojac import mtl_backward
from mtlcourse.data import TaskData
from mtlcourse.metrics import report
from mtlcourse.tasks import Task
from mtlcourse.toy import EWQ, CAGradToy, trajectories

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]


class OnOtherDevice(Tensor):
    """A CPU tensor that behaves, for mixing and NumPy, like one on a GPU."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "cpu" or (name == "to" and _targets_the_cpu(args, kwargs)):
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs).as_subclass(Tensor)
        if name in ("grad", "backward"):  # autograd crosses devices (through .to): nothing to refuse
            return super().__torch_function__(func, types, args, kwargs)
        if name == "numpy":
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")
        plain = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor) and not isinstance(t, cls)]
        if any(t.ndim > 0 for t in plain):  # like CUDA, a 0-d CPU tensor mixes, a bigger one does not
            raise RuntimeError(f"Expected all tensors to be on the same device ({name})")
        return super().__torch_function__(func, types, args, kwargs)


def _targets_the_cpu(args: tuple, kwargs: dict) -> bool:
    for a in [*args[1:], kwargs.get("device")]:
        if isinstance(a, str | torch.device):
            return torch.device(a).type == "cpu"
        if isinstance(a, Tensor):
            return not isinstance(a, OnOtherDevice)
    return False


def elsewhere(t: Tensor) -> Tensor:
    return t.detach().clone().as_subclass(OnOtherDevice)


def test_the_stand_in_refuses_what_a_gpu_tensor_refuses():
    x = elsewhere(torch.arange(4.0))
    with pytest.raises(RuntimeError, match="same device"):
        _ = x + torch.ones(4)
    with pytest.raises(TypeError, match="numpy"):
        x.numpy()
    assert type(x.cpu()) is Tensor and type(x.to("cpu")) is Tensor and type(x * 2) is OnOtherDevice
    assert torch.equal(torch.arange(4.0)[elsewhere(torch.tensor([1, 3])).to("cpu")], torch.tensor([1.0, 3.0]))


# ---------------------------------------------------------------------------------------------------------
# toy.trajectories
# ---------------------------------------------------------------------------------------------------------


def test_generic_toy_path_builds_its_tensors_on_the_device_of_the_starts():
    """On ``meta`` (no values), everything must stay there: ``torch.eye`` without ``device`` did not."""
    run = trajectories(CAGradToy(), lambda J: J.mean(0), CAGradToy.starts().to("meta"), steps=3, lr=0.1)
    assert {run.points.device.type, run.losses.device.type, run.steps.device.type} == {"meta"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fast", [True, False], ids=["scalar-engine", "generic"])
def test_trajectories_live_on_the_device_of_the_starts_and_match_the_cpu(device, fast):
    problem = EWQ()
    kwargs = {"steps": 20, "lr": problem.LR, "optimizer": "sgd", "fast": fast}
    expected = trajectories(problem, UPGrad(), problem.starts(), **kwargs)
    run = trajectories(problem, UPGrad(), problem.starts().to(device), **kwargs)
    for got, want in zip(
        (run.points, run.losses, run.weights, run.steps),
        (expected.points, expected.losses, expected.weights, expected.steps),
        strict=True,
    ):
        assert got.device.type == device
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# metrics.report, Task.accuracy / r2, TaskData.subset
# ---------------------------------------------------------------------------------------------------------


def _scores(seed: int = 0) -> tuple[list[Task], dict[str, Tensor], dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    tasks = [Task("digit", "multiclass"), Task("odd", "binary"), Task("size", "regression")]
    outputs = {"digit": torch.randn(50, 10, generator=g), "odd": torch.randn(50, generator=g)}
    outputs["size"] = torch.randn(50, generator=g)
    targets = {
        "digit": torch.randint(0, 10, (50,), generator=g),
        "odd": torch.randint(0, 2, (50,), generator=g).float(),
        "size": outputs["size"] + 0.3 * torch.randn(50, generator=g),
    }
    return tasks, outputs, targets


def test_report_takes_cpu_outputs_with_targets_on_another_device():
    tasks, outputs, targets = _scores()
    expected = report(tasks, outputs, targets)
    got = report(tasks, outputs, {k: elsewhere(v) for k, v in targets.items()})
    assert got.equals(expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("where", ["outputs", "targets", "both"])
def test_report_is_the_same_on_every_device(device, where):
    tasks, outputs, targets = _scores()
    expected = report(tasks, outputs, targets)
    if where in ("outputs", "both"):
        outputs = {k: v.to(device) for k, v in outputs.items()}
    if where in ("targets", "both"):
        targets = {k: v.to(device) for k, v in targets.items()}
    got = report(tasks, outputs, targets)
    assert got["value"].tolist() == pytest.approx(expected["value"].tolist(), rel=1e-6)


def test_accuracy_and_r2_take_cpu_predictions_with_targets_on_another_device():
    tasks, outputs, targets = _scores()
    digit, odd, size = tasks
    manual = (outputs["digit"].argmax(-1) == targets["digit"]).double().mean().item()
    assert digit.accuracy(outputs["digit"], elsewhere(targets["digit"])) == pytest.approx(manual)
    manual = ((outputs["odd"] > 0).float() == targets["odd"]).double().mean().item()
    assert odd.accuracy(outputs["odd"], elsewhere(targets["odd"])) == pytest.approx(manual)
    y, p = targets["size"].double(), outputs["size"].double()
    manual = 1 - ((p - y) ** 2).sum().item() / ((y - y.mean()) ** 2).sum().item()
    assert size.r2(outputs["size"], elsewhere(targets["size"])) == pytest.approx(manual, rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_accuracy_is_the_same_on_every_device(device):
    tasks, outputs, targets = _scores()
    for task in tasks[:2]:
        expected = task.accuracy(outputs[task.name], targets[task.name])
        assert task.accuracy(outputs[task.name].to(device), targets[task.name].to(device)) == expected
        assert task.accuracy(outputs[task.name], targets[task.name].to(device)) == expected


def _data() -> TaskData:
    g = torch.Generator().manual_seed(0)
    return TaskData(
        torch.randn(30, 4, generator=g), {"a": torch.randn(30, generator=g), "b": torch.arange(30)}
    )


def test_subset_takes_an_index_on_another_device():
    data, index = _data(), torch.tensor([4, 0, 29, 4])
    got = data.subset(elsewhere(index))
    assert torch.equal(got.x, data.x[index]) and torch.equal(got.targets["b"], index)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("data_on", ["cpu", "device"])
def test_subset_with_an_index_on_any_device(device, data_on):
    data, index = _data(), torch.randperm(30, generator=torch.Generator().manual_seed(1))[:7]
    moved = data if data_on == "cpu" else data.to(device)
    got = moved.subset(index.to(device))
    assert got.x.device == moved.x.device
    assert torch.equal(got.x.cpu(), data.x[index]) and torch.equal(got.targets["b"].cpu(), index)


# ---------------------------------------------------------------------------------------------------------
# PCGrad's generator
# ---------------------------------------------------------------------------------------------------------


def _pcgrad_by_the_book(J: Tensor, orders: list[list[int]]) -> Tensor:
    """Algorithm 1 of Yu et al. (2020) on the rows, with the given order of the other tasks for each task."""
    rows = [J[i].double().cpu() for i in range(len(J))]
    total = torch.zeros_like(rows[0])
    for i, order in enumerate(orders):
        g = rows[i].clone()
        for j in order:
            if j != i and g @ rows[j] < 0:
                g -= (g @ rows[j]) / (rows[j] @ rows[j]) * rows[j]
        total += g
    return total


@pytest.mark.parametrize("device", DEVICES)
def test_pcgrad_draws_its_orders_from_a_generator_on_any_device(device):
    g = torch.Generator().manual_seed(3)
    J = torch.randn(4, 6, generator=g, dtype=torch.float64)
    J[1:] -= 0.8 * J[0]  # conflicts, so that the order matters
    twin = torch.Generator(device).manual_seed(5)
    orders = [torch.randperm(4, generator=twin, device=device).tolist() for _ in range(4)]
    got = PCGrad(torch.Generator(device).manual_seed(5))(J.to(device))
    assert got.device.type == device
    torch.testing.assert_close(got.cpu(), _pcgrad_by_the_book(J, orders), rtol=1e-10, atol=1e-12)


def test_pcgrad_refuses_what_is_not_a_generator():
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        PCGrad(0)  # a seed is not a generator


# ---------------------------------------------------------------------------------------------------------
# Aggregators under autocast; mtl_backward and GradScaler on each device
# ---------------------------------------------------------------------------------------------------------

AGGREGATORS = [Mean(), UPGrad(), MGDA(), PCGrad(), CAGrad(c=0.5), DualProj(), IMTLG(), NashMTL(), Random()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aggregator", AGGREGATORS, ids=repr)
def test_under_autocast_weights_and_direction_are_those_computed_in_float64(device, aggregator):
    low = torch.bfloat16 if device == "cpu" else torch.float16
    J = torch.randn(3, 200, generator=torch.Generator().manual_seed(0))
    J[1] -= 0.9 * J[0]
    J = J.to(device)
    J64 = J.double()
    with torch.autocast(device, enabled=False):  # the oracle: float64 weights, float64 w @ J
        if isinstance(aggregator, Random):
            aggregator.reset()
        w = aggregator.weights(J).double()
        expected = (w @ J64).float()
    if isinstance(aggregator, Random):
        aggregator.reset()
    with torch.autocast(device, dtype=low):
        got = aggregator(J)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6 * J.abs().max().item())


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 3)])

    def losses(self, x: Tensor, y: Tensor, c: Tensor) -> tuple[list[Tensor], Tensor]:
        features = self.trunk(x)
        return [
            F.mse_loss(self.heads[0](features).squeeze(1), y),
            F.cross_entropy(self.heads[1](features), c),
        ], (features)


def _batch(device: str) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y, c = (
        torch.randn(64, 6, generator=g),
        torch.randn(64, generator=g),
        torch.randint(0, 3, (64,), generator=g),
    )
    return x.to(device), y.to(device), c.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aggregator", [Mean(), UPGrad(), PCGrad()], ids=repr)
def test_mtl_backward_on_a_device_leaves_the_cpu_gradients(device, aggregator):
    grads = []
    for where in ("cpu", device):
        model = _TwoHeads().to(where)
        losses, features = model.losses(*_batch(where))
        torch.manual_seed(0)  # PCGrad's orders
        mtl_backward(
            losses,
            features,
            [list(h.parameters()) for h in model.heads],
            model.trunk.parameters(),
            aggregator,
        )
        assert all(p.grad.device.type == where for p in model.parameters())
        grads.append([p.grad.cpu() for p in model.parameters()])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aggregator", [Mean(), UPGrad()], ids=repr)
def test_gradscaler_skips_the_step_when_the_float16_backward_overflows(device, aggregator):
    model = _TwoHeads().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for scale, overflows in ((2.0**60, True), (2.0**4, False)):
        scaler = torch.amp.GradScaler(device, init_scale=scale)
        optimizer.zero_grad()
        with torch.autocast(device, dtype=torch.float16):
            losses, features = model.losses(*_batch(device))
        heads = [list(h.parameters()) for h in model.heads]
        mtl_backward(
            [scaler.scale(loss) for loss in losses], features, heads, model.trunk.parameters(), aggregator
        )
        scaler.step(optimizer)
        scaler.update()
        assert scaler.get_scale() == (scale / 2 if overflows else scale)
        moved = any(not torch.equal(p.detach(), p0) for p, p0 in zip(model.parameters(), before, strict=True))
        assert moved is not overflows
        assert all(math.isfinite(p.detach().abs().max().item()) for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------
# The exercise checkers, given a reader's function that computes elsewhere
# ---------------------------------------------------------------------------------------------------------


def test_checkers_accept_a_right_answer_returned_on_another_device(capsys):
    assert exercises.check_aggregator(lambda J: elsewhere(PCGrad()(J)), PCGrad(), trials=6)
    assert exercises.check_gradnorm_loss(
        lambda w, n, r, a: exercises.gradnorm_loss_reference(w, n, r, a).as_subclass(OnOtherDevice), trials=4
    )
    assert exercises.check_top_k_gate(
        lambda z, k: exercises.top_k_gate_reference(z, k).as_subclass(OnOtherDevice), trials=2
    )
    assert capsys.readouterr().out.count("✓") == 3


def test_checkers_report_a_wrong_answer_returned_on_another_device(capsys):
    assert not exercises.check_aggregator(lambda J: elsewhere(Mean()(J)), PCGrad(), m=3, trials=6)
    assert not exercises.check_top_k_gate(
        lambda z, k: torch.softmax(z, -1).as_subclass(OnOtherDevice), trials=2
    )
    out = capsys.readouterr().out
    assert "differs" in out and "expected" in out and "non-zero weights" in out


@pytest.mark.parametrize("device", DEVICES)
def test_checkers_take_a_reader_function_that_works_on_the_device(device):
    assert exercises.check_aggregator(lambda J: UPGrad()(J.to(device)), UPGrad(), trials=4)
    assert not exercises.check_aggregator(lambda J: Mean()(J.to(device)), UPGrad(), m=3, trials=4)
    assert exercises.check_top_k_gate(lambda z, k: exercises.top_k_gate_reference(z.to(device), k), trials=2)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
@pytest.mark.parametrize("aggregator", [Mean(), UPGrad(), MGDA()], ids=repr)
def test_mtl_backward_synchronises_with_the_gpu_at_most_twice(aggregator):
    """The weights are solved on the CPU: the Gramian goes there and the weights come back, nothing more."""
    model = _TwoHeads().to("cuda")
    losses, features = model.losses(*_batch("cuda"))
    heads = [list(h.parameters()) for h in model.heads]
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            mtl_backward(losses, features, heads, model.trunk.parameters(), aggregator)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 2, [str(w.message) for w in syncs]
