"""The optimizer table: how a step turns gradients into new parameters.

Engines compute each step's gradient sums; the optimizer applies them, once per step,
through one function per target: the plain-``xp`` form here (:meth:`Optimizer.xp_step`,
the oracle), and ``kernels/_math.py``'s ``opt_step`` for the ``@njit`` kernels and the
compiled loop. The rules are PyTorch's (``torch.optim.SGD`` with momentum and Nesterov,
``torch.optim.Adam``, ``torch.optim.RMSprop``), so any run can be checked against torch in
float64. With ``g`` the mean gradient over the batch plus ``(lmbda / n) * W`` for weights
(biases take no decay; for plain SGD this is exactly Nielsen's L2 decay factor):

- SGD: ``p -= eta * g``
- momentum: ``u = mu * u + g; p -= eta * u``
- Nesterov: ``u = mu * u + g; p -= eta * (g + mu * u)``
- Adam: ``m += (1 - b1) (g - m); v = b2 v + (1 - b2) g^2;
  p -= eta / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`` (the kernels multiply by
  ``1 / sqrt(1 - b2^t)``, a per-step factor: one division per parameter, not two)

Adding an optimizer: a class here (its name, code, hyperparameters, checks and ``xp_step``)
and, in ``kernels/_math.py``, a branch in ``opt_step`` and its code in ``OPT_CODES`` and
``opt_state_used`` (plus its tests).

>>> from fastnet import optim
>>> optim.get("nesterov")
Momentum(momentum=0.9, nesterov=True)
>>> optim.get(optim.Adam(beta1=0.8)).config()
{'name': 'adam', 'beta1': 0.8, 'beta2': 0.999, 'eps': 1e-08}
"""
from __future__ import annotations

import math

from fastnet.kernels import _math

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "RMSprop", "OPTIMIZERS", "get", "State"]


