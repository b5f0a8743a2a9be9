import io
import sys
import types
import warnings

import pytest
import torch
import tqdm.notebook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

from mtlcourse import training
from mtlcourse.aggregation import UPGrad
from mtlcourse.data import TaskData, regression_classification
from mtlcourse.famo import FAMO
from mtlcourse.models import MultiTaskModel, hard_sharing_mlp, r_post_model
from mtlcourse.strategy import JacobianDescent, Strategy
from mtlcourse.tasks import Task
from mtlcourse.training import fit, predict, task_losses
from mtlcourse.weighting import StaticWeights, UncertaintyWeighting, equal_weights

TASKS = [Task("regression", "regression"), Task("classification", "binary")]


@pytest.fixture(scope="module")
def splits():
    return regression_classification(n=300, seed=0)


def _model(seed=0):
    torch.manual_seed(seed)
    return r_post_model()


def test_fit_reduces_both_task_losses(splits):
    history = fit(_model(), TASKS, splits.train, splits.val, epochs=60, lr=0.01)
    first, last = history.iloc[0], history.iloc[-1]
    for name in ("regression", "classification"):
        assert last[f"train_loss_{name}"] < 0.5 * first[f"train_loss_{name}"]
        assert last[f"val_loss_{name}"] < first[f"val_loss_{name}"]
    assert len(history) == 60


def test_full_batch_train_total_is_the_weighted_sum_before_the_step(splits):
    model = _model()
    with torch.no_grad():
        losses, _, _ = task_losses(model, TASKS, splits.train.x, splits.train.targets)
    history = fit(model, TASKS, splits.train, strategy=StaticWeights([0.3, 0.7]), epochs=1)
    assert history.loc[0, "train_total"] == pytest.approx(
        (0.3 * losses[0] + 0.7 * losses[1]).item(), rel=1e-6
    )
    assert history.loc[0, "weight_regression"] == pytest.approx(0.3)


def test_mini_batches_are_reproducible_with_the_seed(splits):
    a = fit(_model(), TASKS, splits.train, epochs=3, batch_size=32, seed=5)
    b = fit(_model(), TASKS, splits.train, epochs=3, batch_size=32, seed=5)
    c = fit(_model(), TASKS, splits.train, epochs=3, batch_size=32, seed=6)
    assert a.equals(b)
    assert not a.equals(c)


def test_early_stopping_restores_the_best_epoch():
    train = regression_classification(n=300, seed=0).train
    # validation targets that disagree with the training ones: validation loss rises as training fits
    val = TaskData(
        train.x,
        {"regression": -train.targets["regression"], "classification": 1 - train.targets["classification"]},
    )
    model = _model()
    history = fit(model, TASKS, train, val, epochs=200, lr=0.05, patience=5, select="weighted")
    best = history.attrs["best_epoch"]
    assert len(history) == best + 5 < 200
    with torch.no_grad():
        losses, _, _ = task_losses(model.eval(), TASKS, val.x, val.targets)
    assert (0.5 * losses.sum()).item() == pytest.approx(history.loc[best - 1, "val_total"], rel=1e-5)


def test_weight_decay_shrinks_the_weights(splits):
    free, decayed = _model(), _model()
    fit(free, TASKS, splits.train, epochs=50)
    fit(decayed, TASKS, splits.train, epochs=50, weight_decay=0.5)
    norm = lambda m: torch.cat([p.flatten() for p in m.parameters()]).norm()  # noqa: E731
    assert norm(decayed) < 0.8 * norm(free)


class _Huge(Strategy):
    """Writes a gradient of norm 1e6 into every parameter."""

    def backward(self, losses, model, features):
        for p in model.parameters():
            p.grad = torch.full_like(p, 1e6)
        return torch.ones(len(losses))


def test_clipping_bounds_the_step(splits):
    model = _model()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    sgd = lambda groups: torch.optim.SGD(groups, lr=1.0)  # noqa: E731
    fit(model, TASKS, splits.train, strategy=_Huge(), epochs=1, optimizer=sgd, clip_grad_norm=1.0)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(1.0, rel=1e-4)


