"""The ``fastnet`` command: ``train``, ``evaluate``, ``predict``, ``plot``, ``show``, ``info``, ``bench``, ``sweep``.

Bad input (and a missing optional extra) exits with code 2 and one line on stderr
naming what was wrong; Ctrl-C exits with 130.

>>> from fastnet.cli import main
>>> main(["info"]) == 0  # doctest: +ELLIPSIS
fastnet ...
True
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _sizes(text: str) -> list[int]:
    try:
        parts = text.replace(" ", "").split(",")
        if "" in parts:
            raise ValueError
        sizes = [int(s) for s in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes must be comma-separated ints like 784,30,10. Actual: {text!r}")
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(f"--sizes needs at least an input and an output width, like 784,30,10. "
                                         f"Actual: {text!r}")
    for i, n in enumerate(sizes):
        if n < 1:
            raise argparse.ArgumentTypeError(f"--sizes: every width must be >= 1 (sizes[{i}] must be >= 1). "
                                             f"Actual: {text!r}")
    return sizes


def _positive(kind, *, minimum=None, strict=False):
    """An argparse type: a whole number (``int``) or a number (``float``), finite and at
    least ``minimum`` (above it with ``strict``); the message is in the flag's words."""
    what = "a whole number" if kind is int else "a number"
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"

    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}{bound}. Actual: {text!r}")
        import math

        if not math.isfinite(v) or minimum is not None and (v <= minimum if strict else v < minimum):
            raise argparse.ArgumentTypeError(f"must be {what}{bound}. Actual: {text!r}")
        return v
    parse.__name__ = kind.__name__
    return parse


_COUNT = _positive(int, minimum=1)           # --epochs, --batch-size
_RATE = _positive(float, minimum=0, strict=True)   # --eta
_L2 = _positive(float, minimum=0)            # --lmbda
_SEED = _positive(int, minimum=0)


def _lower(aliases=None):
    """An argparse type for a choice: case- and dash-insensitive, with aliases."""
    def parse(text):
        v = text.strip().lower().replace("-", "_")
        return (aliases or {}).get(v, v)
    return parse


_COST = _lower({"crossentropy": "cross_entropy", "xent": "cross_entropy", "ce": "cross_entropy"})
COSTS, INITS, DEVICES, DTYPES = ["quadratic", "cross_entropy"], ["nielsen", "scaled", "he", "glorot"], \
    ["auto", "cpu", "cuda"], ["float32", "float64"]


def _activations():
    from fastnet import activations

    return sorted(activations.HIDDEN)


def _optimizers():
    from fastnet import optim

    return sorted(optim.OPTIMIZERS)


def _activation(text):
    """--activation: one name for every hidden layer, or a comma-separated name per hidden layer."""
    names = [_lower()(t) for t in text.split(",")]
    bad = [n for n in names if n not in _activations()]
    if bad:
        raise argparse.ArgumentTypeError(f"invalid choice: {bad[0]!r} (choose from {', '.join(_activations())}; "
                                         "or one per hidden layer, comma-separated)")
    return names[0] if len(names) == 1 else names
#: --data's forms, for help and errors.
DATA_FORMS = "mnist | fashion | sample | auto | DIR of IDX files | FILE.npz | X.npy,y.npy | FILE.csv"


def _engine_names() -> list[str]:
    from fastnet import engines

    return engines.names()


def _against(text: str) -> list[str]:
    from fastnet.benchmark import parse_against

    try:
        return parse_against(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--against: {exc}. Actual: {text!r}")


def _top_n(flag: str):
    def parse(text: str) -> int:
        try:
            k = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an int >= 1. Actual: {text!r}")
        if k < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be an int >= 1. Actual: {text!r}")
        return k
    return parse


_top = _top_n("--top")


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter with one layout on every Python (3.13 changed ``-o PATH, --output PATH``
    to ``-o, --output PATH``): README's generated reference must not depend on the version."""

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        args = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(f"{opt} {args}" for opt in action.option_strings)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), like every other error."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kw)

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")

    def option_names(self) -> list[str]:
        return [o for a in self._actions for o in a.option_strings]


