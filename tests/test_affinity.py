import copy
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mtlcourse.affinity import best_grouping, grouping_scores, lookahead_affinity, train_with_affinity
from mtlcourse.data import TaskData
from mtlcourse.models import MultiTaskModel, hard_sharing_mlp
from mtlcourse.tasks import Task
from mtlcourse.training import fit

MIXED = [Task("reg", "regression"), Task("bin", "binary"), Task("cls", "multiclass")]


def _mixed_batch(n=48, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen, dtype=dtype)
    targets = {
        "reg": x[:, 0] - 2 * x[:, 1] + 0.1 * torch.randn(n, generator=gen, dtype=dtype),
        "bin": (x[:, 2] > 0).to(dtype),
        "cls": torch.randint(0, 3, (n,), generator=gen),
    }
    return x, targets


def _mixed_model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return hard_sharing_mlp(6, [12, 8], {"reg": 1, "bin": 1, "cls": 3}).to(dtype)


def _losses(model, tasks, x, targets):
    outputs = model(x)
    return torch.stack([t.loss(outputs[t.name], targets[t.name]) for t in tasks])


# --- lookahead_affinity: oracles -------------------------------------------------------------------------


def test_matches_a_hand_computed_look_ahead_on_a_linear_trunk():
    # trunk h = W x (no bias), heads y_j = a_j . h + b_j, mean squared errors: everything in closed form
    rng = np.random.default_rng(0)
    n, d, h, m = 40, 5, 4, 3
    X, W = rng.normal(size=(n, d)), rng.normal(size=(h, d))
    A, b, T = rng.normal(size=(m, h)), rng.normal(size=m), rng.normal(size=(m, n))
    lr = 0.05

    def loss(W_, j):
        return np.mean((X @ W_.T @ A[j] + b[j] - T[j]) ** 2)

    def grad(j):  # d/dW mean((a . W x + b - t)^2) = 2/n * a r^T X
        r = X @ W.T @ A[j] + b[j] - T[j]
        return 2 / n * np.outer(A[j], r @ X)

    expected = np.array([[1 - loss(W - lr * grad(i), j) / loss(W, j) for j in range(m)] for i in range(m)])

    trunk = nn.Linear(d, h, bias=False).double()
    heads = {f"t{j}": nn.Linear(h, 1).double() for j in range(m)}
    with torch.no_grad():
        trunk.weight.copy_(torch.from_numpy(W))
        for j, head in enumerate(heads.values()):
            head.weight.copy_(torch.from_numpy(A[j : j + 1]))
            head.bias.fill_(b[j])
    model = MultiTaskModel(trunk, heads)
    tasks = [Task(f"t{j}", "regression") for j in range(m)]
    targets = {f"t{j}": torch.from_numpy(T[j]) for j in range(m)}
    z = lookahead_affinity(model, tasks, torch.from_numpy(X), targets, lr)
    assert z.dtype == torch.float64 and z.shape == (m, m)
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lr", [1e-3, 0.1])
def test_matches_a_copied_model_stepped_by_sgd_on_the_shared_parameters(lr):
    model = _mixed_model()
    x, targets = _mixed_batch()
    before = _losses(model, MIXED, x, targets).detach()
    expected = torch.empty(3, 3, dtype=torch.float64)
    for i in range(3):
        stepped = copy.deepcopy(model)
        opt = torch.optim.SGD(stepped.shared_parameters(), lr=lr)  # heads do not move
        _losses(stepped, MIXED, x, targets)[i].backward()
        opt.step()
        with torch.no_grad():
            expected[i] = 1 - _losses(stepped, MIXED, x, targets) / before
    torch.testing.assert_close(lookahead_affinity(model, MIXED, x, targets, lr), expected)


def test_first_order_it_is_the_gradient_inner_product_over_the_target_loss():
    model = _mixed_model(seed=1)
    x, targets = _mixed_batch(seed=1)
    losses = _losses(model, MIXED, x, targets)
    g = torch.stack(
        [
            torch.cat(
                [
                    gr.flatten()
                    for gr in torch.autograd.grad(loss, model.shared_parameters(), retain_graph=True)
                ]
            )
            for loss in losses
        ]
    )
    first_order = (g @ g.T) / losses.detach()[None, :]  # [i, j] = <g_i, g_j> / L_j
    errors = []
    for lr in (1e-2, 1e-3, 1e-4):
        z = lookahead_affinity(model, MIXED, x, targets, lr)
        errors.append(((z - lr * first_order).norm() / (lr * first_order).norm()).item())
    assert errors[2] < 1e-3
    assert errors[1] < 0.2 * errors[0] and errors[2] < 0.2 * errors[1]  # the error is O(lr)


