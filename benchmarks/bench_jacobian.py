"""Time mtlcourse's Jacobian toolkit against torchjd 0.18 on the same inputs, in one process.

Run from the repository root:

    .venv/bin/python benchmarks/bench_jacobian.py           # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_jacobian.py --quick   # fewer repeats, for a smoke test

Each row times ours and torchjd's on identical inputs, alternating which one runs first at every repeat, and
reports the median of the per-repeat ratios ours / torchjd (< 1: ours is faster).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from functools import partial

import pandas as pd
import torch
import torchjd.aggregation as tja
import torchjd.autogram as tjag
import torchjd.autojac as tjac
from threadpoolctl import threadpool_limits
from torch import nn

from mtlcourse import aggregation as ours
from mtlcourse.autogram import gramian_backward
from mtlcourse.autojac import backward, jacobian, mtl_backward


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    fn_ours: Callable[[], object], fn_theirs: Callable[[], object], repeats: int
) -> dict[str, float]:
    """Median times (ms) and median per-repeat ratio, alternating which function runs first."""
    fn_ours(), fn_theirs()  # warm-up (lazy imports, allocator, first-call solver set-up)
    t_ours, t_theirs = [], []
    for r in range(repeats):
        if r % 2 == 0:
            t_ours.append(timed(fn_ours))
            t_theirs.append(timed(fn_theirs))
        else:
            t_theirs.append(timed(fn_theirs))
            t_ours.append(timed(fn_ours))
    ratios = [a / b for a, b in zip(t_ours, t_theirs, strict=True)]
    return {
        "ours (ms)": 1e3 * statistics.median(t_ours),
        "reference (ms)": 1e3 * statistics.median(t_theirs),
        "ratio": statistics.median(ratios),
    }


def aggregator_pairs(methods: list[str] | None = None) -> list[tuple[str, object, object]]:
    """Every aggregator of ``mtlcourse.aggregation.__all__`` (or of ``methods``) with a torchjd class of the
    same name, both built with their defaults (CAGrad, which has none in torchjd, with c = 0.5)."""
    pairs = []
    for name in methods or ours.__all__:
        mine, theirs = getattr(ours, name), getattr(tja, name, None)
        if name == "Aggregator" or theirs is None or not isinstance(mine, type):
            continue
        kwargs = {"c": 0.5} if name == "CAGrad" else {}
        try:
            pairs.append((name, mine(**kwargs), theirs(**kwargs)))
        except TypeError:  # a required argument we do not know how to choose generically
            continue
    return pairs


SHAPES = [(m, n) for m in [2, 4, 10, 16, 32, 64] for n in [10, 1_000, 100_000]]


def bench_aggregators(
    repeats: int, shapes: list[tuple[int, int]] = SHAPES, methods: list[str] | None = None
) -> list[dict]:
    rows = []
    for m, n in shapes:
        J = torch.randn(m, n, generator=torch.Generator().manual_seed(m))
        for name, mine, theirs in aggregator_pairs(methods):
            result = interleaved(partial(mine, J), partial(theirs, J), repeats)
            rows.append({"benchmark": f"{name} J{(m, n)}", "reference": "torchjd", **result})
    return rows


class MultiTaskMLP(nn.Module):
    def __init__(self, n_tasks: int, width: int = 256) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(64, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 128),
            nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(128, 1) for _ in range(n_tasks))

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = self.trunk(x)
        return [
            nn.functional.mse_loss(h(features).squeeze(1), y[:, i]) for i, h in enumerate(self.heads)
        ], features


def bench_backward(repeats: int) -> list[dict]:
    torch.manual_seed(0)
    m = 4
    model = MultiTaskMLP(m)
    x, y = torch.randn(256, 64), torch.randn(256, m)
    heads = [list(h.parameters()) for h in model.heads]
    shared = list(model.trunk.parameters())
    params = list(model.parameters())

    def mtl_ours() -> None:
        model.zero_grad(set_to_none=True)
        losses, features = model.losses(x, y)
        mtl_backward(losses, features, heads, shared, ours.UPGrad())

    def mtl_torchjd() -> None:
        model.zero_grad(set_to_none=True)
        losses, features = model.losses(x, y)
        tjac.mtl_backward(losses, features, tasks_params=heads, shared_params=shared)
        tjac.jac_to_grad(shared, tja.UPGrad())

    def jacobian_ours() -> torch.Tensor:
        return jacobian(model.losses(x, y)[0], params)

    def jacobian_loop() -> torch.Tensor:
        losses, _ = model.losses(x, y)
        rows = [
            torch.autograd.grad(loss, params, retain_graph=True, materialize_grads=True) for loss in losses
        ]
        return torch.stack([torch.cat([g.flatten() for g in row]) for row in rows])

    return [
        {
            "benchmark": "mtl_backward + UPGrad, MLP, 4 tasks",
            "reference": "torchjd",
            **interleaved(mtl_ours, mtl_torchjd, repeats),
        },
        {
            "benchmark": "jacobian, MLP, 4 losses",
            "reference": "4 x autograd.grad",
            **interleaved(jacobian_ours, jacobian_loop, repeats),
        },
    ]


def training_steps(m: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """A Jacobian-descent step (forward, mtl_backward + UPGrad, SGD step) and a plain one, for m tasks."""
    torch.manual_seed(0)
    model = MultiTaskMLP(m)
    x, y = torch.randn(256, 64), torch.randn(256, m)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    heads = [list(h.parameters()) for h in model.heads]
    shared = list(model.trunk.parameters())
    aggregator = ours.UPGrad()

    def jd_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses, features = model.losses(x, y)
        mtl_backward(losses, features, heads, shared, aggregator)
        optimizer.step()

    def plain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses, _ = model.losses(x, y)
        sum(losses).backward()
        optimizer.step()

    return jd_step, plain_step


def bench_step_cost(repeats: int) -> list[dict]:
    reference = "sum(losses).backward() step"
    return [
        {
            "benchmark": f"JD step (UPGrad), m={m}",
            "reference": reference,
            **interleaved(*training_steps(m), repeats),
        }
        for m in [2, 4, 8, 16]
    ]


def iwrm_steps(batch: int) -> dict[str, Callable[[], None]]:
    """One IWRM backward pass (one loss per example, UPGrad) on a digits-sized MLP, three ways."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(144, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.randn(batch, 144), torch.randint(0, 10, (batch,))

    def losses() -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y, reduction="none")

    upgrad = ours.UPGrad()
    hooked = copy.deepcopy(model)  # torchjd's engine hooks its model: every forward must go through it
    engine = tjag.Engine(hooked, batch_dim=0)
    weighting = tja.UPGradWeighting()

    def gramian_route() -> None:
        model.zero_grad()
        gramian_backward(model, losses, upgrad.weights_from_gramian)

    def jacobian_route() -> None:
        model.zero_grad()
        backward(losses(), model.parameters(), upgrad)

    def torchjd_autogram() -> None:
        hooked.zero_grad()
        values = nn.functional.cross_entropy(hooked(x), y, reduction="none")
        values.backward(weighting(engine.compute_gramian(values)))

    return {"gramian": gramian_route, "jacobian": jacobian_route, "autogram": torchjd_autogram}