def _real(owner: str, name: str, value, lo: float, lo_ok: bool, hi: float | None = None) -> float:
    """A finite real hyperparameter in ``[lo, hi)`` (``(lo, hi)`` without ``lo_ok``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{owner}: {name} must be a real number. Actual: {type(value).__name__} {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{owner}: {name} must be a finite real number. Actual: {value!r}") from None
    ok = math.isfinite(v) and (v >= lo if lo_ok else v > lo) and (hi is None or v < hi)
    if not ok:
        span = f"{'[' if lo_ok else '('}{lo:g}, {hi:g})" if hi is not None else f"{'>=' if lo_ok else '>'} {lo:g}"
        raise ValueError(f"{owner}: {name} must be {'in ' if hi is not None else ''}{span}. Actual: {value!r}")
    return v


class Optimizer:
    """A row of the table. Subclasses set ``name`` and ``code`` (``kernels/_math.py``),
    hold their hyperparameters, and give :meth:`hyper` (up to three floats for the compiled
    kernels, in ``opt_step``'s order) and :meth:`xp_step` (the plain-xp rule)."""

    name = "?"
    code = -1

    def hyper(self) -> tuple[float, float, float]:
        """The hyperparameters as ``opt_step``'s ``h0, h1, h2``."""
        return (0.0, 0.0, 0.0)

    def config(self) -> dict:
        """Name and hyperparameters (JSON-ready; :func:`get` builds the optimizer back)."""
        return {"name": self.name}

    def factors(self, t: int) -> tuple[float, float]:
        """Per-step factors at step ``t`` (Adam's bias corrections); see ``_math.opt_factors``."""
        h = self.hyper()
        factors = getattr(_math.opt_factors, "py_func", _math.opt_factors)   # no compile for a scalar
        return factors(self.code, h[0], h[1], t)

    def xp_step(self, P, g, S1, S2, lr, f0, f1, xp):
        """The rule on arrays: ``(P, S1, S2)`` after one step. g: the mean gradient (plus
        the L2 term); f0, f1: :meth:`factors`. Pure (returns new arrays)."""
        raise NotImplementedError

    def __eq__(self, other):
        return isinstance(other, Optimizer) and self.config() == other.config()

    def __hash__(self):
        return hash(tuple(sorted(self.config().items())))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Plain minibatch SGD, ``p -= eta * g`` (Nielsen's; the engines fuse it into the
    gradient pass).

    >>> SGD()
    SGD()
    """
    name = "sgd"
    code = _math.OPT_SGD

    def xp_step(self, P, g, S1, S2, lr, f0, f1, xp):
        return P - lr * g, S1, S2


class Momentum(Optimizer):
    """SGD with momentum ``mu`` (``torch.optim.SGD(momentum=mu, nesterov=...)``).

    >>> Momentum(0.5)
    Momentum(momentum=0.5, nesterov=False)
    """
    name = "momentum"

    def __init__(self, momentum: float = 0.9, nesterov: bool = False):
        self.momentum = _real("Momentum", "momentum", momentum, 0.0, True)
        if not isinstance(nesterov, bool) and type(nesterov).__name__ != "bool_":
            raise TypeError(f"Momentum: nesterov must be True or False. Actual: {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("Momentum: nesterov=True needs momentum > 0. Actual: momentum=0")

    @property
    def code(self):
        return _math.OPT_NESTEROV if self.nesterov else _math.OPT_MOMENTUM

    def hyper(self):
        return (self.momentum, 0.0, 0.0)

    def config(self):
        return {"name": self.name, "momentum": self.momentum, "nesterov": self.nesterov}

    def xp_step(self, P, g, S1, S2, lr, f0, f1, xp):
        S1 = self.momentum * S1 + g
        step = g + self.momentum * S1 if self.nesterov else S1
        return P - lr * step, S1, S2


class Adam(Optimizer):
    """Adam with bias correction, eps outside the square root (``torch.optim.Adam``).

    >>> Adam()
    Adam(beta1=0.9, beta2=0.999, eps=1e-08)
    """
    name = "adam"
    code = _math.OPT_ADAM

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.beta1 = _real("Adam", "beta1", beta1, 0.0, True, 1.0)
        self.beta2 = _real("Adam", "beta2", beta2, 0.0, True, 1.0)
        self.eps = _real("Adam", "eps", eps, 0.0, False)

    def hyper(self):
        return (self.beta1, self.beta2, self.eps)

    def config(self):
        return {"name": self.name, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def xp_step(self, P, g, S1, S2, lr, f0, f1, xp):
        S1 = S1 + (1 - self.beta1) * (g - S1)
        S2 = S2 * self.beta2 + (1 - self.beta2) * (g * g)
        denom = xp.sqrt(S2) * f1 + self.eps
        return P - (lr / f0) * (S1 / denom), S1, S2


class RMSprop(Optimizer):
    """RMSprop, ``v = alpha v + (1 - alpha) g^2; p -= eta * g / (sqrt(v) + eps)``
    (``torch.optim.RMSprop`` without momentum or centering).

    >>> RMSprop()
    RMSprop(alpha=0.99, eps=1e-08)
    """
    name = "rmsprop"
    code = _math.OPT_RMSPROP

    def __init__(self, alpha: float = 0.99, eps: float = 1e-8):
        self.alpha = _real("RMSprop", "alpha", alpha, 0.0, True, 1.0)
        self.eps = _real("RMSprop", "eps", eps, 0.0, False)

    def hyper(self):
        return (self.alpha, self.eps, 0.0)

    def config(self):
        return {"name": self.name, "alpha": self.alpha, "eps": self.eps}

    def xp_step(self, P, g, S1, S2, lr, f0, f1, xp):
        S2 = S2 * self.alpha + (1 - self.alpha) * (g * g)
        return P - lr * (g / (xp.sqrt(S2) + self.eps)), S1, S2


#: The names ``fit(optimizer=...)`` takes, each with its default instance.
OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": lambda: Momentum(0.9, nesterov=True),
    "adam": Adam,
    "rmsprop": RMSprop,
}
_CLASSES = {"sgd": SGD, "momentum": Momentum, "adam": Adam, "rmsprop": RMSprop}


def get(spec) -> Optimizer:
    """An optimizer from a name of :data:`OPTIMIZERS`, an :class:`Optimizer`, or a
    :meth:`Optimizer.config` dict; anything else is a one-line ``ValueError``/``TypeError``."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str):
        try:
            return OPTIMIZERS[spec]()
        except KeyError:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)} or a fastnet.optim "
                             f"instance. Actual: {spec!r}") from None
    if isinstance(spec, dict) and spec.get("name") in _CLASSES:
        kw = {k: v for k, v in spec.items() if k != "name"}
        return _CLASSES[spec["name"]](**kw)
    raise TypeError(f"optimizer must be one of {sorted(OPTIMIZERS)} or a fastnet.optim instance. "
                    f"Actual: {type(spec).__name__} {spec!r}")


