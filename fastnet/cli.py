"""The ``fastnet`` command: ``train``, ``evaluate``, ``info``.

Bad input exits with code 2 and one line on stderr naming what was wrong.
"""
from __future__ import annotations

import argparse
import sys
import time

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes must be comma-separated ints like 784,30,10. Actual: {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}. Actual: {text!r}")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastnet`` command (also used to generate README's CLI reference)."""
    p = argparse.ArgumentParser(prog="fastnet", description="Train feedforward networks on MNIST-scale data, "
                                "on a CUDA GPU when there is one and on the CPU when there is not.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a network and print one line per epoch")
    t.add_argument("--data", default="auto",
                   help="mnist | fashion | sample | DIR with IDX files | auto (default: MNIST if found on "
                        "disk, else the embedded 10k sample)")
    t.add_argument("--sizes", type=_sizes, default=[784, 30, 10], help="layer widths (default 784,30,10)")
    t.add_argument("--epochs", type=_positive(int), default=30, help="default 30")
    t.add_argument("--batch-size", type=_positive(int), default=10, help="minibatch size (default 10)")
    t.add_argument("--eta", type=_positive(float), default=3.0, help="learning rate (default 3.0)")
    t.add_argument("--cost", default="quadratic", help="quadratic | cross_entropy (default quadratic)")
    t.add_argument("--lmbda", type=_positive(float), default=0.0, help="L2 regularisation (default 0)")
    t.add_argument("--init", default="nielsen", help="nielsen | scaled (default nielsen)")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    t.add_argument("--dtype", default="float32", help="float32 | float64 (default float32)")
    t.add_argument("--seed", type=_positive(int), default=None, help="seed for init and shuffling")
    t.add_argument("--save", metavar="PATH", help="write the trained model here (.npz)")
    t.add_argument("--history", metavar="PATH", help="write the per-epoch history here (JSON)")
    t.add_argument("--quiet", action="store_true", help="print only the final line")

    e = sub.add_parser("evaluate", help="accuracy of a saved model on a test split")
    e.add_argument("model", help="a model file written by `fastnet train --save` or Network.save")
    e.add_argument("--data", default="auto", help="as for train (default auto)")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")

    sub.add_parser("info", help="versions, the backend that would be chosen and why, kernel path, GPU")
    return p


def _load_data(name: str):
    """(train, test, description) for --data."""
    from fastnet import data

    if name == "auto":
        try:
            train, test = data.load_mnist(download=False)
            return train, test, "MNIST (60,000 train / 10,000 test, found on disk)"
        except data.DataNotFoundError:
            train, test = data.load("sample")
            return train, test, ("the embedded MNIST sample (10k test digits: first 8,000 train, last 2,000 test); "
                                 "--data mnist downloads the full set")
    train, test = data.load(name)
    label = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "sample": "the embedded MNIST sample"}.get(name, name)
    return train, test, f"{label} ({len(train[0]):,} train / {len(test[0]):,} test)"


def cmd_train(a) -> int:
    import fastnet
    from fastnet import backend as B
    from fastnet import ops

    net = fastnet.Network(a.sizes, cost=a.cost, init=a.init, dtype=a.dtype, device=a.device, seed=a.seed)
    (Xtr, ytr), (Xte, yte), desc = _load_data(a.data)
    if not a.quiet:
        print(f"data: {desc}")
        print(B.describe(net.backend) + f"; kernels: {ops.kernel_path(net.weights[0])}")
        print(f"network: {net.sizes} cost={net.cost} dtype={net.dtype}; epochs={a.epochs} "
              f"batch={a.batch_size} eta={a.eta} lmbda={a.lmbda}", flush=True)
    t0 = time.perf_counter()
    try:
        hist = net.fit(Xtr, ytr, epochs=a.epochs, batch_size=a.batch_size, eta=a.eta, lmbda=a.lmbda,
                       validation_data=(Xte, yte), verbose=0 if a.quiet else 1)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    last = hist[-1]
    print(f"done: test accuracy {last['val_accuracy']:.4f} after {len(hist)} epochs in "
          f"{time.perf_counter() - t0:.1f} s")
    if a.save:
        net.save(a.save)
        print(f"saved model to {a.save}")
    if a.history:
        hist.save(a.history)
        print(f"saved history to {a.history}")
    return 0


def cmd_evaluate(a) -> int:
    import fastnet

    net = fastnet.load(a.model, device=a.device)
    _, (Xte, yte), desc = _load_data(a.data)
    acc = net.evaluate(Xte, yte)
    print(f"{a.model}: {round(acc * len(yte))} / {len(yte)} = {acc:.4f} on {desc}")
    return 0


def info_lines() -> list[str]:
    """What ``fastnet info`` prints: versions, backend choice, kernel path, GPU status."""
    import platform

    import numpy as np

    import fastnet
    from fastnet import backend as B
    from fastnet import ops

    lines = [f"fastnet {fastnet.__version__}, Python {platform.python_version()}, NumPy {np.__version__}"]
    try:
        import numba

        lines.append(f"numba {numba.__version__}")
    except ImportError:
        lines.append("numba: not installed (kernels fall back to plain xp)")
    be = B.get_backend("auto")
    lines.append(B.describe(be))
    lines.append(f"kernel path on NumPy arrays: {ops.kernel_path(np.zeros(1))}")
    ok, why = B.cuda_status()
    lines.append(f"CUDA GPU: {why}" if ok else f"CUDA GPU: not usable: {why}. Fix: {B.INSTALL_HINT}")
    cuda_impl = getattr(ops, "cuda_implementation", None)
    if cuda_impl is not None:
        lines.append(f"numba CUDA implementation: {cuda_impl()}")
    return lines


def cmd_info(a) -> int:
    print("\n".join(info_lines()))
    return 0


def main(argv=None) -> int:
    """Entry point of the ``fastnet`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from fastnet.data import DataNotFoundError, IDXError
    from fastnet.io import ModelFileError

    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info}[args.command](args)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError, DataNotFoundError, IDXError,
            ModelFileError, OSError) as exc:
        msg = " ".join(str(exc).split())
        print(f"fastnet {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
