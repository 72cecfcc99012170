"""What the activation and optimizer tables cost on the compiled engine, side by side.

Full Fashion-MNIST (60,000 x 784, float32), one epoch through ``Network.fit`` on the
``compiled`` engine (compiled before the clock starts), training time only (the
``seconds`` of the History record, which leaves out the end-of-epoch metrics pass).
Each shape runs Nielsen's sigmoid + plain SGD first and the other rows after it; each
records its time per epoch and the ratio to sigmoid + SGD of the same shape
(``ratio_to_sigmoid_sgd``; issue 21 asks ReLU + Adam for at most 1.3x). Run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/bench_tables.py \\
        --benchmark-only --benchmark-json bench/results/tables-cpu.json
"""
import time

import pytest

import fastnet

EPOCHS = 3
#: (sizes, batch size): Nielsen's recipe, and the ReLU + Adam recipe of DESIGN.md.
SHAPES = [([784, 30, 10], 10), ([784, 100, 10], 32)]
#: (activation, optimizer, cost, eta), sigmoid + SGD first: the baseline of each shape.
RECIPES = [("sigmoid", "sgd", "quadratic", 3.0), ("relu", "adam", "cross_entropy", 1e-3),
           ("tanh", "momentum", "cross_entropy", 0.01), ("sigmoid", "adam", "cross_entropy", 1e-3)]
BASE = {}   # shape -> sigmoid + SGD seconds per epoch
RELU_ADAM = {}   # shape -> ReLU + Adam seconds per epoch


@pytest.mark.parametrize("act, opt, cost, eta", RECIPES, ids=[f"{a}-{o}" for a, o, _, _ in RECIPES])
@pytest.mark.parametrize("sizes, batch", SHAPES, ids=[f"{s[1]}h-b{b}" for s, b in SHAPES])
def bench_compiled_epoch(benchmark, fashion, sizes, batch, act, opt, cost, eta):
    X, y = fashion
    fastnet.warmup("float32", n_layers=(len(sizes) - 1,))
    times = []

    def run():
        net = fastnet.Network(sizes, activation=act, cost=cost, device="cpu", seed=0)
        h = net.fit(X, y, epochs=EPOCHS, batch_size=batch, eta=eta, optimizer=opt, engine="compiled")
        times.append(min(h["seconds"]))
        return h

    benchmark.group = f"compiled epoch fashion {sizes} mb{batch}"
    h = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    per_epoch = min(times)
    key = (tuple(sizes), batch)
    if act == "sigmoid" and opt == "sgd":
        BASE[key] = per_epoch
    if act == "relu" and opt == "adam":
        RELU_ADAM[key] = per_epoch
    benchmark.extra_info.update(seconds_per_epoch=per_epoch, engine=h.engine, train_accuracy=h["accuracy"][-1],
                                compile_seconds=h.config["compile_seconds"])
    if key in BASE:
        benchmark.extra_info["ratio_to_sigmoid_sgd"] = per_epoch / BASE[key]


TORCH = {}


@pytest.mark.parametrize("sizes, batch", SHAPES, ids=[f"{s[1]}h-b{b}" for s, b in SHAPES])
def bench_torch_relu_adam(benchmark, fashion, sizes, batch):
    """The peer: PyTorch eager, ``nn.Linear`` + ReLU, ``CrossEntropyLoss``, autograd and
    ``torch.optim.Adam(lr=1e-3)``, its default threads; ``fastnet_faster_by`` compares it
    with the relu-adam row of the same shape above."""
    torch = pytest.importorskip("torch")
    X, y = fashion
    Xt, yt = torch.tensor(X, dtype=torch.float32) / 255, torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1]), torch.nn.ReLU(),
                                torch.nn.Linear(sizes[1], sizes[2]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.CrossEntropyLoss()
    times = []

    def epoch():
        perm = torch.randperm(len(yt))
        t0 = time.perf_counter()
        for k in range(0, len(yt), batch):
            idx = perm[k:k + batch]
            opt.zero_grad()
            loss(model(Xt[idx]), yt[idx]).backward()
            opt.step()
        times.append(time.perf_counter() - t0)

    benchmark.group = f"compiled epoch fashion {sizes} mb{batch}"
    benchmark.pedantic(epoch, rounds=2, iterations=1, warmup_rounds=0)
    per_epoch = min(times)
    benchmark.extra_info.update(seconds_per_epoch=per_epoch, threads=torch.get_num_threads(),
                                torch=torch.__version__)
    mine = RELU_ADAM.get((tuple(sizes), batch))
    if mine:
        benchmark.extra_info["fastnet_faster_by"] = per_epoch / mine
