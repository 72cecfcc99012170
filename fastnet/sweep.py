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
           "STACK_KEY", "Config",
           "SweepInterrupted", "SweepResult", "default_max_k", "expand_grid", "format_table", "group_stacks",
           "parse_int_ranges", "plot_sweep", "require_ray", "run_stack", "run_sweep", "save_json"]

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
    stacks = []
    for group in groups.values():
        n_stacks = -(-len(group) // max_k)
        base, extra = divmod(len(group), n_stacks)
        start = 0
        for j in range(n_stacks):
            stop = start + base + (j < extra)
            stacks.append(group[start:stop])
            start = stop
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
    return {"label": c.label(), **c.as_dict(),
            "final_accuracy": accs[-1] if accs else None, "best_accuracy": best_acc, "best_epoch": best_epoch,
            "accuracy_per_epoch": accs,
            "final_loss": _finite(records[-1].get("val_loss")) if records else None,
            "seconds": stack_seconds / k, "stack_seconds": stack_seconds, "stack_size": k,
            "diverged": any(bool(r.get("diverged")) for r in records), "status": "ok", "error": None}


def _not_run_row(c: Config, k: int) -> dict:
    """The row of a configuration whose stack never finished (Ctrl-C)."""
    return {**_failed_row(c, None, k), "status": "not run"}


def _failed_row(c: Config, error: str, k: int) -> dict:
    return {"label": c.label(), **c.as_dict(), "final_accuracy": None, "best_accuracy": None, "best_epoch": None,
            "accuracy_per_epoch": [], "final_loss": None, "seconds": None, "stack_seconds": None,
            "stack_size": k, "diverged": False, "status": "failed", "error": error}


def run_stack(configs, data, device="auto", dtype="float32", *, order="shared", order_seed=0,
              fail_pattern=None) -> list[dict]:
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

    Each result: the config's fields, ``label``, ``final_accuracy`` (test accuracy after the
    last epoch), ``best_accuracy`` and its ``best_epoch`` (1-based, the first best; of the
    epochs before a divergence, None when the first diverged),
    ``accuracy_per_epoch``, ``final_loss``, ``seconds`` (the stack's wall time / its size),
    ``stack_seconds``, ``stack_size``, ``diverged`` (its loss became NaN or infinite; the
    others are unaffected), ``status`` ``"ok"`` and ``error`` None.

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
    _warm_kernels(device, dtype, order, len(c0.sizes) - 1)
    t0 = time.perf_counter()
    stack = fastnet.NetworkStack(list(c0.sizes), len(configs), seeds=[c.seed for c in configs],
                                 etas=[c.eta for c in configs], lmbdas=[c.lmbda for c in configs], cost=c0.cost,
                                 activation=c0.hidden_activation, dtype=dtype, device=device, order=order,
                                 order_seed=order_seed if order == "shared" else None)
    histories = stack.fit(Xtr, ytr, epochs=c0.epochs, batch_size=c0.batch_size, optimizer=c0.optimizer,
                          validation_data=(Xte, yte), verbose=0)
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
    ``"not run"``), plus ``index`` (grid position) and ``stack`` (which stack ran it).
    ``config``: engine, device, dtype, max_k, stacks, counts of failed and not-run rows,
    whether it was interrupted, wall time.

    >>> from fastnet.sweep import SweepResult
    >>> r = SweepResult([{"label": "a", "status": "ok"}, {"label": "b", "status": "failed", "error": "E: x"}])
    >>> len(r), r.ok, [f["label"] for f in r.failures]
    (2, False, ['b'])
    """

    rows: list
    config: dict = field(default_factory=dict)

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
        """True when every configuration ran."""
        return all(r.get("status") == "ok" for r in self.rows)

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
              order="shared", order_seed=0, progress=None) -> SweepResult:
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
        Called as ``progress(rows)`` with a stack's rows each time one finishes (or fails).

    Every argument, and the data against every configuration, is checked before anything
    runs. A stack that raises has all its rows marked ``"failed"`` with the error; the
    other stacks still run. Ctrl-C raises :class:`SweepInterrupted` (a ``KeyboardInterrupt``)
    whose ``result`` holds the rows of the stacks that finished and marks the others
    ``"not run"``.

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
    """
    configs = _check_configs(configs)
    engine, max_k, dtype, order = _check_options(engine, address, max_k, device, dtype, order)
    run_kw = {"device": device, "dtype": dtype, "order": order, "order_seed": _check_order_seed(order_seed)}
    data = _check_data(data, configs)
    stacks = group_stacks(configs, max_k)
    t0 = time.perf_counter()
    results = [None] * len(stacks)   # filled as stacks finish, so that Ctrl-C keeps the finished ones
    cluster = {}
    try:
        if engine == "local":
            _run_local(stacks, data, run_kw, progress, results)
        else:
            _run_ray(stacks, data, run_kw, progress, address, results, cluster)
    except KeyboardInterrupt as exc:
        result = _gather(configs, stacks, results, engine, address, cluster, device, dtype, order, run_kw, max_k, t0)
        result.config["interrupted"] = True
        raise SweepInterrupted(result) from exc
    return _gather(configs, stacks, results, engine, address, cluster, device, dtype, order, run_kw, max_k, t0)


