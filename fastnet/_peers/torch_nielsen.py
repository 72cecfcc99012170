"""Nielsen's recipe in PyTorch eager mode, on the CPU: the peer fastnet is measured against.

Variants:
  autograd  (default) the idiomatic way: ``nn.Sequential`` of ``nn.Linear`` + ``nn.Sigmoid``,
            the cost written out, ``loss.backward()`` and ``torch.optim.SGD(lr=eta)``.
  manual    hand-written backprop under ``torch.no_grad()`` with in-place ops and the SGD
            update fused into ``addmm_`` (what a careful eager user would write).

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


def main(argv=None):
    p = C.parser(__doc__.splitlines()[0], ["autograd", "manual"])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = p.parse_args(argv)
    sizes = C.parse_sizes(args.sizes)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    X, y, Xt, yt = C.load_data(args.data, args.dtype, args.n_train)
    Y = C.one_hot(y, sizes[-1], args.dtype)
    Xd, yd, Yd = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(Y)
    Xtd, ytd = torch.from_numpy(Xt), torch.from_numpy(yt)
    Ws, bs, permutation = build(sizes, args, dtype)
    net = (Autograd if args.variant == "autograd" else Manual)(Ws, bs, args.cost, args.eta)
    n, B = len(X), args.batch_size
    record = {"framework": "torch", "version": torch.__version__, "variant": f"eager-{args.variant}",
              "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
              "config": C.config(args, sizes)}

    if args.steps:  # throughput on one fixed batch
        Xn, yn = C.fixed_batch(X, y, B)
        Xb, yb, Yb = torch.from_numpy(Xn), torch.from_numpy(yn), torch.from_numpy(C.one_hot(yn, sizes[-1], args.dtype))
        for _ in range(args.warmup_steps):
            net.step(Xb, yb, Yb)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            net.step(Xb, yb, Yb)
            times.append(time.perf_counter() - t0)
        record["throughput"] = C.throughput_record(B, times)
        return C.finish(args, record)

    epochs = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        order = permutation(n)
        for k in range(0, n, B):
            idx = order[k:k + B]
            net.step(Xd[idx], yd[idx], Yd[idx])
        seconds = time.perf_counter() - t0
        acc = int((net.predict(Xtd) == ytd).sum()) / len(yt)
        epochs.append({"epoch": epoch, "seconds": seconds, "samples_per_s": n / seconds, "test_accuracy": acc})
    record["epochs"] = epochs
    return C.finish(args, record)


if __name__ == "__main__":
    main()
