"""Issue #25: successive halving inside stacks (rungs, ties, compaction and merging of survivors),
sweeps over activations and optimizers under halving, and sweeps that survive Ctrl-C and resume bit
for bit (in process, with the interrupt injected at a random step, and as a user runs it: SIGINT)."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from fastnet import data as fdata
from fastnet import sweep, training
from fastnet.cli import main
from fastnet.sweep import expand_grid, keep_best, rung_epochs


@pytest.fixture(scope="module")
def small():
    (X, y), (Xt, yt) = fdata.load("sample")
    return X[:300], y[:300], Xt[:400], yt[:400]


def without_times(rows):
    """Rows as they must agree between runs: everything but wall-clock times."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "stack_seconds")} for r in rows]


# --- rung arithmetic and ties ------------------------------------------------------------------


@pytest.mark.parametrize("epochs, halving, grace, rungs", [
    (9, 3, 1, [1, 3, 9]), (10, 3, 1, [1, 3, 9, 10]), (8, 2, 1, [1, 2, 4, 8]), (30, 2, 4, [4, 8, 16, 30]),
    (5, 3, 5, [5]), (5, 3, 7, [5]), (1, 2, 1, [1]), (9, None, 1, [9])])
def test_rungs(epochs, halving, grace, rungs):
    assert rung_epochs(epochs, halving, grace) == rungs


def test_keep_best_rounds_up_and_breaks_ties_by_lower_index():
    # ceil(n / F): 7 of 3 -> 3 kept, 2 of 3 -> 1, 1 of 5 -> 1 (never none)
    scores = [(i, a) for i, a in enumerate([0.1, 0.5, 0.5, 0.9, None, 0.5, 0.2])]
    assert keep_best(scores, 3) == [1, 2, 3], "0.9, then the tie at 0.5 goes to indices 1 and 2, not 5"
    assert keep_best(scores[::-1], 3) == [1, 2, 3], "the order given does not matter"
    assert keep_best([(4, 0.3), (9, 0.3)], 3) == [4]
    assert keep_best([(6, None)], 5) == [6]
    assert keep_best([(0, None), (1, 0.0)], 2) == [1], "a diverged net (None) ranks below any accuracy"


# --- a pruned configuration is the same configuration trained alone -----------------------------


def test_halving_rows_equal_each_configuration_trained_alone_and_survivors_merge(small, monkeypatch):
    """Two activations x two optimizers x three etas: four stack recipes, pruned together by one
    ranking; with --max-stack 2 the survivors of several stacks merge. Every row, pruned or not,
    is bit for bit the configuration trained alone to its epochs (weights, optimizer state and
    the shared minibatch order carried through the checkpoints)."""
    grid = expand_grid(sizes=[[784, 12, 10]], activations=["sigmoid", "relu"], optimizers=["sgd", "adam"],
                       etas=[0.01, 0.3, 3.0], costs=["cross_entropy"], epochs=4)
    merges = []
    real = sweep._merge_checkpoints

    def spy(pieces, configs, path, run_kw):
        merges.append((len({src for src, _ in pieces}), len(configs)))
        return real(pieces, configs, path, run_kw)

    monkeypatch.setattr(sweep, "_merge_checkpoints", spy)
    res = sweep.run_sweep(grid, small, device="cpu", max_k=2, halving=2, grace=1)
    assert res.config["rungs"] == [1, 2, 4]
    statuses = [r["status"] for r in res]
    # 12 -> 6 at epoch 1, 6 -> 3 at epoch 2, 3 finish at epoch 4: 12 + 6 + 6 = 24 network-epochs
    assert sum(r["pruned_at"] == 1 for r in res) == 6 and sum(r["pruned_at"] == 2 for r in res) == 3
    assert res.config["epochs_trained"] == 12 * 1 + 6 * 1 + 3 * 2 == 24 and res.config["epochs_full"] == 48
    assert statuses.count("ok") + sum(r["status"] == "diverged" and r["pruned_at"] is None for r in res) == 3
    assert any(n_sources >= 2 for n_sources, _ in merges), f"no survivors of two stacks merged: {merges}"
    for c, row in zip(grid, res):
        assert row["epochs_trained"] == len(row["accuracy_per_epoch"]) == (row["pruned_at"] or 4)
        (alone,) = sweep.run_stack([c], small, device="cpu", epochs=row["epochs_trained"])
        assert alone["accuracy_per_epoch"] == row["accuracy_per_epoch"], c.label()
        assert alone["final_loss"] == row["final_loss"], c.label()
    # the pruned kept their last measured accuracy; the survivors were the best at each rung
    at1 = {i: r["accuracy_per_epoch"][0] for i, r in enumerate(res)}
    kept1 = [i for i, r in enumerate(res) if r["pruned_at"] != 1]
    assert kept1 == keep_best([(i, None if res[i]["diverged"] and res[i]["pruned_at"] == 1 else a)
                               for i, a in at1.items()], 2)


