"""Hyperparameter sweeps: a grid of configurations trained as :class:`fastnet.NetworkStack` s.

A sweep is a list of :class:`Config` (one network each: sizes, eta, lmbda, seed, batch size,
cost, hidden activation, optimizer, epochs), usually the grid :func:`expand_grid` makes.
Configurations that differ only in eta, lmbda and seed share one stack (:func:`group_stacks`),
so K of them train in one pass (one NetworkStack has one activation and one optimizer, so
those are part of what a stack shares, like the shape); :func:`run_stack` trains one stack,
:func:`run_sweep` all of them, one after the other (``engine="local"``) or as Ray tasks
(``engine="ray"``: the cores of this machine, or a cluster's). Every configuration gets one
result row, in grid order; a stack that fails marks its rows ``"failed"`` with the error and
the others still run.
``fastnet sweep`` is the command line for it.

>>> from fastnet import sweep
>>> configs = sweep.expand_grid(etas=[0.5, 3.0], seeds=[0, 1], epochs=2)
>>> for c in configs[:2]:
...     print(c.label())
784-30-10 eta=0.5 lmbda=0 seed=0 batch=10 quadratic epochs=2
784-30-10 eta=0.5 lmbda=0 seed=1 batch=10 quadratic epochs=2
>>> [len(s) for s in sweep.group_stacks(configs, max_k=8)]
[4]

Seeds: net ``i`` of a stack starts as ``Network(sizes, seed=seeds[i])``. With
``order="shared"`` (the default, and the fast path) every net of every stack follows the
minibatch order ``order_seed`` (default 0) draws, so a configuration's numbers do not
depend on which stack it lands in, nor on the engine, and the configurations with seed
``order_seed`` are exactly ``fastnet train --seed <order_seed>``; ``order="independent"``
makes every configuration exactly its own ``Network(seed=...).fit`` run (slower).

Testing hook: when the environment variable ``FASTNET_SWEEP_FAIL`` holds a piece of a
configuration's label (e.g. ``eta=0.5``; mind that ``eta=1`` also matches ``eta=10``, while
``"eta=1 "`` does not), the stack holding that configuration raises ``RuntimeError`` where
it runs (in the Ray task, so Ray's retry is used too), as a crash would. The tests use it
to check that failures are reported and the other stacks finish.
"""
from __future__ import annotations

import difflib
import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field

from fastnet import _validate as V

__all__ = ["ENGINES", "FAIL_ENV", "GRID_PARAMETERS", "MAX_CONFIGS", "PLOT_SIZE", "RAY_CONNECT_TIMEOUT", "ROW_DEFAULTS",
           "STACK_KEY", "STATUSES", "Config",
           "SweepInterrupted", "SweepResult", "default_max_k", "expand_grid", "format_table", "group_stacks",
           "keep_best", "parse_int_ranges", "plot_sweep", "require_ray", "rung_epochs", "run_stack", "run_sweep",
           "save_json"]

#: Where stacks run: one after the other in this process, or as Ray tasks.
ENGINES = ("local", "ray")
#: The environment variable of the fault-injection testing hook (see the module doc).
FAIL_ENV = "FASTNET_SWEEP_FAIL"
#: The parameters of :func:`expand_grid`, and their defaults (Nielsen's recipe).
GRID_PARAMETERS = {"sizes": [[784, 30, 10]], "etas": [3.0], "lmbdas": [0.0], "seeds": [0], "batch_sizes": [10],
                   "costs": ["quadratic"], "activations": ["sigmoid"], "optimizers": ["sgd"], "epochs": 30}
#: The command line flag of each grid parameter, for error messages.
_FLAGS = {"sizes": "--sizes", "etas": "--eta", "lmbdas": "--lmbda", "seeds": "--seeds",
          "batch_sizes": "--batch-size", "costs": "--cost", "activations": "--activation",
          "optimizers": "--optimizer", "epochs": "--epochs", "max_k": "--max-stack",
          "address": "--address", "order_seed": "--order-seed"}
#: Pixel width per panel and height of :func:`plot_sweep`'s picture.
PLOT_SIZE = (450, 450)
#: Minibatch orders of a stack (see :class:`fastnet.NetworkStack`).
ORDERS = ("shared", "independent")
#: A row's ``status``: trained to the end, stopped at a rung by successive halving, its loss
#: became NaN or infinite, its stack raised, or never finished (Ctrl-C).
STATUSES = ("ok", "pruned", "diverged", "failed", "not run")
#: The statuses of configurations that ran (and have accuracies).
RAN = ("ok", "pruned", "diverged")


def _name(param: str) -> str:
    return f"{param} ({_FLAGS[param]})" if param in _FLAGS else param


@dataclass(frozen=True)
class Config:
    """One network of a sweep: its layer sizes and training recipe.

    >>> from fastnet.sweep import Config
    >>> c = Config((784, 30, 10), eta=0.5, lmbda=0.0, seed=3, batch_size=10, cost="quadratic", epochs=30)
    >>> c.label()
    '784-30-10 eta=0.5 lmbda=0 seed=3 batch=10 quadratic epochs=30'
    >>> c.as_dict()["sizes"], c.as_dict()["activation"], c.as_dict()["optimizer"]
    ([784, 30, 10], 'sigmoid', 'sgd')
    >>> Config((784, 30, 10), 0.01, 0.0, 3, 10, "cross_entropy", 30, "relu", "adam").label()
    '784-30-10 eta=0.01 lmbda=0 seed=3 batch=10 cross_entropy relu adam epochs=30'

    ``activation``: the hidden layers' activation, a name of :data:`fastnet.activations.HIDDEN`,
    or one name per hidden layer joined by commas (``"relu,tanh"``); ``optimizer``: a name of
    :data:`fastnet.optim.OPTIMIZERS`. The label names them only when they are not the
    defaults (sigmoid, sgd), so the labels of sigmoid/SGD sweeps read as before.
    """

    sizes: tuple
    eta: float
    lmbda: float
    seed: int
    batch_size: int
    cost: str
    epochs: int
    activation: str = "sigmoid"
    optimizer: str = "sgd"

    def label(self) -> str:
        """Short text naming the configuration (what ``FASTNET_SWEEP_FAIL`` is matched against)."""
        extra = "".join(f" {v}" for v, default in ((self.activation, "sigmoid"), (self.optimizer, "sgd"))
                        if v != default)
        return (f"{'-'.join(map(str, self.sizes))} eta={self.eta:g} lmbda={self.lmbda:g} seed={self.seed} "
                f"batch={self.batch_size} {self.cost}{extra} epochs={self.epochs}")

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict (``sizes`` a list)."""
        return {"sizes": list(self.sizes), "eta": self.eta, "lmbda": self.lmbda, "seed": self.seed,
                "batch_size": self.batch_size, "cost": self.cost, "activation": self.activation,
                "optimizer": self.optimizer, "epochs": self.epochs}

    @property
    def hidden_activation(self):
        """``activation`` as :class:`fastnet.NetworkStack` takes it: one name, or a list of
        one name per hidden layer."""
        names = self.activation.split(",")
        return names[0] if len(names) == 1 else names

    @property
    def stack_key(self) -> tuple:
        """What configurations sharing one NetworkStack must have in common (see :data:`STACK_KEY`)."""
        return tuple(getattr(self, name) for name in STACK_KEY)


#: The fields configurations sharing one NetworkStack must agree on: its shape and its
#: recipe (one stack has one batch size, cost, activation, optimizer and epoch count).
STACK_KEY = ("sizes", "batch_size", "cost", "activation", "optimizer", "epochs")


# --- the grid ---------------------------------------------------------------------------------


#: Most integers :func:`parse_int_ranges` expands to (each seed is a network to train).
MAX_SEEDS = 100_000
#: Most configurations in one grid: the product of the values of every parameter (each one
#: is a network to train), bounded like one list of seeds.
MAX_CONFIGS = 100_000
#: A seed is an int in [0, SEED_LIMIT), as for :class:`fastnet.Network`.
SEED_LIMIT = 2**63


def parse_int_ranges(tokens, name: str = "seeds") -> list[int]:
    """Integers from ``"0-7"`` (inclusive), ``"5"`` and comma lists, in the order given.

    >>> from fastnet.sweep import parse_int_ranges
    >>> parse_int_ranges(["0-3", "9"]), parse_int_ranges(["0", "1", "5"]), parse_int_ranges(["2-4,7"])
    ([0, 1, 2, 3, 9], [0, 1, 5], [2, 3, 4, 7])
    >>> parse_int_ranges(["5-2"])
    Traceback (most recent call last):
    ValueError: seeds (--seeds): range '5-2' runs backwards. Fix: write it low-high, e.g. 2-5
    """
    if isinstance(tokens, str):
        tokens = [tokens]
    out = []
    for token in tokens:
        for part in str(token).replace(" ", "").split(","):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            try:
                a = int(lo)
                b = int(hi) if sep else a
            except ValueError:
                raise ValueError(f"{_name(name)}: {part!r} is not an int or a range. Fix: write ints and "
                                 f"ranges like 0-7, 0 1 5 or 0-3 9") from None
            if b < a:
                raise ValueError(f"{_name(name)}: range {part!r} runs backwards. Fix: write it low-high, "
                                 f"e.g. {b}-{a}")
            if len(out) + (b - a + 1) > MAX_SEEDS:
                raise ValueError(f"{_name(name)}: {part!r} gives {b - a + 1:,} values; at most {MAX_SEEDS:,} "
                                 f"in all. Fix: a smaller range")
            out.extend(range(a, b + 1))
    return out


def _values(param: str, value) -> list:
    """A grid parameter's values as a non-empty list (a scalar is a list of one)."""
    if param == "sizes":
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, numbers.Integral) for v in value):
            value = [value]  # one network shape, e.g. [784, 30, 10]
    elif isinstance(value, (str, bytes, numbers.Number)) or not hasattr(value, "__iter__"):
        value = [value]
    values = list(value) if not isinstance(value, (str, bytes)) else [value]
    if not values:
        raise ValueError(f"{_name(param)} is empty: a grid needs at least one value per parameter. Fix: give "
                         f"one or more values, or leave it out for the default {GRID_PARAMETERS[param]}")
    return values


