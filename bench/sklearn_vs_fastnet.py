"""fastnet.sklearn.MLPClassifier against scikit-learn's MLPClassifier: time to the same accuracy.

Full Fashion-MNIST (60,000 train / 10,000 test, pixels / 255 as float32 for both), the same
architecture ([784, H, 10], sigmoid hidden layer, softmax output, log-loss) and the same SGD
recipe: scikit-learn with ``solver="sgd", learning_rate="constant", momentum=0,
nesterovs_momentum=False`` and the same ``batch_size``, ``learning_rate_init``, ``alpha``
and epochs. (The initialisations differ: Glorot-uniform in scikit-learn, N(0, 1/n_in) here.)

scikit-learn runs one ``partial_fit`` per epoch (one pass over the data with that recipe),
scored on the test split after each, outside the clock. fastnet's estimator is fitted with
``max_iter=k`` for k = 1, 2, ...: a seeded fit's first k epochs are the same whatever
max_iter is, so the wall time of the fit of k epochs (setup included) is its time to its
k-th epoch's accuracy. The target is the lower of the two best test accuracies; each side's
time to it is the time of its first epoch at or above it.

Two races (``--race``):

- ``defaults`` (the default): scikit-learn's own defaults on both sides, float64 input as
  users load it: ``MLPClassifier(max_iter=5)`` on full Fashion-MNIST and ``MLPRegressor()``
  on a 50,000-row ``make_regression`` set (100 features, standardised y); fit wall time,
  per-epoch time, test accuracy / R² and the ratios. Writes
  ``bench/results/sklearn-defaults-vs-fastnet-<data>-cpu-<date>.json``.
- ``sgd``: the plain-SGD batch-10 race described above; writes
  ``bench/results/sklearn-vs-fastnet-<data>-h<H>-b<B>-cpu-<date>.json``.

Run: ``python bench/sklearn_vs_fastnet.py [--race defaults|sgd] [--quick] ...``; ``--quick``
is a smoke run on a few thousand rows that saves nothing. ``sgd`` takes ``[--epochs 10]
[--hidden 100] [--batch-size 10] [--eta 0.1] [--alpha 1e-4]``; ``defaults`` takes
``[--epochs 5] [--reg-rows 50000] [--reg-features 100] [--repeat 1]``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
import warnings
from pathlib import Path

import numpy as np


#: The plain-SGD recipe of the batch-10 race, scikit-learn's spelling (both sides take it).
SGD_RECIPE = dict(activation="logistic", solver="sgd", learning_rate="constant", momentum=0.0,
                  nesterovs_momentum=False)


def sgd_race(argv=None) -> dict:
    """The plain-SGD batch-10 race (``--race sgd``): time to the same test accuracy."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--eta", type=float, default=0.1)
    ap.add_argument("--alpha", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="fashion")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/sklearn-vs-fastnet-...)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3,000 rows, 2 epochs, nothing saved")
    a = ap.parse_args(argv)

    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLP

    import fastnet
    from fastnet import data, machine
    from fastnet.sklearn import MLPClassifier as FastMLP

    (X, y), (Xt, yt) = data.load(a.data)
    X, Xt = X.astype(np.float32) / 255, Xt.astype(np.float32) / 255
    if a.quick:
        X, y, Xt, yt, a.epochs = X[:3000], y[:3000], Xt[:1000], yt[:1000], 2
    classes = np.unique(y)
    recipe = dict(hidden_layer_sizes=(a.hidden,), batch_size=a.batch_size, learning_rate_init=a.eta,
                  alpha=a.alpha, random_state=a.seed)
    warnings.simplefilter("ignore", ConvergenceWarning)

    # warm both up first (imports, BLAS and thread-pool start, fastnet's kernels from the disk cache)
    SkMLP(activation="logistic", solver="sgd", **recipe).partial_fit(X[:1000], y[:1000], classes=classes)
    FastMLP(max_iter=1, **SGD_RECIPE, **recipe).fit(X[:1000], y[:1000])
    # scikit-learn: one partial_fit per epoch, scored outside the clock
    sk = SkMLP(activation="logistic", solver="sgd", learning_rate="constant", momentum=0.0,
               nesterovs_momentum=False, shuffle=True, **recipe)
    sk_rows, clock = [], 0.0
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        sk.partial_fit(X, y, classes=classes) if epoch == 1 else sk.partial_fit(X, y)
        clock += time.perf_counter() - t0
        sk_rows.append({"epoch": epoch, "seconds": round(clock, 3), "test_accuracy": float(sk.score(Xt, yt))})
        print(f"scikit-learn epoch {epoch}: {sk_rows[-1]}", flush=True)

    # fastnet: one fit of max_iter=k epochs for each k (setup and compile included in its wall time)
    fn_rows = []
    for epoch in range(1, a.epochs + 1):
        clf = FastMLP(max_iter=epoch, n_iter_no_change=a.epochs + 1, tol=0.0, **SGD_RECIPE, **recipe)
        t0 = time.perf_counter()
        clf.fit(X, y)
        wall = time.perf_counter() - t0
        fn_rows.append({"epoch": epoch, "seconds": round(wall, 3), "test_accuracy": float(clf.score(Xt, yt)),
                        "engine": clf.history_.engine})
        print(f"fastnet epoch {epoch}: {fn_rows[-1]}", flush=True)

    target = min(max(r["test_accuracy"] for r in sk_rows), max(r["test_accuracy"] for r in fn_rows))

    def first(rows):
        return next(r for r in rows if r["test_accuracy"] >= target)

    sk_hit, fn_hit = first(sk_rows), first(fn_rows)
    sk_epoch_s = sk_rows[-1]["seconds"] / a.epochs
    fn_epoch_s = np.mean([r["seconds"] for r in clf.history_.records])
    result = {
        "machine": machine.machine_info(),
        "config": {"data": a.data, "n_train": int(len(y)), "n_test": int(len(yt)), "sizes": [784, a.hidden, 10],
                   "batch_size": a.batch_size, "learning_rate_init": a.eta, "alpha": a.alpha, "epochs": a.epochs,
                   "seed": a.seed, "dtype": "float32", "scikit_learn": sklearn.__version__,
                   "fastnet": fastnet.__version__, "date": datetime.date.today().isoformat(),
                   "sklearn_params": {"activation": "logistic", "solver": "sgd", "learning_rate": "constant",
                                      "momentum": 0.0, "nesterovs_momentum": False}},
        "target_accuracy": target,
        "scikit_learn": {"epochs": sk_rows, "time_to_target_s": sk_hit["seconds"], "epoch_at_target": sk_hit["epoch"],
                         "mean_epoch_s": round(sk_epoch_s, 3)},
        "fastnet": {"epochs": fn_rows, "time_to_target_s": fn_hit["seconds"], "epoch_at_target": fn_hit["epoch"],
                    "mean_epoch_s": round(float(fn_epoch_s), 3)},
        "speedup_time_to_target": round(sk_hit["seconds"] / fn_hit["seconds"], 1),
        "speedup_per_epoch": round(sk_epoch_s / float(fn_epoch_s), 1),
    }
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / (
        f"sklearn-vs-fastnet-{a.data}-h{a.hidden}-b{a.batch_size}-cpu-{result['config']['date']}.json")
    if a.quick:
        out = Path("(not saved: --quick)")
    else:
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"target test accuracy {target:.4f}: scikit-learn {sk_hit['seconds']:.1f} s (epoch {sk_hit['epoch']}), "
          f"fastnet {fn_hit['seconds']:.1f} s (epoch {fn_hit['epoch']}): {result['speedup_time_to_target']}x; "
          f"per epoch {sk_epoch_s:.2f} s vs {fn_epoch_s:.3f} s ({result['speedup_per_epoch']}x); saved {out}")
    return result


