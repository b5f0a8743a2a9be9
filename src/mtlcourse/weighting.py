"""Loss weighting: how m task losses are turned into the one number that ``backward()`` sees.

Static weights, the initial-loss normalisation, inverse validation accuracy, uncertainty weighting
(Kendall et al. 2018), Dynamic Weight Average (Liu et al. 2019) and random loss weighting (Lin et al.
2022). Each one returns from ``backward`` the weights :math:`w_i` that multiplied the task losses on
that step. The stateful ones forget what they learned in :meth:`~mtlcourse.strategy.Strategy.reset`,
which ``fit`` calls at the start of every run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from mtlcourse.models import Features, MultiTaskNetwork
from mtlcourse.strategy import Strategy


class LossWeighting(Strategy):
    r"""A strategy that backpropagates :math:`\sum_i w_i L_i` for weights it chooses each step."""

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork) -> torch.Tensor:
        """The weights :math:`w` of this step, shape ``(m,)``."""
        raise NotImplementedError

    def backward(self, losses: torch.Tensor, model: MultiTaskNetwork, features: Features) -> torch.Tensor:
        w = self.weights(losses, model).to(losses)
        if w.shape != losses.shape:
            raise ValueError(f"{tuple(w.shape)} weights for {tuple(losses.shape)} task losses")
        (w @ losses).backward()
        return w.detach()


class StaticWeights(LossWeighting):
    r"""Fixed weights chosen by hand: :math:`L = \sum_i w_i L_i`.

    Parameters
    ----------
    weights
        One non-negative, finite weight per task, either in the model's task order or as a mapping
        task name -> weight.
    """

    def __init__(self, weights: Sequence[float] | Mapping[str, float]) -> None:
        values = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
        w = torch.as_tensor(values, dtype=torch.float64)
        if w.ndim != 1 or len(w) == 0:
            raise ValueError(f"weights must be a non-empty list of numbers, got {weights!r}")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be finite and non-negative, got {values}")
        self._names = list(weights) if isinstance(weights, Mapping) else None
        self._w = w

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork) -> torch.Tensor:
        if len(self._w) != len(losses):
            raise ValueError(f"{len(self._w)} weights were given for {len(losses)} tasks")
        if self._names is None:
            return self._w
        missing = set(model.task_names) ^ set(self._names)
        if missing:
            raise ValueError(f"weights name tasks {self._names}, the model has {model.task_names}")
        order = [self._names.index(name) for name in model.task_names]
        return self._w[order]

    def to(self, device: torch.device | str) -> StaticWeights:
        """Keep the weights on ``device`` (``fit`` calls this), so that a step does not copy them there."""
        self._w = self._w.to(device)
        return self

    def __repr__(self) -> str:
        names = self._names or range(len(self._w))
        return f"StaticWeights({dict(zip(names, self._w.tolist(), strict=True))})"


def equal_weights(m: int) -> StaticWeights:
    """Weight ``1/m`` on every task: the mean of the losses."""
    if m < 1:
        raise ValueError(f"need at least one task, got m={m}")
    return StaticWeights([1.0 / m] * m)


def _tasks_in(record: Mapping[str, float], prefixes: Sequence[str]) -> list[str]:
    """Task names that appear in a history row under any of ``prefixes``, in order of appearance."""
    names: dict[str, None] = {}
    for key in record:
        for prefix in prefixes:
            if key.startswith(prefix):
                names[key[len(prefix) :]] = None
    return list(names)


def _in_model_order(values: Mapping[str, float], model: MultiTaskNetwork, what: str) -> torch.Tensor:
    if set(values) != set(model.task_names):
        raise ValueError(f"{what} name tasks {list(values)}, the model has {model.task_names}")
    return torch.tensor([values[name] for name in model.task_names], dtype=torch.float64)


class InitialLossNormalisation(LossWeighting):
    r"""Divide each loss by its value on the first step: :math:`L = \sum_i L_i / L_i(0)`.

    The weights are :math:`w_i = 1 / L_i(0)`, where :math:`L_i(0)` is task :math:`i`'s (detached)
    loss on the first step this strategy sees since it was created or :meth:`reset` (with
    mini-batches: on the first batch; ``fit`` resets it at the start of every run). Every task then
    starts at a weighted loss of 1, so a task whose loss is large only because of its units (a squared
    error in square metres against a cross-entropy in nats) no longer dominates. This is the
    normalisation that GradNorm (Chen et al. 2018, ICML) uses for its loss ratios
    :math:`\tilde L_i(t) = L_i(t) / L_i(0)`, here without GradNorm's learned weights.

    The returned weights are :math:`1 / L_i(0)`, the same on every step. They do not sum to a fixed
    number: their scale is the inverse scale of the initial losses.

    Raises
    ------
    ValueError
        On the first step, if a task's loss is not positive and finite (it cannot be divided by).
    """

    def __init__(self) -> None:
        self.initial_losses: torch.Tensor | None = None

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork) -> torch.Tensor:
        if self.initial_losses is None:
            first = losses.detach().clone()
            for name, value in zip(model.task_names, first.tolist(), strict=True):
                if not (math.isfinite(value) and value > 0):
                    raise ValueError(
                        f"initial loss of task {name!r} is {value}: InitialLossNormalisation divides by "
                        "it, so it must be positive and finite"
                    )
            self.initial_losses = first
        if len(self.initial_losses) != len(losses):
            raise ValueError(f"{len(self.initial_losses)} initial losses are known, got {len(losses)} losses")
        return 1.0 / self.initial_losses

    def reset(self) -> None:
        """Forget the initial losses: the next step's losses become the new denominators."""
        self.initial_losses = None

    def __repr__(self) -> str:
        known = None if self.initial_losses is None else self.initial_losses.tolist()
        return f"InitialLossNormalisation(initial_losses={known})"