def test_no_halving_without_json_trains_as_before(small):
    """No --halving and no --json: no checkpoints at all, one rung, the rows of before."""
    grid = expand_grid(sizes=[[784, 12, 10]], etas=[0.5, 3.0], epochs=2)
    res = sweep.run_sweep(grid, small, device="cpu")
    assert res.state["rungs"] == [2] and [r["status"] for r in res] == ["ok", "ok"]
    assert [r["epochs_trained"] for r in res] == [2, 2] and res.config["pruned"] == 0


# --- Ctrl-C and resume --------------------------------------------------------------------------


class _FlagAt:
    """Stands in for training.SigintFlag: Ctrl-C "arrives" at the n-th time the epoch loop asks
    (counting over every fit of the sweep); n None: never, just count."""
    reads = 0
    at = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def flag(self):
        type(self).reads += 1
        return type(self).at is not None and type(self).reads >= type(self).at


@pytest.mark.parametrize("halving", [3, None])
def test_resume_after_ctrl_c_at_a_random_step_is_bit_for_bit(small, tmp_path, monkeypatch, halving):
    grid = expand_grid(sizes=[[784, 12, 10]], etas=[0.3, 1.0, 3.0], seeds=[0, 1, 2], optimizers=["momentum"],
                       epochs=4)
    kw = dict(device="cpu", max_k=4, halving=halving)
    monkeypatch.setattr(training, "SigintFlag", _FlagAt)
    _FlagAt.reads, _FlagAt.at = 0, None
    whole = sweep.run_sweep(grid, small, **kw, json_path=tmp_path / "whole.json")
    total = _FlagAt.reads
    assert total > 3
    seed = random.randrange(10**6)
    at = random.Random(seed).randrange(1, total + 1)
    out = tmp_path / "part.json"
    _FlagAt.reads, _FlagAt.at = 0, at
    with pytest.raises(sweep.SweepInterrupted) as info:
        sweep.run_sweep(grid, small, **kw, json_path=out)
    part = info.value.result
    assert part.config["interrupted"] and not part.state["done"], seed
    saved = json.loads(out.read_text())
    assert saved["state"]["fingerprint"] == whole.state["fingerprint"]
    assert [r["status"] for r in saved["rows"]] == [r["status"] for r in part], "the JSON holds the table shown"
    assert os.listdir(str(out) + ".checkpoints"), "the unfinished stack's checkpoint is kept beside the JSON"
    _FlagAt.at = None
    resumed = sweep.run_sweep(grid, small, **kw, json_path=out, resume=True)
    assert resumed.config["resumed"] and resumed.state["done"]
    assert without_times(resumed.rows) == without_times(whole.rows), f"interrupted at read {at} of {total}"
    strip = re.compile(r" +\d+\.\d\d  (?=ok|pruned|diverged)")
    assert strip.sub(" ", sweep.format_table(resumed)) == strip.sub(" ", sweep.format_table(whole))
    assert not os.path.exists(str(out) + ".checkpoints"), "a finished sweep leaves no checkpoints"
    again = sweep.run_sweep(grid, small, **kw, json_path=out, resume=True)   # nothing missing: nothing runs
    assert without_times(again.rows) == without_times(whole.rows)


def _table(stdout):
    strip = re.compile(r" +\d+\.\d\d  (?=ok|pruned|diverged)")
    return [strip.sub(" ", line) for line in stdout.splitlines()
            if line.startswith("784-") or line.startswith("successive halving (")]