@pytest.mark.parametrize("seed", range(4))
def test_diagonal_is_positive_for_a_small_step(seed):
    model = _mixed_model(seed=seed)
    x, targets = _mixed_batch(seed=seed)
    assert (torch.diagonal(lookahead_affinity(model, MIXED, x, targets, 1e-4)) > 0).all()


def test_two_tasks_with_identical_targets_and_heads_have_symmetric_high_affinity():
    torch.manual_seed(0)
    model = hard_sharing_mlp(6, [12, 8], {"a": 1, "b": 1, "other": 1}).double()
    with torch.no_grad():
        model.heads["b"].load_state_dict(model.heads["a"].state_dict())
    x, targets = _mixed_batch()
    targets = {"a": targets["reg"], "b": targets["reg"].clone(), "other": torch.randn(len(x), dtype=x.dtype)}
    tasks = [Task(name, "regression") for name in ("a", "b", "other")]
    z = lookahead_affinity(model, tasks, x, targets, 1e-3)
    # a step on a is a step on b: each helps the other exactly as much as itself
    torch.testing.assert_close(z[0, 1], z[1, 0])
    torch.testing.assert_close(z[0, 1], z[0, 0])
    torch.testing.assert_close(z[1, 1], z[0, 0])
    assert z[0, 1] > 0


# --- lookahead_affinity: it only looks ----------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_model_parameters_grads_and_mode_are_untouched(training):
    model = _mixed_model()
    model.train(training)
    x, targets = _mixed_batch()
    params = list(model.parameters())
    for k, p in enumerate(params):
        if k % 2 == 0:  # half of them hold a gradient from earlier, half none
            p.grad = torch.randn_like(p)
    values = [p.detach().clone() for p in params]
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    lookahead_affinity(model, MIXED, x, targets, 0.5)
    assert model.training is training
    for p, v, g in zip(params, values, grads, strict=True):
        assert torch.equal(p, v)
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)


def test_bad_input_is_refused():
    model = _mixed_model()
    x, targets = _mixed_batch()
    for lr in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="learning rate"):
            lookahead_affinity(model, MIXED, x, targets, lr)
    with pytest.raises(ValueError, match="do not match"):
        lookahead_affinity(model, MIXED[::-1], x, targets, 0.1)
    with pytest.raises(ValueError, match="no target"):
        lookahead_affinity(model, MIXED, x, {k: v for k, v in targets.items() if k != "bin"}, 0.1)
    with torch.no_grad():  # a task already fitted exactly: its loss is 0, the ratio is undefined
        perfect = {**targets, "reg": model(x)["reg"].clone()}
    with pytest.raises(ValueError, match="positive"):
        lookahead_affinity(model, MIXED, x, perfect, 0.1)


# --- grouping ----------------------------------------------------------------------------------------------


def _affinity(z, names=None):
    names = names or [f"t{i}" for i in range(len(z))]
    return pd.DataFrame(np.asarray(z, dtype=float), index=names, columns=names)


def _stirling2(n, k):  # explicit formula, independent of the enumeration
    return round(sum((-1) ** i * math.comb(k, i) * (k - i) ** n for i in range(k + 1)) / math.factorial(k))


def _score_by_hand(z, names, groups):
    index = {name: i for i, name in enumerate(names)}
    total = 0.0
    for group in groups:
        for target in group:
            others = [index[s] for s in group if s != target]
            total += np.mean([z[s, index[target]] for s in others]) if others else 0.0
    return total


@pytest.mark.parametrize(("m", "k", "count"), [(4, 2, 7), (5, 2, 15), (5, 3, 25), (4, 1, 1), (4, 4, 1)])
def test_number_of_partitions_is_the_stirling_number(m, k, count):
    assert _stirling2(m, k) == count
    assert len(grouping_scores(_affinity(np.zeros((m, m))), k)) == count


@pytest.mark.parametrize(("m", "k"), [(m, k) for m in range(1, 8) for k in range(1, m + 1)])
def test_every_row_is_a_distinct_partition_into_k_groups(m, k):
    names = [f"t{i}" for i in range(m)]
    table = grouping_scores(_affinity(np.zeros((m, m)), names), k)
    assert len(table) == _stirling2(m, k)
    seen = set()
    for groups in table["groups"]:
        assert len(groups) == k and all(groups)
        assert sorted(itertools.chain(*groups)) == sorted(names)
        seen.add(frozenset(frozenset(g) for g in groups))
    assert len(seen) == len(table)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_scores_match_a_hand_computation_and_are_sorted(k):
    z = np.random.default_rng(k).normal(size=(5, 5))
    names = ["a", "b", "c", "d", "e"]
    table = grouping_scores(_affinity(z, names), k)
    for groups, score in zip(table["groups"], table["score"], strict=True):
        assert score == pytest.approx(_score_by_hand(z, names, groups), abs=1e-12)
    assert (np.diff(table["score"].to_numpy()) <= 0).all()