def _check_value(param: str, v):
    where = _name(param)
    if param == "sizes":
        try:
            return tuple(V.check_sizes(v))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where} {v!r}: {exc}") from None
    if param == "costs":
        try:
            return V.check_choice("cost", v, V.COSTS)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    if param == "activations":
        return _check_activation(v)
    if param == "optimizers":
        from fastnet import optim

        try:
            return V.check_choice("optimizer", v, tuple(sorted(optim.OPTIMIZERS)))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    if param in ("etas", "lmbdas"):
        what = "learning rates > 0" if param == "etas" else "L2 strengths >= 0"
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{where} must be numbers ({what}). Actual: {v!r} ({type(v).__name__})")
        x = float(v)
        if not math.isfinite(x) or (x <= 0 if param == "etas" else x < 0):
            fix = "e.g. --eta 0.5 1 3" if param == "etas" else "0 for none, e.g. --lmbda 0 0.1 1"
            raise ValueError(f"{where} must be finite {what}. Actual: {v!r}. Fix: {fix}")
        return x
    # seeds, batch_sizes, epochs: ints
    low = 0 if param == "seeds" else 1
    what = f"an int >= {low}" if param == "epochs" else f"ints >= {low}"
    if param == "seeds":
        what = "ints >= 0 and < 2**63"
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{where} must be {what}. Actual: {v!r} ({type(v).__name__})")
    if v < low or param == "seeds" and v >= SEED_LIMIT:
        fix = ". Fix: a seed below 2**63 = 9223372036854775808" if param == "seeds" and v > 0 else ""
        raise ValueError(f"{where} must be {what}. Actual: {v}{fix}")
    return int(v)


def _check_activation(v) -> str:
    """One value of the activation axis: a name of :data:`fastnet.activations.HIDDEN`, or one
    per hidden layer (a list, or names joined by commas); returned as one string, names
    lower-cased and joined by commas (``"relu,tanh"``)."""
    from fastnet import activations

    where = _name("activations")
    choices = tuple(sorted(activations.HIDDEN))
    if isinstance(v, str):
        names = v.split(",")
    elif isinstance(v, (list, tuple)) and v and all(isinstance(n, str) for n in v):
        names = list(v)
    else:
        raise TypeError(f"{where}: activation must be one of {choices}, or a list with one per hidden layer. "
                        f"Actual: {v!r} ({type(v).__name__})")
    try:
        return ",".join(V.check_choice("activation", n, choices) for n in names)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _check_depths(sizes, acts) -> None:
    """Every activation value must fit every network shape (a per-layer list names one
    activation per hidden layer), and no two values may give one shape the same layers
    (``relu`` and ``relu,relu`` on two hidden layers would train one configuration twice)."""
    for s in sizes:
        n_hidden = len(s) - 2
        seen = {}
        for a in acts:
            names = a.split(",")
            if len(names) > 1 and len(names) != n_hidden:
                raise ValueError(f"{_name('activations')} {a!r} names {len(names)} hidden layers, but "
                                 f"{_name('sizes')} {','.join(map(str, s))} has {n_hidden}. Fix: one name for "
                                 f"every hidden layer, or one per hidden layer of every shape (run shapes of "
                                 f"other depths as another sweep)")
            layers = tuple(names * n_hidden if len(names) == 1 else names)
            if layers in seen:
                raise ValueError(f"{_name('activations')} lists {seen[layers]!r} and {a!r}, the same layers for "
                                 f"{','.join(map(str, s))}: that configuration would be trained twice. Fix: give "
                                 f"each activation once")
            seen[layers] = a


def expand_grid(grid=None, /, *, sizes=None, etas=None, lmbdas=None, seeds=None, batch_sizes=None, costs=None,
                activations=None, optimizers=None, epochs=None) -> list[Config]:
    """Every combination of the values given: a list of :class:`Config`, in grid order.

    Parameters (each a list of values, or one value; left out: the default)
    -----------------------------------------------------------------------
    sizes : layer widths, one list per network shape (default ``[[784, 30, 10]]``)
    etas : learning rates > 0 (default ``[3.0]``)
    lmbdas : L2 strengths >= 0 (default ``[0.0]``)
    seeds : ints >= 0, the initial parameters (default ``[0]``)
    batch_sizes : minibatch sizes >= 1 (default ``[10]``)
    costs : ``"quadratic"`` / ``"cross_entropy"`` (default ``["quadratic"]``)
    activations : the hidden layers' activation, names of :data:`fastnet.activations.HIDDEN`
        (default ``["sigmoid"]``); a value may give one name per hidden layer, as a list or
        joined by commas (``"relu,tanh"``), and must then match every shape's depth
    optimizers : names of :data:`fastnet.optim.OPTIMIZERS` (default ``["sgd"]``); eta is
        each one's learning rate
    epochs : int >= 1, one value for the whole grid (default 30)
    grid : dict, optional
        The same parameters as a dict (``{"etas": [0.5, 3.0], ...}``); unknown names are refused.

    Grid order: sizes outermost, then batch size, cost, activation, optimizer, eta, lmbda,
    and seeds innermost, so configurations that can share a stack are neighbours. Every value is checked before
    anything runs: an empty list, an unknown parameter, a bad value (a seed must be below
    2**63), a value given twice (which would train one configuration twice) or a grid of
    more than :data:`MAX_CONFIGS` configurations is a one-line ``ValueError`` (``TypeError``
    for a wrong type) naming the parameter and the fix.

    >>> from fastnet.sweep import expand_grid
    >>> grid = expand_grid({"sizes": [[784, 30, 10], [784, 100, 10]], "etas": [1, 3], "seeds": [0, 1]})
    >>> len(grid), grid[0].sizes, grid[-1].eta, grid[-1].seed
    (8, (784, 30, 10), 3.0, 1)
    >>> expand_grid(etas=[])
    Traceback (most recent call last):
    ValueError: etas (--eta) is empty: a grid needs at least one value per parameter. Fix: ...
    >>> expand_grid({"eta": [1]})
    Traceback (most recent call last):
    ValueError: unknown grid parameter 'eta' (did you mean 'etas'?); the parameters are sizes, etas, ...
    >>> expand_grid(seeds=[0, 1, 1])
    Traceback (most recent call last):
    ValueError: seeds (--seeds) lists 1 twice: that configuration would be trained twice. Fix: give each value once
    """
    given = {k: v for k, v in dict(sizes=sizes, etas=etas, lmbdas=lmbdas, seeds=seeds, batch_sizes=batch_sizes,
                                   costs=costs, activations=activations, optimizers=optimizers,
                                   epochs=epochs).items() if v is not None}
    if grid is not None:
        if not isinstance(grid, dict):
            raise TypeError(f"grid must be a dict of parameter -> values. Actual: {type(grid).__name__}")
        if not grid and not given:
            raise ValueError("the grid is empty: name at least one parameter (e.g. {'etas': [0.5, 3.0]}), "
                             "or call expand_grid() for the defaults")
        for key in grid:
            if key not in GRID_PARAMETERS:
                close = difflib.get_close_matches(str(key), list(GRID_PARAMETERS), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown grid parameter {key!r}{hint}; the parameters are "
                                 f"{', '.join(GRID_PARAMETERS)}")
            if key in given:
                raise ValueError(f"grid parameter {key!r} given twice, in the dict and as a keyword. Fix: give it once")
        given.update(grid)
    params = {**GRID_PARAMETERS, **given}
    n_epochs = params.pop("epochs")
    if isinstance(n_epochs, (list, tuple)):
        if len(n_epochs) != 1:
            raise ValueError(f"{_name('epochs')} takes one value for the whole grid (a stack trains its nets for "
                             f"the same number of epochs). Actual: {list(n_epochs)!r}. Fix: run one sweep per "
                             f"number of epochs, or compare epochs in one run's accuracy_per_epoch")
        n_epochs = n_epochs[0]
    n_epochs = _check_value("epochs", n_epochs)
    given_values = {param: _values(param, value) for param, value in params.items()}
    _check_grid_size(given_values)
    checked = {}
    for param, given_list in given_values.items():
        values = [_check_value(param, v) for v in given_list]
        seen = set()
        for v in values:
            if v in seen:
                shown = ",".join(map(str, v)) if param == "sizes" else f"{v:g}" if isinstance(v, float) else v
                raise ValueError(f"{_name(param)} lists {shown} twice: that configuration would be trained "
                                 f"twice. Fix: give each value once")
            seen.add(v)
        checked[param] = values
    _check_depths(checked["sizes"], checked["activations"])
    return [Config(s, e, lm, seed, b, c, n_epochs, act, opt)
            for s in checked["sizes"] for b in checked["batch_sizes"] for c in checked["costs"]
            for act in checked["activations"] for opt in checked["optimizers"]
            for e in checked["etas"] for lm in checked["lmbdas"] for seed in checked["seeds"]]


def _check_grid_size(values: dict) -> None:
    """Refuse a grid whose product of values exceeds :data:`MAX_CONFIGS`, before any is built."""
    n = math.prod(len(v) for v in values.values())
    if n > MAX_CONFIGS:
        factors = " x ".join(f"{len(v):,} {_name(p)}" for p, v in values.items() if len(v) > 1)
        raise ValueError(f"the grid has {n:,} configurations ({factors}); at most {MAX_CONFIGS:,} in one sweep. "
                         f"Fix: fewer values per parameter, or several smaller sweeps (and --limit N, fewer "
                         f"training samples, for quick trials)")


