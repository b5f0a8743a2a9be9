"""Data-parallel Jacobian descent: two gloo processes on 127.0.0.1, each with half of the batch, leave the
same .grad as one process on the whole batch."""

import datetime
import socket
import traceback
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mtlcourse import autojac, distributed
from mtlcourse.aggregation import MGDA, CAGrad, Mean, NashMTL, PCGrad, Random, UPGrad

WORLD = 2
SCALE = 512.0  # a mixed-precision loss scale
AGGREGATORS = {
    "Mean": Mean,
    "UPGrad": UPGrad,
    "MGDA": MGDA,
    "PCGrad": lambda: PCGrad(torch.Generator().manual_seed(0)),
    "CAGrad": lambda: CAGrad(0.5),
    "NashMTL": NashMTL,
    "Random": lambda: Random(seed=3),
}


def _model() -> tuple[nn.Module, nn.ModuleList]:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.ReLU()).double()
    heads = nn.ModuleList([nn.Linear(6, 1).double() for _ in range(2)])
    return trunk, heads


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    y = torch.stack([x[:, 0] - x[:, 1] ** 2, torch.sin(x[:, 2]) - x[:, 3]], 1)
    return x, y


def _mtl_step(aggregator, x, y, *, backend, factor=1.0) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    trunk, heads = _model()
    features = trunk(x)
    losses = [factor * ((head(features)[:, 0] - y[:, i]) ** 2).mean() for i, head in enumerate(heads)]
    weights = backend(
        losses,
        features,
        [list(h.parameters()) for h in heads],
        list(trunk.parameters()),
        aggregator,
    )
    grads = [p.grad.clone() for p in [*trunk.parameters(), *heads.parameters()]]
    return grads, weights


def _iwrm_step(aggregator, x, y, *, backend) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    trunk, heads = _model()
    losses = ((heads[0](trunk(x))[:, 0] - y[:, 0]) ** 2).reshape(-1)
    weights = backend(losses, [*trunk.parameters(), *heads[0].parameters()], aggregator)
    grads = [p.grad.clone() for p in [*trunk.parameters(), *heads[0].parameters()]]
    return grads, weights


def _worker(rank: int, port: int, out: str) -> None:
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=WORLD,
            timeout=datetime.timedelta(seconds=60),
        )
        x, y = _batch()
        half = len(x) // WORLD
        xs, ys = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        results = {}
        for name, make in AGGREGATORS.items():
            results["mtl", name] = _mtl_step(make(), xs, ys, backend=distributed.mtl_backward)
            results["iwrm", name] = _iwrm_step(make(), xs, ys, backend=distributed.backward)
        scaled = _mtl_step(
            NashMTL(), xs, ys, backend=partial(distributed.mtl_backward, loss_scale=SCALE), factor=SCALE
        )
        results["nash scaled"] = ([g / SCALE for g in scaled[0]], scaled[1])
        # A stateful aggregator keeps one state per rank: two steps in a row must stay in step.
        nash = NashMTL()
        results["nash twice"] = [
            _mtl_step(nash, xs, ys, backend=distributed.mtl_backward)[1] for _ in range(2)
        ]
        torch.save(results, f"{out}/rank{rank}.pt")
        dist.destroy_process_group()
    except Exception:
        with open(f"{out}/rank{rank}.error", "w") as f:
            f.write(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


ONE_PROCESS = {"mtl": (_mtl_step, autojac.mtl_backward), "iwrm": (_iwrm_step, autojac.backward)}


@pytest.mark.parametrize("name", list(AGGREGATORS))
@pytest.mark.parametrize("mode", list(ONE_PROCESS), ids=["mtl_backward averages", "backward gathers"])
def test_two_ranks_equal_one_process_on_the_whole_batch(ranks, mode, name):
    """mtl_backward: the ranks' Jacobians averaged; backward (instance-wise): the ranks' rows gathered."""
    step, backend = ONE_PROCESS[mode]
    x, y = _batch()
    expected_grads, expected_weights = step(AGGREGATORS[name](), x, y, backend=backend)
    for rank in ranks:
        grads, weights = rank[mode, name]
        for g, e in zip(grads, expected_grads, strict=True):
            _close(g, e)
        _close(weights, expected_weights)


def test_loss_scale_reaches_the_aggregation_on_every_rank(ranks):
    """Nash-MTL on losses scaled by S with loss_scale=S: after dividing by S, the whole batch's step."""
    x, y = _batch()
    expected_grads, _ = _mtl_step(NashMTL(), x, y, backend=autojac.mtl_backward)
    for rank in ranks:
        for g, e in zip(rank["nash scaled"][0], expected_grads, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)


def test_stateful_aggregators_stay_identical_across_ranks(ranks):
    first, second = ranks[0]["nash twice"], ranks[1]["nash twice"]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_averaging_the_ranks_updates_instead_would_be_wrong():
    """Why the Jacobians are combined first: the average of two shards' UPGrad directions conflicts with
    the first task of the whole batch (whose Jacobian is the average), UPGrad of the average does not."""
    J1 = torch.tensor([[-1.9, -2.5], [0.5, 0.7]], dtype=torch.float64)
    J2 = torch.tensor([[0.1, 0.6], [1.6, 1.7]], dtype=torch.float64)
    J = (J1 + J2) / 2
    upgrad = UPGrad()
    per_shard = (upgrad(J1) + upgrad(J2)) / 2
    assert (J @ per_shard)[0] < -0.9
    assert (J @ upgrad(J) >= 0).all()


def _failing_worker(rank: int, port: int) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=10),
    )
    if rank == 1:
        raise RuntimeError("rank 1 fails before the collective")
    x, y = _batch()
    _mtl_step(UPGrad(), x, y, backend=distributed.mtl_backward)  # waits for rank 1, then times out


def test_a_failing_rank_fails_the_run_without_hanging():
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 fails"):
        mp.start_processes(
            _failing_worker, args=(_free_port(),), nprocs=WORLD, join=True, start_method="spawn"
        )