class _Learnable(Strategy):
    def __init__(self):
        self.s = torch.nn.Parameter(torch.zeros(2))

    def backward(self, losses, model, features):
        (torch.softmax(self.s, 0) @ losses).backward()
        return torch.softmax(self.s, 0).detach()

    def parameters(self):
        return [self.s]


def test_a_strategy_s_own_parameters_are_optimised(splits):
    strategy = _Learnable()
    fit(_model(), TASKS, splits.train, strategy=strategy, epochs=3)
    assert not torch.equal(strategy.s.detach(), torch.zeros(2))


def test_log_lines_are_printed_for_the_requested_epochs(splits, capsys):
    fit(_model(), TASKS, splits.train, splits.val, epochs=4, log_epochs=(1, 4))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("|")[0].strip() for line in lines] == ["Epoch   1", "Epoch   4"]
    assert "val acc classification" in lines[0]


def test_predict_runs_on_every_row_in_eval_mode(splits):
    model = _model()
    outputs = predict(model, splits.test)
    assert outputs["regression"].shape == (len(splits.test),)
    assert model.training


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            [Task("classification", "binary"), Task("regression", "regression")],
            "do not match the model's heads",
        ),
        ([Task("regression", "regression"), Task("class", "binary")], "do not match the model's heads"),
        ([], "at least one task"),
    ],
)
def test_tasks_must_match_the_heads(splits, tasks, message):
    with pytest.raises(ValueError, match=message):
        fit(_model(), tasks, splits.train, epochs=1)


def test_unknown_task_in_the_data_is_named(splits):
    model = hard_sharing_mlp(5, [4], {"regression": 1, "other": 1})
    tasks = [Task("regression", "regression"), Task("other", "regression")]
    with pytest.raises(ValueError, match=r"no target for task\(s\) \['other'\]"):
        fit(model, tasks, splits.train, epochs=1)


def test_a_non_finite_loss_stops_training_with_the_task_named(splits):
    model = _model()
    with torch.no_grad():
        model.heads["regression"].bias.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"\['regression'\].*epoch 1"):
        fit(model, TASKS, splits.train, epochs=1)


class _Poison(StaticWeights):
    """Equal weights that set the regression head's bias to inf after the run's step number ``at``."""

    def __init__(self, model, at: int) -> None:
        super().__init__([0.5, 0.5])
        self.model, self.at, self.steps = model, at, 0

    def after_step(self, losses_after_step) -> None:
        self.steps += 1
        if self.steps == self.at:
            with torch.no_grad():
                self.model.heads["regression"].bias.fill_(float("inf"))


def test_a_loss_that_goes_non_finite_within_an_epoch_is_named_with_that_epoch(splits):
    """Four steps an epoch, poisoned after the sixth: on the seventh only the regression loss is inf, on the
    eighth every loss is NaN (the trunk took a NaN step). The error names the first, at the epoch's end."""
    model = _model()
    strategy = _Poison(model, at=6)
    batch = -(-len(splits.train) // 4)
    with pytest.raises(FloatingPointError, match=r"task\(s\) \['regression'\] is not finite at epoch 2"):
        fit(model, TASKS, splits.train, strategy=strategy, epochs=3, batch_size=batch)
    assert strategy.steps == 8


def test_a_strategy_that_fails_on_a_non_finite_loss_gets_fit_s_error(splits):
    model = _model()
    with torch.no_grad():
        model.heads["regression"].bias.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"\['regression'\].*epoch 1") as caught:
        fit(model, TASKS, splits.train, strategy=FAMO(2), epochs=1)
    assert isinstance(caught.value.__context__, ValueError)  # FAMO's own refusal, kept in the chain


def test_early_stopping_without_validation_is_refused(splits):
    with pytest.raises(ValueError, match="needs validation"):
        fit(_model(), TASKS, splits.train, epochs=1, patience=3)