def _check_configs(configs) -> list[Config]:
    """A non-empty list of distinct :class:`Config` (ValueError/TypeError otherwise)."""
    if isinstance(configs, Config):
        configs = [configs]
    configs = list(configs)
    if not configs:
        raise ValueError("no configurations to run: the grid is empty. Fix: build one with expand_grid()")
    if len(configs) > MAX_CONFIGS:
        raise ValueError(f"{len(configs):,} configurations; at most {MAX_CONFIGS:,} in one sweep. Fix: run "
                         f"them as several smaller sweeps")
    for i, c in enumerate(configs):
        if not isinstance(c, Config):
            raise TypeError(f"configs[{i}] must be a fastnet.sweep.Config (see expand_grid). "
                            f"Actual: {type(c).__name__}")
    for i, c in enumerate(configs):  # made by hand, a Config's activation and optimizer are checked here
        try:
            for param, v in (("activations", c.activation), ("optimizers", c.optimizer)):
                if not isinstance(v, str):
                    raise TypeError(f"{_name(param)} must be a str in a Config (expand_grid makes one from a "
                                    f"list). Actual: {v!r} ({type(v).__name__})")
                if _check_value(param, v) != v:
                    raise ValueError(f"{_name(param)}: write {v!r} as {_check_value(param, v)!r}")
            _check_depths([c.sizes], [c.activation])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"configs[{i}] ({c.label()}): {exc}") from None
    seen = {}
    for i, c in enumerate(configs):
        if c in seen:
            raise ValueError(f"configs[{seen[c]}] and configs[{i}] are the same configuration ({c.label()}). "
                             f"Fix: give each configuration once")
        seen[c] = i
    return configs


def _check_stack(configs) -> list[Config]:
    """The configurations of one stack: they must agree on :data:`STACK_KEY` (sizes, batch size,
    cost, activation, optimizer and epochs)."""
    configs = _check_configs(configs)
    first = configs[0]
    for c in configs[1:]:
        if c.stack_key != first.stack_key:
            fields = [n for n, a, b in zip(STACK_KEY, first.stack_key, c.stack_key) if a != b]
            raise ValueError(f"one NetworkStack trains networks of one shape and recipe, but this one mixes "
                             f"{' and '.join(fields)}: {first.label()!r} and {c.label()!r}. "
                             f"Fix: group the configurations with group_stacks()")
    return configs


def group_stacks(configs, max_k) -> list[list[Config]]:
    """Split configurations into stacks: same sizes, batch size, cost, activation, optimizer and
    epochs (:data:`STACK_KEY`), at most ``max_k`` each.

    Groups keep the order of their first configuration, and each group is cut into the
    fewest stacks of at most ``max_k``, as equal in size as possible (10 with ``max_k=8``:
    5 and 5), each a run of neighbours in grid order.

    >>> from fastnet.sweep import expand_grid, group_stacks
    >>> grid = expand_grid(sizes=[[784, 30, 10], [784, 100, 10]], etas=[1, 3], seeds=range(5))
    >>> [(s[0].sizes[1], len(s)) for s in group_stacks(grid, max_k=8)]
    [(30, 5), (30, 5), (100, 5), (100, 5)]
    >>> [len(s) for s in group_stacks(grid, max_k=64)]
    [10, 10]
    """
    configs = _check_configs(configs)
    if isinstance(max_k, bool) or not isinstance(max_k, numbers.Integral) or max_k < 1:
        raise ValueError(f"{_name('max_k')} must be an int >= 1 (networks per stack). Actual: {max_k!r}")
    groups: dict[tuple, list[Config]] = {}
    for c in configs:
        groups.setdefault(c.stack_key, []).append(c)
    stacks = [part for group in groups.values() for part in _split(group, max_k)]
    for s in stacks:
        _check_stack(s)
    return stacks


def default_max_k(device="auto") -> int:
    """Networks per stack when none is asked for: 64 on a GPU, 8 on the CPU.

    >>> from fastnet.sweep import default_max_k
    >>> default_max_k("cpu")
    8
    """
    from fastnet.backend import get_backend

    return 64 if get_backend(device).device == "cuda" else 8


# --- running ----------------------------------------------------------------------------------


