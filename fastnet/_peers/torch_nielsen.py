"""Nielsen's recipe in PyTorch on the CPU (or the GPU, ``--device cuda``): a peer fastnet is measured against.

Variants:
  autograd  (default) the idiomatic way: ``nn.Sequential`` of ``nn.Linear`` + ``nn.Sigmoid``,
            the cost written out, ``loss.backward()`` and ``torch.optim.SGD(lr=eta)``.
  manual    hand-written backprop under ``torch.no_grad()`` with in-place ops and the SGD
            update fused into ``addmm_`` (what a careful eager user would write).
  graph     ``--device cuda`` only: the manual step, gather included, captured once as a CUDA
            graph and replayed per minibatch (the host only copies the minibatch's indices);
            the last partial minibatch runs eagerly.

Both: float32 (or float64), minibatch gather ``X[idx]`` from tensors made once, a fresh
permutation each epoch, the last partial minibatch included, ``torch.set_num_threads``
(default 2). The seconds per epoch cover training only; test accuracy is scored after the
clock stops. See ``common.py`` for the recipe and the shared command line. Example:

    python -m fastnet._peers.torch_nielsen --data /usr/share/datasets/fashion-mnist \
        --sizes 784,30,10 --epochs 5 --batch-size 10 --eta 3.0 --dtype float32 --json OUT.json
    python -m fastnet._peers.torch_nielsen --sizes 784,500,500,10 --batch-size 1000 --steps 20
"""
from __future__ import annotations

import time

from fastnet._peers import common as C

import torch
from torch import nn