def test_one_group_scores_the_mean_affinity_onto_each_task_and_all_singletons_score_zero():
    z = np.random.default_rng(0).normal(size=(4, 4))
    off_diagonal = z.sum(axis=0) - np.diag(z)
    assert grouping_scores(_affinity(z), 1)["score"].item() == pytest.approx((off_diagonal / 3).sum())
    assert grouping_scores(_affinity(z), 4)["score"].item() == 0.0


def test_a_partition_score_does_not_depend_on_the_direction_of_affinity():
    # every member of a group shares the denominator |G| - 1, so the score sums Z over ordered pairs
    z = np.random.default_rng(3).normal(size=(5, 5))
    for k in (2, 3):
        by_groups = grouping_scores(_affinity(z), k).set_index("groups")["score"]
        transposed = grouping_scores(_affinity(z.T), k).set_index("groups")["score"]
        np.testing.assert_allclose(by_groups.sort_index(), transposed.sort_index(), atol=1e-12)


def _planted(seed=0):
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c", "d", "e", "f"]
    block = {"a": 0, "c": 0, "e": 0, "b": 1, "d": 1, "f": 1}  # interleaved, so the order gives nothing away
    z = np.array([[1.0 if block[s] == block[t] else -1.0 for t in names] for s in names])
    return _affinity(z + 0.2 * rng.normal(size=z.shape), names), {frozenset("ace"), frozenset("bdf")}


def _as_sets(groups):
    return {frozenset(g) for g in groups}


def test_finds_a_planted_block_structure():
    affinity, planted = _planted()
    assert _as_sets(best_grouping(affinity, 2)) == planted
    # with three groups one block is split, none is mixed
    assert all(any(g <= block for block in planted) for g in _as_sets(best_grouping(affinity, 3)))


@pytest.mark.parametrize("seed", range(3))
def test_permuting_the_tasks_permutes_the_answer(seed):
    affinity, _ = _planted(seed)
    order = list(np.random.default_rng(seed + 10).permutation(affinity.index))
    shuffled = affinity.loc[order, order]
    for k in (2, 3):
        a, b = grouping_scores(affinity, k), grouping_scores(shuffled, k)
        assert _as_sets(a["groups"].iloc[0]) == _as_sets(b["groups"].iloc[0])
        np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-12)
        scores_a = {frozenset(map(frozenset, g)): s for g, s in zip(a["groups"], a["score"], strict=True)}
        for g, s in zip(b["groups"], b["score"], strict=True):
            assert scores_a[frozenset(map(frozenset, g))] == pytest.approx(s, abs=1e-12)


def test_bad_affinity_or_group_count_is_refused():
    affinity = _affinity(np.eye(4), list("abcd"))
    for k in (0, -1, 5, 2.0, True):
        with pytest.raises(ValueError, match="n_groups"):
            grouping_scores(affinity, k)
    with pytest.raises(ValueError, match="square"):
        grouping_scores(pd.DataFrame(np.zeros((3, 4))), 2)
    with pytest.raises(ValueError, match="same order"):
        grouping_scores(affinity.loc[:, list("bacd")], 2)
    with pytest.raises(ValueError, match="same order"):
        grouping_scores(_affinity(np.eye(4), list("abcd")).rename(columns={"d": "x"}), 2)
    with pytest.raises(ValueError, match="unique"):
        grouping_scores(_affinity(np.eye(3), list("aab")), 2)
    with pytest.raises(ValueError, match="NaN"):
        grouping_scores(_affinity(np.full((3, 3), np.nan)), 2)
    with pytest.raises(ValueError, match="10 tasks"):
        grouping_scores(_affinity(np.zeros((11, 11))), 2)
    with pytest.raises(ValueError, match="DataFrame"):
        grouping_scores(np.eye(3), 2)


# --- training ----------------------------------------------------------------------------------------------

PAIR_TASKS = [Task("a", "regression"), Task("a_copy", "regression"), Task("noise", "regression")]