def test_normalised_score_divides_each_validation_loss_by_its_value_before_training(splits):
    model = _model()
    with torch.no_grad():
        before, _, _ = task_losses(model.eval(), TASKS, splits.val.x, splits.val.targets)
    history = fit(model, TASKS, splits.train, splits.val, epochs=5)
    expected = sum(history[f"val_loss_{t.name}"] / v0.item() for t, v0 in zip(TASKS, before, strict=True))
    assert history["val_score"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-6)
    assert history.attrs["select"] == "normalized"
    assert history.attrs["best_epoch"] == history.loc[history["val_score"].idxmin(), "epoch"]


def test_weighted_selection_uses_the_strategys_weighted_validation_loss(splits):
    history = fit(
        _model(),
        TASKS,
        splits.train,
        splits.val,
        strategy=StaticWeights([0.9, 0.1]),
        epochs=40,
        lr=0.05,
        select="weighted",
    )
    assert history.attrs["best_epoch"] == history.loc[history["val_total"].idxmin(), "epoch"]


def test_selection_on_named_tasks_ignores_the_others(splits):
    """With select=[task], the score is that task's normalised validation loss alone: the other task's
    losses do not move the best epoch (checked against the history's own columns)."""
    model = _model()
    with torch.no_grad():
        before, _, _ = task_losses(model.eval(), TASKS, splits.val.x, splits.val.targets)
    history = fit(model, TASKS, splits.train, splits.val, epochs=30, lr=0.05, select=["classification"])
    expected = history["val_loss_classification"] / before[1].item()
    assert history["val_score"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-6)
    assert history.attrs["select"] == ("classification",)
    assert history.attrs["best_epoch"] == history.loc[history["val_loss_classification"].idxmin(), "epoch"]


@pytest.mark.parametrize("select", [[], ["regression", "regression"], ["other"]])
def test_selection_must_name_distinct_known_tasks(splits, select):
    with pytest.raises(ValueError, match="select must name distinct tasks"):
        fit(_model(), TASKS, splits.train, splits.val, epochs=1, select=select)


def test_unknown_selection_is_refused(splits):
    with pytest.raises(ValueError, match="select"):
        fit(_model(), TASKS, splits.train, splits.val, epochs=1, select="val_total")


def test_fit_resets_the_strategy_at_the_start_of_each_run(splits):
    class Counting(StaticWeights):
        resets = 0

        def reset(self):
            Counting.resets += 1

    strategy = Counting([0.5, 0.5])
    fit(_model(), TASKS, splits.train, epochs=1, strategy=strategy)
    fit(_model(), TASKS, splits.train, epochs=1, strategy=strategy)
    assert Counting.resets == 2


class _Penalised(MultiTaskModel):
    """Hard sharing with a penalty c * ||W||^2 on the first trunk layer's weight."""

    def __init__(self, c: float) -> None:
        base = r_post_model()
        super().__init__(base.trunk, dict(base.heads))
        self.c = c

    def penalty(self) -> torch.Tensor:
        return self.c * self.trunk[0].weight.pow(2).sum()


def test_fit_adds_the_penalty_gradient_with_weight_one_and_records_its_value(splits):
    torch.manual_seed(0)
    model = _Penalised(c=0.3)
    W = model.trunk[0].weight.detach().clone()
    with torch.no_grad():
        value = 0.3 * W.pow(2).sum().item()
    losses, _, _ = task_losses(model, TASKS, splits.train.x, splits.train.targets)
    (loss_grad,) = torch.autograd.grad(0.5 * losses.sum(), model.trunk[0].weight)
    sgd = lambda groups: torch.optim.SGD(groups, lr=0.1)  # noqa: E731
    history = fit(model, TASKS, splits.train, epochs=1, optimizer=sgd)
    # closed form: d/dW of c ||W||^2 is 2 c W
    torch.testing.assert_close(model.trunk[0].weight.detach(), W - 0.1 * (loss_grad + 2 * 0.3 * W))
    assert history.loc[0, "train_penalty"] == pytest.approx(value, rel=1e-6)


