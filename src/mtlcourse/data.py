"""Data sets of the course: what each multi-task model learns from.

Every builder is seeded, returns tensors and splits them into train / validation / test
:class:`TaskData` so that the training loop never needs to know where the data came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TaskData:
    """Inputs and one target tensor per task, all with the same number of rows.

    Parameters
    ----------
    x
        Inputs, shape ``(N, ...)``.
    targets
        Task name -> target tensor of shape ``(N, ...)``.
    """

    x: torch.Tensor
    targets: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("TaskData needs at least one task target")
        n = len(self.x)
        for name, y in self.targets.items():
            if len(y) != n:
                raise ValueError(f"target {name!r} has {len(y)} rows but x has {n}")
            if y.is_floating_point() and not torch.isfinite(y).all():
                raise ValueError(f"target {name!r} contains NaN or infinite values")
        if not torch.isfinite(self.x).all():
            raise ValueError("x contains NaN or infinite values")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def task_names(self) -> list[str]:
        """Task names, in the order the targets were given."""
        return list(self.targets)

    def subset(self, index: torch.Tensor) -> TaskData:
        """Rows ``index`` of the inputs and of every target.

        A tensor ``index`` may sit on another device than the data (e.g. a permutation drawn on the GPU for
        data kept on the CPU): it is moved to the data's device first, as indexing requires.
        """

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t[index.to(t.device)] if isinstance(index, torch.Tensor) else t[index]

        return TaskData(rows(self.x), {k: rows(v) for k, v in self.targets.items()})

    def to(self, device: torch.device | str) -> TaskData:
        """A copy with every tensor on ``device``."""
        return TaskData(self.x.to(device), {k: v.to(device) for k, v in self.targets.items()})


@dataclass(frozen=True)
class Splits:
    """The three splits of one data set."""

    train: TaskData
    val: TaskData
    test: TaskData

    def to(self, device: torch.device | str) -> Splits:
        """A copy with every split on ``device``."""
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device))


def regression_classification(
    n: int = 1000,
    *,
    seed: int = 123,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    nonlinear: bool = False,
) -> Splits:
    r"""The data of the R post "Multi-Task Learning with torch in R" (2025).

    Five standard-normal features :math:`x_1, \dots, x_5` and two targets:

    - ``regression``: :math:`0.7 x_1 + 0.3 x_2 - 0.5 x_3 + 0.2 \varepsilon`, with
      :math:`\varepsilon \sim \mathcal N(0, 1)`;
    - ``classification``: :math:`\mathbb 1[0.8 x_1 - 0.4 x_4 + 0.6 x_5 > 0]` — a *linear* rule, although
      the post calls it nonlinear. With ``nonlinear=True`` it is instead
      :math:`\mathbb 1[x_1^2 + x_4^2 < 2\ln 2]`, a disc that holds half of the points
      (:math:`x_1^2 + x_4^2 \sim \chi^2_2`, whose median is :math:`2 \ln 2`).

    As in the post, the first ``1 - test_fraction`` of the rows are for training and the rest for
    testing; then a random ``val_fraction`` of the training rows is held out for validation.

    Parameters
    ----------
    n
        Number of rows in all.
    seed
        Seed of the generator that draws features, noise and the validation rows.
    test_fraction, val_fraction
        Fractions described above, each in (0, 1).
    nonlinear
        Replace the linear classification rule by the disc described above.

    Returns
    -------
    Splits
        ``train``, ``val`` and ``test``; ``x`` is float32 ``(N, 5)``, each target float32 ``(N,)``.
    """
    if n < 10:
        raise ValueError(f"n must be at least 10, got {n}")
    for name, frac in [("test_fraction", test_fraction), ("val_fraction", val_fraction)]:
        if not 0 < frac < 1:
            raise ValueError(f"{name} must lie in (0, 1), got {frac}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    noise = torch.randn(n, generator=gen)
    y_reg = 0.7 * x[:, 0] + 0.3 * x[:, 1] - 0.5 * x[:, 2] + 0.2 * noise
    if nonlinear:
        y_cls = (x[:, 0] ** 2 + x[:, 3] ** 2 < 2 * math.log(2)).float()
    else:
        y_cls = (0.8 * x[:, 0] - 0.4 * x[:, 3] + 0.6 * x[:, 4] > 0).float()
    data = TaskData(x, {"regression": y_reg, "classification": y_cls})

    n_train = round((1 - test_fraction) * n)
    perm = torch.randperm(n_train, generator=gen)
    n_val = round(val_fraction * n_train)
    return Splits(
        train=data.subset(perm[n_val:].sort().values),
        val=data.subset(perm[:n_val].sort().values),
        test=data.subset(torch.arange(n_train, n)),
    )


def sin_cos(
    n_train: int = 1000,
    n_val: int = 250,
    n_test: int = 500,
    *,
    seed: int = 0,
    low: float = -2 * math.pi,
    high: float = 2 * math.pi,
    cos_scale: float = 1.0,
    noise: float = 0.0,
) -> Splits:
    r"""One real input, two targets: :math:`\sin x` and :math:`c \cos x`.

    The inputs are drawn uniformly from ``[low, high]``, by default :math:`[-2\pi, 2\pi]`: two full
    periods, so a network must learn each curve's whole shape, and the two targets are shifted copies
    of each other (:math:`\cos x = \sin(x + \pi/2)`) — related tasks that a shared trunk can serve.

    Parameters
    ----------
    n_train, n_val, n_test
        Rows in each split, all drawn independently from the same interval.
    seed
        Seed of the generator that draws inputs and noise.
    low, high
        The interval of the inputs.
    cos_scale
        The factor :math:`c` of the cosine target: ``10`` makes its loss about 100 times the sine's,
        the loss-scale mismatch that motivates loss weighting.
    noise
        Standard deviation of Gaussian noise added to both targets.

    Returns
    -------
    Splits
        ``x`` is float32 ``(N, 1)``; targets ``"sin"`` and ``"cos"`` are float32 ``(N,)``.
    """
    if not low < high:
        raise ValueError(f"need low < high, got [{low}, {high}]")
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"every split needs at least one row, got {n_train}, {n_val}, {n_test}")
    if noise < 0:
        raise ValueError(f"noise must be a non-negative standard deviation, got {noise}")
    gen = torch.Generator().manual_seed(seed)

    def draw(n: int) -> TaskData:
        x = low + (high - low) * torch.rand(n, 1, generator=gen)
        sin = torch.sin(x[:, 0]) + noise * torch.randn(n, generator=gen)
        cos = cos_scale * torch.cos(x[:, 0]) + noise * torch.randn(n, generator=gen)
        return TaskData(x, {"sin": sin, "cos": cos})

    return Splits(train=draw(n_train), val=draw(n_val), test=draw(n_test))


def gradnorm_synthetic(
    n_train: int = 1000,
    n_val: int = 250,
    n_test: int = 500,
    *,
    sigmas: tuple[float, ...] = (1.0, 100.0),
    seed: int = 0,
    in_features: int = 250,
    out_features: int = 100,
    b_std: float = 10.0,
    eps_std: float = 3.5,
    input_scale: float | None = None,
) -> Splits:
    r"""The synthetic regressions of GradNorm (Chen et al. 2018, ICML, Sec. 4): same function, other scales.

    Task :math:`i` is the regression :math:`f_i(u) = \sigma_i \tanh\bigl((B + \varepsilon_i)\, u\bigr)`,
    with :math:`B` and :math:`\varepsilon_i` constant ``(out_features, in_features)`` matrices of i.i.d.
    entries :math:`\mathcal N(0, 10^2)` and :math:`\mathcal N(0, 3.5^2)`. The paper writes
    :math:`\mathcal N(0, 10)` and :math:`\mathcal N(0, 3.5)` without saying whether 10 is a variance or a
    standard deviation; here (``b_std``, ``eps_std``) they are standard deviations. :math:`B` is shared,
    so the tasks are related; the scales :math:`\sigma_i` make task :math:`i`'s squared error about
    :math:`\sigma_i^2` times that of a task with :math:`\sigma = 1`, the imbalance GradNorm must undo (the
    paper reports weights :math:`\propto 1/\sigma_i`). The targets are noiseless.

    **Inputs: our choice, not the paper's.** The paper does not give the input distribution. The
    network receives standard-normal inputs :math:`x \sim \mathcal N(0, I_d)`, and the targets are
    :math:`f_i(s x)`, that is the paper's functions at inputs :math:`u = s x \sim \mathcal N(0, s^2 I_d)`
    with :math:`s` = ``input_scale``. Why the scale: with :math:`s = 1` (standard-normal :math:`u`) each
    entry of :math:`(B + \varepsilon_i)u` has standard deviation :math:`\sqrt{250\,(10^2 + 3.5^2)}
    \approx 168`, so the tanh saturates (:math:`|z| > 2` for 99 % of the entries) and the targets are
    :math:`\pm\sigma_i` sign patterns of random hyperplanes. The default, ``input_scale=None``, takes
    :math:`s = 1 / \sqrt{d\,(b^2 + e^2)}` (:math:`\approx 0.006` for the paper's sizes), which gives the
    pre-activations unit variance: the tanh is neither linear nor saturated (:math:`|z| > 2` for about
    5 % of the entries). Feeding the network :math:`x = u / s` rather than the tiny :math:`u` is the
    standardisation any preprocessing would do (with :math:`u` itself, a default-initialised MLP barely
    learns). ``input_scale=1.0`` gives the literal standard-normal reading, saturation included.

    Parameters
    ----------
    n_train, n_val, n_test
        Rows in each split, drawn independently from the same distribution (the matrices are shared).
    sigmas
        The scale :math:`\sigma_i > 0` of each task; their number is the number of tasks (the paper's
        two-task experiment: :math:`(1, 100)`).
    seed
        Seed of the generator that draws the matrices and the inputs.
    in_features, out_features
        Input size :math:`d` (the paper: 250) and output size of every task (the paper: 100).
    b_std, eps_std
        Standard deviations :math:`b, e` of the entries of :math:`B` and of each :math:`\varepsilon_i`.
    input_scale
        The factor :math:`s > 0` between the network's input and the paper's :math:`u`; ``None``:
        :math:`1 / \sqrt{d (b^2 + e^2)}` (see above).

    Returns
    -------
    Splits
        ``x`` is float32 ``(N, in_features)``, standard normal; targets ``"task_0"``, ``"task_1"``, … are
        float32 ``(N, out_features)`` (regressions, scored by the MSE over all outputs).
    """
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"every split needs at least one row, got {n_train}, {n_val}, {n_test}")
    sigmas = tuple(float(s) for s in sigmas)
    if not sigmas:
        raise ValueError("sigmas must name at least one task scale")
    if not all(math.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError(f"every scale in sigmas must be positive and finite, got {sigmas}")
    if in_features < 1 or out_features < 1:
        raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
    for name, value in [("b_std", b_std), ("eps_std", eps_std)]:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be non-negative and finite, got {value}")
    if b_std == 0 and eps_std == 0:
        raise ValueError("b_std and eps_std are both 0: every target would be 0")
    if input_scale is None:
        input_scale = 1.0 / math.sqrt(in_features * (b_std**2 + eps_std**2))
    elif not (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"input_scale must be positive and finite, got {input_scale}")
    gen = torch.Generator().manual_seed(seed)
    shared = b_std * torch.randn(out_features, in_features, generator=gen)
    matrices = [shared + eps_std * torch.randn(out_features, in_features, generator=gen) for _ in sigmas]

    def draw(n: int) -> TaskData:
        x = torch.randn(n, in_features, generator=gen)
        u = input_scale * x
        pairs = enumerate(zip(sigmas, matrices, strict=True))
        return TaskData(x, {f"task_{i}": s * torch.tanh(u @ a.T) for i, (s, a) in pairs})

    return Splits(train=draw(n_train), val=draw(n_val), test=draw(n_test))


def task_clusters(
    n_train: int = 256,
    n_val: int = 256,
    n_test: int = 1024,
    *,
    clusters: tuple[int, ...] = (3, 2),
    noise_task: bool = True,
    in_features: int = 8,
    rank: int = 2,
    scale: float = 2.0,
    noise: float = 0.1,
    seed: int = 0,
) -> Splits:
    r"""Regression tasks in clusters: tasks of a cluster need the same features, other clusters others.

    Cluster :math:`c` owns a ``rank``-dimensional subspace of the input, spanned by the orthonormal rows
    of :math:`V_c` (the subspaces of different clusters are orthogonal). Task :math:`t` of cluster
    :math:`c` is

    .. math::
        y_t = a_t^\top \tanh(s\, V_c x) + \varepsilon, \qquad
        x \sim \mathcal N(0, I_d),\ \varepsilon \sim \mathcal N(0, \sigma^2),

    with its own unit vector :math:`a_t` (drawn once) and :math:`s` = ``scale``. Tasks of one cluster
    are therefore related (any of them teaches the features :math:`\tanh(s V_c x)` that the others
    need); tasks of different clusters share nothing but the input. With ``noise_task`` a last task,
    ``"noise"``, has pure noise :math:`\mathcal N(0, 1)` as its target: there is nothing to learn, only
    to overfit. A test bed for transfer and task grouping in the spirit of the clustered tasks of
    Evgeniou & Pontil (2004, KDD) and Jacob, Bach & Vert (2008, NeurIPS).

    **The test split is noiseless**: its targets are the functions themselves (and 0 for ``"noise"``),
    so a test error is what the model got wrong, not the irreducible :math:`\sigma^2`. Training and
    validation targets carry the noise, as measured data would.

    Parameters
    ----------
    n_train, n_val, n_test
        Rows in each split, drawn independently (the subspaces and coefficients are shared).
    clusters
        Number of tasks in each cluster; tasks are named ``"a1", "a2", …`` (cluster a), ``"b1", …``.
    noise_task
        Add the task ``"noise"`` (last).
    in_features
        Input size :math:`d`; needs :math:`d \ge` ``rank`` × the number of clusters.
    rank
        Dimension of each cluster's subspace.
    scale
        The factor :math:`s` inside the tanh (2: clearly non-linear, rarely saturated).
    noise
        Standard deviation :math:`\sigma` of the noise of the training and validation targets.
    seed
        Seed of the generator that draws subspaces, coefficients, inputs and noise.

    Returns
    -------
    Splits
        ``x`` is float32 ``(N, in_features)``; every target is float32 ``(N,)``.
    """
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"every split needs at least one row, got {n_train}, {n_val}, {n_test}")
    if not clusters or any(k < 1 for k in clusters) or len(clusters) > 26:
        raise ValueError(f"clusters must list 1 to 26 positive task counts, got {clusters}")
    if rank < 1 or in_features < rank * len(clusters):
        raise ValueError(
            f"{len(clusters)} orthogonal subspaces of rank {rank} need in_features >= "
            f"{rank * len(clusters)}, got in_features={in_features}"
        )
    if not (math.isfinite(scale) and scale > 0) or not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"scale must be positive and noise non-negative, got {scale}, {noise}")
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(in_features, in_features, generator=gen))
    tasks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for c, size in enumerate(clusters):
        subspace = basis[:, c * rank : (c + 1) * rank].T
        for k in range(size):
            a = torch.randn(rank, generator=gen)
            tasks[f"{chr(ord('a') + c)}{k + 1}"] = (subspace, a / a.norm())

    def draw(n: int, noiseless: bool = False) -> TaskData:
        x = torch.randn(n, in_features, generator=gen)
        targets = {}
        for name, (subspace, a) in tasks.items():
            clean = torch.tanh(scale * x @ subspace.T) @ a
            targets[name] = clean if noiseless else clean + noise * torch.randn(n, generator=gen)
        if noise_task:
            targets["noise"] = torch.zeros(n) if noiseless else torch.randn(n, generator=gen)
        return TaskData(x, targets)

    return Splits(train=draw(n_train), val=draw(n_val), test=draw(n_test, noiseless=True))


_DIGITS: dict[str, torch.Tensor] = {}


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8×8 digits (no download), cached: images float32 in [0, 16], labels int64."""
    if not _DIGITS:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        _DIGITS["images"] = torch.from_numpy(bunch.images).float()
        _DIGITS["target"] = torch.from_numpy(bunch.target).long()
    return _DIGITS["images"], _DIGITS["target"]


def multi_digits_indices(
    n_train: int = 4000,
    n_val: int = 1000,
    n_test: int = 1000,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> dict[str, torch.Tensor]:
    """The source images of every MultiDigits pair: which two bundled digits :func:`multi_digits` draws.

    First the 1797 images of ``sklearn.datasets.load_digits()`` are split into disjoint train /
    validation / test *pools*, stratified by class: of the :math:`n_c` images of class :math:`c`,
    ``round(test_fraction * n_c)`` go to the test pool, ``round(val_fraction * n_c)`` to the validation
    pool and the rest to the training pool. Then each split's pairs are drawn from its own pool only,
    so no test image appears in a training or validation pair. A pair is two *different* images of
    the pool, drawn uniformly and independently of their labels: the first uniformly, the second
    uniformly among the others. Each task's classes are therefore about as balanced as the digits
    themselves (every class holds 9.7–10.2 % of the images).

    Parameters
    ----------
    n_train, n_val, n_test
        Number of pairs in each split (pairs may repeat; images repeat across pairs of a split).
    seed
        Seed of the generator that splits the pools and draws the pairs.
    val_fraction, test_fraction
        Share of each class's images held out for the validation and test pools, each in (0, 1),
        together below 1; every pool must keep at least one image of every class.

    Returns
    -------
    dict of str to torch.Tensor
        ``"train"``, ``"val"``, ``"test"`` -> int64 ``(n, 2)``: row ``(i, j)`` is the pair whose
        top-left digit is ``load_digits().images[i]`` and whose shifted digit is ``images[j]``.
    """
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"every split needs at least one pair, got {n_train}, {n_val}, {n_test}")
    for name, frac in [("val_fraction", val_fraction), ("test_fraction", test_fraction)]:
        if not 0 < frac < 1:
            raise ValueError(f"{name} must lie in (0, 1), got {frac}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    _, labels = _digits()
    gen = torch.Generator().manual_seed(seed)
    pools: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        members = torch.nonzero(labels == c).squeeze(1)
        members = members[torch.randperm(len(members), generator=gen)]
        n_te, n_va = round(test_fraction * len(members)), round(val_fraction * len(members))
        parts = {"test": members[:n_te], "val": members[n_te : n_te + n_va], "train": members[n_te + n_va :]}
        for split, part in parts.items():
            if len(part) == 0:
                raise ValueError(
                    f"the {split} pool would hold no image of class {c} ({len(members)} images); "
                    f"change val_fraction={val_fraction} or test_fraction={test_fraction}"
                )
            pools[split].append(part)

    def pairs(pool: torch.Tensor, n: int) -> torch.Tensor:
        first = torch.randint(len(pool), (n,), generator=gen)
        second = (first + torch.randint(1, len(pool), (n,), generator=gen)) % len(pool)  # never `first`
        return torch.stack([pool[first], pool[second]], dim=1)

    sizes = {"train": n_train, "val": n_val, "test": n_test}
    return {split: pairs(torch.cat(pools[split]).sort().values, sizes[split]) for split in sizes}


def multi_digits(
    n_train: int = 4000,
    n_val: int = 1000,
    n_test: int = 1000,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    offset: int = 4,
    flatten: bool = True,
) -> Splits:
    """MultiDigits: two overlapping handwritten digits per image, one task per digit — no download.

    A small cousin of the MultiMNIST of multi-task learning (Sener & Koltun 2018, after Sabour et al.
    2017: one digit top-left, one bottom-right, a task each), built from the 1797 bundled 8×8 digits
    of scikit-learn (``sklearn.datasets.load_digits``). Each input is a square canvas of side
    ``8 + offset`` (12 by default): one digit at the top-left (rows and columns 0–7), the other
    shifted by ``offset`` down and right (rows and columns ``offset`` to ``offset + 7``), combined
    pixel-wise by the maximum; pixels are scaled from 0–16 to [0, 1]. Where the two digits do not
    overlap, the canvas shows each one unchanged.

    Tasks: ``"left"``, the class of the top-left digit, and ``"right"``, the class of the shifted one;
    both multiclass with 10 classes. Which images are paired, and the leak-free split into image pools,
    are those of :func:`multi_digits_indices` called with the same ``n_*``, ``seed`` and fractions: it
    returns the source indices of every pair.

    Parameters
    ----------
    n_train, n_val, n_test
        Number of pairs (inputs) in each split.
    seed
        Seed of the generator that splits the image pools and draws the pairs.
    val_fraction, test_fraction
        Share of each class's images held out for the validation and test pools.
    offset
        Shift of the second digit, from 1 (heavy overlap) to 8 (none; a 16×16 canvas).
    flatten
        ``True``: inputs ``(N, side²)``, for an MLP; ``False``: ``(N, 1, side, side)``, for a CNN.

    Returns
    -------
    Splits
        ``x`` is float32 ``(N, 144)`` by default (``(N, 1, 12, 12)`` with ``flatten=False``), in [0, 1];
        targets ``"left"`` and ``"right"`` are int64 ``(N,)`` class indices in 0–9.
    """
    if isinstance(offset, bool) or not isinstance(offset, int) or not 1 <= offset <= 8:
        raise ValueError(f"offset must be an integer from 1 to 8, got {offset!r}")
    indices = multi_digits_indices(
        n_train, n_val, n_test, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    images, labels = _digits()
    side = 8 + offset

    def render(pairs: torch.Tensor) -> TaskData:
        left, right = images[pairs[:, 0]] / 16, images[pairs[:, 1]] / 16
        canvas = torch.zeros(len(pairs), side, side)
        canvas[:, :8, :8] = left
        canvas[:, offset:, offset:] = torch.maximum(canvas[:, offset:, offset:], right)
        x = canvas.reshape(len(pairs), side * side) if flatten else canvas.unsqueeze(1)
        return TaskData(x, {"left": labels[pairs[:, 0]], "right": labels[pairs[:, 1]]})

    return Splits(train=render(indices["train"]), val=render(indices["val"]), test=render(indices["test"]))