def _fit_timed(est, X, y):
    t0 = time.perf_counter()
    est.fit(X, y)
    return time.perf_counter() - t0


def defaults_race(argv=None) -> dict:
    """The race on scikit-learn's defaults (``--race defaults``): ``MLPClassifier()`` on full
    Fashion-MNIST for ``--epochs`` epochs and ``MLPRegressor()`` on a regression set of
    ``--reg-rows`` training rows, float64 input on both sides (pixels / 255 as users load
    them), each estimator built with nothing but ``max_iter`` (classifier) and
    ``random_state``. Wall time of ``fit`` (fastnet's includes the float64 -> float32 cast
    and its setup; its kernels come from the disk cache after a warm-up fit), test accuracy
    and R², and the ratios."""
    ap = argparse.ArgumentParser(description=defaults_race.__doc__.splitlines()[0])
    ap.add_argument("--race", default="defaults")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--reg-rows", type=int, default=50_000)
    ap.add_argument("--reg-features", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="fashion")
    ap.add_argument("--repeat", type=int, default=1, help="fits per side; the fastest counts")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 3,000 Fashion rows for 1 epoch, a 3,000-row regression for 5 epochs; "
                         "nothing saved")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/sklearn-defaults-vs-fastnet-...)")
    a = ap.parse_args(argv)

    import sklearn
    from sklearn.datasets import make_regression
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkClf, MLPRegressor as SkReg

    import fastnet
    from fastnet import data, machine
    from fastnet.sklearn import MLPClassifier as FastClf, MLPRegressor as FastReg

    warnings.simplefilter("ignore", ConvergenceWarning)
    (X, y), (Xt, yt) = data.load(a.data)
    X, Xt = X.astype(np.float64) / 255, Xt.astype(np.float64) / 255     # as users load them
    epochs, reg_rows, reg_iter = a.epochs, a.reg_rows, None
    if a.quick:
        X, y, Xt, yt, epochs, reg_rows, reg_iter = X[:3000], y[:3000], Xt[:1000], yt[:1000], 1, 3000, 5
    Xr, yr = make_regression(n_samples=reg_rows + reg_rows // 5, n_features=a.reg_features,
                             n_informative=a.reg_features // 2, noise=5.0, random_state=a.seed)
    yr = (yr - yr.mean()) / yr.std()
    Xr, Xrt, yr, yrt = Xr[:reg_rows], Xr[reg_rows:], yr[:reg_rows], yr[reg_rows:]

    # warm-up (imports, BLAS threads, fastnet's compiled kernels from the disk cache)
    for cls, (Xw, yw) in ((SkClf, (X[:500], y[:500])), (FastClf, (X[:500], y[:500])),
                          (SkReg, (Xr[:500], yr[:500])), (FastReg, (Xr[:500], yr[:500]))):
        cls(max_iter=2, random_state=a.seed).fit(Xw, yw)

    result = {"machine": machine.machine_info(),
              "config": {"data": a.data, "n_train": int(len(y)), "n_test": int(len(yt)), "epochs": epochs,
                         "regression": {"rows": reg_rows, "features": a.reg_features, "test_rows": len(yrt),
                                        "max_iter": reg_iter or 200},
                         "seed": a.seed, "input_dtype": "float64", "scikit_learn": sklearn.__version__,
                         "fastnet": fastnet.__version__, "date": datetime.date.today().isoformat(),
                         "params": "scikit-learn's defaults (hidden (100,), relu, adam, lr 1e-3, batch 200, "
                                   "alpha 1e-4); fastnet's own: float32, device cpu"}}
    for task, (sk_cls, fn_cls, Xa, ya, Xb, yb, kw) in {
            "classifier": (SkClf, FastClf, X, y, Xt, yt, dict(max_iter=epochs)),
            "regressor": (SkReg, FastReg, Xr, yr, Xrt, yrt, dict(max_iter=reg_iter) if reg_iter else {})}.items():
        row = {}
        for side, cls in (("scikit_learn", sk_cls), ("fastnet", fn_cls)):
            best, est = None, None
            for _ in range(a.repeat):
                e = cls(random_state=a.seed, **kw)
                s = _fit_timed(e, Xa, ya)
                if best is None or s < best:
                    best, est = s, e
            row[side] = {"fit_s": round(best, 3), "n_iter": int(est.n_iter_),
                         "s_per_epoch": round(best / est.n_iter_, 4),
                         ("test_accuracy" if task == "classifier" else "test_r2"): round(float(est.score(Xb, yb)), 4)}
            print(f"{task} {side}: {row[side]}", flush=True)
        metric = "test_accuracy" if task == "classifier" else "test_r2"
        row["speedup_fit"] = round(row["scikit_learn"]["fit_s"] / row["fastnet"]["fit_s"], 2)
        row["speedup_per_epoch"] = round(row["scikit_learn"]["s_per_epoch"] / row["fastnet"]["s_per_epoch"], 2)
        row[f"{metric}_difference"] = round(row["fastnet"][metric] - row["scikit_learn"][metric], 4)
        result[task] = row
        print(f"{task}: fastnet {row['speedup_fit']}x scikit-learn's fit time ({row['speedup_per_epoch']}x per "
              f"epoch); {metric} {row['fastnet'][metric]} vs {row['scikit_learn'][metric]}", flush=True)
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / (
        f"sklearn-defaults-vs-fastnet-{a.data}-cpu-{result['config']['date']}.json")
    if not a.quick:
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"saved {out}")
    return result


def main(argv=None) -> dict:
    """``--race defaults`` (the default: scikit-learn's defaults, float64 input) or ``--race
    sgd`` (the plain-SGD batch-10 race); ``--quick`` for a smoke run of either."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    race = "defaults"
    if "--race" in args:
        i = args.index("--race")
        race = args[i + 1]
        del args[i:i + 2]
    if race == "sgd":
        return sgd_race(args)
    if race == "defaults":
        return defaults_race(args)
    raise SystemExit(f"--race must be 'defaults' or 'sgd'. Actual: {race!r}")


if __name__ == "__main__":
    main()