def test_sigint_then_resume_gives_the_uninterrupted_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != sweep.FAIL_ENV}
    cmd = [sys.executable, "-m", "fastnet", "sweep", "--data", "sample", "--limit", "3000", "--eta", "0.5", "1", "2",
           "3", "5", "8", "--seeds", "0-2", "--epochs", "9", "--halving", "3", "--device", "cpu"]
    t0 = time.perf_counter()
    whole = subprocess.run(cmd + ["--json", str(tmp_path / "whole.json")], capture_output=True, text=True, env=env,
                           timeout=300)
    took = time.perf_counter() - t0
    assert whole.returncode == 0, whole.stderr
    assert "trained 42 of the full grid's 162 network-epochs (26 %), saved 120" in whole.stdout
    assert sum("pruned at epoch" in line for line in _table(whole.stdout)) == 16
    out = tmp_path / "s.json"
    rng = random.Random()
    for attempt in range(4):   # a random moment after the sweep started; again if it finished first
        out.unlink(missing_ok=True)
        proc = subprocess.Popen(cmd + ["--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        first = proc.stdout.readline()   # "data: ..." - the command is running
        assert first.startswith("data:"), first
        delay = rng.uniform(0.0, 0.5 * took) / (attempt + 1)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        if proc.returncode == 130:
            break
        assert proc.returncode == 0, (proc.returncode, stderr)
    assert proc.returncode == 130, "the sweep always finished before SIGINT"
    assert "to go on, run the same command with --resume" in stdout and out.exists(), (delay, stdout, stderr)
    resumed = subprocess.run(cmd + ["--json", str(out), "--resume"], capture_output=True, text=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out}" in resumed.stdout
    assert _table(resumed.stdout) == _table(whole.stdout), f"SIGINT after {delay:.2f} s"
    rows = json.loads(out.read_text())["rows"]
    assert without_times(rows) == without_times(json.loads((tmp_path / "whole.json").read_text())["rows"])


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["--halving", "1"], "argument --halving: must be an int >= 2"),
    (["--halving", "two"], "argument --halving: must be an int >= 2"),
    (["--halving", "3", "--grace", "0"], "argument --grace: must be an int >= 1"),
    (["--grace", "2"], "--grace 2 is the first rung of successive halving, which is off"),
    (["--resume"], "--resume goes on from a sweep's JSON state, but no --json was given"),
])
def test_bad_halving_and_resume_flags_exit_2_with_one_line(args, fragment, capsys, tmp_path):
    try:
        rc = main(["sweep", "--data", "sample", "--epochs", "1", "--device", "cpu", *args])
    except SystemExit as exc:   # argparse's refusals
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 2 and out == "", out
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_resume_refuses_another_grid_data_or_settings_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "s.json"
    base = ["sweep", "--data", "sample", "--limit", "300", "--sizes", "784,8,10", "--eta", "1", "3", "--epochs", "2",
            "--device", "cpu", "--quiet", "--json", str(out)]
    assert main(base + ["--halving", "2"]) == 0
    capsys.readouterr()
    before = out.read_bytes()
    for extra, fragment in [(["--eta", "1", "2"], "was written for another grid (2 configurations; this one has 2"),
                            (["--epochs", "3"], "was written for another grid"),
                            (["--limit", "200"], "was written for other data"),
                            (["--halving", "3"], "was written with halving (--halving) 2; this sweep has 3"),
                            ([], "was written with halving (--halving) 2; this sweep has None"),
                            (["--max-stack", "1", "--halving", "2"], "max_k (--max-stack) 8; this sweep has 1")]:
        args = base + ["--resume"] + extra
        if "--halving" not in extra and extra != []:
            args += ["--halving", "2"]
        assert main(args) == 2, extra
        o, err = capsys.readouterr()
        assert o == "" and len(err.strip().splitlines()) == 1 and fragment in err, (extra, err)
        assert "Fix: run the same grid on the same data" in err
        assert out.read_bytes() == before, "a refused resume leaves the JSON as it was"
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    assert main(base[:-1] + [str(tmp_path / "other.json"), "--resume"]) == 2
    assert "holds no sweep state to resume" in capsys.readouterr().err


def test_python_api_refusals(small):
    grid = expand_grid(sizes=[[784, 12, 10]], epochs=2)
    with pytest.raises(ValueError, match=r"halving \(--halving\) must be an int >= 2"):
        sweep.run_sweep(grid, small, device="cpu", halving=1)
    with pytest.raises(ValueError, match=r"grace \(--grace\) must be an int >= 1"):
        sweep.run_sweep(grid, small, device="cpu", halving=2, grace=0)
    with pytest.raises(ValueError, match=r"no json_path \(--json\) was given"):
        sweep.run_sweep(grid, small, device="cpu", resume=True)
    mixed = expand_grid(sizes=[[784, 12, 10]], epochs=2) + expand_grid(sizes=[[784, 12, 10]], epochs=3)
    with pytest.raises(ValueError, match="train for \\[2, 3\\] epochs"):
        sweep.run_sweep(mixed, small, device="cpu", halving=2)