class State:
    """An optimizer's state for a list of parameter arrays: two buffers per parameter
    (``s1``: velocity or first moment, ``s2``: second moment; zeros at the start, unused
    ones stay zero) and the step count ``t``. Made once per fit (and kept by
    ``train_step`` between calls), written into checkpoints.

    eta, l2: the fit's learning rate and ``lmbda / n`` (a :class:`fastnet.NetworkStack`'s:
    one per net, lists, as :meth:`apply_stacked` reads them).

    >>> import numpy as np
    >>> from fastnet import ops
    >>> W, b = [np.ones((2, 2))], [np.zeros(2)]
    >>> st = State(Adam(), W + b, np, eta=0.1)
    >>> st.apply(W, b, [np.ones((2, 2))], [np.ones(2)], ops.table("xp"), m=1)
    >>> st.t, round(float(W[0][0, 0]), 6)   # Adam's first step moves each weight by about eta
    (1, 0.9)
    """

    def __init__(self, optimizer: Optimizer, params, xp, eta=1.0, l2=0.0):
        self.optimizer = optimizer
        self.eta, self.l2 = eta, l2
        self.t = 0
        if optimizer.code == _math.OPT_SGD:
            self.s1 = self.s2 = []
        else:
            self.s1 = [xp.zeros_like(p) for p in params]
            self.s2 = [xp.zeros_like(p) for p in params]

    def arrays(self) -> list:
        """Every state buffer, s1 then s2 (for checkpoints)."""
        return list(self.s1) + list(self.s2)

    def set_arrays(self, arrays) -> None:
        n = len(self.s1)
        if len(arrays) != 2 * n:
            raise ValueError(f"optimizer state: expected {2 * n} arrays. Actual: {len(arrays)}")
        self.s1, self.s2 = list(arrays[:n]), list(arrays[n:])

    def apply(self, Ws, bs, gWs, gbs, kern, m: int) -> None:
        """One step of the optimizer on a network's parameters, in place: ``Ws``/``bs`` the
        lists of weights and biases (entries replaced where the namespace returns new
        arrays), ``gWs``/``gbs`` the step's unscaled gradient sums over its ``m`` rows,
        ``kern`` the kernel table (``opt_update``: njit, CUDA or plain xp)."""
        self.t += 1
        opt = self.optimizer
        f0, f1 = opt.factors(self.t)
        L = len(Ws)
        for i, (P, G, l2) in enumerate([(W, g, self.l2) for W, g in zip(Ws, gWs)]
                                       + [(b, g, 0.0) for b, g in zip(bs, gbs)]):
            P, self.s1[i], self.s2[i] = kern.opt_update(P, G, self.s1[i], self.s2[i], opt, self.eta, f0, f1,
                                                        1.0 / m, l2)
            if i < L:
                Ws[i] = P
            else:
                bs[i - L] = P

    def apply_stacked(self, Ws, bs, gWs, gbs, kern, m: int) -> None:
        """:meth:`apply` for a :class:`fastnet.NetworkStack`: every array has a leading K
        axis and net ``k`` steps with its own ``eta[k]`` and ``l2[k]`` (lists here; one
        shared step count: the nets step together)."""
        etas, l2s = self.eta, self.l2
        self.t += 1
        opt = self.optimizer
        f0, f1 = opt.factors(self.t)
        pairs = [(W, g, True) for W, g in zip(Ws, gWs)] + [(b, g, False) for b, g in zip(bs, gbs)]
        for i, (P, G, is_w) in enumerate(pairs):
            S1, S2 = self.s1[i], self.s2[i]
            for k, eta in enumerate(etas):   # slice k of a C array is a C array: updated in place
                kern.opt_update(P[k, ...], G[k, ...], S1[k, ...], S2[k, ...], opt, eta, f0, f1, 1.0 / m,
                                l2s[k] if is_w else 0.0)
