"""fastnet sweep over the activation and optimizer tables (issue 21 item 5, issue 25 item 2):
both are grid axes next to cost, part of what one stack shares, carried by every row, shown
in the table only when they vary, and each row is the same numbers as one Network trained
with that activation and optimizer. The names come from the tables, never a list here."""
import json
import os
import subprocess
import sys

import pytest

import fastnet
from fastnet import activations, optim, sweep
from fastnet.sweep import Config, expand_grid, group_stacks

#: Two activations and two optimizers from the tables: today's defaults and another row.
ACTS = ["sigmoid", next(a for a in sorted(activations.HIDDEN) if a != "sigmoid")]
OPTS = ["sgd", next(o for o in sorted(optim.OPTIMIZERS) if o != "sgd")]
SIZES = [784, 8, 10]


def run(*args):
    env = {k: v for k, v in os.environ.items() if k != sweep.FAIL_ENV}
    return subprocess.run([sys.executable, "-m", "fastnet", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def sample():
    from fastnet import data

    (X, y), (Xt, yt) = data.load("sample")
    return X[:300], y[:300], Xt[:500], yt[:500]


def single_run(X, y, Xt, yt, row, sizes=SIZES, dtype="float64"):
    """The row's configuration as one Network: same seed, activation, optimizer, eta, order."""
    net = fastnet.Network(sizes, activation=row["activation"].split(",") if "," in row["activation"]
                          else row["activation"], seed=row["seed"], device="cpu", dtype=dtype)
    return net.fit(X, y, epochs=row["epochs"], batch_size=row["batch_size"], eta=row["eta"],
                   optimizer=row["optimizer"], validation_data=(Xt, yt))


# --- the grid ---------------------------------------------------------------------------------


def test_defaults_keep_old_configs_labels_and_rows():
    (only,) = expand_grid()
    assert (only.activation, only.optimizer) == ("sigmoid", "sgd")
    assert only == Config((784, 30, 10), 3.0, 0.0, 0, 10, "quadratic", 30), "7 fields still make a Config"
    assert only.label() == "784-30-10 eta=3 lmbda=0 seed=0 batch=10 quadratic epochs=30"
    assert only.as_dict()["activation"] == "sigmoid" and only.as_dict()["optimizer"] == "sgd"
    c = Config((784, 30, 10), 3.0, 0.0, 0, 10, "quadratic", 30, ACTS[1], OPTS[1])
    assert c.label() == f"784-30-10 eta=3 lmbda=0 seed=0 batch=10 quadratic {ACTS[1]} {OPTS[1]} epochs=30"


def test_grid_order_puts_activation_and_optimizer_next_to_cost():
    grid = expand_grid(sizes=[SIZES], costs=["quadratic", "cross_entropy"], activations=ACTS, optimizers=OPTS,
                       etas=[0.1, 1.0], seeds=[0, 1], epochs=1)
    assert len(grid) == 2 * 2 * 2 * 2 * 2 and len(set(grid)) == len(grid)
    # cost, then activation, then optimizer, then eta and seed innermost
    assert [(c.cost, c.activation, c.optimizer) for c in grid[::4]] == [
        (cost, a, o) for cost in ("quadratic", "cross_entropy") for a in ACTS for o in OPTS]
    assert [(c.eta, c.seed) for c in grid[:4]] == [(0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)]
    stacks = group_stacks(grid, max_k=8)
    assert [len(s) for s in stacks] == [4] * 8
    for s in stacks:
        assert len({(c.cost, c.activation, c.optimizer) for c in s}) == 1, "one stack: one activation, optimizer"
    assert expand_grid({"activations": ACTS[1], "optimizers": [OPTS[1]]}, epochs=1)[0].optimizer == OPTS[1]


def test_every_table_row_is_a_grid_value():
    grid = expand_grid(sizes=[SIZES], activations=sorted(activations.HIDDEN), optimizers=sorted(optim.OPTIMIZERS),
                       epochs=1)
    assert len(grid) == len(activations.HIDDEN) * len(optim.OPTIMIZERS)
    assert len(group_stacks(grid, max_k=8)) == len(grid), "no two of them share a stack"


def test_per_layer_activations():
    deep = [784, 8, 8, 10]
    grid = expand_grid(sizes=[deep], activations=[ACTS[1], f"{ACTS[1]},{ACTS[0]}", [ACTS[0], ACTS[1]]], epochs=1)
    assert [c.activation for c in grid] == [ACTS[1], f"{ACTS[1]},{ACTS[0]}", f"{ACTS[0]},{ACTS[1]}"]
    assert grid[1].hidden_activation == [ACTS[1], ACTS[0]] and grid[0].hidden_activation == ACTS[1]


@pytest.mark.parametrize("kw, error, fragment", [
    ({"activations": ["swish"]}, ValueError, "activations (--activation): activation must be one of ("),
    ({"activations": [ACTS[0], "relu,swish"]}, ValueError, "Actual: 'swish'"),
    ({"optimizers": ["rmsprop_x"]}, ValueError, "optimizers (--optimizer): optimizer must be one of ("),
    ({"activations": [3]}, TypeError, "activations (--activation): activation must be one of"),
    ({"optimizers": [None]}, TypeError, "optimizers (--optimizer): optimizer must be one of"),
    ({"activations": []}, ValueError, "activations (--activation) is empty"),
    ({"optimizers": []}, ValueError, "optimizers (--optimizer) is empty"),
    ({"activations": [ACTS[1], ACTS[1].upper()]}, ValueError, f"lists {ACTS[1]} twice"),
    ({"optimizers": [OPTS[1], OPTS[1]]}, ValueError, f"lists {OPTS[1]} twice"),
    ({"activations": [f"{ACTS[1]},{ACTS[1]}"]}, ValueError,
     "names 2 hidden layers, but sizes (--sizes) 784,8,10 has 1"),
    ({"sizes": [[784, 8, 8, 10]], "activations": [ACTS[1], f"{ACTS[1]},{ACTS[1]}"]}, ValueError,
     "the same layers for 784,8,8,10"),
])
def test_bad_axes_are_refused_with_one_line(kw, error, fragment):
    kw = {"sizes": [SIZES], **kw}
    with pytest.raises(error) as info:
        expand_grid(**kw, epochs=1)
    msg = str(info.value)
    assert "\n" not in msg and fragment in msg, msg
    if "must be one of" in fragment:   # the choices come from the tables
        table = activations.HIDDEN if "activation" in fragment else optim.OPTIMIZERS
        assert all(name in msg for name in table), msg


def test_hand_made_configs_and_mixed_stacks_are_refused_before_any_work(sample):
    X, y, Xt, yt = sample
    good = Config(tuple(SIZES), 0.1, 0.0, 0, 10, "quadratic", 1)
    for bad, fragment in ((Config(tuple(SIZES), 0.1, 0.0, 0, 10, "quadratic", 1, "swish"), "Actual: 'swish'"),
                          (Config(tuple(SIZES), 0.1, 0.0, 0, 10, "quadratic", 1, "sigmoid", "nope"), "'nope'"),
                          (Config(tuple(SIZES), 0.1, 0.0, 0, 10, "quadratic", 1, ["relu"]), "must be a str")):
        with pytest.raises((ValueError, TypeError), match="configs\\[1\\]") as info:
            sweep.run_sweep([good, bad], (X, y, Xt, yt), device="cpu")
        assert fragment in str(info.value), str(info.value)
    other = Config(tuple(SIZES), 0.1, 0.0, 0, 10, "quadratic", 1, ACTS[1], OPTS[1])
    with pytest.raises(ValueError, match="mixes activation and optimizer"):
        sweep.run_stack([good, other], (X, y, Xt, yt), device="cpu")


# --- the numbers --------------------------------------------------------------------------------


def test_two_activations_two_optimizers_two_etas_rows_are_single_network_runs(sample):
    X, y, Xt, yt = sample
    grid = expand_grid(sizes=[SIZES], activations=ACTS, optimizers=OPTS, etas=[0.05, 0.5], seeds=[0], epochs=1)
    res = sweep.run_sweep(grid, (X, y, Xt, yt), device="cpu", dtype="float64")   # shared order, order_seed 0
    assert res.ok and len(res) == 8 and res.config["stacks"] == 4
    assert [(r["activation"], r["optimizer"]) for r in res] == [(a, o) for a in ACTS for o in OPTS for _ in "ee"]
    stacks = {}
    for r in res:
        stacks.setdefault(r["stack"], set()).add((r["activation"], r["optimizer"]))
        assert r["stack_size"] == 2
    assert len(stacks) == 4 and all(len(v) == 1 for v in stacks.values()), stacks
    for r in res:   # seed 0 follows order seed 0's minibatches: exactly `Network(seed=0).fit`
        h = single_run(X, y, Xt, yt, r)
        assert r["accuracy_per_epoch"] == h["val_accuracy"], r["label"]
        assert r["final_loss"] == pytest.approx(h["val_loss"][-1], rel=0, abs=1e-12), r["label"]
    assert len({r["final_accuracy"] for r in res}) > 1, "the axes change the numbers"


def test_every_activation_and_optimizer_row_is_its_own_network_run(sample):
    """order="independent": each row exactly its own Network fit, for every row of both tables."""
    X, y, Xt, yt = sample
    grid = expand_grid(sizes=[SIZES], activations=sorted(activations.HIDDEN), optimizers=sorted(optim.OPTIMIZERS),
                       etas=[0.1], seeds=[3], epochs=1)
    res = sweep.run_sweep(grid, (X, y, Xt, yt), device="cpu", dtype="float64", order="independent")
    assert res.ok
    for r in res:
        h = single_run(X, y, Xt, yt, r)
        assert r["accuracy_per_epoch"] == h["val_accuracy"], r["label"]


def test_per_layer_activation_row_is_a_network_run(sample):
    X, y, Xt, yt = sample
    deep = [784, 8, 8, 10]
    (r,) = sweep.run_sweep(expand_grid(sizes=[deep], activations=[[ACTS[1], ACTS[0]]], optimizers=[OPTS[1]],
                                       etas=[0.05], epochs=1), (X, y, Xt, yt), device="cpu", dtype="float64")
    assert r["activation"] == f"{ACTS[1]},{ACTS[0]}" and r["status"] == "ok"
    assert r["accuracy_per_epoch"] == single_run(X, y, Xt, yt, r, sizes=deep)["val_accuracy"]


# --- the table and the plot ---------------------------------------------------------------------


def _row(i, **kw):
    row = {"index": i, "sizes": SIZES, "eta": 0.1, "lmbda": 0.0, "seed": 0, "batch_size": 10, "cost": "quadratic",
           "activation": "sigmoid", "optimizer": "sgd", "final_accuracy": 0.5, "best_accuracy": 0.5, "best_epoch": 1,
           "seconds": 0.1, "diverged": False, "status": "ok"}
    row.update(kw)
    return {k: v for k, v in row.items() if v is not None}


def test_table_shows_the_columns_only_when_they_vary():
    def head(rows):
        return sweep.format_table(rows).splitlines()[0].split()

    assert "activation" not in head([_row(0), _row(1, eta=1.0)]) and "optimizer" not in head([_row(0)])
    h = head([_row(0), _row(1, activation=ACTS[1])])
    assert "activation" in h and "optimizer" not in h
    h = head([_row(0), _row(1, optimizer=OPTS[1])])
    assert "optimizer" in h and "activation" not in h
    lines = sweep.format_table([_row(0), _row(1, activation=ACTS[1], optimizer=OPTS[1])]).splitlines()
    assert lines[0].split()[5:7] == ["activation", "optimizer"]
    assert lines[2].split()[5:7] == ["sigmoid", "sgd"] and lines[3].split()[5:7] == [ACTS[1], OPTS[1]]
    # rows written before the axes existed mean sigmoid and sgd
    old = _row(0, activation=None, optimizer=None)
    assert "activation" not in head([old, _row(1)])
    lines = sweep.format_table([old, _row(1, activation=ACTS[1])]).splitlines()
    assert lines[2].split()[5] == "sigmoid" and lines[3].split()[5] == ACTS[1]


def test_plot_treats_activation_and_optimizer_as_categories():
    pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra: pip install -e '.[dev]'")
    rows = [_row(i, activation=a, optimizer=o, best_accuracy=0.1 + i / 10)
            for i, (a, o) in enumerate((a, o) for a in ACTS for o in OPTS)]
    fig = sweep.plot_sweep(rows)
    assert [ax.get_xlabel() for ax in fig.axes] == ["activation", "optimizer"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ACTS
    old = [_row(0, activation=None, best_accuracy=0.3), _row(1, activation=ACTS[1], best_accuracy=0.4)]
    assert [t.get_text() for t in sweep.plot_sweep(old).axes[0].get_xticklabels()] == ["sigmoid", ACTS[1]]


# --- the command --------------------------------------------------------------------------------


def test_cli_sweeps_activations_and_json_rows_carry_them(tmp_path):
    out = tmp_path / "s.json"
    r = run("sweep", "--data", "sample", "--limit", "300", "--sizes", "784,8,10", "--activation", *ACTS,
            "--optimizer", OPTS[1], "--eta", "0.05", "--epochs", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "2 configurations in 2 stacks" in r.stdout
    lines = r.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sizes "))
    assert "activation" in lines[start].split() and "optimizer" not in lines[start].split(), "only the one that varies"
    assert [line.split()[5] for line in lines[start + 2:start + 4]] == ACTS
    rows = json.loads(out.read_text())["rows"]
    assert [(x["activation"], x["optimizer"]) for x in rows] == [(a, OPTS[1]) for a in ACTS]
    assert all(x["status"] == "ok" for x in rows)


@pytest.mark.parametrize("args, fragment", [
    (["--activation", "swish"], "argument --activation: invalid choice: 'swish' (choose from "),
    (["--activation", "sigmoid,swish"], "invalid choice: 'swish'"),
    (["--optimizer", "sgd", "nope"], "argument --optimizer: invalid choice: 'nope' (choose from "),
    (["--activation", "sigmoid,sigmoid"], "names 2 hidden layers, but sizes (--sizes) 784,30,10 has 1"),
    (["--optimizer", "sgd", "SGD"], "optimizers (--optimizer) lists sgd twice"),
])
def test_cli_bad_activation_or_optimizer_exits_2_with_one_line(args, fragment):
    r = run("sweep", "--data", "sample", "--epochs", "1", *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", "nothing printed, nothing trained"
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastnet sweep: error: ") and fragment in err[0], r.stderr
    if "choose from" in fragment:
        table = activations.HIDDEN if "activation" in fragment else optim.OPTIMIZERS
        assert all(name in err[0] for name in table), err[0]
