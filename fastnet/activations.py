"""The activation table: one row per hidden-layer activation, and the output layer per cost.

A row holds the activation's name, its code for the compiled kernels (the branch in
:mod:`fastnet.kernels._math`: ``act`` and ``act_grad``), its plain-``xp`` forward ``f(z)``
and derivative ``f'`` written from the layer's output ``a = f(z)`` (so backprop needs no
stored ``z``), and the weight initialisation that suits it. Every engine and the plain-xp
reference look a layer's row up once per layer; nothing else knows an activation by name.

Adding an activation: a row here and a branch in ``kernels/_math.py`` (plus its tests).

>>> from fastnet import activations
>>> sorted(activations.HIDDEN)
['identity', 'leaky_relu', 'relu', 'sigmoid', 'tanh']
>>> activations.output_for("cross_entropy").name, activations.output_for("mse").name
('softmax', 'identity')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from array_api_compat import array_namespace

from fastnet.kernels import _math

__all__ = ["Activation", "HIDDEN", "get", "output_for", "resolve", "default_init", "COST_OUTPUT", "SIGMOID"]

SIGMOID = _math.SIGMOID   # Nielsen's activation: the engines keep their fastest path for it


def _sigmoid(z, xp):
    return 0.5 * xp.tanh(0.5 * z) + 0.5          # the tanh form: never overflows


def _relu(z, xp):
    return xp.where(z < 0, xp.zeros_like(z), z)  # NaN stays NaN, as in the kernels


@dataclass(frozen=True)
class Activation:
    """One row of the table.

    name: what ``Network(activation=...)`` takes. code: the compiled kernels' switch
    (``kernels/_math.py``). f(z, xp): the activation of an array. grad(a, xp): ``f'(z)``
    written from ``a = f(z)``. init: the default weight initialisation for layers of this
    activation (``"nielsen"``, ``"he"`` or ``"glorot"``)."""
    name: str
    code: int
    f: Callable
    grad: Callable
    init: str


HIDDEN: dict[str, Activation] = {a.name: a for a in (
    Activation("sigmoid", _math.SIGMOID, _sigmoid, lambda a, xp: a * (1 - a), "nielsen"),
    Activation("tanh", _math.TANH, lambda z, xp: xp.tanh(z), lambda a, xp: 1 - a * a, "glorot"),
    Activation("relu", _math.RELU, _relu, lambda a, xp: xp.astype(a > 0, a.dtype), "he"),
    Activation("identity", _math.IDENTITY, lambda z, xp: z, lambda a, xp: xp.ones_like(a), "glorot"),
    Activation("leaky_relu", _math.LEAKY_RELU, lambda z, xp: xp.where(z < 0, z * _math.LEAKY_SLOPE, z),
               lambda a, xp: xp.where(a > 0, xp.ones_like(a), xp.full_like(a, _math.LEAKY_SLOPE)), "he"),
)}

#: The output layer each cost implies: sigmoid (quadratic, Nielsen's), softmax
#: (cross-entropy) and identity (mean squared error, for regression).
COST_OUTPUT = {"quadratic": "sigmoid", "cross_entropy": "softmax", "mse": "identity"}

_SOFTMAX = Activation("softmax", _math.SOFTMAX, None, None, "glorot")


def get(name) -> Activation:
    """The row called ``name`` (a one-line ``ValueError`` listing the names otherwise)."""
    try:
        return HIDDEN[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of {sorted(HIDDEN)}. Actual: {name!r}") from None


def output_for(cost: str) -> Activation:
    """The output layer's activation for ``cost``."""
    name = COST_OUTPUT[cost]
    return _SOFTMAX if name == "softmax" else HIDDEN[name]


def resolve(activation, n_hidden: int) -> list[str]:
    """``activation`` (one name, or one name per hidden layer) as a list of ``n_hidden``
    names, checked: a ``ValueError`` for an unknown name or a list of the wrong length,
    a ``TypeError`` for anything but a string or a list/tuple of strings."""
    if isinstance(activation, str):
        get(activation)
        return [activation] * n_hidden
    if not isinstance(activation, (list, tuple)):
        raise TypeError(f"activation must be a name or a list of names (one per hidden layer). "
                        f"Actual: {type(activation).__name__} {activation!r}")
    names = list(activation)
    if len(names) != n_hidden:
        raise ValueError(f"activation: a list needs one name per hidden layer ({n_hidden} here). "
                         f"Actual: {len(names)} names {names!r}")
    for a in names:
        get(a)
    return names


def default_init(names: list[str]) -> str:
    """The default ``init`` for hidden layers ``names``: ``"nielsen"`` for an all-sigmoid
    net (so every number of the seeds stays), else the first non-sigmoid layer's
    (``"he"`` for relu, ``"glorot"`` for tanh and identity)."""
    for a in names:
        if a != "sigmoid":
            return HIDDEN[a].init
    return "nielsen"


def codes(hidden: list[str], cost: str) -> list[int]:
    """The compiled kernels' code of every layer: the hidden layers', then the output's."""
    return [HIDDEN[a].code for a in hidden] + [output_for(cost).code]


def forward(Z, code: int):
    """``f(Z)`` for a layer of ``code`` with the plain-xp forms (the reference)."""
    xp = array_namespace(Z)
    return _BY_CODE[code].f(Z, xp)


def backward(G, a, code: int):
    """``G * f'(z)`` from ``a`` for a layer of ``code`` (the plain-xp reference)."""
    xp = array_namespace(G, a)
    return G * _BY_CODE[code].grad(a, xp)


_BY_CODE = {a.code: a for a in HIDDEN.values()}