def test_no_penalty_column_for_a_model_without_penalty(splits):
    assert "train_penalty" not in fit(_model(), TASKS, splits.train, epochs=1)


# Progress bars: which tqdm class fit picks. Both classes are replaced by recorders, so nothing is drawn.


class _BarRecorder:
    """Stands in for a tqdm class: records each bar made, and iterates like the bare iterable."""

    def __init__(self):
        self.bars = []

    def __call__(self, iterable, **kwargs):
        self.bars.append(list(iterable))
        return iterable


@pytest.fixture
def bars(monkeypatch):
    """The text and the widget bar classes as recorders, ipywidgets "installed", the variable unset."""
    text, widget = _BarRecorder(), _BarRecorder()
    monkeypatch.setattr(training, "tqdm", text)
    monkeypatch.setattr(tqdm.notebook, "tqdm", widget)
    monkeypatch.setattr(tqdm.notebook, "IProgress", object)
    monkeypatch.delenv(training.NO_PROGRESS, raising=False)
    return {"text": text, "widget": widget}


@pytest.fixture
def kernel(monkeypatch):
    """A simulated Jupyter kernel: IPython's shell has a kernel, as in a notebook or Colab."""
    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _made(bars):
    return {kind: len(recorder.bars) for kind, recorder in bars.items()}


def test_a_kernel_gets_the_notebook_bar_over_every_epoch(splits, bars, kernel):
    fit(_model(), TASKS, splits.train, epochs=3)
    assert bars["widget"].bars == [[1, 2, 3]]
    assert bars["text"].bars == []


def test_a_kernel_without_ipywidgets_gets_the_text_bar(splits, bars, kernel, monkeypatch):
    monkeypatch.setattr(tqdm.notebook, "IProgress", None)
    fit(_model(), TASKS, splits.train, epochs=2)
    assert _made(bars) == {"text": 1, "widget": 0}


def test_a_terminal_gets_the_text_bar_and_a_pipe_none(splits, bars, monkeypatch):
    fit(_model(), TASKS, splits.train, epochs=2)  # pytest's captured stderr is not a terminal
    assert _made(bars) == {"text": 0, "widget": 0}
    monkeypatch.setattr(sys, "stderr", _Terminal())
    fit(_model(), TASKS, splits.train, epochs=2)
    assert _made(bars) == {"text": 1, "widget": 0}


@pytest.mark.parametrize("value", ["1", "yes"])
def test_the_variable_turns_the_default_bar_off(splits, bars, kernel, monkeypatch, value):
    monkeypatch.setenv(training.NO_PROGRESS, value)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    fit(_model(), TASKS, splits.train, epochs=2)
    assert _made(bars) == {"text": 0, "widget": 0}


def test_an_empty_variable_does_not(splits, bars, kernel, monkeypatch):
    monkeypatch.setenv(training.NO_PROGRESS, "")
    fit(_model(), TASKS, splits.train, epochs=2)
    assert _made(bars) == {"text": 0, "widget": 1}


def test_an_explicit_progress_wins(splits, bars, kernel, monkeypatch):
    monkeypatch.setenv(training.NO_PROGRESS, "1")
    fit(_model(), TASKS, splits.train, epochs=2, progress=True)
    assert _made(bars) == {"text": 0, "widget": 1}
    monkeypatch.delenv(training.NO_PROGRESS)
    fit(_model(), TASKS, splits.train, epochs=2, progress=False)
    assert _made(bars) == {"text": 0, "widget": 1}


def test_an_explicit_bar_outside_a_kernel_is_the_text_bar(splits, bars):
    fit(_model(), TASKS, splits.train, epochs=2, progress=True)
    assert _made(bars) == {"text": 1, "widget": 0}


def test_importing_ipykernel_alone_is_not_a_kernel(bars, monkeypatch):
    # nbval's pytest plugin imports ipykernel into pytest's own process, where no kernel runs
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert not training._in_jupyter_kernel()