def _did_you_mean(parser, command: str | None, extra: list[str]):
    """``(subparser, "unrecognized arguments: --lambda; did you mean --lmbda?")`` for argparse's leftovers."""
    import difflib

    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    target = sub.choices.get(command, parser) if sub is not None and command else parser
    msg = f"unrecognized arguments: {' '.join(extra)}"
    for word in extra:
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            close = difflib.get_close_matches(flag, target.option_names(), n=1, cutoff=0.6)
            if close:
                return target, f"{msg}; did you mean {close[0]}?"
    return target, msg


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastnet`` command (also used to generate README's CLI reference).

    >>> from fastnet.cli import build_parser
    >>> a = build_parser().parse_args(["predict", "m.npz", "a.png", "b.jpg", "--top", "3"])
    >>> a.command, a.images, a.top
    ('predict', ['a.png', 'b.jpg'], 3)
    """
    p = _Parser(prog="fastnet", description="Train feedforward networks on MNIST-scale data, "
                "on a CUDA GPU when there is one and on the CPU when there is not.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a network and print one line per epoch",
                       description="Train a network by minibatch SGD. Prints one line per epoch (scored on "
                                   "the test split) and, on a terminal, a progress bar on stderr.")
    t.add_argument("--data", default="auto", metavar="DATA",
                   help=DATA_FORMS + " (default auto: MNIST if found on disk, else the embedded 10k sample; "
                        "a .npz has Keras's keys x_train, y_train, x_test, y_test; a CSV a label column)")
    t.add_argument("--sizes", type=_sizes, default=[784, 30, 10], help="layer widths (default 784,30,10)")
    t.add_argument("--epochs", type=_COUNT, default=30, metavar="N", help="default 30")
    t.add_argument("--batch-size", type=_COUNT, default=10, metavar="N", help="minibatch size (default 10)")
    t.add_argument("--eta", type=_RATE, default=3.0, help="learning rate, > 0 (default 3.0)")
    t.add_argument("--cost", type=_COST, choices=COSTS, default="quadratic",
                   help="the cost (default quadratic)")
    t.add_argument("--lmbda", type=_L2, default=0.0, help="L2 regularisation, >= 0 (default 0)")
    t.add_argument("--activation", type=_activation, default="sigmoid", metavar="ACT",
                   help="the hidden layers' activation: " + " | ".join(_activations())
                        + " (default sigmoid; comma-separated: one per hidden layer)")
    t.add_argument("--optimizer", type=_lower(), choices=_optimizers(), default="sgd",
                   help="how each step applies its gradient (default sgd; --eta is its learning rate)")
    t.add_argument("--init", type=_lower(), choices=INITS, default=None,
                   help="nielsen: N(0, 1) | scaled: N(0, 1/n_in) | he: N(0, 2/n_in) | glorot: "
                        "U(+-sqrt(6/(n_in+n_out))) (default: nielsen for sigmoid, he for relu, glorot else)")
    t.add_argument("--device", type=_lower(), choices=DEVICES, default="auto", help="where to compute (default auto)")
    t.add_argument("--dtype", type=_lower(), choices=DTYPES, default="float32",
                   help="default float32")
    t.add_argument("--seed", type=_SEED, default=None, metavar="N", help="seed for init and shuffling (>= 0)")
    t.add_argument("--patience", type=_COUNT, default=None, metavar="N",
                   help="stop when the test accuracy has not improved for N epochs and keep the best epoch's "
                        "weights (default: run every epoch)")
    t.add_argument("--engine", default="auto", choices=["auto"] + _engine_names(), metavar="ENGINE",
                   help="how the steps run: auto (default: the plan picks and says why) | "
                        + " | ".join(_engine_names()) + " (see fastnet info)")
    t.add_argument("--save", metavar="PATH", help="write the trained model here (.npz)")
    t.add_argument("--history", metavar="PATH", help="write the per-epoch history here (JSON)")
    t.add_argument("--checkpoint", metavar="PATH",
                   help="save a checkpoint here after every epoch and on Ctrl-C (.npz; a model file too)")
    t.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint when it exists (same data and settings), bit for bit")
    t.add_argument("--plot", metavar="PATH",
                   help="draw the loss and accuracy curves here at the end (PNG; needs fastnet[plot])")
    t.add_argument("--quiet", action="store_true", help="print only the final line: no epoch lines, no "
                   "progress bar (the bar is also off when stdout is not a terminal)")

    e = sub.add_parser("evaluate", help="accuracy of a saved model on a test split")
    e.add_argument("model", help="a model file written by `fastnet train --save` or Network.save")
    e.add_argument("--data", default="auto", help="as for train (default auto)")
    e.add_argument("--device", type=_lower(), choices=DEVICES, default="auto", help="where to compute (default auto)")

    r = sub.add_parser("predict", help="classify digit images (PNG/JPEG) with a saved model",
                       description="Classify PNG/JPEG images of digits, any size, colour or grey. Each "
                                   "image is made MNIST-like (grey, inverted when the background is light, "
                                   "ink box scaled to 20x20, centred by mass in 28x28) and one line is "
                                   "printed per image: 'PATH: DIGIT (PROBABILITY)'. Needs fastnet[images].")
    r.add_argument("model", help="a model file with 784 inputs (28x28 images)")
    r.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    r.add_argument("--top", type=_top, default=1, metavar="K",
                   help="print the K most likely classes per image (default 1)")
    r.add_argument("--device", type=_lower(), choices=DEVICES, default="auto", help="where to compute (default auto)")

    pl = sub.add_parser("plot", help="draw loss and accuracy per epoch from a --history JSON file",
                        description="Draw training and validation loss and accuracy per epoch from a "
                                    "history file written by `fastnet train --history` or History.save, as "
                                    "a 1200x500 PNG. Needs fastnet[plot].")
    pl.add_argument("history", metavar="HISTORY.json", help="a history file")
    pl.add_argument("-o", "--output", required=True, metavar="PATH", help="the PNG to write")
    pl.add_argument("--title", help="figure title (default: the network and recipe)")

    sh = sub.add_parser("show", help="draw a saved model: first-layer weights or the confusion matrix",
                        description="Draw a saved model as a PNG: --what weights shows each hidden unit's "
                                    "first-layer weights as a 28x28 tile (1000 px wide); --what confusion "
                                    "the confusion matrix on the test split of --data (800x720). Needs "
                                    "fastnet[plot].")
    sh.add_argument("model", help="a model file")
    sh.add_argument("--what", choices=["weights", "confusion"], default="weights",
                    help="weights | confusion (default weights)")
    sh.add_argument("-o", "--output", required=True, metavar="PATH", help="the PNG to write")
    sh.add_argument("--data", default="auto", help="for --what confusion: as for train (default auto)")
    sh.add_argument("--device", type=_lower(), choices=DEVICES, default="auto", help="where to compute (default auto)")

    inf = sub.add_parser("info", help="versions, the backend that would be chosen and why, kernel path, GPU",
                         description="Print versions, the backend that would be chosen and why, the kernel "
                                     "path, and whether a CUDA GPU is usable (and if not, why and the fix).")
    inf.add_argument("--ptx", metavar="ARCH", default=None,
                     help="instead, compile every CUDA kernel and signature fastnet launches to PTX for ARCH "
                          "(e.g. sm_80, sm_90) offline with numba-cuda's NVVM, no GPU needed; one line each, "
                          "exit 1 if any fails")

    b = sub.add_parser("bench", help="training throughput of fastnet's paths (and torch, jax) in one table",
                       description="Measure training throughput: Nielsen's recipe epoch ([784,30,10], "
                                   "minibatch 10) on --data and large-batch SGD steps ([784,500,500,10] at "
                                   "batch 1,000 and 10,000, [784,30,10] at 60,000), on fastnet's raw engines "
                                   "njit (default), step (no compiled epoch loop) and xp (plain NumPy), on "
                                   "what users call (fit: Network.fit's wall time per epoch, metrics and "
                                   "set-up included, in the epoch case; train_step: the public "
                                   "Network.train_step, in the step cases) and on the peers of --against, "
                                   "each run in its own process. Prints one table: samples/s (and s/epoch), "
                                   "the ratio to the best peer, the share of the machine's GEMM ceiling "
                                   "(NumPy's time for the step's matrix products alone, measured in the same "
                                   "run) and, for fit and train_step, x raw: their time over the njit "
                                   "engine's (the gap users pay, also printed as fit/raw = ...x). A progress "
                                   "bar on a terminal.")
    b.add_argument("--quick", action="store_true",
                   help="small networks and few steps on the sample (under a minute on 2 cores)")
    b.add_argument("--data", default="sample",
                   help="sample | fashion | mnist | DIR with IDX files, for the epoch case (default sample; "
                        "never downloads)")
    b.add_argument("--against", type=_against, default=[], metavar="PEERS",
                   help="comma-separated peers to run too: torch, jax (a peer not installed gets a row "
                        "saying so)")
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="default float32")
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu (default) or cuda: fastnet's GPU engines and, per --against framework, its GPU "
                        "peers (torch: eager and CUDA graphs; jax: lax.scan), all on this GPU")
    b.add_argument("--repeat", type=_top_n("--repeat"), default=1, metavar="N",
                   help="run every case N times, interleaved; each row keeps its fastest (default 1)")
    b.add_argument("--json", metavar="PATH", help="write {machine, config, rows} here")
    b.add_argument("--plot", metavar="PATH",
                   help="draw samples/s against batch size per path and peer here (PNG; needs fastnet[plot])")

    sw = sub.add_parser("sweep", help="train a grid of sizes, etas, lmbdas, seeds, activations, optimizers as "
                                      "network stacks",
                        description="Train every combination of the values given (sizes x batch sizes x costs x "
                                    "activations x optimizers x etas x lmbdas x seeds) and print one row per "
                                    "configuration: final and best test accuracy, seconds, status. Configurations "
                                    "that differ only in eta, lmbda and seed train together as one NetworkStack (at "
                                    "most --max-stack networks; one stack has one shape, activation and optimizer); "
                                    "stacks run one after the other (--engine local) or as Ray tasks (--engine ray, "
                                    "on this machine's cores or the cluster at --address; needs fastnet[ray]). A "
                                    "failed stack marks its rows 'failed' with the error and the others still run. "
                                    "Exit code 0 when every configuration ran, 1 when some failed, 2 for bad input "
                                    "(before any training). A progress bar on a terminal.")
    sw.add_argument("--sizes", type=_sizes, nargs="+", default=[[784, 30, 10]], metavar="SIZES",
                    help="one or more network shapes (default 784,30,10)")
    sw.add_argument("--eta", type=_positive(float), nargs="+", default=[3.0], metavar="ETA",
                    help="learning rates (default 3.0)")
    sw.add_argument("--lmbda", type=_positive(float), nargs="+", default=[0.0], metavar="LMBDA",
                    help="L2 strengths (default 0)")
    sw.add_argument("--seeds", nargs="+", default=["0"], metavar="SEEDS",
                    help="seeds: ints and inclusive ranges, e.g. 0-7, 0 1 5 or 0-3 9 (default 0)")
    sw.add_argument("--batch-size", type=_positive(int), nargs="+", default=[10], metavar="N",
                    help="minibatch sizes (default 10)")
    sw.add_argument("--cost", nargs="+", default=["quadratic"], metavar="COST",
                    help="the cost (default quadratic)")
    sw.add_argument("--activation", type=_activation, nargs="+", default=["sigmoid"], metavar="ACT",
                    help="hidden-layer activations: " + " | ".join(_activations()) + "; each one may be a "
                         "comma-separated list, one per hidden layer (default sigmoid)")
    sw.add_argument("--optimizer", type=_lower(), choices=_optimizers(), nargs="+", default=["sgd"], metavar="OPT",
                    help="optimizers: " + " | ".join(_optimizers()) + "; --eta is each one's learning rate "
                         "(default sgd)")
    sw.add_argument("--epochs", type=_positive(int), default=30, help="for every configuration (default 30)")
    sw.add_argument("--data", default="auto", help="as for train (default auto)")
    sw.add_argument("--limit", type=_top_n("--limit"), metavar="N",
                    help="train on the first N training samples only (quick runs); the test split stays whole")
    sw.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="local: stacks one after the other here; ray: one Ray task per stack (default local)")
    sw.add_argument("--address", help="with --engine ray: the Ray cluster to use (default: start one on this "
                                      "machine's cores, shut down at the end)")
    sw.add_argument("--max-stack", type=_top_n("--max-stack"), metavar="K",
                    help="at most K networks per stack (default 8 on the CPU, 64 on a GPU; with --address: "
                         "64 for --device cuda, else 8)")
    sw.add_argument("--order", choices=["shared", "independent"], default="shared",
                    help="minibatch order: one for every net, drawn by --order-seed (fast), or each net its "
                         "own (`fastnet train --seed S` up to rounding; slower) (default shared)")
    sw.add_argument("--order-seed", type=int, default=0, metavar="S",
                    help="with --order shared: the seed whose minibatch order all nets follow (default 0)")
    sw.add_argument("--device", type=_lower(), choices=DEVICES, default="auto", help="where to compute (default auto)")
    sw.add_argument("--dtype", type=_lower(), choices=DTYPES, default="float32",
                    help="default float32")
    sw.add_argument("--halving", type=_halving_factor, metavar="F",
                    help="successive halving: train every configuration --grace epochs, keep the best 1/F "
                         "(rounded up) by test accuracy, train those F times as long, and so on up to --epochs; "
                         "survivors leave their stacks and merge (F >= 2; default: no pruning)")
    sw.add_argument("--grace", type=_grace_epochs, metavar="E0",
                    help="with --halving: the epochs of the first rung (default 1)")
    sw.add_argument("--json", metavar="PATH", help="write {machine, config, rows, state} here, after every stack "
                                                   "and rung (checkpoints of unfinished stacks in PATH.checkpoints)")
    sw.add_argument("--resume", action="store_true",
                    help="go on from --json PATH's state: run only what is missing (the same grid, data and "
                         "settings; a missing file starts afresh)")
    sw.add_argument("--plot", metavar="PATH", help="draw the best accuracy against each swept parameter here "
                                                   "(PNG; needs fastnet[plot]); pruned configurations are crosses")
    sw.add_argument("--quiet", action="store_true", help="print only the table: no header, no progress bar (the "
                    "bar is also off when stdout is not a terminal)")

    w = sub.add_parser("warmup", help="compile the CPU engines now, so that every later run starts compiled",
                       description="Compile (or load from the disk cache) the element-wise kernels and the "
                                   "compiled epoch loop for each --dtype and --depth now, once per machine, so "
                                   "that later runs (scripts, notebooks, fastnet train) start on the compiled "
                                   "engines instead of compiling in the background. Prints each unit and its "
                                   "time. Exit code 0, or 2 with one line when nothing can be compiled here.")
    w.add_argument("--dtype", type=_lower(), choices=DTYPES, nargs="+", default=["float32"], metavar="DTYPE",
                   help="float32 | float64, one or both (default float32)")
    w.add_argument("--depth", type=_COUNT, nargs="+", default=[1, 2, 3], metavar="N",
                   help="weight-layer counts to compile the epoch loop for; 784,30,10 has 2; one version "
                        "serves 1-4 (default 1 2 3)")
    w.add_argument("--large", action="store_true",
                   help="also the rows engine (large batches of narrow nets), ~5 s per depth")
    return p


def help_texts(width: int = 92) -> dict[str, str]:
    """``{"fastnet": ..., "fastnet train": ..., ...}``: the ``--help`` text of the command and of
    each subcommand, laid out for ``width`` columns whatever the terminal (README's reference).

    >>> from fastnet.cli import help_texts
    >>> texts = help_texts()
    >>> sorted(texts)[:3], texts["fastnet plot"].splitlines()[0]
    (['fastnet', 'fastnet bench', 'fastnet evaluate'], 'usage: fastnet plot [-h] -o PATH [--title TITLE] HISTORY.json')
    """
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR", "PYTHON_COLORS")}
    os.environ.update(COLUMNS=str(width), NO_COLOR="1", PYTHON_COLORS="0")
    try:
        parser = build_parser()
        texts = {"fastnet": parser.format_help()}
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, sp in sub.choices.items():
            texts[f"fastnet {name}"] = sp.format_help()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return texts


def _check_data(spec: str, flag: str = "--data") -> None:
    """Refuse a --data that names no data set, before anything is loaded or compiled."""
    from fastnet import datafiles

    if spec.strip().lower() in ("auto", "mnist", "fashion", "fashion-mnist", "fashion_mnist", "sample"):
        return
    if datafiles.is_data_file(spec):
        missing = [p.strip() for p in spec.split(",") if p.strip() and not os.path.isfile(os.path.expanduser(p.strip()))]
        if missing:
            raise FileNotFoundError(f"{flag} {spec}: no such file {missing[0]}")
        return
    if not os.path.isdir(os.path.expanduser(spec)):
        raise FileNotFoundError(f"{flag} {spec}: not a data set name and no such folder or file; "
                                f"{flag} takes {DATA_FORMS}")


def _load_data(name: str):
    """(train, test, description) for --data; a data set not on disk and not downloadable
    is one short line in the command's words (the library's message lists Python calls)."""
    from fastnet import data

    try:
        return _load_data_as_is(name)
    except data.DataNotFoundError as exc:
        label = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}.get(name.strip().lower(), name)
        cause = exc.__cause__ or exc.__context__
        why = f" and the download failed ({type(cause).__name__})" if cause is not None else ""
        raise FileNotFoundError(
            f"--data {name}: {label} was not found on disk{why}. Fix: --data DIR (a folder with the 4 IDX "
            f"files), set FASTNET_DATA=DIR, or --data sample (the embedded 10k digits, no download)") from exc


def _load_data_as_is(name: str):
    from fastnet import data

    if name == "auto":
        try:
            train, test = data.load_mnist(download=False)
            return train, test, "MNIST (60,000 train / 10,000 test, found on disk)"
        except data.DataNotFoundError:
            train, test = data.load("sample")
            return train, test, ("the embedded MNIST sample (8,000 train / 2,000 test); "
                                 "--data mnist downloads the full set")
    train, test = data.load(name)
    label = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "sample": "the embedded MNIST sample"}.get(name, name)
    if len(label) > 60:
        label = "..." + label[-57:]
    return train, test, f"{label} ({len(train[0]):,} train / {len(test[0]):,} test)"


class _say_run_lines:
    """Print what ``fit`` logs about the run (``fastnet.training`` at INFO: where it resumed,
    a finished checkpoint) on stdout, one line each, until :meth:`close`."""

    def __init__(self):
        import logging

        self.log = logging.getLogger("fastnet.training")
        self.handler = logging.StreamHandler(sys.stdout)
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.level = self.log.level
        self.log.addHandler(self.handler)
        self.log.setLevel(logging.INFO)

    def close(self):
        self.log.removeHandler(self.handler)
        self.log.setLevel(self.level)


def _say(line: str, width: int = 99) -> None:
    """Print a header line wrapped to ``width`` columns (continuations indented)."""
    import textwrap

    print("\n".join(textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False)) or line,
          flush=True)


def _check_against_data(a, sizes, Xtr, ytr) -> None:
    """--sizes and --batch-size against the loaded data, before anything is compiled."""
    import numpy as np

    if sizes[0] != Xtr.shape[1]:
        raise ValueError(f"--sizes starts with {sizes[0]} inputs but --data {a.data} has {Xtr.shape[1]} features "
                         f"per sample; fix: --sizes {Xtr.shape[1]},...")
    n_classes = int(np.max(ytr)) + 1
    if n_classes > sizes[-1]:
        raise ValueError(f"--sizes ends with {sizes[-1]} outputs but the labels of --data {a.data} go up to "
                         f"{n_classes - 1}; fix: --sizes ...,{n_classes} (one output per class)")
    if n_classes < sizes[-1]:
        print(f"fastnet train: warning: --sizes ends with {sizes[-1]} outputs but --data {a.data} has "
              f"{n_classes} classes; fix: --sizes ...,{n_classes}", file=sys.stderr, flush=True)
    if a.batch_size > len(ytr):
        raise ValueError(f"--batch-size {a.batch_size} is larger than the {len(ytr):,} training samples of "
                         f"--data {a.data}; fix: --batch-size {len(ytr)} or less")


def _check_output(path, flag: str) -> None:
    """Refuse, before any work is done, an output path fastnet would not write (see
    :func:`fastnet.io.check_target`: a missing or unwritable folder, a directory, a FIFO or
    device, a name too long for the temp file)."""
    if path is None:
        return
    from fastnet.io import check_target

    check_target(path, flag)


@contextlib.contextmanager
def _progress_policy(quiet: bool):
    """Progress bars follow one rule while a command runs: off with --quiet or when stdout
    is not a terminal (:func:`fastnet.progress.enabled`).

    Data downloads draw their bar through ``fastnet.data._progress``; for the command's
    duration it is routed through :func:`fastnet.progress.download_bar` so the rule (and
    --quiet) applies to them too. Both are restored afterwards (``main`` may be called
    in-process, e.g. by tests).
    """
    from fastnet import data, progress

    old_enabled, old_hook = progress.set_enabled(not quiet), data._progress
    data._progress = progress.download_bar
    try:
        yield
    finally:
        progress.set_enabled(old_enabled)
        data._progress = old_hook


def cmd_train(a) -> int:
    import fastnet
    from fastnet import backend as B
    from fastnet import progress
    from fastnet.history import History

    seen = {}
    for path, flag in ((a.save, "--save"), (a.history, "--history"), (a.plot, "--plot"),
                       (a.checkpoint, "--checkpoint")):
        _check_output(path, flag)
        if path is not None and seen.setdefault(os.path.realpath(path), flag) != flag:
            raise ValueError(f"{flag} and {seen[os.path.realpath(path)]} name the same file {path}; one would "
                             "overwrite the other. Fix: give each its own path")
    if a.resume and not a.checkpoint:
        raise ValueError("--resume needs --checkpoint PATH (the file to resume from)")
    if a.plot:
        from fastnet import plot

        plot.require("--plot")  # fail now, not after the training
    _check_data(a.data)
    net = fastnet.Network(a.sizes, activation=a.activation, cost=a.cost, init=a.init, dtype=a.dtype,
                          device=a.device, seed=a.seed)
    (Xtr, ytr), (Xte, yte), desc = _load_data(a.data)
    _check_against_data(a, net.sizes, Xtr, ytr)
    from fastnet import engines

    where = why = None
    if net._auto_device:   # said here; fit then makes the same choice without logging it again
        where, why = engines.choose_device(net, len(ytr), a.batch_size, a.epochs)
        engines.say_once(why, log=False)
    if not a.quiet:
        _say(f"data: {desc}")
        # device='auto': the device line below says why, so this line does not say it as well
        _say(B.describe(net.backend) if why is None else
             f"backend: {'cupy on cuda' if where == 'cuda' else 'numpy on cpu'} (device='auto')")
        tables = (f" activation={net.activation if isinstance(net.activation, str) else ','.join(net.activation)}"
                  if net.activation != "sigmoid" else "") + (f" optimizer={a.optimizer}" if a.optimizer != "sgd" else "")
        _say(f"network: {net.sizes}{tables} cost={net.cost} dtype={net.dtype}; epochs={a.epochs} "
             f"batch={a.batch_size} eta={a.eta} lmbda={a.lmbda}"
             + (f" patience={a.patience}" if a.patience else ""))
        if why is not None:
            _say(why)
    from fastnet import optim

    plan = engines.plan(net, Xtr, batch_size=a.batch_size, epochs=a.epochs, engine=a.engine,
                        optimizer=optim.get(a.optimizer))
    if not a.quiet:
        _say(plan.line())
    if plan.units:   # now, so that epoch 1's time is training, not compiling (or loading)
        t_jit = time.perf_counter()
        for unit in plan.units:
            engines.prepare(unit, net.dtype, net.n_layers)
        if not a.quiet:
            how = "compiled once, then cached on disk" if plan.compile else "from the disk cache"
            print(f"kernels ready in {time.perf_counter() - t_jit:.1f} s ({how})",
                  flush=True)
    later = engines.compile_later(plan)   # on a terminal or not: the next run gets the better engine
    if later is not None and not a.quiet:
        print(later.line(), flush=True)
    # The bar prints the epoch lines (above itself) and is a fit callback: per epoch now,
    # per minibatch where fit drives fastnet.progress (see progress.for_fit).
    bar = None if a.quiet else progress.ProgressBar(
        a.epochs, history=History(config={"n_train": len(ytr), "n_val": len(yte)}))
    kw = {"checkpoint": a.checkpoint, "resume": a.resume} if a.checkpoint else {}
    kw["engine"] = plan.engine
    if a.patience:
        kw["early_stopping"] = {"patience": a.patience}
    t0 = time.perf_counter()
    if bar is not None:
        bar.open()
    said = _say_run_lines()   # fit's "resumed at epoch N, sample M" and the like, on stdout
    try:
        import warnings

        with warnings.catch_warnings():   # said above, in --sizes's words
            warnings.filterwarnings("ignore", message="the output layer has")
            hist = net.fit(Xtr, ytr, epochs=a.epochs, batch_size=a.batch_size, eta=a.eta, lmbda=a.lmbda,
                           optimizer=a.optimizer, validation_data=(Xte, yte), verbose=0,
                           callbacks=[] if bar is None else [bar], **kw)
        # fit ran the engine named by the plan above, so the background compile is this command's
        hist.config["background_compile"] = list(later.engines) if later and later.started else None
    except KeyboardInterrupt as exc:  # fastnet.TrainingInterrupted says where, and the checkpoint
        if bar is not None:
            bar.close()  # before the message, so the bar does not overwrite it
        print(f"\nfastnet train: {' '.join(str(exc).split()) or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        said.close()
        if bar is not None:
            bar.close()
    last = hist[-1]
    es = hist.config.get("early_stopping")
    if es and es["stopped_epoch"]:
        best = hist[es["best_epoch"] - 1]
        print(f"stopped early: no better test accuracy for {a.patience} epochs; kept epoch {es['best_epoch']}'s "
              f"weights")
        last = best
    print(f"done: test accuracy {last['val_accuracy']:.4f} after {len(hist)} epochs in "
          f"{time.perf_counter() - t0:.1f} s")
    if a.save:
        net.save(a.save)
        print(f"saved model to {a.save}")
    if a.history:
        hist.save(a.history)
        print(f"saved history to {a.history}")
    if a.plot:
        from fastnet import plot

        plot.plot_history(hist, a.plot)
        print(f"saved curves to {a.plot} ({plot.CURVES_SIZE[0]} x {plot.CURVES_SIZE[1]} px)")
    return 0


def cmd_evaluate(a) -> int:
    import fastnet

    _check_data(a.data)
    net = fastnet.load(a.model, device=a.device)
    _, (Xte, yte), desc = _load_data(a.data)
    acc = net.evaluate(Xte, yte)
    print(f"{a.model}: {round(acc * len(yte))} / {len(yte)} = {acc:.4f} on {desc}")
    return 0


def cmd_predict(a) -> int:
    import numpy as np

    import fastnet
    from fastnet import images

    images.require("fastnet predict")
    net = fastnet.load(a.model, device=a.device)
    if net.sizes[0] != images.SIZE * images.SIZE:
        raise ValueError(f"{a.model} takes {net.sizes[0]} inputs; images become {images.SIZE * images.SIZE} "
                         f"({images.SIZE}x{images.SIZE}). Fix: use a model trained on MNIST-shaped data")
    top = min(a.top, net.sizes[-1])
    failed = 0
    for path in a.images:   # one line per image, in order: its classes, or why it could not be read
        try:
            x = images.load_image(path)
        except (ValueError, OSError) as exc:
            failed += 1
            print(f"fastnet predict: error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
            continue
        p = net.backend.asnumpy(net.predict_proba(x[None, :]))[0].astype(np.float64)
        if net.cost != "cross_entropy":  # sigmoid outputs: normalise so that they read as probabilities
            p = p / max(p.sum(), np.finfo(np.float64).tiny)
        best = np.argsort(-p, kind="stable")[:top]
        print(f"{path}: " + "  ".join(f"{int(k)} ({p[k]:.3f})" for k in best), flush=True)
    return 1 if failed else 0


def cmd_plot(a) -> int:
    from fastnet import plot
    from fastnet.history import History

    plot.require("fastnet plot")
    _check_output(a.output, "-o")
    try:
        hist = History.load(a.history)
    except FileNotFoundError:
        raise FileNotFoundError(f"{a.history}: no such history file")
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{a.history}: not a fastnet history JSON file ({exc})") from exc
    plot.plot_history(hist, a.output, title=a.title)
    n = len(hist)
    print(f"saved curves of {n} epoch{'s' if n != 1 else ''} to {a.output} "
          f"({plot.CURVES_SIZE[0]} x {plot.CURVES_SIZE[1]} px)")
    return 0


def cmd_show(a) -> int:
    import numpy as np

    import fastnet
    from fastnet import plot

    plot.require("fastnet show")
    _check_output(a.output, "-o")
    if a.what == "confusion":
        _check_data(a.data)
    net = fastnet.load(a.model, device=a.device)
    if a.what == "weights":
        fig = plot.plot_weights(net, a.output)
        n = min(net.sizes[1], 100)
        w, h = (int(round(v)) for v in fig.get_size_inches() * fig.dpi)
        print(f"saved first-layer weights of {n} hidden units as 28x28 tiles to {a.output} ({w} x {h} px)")
        return 0
    _, (Xte, yte), desc = _load_data(a.data)
    pred = net.backend.asnumpy(net.predict(Xte))
    cm = plot.confusion_matrix(yte, pred, net.sizes[-1])
    plot.plot_confusion(cm, a.output)
    acc = np.trace(cm) / max(cm.sum(), 1)
    print(f"{a.model}: accuracy {acc:.4f} on {desc}")
    print(f"saved confusion matrix to {a.output} ({plot.CONFUSION_SIZE[0]} x {plot.CONFUSION_SIZE[1]} px)")
    return 0


def info_lines() -> list[str]:
    """What ``fastnet info`` prints: versions, backend choice, kernel path, GPU status."""
    import platform

    import numpy as np

    import fastnet
    from fastnet import backend as B
    from fastnet import ops

    lines = [f"fastnet {fastnet.__version__}, Python {platform.python_version()}, NumPy {np.__version__}"]
    from fastnet import kernels

    if kernels.NUMBA_PROBLEM is None:
        import numba

        lines.append(f"numba {numba.__version__}")
    else:
        lines.append(f"numba: not used: {kernels.NUMBA_PROBLEM} (kernels fall back to plain xp)")
    if kernels.CACHE_NOTE:
        lines.append(f"compiled-kernel cache: {kernels.CACHE_NOTE}")
    elif kernels.numba_cache_dir():
        lines.append(f"compiled-kernel cache: {kernels.numba_cache_dir()}")
    be = B.get_backend("auto")
    lines.append(B.describe(be))
    lines.append(f"kernel path on NumPy arrays: {ops.kernel_path(np.zeros(1))}")
    if ops.kernel_path(np.zeros(1)) == "njit":
        from fastnet import engines
        from fastnet.kernels import epoch_cpu

        lines.append("training engines (fastnet.engines; compiled state for float32, 2 weight layers):")
        lines += ["  " + line for line in engines.describe("float32", 2)]
        lines.append(f"compiled CPU epoch loop: fused multiply-adds, {epoch_cpu.WIDE_BYTES * 8}-bit vectors")
    from fastnet import machine

    lines.append(f"OPENBLAS_CORETYPE: {machine.OPENBLAS_DECISION}")
    ok, why = B.cuda_status()
    lines.append(f"CUDA GPU: {why}" if ok else f"CUDA GPU: not usable: {why}. Fix: {B.INSTALL_HINT}")
    cuda_impl = getattr(ops, "cuda_implementation", None)
    if cuda_impl is not None:
        lines.append(f"numba CUDA implementation: {cuda_impl()}")
    return lines


def cmd_info(a) -> int:
    if a.ptx is not None:
        return _info_ptx(a.ptx)
    print("\n".join(info_lines()))
    return 0


def _info_ptx(arch: str) -> int:
    """``fastnet info --ptx ARCH``: see fastnet.kernels.ptx (RuntimeError: no real compiler)."""
    from fastnet.kernels import _cuda_api, ptx

    results = ptx.check(arch)
    for r in results:
        status = f"ok {r.ptx_bytes} bytes" if not r.error else f"FAILED {r.error}"
        print(f"{r.name:<34} {r.dtype:<8} {status}  {r.signature}")
    failed = sum(1 for r in results if r.error)
    print(f"{len(results) - failed} of {len(results)} kernel signatures compiled to PTX for {arch} "
          f"({_cuda_api.implementation()})")
    return 1 if failed or not results else 0


def _check_json_plot(a) -> None:
    """Refuse an unwritable --json / --plot path, or --plot without matplotlib, before any run."""
    for path, flag in ((a.json, "--json"), (a.plot, "--plot")):
        _check_output(path, flag)
    if a.plot:
        from fastnet import plot

        plot.require("--plot")  # fail now, not after the runs


def cmd_bench(a) -> int:
    import json

    from fastnet import benchmark

    _check_json_plot(a)
    result = benchmark.run(quick=a.quick, data=a.data, against=a.against, dtype=a.dtype, repeat=a.repeat,
                           device=a.device)
    cfg, m = result["config"], result["machine"]
    where = m.get("gpu") if a.device == "cuda" else f"{m.get('cpu_model')} ({m.get('usable_cores')} cores)"
    print(f"fastnet bench{' --quick' if a.quick else ''}: {a.dtype}, data {a.data}, {where}, "
          f"{cfg['wall_s']:.0f} s")
    print(benchmark.format_table(result))
    print("x best peer: samples/s over the best peer's (>1: faster); % GEMM ceiling: NumPy's time for the "
          "step's matrix products alone over the step's time; busy: other processes' share of the CPUs; "
          "x raw: fit's or train_step's time over the njit engine's (>1: what users call is slower)")
    if a.json:
        from fastnet.io import atomic_write_text

        atomic_write_text(a.json, json.dumps(result, indent=2) + "\n", "--json")
        print(f"saved results to {a.json}")
    if a.plot:
        benchmark.plot_rows(result, a.plot)
        print(f"saved samples/s against batch size to {a.plot} "
              f"({benchmark.PLOT_SIZE[0]} x {benchmark.PLOT_SIZE[1]} px)")
    return 0


def _halving_factor(text: str) -> int:
    try:
        f = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 2 (each rung keeps the best 1/F). Actual: {text!r}") \
            from None
    if f < 2:
        raise argparse.ArgumentTypeError(f"must be an int >= 2 (each rung keeps the best 1/F). Actual: {f}. Fix: "
                                         f"--halving 3, or leave it out to train every configuration for every epoch")
    return f


def _grace_epochs(text: str) -> int:
    try:
        e = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1 (the first rung's epochs). Actual: {text!r}") from None
    if e < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1 (the first rung's epochs). Actual: {e}. Fix: "
                                         f"--grace 1 (the default)")
    return e


def cmd_warmup(a) -> int:
    """``fastnet warmup``: :func:`fastnet.warmup` for each --dtype, one line per unit."""
    import numpy as np

    import fastnet
    from fastnet import engines, kernels

    if kernels.NUMBA_PROBLEM is not None:
        raise RuntimeError(f"nothing to compile: Numba's compiled kernels cannot run here, because "
                           f"{kernels.NUMBA_PROBLEM}; fastnet runs the plain xp kernels. Fix: unset that setting")
    from fastnet import ops

    if ops.kernel_path(np.zeros(1)) != "njit":
        raise RuntimeError("nothing to compile: FASTNET_KERNELS=xp asks for the plain xp kernels. "
                           "Fix: unset FASTNET_KERNELS")
    names = {"kernels": "element-wise kernels", "compiled": "compiled epoch loop", "rows": "rows engine"}
    done = []

    def report(unit, dtype, depth, seconds, cached):
        where = f"{dtype}" + ("" if unit in engines._ANY_DEPTH else f", depth {depth}")
        how = "loaded from the disk cache" if cached else "compiled"
        print(f"{names.get(unit, unit)} ({where}): {how} in {seconds:.1f} s", flush=True)
        done.append(cached)

    t0 = time.perf_counter()
    for dtype in dict.fromkeys(a.dtype):
        fastnet.warmup(dtype, n_layers=tuple(dict.fromkeys(a.depth)), large=a.large, report=report)
    print(f"warmup done in {time.perf_counter() - t0:.1f} s: {done.count(False)} compiled, {done.count(True)} "
          f"already cached (in {kernels.numba_cache_dir()})", flush=True)
    return 0


def cmd_sweep(a) -> int:
    from fastnet import backend as B
    from fastnet import progress, sweep

    _check_json_plot(a)
    if a.resume and not a.json:
        raise ValueError("--resume goes on from a sweep's JSON state, but no --json was given. Fix: add --json "
                         "OUT.json, the file the interrupted sweep wrote")
    if a.grace is not None and a.halving is None:
        raise ValueError(f"--grace {a.grace} is the first rung of successive halving, which is off. Fix: add "
                         f"--halving F (e.g. 3), or leave out --grace")
    grace = 1 if a.grace is None else a.grace
    configs = sweep.expand_grid(sizes=a.sizes, etas=a.eta, lmbdas=a.lmbda,
                                seeds=sweep.parse_int_ranges(a.seeds), batch_sizes=a.batch_size,
                                costs=a.cost, activations=a.activation, optimizers=a.optimizer, epochs=a.epochs)
    engine, max_k, dtype, order = sweep._check_options(a.engine, a.address, a.max_stack, a.device, a.dtype,
                                                       a.order)
    sweep._check_order_seed(a.order_seed)
    _check_data(a.data)
    (Xtr, ytr), (Xte, yte), desc = _load_data(a.data)
    if a.limit is not None and a.limit < len(ytr):
        Xtr, ytr = Xtr[:a.limit], ytr[:a.limit]
        desc += f"; training on the first {a.limit:,} (--limit)"
    data = sweep._check_data((Xtr, ytr, Xte, yte), configs)
    sweep._check_halving(a.halving, grace, configs)
    if a.resume and os.path.exists(a.json):   # refused here, before the header: another grid, data or settings
        sweep._resume_state(a.json, sweep._fingerprint(configs, data, sweep._settings(
            a.halving, grace, max_k, dtype, order, a.order_seed)))
    stacks = sweep.group_stacks(configs, max_k)
    if not a.quiet:
        print(f"data: {desc}")
        if a.address is None:
            print(B.describe(B.get_backend(a.device)))
        else:
            print(f"device: {a.device}, chosen in each task on the cluster")
        where = ("" if engine == "local" else f" (the Ray cluster at {a.address})" if a.address
                 else " (a Ray cluster on this machine's cores)")
        print(f"sweep: {len(configs)} configuration{'s' if len(configs) != 1 else ''} in {len(stacks)} "
              f"stack{'s' if len(stacks) != 1 else ''} of at most {max_k} networks, {a.epochs} epochs each, "
              f"{dtype}, order {order}; engine {engine}{where}", flush=True)
        if a.halving:
            rungs = sweep.rung_epochs(a.epochs, a.halving, grace)
            print(f"successive halving: rungs at epochs {', '.join(map(str, rungs))}; each keeps the best "
                  f"1/{a.halving} (rounded up)", flush=True)
        if a.resume and os.path.exists(a.json):
            print(f"resuming from {a.json}", flush=True)
    bar = None
    if progress.enabled():
        from tqdm import tqdm

        bar = tqdm(total=len(configs), desc="configurations", unit="config", leave=False, file=sys.stderr,
                   dynamic_ncols=True)

    finished = []

    def done(rows):
        finished.append(rows)
        if bar is not None:
            bar.update(len(rows))
        if a.quiet:
            return
        failed = [r for r in rows if r["status"] == "failed"]
        pruned = [r for r in rows if r.get("pruned_at") is not None]
        if failed:  # say so now; the table repeats it
            line = f"a stack of {len(rows)} failed: {failed[0]['error']}"
        elif pruned:
            line = (f"epoch {pruned[0]['pruned_at']}: {len(pruned)} configuration{'s' if len(pruned) != 1 else ''} "
                    f"pruned")
        elif a.halving:
            n = len(rows)
            line = f"a stack of {n} configuration{'s' if n != 1 else ''} done ({a.epochs} epochs)"
        elif bar is None:   # no bar to show progress: one line per stack
            n = len(rows)
            line = (f"stack {len(finished)} of {len(stacks)} done: {n} configuration{'s' if n != 1 else ''} "
                    f"in {rows[0]['stack_seconds']:.1f} s")
        else:
            return
        if bar is not None:
            bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    extra = {"data": a.data, "data_description": desc, "limit": a.limit,
             "command": {k: v for k, v in vars(a).items() if k != "command"}}

    def save(result):
        if a.json:   # run_sweep wrote it already, after every stack: said here once
            print(f"saved results to {a.json}", flush=True)

    try:
        result = sweep.run_sweep(configs, data, engine=engine, address=a.address, max_k=max_k, device=a.device,
                                 dtype=dtype, order=order, order_seed=a.order_seed, progress=done,
                                 halving=a.halving, grace=grace, json_path=a.json, json_extra=extra,
                                 resume=a.resume)
    except sweep.SweepInterrupted as exc:   # keep what finished: the table, the JSON, then exit 130
        if bar is not None:
            bar.close()
        result = exc.result
        print(sweep.format_table(result))
        n_failed = len(result.failures)
        print(f"interrupted: {len(configs) - len(result.not_run) - n_failed} of {len(configs)} configurations "
              f"ran in {result.config['wall_s']:.1f} s"
              + (f", {n_failed} failed" if n_failed else "")
              + f"; {len(result.not_run)} not run"
              + ("; to go on, run the same command with --resume" if a.json else ""), flush=True)
        save(result)
        print(f"fastnet sweep: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    print(sweep.format_table(result))
    n_failed = len(result.failures)
    n_pruned = result.config.get("pruned") or 0
    print(f"{len(configs) - n_failed} of {len(configs)} configurations ran in {result.config['wall_s']:.1f} s"
          + (f", {n_pruned} of them pruned" if n_pruned else "")
          + (f"; {n_failed} failed (their errors are in the table)" if n_failed else ""))
    save(result)
    if a.plot:
        try:
            fig = sweep.plot_sweep(result, a.plot)
        except ValueError as exc:  # every configuration failed or diverged: the table says which
            print(f"no picture written to {a.plot}: {exc}")
        else:
            w, h = (int(round(v)) for v in fig.get_size_inches() * fig.dpi)
            print(f"saved best accuracy against the swept parameters to {a.plot} ({w} x {h} px)")
    return 1 if n_failed else 0


def _ignore_sigint() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv=None) -> int:
    """Entry point of the ``fastnet`` command; returns the exit code.

    As the command itself (``argv`` None), an interrupted run (exit code 130: everything
    saved and said) leaves at once instead of returning: Python's shutdown would join the
    compiled loop's pool threads, and a Ctrl-C racing with that could end the process by
    the signal (status -2) instead of 130."""
    code = _main(argv)
    if argv is None and code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        target, msg = _did_you_mean(parser, getattr(args, "command", None), extra)
        target.error(msg)
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):   # warnings as the CLI speaks
        print(f"fastnet {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)

    warnings.showwarning = one_line
    from fastnet.data import DataNotFoundError, IDXError
    from fastnet.io import ModelFileError
    from fastnet.network import DivergenceError
    from fastnet.plot import MissingExtraError

    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "plot": cmd_plot,
                "show": cmd_show, "info": cmd_info, "bench": cmd_bench, "sweep": cmd_sweep, "warmup": cmd_warmup}
    try:
        with _progress_policy(quiet=getattr(args, "quiet", False)):
            return commands[args.command](args)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError, DataNotFoundError, IDXError,
            ModelFileError, OSError, MissingExtraError, DivergenceError, MemoryError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"fastnet {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if argv is None:   # the fastnet command, not a call in-process: a further Ctrl-C while
            _ignore_sigint()   # Python shuts down (joining threads) must not turn 130 into a traceback


if __name__ == "__main__":
    sys.exit(main())