def _gather(configs, stacks, results, engine, address, cluster, device, dtype, order, run_kw, max_k, t0):
    """The :class:`SweepResult` of the stacks' rows in grid order; a stack without rows (Ctrl-C
    came first) gets rows marked ``"not run"``."""
    index = {c: i for i, c in enumerate(configs)}
    rows = [None] * len(configs)
    for s, (stack, stack_rows) in enumerate(zip(stacks, results)):
        if stack_rows is None:
            stack_rows = [_not_run_row(c, len(stack)) for c in stack]
        for c, row in zip(stack, stack_rows):
            rows[index[c]] = {"index": index[c], "stack": s, **row}
    config = {"engine": engine, "address": address, "cluster": cluster or None, "device": device, "dtype": dtype,
              "order": order, "order_seed": run_kw["order_seed"], "max_k": max_k, "configurations": len(configs),
              "stacks": len(stacks), "failed": sum(r["status"] == "failed" for r in rows),
              "not_run": sum(r["status"] == "not run" for r in rows), "interrupted": False,
              "wall_s": round(time.perf_counter() - t0, 3)}
    return SweepResult(rows, config)


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


def _run_local(stacks, data, run_kw, progress, results) -> None:
    """The local engine: the stacks one after the other, each one's rows into ``results[i]``
    as it ends; ``run_kw``: :func:`run_stack`'s keywords."""
    fail = os.environ.get(FAIL_ENV, "")
    for i, stack in enumerate(stacks):
        try:
            rows = run_stack(stack, data, **run_kw, fail_pattern=fail)
        except Exception as exc:  # a failed stack is reported in its rows; the others still run
            rows = [_failed_row(c, _error_text(exc), len(stack)) for c in stack]
        results[i] = rows
        _report(progress, rows)