def build(sizes, args, dtype):
    """The parameters as (W (n_in, n_out), b (n_out,)) float tensors, and the shuffle source."""
    if args.init == "numpy":
        Ws, bs, shuffle_rng = C.numpy_init(sizes, args.seed, args.dtype)
        Ws = [torch.from_numpy(w) for w in Ws]
        bs = [torch.from_numpy(b) for b in bs]
        return Ws, bs, (lambda n: torch.from_numpy(shuffle_rng.permutation(n)))
    g = torch.Generator().manual_seed(args.seed)
    bs = [torch.randn(o, generator=g, dtype=dtype) for o in sizes[1:]]
    Ws = [torch.randn(i, o, generator=g, dtype=dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    return Ws, bs, (lambda n: torch.randperm(n, generator=g))


class Autograd:
    """nn.Sequential + autograd + optim.SGD."""

    def __init__(self, Ws, bs, cost, eta):
        layers = []
        for i, (W, b) in enumerate(zip(Ws, bs)):
            lin = nn.Linear(W.shape[0], W.shape[1], dtype=W.dtype)
            with torch.no_grad():
                lin.weight.copy_(W.T)      # nn.Linear keeps (out, in)
                lin.bias.copy_(b)
            layers.append(lin)
            if i < len(Ws) - 1 or cost == "quadratic":
                layers.append(nn.Sigmoid())
        self.model = nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=eta)
        self.cost = cost

    def step(self, X, y, Y):
        out = self.model(X)
        if self.cost == "quadratic":
            loss = 0.5 * (out - Y).square().sum(dim=1).mean()
        else:  # softmax output + cross-entropy, on the logits
            loss = nn.functional.cross_entropy(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def predict(self, X):
        return self.model(X).argmax(dim=1)


class Manual:
    """Backprop by hand, no autograd; W -= eta/m * A_prev^T delta fused into addmm_."""

    def __init__(self, Ws, bs, cost, eta):
        self.W = [W.clone() for W in Ws]
        self.b = [b.clone() for b in bs]
        self.cost, self.eta = cost, eta

    def _forward(self, X):
        acts = [X]
        L = len(self.W)
        for l in range(L):
            z = torch.addmm(self.b[l], acts[-1], self.W[l])
            if l == L - 1 and self.cost == "cross_entropy":
                acts.append(torch.softmax(z, dim=1))
            else:
                acts.append(z.sigmoid_())
        return acts

    @torch.no_grad()
    def step(self, X, y, Y):
        acts = self._forward(X)
        m = X.shape[0]
        a = acts[-1]
        delta = a - Y
        if self.cost == "quadratic":
            delta.mul_(a).mul_(1 - a)
        scale = -self.eta / m
        for l in range(len(self.W) - 1, -1, -1):
            if l:
                ap = acts[l]
                delta_prev = (delta @ self.W[l].T).mul_(ap).mul_(1 - ap)   # old W, before the update
            self.W[l].addmm_(acts[l].T, delta, alpha=scale)
            self.b[l].add_(delta.sum(dim=0), alpha=scale)
            if l:
                delta = delta_prev

    @torch.no_grad()
    def predict(self, X):
        return self._forward(X)[-1].argmax(dim=1)


class Graph:
    """The manual step on a CUDA graph: gather + forward + backprop + update, captured once
    on static buffers (the minibatch's indices, the parameters) and replayed per step."""

    def __init__(self, manual: Manual, Xd, yd, Yd, B):
        self.net, self.B = manual, B
        self.idx = torch.zeros(B, dtype=torch.int64, device=Xd.device)
        saved = [p.clone() for p in manual.W + manual.b]

        def step():
            manual.step(Xd.index_select(0, self.idx), yd.index_select(0, self.idx), Yd.index_select(0, self.idx))

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm-up launches, as torch asks before a capture
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step()
        with torch.no_grad():   # the warm-up trained: start from the recipe's weights again
            for p, s in zip(manual.W + manual.b, saved):
                p.copy_(s)

    def run(self, idx) -> None:
        self.idx.copy_(idx, non_blocking=True)
        self.graph.replay()


def main(argv=None):
    p = C.parser(__doc__.splitlines()[0], ["autograd", "manual", "graph"])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = p.parse_args(argv)
    sizes = C.parse_sizes(args.sizes)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device (--device cuda)")
    if args.variant == "graph" and args.device != "cuda":
        raise SystemExit("--variant graph needs --device cuda (CUDA graphs)")
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    X, y, Xt, yt = C.load_data(args.data, args.dtype, args.n_train)
    Y = C.one_hot(y, sizes[-1], args.dtype)
    Xd, yd, Yd = (torch.from_numpy(a).to(dev) for a in (X, y, Y))
    Xtd, ytd = torch.from_numpy(Xt).to(dev), torch.from_numpy(yt).to(dev)
    Ws, bs, permutation = build(sizes, args, dtype)
    Ws, bs = [w.to(dev) for w in Ws], [b.to(dev) for b in bs]
    net = (Autograd if args.variant == "autograd" else Manual)(Ws, bs, args.cost, args.eta)
    n, B = len(X), args.batch_size
    record = {"framework": "torch", "version": torch.__version__,
              "variant": "cuda-graph" if args.variant == "graph" else f"eager-{args.variant}",
              "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
              "config": C.config(args, sizes)}

    if args.steps:  # throughput on one fixed batch
        Xn, yn = C.fixed_batch(X, y, B)
        Xb, yb, Yb = (torch.from_numpy(a).to(dev) for a in (Xn, yn, C.one_hot(yn, sizes[-1], args.dtype)))
        if args.variant == "graph":
            g = Graph(net, Xb, yb, Yb, B)
            one = lambda: g.run(torch.arange(B, device=dev))   # noqa: E731
        else:
            one = lambda: net.step(Xb, yb, Yb)   # noqa: E731
        for _ in range(args.warmup_steps):
            one()
        sync()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            one()
            sync()
            times.append(time.perf_counter() - t0)
        record["throughput"] = C.throughput_record(B, times)
        return C.finish(args, record)

    graph = Graph(net, Xd, yd, Yd, B) if args.variant == "graph" else None
    epochs = []
    for epoch in range(1, args.epochs + 1):
        sync()
        t0 = time.perf_counter()
        order = permutation(n).to(dev)
        for k in range(0, n, B):
            idx = order[k:k + B]
            if graph is not None and len(idx) == B:
                graph.run(idx)
            else:
                net.step(Xd[idx], yd[idx], Yd[idx])
        sync()
        seconds = time.perf_counter() - t0
        acc = int((net.predict(Xtd) == ytd).sum()) / len(yt)
        epochs.append({"epoch": epoch, "seconds": seconds, "samples_per_s": n / seconds, "test_accuracy": acc})
    record["epochs"] = epochs
    return C.finish(args, record)


if __name__ == "__main__":
    main()