class InverseAccuracy(LossWeighting):
    r"""Weights inversely proportional to each task's validation score: good tasks get less weight.

    After each epoch, every task gets a score :math:`a_i \in [f, 1]`: its validation accuracy
    (``val_acc_<task>``) for a classification task, its coefficient of determination
    (``val_r2_<task>``) for a regression task, either one clipped to :math:`[f, 1]` with the floor
    :math:`f`. The weights of the next epoch are

    .. math::
        w_i = m \, \frac{1 / a_i}{\sum_j 1 / a_j},

    so they sum to :math:`m`: equal scores give every task weight 1, the plain sum of the losses.
    Before the first validation, every weight is 1.

    The floor is needed because :math:`R^2` is not a proportion: it is :math:`\le 0` for a model no
    better than predicting the mean (and early in training it is), where :math:`1 / a_i` would be
    infinite or negative. Clipping an accuracy to the floor only matters for one below it, and keeps
    an accuracy of 0 (possible early on with many classes) from dividing by zero.

    This is the rule of "dynamic weights inversely proportional to validation accuracy" of a
    newsletter post; it is a heuristic, not a method from a paper.

    Parameters
    ----------
    floor
        The smallest score :math:`f`, in (0, 1]; default 0.05 (a task's weight is then at most 20
        times another's).

    Raises
    ------
    ValueError
        In :meth:`end_epoch`, if the row lacks a task's validation score (``fit`` was called without
        validation data) or a score is NaN or an accuracy outside [0, 1].
    """

    def __init__(self, floor: float = 0.05) -> None:
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {floor}")
        self.floor = floor
        self.scores: dict[str, float] | None = None

    def end_epoch(self, record: Mapping[str, float]) -> None:
        names = _tasks_in(record, ("train_loss_", "val_loss_", "val_acc_", "val_r2_"))
        if not names:
            raise ValueError("the epoch record names no task (no train_loss_<task> or val_* entries)")
        scores = {}
        for name in names:
            if f"val_acc_{name}" in record:
                score = float(record[f"val_acc_{name}"])
                if not 0.0 <= score <= 1.0:
                    raise ValueError(f"validation accuracy of task {name!r} is {score}, not in [0, 1]")
            elif f"val_r2_{name}" in record:
                score = float(record[f"val_r2_{name}"])
                if math.isnan(score):
                    raise ValueError(f"validation R² of task {name!r} is NaN")
            else:
                raise ValueError(
                    f"no validation score for task {name!r} (val_acc_{name} or val_r2_{name}) in the "
                    "epoch record: InverseAccuracy needs fit(..., val=...)"
                )
            scores[name] = min(max(score, self.floor), 1.0)
        self.scores = scores

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork) -> torch.Tensor:
        if self.scores is None:
            return torch.ones(len(losses), dtype=torch.float64)
        inverse = 1.0 / _in_model_order(self.scores, model, "validation scores")
        return len(inverse) * inverse / inverse.sum()

    def reset(self) -> None:
        """Forget the validation scores: every weight is 1 again until the next :meth:`end_epoch`."""
        self.scores = None

    def __repr__(self) -> str:
        return f"InverseAccuracy(floor={self.floor})"


