"""One net's compiled epoch on one thread and on two (``StackRunner(split=...)``), side by side.

Full Fashion-MNIST (60,000 x 784, float32), one epoch of the compiled loop (compiled before
the clock starts; the first 5 steps untimed), Nielsen's sigmoid + SGD ([784, 30, 10], b10,
eta 3.0) and ReLU + Adam ([784, 100, 10], b32, eta 1e-3; and at [784, 30, 10] b10). Each
case is run ``--repeat`` times, alternating the two settings; the fastest counts. Prints
each time and the ratios (two threads over one; each row over sigmoid + SGD on one thread
of its shape) and saves them with the machine's CPU flags. Run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_split.py --out bench/results/split-cpu.json
"""
import argparse
import json
import time

import numpy as np

import fastnet
from fastnet import data, optim
from fastnet.kernels.epoch_cpu import StackRunner
from fastnet.training import StackOfOne

CASES = [([784, 30, 10], 10, "sigmoid", "sgd", 3.0), ([784, 30, 10], 10, "relu", "adam", 1e-3),
         ([784, 100, 10], 32, "sigmoid", "sgd", 3.0), ([784, 100, 10], 32, "relu", "adam", 1e-3)]


def runner(sizes, batch, act, opt_name, eta, split):
    cost = "quadratic" if opt_name == "sgd" else "cross_entropy"
    net = fastnet.Network(sizes, activation=act, cost=cost, device="cpu", seed=0)
    Ws, bs = [W[None].copy() for W in net.weights], [b[None].copy() for b in net.biases]
    opt, kw = optim.get(opt_name), {}
    if opt.code != optim.SGD.code:
        kw = dict(optimizer=opt, state=StackOfOne(optim.State(opt, net._W + net._b, np, eta, 0.0)), l2s=[0.0])
    return StackRunner(Ws, bs, [eta], [1.0], batch, cost == "quadratic", threads=1, codes=list(net._codes),
                       split=split, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    (X, y), _ = data.load_fashion_mnist(as_float=True, download=False)
    X, y = np.ascontiguousarray(X.astype(np.float32)), y.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y)).astype(np.int64)
    times = {}
    for _ in range(a.repeat):
        for sizes, batch, act, opt_name, eta in CASES:
            for split in (False, True):
                r = runner(sizes, batch, act, opt_name, eta, split)
                r.run(X, y, order, 0, 5)
                t = time.perf_counter()
                r.run(X, y, order, 5, -(-len(y) // batch))
                key = (f"{sizes[1]}h-b{batch}", act, opt_name, split)
                times.setdefault(key, []).append(time.perf_counter() - t)
    rows = []
    for (shape, act, opt_name, split), ts in times.items():
        best = min(ts)
        base = min(times[(shape, "sigmoid", "sgd", False)])
        one = min(times[(shape, act, opt_name, False)])
        rows.append({"shape": shape, "activation": act, "optimizer": opt_name, "threads": 2 if split else 1,
                     "seconds_per_epoch": best, "over_one_thread": best / one, "over_sigmoid_sgd_1t": best / base})
        print(f"{shape:9s} {act:8s} {opt_name:5s} {2 if split else 1} thread(s): {best:.4f} s/epoch, "
              f"{one / best:.2f}x one thread's speed, {best / base:.2f}x sigmoid+SGD on one thread")
    if a.out:
        from fastnet.machine import machine_info

        info = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"),
                "command": "python bench/bench_split.py", "rows": rows}
        with open(a.out, "w") as f:
            json.dump(info, f, indent=1)
        print("saved", a.out)


if __name__ == "__main__":
    main()
