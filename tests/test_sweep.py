"""fastnet sweep: the grid, its checks, the grouping into stacks, and whole sweeps run as a user runs
them (subprocess), on the local engine and on a local Ray cluster, with and without a failing stack."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastnet import sweep
from fastnet.sweep import Config, expand_grid, group_stacks, parse_int_ranges


def run(*args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != sweep.FAIL_ENV}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "fastnet", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def cfg(eta=3.0, seed=0, sizes=(784, 30, 10), batch_size=10, cost="quadratic", epochs=2, lmbda=0.0):
    return Config(tuple(sizes), float(eta), float(lmbda), seed, batch_size, cost, epochs)


# --- the grid ---------------------------------------------------------------------------------


def test_grid_counts_and_order():
    grid = expand_grid(sizes=[[784, 30, 10], [784, 100, 10]], etas=[0.5, 3], lmbdas=[0, 5.0], seeds=range(3),
                       batch_sizes=[10, 100], costs=["quadratic", "ce"], epochs=4)
    assert len(grid) == 2 * 2 * 2 * 3 * 2 * 2
    assert len(set(grid)) == len(grid)
    # sizes outermost, then batch size, cost, eta, lmbda, seed innermost
    assert [c.seed for c in grid[:4]] == [0, 1, 2, 0]
    assert (grid[3].lmbda, grid[6].eta, grid[12].cost, grid[24].batch_size, grid[48].sizes) == \
        (5.0, 3.0, "cross_entropy", 100, (784, 100, 10))
    assert all(c.epochs == 4 and isinstance(c.eta, float) for c in grid)
    assert grid[0] == Config((784, 30, 10), 0.5, 0.0, 0, 10, "quadratic", 4)


def test_grid_defaults_scalars_and_dict():
    (only,) = expand_grid()
    assert only == Config((784, 30, 10), 3.0, 0.0, 0, 10, "quadratic", 30)
    assert expand_grid(etas=1, sizes=[784, 100, 10], epochs=[5]) == [Config((784, 100, 10), 1.0, 0.0, 0, 10,
                                                                            "quadratic", 5)]
    assert expand_grid({"etas": [1, 2], "seeds": [4]}, epochs=1) == [cfg(1, 4, epochs=1), cfg(2, 4, epochs=1)]


def test_labels_are_short_and_distinct():
    grid = expand_grid(etas=[0.5, 1, 10], lmbdas=[0, 0.1], seeds=[0, 1])
    labels = [c.label() for c in grid]
    assert len(set(labels)) == len(labels)
    assert labels[0] == "784-30-10 eta=0.5 lmbda=0 seed=0 batch=10 quadratic epochs=30"


@pytest.mark.parametrize("tokens, expected", [
    (["0-7"], list(range(8))),
    (["0", "1", "5"], [0, 1, 5]),
    (["0-3", "9"], [0, 1, 2, 3, 9]),
    (["2-2"], [2]),
    (["1,4-5"], [1, 4, 5]),
    ("3", [3]),
])
def test_seed_ranges(tokens, expected):
    assert parse_int_ranges(tokens) == expected


@pytest.mark.parametrize("tokens, fragment", [
    (["7-0"], "runs backwards"), (["a"], "not an int or a range"), (["1-"], "not an int or a range"),
    (["0-x"], "not an int or a range"),
])
def test_bad_seed_ranges(tokens, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_int_ranges(tokens)


@pytest.mark.parametrize("grid, kw, error, fragment", [
    ({}, {}, ValueError, "the grid is empty"),
    (None, {"etas": []}, ValueError, "etas (--eta) is empty"),
    (None, {"sizes": []}, ValueError, "sizes (--sizes) is empty"),
    ({"eta": [1]}, {}, ValueError, "unknown grid parameter 'eta' (did you mean 'etas'?)"),
    ({"momentum": [0.9]}, {}, ValueError, "unknown grid parameter 'momentum'; the parameters are sizes"),
    ({"etas": [1]}, {"etas": [2]}, ValueError, "given twice"),
    (None, {"etas": [1, -1]}, ValueError, "etas (--eta) must be finite learning rates > 0. Actual: -1"),
    (None, {"etas": [float("nan")]}, ValueError, "etas (--eta) must be finite"),
    (None, {"lmbdas": [-0.1]}, ValueError, "lmbdas (--lmbda) must be finite L2 strengths >= 0"),
    (None, {"batch_sizes": [0]}, ValueError, "batch_sizes (--batch-size) must be ints >= 1"),
    (None, {"epochs": 0}, ValueError, "epochs (--epochs) must be an int >= 1"),
    (None, {"epochs": [1, 2]}, ValueError, "takes one value for the whole grid"),
    (None, {"seeds": [-1]}, ValueError, "seeds (--seeds) must be ints >= 0"),
    (None, {"sizes": [[784, 0, 10]]}, ValueError, "sizes[1] must be >= 1"),
    (None, {"sizes": [[784]]}, ValueError, "at least 2 layers"),
    (None, {"costs": ["hinge"]}, ValueError, "cost must be one of"),
    (None, {"seeds": [0, 1, 1]}, ValueError, "seeds (--seeds) lists 1 twice"),
    (None, {"etas": [1, 1.0]}, ValueError, "etas (--eta) lists 1 twice"),
    (None, {"costs": ["ce", "cross_entropy"]}, ValueError, "lists cross_entropy twice"),
    (None, {"sizes": [[784, 30, 10], (784, 30, 10)]}, ValueError, "lists 784,30,10 twice"),
    (None, {"etas": ["fast"]}, TypeError, "etas (--eta) must be numbers"),
    ([("etas", 1)], {}, TypeError, "grid must be a dict"),
])
def test_bad_grids_are_refused_with_one_clear_line(grid, kw, error, fragment):
    with pytest.raises(error) as info:
        expand_grid(grid, **kw) if grid is not None else expand_grid(**kw)
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg


def test_config_lists_are_checked():
    with pytest.raises(ValueError, match="no configurations to run"):
        group_stacks([], 8)
    with pytest.raises(ValueError, match=r"configs\[0\] and configs\[2\] are the same configuration"):
        group_stacks([cfg(1), cfg(2), cfg(1)], 8)
    with pytest.raises(TypeError, match="must be a fastnet.sweep.Config"):
        group_stacks([{"eta": 1}], 8)
    with pytest.raises(ValueError, match=r"max_k \(--max-stack\) must be an int >= 1"):
        group_stacks([cfg()], 0)


# --- stacks -----------------------------------------------------------------------------------


def test_grouping_shares_stacks_by_shape_and_respects_max_k():
    grid = expand_grid(sizes=[[784, 30, 10], [784, 100, 10]], etas=[0.5, 3], lmbdas=[0, 1], seeds=range(5),
                       batch_sizes=[10, 50], epochs=2)
    for max_k in (1, 3, 8, 20, 64):
        stacks = group_stacks(grid, max_k)
        assert all(1 <= len(s) <= max_k for s in stacks)
        assert sorted(c.label() for s in stacks for c in s) == sorted(c.label() for c in grid)
        for s in stacks:
            assert len({c.stack_key for c in s}) == 1, "one stack: one shape, batch size, cost, epochs"
        # the fewest stacks: one group of 20 same-shape configs needs ceil(20 / max_k)
        assert len(stacks) == 4 * -(-20 // max_k)
        # in grid order within each stack, and groups in order of first appearance
        flat = [c for s in stacks for c in s]
        keys = [c.stack_key for c in grid]
        assert [c.stack_key for c in flat] == sorted(keys, key=keys.index)
        for s in stacks:
            assert [grid.index(c) for c in s] == sorted(grid.index(c) for c in s)
    assert [len(s) for s in group_stacks(grid, 8)] == [7, 7, 6] * 4, "balanced: 20 -> 7 + 7 + 6"


def test_grouping_mixes_etas_lmbdas_seeds_but_not_shapes():
    a, b = cfg(1, 0), cfg(3, 1, lmbda=2.0)
    assert group_stacks([a, b], 8) == [[a, b]]
    for other in (cfg(1, sizes=(784, 100, 10)), cfg(1, batch_size=20), cfg(1, cost="cross_entropy"),
                  cfg(1, epochs=3)):
        assert group_stacks([a, other], 8) == [[a], [other]]


def test_a_stack_with_mixed_shapes_is_refused():
    X, y = np.zeros((4, 784), np.float32), np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"mixes sizes: '784-30-10 .*' and '784-100-10 .*'\. Fix: group the "
                                         r"configurations with group_stacks"):
        sweep.run_stack([cfg(1), cfg(3, sizes=(784, 100, 10))], (X, y, X, y), device="cpu")
    with pytest.raises(ValueError, match="mixes batch_size and epochs"):
        sweep.run_stack([cfg(1), cfg(3, batch_size=2, epochs=5)], (X, y, X, y), device="cpu")


def test_run_sweep_checks_data_and_options_before_any_work():
    X, y = np.zeros((20, 784), np.float32), np.arange(20) % 10
    data = (X, y, X, y)
    with pytest.raises(ValueError, match="takes 100 inputs; the data has 784 features"):
        sweep.run_sweep(expand_grid(sizes=[[100, 10]], epochs=1), data, device="cpu")
    with pytest.raises(ValueError, match="has 5 outputs; the data has 10 classes"):
        sweep.run_sweep(expand_grid(sizes=[[784, 5]], epochs=1), data, device="cpu")
    with pytest.raises(ValueError, match="batch_sizes .* 50 is larger than the 20 training samples"):
        sweep.run_sweep(expand_grid(batch_sizes=[50], epochs=1), data, device="cpu")
    with pytest.raises(ValueError, match="engine must be one of"):
        sweep.run_sweep(expand_grid(epochs=1), data, engine="dask")
    with pytest.raises(ValueError, match="is for engine='ray'"):
        sweep.run_sweep(expand_grid(epochs=1), data, address="ray://x:10001")


def test_local_sweep_in_process_rows_and_failure_hook(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.random((60, 16)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.int64)
    grid = expand_grid(sizes=[[16, 8, 2]], etas=[0.5, 2.0], seeds=[0, 1], epochs=3)
    seen = []
    monkeypatch.setenv(sweep.FAIL_ENV, "eta=0.5 ")
    res = sweep.run_sweep(grid, ((X, y), (X, y)), device="cpu", max_k=2, progress=seen.append)
    assert [len(rows) for rows in seen] == [2, 2], "progress: once per stack, with its rows"
    assert [r["index"] for r in res] == [0, 1, 2, 3] and [r["stack"] for r in res] == [0, 0, 1, 1]
    assert [r["status"] for r in res] == ["failed", "failed", "ok", "ok"]
    assert [f["eta"] for f in res.failures] == [0.5, 0.5] and not res.ok
    assert res.failures[0]["error"].startswith("RuntimeError: injected failure: FASTNET_SWEEP_FAIL='eta=0.5 '")
    good = res[2]
    assert len(good["accuracy_per_epoch"]) == 3 and good["final_accuracy"] == good["accuracy_per_epoch"][-1]
    assert good["best_accuracy"] == max(good["accuracy_per_epoch"])
    assert good["accuracy_per_epoch"][good["best_epoch"] - 1] == good["best_accuracy"]
    assert good["stack_size"] == 2 and good["seconds"] == pytest.approx(good["stack_seconds"] / 2)
    assert res.config["failed"] == 2 and res.config["stacks"] == 2
    table = sweep.format_table(res)
    assert len(table.splitlines()) == 2 + 4 and table.count("failed: RuntimeError: injected failure") == 2


def test_ray_missing_is_a_clear_message(monkeypatch, capsys):
    from fastnet.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'fastnet\[ray\]'"):
        sweep.require_ray()
    rc = main(["sweep", "--engine", "ray", "--data", "sample", "--epochs", "1"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastnet sweep: error: engine 'ray' needs Ray")
    assert "pip install 'fastnet[ray]'" in lines[0]


def test_table_and_json_with_nan(tmp_path):
    rows = [{"index": 1, "sizes": [784, 30, 10], "eta": 100.0, "lmbda": 0.0, "seed": 0, "batch_size": 10,
             "cost": "quadratic", "final_accuracy": 0.098, "best_accuracy": 0.1, "best_epoch": 1,
             "final_loss": float("nan"), "seconds": 0.25, "diverged": True, "status": "ok"},
            {"index": 0, "sizes": [784, 30, 10], "eta": 3.0, "lmbda": 0.0, "seed": 0, "batch_size": 10,
             "cost": "cross_entropy", "status": "failed", "error": "RuntimeError: boom"}]
    lines = sweep.format_table(rows).splitlines()
    assert "cost" in lines[0], "two costs: the table shows which"
    assert "failed: RuntimeError: boom" in lines[2] and lines[3].endswith("ok, diverged")
    path = tmp_path / "s.json"
    sweep.save_json(sweep.SweepResult(rows, {"engine": "local"}), path, {"data": "sample"})
    d = json.loads(path.read_text())
    assert d["config"] == {"engine": "local", "data": "sample"} and d["rows"][0]["final_loss"] is None
    assert {"cpu_model", "numpy", "python"} <= set(d["machine"])


# --- the command, as a user runs it -----------------------------------------------------------

SWEEP = ["sweep", "--data", "sample", "--limit", "2000", "--sizes", "784,30,10", "--eta", "1", "3", "--seeds",
         "0-1", "--epochs", "2"]
ROW_FIELDS = {"index", "stack", "label", "sizes", "eta", "lmbda", "seed", "batch_size", "cost", "epochs",
              "final_accuracy", "best_accuracy", "best_epoch", "accuracy_per_epoch", "seconds", "stack_seconds",
              "stack_size", "diverged", "status", "error"}


def table_rows(stdout):
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sizes "))
    return [line for line in lines[start + 2:] if line.startswith("784-")]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("local")
    r = run(*SWEEP, "--engine", "local", "--json", str(d / "out.json"), "--plot", str(d / "acc.png"))
    return r, d


def test_sweep_local_end_to_end(local_run):
    r, d = local_run
    assert r.returncode == 0, r.stderr
    assert "embedded MNIST sample" in r.stdout and "first 2,000 (--limit)" in r.stdout
    assert "sweep: 4 configurations in 1 stack of at most 8 networks" in r.stdout
    rows = table_rows(r.stdout)
    assert len(rows) == 4 and all(line.endswith(" ok") for line in rows)
    assert [line.split()[1:4] for line in rows] == [["1", "0", "0"], ["1", "0", "1"], ["3", "0", "0"],
                                                    ["3", "0", "1"]]
    assert "4 of 4 configurations ran" in r.stdout
    assert "\r" not in r.stdout + r.stderr, "no progress bar when stdout is not a terminal"
    doc = json.loads((d / "out.json").read_text())
    assert {"machine", "config", "rows"} <= set(doc)
    assert doc["config"]["engine"] == "local" and doc["config"]["limit"] == 2000
    assert len(doc["rows"]) == 4
    for row in doc["rows"]:
        assert ROW_FIELDS <= set(row), ROW_FIELDS - set(row)
        assert row["status"] == "ok" and row["error"] is None and row["epochs"] == 2
        assert len(row["accuracy_per_epoch"]) == 2 and 0.1 < row["final_accuracy"] <= 1.0
        assert row["stack_size"] == 4
    # the table prints what the JSON holds
    assert [line.split()[5] for line in rows] == [f"{row['final_accuracy']:.4f}" for row in doc["rows"]]
    assert (d / "acc.png").stat().st_size > 0 and "saved best accuracy against the swept parameters" in r.stdout


def test_sweep_ray_gives_the_same_numbers(local_run, tmp_path):
    pytest.importorskip("ray", reason="ray is in the dev extra: pip install -e '.[dev]'")
    r_local, d = local_run
    assert r_local.returncode == 0, r_local.stderr
    r = run(*SWEEP, "--engine", "ray", "--json", str(tmp_path / "out.json"))
    assert r.returncode == 0, r.stderr
    assert "engine ray (a Ray cluster on this machine's cores)" in r.stdout
    assert len(table_rows(r.stdout)) == 4
    local = json.loads((d / "out.json").read_text())["rows"]
    ray_rows = json.loads((tmp_path / "out.json").read_text())
    assert ray_rows["config"]["engine"] == "ray" and ray_rows["config"]["cluster"]["cpus"] == (os.cpu_count() or 1)
    ray_rows = ray_rows["rows"]
    assert [x["label"] for x in ray_rows] == [x["label"] for x in local]
    for a, b in zip(local, ray_rows):  # same seeds, same stacks: the same numbers
        assert a["final_accuracy"] == b["final_accuracy"], (a["label"], a["final_accuracy"], b["final_accuracy"])
        assert a["accuracy_per_epoch"] == b["accuracy_per_epoch"]


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_failing_stack_is_reported_and_the_others_finish(engine, tmp_path):
    if engine == "ray":
        pytest.importorskip("ray", reason="ray is in the dev extra: pip install -e '.[dev]'")
    out = tmp_path / "out.json"
    r = run(*SWEEP, "--engine", engine, "--max-stack", "2", "--json", str(out),
            env_extra={sweep.FAIL_ENV: "eta=1 "})
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "4 configurations in 2 stacks of at most 2 networks" in r.stdout
    rows = table_rows(r.stdout)
    assert len(rows) == 4
    for line in rows[:2]:  # the eta=1 stack: its config and its error
        assert line.split()[:2] == ["784-30-10", "1"]
        assert "failed: RuntimeError: injected failure: FASTNET_SWEEP_FAIL='eta=1 '" in line
    assert all(line.split()[1] == "3" and line.endswith(" ok") for line in rows[2:])
    assert "2 of 4 configurations ran" in r.stdout and "2 failed" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["config"]["failed"] == 2
    failed = [x for x in doc["rows"] if x["status"] == "failed"]
    assert [(x["eta"], x["seed"]) for x in failed] == [(1.0, 0), (1.0, 1)]
    assert all(x["error"].startswith("RuntimeError: injected failure") and x["final_accuracy"] is None
               for x in failed)
    assert all(x["status"] == "ok" and x["final_accuracy"] > 0.1 for x in doc["rows"] if x["eta"] == 3.0)


@pytest.mark.parametrize("args, fragment", [
    (["--eta", "0", "1"], "etas (--eta) must be finite learning rates > 0"),
    (["--eta", "1", "1"], "etas (--eta) lists 1 twice"),
    (["--seeds", "0-3", "2"], "seeds (--seeds) lists 2 twice"),
    (["--seeds", "5-2"], "range '5-2' runs backwards"),
    (["--sizes", "784,30,10", "784,30,10"], "sizes (--sizes) lists 784,30,10 twice"),
    (["--sizes", "100,10"], "takes 100 inputs; the data has 784 features"),
    (["--lmbda", "-1"], "lmbdas (--lmbda) must be finite L2 strengths >= 0"),
    (["--cost", "hinge"], "cost must be one of"),
    (["--batch-size", "9000"], "9000 is larger than the 8000 training samples"),
    (["--max-stack", "0"], "--max-stack must be an int >= 1"),
    (["--engine", "spark"], "invalid choice: 'spark'"),
    (["--address", "127.0.0.1:6379"], "is for engine='ray'"),
    (["--json", "/nonexistent/dir/out.json"], "/nonexistent/dir does not exist"),
])
def test_bad_input_exits_2_with_one_line_before_any_work(args, fragment):
    r = run("sweep", "--data", "sample", "--epochs", "1", *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", "nothing printed, nothing trained"
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastnet sweep: error: ") and fragment in err[0], r.stderr


def test_order_independent_is_exactly_a_separate_network_run():
    import fastnet
    from fastnet import data

    (X, y), (Xt, yt) = data.load("sample")
    X, y = X[:1000], y[:1000]
    grid = expand_grid(etas=[3.0], seeds=[1, 2], epochs=2)
    res = sweep.run_sweep(grid, (X, y, Xt, yt), device="cpu", order="independent")
    for row in res:
        net = fastnet.Network([784, 30, 10], seed=row["seed"], device="cpu")
        h = net.fit(X, y, epochs=2, batch_size=10, eta=3.0, validation_data=(Xt, yt))
        assert row["accuracy_per_epoch"] == h["val_accuracy"], row["label"]


def test_plot_has_one_panel_per_swept_parameter(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra: pip install -e '.[dev]'")
    rows = [{"status": "ok", "sizes": list(s), "eta": e, "lmbda": lm, "seed": seed, "batch_size": 10,
             "cost": "quadratic", "best_accuracy": 0.5 + e / 100 + lm / 10 + len(s) / 100}
            for s in ((784, 30, 10), (784, 100, 10)) for e in (0.3, 3.0) for lm in (0.0, 1.0) for seed in (0, 1)]
    rows.append({**rows[0], "eta": 30.0, "status": "failed", "best_accuracy": None})
    fig = sweep.plot_sweep(rows, tmp_path / "p.png")
    assert [ax.get_xlabel() for ax in fig.axes] == ["sizes", "eta (learning rate)", "lmbda (L2)"]
    assert fig.axes[1].get_xscale() == "log", "etas spanning 10x: log scale"
    assert len(fig.axes[0].lines[0].get_xdata()) == 16, "failed rows are left out"
    assert (tmp_path / "p.png").stat().st_size > 0
    only_seeds = [r for r in rows[:16] if r["eta"] == 0.3 and r["lmbda"] == 0.0 and r["sizes"][1] == 30]
    assert [ax.get_xlabel() for ax in sweep.plot_sweep(only_seeds).axes] == ["seed"]


def test_progress_bar_on_a_terminal_counts_configurations():
    from conftest import run_tty

    env = {k: v for k, v in os.environ.items() if k != sweep.FAIL_ENV}
    rc, text = run_tty(*SWEEP, "--max-stack", "2", timeout=120, env=env)
    assert rc == 0, text
    assert "configurations:" in text and "/4" in text and "\r" in text, "a tqdm bar over the 4 configurations"
    assert "4 of 4 configurations ran" in text


def test_device_cuda_without_a_gpu_exits_2_before_any_work():
    from fastnet import backend

    if backend.cuda_status()[0]:
        pytest.skip("a CUDA GPU is usable here: --device cuda is valid")
    r = run("sweep", "--data", "sample", "--epochs", "1", "--device", "cuda", "--max-stack", "3")
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "device='cuda' but no usable CUDA GPU" in err[0]


def test_a_diverging_net_is_marked_and_its_stack_mates_are_unaffected():
    from fastnet import data

    (X, y), (Xt, yt) = data.load("sample")
    X, y = X[:1000], y[:1000]
    both = sweep.run_sweep(expand_grid(etas=[0.5, 1e6], costs=["cross_entropy"], epochs=1), (X, y, Xt, yt),
                           device="cpu")
    alone = sweep.run_sweep(expand_grid(etas=[0.5], costs=["cross_entropy"], epochs=1), (X, y, Xt, yt),
                            device="cpu")
    assert [r["status"] for r in both] == ["ok", "diverged"] and both[0]["stack_size"] == 2
    assert [r["diverged"] for r in both] == [False, True]
    assert both[1]["best_accuracy"] is None and both[1]["final_loss"] is None, "no score from a NaN net"
    assert both[0]["accuracy_per_epoch"] == alone[0]["accuracy_per_epoch"]
    assert sweep.format_table(both).splitlines()[3].endswith(" diverged")
    assert both.ok, "a diverged configuration ran"