IWRM_REFERENCES = {
    "jacobian": "autojac.backward (J formed)",
    "autogram": "torchjd autogram + UPGradWeighting",
}


def bench_iwrm(repeats: int) -> list[dict]:
    rows = []
    for batch in [16, 32, 64, 128]:  # UPGrad solves N QPs of size N: beyond ~100 examples it dominates
        steps = iwrm_steps(batch)
        for reference, label in IWRM_REFERENCES.items():
            result = interleaved(steps["gramian"], steps[reference], repeats)
            rows.append({"benchmark": f"IWRM UPGrad, Gramian route, N={batch}", "reference": label, **result})
    return rows


def bench_iwrm_floor(repeats: int) -> list[dict]:
    """The Gramian-route step against a plain SGD step (mean loss) and against forming J, batch 8 to 512."""
    rows = []
    for batch in [8, 32, 128, 512]:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(144, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        )
        x, y = torch.randn(batch, 144), torch.randint(0, 10, (batch,))

        def losses(model=model, x=x, y=y) -> torch.Tensor:
            return nn.functional.cross_entropy(model(x), y, reduction="none")

        def plain(model=model, losses=losses) -> None:
            model.zero_grad()
            losses().mean().backward()

        aggregators = {"Mean": ours.Mean(), "MGDA": ours.MGDA(), "UPGrad": ours.UPGrad()}
        for name, aggregator in aggregators.items():
            if name != "Mean" and batch > 128:  # N QPs of size N: the solve, not the route, at this size
                continue

            def route(model=model, losses=losses, aggregator=aggregator) -> None:
                model.zero_grad()
                gramian_backward(model, losses, aggregator.weights_from_gramian)

            def formed(model=model, losses=losses, aggregator=aggregator) -> None:
                model.zero_grad()
                backward(losses(), model.parameters(), aggregator)

            label = f"IWRM {name}, Gramian route, N={batch}"
            rows.append(
                {
                    "benchmark": label,
                    "reference": "plain SGD step (mean loss)",
                    **interleaved(route, plain, repeats),
                }
            )
            if name == "Mean":
                rows.append(
                    {
                        "benchmark": label,
                        "reference": "autojac.backward (J formed)",
                        **interleaved(route, formed, repeats),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, to check that everything runs")
    parser.add_argument("--threads", type=int, default=1, help="torch's and BLAS's threads (default: 1)")
    parser.add_argument("--aggregators-only", action="store_true", help="only the aggregator table")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="only these aggregators (e.g. UPGrad)")
    parser.add_argument("--tasks", nargs="+", type=int, metavar="M", help="only Jacobians with these m")
    parser.add_argument("--iwrm-only", action="store_true", help="only the IWRM rows (Gramian route)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # numpy's and scipy's OpenBLAS too: each keeps its own pool, and on a busy machine their idle threads
    # compete (np.linalg.eigh of a 64 x 64 Gramian took 8 ms after a scipy call instead of 1).
    threadpool_limits(args.threads)
    repeats = 5 if args.quick else 31
    shapes = [(m, n) for m, n in SHAPES if args.tasks is None or m in args.tasks]
    if args.iwrm_only:
        rows = bench_iwrm(repeats) + bench_iwrm_floor(repeats)
    else:
        rows = bench_aggregators(repeats, shapes, args.methods)
    if not (args.aggregators_only or args.iwrm_only):
        rows += bench_backward(repeats) + bench_step_cost(repeats) + bench_iwrm(repeats)
    table = pd.DataFrame(rows)
    print(f"torch {torch.__version__}, {args.threads} threads, {repeats} interleaved repeats, median times\n")
    print(table.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