# --- the table, the JSON and the picture ---------------------------------------------------------


def test_json_rows_table_and_plot_mark_pruned(small, tmp_path):
    grid = expand_grid(sizes=[[784, 12, 10]], etas=[0.1, 1.0, 3.0, 1e6], costs=["cross_entropy"], epochs=3)
    res = sweep.run_sweep(grid, small, device="cpu", halving=2, json_path=tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    for row in doc["rows"]:
        assert {"status", "epochs_trained", "final_accuracy", "best_accuracy", "best_epoch"} <= set(row)
        assert row["status"] in sweep.STATUSES
    by_eta = {r["eta"]: r for r in doc["rows"]}
    assert by_eta[1e6]["status"] == "diverged" and by_eta[1e6]["pruned_at"] == 1, "a NaN net ranks last"
    assert by_eta[1e6]["best_accuracy"] is None
    pruned = [r for r in doc["rows"] if r["status"] == "pruned"]
    assert pruned and all(r["final_accuracy"] == r["accuracy_per_epoch"][-1] for r in pruned)
    table = sweep.format_table(res).splitlines()
    assert table[0].startswith("successive halving (--halving 2, rungs at epochs 1, 2, 3") and "saved" in table[0]
    assert sum(line.endswith(f"  pruned at epoch {r['pruned_at']}") and f"{r['eta']:6g}" in line
               for r in pruned for line in table) == len(pruned)
    assert any(line.endswith("diverged, pruned at epoch 1") for line in table)
    pytest.importorskip("matplotlib")
    fig = sweep.plot_sweep(res, tmp_path / "p.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "pruned (best before pruning)" in labels and "one configuration" in labels
    assert (tmp_path / "p.png").stat().st_size > 0


def test_ray_runs_one_task_per_stack_per_rung_with_the_local_numbers(small, tmp_path):
    pytest.importorskip("ray", reason="ray is in the dev extra: pip install -e '.[dev]'")
    grid = expand_grid(sizes=[[784, 12, 10]], etas=[0.3, 1.0, 3.0], seeds=[0, 1], epochs=4)
    local = sweep.run_sweep(grid, small, device="cpu", max_k=2, halving=2)
    ray_res = sweep.run_sweep(grid, small, device="cpu", max_k=2, halving=2, engine="ray",
                              json_path=tmp_path / "r.json")
    assert ray_res.config["cluster"]["address"] == "local"
    assert without_times(ray_res.rows) == without_times(local.rows)
    assert not os.path.exists(str(tmp_path / "r.json") + ".checkpoints")


def test_ctrl_c_while_a_rung_merges_its_survivors_resumes_to_the_same_rows(small, tmp_path, monkeypatch):
    """Ctrl-C between a rung's decision and its merged checkpoints (a window a real SIGINT
    hit in CI): the state stays the rung's end, so the resume decides from the same
    candidates again and not from the survivors alone (which pruned one survivor more)."""
    grid = expand_grid(sizes=[[784, 12, 10]], etas=[0.3, 1.0, 3.0], seeds=[0, 1, 2], optimizers=["momentum"],
                       epochs=4)
    kw = dict(device="cpu", max_k=4, halving=3)
    whole = sweep.run_sweep(grid, small, **kw, json_path=tmp_path / "whole.json")
    real = sweep._merge_checkpoints
    calls = []

    def interrupted_merge(*a, **k):
        calls.append(1)
        if len(calls) == 1:   # the first rung's survivors, before their stack is written
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sweep, "_merge_checkpoints", interrupted_merge)
    out = tmp_path / "part.json"
    with pytest.raises(sweep.SweepInterrupted):
        sweep.run_sweep(grid, small, **kw, json_path=out)
    assert len(calls) == 1
    monkeypatch.setattr(sweep, "_merge_checkpoints", real)
    resumed = sweep.run_sweep(grid, small, **kw, json_path=out, resume=True)
    assert without_times(resumed.rows) == without_times(whole.rows)
    assert resumed.config["epochs_trained"] == whole.config["epochs_trained"]