def _unpack_data(data):
    """``(X_train, y_train, X_test, y_test)`` from that tuple or from ``((X_train, y_train), (X_test, y_test))``."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, (tuple, list)) for d in data):
        data = (*data[0], *data[1])
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise TypeError("data must be (X_train, y_train, X_test, y_test) or ((X_train, y_train), (X_test, y_test))")
    return tuple(data)


def _check_data(data, configs) -> tuple:
    """Refuse data that a configuration cannot train on, before anything runs."""
    import numpy as np

    Xtr, ytr, Xte, yte = data = _unpack_data(data)
    for name, X, y in (("training", Xtr, ytr), ("test", Xte, yte)):
        if len(getattr(X, "shape", ())) != 2 or len(X) == 0:
            raise ValueError(f"the {name} X must be a non-empty 2-D array (n_samples, n_features). "
                             f"Actual: shape {getattr(X, 'shape', None)}")
        if len(getattr(y, "shape", ())) != 1 or len(y) != len(X):
            raise ValueError(f"the {name} y must be 1-D with one label per row of X ({len(X)}). "
                             f"Actual: shape {getattr(y, 'shape', None)}")
    n_features, n_train = Xtr.shape[1], len(Xtr)
    n_classes = int(max(np.max(np.asarray(ytr)), np.max(np.asarray(yte)))) + 1
    for c in configs:
        if c.sizes[0] != n_features:
            raise ValueError(f"{_name('sizes')} {','.join(map(str, c.sizes))} takes {c.sizes[0]} inputs; the "
                             f"data has {n_features} features per sample. Fix: start every size list with "
                             f"{n_features}")
        if c.sizes[-1] < n_classes:
            raise ValueError(f"{_name('sizes')} {','.join(map(str, c.sizes))} has {c.sizes[-1]} outputs; the "
                             f"data has {n_classes} classes. Fix: end every size list with {n_classes}")
        if c.batch_size > n_train:
            raise ValueError(f"{_name('batch_sizes')} {c.batch_size} is larger than the {n_train} training "
                             f"samples. Fix: a batch size <= {n_train}")
    return data


def _fail_check(configs, pattern) -> None:
    """The ``FASTNET_SWEEP_FAIL`` testing hook: raise for a stack holding a matching configuration."""
    if pattern:
        hit = next((c for c in configs if pattern in c.label()), None)
        if hit is not None:
            raise RuntimeError(f"injected failure: {FAIL_ENV}={pattern!r} matches {hit.label()!r} "
                               f"(a testing hook; unset {FAIL_ENV} to run normally)")


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


def _result_row(c: Config, history, stack_seconds: float, k: int) -> dict:
    records = list(history)
    accs = [_finite(r.get("val_accuracy")) for r in records]
    # the best of the epochs before any divergence (a NaN net's accuracy means nothing); max keeps the first
    scored = [(a, e) for e, (a, r) in enumerate(zip(accs, records), 1) if a is not None and not r.get("diverged")]
    best_acc, best_epoch = max(scored, key=lambda t: t[0]) if scored else (None, None)
    diverged = any(bool(r.get("diverged")) for r in records)
    return {"label": c.label(), **c.as_dict(),
            "final_accuracy": accs[-1] if accs else None, "best_accuracy": best_acc, "best_epoch": best_epoch,
            "accuracy_per_epoch": accs,
            "final_loss": _finite(records[-1].get("val_loss")) if records else None,
            "seconds": stack_seconds / k, "stack_seconds": stack_seconds, "stack_size": k,
            "diverged": diverged, "status": "diverged" if diverged else "ok", "error": None,
            "epochs_trained": len(records), "pruned_at": None}


def _not_run_row(c: Config, k: int) -> dict:
    """The row of a configuration whose stack never finished (Ctrl-C)."""
    return {**_failed_row(c, None, k), "status": "not run"}


def _failed_row(c: Config, error: str, k: int) -> dict:
    return {"label": c.label(), **c.as_dict(), "final_accuracy": None, "best_accuracy": None, "best_epoch": None,
            "accuracy_per_epoch": [], "final_loss": None, "seconds": None, "stack_seconds": None,
            "stack_size": k, "diverged": False, "status": "failed", "error": error, "epochs_trained": 0,
            "pruned_at": None}


def run_stack(configs, data, device="auto", dtype="float32", *, order="shared", order_seed=0,
              fail_pattern=None, epochs=None, checkpoint=None, checkpoint_every=1) -> list[dict]:
    """Train one stack of configurations (see :func:`group_stacks`); one result dict per configuration.

    Parameters
    ----------
    configs : list of :class:`Config` agreeing on :data:`STACK_KEY` (sizes, batch size, cost,
        activation, optimizer, epochs; ValueError otherwise); they become
        ``NetworkStack(sizes, seeds=..., etas=..., lmbdas=..., activation=...)``, fitted with
        their optimizer and the test split as validation data.
    data : ``(X_train, y_train, X_test, y_test)`` host arrays
    device, dtype : as for :class:`fastnet.NetworkStack`
    order : ``"shared"`` (one minibatch order for all nets, the one ``order_seed`` draws:
        fast) or ``"independent"`` (each net its own, exactly ``Network(seed=...).fit``)
    order_seed : int, the seed of the shared order (ignored with ``"independent"``)
    fail_pattern : str, optional
        The ``FASTNET_SWEEP_FAIL`` testing hook (None: read the environment variable).
    epochs : int, optional
        Train up to this epoch (1 to the configurations' epochs; default: all of them), as
        successive halving does rung by rung.
    checkpoint : path, optional
        The stack's training checkpoint (:meth:`fastnet.NetworkStack.fit`'s): training goes
        on from it when the file exists (bit for bit where an uninterrupted run would be,
        optimizer state and minibatch order included), and is written every
        ``checkpoint_every`` epochs, at the end and on Ctrl-C.

    Each result: the config's fields, ``label``, ``final_accuracy`` (test accuracy after the
    last epoch), ``best_accuracy`` and its ``best_epoch`` (1-based, the first best; of the
    epochs before a divergence, None when the first diverged),
    ``accuracy_per_epoch``, ``final_loss``, ``seconds`` (the stack's wall time / its size),
    ``stack_seconds``, ``stack_size``, ``diverged`` (its loss became NaN or infinite; the
    others are unaffected), ``status`` ``"ok"`` (``"diverged"`` for a net that diverged),
    ``error`` None, ``epochs_trained`` (the epochs its history holds) and ``pruned_at`` None.

    >>> import numpy as np
    >>> from fastnet.sweep import Config, run_stack
    >>> X = np.eye(4); y = np.array([0, 1, 0, 1])
    >>> cs = [Config((4, 8, 2), eta, 0.0, 0, 2, "cross_entropy", 50) for eta in (0.1, 3.0)]
    >>> rows = run_stack(cs, (X, y, X, y), device="cpu")
    >>> [(r["eta"], r["status"], r["stack_size"], len(r["accuracy_per_epoch"])) for r in rows]
    [(0.1, 'ok', 2, 50), (3.0, 'ok', 2, 50)]
    >>> rows[1]["final_accuracy"]
    1.0
    """
    import fastnet

    configs = _check_stack(configs)
    Xtr, ytr, Xte, yte = _unpack_data(data)
    _fail_check(configs, os.environ.get(FAIL_ENV, "") if fail_pattern is None else fail_pattern)
    c0 = configs[0]
    target = c0.epochs if epochs is None else epochs
    if isinstance(target, bool) or not isinstance(target, numbers.Integral) or not 1 <= target <= c0.epochs:
        raise ValueError(f"epochs must be an int in [1, {c0.epochs}] (the configurations' epochs). "
                         f"Actual: {epochs!r}")
    _warm_kernels(device, dtype, order, len(c0.sizes) - 1)
    t0 = time.perf_counter()
    stack = fastnet.NetworkStack(list(c0.sizes), len(configs), seeds=[c.seed for c in configs],
                                 etas=[c.eta for c in configs], lmbdas=[c.lmbda for c in configs], cost=c0.cost,
                                 activation=c0.hidden_activation, dtype=dtype, device=device, order=order,
                                 order_seed=order_seed if order == "shared" else None)
    resume = checkpoint is not None and os.path.exists(checkpoint)
    histories = stack.fit(Xtr, ytr, epochs=int(target), batch_size=c0.batch_size, optimizer=c0.optimizer,
                          validation_data=(Xte, yte), verbose=0, checkpoint=checkpoint,
                          checkpoint_every=checkpoint_every, resume=resume)
    stack_seconds = time.perf_counter() - t0
    return [_result_row(c, h, stack_seconds, len(configs)) for c, h in zip(configs, histories)]


def _warm_kernels(device, dtype, order, n_layers) -> None:
    """Compile (or load from the disk cache) the stacks' compiled CPU loop before a stack's
    clock starts, so that its seconds are training time; a no-op once done in this process."""
    import numpy as np

    from fastnet import ops
    from fastnet.backend import get_backend

    if order != "shared" or get_backend(device).name != "numpy" or ops.kernel_path(np.zeros(1)) != "njit":
        return
    from fastnet import engines

    engines.prepare("compiled", dtype, n_layers)  # each layer count is its own compiled version


def _error_text(exc: BaseException) -> str:
    """``"Type: message"`` on one line; a Ray task error is unwrapped to the error the task raised."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = " ".join(str(exc).split())
    if len(text) > 500:
        text = text[:497] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class SweepResult:
    """The rows of a sweep, one per configuration in grid order, and how it was run.

    ``rows``: the dicts of :func:`run_stack` (failed ones: ``status`` ``"failed"``, ``error``
    ``"Type: message"``, no accuracies; after Ctrl-C, those never run: ``status``
    ``"not run"``; with successive halving, those stopped at a rung: ``"pruned"`` and
    ``pruned_at``), plus ``index`` (grid position) and ``stack`` (which stack ran it first).
    ``config``: engine, device, dtype, max_k, stacks, counts of failed and not-run rows,
    whether it was interrupted, wall time.

    >>> from fastnet.sweep import SweepResult
    >>> r = SweepResult([{"label": "a", "status": "ok"}, {"label": "b", "status": "failed", "error": "E: x"}])
    >>> len(r), r.ok, [f["label"] for f in r.failures]
    (2, False, ['b'])
    """

    rows: list
    config: dict = field(default_factory=dict)
    #: What ``--resume`` needs (see :func:`run_sweep`): the grid's and data's fingerprint, the
    #: rung, the stacks still to train and their checkpoints; None for a sweep run without it.
    state: dict | None = None

    @property
    def failures(self) -> list:
        """The rows whose stack failed."""
        return [r for r in self.rows if r.get("status") == "failed"]

    @property
    def not_run(self) -> list:
        """The rows of stacks that never finished because the sweep was interrupted."""
        return [r for r in self.rows if r.get("status") == "not run"]

    @property
    def ok(self) -> bool:
        """True when every configuration ran (``ok``, ``pruned`` or ``diverged``)."""
        return all(r.get("status") in RAN for r in self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def to_dict(self) -> dict:
        """``{"config": ..., "rows": ...}``, JSON-ready."""
        return {"config": self.config, "rows": self.rows}


def require_ray():
    """Import Ray, or raise RuntimeError naming the extra to install.

    >>> from fastnet.sweep import require_ray
    >>> require_ray().__name__
    'ray'
    """
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(f"engine 'ray' needs Ray, which is not installed ({exc}). "
                           f"Fix: pip install 'fastnet[ray]'") from exc
    return ray


def _check_options(engine, address, max_k, device, dtype, order):
    engine = V.check_choice("engine", engine, ENGINES)
    dtype = V.check_dtype(dtype)
    order = V.check_choice("order", order, ORDERS)
    if address is not None and engine != "ray":
        raise ValueError(f"address {address!r} is for engine='ray' (a Ray cluster to run on). Fix: add "
                         f"--engine ray, or leave out --address")
    if address is None:  # the stacks run on this machine: a device it lacks is refused now
        default = default_max_k(device)
    else:  # the device is chosen on the cluster; here only the spelling is checked
        from fastnet.backend import DEVICES

        name = device
        if isinstance(device, str):
            name = V.check_choice("device", {"numpy": "cpu", "cupy": "cuda", "gpu": "cuda"}.get(device, device),
                                  DEVICES)
        default = 64 if name == "cuda" else 8
    max_k = default if max_k is None else max_k
    if isinstance(max_k, bool) or not isinstance(max_k, numbers.Integral) or max_k < 1:
        raise ValueError(f"{_name('max_k')} must be an int >= 1 (networks per stack). Actual: {max_k!r}")
    if engine == "ray":
        require_ray()
        if address is not None:
            _probe_address(address)
    return engine, int(max_k), dtype, order


#: Seconds to wait for a Ray cluster's address to accept a TCP connection before giving up.
RAY_CONNECT_TIMEOUT = 5.0


def _host_port(address: str):
    """``(host, port)`` of ``"host:port"`` or ``"ray://host:port"``; None for other forms
    (``"auto"``, ``"local"``), which Ray resolves itself."""
    rest = address.strip()
    for scheme in ("ray://", "http://", "https://"):
        if rest.lower().startswith(scheme):
            rest = rest[len(scheme):]
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _probe_address(address) -> None:
    """Refuse, within :data:`RAY_CONNECT_TIMEOUT` seconds, a Ray address nothing listens on
    (``ray.init`` would retry for minutes, printing warnings); RuntimeError, one line."""
    import socket

    if not isinstance(address, str):
        raise TypeError(f"{_name('address')} must be a str like 'HOST:PORT'. Actual: {address!r} "
                        f"({type(address).__name__})")
    hp = _host_port(address)
    if hp is None:
        return
    host, port = hp
    if not 0 < port < 65536:
        raise ValueError(f"{_name('address')} {address!r}: port {port} is not in 1..65535. Fix: the address "
                         f"`ray start --head` printed, e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT).close()
    except OSError as exc:
        why = (f"no answer within {RAY_CONNECT_TIMEOUT:g} s" if isinstance(exc, socket.timeout) else
               f"connecting to {host}:{port}: {exc.strerror or exc or type(exc).__name__}")
        raise RuntimeError(f"{_name('address')} {address}: no Ray cluster answers there ({why}). Fix: start "
                           f"one with `ray start --head` and pass the "
                           f"address it prints, or leave out --address to run on this machine's cores") from None


def run_sweep(configs, data, *, engine="local", address=None, max_k=None, device="auto", dtype="float32",
              order="shared", order_seed=0, progress=None, halving=None, grace=1, json_path=None,
              json_extra=None, resume=False) -> SweepResult:
    """Train every configuration, a stack at a time; returns a :class:`SweepResult` in grid order.

    Parameters
    ----------
    configs : list of :class:`Config` (e.g. from :func:`expand_grid`)
    data : ``(X_train, y_train, X_test, y_test)``; accuracies are on the test split
    engine : ``"local"``: the stacks one after the other in this process; ``"ray"``: one Ray
        task per stack (``pip install 'fastnet[ray]'``), on the cluster at ``address`` or
        on a local one using this machine's cores (started here and shut down at the end;
        an already initialised Ray is reused). A task that fails is retried once.
    max_k : networks per stack (default :func:`default_max_k`: 8 on the CPU, 64 on a GPU; with
        an ``address``, 64 for ``device="cuda"`` and 8 otherwise)
    device, dtype, order, order_seed : as for :func:`run_stack`
    progress : callable, optional
        Called as ``progress(rows)`` with rows that just became final: a stack's when it
        finishes (or fails), the pruned ones at each rung.
    halving : int >= 2, optional
        Successive halving: train every configuration to ``grace`` epochs, keep the best
        ``ceil(n / halving)`` by test accuracy at that epoch (ties go to the lower grid
        index; a diverged net ranks last), train those to ``grace * halving`` epochs, and
        so on (:func:`rung_epochs`, :func:`keep_best`); the survivors of the last rung train
        to the grid's epochs. Survivors leave their stacks with their weights, optimizer
        state and minibatch order (through the stacks' checkpoints) and same-shape ones
        merge into new stacks of at most ``max_k``, so a configuration's numbers are those
        of the same configuration trained alone. The configurations must share one number
        of epochs. Pruned rows keep the accuracies of their last epoch (``status``
        ``"pruned"``, ``pruned_at`` the rung's epoch).
    grace : int >= 1, the first rung's epochs (with ``halving``; default 1)
    json_path : path, optional
        Write the result as :func:`save_json` does after every stack and every rung
        (atomically), with the state a resume needs; the checkpoints of unfinished stacks
        go into the folder ``<json_path>.checkpoints`` beside it (removed when the sweep
        ends). ``json_extra``: more ``config`` entries for that file.
    resume : bool
        Go on from ``json_path``'s state: run only what is missing, to the same rows as an
        uninterrupted sweep (bit for bit on the CPU, times aside). A file written for
        another grid, other data or other settings is refused (``ValueError``); a missing
        file starts afresh.

    Every argument, and the data against every configuration, is checked before anything
    runs. A stack that raises has all its rows marked ``"failed"`` with the error; the
    other stacks still run. Ctrl-C raises :class:`SweepInterrupted` (a ``KeyboardInterrupt``)
    whose ``result`` holds the rows of the stacks that finished and marks the others
    ``"not run"`` (with ``json_path``, saved first, checkpoints included).

    >>> import numpy as np
    >>> from fastnet.sweep import expand_grid, run_sweep
    >>> X = np.eye(4); y = np.array([0, 1, 0, 1])
    >>> grid = expand_grid(sizes=[[4, 8, 2]], etas=[0.1, 3.0], costs=["cross_entropy"], batch_sizes=[2],
    ...                    epochs=50)
    >>> res = run_sweep(grid, (X, y, X, y), device="cpu", max_k=1)
    >>> [r["eta"] for r in res], [r["stack"] for r in res], res.ok
    ([0.1, 3.0], [0, 1], True)
    >>> res[1]["final_accuracy"]
    1.0
    >>> halved = run_sweep(grid, (X, y, X, y), device="cpu", halving=2, grace=10)
    >>> [(r["status"], r["epochs_trained"]) for r in halved]
    [('pruned', 10), ('ok', 50)]
    """
    configs = _check_configs(configs)
    engine, max_k, dtype, order = _check_options(engine, address, max_k, device, dtype, order)
    halving, grace = _check_halving(halving, grace, configs)
    resume = V.check_bool("resume", resume)
    if resume and json_path is None:
        raise ValueError("resume (--resume) goes on from a sweep's JSON state, but no json_path (--json) was "
                         "given. Fix: add --json OUT.json, the file the interrupted sweep wrote")
    run_kw = {"device": device, "dtype": dtype, "order": order, "order_seed": _check_order_seed(order_seed)}
    data = _check_data(data, configs)
    settings = {"halving": halving, "grace": grace if halving else None, "max_k": max_k, "dtype": dtype,
                "order": order, "order_seed": run_kw["order_seed"]}
    fp = _fingerprint(configs, data, settings)
    sw = _Sweep(configs, data, run_kw, max_k, rung_epochs(max(c.epochs for c in configs), halving, grace),
                fp, json_path, json_extra, progress)
    sw.config.update(engine=engine, address=address, device=device, halving=halving,
                     grace=grace if halving else None)
    if json_path is not None:
        if resume and os.path.exists(json_path):
            sw.load(json_path)
        else:
            _remove_checkpoints(sw.ck_dir)
    try:
        if engine == "local":
            sw.drive(_LocalRunner(sw))
        else:
            with _RayRunner(sw, address) as runner:
                sw.drive(runner)
    except KeyboardInterrupt as exc:
        result = sw.result(interrupted=True)
        sw.save(result)
        raise SweepInterrupted(result) from exc
    finally:
        sw.cleanup()
    result = sw.result()
    sw.save(result)
    return result


def rung_epochs(epochs: int, halving=None, grace: int = 1) -> list[int]:
    """The epochs at which successive halving compares configurations: ``grace``,
    ``grace * halving``, ``grace * halving**2``, ... below ``epochs``, then ``epochs`` itself
    (where the last survivors finish). Without ``halving``: ``[epochs]``.

    >>> from fastnet.sweep import rung_epochs
    >>> rung_epochs(9, 3), rung_epochs(10, 3), rung_epochs(30, 2, grace=4), rung_epochs(5, 3, grace=5)
    ([1, 3, 9], [1, 3, 9, 10], [4, 8, 16, 30], [5])
    >>> rung_epochs(9)
    [9]
    """
    if halving is None:
        return [epochs]
    out, e = [], grace
    while e < epochs:
        out.append(e)
        e *= halving
    return out + [epochs]


def keep_best(scores, halving: int) -> list[int]:
    """The configurations a rung keeps: the best ``ceil(len(scores) / halving)`` (at least
    one) of ``scores``, a list of ``(index, accuracy)`` (accuracy None for a diverged net,
    which ranks last); ties go to the lower index. Returned in index order.

    >>> from fastnet.sweep import keep_best
    >>> keep_best([(0, 0.5), (1, 0.9), (2, 0.7), (3, 0.9), (4, None)], 3)   # ceil(5 / 3) = 2
    [1, 3]
    >>> keep_best([(5, 0.8), (2, 0.8), (7, 0.8)], 2)                         # ties: the lower indices
    [2, 5]
    """
    n_keep = -(-len(scores) // halving)
    ranked = sorted(scores, key=lambda t: (t[1] is None, -(t[1] if t[1] is not None else 0.0), t[0]))
    return sorted(i for i, _ in ranked[:n_keep])


def _check_halving(halving, grace, configs):
    """``(halving, grace)`` checked: halving None or an int >= 2, grace an int >= 1; halving
    needs one number of epochs for the whole grid."""
    if halving is not None:
        if isinstance(halving, bool) or not isinstance(halving, numbers.Integral) or halving < 2:
            raise ValueError(f"halving (--halving) must be an int >= 2 (each rung keeps the best 1/F). "
                             f"Actual: {halving!r}. Fix: --halving 3, or leave it out to train every "
                             f"configuration for every epoch")
        halving = int(halving)
        if len({c.epochs for c in configs}) > 1:
            raise ValueError("halving (--halving) compares configurations at the same epochs, but these "
                             f"configurations train for {sorted({c.epochs for c in configs})} epochs. Fix: give "
                             "them one number of epochs")
    if isinstance(grace, bool) or not isinstance(grace, numbers.Integral) or grace < 1:
        raise ValueError(f"grace (--grace) must be an int >= 1 (the epochs of the first rung). Actual: {grace!r}. "
                         f"Fix: --grace 1 (the default)")
    return halving, int(grace)


def _settings(halving, grace, max_k, dtype, order, order_seed) -> dict:
    """The settings a resumed sweep must share with the one it goes on from."""
    return {"halving": halving, "grace": grace if halving else None, "max_k": max_k, "dtype": dtype,
            "order": order, "order_seed": order_seed}


def _resume_state(path, now) -> dict:
    """The state in the sweep JSON at ``path``, checked against the fingerprint ``now``
    (:func:`_fingerprint`): a file written for another grid, other data or other settings,
    or one without a state, is a one-line ``ValueError``; nothing is changed."""
    fix = (f"Fix: run the same grid on the same data with the same settings, or write to another --json "
           f"path (or leave out --resume to start {path} afresh)")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--resume: cannot read {path} as a sweep's JSON ({_error_text(exc)}). {fix}") from None
    state = doc.get("state") if isinstance(doc, dict) else None
    saved = state.get("fingerprint") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        raise ValueError(f"--resume: {path} holds no sweep state to resume (written by fastnet sweep before "
                         f"resuming existed, or not by fastnet sweep). {fix}")
    if saved.get("grid") != now["grid"]:
        raise ValueError(f"--resume: {path} was written for another grid ({saved.get('configurations')} "
                         f"configurations; this one has {now['configurations']}, or other values). {fix}")
    if saved.get("data") != now["data"]:
        raise ValueError(f"--resume: {path} was written for other data ({saved.get('data')}; now "
                         f"{now['data']}). {fix}")
    for key, value in now["settings"].items():
        if (saved.get("settings") or {}).get(key) != value:
            flag = {"halving": "--halving", "grace": "--grace", "max_k": "--max-stack", "dtype": "--dtype",
                    "order": "--order", "order_seed": "--order-seed"}[key]
            raise ValueError(f"--resume: {path} was written with {key} ({flag}) "
                             f"{(saved.get('settings') or {}).get(key)!r}; this sweep has {value!r}. {fix}")
    return state


def _fingerprint(configs, data, settings) -> dict:
    """What a resumed sweep must match: the grid (a digest of every configuration, in
    order), the data (:func:`fastnet.io.fingerprint` of both splits) and the settings that
    change the rows or the stacks."""
    import hashlib

    from fastnet.io import fingerprint

    grid = json.dumps([c.as_dict() for c in configs], sort_keys=True).encode()
    Xtr, ytr, Xte, yte = data
    return {"grid": hashlib.sha256(grid).hexdigest(), "configurations": len(configs),
            "data": f"train {fingerprint(Xtr, ytr)}; test {fingerprint(Xte, yte)}", "settings": settings}


#: The checkpoint files of a sweep's stacks: ``rung<r>-stack<j>.npz``.
_CK_NAME = "rung{}-stack{}.npz"


def _checkpoint_dir(json_path) -> str:
    """The folder beside ``--json OUT.json`` that holds the checkpoints of unfinished stacks."""
    return os.fspath(json_path) + ".checkpoints"


def _remove_checkpoints(folder) -> None:
    """Remove the sweep checkpoints in ``folder`` (only files named like them), then the
    folder when that left it empty."""
    import re

    if not folder or not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if re.fullmatch(r"rung\d+-stack\d+\.npz", name):
            os.unlink(os.path.join(folder, name))
    try:
        os.rmdir(folder)
    except OSError:
        pass   # something else is in there: left alone


class _Sweep:
    """The state of one sweep, and the loop over its rungs (see :func:`run_sweep`).

    ``state``: JSON-ready. ``rows``: each configuration's final row (None until it has one);
    ``current``: its row after the last stack it was trained in; ``seconds``: its share of
    its stacks' times; ``home``: the first stack it ran in, and that stack's size; ``rung``
    and ``stacks``: the rung being trained and its stacks (configuration indices, checkpoint
    file, done)."""

    def __init__(self, configs, data, run_kw, max_k, rungs, fp, json_path, json_extra, progress):
        import tempfile

        self.configs, self.data, self.run_kw, self.max_k = configs, data, run_kw, max_k
        self.json_path, self.json_extra, self.progress = json_path, json_extra, progress
        self.persist = json_path is not None or len(rungs) > 1   # checkpoints are needed
        self._tmp = None
        if json_path is not None:
            self.ck_dir = _checkpoint_dir(json_path)
        elif len(rungs) > 1:
            self.ck_dir = self._tmp = tempfile.mkdtemp(prefix="fastnet-sweep-")
        else:
            self.ck_dir = None
        self.t0 = time.perf_counter()
        self._machine = None
        n = len(configs)
        stacks = group_stacks(configs, max_k)
        index = {c: i for i, c in enumerate(configs)}
        home = [None] * n
        for j, s in enumerate(stacks):
            for c in s:
                home[index[c]] = [j, len(s)]
        self.state = {"fingerprint": fp, "rungs": rungs, "rung": 0, "done": False,
                      "stacks": [{"configs": [index[c] for c in s], "checkpoint": _CK_NAME.format(0, j),
                                  "done": False} for j, s in enumerate(stacks)],
                      "rows": [None] * n, "current": [None] * n, "seconds": [0.0] * n,
                      "stack_seconds": [0.0] * n, "home": home}
        self.config = {"cluster": None, "order": run_kw["order"], "order_seed": run_kw["order_seed"],
                       "dtype": run_kw["dtype"],
                       "max_k": max_k, "configurations": n, "stacks": len(stacks), "rungs": rungs,
                       "resumed": False}

    # --- files ----------------------------------------------------------------------------

    def ck_path(self, name):
        return None if name is None or not self.persist else os.path.join(self.ck_dir, name)

    def load(self, path) -> None:
        """Take over the state of the sweep JSON at ``path`` (refused when written for another
        grid, other data or other settings: :func:`_resume_state`)."""
        self.state = _resume_state(path, self.state["fingerprint"])
        self.config["resumed"] = True

    def save(self, result) -> None:
        """Write ``result`` (rows, config, state) to the JSON, atomically; nothing without one."""
        if self.json_path is None:
            return
        if self._machine is None:
            from fastnet.machine import machine_info

            self._machine = machine_info()
        save_json(result, self.json_path, self.json_extra, machine=self._machine)

    def cleanup(self) -> None:
        if self.state["done"] or self._tmp is not None:
            _remove_checkpoints(self.ck_dir)

    # --- the rows ---------------------------------------------------------------------------

    def result(self, interrupted=False) -> SweepResult:
        st = self.state
        rows = []
        for i, c in enumerate(self.configs):
            row = st["rows"][i]
            if row is None:
                row = _not_run_row(c, st["home"][i][1])
                cur = st["current"][i]
                row |= {"index": i, "stack": st["home"][i][0],
                        "epochs_trained": cur["epochs_trained"] if cur else 0}
            rows.append(row)
        trained = sum(r.get("epochs_trained") or 0 for r in rows)
        full = sum(c.epochs for c in self.configs)
        config = dict(self.config) | {
            "failed": sum(r["status"] == "failed" for r in rows),
            "not_run": sum(r["status"] == "not run" for r in rows),
            "pruned": sum(r.get("pruned_at") is not None for r in rows),
            "epochs_trained": trained, "epochs_full": full, "interrupted": interrupted,
            "wall_s": round(time.perf_counter() - self.t0, 3)}
        return SweepResult(rows, config, st)

    def _row(self, i, row) -> dict:
        """A stack's row for configuration ``i``, with its home stack and its times summed."""
        st = self.state
        st["seconds"][i] += row["seconds"] or 0.0
        st["stack_seconds"][i] += row["stack_seconds"] or 0.0
        j, k = st["home"][i]
        return row | {"index": i, "stack": j, "stack_size": k, "seconds": st["seconds"][i],
                      "stack_seconds": st["stack_seconds"][i]}

    def stack_done(self, j, rows, error=None) -> None:
        """Stack ``j`` of the running rung finished (``rows``) or failed (``error``): record
        it, report the rows that became final, save."""
        st = self.state
        s = st["stacks"][j]
        last = st["rung"] == len(st["rungs"]) - 1
        final = []
        for pos, i in enumerate(s["configs"]):
            if error is not None:
                j0, k0 = st["home"][i]
                row = _failed_row(self.configs[i], error, k0) | {"index": i, "stack": j0}
                st["rows"][i] = row
                final.append(row)
            else:
                row = st["current"][i] = self._row(i, rows[pos])
                if last:
                    st["rows"][i] = row
                    final.append(row)
        s["done"] = True
        if final:
            _report(self.progress, final)
        self.save(self.result())
        path = self.ck_path(s["checkpoint"])
        if (last or error is not None) and path and os.path.exists(path):   # its rows are final: not needed
            os.unlink(path)

    # --- the loop -----------------------------------------------------------------------------

    def jobs(self):
        """The unfinished stacks of the running rung: ``(j, configs, epochs, checkpoint path)``."""
        st = self.state
        target = st["rungs"][st["rung"]]
        return [(j, [self.configs[i] for i in s["configs"]],
                 min(target, self.configs[s["configs"][0]].epochs), self.ck_path(s["checkpoint"]))
                for j, s in enumerate(st["stacks"]) if not s["done"]]

    def drive(self, runner) -> None:
        st = self.state
        if self.persist:
            os.makedirs(self.ck_dir, exist_ok=True)
        while not st["done"]:
            runner.run(self.jobs())
            if st["rung"] == len(st["rungs"]) - 1:
                st["done"] = True
                st["stacks"] = []
                self.save(self.result())
                return
            self._next_rung()

    def _next_rung(self) -> None:
        """Successive halving at the end of a rung: prune, then compact and merge the survivors'
        checkpoints into the next rung's stacks; save; remove the old checkpoints."""
        st = self.state
        r, epoch = st["rung"], st["rungs"][st["rung"]]
        old = st["stacks"]
        cands = sorted(i for s in old for i in s["configs"] if st["rows"][i] is None)
        halving = st["fingerprint"]["settings"]["halving"]
        cur = st["current"]
        kept = keep_best([(i, None if cur[i]["diverged"] else cur[i]["final_accuracy"]) for i in cands], halving) \
            if cands else []
        # the pruned rows enter the state only with the next rung's stacks, after the merges:
        # a Ctrl-C in between leaves the state of the rung's end, and a resume decides again
        # from the same candidates (not from the survivors alone)
        pruned = {i: cur[i] | {"status": "diverged" if cur[i]["diverged"] else "pruned", "pruned_at": epoch}
                  for i in sorted(set(cands) - set(kept))}
        # where each survivor's state is: (old stack, position in it)
        where = {i: (j, pos) for j, s in enumerate(old) for pos, i in enumerate(s["configs"])}
        heads = {j: _checkpoint_head(self.ck_path(s["checkpoint"])) for j, s in enumerate(old)
                 if any(i in where and where[i][0] == j for i in kept)}
        groups: dict = {}
        for i in kept:   # same shape and recipe, checkpoints that can be joined: one group
            groups.setdefault((self.configs[i].stack_key, heads[where[i][0]]), []).append(i)
        new = []
        for group in groups.values():
            for part in _split(group, self.max_k):
                name = _CK_NAME.format(r + 1, len(new))
                _merge_checkpoints([(self.ck_path(old[where[i][0]]["checkpoint"]), where[i][1]) for i in part],
                                   [self.configs[i] for i in part], self.ck_path(name), self.run_kw)
                new.append({"configs": part, "checkpoint": name, "done": False})
        for i, row in pruned.items():
            st["rows"][i] = row
        st["rung"], st["stacks"] = r + 1, new
        if not new:   # every candidate failed: nothing left to train
            st["rung"] = len(st["rungs"]) - 1
            st["done"] = True
        if pruned:
            _report(self.progress, list(pruned.values()))
        self.save(self.result())
        for s in old:
            path = self.ck_path(s["checkpoint"])
            if path and os.path.exists(path):
                os.unlink(path)


def _split(group, max_k) -> list:
    """``group`` cut into the fewest runs of at most ``max_k``, as equal in size as possible."""
    n_stacks = -(-len(group) // max_k)
    base, extra = divmod(len(group), n_stacks)
    out, start = [], 0
    for j in range(n_stacks):
        stop = start + base + (j < extra)
        out.append(group[start:stop])
        start = stop
    return out


def _checkpoint_head(path) -> str:
    """What stacks' checkpoints must agree on to be merged into one: the epoch and sample they
    stopped at, the engine (engines agree only to rounding), the optimizer's step count, the
    run's settings and the shared minibatch order's generator state."""
    from fastnet.io import read_model

    meta = read_model(path)[0]
    ck = meta["extra"]["checkpoint"]
    shared = meta.get("order") == "shared"
    return json.dumps([ck["epoch"], ck["step"], ck.get("engine"), ck.get("optimizer_t"), ck["run"],
                       ck["rng_state"][0] if shared else None], sort_keys=True)


def _merge_checkpoints(pieces, configs, path, run_kw) -> None:
    """Write the checkpoint of a stack made of nets of other stacks' checkpoints: ``pieces``
    is one ``(checkpoint path, position)`` per net, ``configs`` their configurations. Each
    net keeps its weights, optimizer state (velocities, moments) and history; the minibatch
    order, step count and engine are the pieces' own (they must agree:
    :func:`_checkpoint_head`), so the new stack goes on exactly as each net would have."""
    import numpy as np

    import fastnet
    from fastnet.io import read_model, save_model

    cache = {}
    for src, _ in pieces:
        if src not in cache:
            meta, W, b, extras = read_model(src, extra_arrays=True)
            cache[src] = (meta, W, b, extras)
    meta0 = cache[pieces[0][0]][0]
    ck0 = meta0["extra"]["checkpoint"]

    def take(get):
        return [get(*cache[src])[pos] for src, pos in pieces]

    n_layers = len(cache[pieces[0][0]][1])
    Ws = [np.stack(take(lambda m, W, b, e: W[l])) for l in range(n_layers)]
    bs = [np.stack(take(lambda m, W, b, e: b[l])) for l in range(n_layers)]
    n_opt = sum(1 for name in cache[pieces[0][0]][3] if name.startswith("o"))
    opt = {f"o{i}": np.stack(take(lambda m, W, b, e: e[f"o{i}"])) for i in range(n_opt)}
    rngs = take(lambda m, W, b, e: m["extra"]["checkpoint"]["rng_state"])
    if meta0.get("order") == "shared":   # entry 0 draws the shared order; the others are unused
        rngs[0] = ck0["rng_state"][0]
    nets = take(lambda m, W, b, e: m["extra"]["checkpoint"]["history"]["nets"])
    state = dict(ck0) | {"rng_state": rngs, "history": {"nets": nets, "summary": ck0["history"]["summary"]}}
    c0 = configs[0]
    order = run_kw["order"]
    stack = fastnet.NetworkStack(list(c0.sizes), len(configs), seeds=[c.seed for c in configs],
                                 etas=[c.eta for c in configs], lmbdas=[c.lmbda for c in configs], cost=c0.cost,
                                 activation=c0.hidden_activation, dtype=run_kw["dtype"], device="cpu",
                                 order=order, order_seed=run_kw["order_seed"] if order == "shared" else None)
    stack._set_params(Ws, bs)
    save_model(stack, path, extra={"checkpoint": state}, arrays=opt)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_sweep`: ``result`` is the :class:`SweepResult` so far, the rows
    of every stack that finished (or failed) and the others marked ``"not run"``.

    A ``KeyboardInterrupt``, so code that already handles Ctrl-C keeps working:

    >>> from fastnet.sweep import SweepInterrupted, SweepResult
    >>> exc = SweepInterrupted(SweepResult([{"label": "a", "status": "ok"}, {"label": "b", "status": "not run"}]))
    >>> isinstance(exc, KeyboardInterrupt), [r["label"] for r in exc.result.not_run]
    (True, ['b'])
    """

    def __init__(self, result):
        self.result = result
        n_run = len(result) - len(result.not_run)
        super().__init__(f"sweep interrupted: {n_run} of {len(result)} configurations ran; the other "
                         f"{len(result.not_run)} are marked not run")


def _report(progress, rows) -> None:
    if progress is not None:
        progress(rows)


def _check_order_seed(order_seed) -> int:
    if (isinstance(order_seed, bool) or not isinstance(order_seed, numbers.Integral)
            or not 0 <= order_seed < SEED_LIMIT):
        raise ValueError(f"order_seed (--order-seed) must be an int >= 0 and < 2**63. Actual: {order_seed!r}")
    return int(order_seed)


class _LocalRunner:
    """The local engine: a rung's stacks one after the other in this process, each training
    from and into its checkpoint file (every epoch with a JSON: Ctrl-C or a kill loses at
    most an epoch)."""

    def __init__(self, sweep):
        self.sweep = sweep

    def run(self, jobs) -> None:
        sw = self.sweep
        fail = os.environ.get(FAIL_ENV, "")
        for j, configs, epochs, ck in jobs:
            try:
                kw = {} if ck is None else {"epochs": epochs, "checkpoint": ck,
                                            "checkpoint_every": 1 if sw.json_path is not None else epochs}
                rows = run_stack(configs, sw.data, **sw.run_kw, fail_pattern=fail, **kw)
            except Exception as exc:  # a failed stack is reported in its rows; the others still run
                sw.stack_done(j, None, _error_text(exc))
            else:
                sw.stack_done(j, rows)


def _stack_task(configs, data, run_kw, fail_pattern, epochs=None, checkpoint=None):
    """What a Ray task runs: :func:`run_stack` with Numba's threads matched to the task's CPUs.
    ``checkpoint``: None (no checkpoints), or the bytes of the stack's checkpoint file (empty:
    start afresh); it then returns ``(rows, the new checkpoint's bytes)``."""
    try:
        import numba
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:  # the task was given this many cores: one thread each, no oversubscription
            numba.set_num_threads(max(1, min(int(cpus), numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # pragma: no cover - threads are a matter of speed, never of results
        pass
    if checkpoint is None:
        return run_stack(configs, data, **run_kw, fail_pattern=fail_pattern), None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fastnet-sweep-task-") as tmp:
        path = os.path.join(tmp, "stack.npz")
        if checkpoint:
            with open(path, "wb") as f:
                f.write(checkpoint)
        rows = run_stack(configs, data, **run_kw, fail_pattern=fail_pattern, epochs=epochs, checkpoint=path,
                         checkpoint_every=epochs)
        with open(path, "rb") as f:
            return rows, f.read()


class _RayRunner:
    """The Ray engine: one task per stack per rung, on the cluster at ``address`` or a local
    one started (and shut down) here. A task reads its stack's checkpoint as bytes and
    returns the new one, which is written beside the JSON, so a lost node's stack starts
    again from its last rung (Ray retries a task once). Ctrl-C cancels the tasks still
    running."""

    def __init__(self, sweep, address):
        self.sweep, self.address, self.started = sweep, address, False

    def __enter__(self):
        import logging

        ray = self.ray = require_ray()
        if not ray.is_initialized():
            address = self.address
            kw = {"address": address} if address else {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}
            try:
                ray.init(**kw, logging_level=logging.ERROR)
            except Exception as exc:
                where = f"join the Ray cluster at {address}" if address else "start a local Ray cluster"
                raise RuntimeError(f"could not {where}: {_error_text(exc)}") from exc
            self.started = True
        try:
            resources = ray.cluster_resources()
            self.sweep.config["cluster"] = {"address": self.address or ("local" if self.started else
                                                                        "already initialised"),
                                            "cpus": resources.get("CPU"), "gpus": resources.get("GPU", 0)}
            gpu = resources.get("GPU", 0) > 0 and self.sweep.run_kw["device"] != "cpu"
            self.options = {"num_gpus": 1} if gpu else {}
            self.task = ray.remote(max_retries=1, retry_exceptions=True)(_stack_task)
            self.data_ref = ray.put(self.sweep.data)  # once: every task reads the same copy in the object store
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.started:
            self.ray.shutdown()

    def run(self, jobs) -> None:
        ray, sw = self.ray, self.sweep
        fail = os.environ.get(FAIL_ENV, "")
        refs, done_js = {}, set()
        try:
            for j, configs, epochs, ck in jobs:
                blob = None
                if ck is not None:
                    blob = b""
                    if os.path.exists(ck):
                        with open(ck, "rb") as f:
                            blob = f.read()
                ref = self.task.options(**self.options).remote(configs, self.data_ref, sw.run_kw, fail, epochs, blob)
                refs[ref] = (j, ck)
            pending = list(refs)
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                for ref in finished:
                    j, ck = refs[ref]
                    try:
                        rows, blob = ray.get(ref)
                    except Exception as exc:  # failed after its retry: report it, keep the others
                        done_js.add(j)
                        sw.stack_done(j, None, _error_text(exc))
                        continue
                    if ck is not None:
                        from fastnet.io import atomic_write

                        atomic_write(ck, lambda f, b=blob: f.write(b), "checkpoint")
                    done_js.add(j)
                    sw.stack_done(j, rows)
        except KeyboardInterrupt:
            for ref, (j, _) in refs.items():   # the stacks still running: stop them, they are reported "not run"
                if j not in done_js:
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:  # noqa: BLE001 - already finished or gone: nothing to stop
                        pass
            raise


# --- output -----------------------------------------------------------------------------------


def _rows(result) -> list:
    return list(result.rows if isinstance(result, SweepResult) else
                result["rows"] if isinstance(result, dict) else result)


def format_table(result) -> str:
    """The table ``fastnet sweep`` prints: one line per configuration, in grid order.

    ``result``: a :class:`SweepResult`, its ``to_dict()`` or a list of rows. A cost, an
    activation and an optimizer column each appear when the rows have more than one value
    of it (a row without ``activation``/``optimizer``, from before they were swept, means
    sigmoid/sgd); a failed row shows its error, a row that never ran (Ctrl-C) ``not run``,
    a row successive halving stopped ``pruned at epoch E`` (its accuracies are its last
    epoch's). A result run with successive halving starts with a line saying how many
    network-epochs it trained against the full grid's.

    >>> from fastnet.sweep import format_table
    >>> row = {"index": 0, "sizes": [784, 30, 10], "eta": 3.0, "lmbda": 0.0, "seed": 0, "batch_size": 10,
    ...        "cost": "quadratic", "final_accuracy": 0.9125, "best_accuracy": 0.914, "best_epoch": 2,
    ...        "seconds": 0.5, "diverged": False, "status": "ok"}
    >>> print(format_table([row]))
    sizes        eta  lmbda  seed  batch  final acc  best acc (epoch)  seconds  status
    ----------------------------------------------------------------------------------
    784-30-10      3      0     0     10     0.9125  0.9140 (2)           0.50  ok
    """
    rows = sorted(_rows(result), key=lambda r: r.get("index", 0))
    config = result.config if isinstance(result, SweepResult) else (
        result.get("config", {}) if isinstance(result, dict) else {})
    # the columns shown only when they vary: (title, row key, width)
    varying = [(title, key, max([w] + [len(str(_field(r, key))) for r in rows]))
               for title, key, w in (("cost", "cost", 13), ("activation", "activation", 10),
                                     ("optimizer", "optimizer", 9))
               if len({str(_field(r, key)) for r in rows}) > 1]
    sizes_w = max([5] + [len("-".join(map(str, r["sizes"]))) for r in rows])
    head = (f"{'sizes':{sizes_w}s} {'eta':>6s} {'lmbda':>6s} {'seed':>5s} {'batch':>6s} "
            + "".join(f"{title:{w}s} " for title, _, w in varying) + f"{'final acc':>10s}  {'best acc (epoch)':16s} "
            f"{'seconds':>8s}  status")
    lines = [head, "-" * len(head)]
    if config.get("halving"):
        lines.insert(0, _halving_line(config))
    for r in rows:
        start = (f"{'-'.join(map(str, r['sizes'])):{sizes_w}s} {r['eta']:6g} {r['lmbda']:6g} {r['seed']:5d} "
                 f"{r['batch_size']:6d} " + "".join(f"{str(_field(r, key)):{w}s} " for _, key, w in varying))
        if r.get("status") not in RAN:
            why = f"failed: {r.get('error')}" if r.get("status") == "failed" else str(r.get("status"))
            lines.append(start + f"{'-':>10s}  {'-':16s} {'-':>8s}  {why}")
            continue
        final = "-" if r.get("final_accuracy") is None else f"{r['final_accuracy']:.4f}"
        best = "-" if r.get("best_accuracy") is None else f"{r['best_accuracy']:.4f} ({r['best_epoch']})"
        if r.get("status") == "ok":   # a row from before "diverged" was a status says it in "diverged"
            status = "ok, diverged" if r.get("diverged") else "ok"
        else:
            status = r["status"]
        if r.get("pruned_at") is not None:
            status = f"pruned at epoch {r['pruned_at']}" if status == "pruned" else \
                f"{status}, pruned at epoch {r['pruned_at']}"
        lines.append(start + f"{final:>10s}  {best:16s} {r['seconds']:8.2f}  {status}")
    return "\n".join(lines)


def _halving_line(config) -> str:
    """The table's first line with successive halving: the rungs and the epochs it saved."""
    trained, full = config.get("epochs_trained"), config.get("epochs_full")
    rungs = ", ".join(map(str, config.get("rungs") or []))
    saved = (f": trained {trained:,} of the full grid's {full:,} network-epochs ({100 * trained / full:.0f} %), "
             f"saved {full - trained:,}") if trained is not None and full else ""
    return (f"successive halving (--halving {config['halving']}, rungs at epochs {rungs}; each keeps the best "
            f"1/{config['halving']}){saved}")


#: What a row without the key means: rows written before activations and optimizers were
#: swept trained sigmoid nets with SGD.
ROW_DEFAULTS = {"activation": "sigmoid", "optimizer": "sgd"}


def _field(row: dict, key: str):
    """``row[key]``, or its :data:`ROW_DEFAULTS` value for a row written before the key existed."""
    return row.get(key, ROW_DEFAULTS.get(key))


def save_json(result, path, extra_config=None, *, machine=None) -> None:
    """Write ``{"machine", "config", "rows"}`` as JSON to ``path`` (atomically).

    ``machine``: :func:`fastnet.machine.machine_info` (or the dict given); ``config``: the
    result's, updated with ``extra_config``; ``rows``: one per configuration (NaN and
    infinities become null); and ``state``, what ``--resume`` reads, when the result has one.

    >>> import json, os, tempfile
    >>> from fastnet.sweep import SweepResult, save_json
    >>> path = os.path.join(tempfile.mkdtemp(), "sweep.json")
    >>> save_json(SweepResult([{"label": "a", "status": "ok", "final_accuracy": float("nan")}]), path)
    >>> d = json.load(open(path)); sorted(d), d["rows"][0]["final_accuracy"]
    (['config', 'machine', 'rows'], None)
    """
    from fastnet.machine import machine_info

    config = dict(result.config if isinstance(result, SweepResult) else
                  result.get("config", {}) if isinstance(result, dict) else {})
    config.update(extra_config or {})
    doc = {"machine": machine_info() if machine is None else machine, "config": config, "rows": _rows(result)}
    if getattr(result, "state", None) is not None:
        doc["state"] = result.state
    doc = _clean(doc)
    from fastnet.io import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n", "--json")


def _clean(x):
    """JSON-safe copy: NaN/inf -> None, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


#: Parameters :func:`plot_sweep` can put on an x axis: (row key, axis label, log scale).
_PLOT_PARAMS = (("sizes", "sizes", False), ("eta", "eta (learning rate)", True), ("lmbda", "lmbda (L2)", False),
                ("batch_size", "batch size", True), ("cost", "cost", False), ("activation", "activation", False),
                ("optimizer", "optimizer", False), ("seed", "seed", False))


def plot_sweep(result, path=None, *, size=None):
    """Best test accuracy against each swept parameter: one panel per parameter with more than one value.

    Seeds are repeats, so they get a panel only when nothing else varies; each panel shows
    every configuration as a dot and the mean over the other parameters as a line; a
    configuration successive halving pruned is a red cross at its best before pruning.
    Parameters with numbers (eta, lmbda, batch size) are drawn on their own scale, a log
    one for eta and batch size when they span a factor of 10 or more; sizes, costs,
    activations and optimizers as categories. Failed configurations are left out. Needs ``fastnet[plot]``.

    Returns the matplotlib Figure; with ``path``, writes a PNG: 450 px high and 450 px
    wide per panel (or ``size`` = (width, height)).

    >>> from fastnet.sweep import plot_sweep
    >>> rows = [{"sizes": [784, 30, 10], "eta": e, "lmbda": 0.0, "seed": s, "batch_size": 10,
    ...          "cost": "quadratic", "best_accuracy": 0.8 + e / 100, "status": "ok"}
    ...         for e in (0.5, 3.0) for s in (0, 1)]
    >>> [ax.get_xlabel() for ax in plot_sweep(rows).axes]
    ['eta (learning rate)']
    """
    import numpy as np

    from fastnet import plot

    plot.require("fastnet sweep --plot")
    rows = [r for r in _rows(result) if r.get("status") in RAN and r.get("best_accuracy") is not None]
    if not rows:
        raise ValueError("no configuration finished with an accuracy: nothing to plot")

    def value(r, key):
        return "-".join(map(str, r["sizes"])) if key == "sizes" else _field(r, key)

    varied = [p for p in _PLOT_PARAMS if p[0] != "seed" and len({value(r, p[0]) for r in rows}) > 1]
    if not varied:
        varied = [p for p in _PLOT_PARAMS if p[0] == "seed"]
    width = PLOT_SIZE[0] * len(varied) + 50
    fig = plot._figure(size or (max(width, 600), PLOT_SIZE[1]))
    axes = fig.subplots(1, len(varied), squeeze=False)[0]
    for ax, (key, label, log) in zip(axes, varied):
        vals = list(dict.fromkeys(value(r, key) for r in rows))
        numeric = all(isinstance(v, (int, float)) for v in vals)
        if numeric:
            vals = sorted(vals)
            pos = {v: v for v in vals}
        else:
            pos = {v: i for i, v in enumerate(vals)}
        done = [r for r in rows if r.get("pruned_at") is None]
        cut = [r for r in rows if r.get("pruned_at") is not None]
        if done:
            ax.plot([pos[value(r, key)] for r in done], [r["best_accuracy"] for r in done], "o", color="tab:blue",
                    alpha=0.5, label="one configuration")
        if cut:   # successive halving stopped these early: their best is of fewer epochs
            ax.plot([pos[value(r, key)] for r in cut], [r["best_accuracy"] for r in cut], "x", color="tab:red",
                    alpha=0.7, label="pruned (best before pruning)")
        means = [float(np.mean([r["best_accuracy"] for r in rows if value(r, key) == v])) for v in vals]
        ax.plot([pos[v] for v in vals], means, "-", color="tab:orange", label="mean")
        if numeric and log and min(vals) > 0 and max(vals) / min(vals) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(vals)), [str(v) for v in vals])
        elif len(vals) <= 10:
            ax.set_xticks(vals, [f"{v:g}" for v in vals])
        ax.set_xlabel(label)
        ax.set_ylabel("best test accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"fastnet sweep: {len(rows)} configurations, best test accuracy over the epochs")
    fig.tight_layout()
    plot._save(fig, path)
    return fig