def _pair_data(n=160, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    y = torch.sin(x[:, 0]) + x[:, 1] * x[:, 2]
    return TaskData(x, {"a": y, "a_copy": y.clone(), "noise": torch.randn(n, generator=gen)})


def _pair_model(seed=0):
    torch.manual_seed(seed)
    return hard_sharing_mlp(6, [16, 8], {"a": 1, "a_copy": 1, "noise": 1})


def test_training_is_deterministic_given_the_seed():
    data = _pair_data()
    run = [
        train_with_affinity(_pair_model(), PAIR_TASKS, data, epochs=3, lr=1e-2, batch_size=32, seed=s)
        for s in (4, 4, 5)
    ]
    for field in ("mean", "per_epoch", "history"):
        assert getattr(run[0], field).equals(getattr(run[1], field))
    assert not run[0].mean.equals(run[2].mean)


def test_measuring_does_not_change_the_training_it_matches_fit_with_equal_weights():
    data = _pair_data()
    measured, plain = _pair_model(), _pair_model()
    result = train_with_affinity(measured, PAIR_TASKS, data, epochs=4, lr=1e-2, batch_size=32, seed=3)
    history = fit(plain, PAIR_TASKS, data, epochs=4, lr=1e-2, batch_size=32, seed=3)
    for p, q in zip(measured.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    for task in PAIR_TASKS:
        column = f"train_loss_{task.name}"
        np.testing.assert_allclose(result.history[column], history[column], rtol=1e-5)


def test_a_single_recorded_step_is_the_look_ahead_before_the_first_step():
    data, model = _pair_data(), _pair_model()
    first = torch.randperm(len(data), generator=torch.Generator().manual_seed(7))[:32]
    expected = lookahead_affinity(
        copy.deepcopy(model), PAIR_TASKS, data.x[first], {k: v[first] for k, v in data.targets.items()}, 0.3
    )
    result = train_with_affinity(
        model, PAIR_TASKS, data, epochs=2, lr=1e-2, batch_size=32, seed=7, lookahead_lr=0.3, every=1000
    )
    np.testing.assert_allclose(result.mean.to_numpy(), expected.numpy(), rtol=1e-12)
    assert list(result.mean.index) == list(result.mean.columns) == ["a", "a_copy", "noise"]
    assert set(result.per_epoch["epoch"]) == {1}


def test_every_records_the_right_steps_and_the_tables_have_their_shape():
    # 160 rows, batch 32: 5 steps per epoch; every=7 records steps 0, 7, 14 -> epochs 1, 2, 3 but not 4
    result = train_with_affinity(
        _pair_model(), PAIR_TASKS, _pair_data(), epochs=4, lr=1e-2, batch_size=32, every=7
    )
    assert list(result.per_epoch.columns) == ["epoch", "source", "target", "affinity"]
    assert sorted(set(result.per_epoch["epoch"])) == [1, 2, 3]
    assert len(result.per_epoch) == 3 * 9
    # one recorded step per epoch here, so the overall mean is the mean of the epochs
    by_epoch = result.per_epoch.pivot_table(
        index="source", columns="target", values="affinity", aggfunc="mean"
    )
    np.testing.assert_allclose(result.mean.to_numpy(), by_epoch.loc[result.mean.index, result.mean.columns])
    assert list(result.history.columns) == ["epoch", "train_loss_a", "train_loss_a_copy", "train_loss_noise"]
    assert list(result.history["epoch"]) == [1, 2, 3, 4]


@pytest.mark.parametrize("seed", range(2))
def test_training_lowers_the_loss_and_pairs_the_duplicated_task(seed):
    model = _pair_model(seed)
    model.eval()
    result = train_with_affinity(
        model, PAIR_TASKS, _pair_data(seed=seed), epochs=20, lr=1e-2, batch_size=32, seed=seed
    )
    assert model.training is False  # mode restored
    first, last = result.history.iloc[0], result.history.iloc[-1]
    for name in ("a", "a_copy"):
        assert last[f"train_loss_{name}"] < 0.5 * first[f"train_loss_{name}"]
    z = result.mean
    assert z.loc["a", "a_copy"] > max(z.loc["a", "noise"], z.loc["noise", "a_copy"])
    assert z.loc["a_copy", "a"] > max(z.loc["a_copy", "noise"], z.loc["noise", "a"])
    assert _as_sets(best_grouping(z, 2)) == {frozenset({"a", "a_copy"}), frozenset({"noise"})}


def test_bad_training_settings_are_refused():
    data, model = _pair_data(), _pair_model()
    for kwargs, match in [
        ({"epochs": 0}, "epochs"),
        ({"every": 0}, "every"),
        ({"lr": 0.0}, "lr"),
        ({"lookahead_lr": -1.0}, "lookahead_lr"),
        ({"batch_size": 0}, "batch_size"),
    ]:
        settings = {"epochs": 1, "lr": 1e-2} | kwargs
        with pytest.raises(ValueError, match=match):
            train_with_affinity(model, PAIR_TASKS, data, **settings)
    with pytest.raises(ValueError, match="do not match"):
        train_with_affinity(model, PAIR_TASKS[::-1], data, epochs=1, lr=1e-2)