class UncertaintyWeighting(LossWeighting):
    r"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018, CVPR).

    Each task has a learnable log-variance :math:`s_i = \log \sigma_i^2` (initialised to ``init``),
    trained with the model, and the loss that is backpropagated is

    .. math::
        L = \sum_i \tfrac12 e^{-s_i} L_i + \tfrac12 s_i .

    This is the paper's regression form :math:`\frac{1}{2\sigma^2} L + \log \sigma` written with
    :math:`\log \sigma = \frac12 s`. The same form is used for classification tasks too: the paper's
    classification term :math:`\frac{1}{\sigma^2} L + \log\sigma` comes from an approximation, and
    most implementations (torchjd's ``UW`` included) treat every task alike.

    Many implementations (e.g. Gal's Keras example, ``yaringal/multi-task-learning-example``)
    minimise :math:`e^{-s_i} L_i + s_i` instead. That is exactly twice this loss: the minimiser in
    :math:`s` and the ratios between the task weights are the same, and every gradient is doubled,
    which under SGD is the same as doubling the learning rate and under Adam changes nothing but the
    effect of its :math:`\epsilon`. Their reported weights are :math:`e^{-s_i}`, twice ours.
    torchjd's ``torchjd.scalarization.UW`` (0.18) uses the ½ form of this class: same loss, same
    gradients, same minimiser.

    For fixed :math:`L_i > 0`, :math:`\partial L / \partial s_i = \frac12 (1 - e^{-s_i} L_i)`
    vanishes at :math:`s_i^* = \log L_i`, where the task's term is :math:`\frac12 (1 + \log L_i)`.
    So the total goes negative once the losses are small (:math:`L_i < 1/e`): the :math:`\frac12 s_i`
    term is unbounded below as :math:`\sigma_i \to 0` when :math:`L_i \to 0`. A negative total is
    not a bug; ``fit``'s ``train_total`` reports :math:`\sum_i w_i L_i` only, without the
    :math:`\frac12 s_i` terms.

    The returned weights are :math:`w_i = \frac12 e^{-s_i}` (detached), the factor each task's
    loss gradient is multiplied by; at the default initialisation they are ½ each.

    The log-variances are created on the CPU; ``fit`` moves them to the model's device (:meth:`to`)
    before it builds its optimiser, so that the optimiser finds every parameter on one device.

    Parameters
    ----------
    m
        Number of tasks.
    init
        Initial log-variance of every task; default 0 (:math:`\sigma_i^2 = 1`).
    """

    def __init__(self, m: int, init: float = 0.0) -> None:
        if m < 1:
            raise ValueError(f"need at least one task, got m={m}")
        if not math.isfinite(init):
            raise ValueError(f"init must be finite, got {init}")
        self.init = init
        self.log_variances = torch.nn.Parameter(torch.full((m,), float(init)))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_variances]

    def to(self, device: torch.device | str) -> UncertaintyWeighting:
        """Move the log-variances (and their gradient) to ``device``; as with ``nn.Module.to``, the
        parameter object stays the same."""
        p = self.log_variances
        p.data = p.data.to(device)
        if p.grad is not None:
            p.grad = p.grad.to(device)
        return self

    def reset(self) -> None:
        """Put every log-variance back to ``init`` (in place: the parameter object stays the same)."""
        with torch.no_grad():
            self.log_variances.fill_(self.init)
        self.log_variances.grad = None

    def loss(self, losses: torch.Tensor) -> torch.Tensor:
        r"""The combined loss :math:`\sum_i \frac12 e^{-s_i} L_i + \frac12 s_i` (differentiable)."""
        if losses.shape != self.log_variances.shape:
            raise ValueError(f"{len(self.log_variances)} log-variances for {len(losses)} task losses")
        s = self.log_variances.to(losses)
        return (0.5 * torch.exp(-s) * losses + 0.5 * s).sum()

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork) -> torch.Tensor:
        return (0.5 * torch.exp(-self.log_variances)).detach()

    def backward(self, losses: torch.Tensor, model: MultiTaskNetwork, features: Features) -> torch.Tensor:
        self.loss(losses).backward()
        return self.weights(losses, model)

    def __repr__(self) -> str:
        return f"UncertaintyWeighting(m={len(self.log_variances)}, init={self.init})"


class DWA(LossWeighting):
    r"""Dynamic Weight Average: a task whose loss falls slowly gains weight.

    Liu, Johns & Davison (2019), "End-to-End Multi-Task Learning with Attention", CVPR.

    In epoch :math:`t` every step uses the weights

    .. math::
        w_i(t) = m \, \frac{\exp(q_i(t-1) / T)}{\sum_j \exp(q_j(t-1) / T)}, \qquad
        q_i(t-1) = \frac{L_i(t-1)}{L_i(t-2)},

    where :math:`L_i(t)` is task :math:`i`'s epoch-mean *unweighted* training loss
    (``train_loss_<task>`` of the row ``fit`` passes to :meth:`end_epoch`) and :math:`T` the
    temperature. A task whose loss fell least (largest ratio) gets the most weight. The weights sum
    to :math:`m`; they are 1 each in the first two epochs, before two epoch losses are known, and
    constant within an epoch.

    Note on torchjd's ``torchjd.scalarization.DWA``: same formula, same warm-up, but it averages the
    batch losses it is called with, each batch counting once, whereas ``fit``'s ``train_loss_<task>``
    weights each batch by its number of rows. The two coincide with full batches or equal-sized
    batches and differ slightly when the last batch is smaller. torchjd also takes losses of a
    constant negative sign; this class refuses non-positive epoch losses.

    Parameters
    ----------
    temperature
        :math:`T > 0`; the paper uses 2. A larger :math:`T` makes the weights more uniform.

    Raises
    ------
    ValueError
        In :meth:`end_epoch`, if an epoch loss is not positive and finite (the ratios need it).
    """

    def __init__(self, temperature: float = 2.0) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be positive and finite, got {temperature}")
        self.temperature = temperature
        self.epoch_losses: list[dict[str, float]] = []

    def end_epoch(self, record: Mapping[str, float]) -> None:
        names = _tasks_in(record, ("train_loss_",))
        if not names:
            raise ValueError("the epoch record has no train_loss_<task> entry: DWA needs the training losses")
        losses = {name: float(record[f"train_loss_{name}"]) for name in names}
        for name, value in losses.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"epoch training loss of task {name!r} is {value}: DWA's loss ratios need positive, "
                    "finite losses"
                )
        self.epoch_losses = [*self.epoch_losses, losses][-2:]

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork) -> torch.Tensor:
        if len(self.epoch_losses) < 2:
            return torch.ones(len(losses), dtype=torch.float64)
        older, newer = (_in_model_order(e, model, "epoch losses") for e in self.epoch_losses)
        return len(newer) * torch.softmax(newer / older / self.temperature, dim=0)

    def reset(self) -> None:
        """Forget the recorded epoch losses: the next two epochs use weight 1 again."""
        self.epoch_losses = []

    def __repr__(self) -> str:
        return f"DWA(temperature={self.temperature})"


class RandomWeighting(LossWeighting):
    r"""Random loss weighting (RLW): fresh random weights on the simplex at every step.

    Lin, Ye, Zhang & Tsang (2022), "Reasonable Effectiveness of Random Weighting: A Litmus Test
    for Multi-Task Learning", TMLR (Algorithm 2, https://arxiv.org/abs/2111.10603). Each step draws
    :math:`\lambda \sim \mathcal N(0, I_m)` and backpropagates

    .. math::
        L = \sum_i w_i L_i, \qquad w = \operatorname{softmax}(\lambda),

    so the weights are positive and sum to 1. In expectation every task gets the same weight
    :math:`1/m`; the paper's point is that this baseline is hard to beat, which makes it a litmus test for
    any method that claims to balance tasks.

    The draws come from this strategy's own ``torch.Generator`` seeded with ``seed`` (on the CPU, in the
    losses' dtype, then moved to their device), not from the global random state: the weights do not
    depend on what else draws random numbers, and :meth:`reset` (called by ``fit`` at the start of every
    run) re-seeds it, so two runs see the same sequence of weights. With the same seed, the sequence equals
    that of ``torchjd.scalarization.Random`` (0.18) and LibMTL's ``RLW`` after ``torch.manual_seed(seed)``
    on the CPU, which draw from the global generator.

    Parameters
    ----------
    seed
        Seed of the weights' generator.
    """

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork) -> torch.Tensor:
        dtype = losses.dtype if losses.is_floating_point() else torch.get_default_dtype()
        draw = torch.randn(len(losses), generator=self.generator, dtype=dtype)
        return torch.softmax(draw, dim=0).to(losses.device)

    def reset(self) -> None:
        """Re-seed the generator: the next steps see the same weights as a fresh instance."""
        self.generator.manual_seed(self.seed)

    def __repr__(self) -> str:
        return f"RandomWeighting(seed={self.seed})"