def test_the_real_text_bar_draws_on_stderr_and_leaves_stdout_alone(splits, capsys):
    fit(_model(), TASKS, splits.train, epochs=2, progress=True)
    captured = capsys.readouterr()
    assert "epochs" in captured.err
    assert captured.out == ""


# --- Jacobian methods get one loss per task ------------------------------------------------------------


def _head_backward_counter(model):
    calls = {name: 0 for name in model.heads}

    def count(name):
        def hook(module, grad_input, grad_output):
            calls[name] += 1

        return hook

    for name, head in model.heads.items():
        head.register_full_backward_hook(count(name))
    return calls


def test_fit_hands_a_jacobian_method_one_loss_per_task_so_each_head_runs_once_per_step():
    from mtlcourse.aggregation import UPGrad
    from mtlcourse.strategy import JacobianDescent

    data = regression_classification(n=100, seed=0).train
    tasks = [Task("regression", "regression"), Task("classification", "binary")]
    torch.manual_seed(0)
    model = hard_sharing_mlp(5, [8], {"regression": 1, "classification": 1})
    calls = _head_backward_counter(model)
    fit(model, tasks, data, strategy=JacobianDescent(UPGrad()), epochs=3, batch_size=50, progress=False)
    assert calls == {"regression": 6, "classification": 6}  # 2 steps an epoch × 3 epochs, once each
    # the stacked vector instead: each of its entries reaches both heads, twice the passes
    calls.update(dict.fromkeys(calls, 0))
    losses, _, features = task_losses(model, tasks, data.x, data.targets)
    JacobianDescent(UPGrad()).backward(losses, model, features)
    assert calls == {"regression": 2, "classification": 2}


def test_the_separate_losses_and_their_stacked_vector_give_bit_identical_gradients():
    from mtlcourse.aggregation import UPGrad
    from mtlcourse.strategy import JacobianDescent

    data = regression_classification(n=100, seed=0).train
    tasks = [Task("regression", "regression"), Task("classification", "binary")]
    torch.manual_seed(0)
    model = hard_sharing_mlp(5, [8, 8], {"regression": 1, "classification": 1})
    grads = []
    for separate in (False, True):
        model.zero_grad()
        parts, _, features = training._separate_task_losses(model, tasks, data.x, data.targets)
        JacobianDescent(UPGrad()).backward(parts if separate else torch.stack(parts), model, features)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


# ---------------------------------------------------------------------------------------------------------
# Synchronisation with the device: a step should not wait for values from a GPU
# ---------------------------------------------------------------------------------------------------------

CUDA = torch.cuda.is_available()
_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}


class _DeviceReads(TorchDispatchMode):
    """Counts, on the CPU, what would be synchronisations with a GPU: reads on the host of device values.

    The device values are ``sources`` (the model's parameters, the data) and the result of any operation on
    one of them. A read is ``.item()``, ``bool()`` or ``float()`` (``aten._local_scalar_dense``),
    ``nonzero`` (a shape that depends on the values), ``.tolist()`` or ``.numpy()`` of a device value, and
    every ``.cpu()``. Host-side arithmetic (an aggregator's numpy solve once the Gramian is on the host, an
    optimiser's step counters) reads nothing back and is not counted. Copies *to* the device are not seen.
    """

    def __init__(self, sources) -> None:
        super().__init__()
        self.on_device = WeakTensorKeyDictionary()
        for t in sources:
            self.on_device[t] = True
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        from_device = any(t in self.on_device for t in tensors)
        self.reads += from_device and func in _READS
        out = func(*args, **kwargs)
        if from_device:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.on_device[t] = True
        return out

    def counting(self, name: str):
        """``torch.Tensor``'s method ``name``, counting its calls on device values (``cpu``: every call)."""
        method = getattr(torch.Tensor, name)

        def counted(tensor, *args, **kwargs):
            self.reads += name == "cpu" or tensor in self.on_device
            return method(tensor, *args, **kwargs)

        return counted


