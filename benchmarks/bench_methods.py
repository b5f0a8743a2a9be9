"""Wall-clock cost of one training step of every method of Chapter 9, relative to equal weights.

Run from the repository root:

    .venv/bin/python benchmarks/bench_methods.py            # 41 repeats per row
    .venv/bin/python benchmarks/bench_methods.py --quick    # 7 repeats, smoke test

One step is what ``fit`` does per batch: forward, the strategy's backward, an Adam step and the strategy's
``after_step``. Each row times the method and equal weights on the same network and batch, alternating which
runs first, and reports the median of the per-repeat ratios (method / equal weights). Chapter 9 shows the
FLOPs of the same step, which do not depend on the machine; this script shows what they cost in time,
including the NumPy/cvxpy solves that FLOP counting leaves out.
"""

from __future__ import annotations

import argparse
import functools

import pandas as pd
import torch
from bench_jacobian import interleaved

from mtlcourse.aggregation import IMTLG, MGDA, AlignedMTL, CAGrad, NashMTL, PCGrad, UPGrad
from mtlcourse.data import multi_digits
from mtlcourse.famo import FAMO
from mtlcourse.gradnorm import GradNorm
from mtlcourse.models import hard_sharing_mlp
from mtlcourse.strategy import JacobianDescent
from mtlcourse.tasks import Task
from mtlcourse.training import _losses_without_graph, task_losses
from mtlcourse.weighting import DWA, RandomWeighting, StaticWeights, UncertaintyWeighting

METHODS = {
    "RLW": lambda m: RandomWeighting(seed=0),
    "uncertainty": lambda m: UncertaintyWeighting(m),
    "DWA": lambda m: DWA(),
    "FAMO": lambda m: FAMO(m),
    "GradNorm": lambda m: GradNorm(alpha=1.5),
    "PCGrad": lambda m: JacobianDescent(PCGrad(torch.Generator().manual_seed(0))),
    "MGDA": lambda m: JacobianDescent(MGDA()),
    "CAGrad": lambda m: JacobianDescent(CAGrad(0.5)),
    "IMTL-G": lambda m: JacobianDescent(IMTLG()),
    "Aligned-MTL": lambda m: JacobianDescent(AlignedMTL()),
    "Nash-MTL": lambda m: JacobianDescent(NashMTL()),
    "Nash-MTL (every 5)": lambda m: JacobianDescent(NashMTL(update_weights_every=5)),
    "UPGrad": lambda m: JacobianDescent(UPGrad()),
}


def stepper(strategy, m: int, batch: int, hidden: list[int]):
    """One training step of ``strategy`` on a MultiDigits network with m heads of 10 classes."""
    torch.manual_seed(0)
    data = multi_digits(n_train=batch, n_val=10, n_test=10, seed=0).train
    tasks = [Task(f"t{i}", "multiclass") for i in range(m)]
    targets = {t.name: data.targets["left" if i % 2 == 0 else "right"] for i, t in enumerate(tasks)}
    net = hard_sharing_mlp(144, hidden, {t.name: 10 for t in tasks})
    groups = [{"params": list(net.parameters())}]
    if extra := strategy.parameters():
        groups.append({"params": extra})
    opt = torch.optim.Adam(groups, lr=1e-3, foreach=True)

    def step() -> None:
        losses, _, features = task_losses(net, tasks, data.x, targets)
        opt.zero_grad()
        strategy.backward(losses, net, features)
        opt.step()
        strategy.after_step(functools.partial(_losses_without_graph, net, tasks, data.x, targets))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 7 if args.quick else 41
    rows = []
    for m, batch, hidden in [(2, 500, [32]), (2, 64, [128, 64]), (5, 500, [32])]:
        for name, factory in METHODS.items():
            result = interleaved(
                stepper(factory(m), m, batch, hidden),
                stepper(StaticWeights([1 / m] * m), m, batch, hidden),
                repeats,
            )
            rows.append(
                {
                    "m": m,
                    "batch": batch,
                    "trunk": "144-" + "-".join(map(str, hidden)),
                    "method": name,
                    **result,
                }
            )
    table = pd.DataFrame(rows).rename(
        columns={"ours (ms)": "method (ms)", "reference (ms)": "equal weights (ms)"}
    )
    print(f"torch {torch.__version__}, {args.threads} thread(s), {repeats} interleaved repeats, median times")
    print(table.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