def _stack_task(configs, data, run_kw, fail_pattern):
    """What a Ray task runs: :func:`run_stack` with Numba's threads matched to the task's CPUs."""
    try:
        import numba
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:  # the task was given this many cores: one thread each, no oversubscription
            numba.set_num_threads(max(1, min(int(cpus), numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # pragma: no cover - threads are a matter of speed, never of results
        pass
    return run_stack(configs, data, **run_kw, fail_pattern=fail_pattern)


def _run_ray(stacks, data, run_kw, progress, address, results, cluster) -> None:
    """The Ray engine: one task per stack; each one's rows into ``results[i]`` as it ends,
    what the cluster has into ``cluster``. Ctrl-C cancels the tasks still running."""
    import logging

    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}
        try:
            ray.init(**kw, logging_level=logging.ERROR)
        except Exception as exc:
            where = f"join the Ray cluster at {address}" if address else "start a local Ray cluster"
            raise RuntimeError(f"could not {where}: {_error_text(exc)}") from exc
        started = True
    refs = {}
    try:
        resources = ray.cluster_resources()
        cluster.update({"address": address or ("local" if started else "already initialised"),
                        "cpus": resources.get("CPU"), "gpus": resources.get("GPU", 0)})
        options = {"num_gpus": 1} if resources.get("GPU", 0) > 0 and run_kw["device"] != "cpu" else {}
        task = ray.remote(max_retries=1, retry_exceptions=True)(_stack_task)
        data_ref = ray.put(data)  # once: every task reads the same copy in the object store
        fail = os.environ.get(FAIL_ENV, "")
        refs = {task.options(**options).remote(stack, data_ref, run_kw, fail): i
                for i, stack in enumerate(stacks)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = refs[ref]
                try:
                    rows = ray.get(ref)
                except Exception as exc:  # failed after its retry: report it, keep the others
                    rows = [_failed_row(c, _error_text(exc), len(stacks[i])) for c in stacks[i]]
                results[i] = rows
                _report(progress, rows)
    except KeyboardInterrupt:
        for ref, i in refs.items():   # the stacks still running: stop them, they are reported "not run"
            if results[i] is None:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone: nothing to stop
                    pass
        raise
    finally:
        if started:
            ray.shutdown()


# --- output -----------------------------------------------------------------------------------


def _rows(result) -> list:
    return list(result.rows if isinstance(result, SweepResult) else
                result["rows"] if isinstance(result, dict) else result)


def format_table(result) -> str:
    """The table ``fastnet sweep`` prints: one line per configuration, in grid order.

    ``result``: a :class:`SweepResult`, its ``to_dict()`` or a list of rows. A cost, an
    activation and an optimizer column each appear when the rows have more than one value
    of it (a row without ``activation``/``optimizer``, from before they were swept, means
    sigmoid/sgd); a failed row shows its error, a row that never ran (Ctrl-C) ``not run``.

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
    for r in rows:
        start = (f"{'-'.join(map(str, r['sizes'])):{sizes_w}s} {r['eta']:6g} {r['lmbda']:6g} {r['seed']:5d} "
                 f"{r['batch_size']:6d} " + "".join(f"{str(_field(r, key)):{w}s} " for _, key, w in varying))
        if r.get("status") != "ok":
            why = f"failed: {r.get('error')}" if r.get("status") == "failed" else str(r.get("status"))
            lines.append(start + f"{'-':>10s}  {'-':16s} {'-':>8s}  {why}")
            continue
        final = "-" if r.get("final_accuracy") is None else f"{r['final_accuracy']:.4f}"
        best = "-" if r.get("best_accuracy") is None else f"{r['best_accuracy']:.4f} ({r['best_epoch']})"
        status = "ok, diverged" if r.get("diverged") else "ok"
        lines.append(start + f"{final:>10s}  {best:16s} {r['seconds']:8.2f}  {status}")
    return "\n".join(lines)


#: What a row without the key means: rows written before activations and optimizers were
#: swept trained sigmoid nets with SGD.
ROW_DEFAULTS = {"activation": "sigmoid", "optimizer": "sgd"}


def _field(row: dict, key: str):
    """``row[key]``, or its :data:`ROW_DEFAULTS` value for a row written before the key existed."""
    return row.get(key, ROW_DEFAULTS.get(key))


def save_json(result, path, extra_config=None) -> None:
    """Write ``{"machine", "config", "rows"}`` as JSON to ``path`` (atomically).

    ``machine``: :func:`fastnet.machine.machine_info`; ``config``: the result's, updated with
    ``extra_config``; ``rows``: one per configuration (NaN and infinities become null).

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
    doc = _clean({"machine": machine_info(), "config": config, "rows": _rows(result)})
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
    every configuration as a dot and the mean over the other parameters as a line.
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
    rows = [r for r in _rows(result) if r.get("status") == "ok" and r.get("best_accuracy") is not None]
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
        xs = [pos[value(r, key)] for r in rows]
        ax.plot(xs, [r["best_accuracy"] for r in rows], "o", color="tab:blue", alpha=0.5,
                label="one configuration")
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