def _fit_in_steps(model, strategy, steps: int) -> None:
    """One epoch of ``steps`` mini-batches on the R post's data, with SGD (Adam reads its step counters with
    ``.item()``: CPU tensors even for a model on a GPU, which ``_DeviceReads`` could not tell apart)."""
    data = regression_classification(n=200, seed=0).train
    sgd = lambda groups: torch.optim.SGD(groups, lr=0.01)  # noqa: E731
    fit(model, TASKS, data, strategy=strategy, epochs=1, batch_size=-(-len(data) // steps), optimizer=sgd)


def _reads_per_step(make, monkeypatch) -> float:
    """Device reads of a step: an epoch of 8 steps minus one of 2, over 6 (the per-epoch reads cancel)."""
    counts = []
    for steps in (2, 8):
        model, strategy = _model(), make()
        data = regression_classification(n=200, seed=0).train
        mode = _DeviceReads([*model.parameters(), data.x, *data.targets.values(), *strategy.parameters()])
        with monkeypatch.context() as patch:
            for name in ("cpu", "numpy", "tolist"):
                patch.setattr(torch.Tensor, name, mode.counting(name))
            with mode:
                _fit_in_steps(model, strategy, steps)
        counts.append(mode.reads)
    return (counts[1] - counts[0]) / 6


class _Peeking(StaticWeights):
    """Equal weights that read a loss back at every step, as a per-step log line would."""

    def weights(self, losses, model):
        self.last = losses[0].item()
        return super().weights(losses, model)


def test_the_device_read_counter_sees_one_read_a_step(monkeypatch):
    peeking = _reads_per_step(lambda: _Peeking([0.5, 0.5]), monkeypatch)
    assert peeking - _reads_per_step(lambda: equal_weights(2), monkeypatch) == 1


STRATEGIES = {
    "equal": (lambda: equal_weights(2), 0),
    "uncertainty": (lambda: UncertaintyWeighting(2), 0),
    "upgrad": (lambda: JacobianDescent(UPGrad()), 1),  # the Gramian, to the host for the solve
}


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_training_step_reads_from_the_device_only_what_the_strategy_needs(name, monkeypatch):
    make, budget = STRATEGIES[name]
    assert _reads_per_step(make, monkeypatch) <= budget


class _Recording(UncertaintyWeighting):
    def __init__(self, calls: list) -> None:
        super().__init__(2)
        self.calls = calls

    def to(self, device):
        self.calls.append(("to", torch.device(device)))
        return super().to(device)


def test_fit_puts_the_strategy_on_the_models_device_before_building_the_optimiser(splits):
    calls: list = []

    def adam(groups):
        calls.append(("optimizer", {p.device for group in groups for p in group["params"]}))
        return torch.optim.Adam(groups)

    fit(_model(), TASKS, splits.train, strategy=_Recording(calls), optimizer=adam, epochs=1)
    cpu = torch.device("cpu")
    assert calls == [("to", cpu), ("optimizer", {cpu})]


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
@pytest.mark.parametrize("name", STRATEGIES)
def test_on_cuda_a_training_step_synchronises_at_most_twice(name):
    """Counted by CUDA (``set_sync_debug_mode``), copies to the device included: for UPGrad the Gramian
    goes to the host and the weights come back (see ``test_devices``); the other two need nothing."""
    make, _ = STRATEGIES[name]

    def syncs(steps: int) -> int:
        model, strategy = _model().to("cuda"), make()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                _fit_in_steps(model, strategy, steps)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(8)  # the first run initialises CUDA's libraries
    assert (syncs(8) - syncs(2)) / 6 <= 2


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_on_cuda_uncertainty_weighting_trains_its_log_variances_there(splits):
    strategy = UncertaintyWeighting(2)
    parameter = strategy.log_variances
    fit(_model().to("cuda"), TASKS, splits.train, strategy=strategy, epochs=3)
    assert strategy.log_variances is parameter and parameter.device.type == "cuda"
    assert (parameter.detach().cpu() != 0).all()
