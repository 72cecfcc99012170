"""Plain-``xp`` reference of every kernel step: the oracle and the fallback.

Each function takes arrays from one array namespace (NumPy, CuPy, or any namespace that
follows the Python Array API standard), asks them for that namespace, writes its result
into the output argument where the namespace allows in-place updates, and returns the
result. Callers always use the return value, so namespaces without in-place writes
(e.g. ``array_api_strict``) work through the same code.

Shapes: batches are ``(m, n)`` with one row per sample; ``W`` is ``(n_in, n_out)``,
``b`` is ``(n_out,)``. Labels ``y`` are integer class ids of shape ``(m,)``; a float
target matrix of shape ``(m, n_out)`` is accepted too.
"""
from __future__ import annotations

import numpy as _np
from array_api_compat import array_namespace as _array_namespace, is_numpy_namespace, is_cupy_namespace

_ndarray = _np.ndarray
_NUMPY = _array_namespace(_np.zeros(0))   # what array_namespace returns for NumPy arrays


def array_namespace(*arrays):
    """``array_api_compat.array_namespace``, with NumPy arrays answered at once: the
    look-up costs about 6 us, as much as a minibatch-10 step's element-wise work."""
    for a in arrays:
        if type(a) is not _ndarray:
            return _array_namespace(*arrays)
    return _NUMPY


def _inplace(xp) -> bool:
    """True when ``xp`` supports ``out=`` and slice assignment without copies."""
    return is_numpy_namespace(xp) or is_cupy_namespace(xp)


def sigmoid(z, xp=None):
    """Logistic sigmoid in its tanh form, ``0.5 * tanh(0.5 z) + 0.5`` (no overflow)."""
    xp = xp or array_namespace(z)
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def bias_sigmoid(Z, b):
    """Forward step of a sigmoid layer: ``Z <- sigmoid(Z + b)``.

    Z: (m, n) float, overwritten with the activations ``a``. b: (n,), same dtype.
    """
    xp = array_namespace(Z, b)
    if _inplace(xp):
        Z += b
        Z *= 0.5
        xp.tanh(Z, out=Z)
        Z *= 0.5
        Z += 0.5
        return Z
    return sigmoid(Z + b, xp)


def bias_softmax(Z, b):
    """Forward step of a softmax layer: ``Z <- softmax(Z + b)`` row by row (max-shifted).

    Z: (m, n) float, overwritten with the activations. b: (n,).
    """
    xp = array_namespace(Z, b)
    if _inplace(xp):
        Z += b
        Z -= xp.max(Z, axis=-1, keepdims=True)
        xp.exp(Z, out=Z)
        Z /= xp.sum(Z, axis=-1, keepdims=True)
        return Z
    Z = Z + b
    Z = xp.exp(Z - xp.max(Z, axis=-1, keepdims=True))
    return Z / xp.sum(Z, axis=-1, keepdims=True)


def one_hot(y, n_out, dtype, xp=None):
    """(m,) integer labels -> (m, n_out) one-hot matrix of ``dtype`` (reference only)."""
    xp = xp or array_namespace(y)
    classes = xp.arange(n_out, dtype=y.dtype)
    return xp.astype(y[:, None] == classes[None, :], dtype)


def _targets(a, y, xp):
    if y.ndim == 2:
        return y
    return one_hot(y, a.shape[1], a.dtype, xp)


def output_delta(a, y, cost, out):
    """Output-layer error ``delta_L`` for one batch.

    a: (m, n_out) output activations. y: (m,) integer labels or (m, n_out) targets.
    cost: ``"quadratic"`` (sigmoid output): ``(a - y) * a * (1 - a)``;
    ``"cross_entropy"`` (softmax output) and ``"mse"`` (identity output): ``a - y``.
    out: (m, n_out), may be ``a``.
    """
    xp = array_namespace(a, out)
    t = _targets(a, y, xp)
    d = a - t
    if cost == "quadratic":
        d = d * a * (1 - a)
    elif cost not in ("cross_entropy", "mse"):
        raise ValueError(f"cost must be 'quadratic', 'cross_entropy' or 'mse'. Actual: {cost!r}")
    if _inplace(xp):
        out[...] = d
        return out
    return d


def bias_act(Z, b, code):
    """Forward step of a layer of activation ``code`` (:mod:`fastnet.activations`):
    ``Z <- f(Z + b)``; softmax by rows. Z: (m, n) (or (K, m, n) with b (K, 1, n)),
    overwritten where the namespace allows. Returns the activations."""
    from fastnet import activations
    from fastnet.kernels import _math

    if code == _math.SIGMOID:
        return bias_sigmoid(Z, b)
    if code == _math.SOFTMAX:
        return bias_softmax(Z, b)
    xp = array_namespace(Z, b)
    if _inplace(xp):
        Z += b
        Z[...] = activations.forward(Z, code)
        return Z
    return activations.forward(Z + b, code)


def backward_act(G, a, code):
    """Backward Hadamard step of a layer of activation ``code``: ``G <- G * f'(z)``,
    the derivative written from the layer's output ``a``. Returns ``delta``."""
    from fastnet import activations
    from fastnet.kernels import _math

    if code == _math.SIGMOID:
        return backward_delta(G, a)
    xp = array_namespace(G, a)
    d = activations.backward(G, a, code)
    if _inplace(xp):
        G[...] = d
        return G
    return d


def opt_update(P, G, S1, S2, opt, lr, f0, f1, scale, l2):
    """One optimizer step of one parameter array: ``g = scale * G + l2 * P`` (G the
    unscaled gradient sum, ``scale = 1 / m``; ``l2 = lmbda / n`` for weights, 0 for
    biases), then ``opt``'s rule (:mod:`fastnet.optim`) with step factors ``f0, f1``.
    Returns ``(P, S1, S2)``, written in place where the namespace allows."""
    xp = array_namespace(P, G)
    g = scale * G
    if l2:
        g = g + l2 * P
    newP, newS1, newS2 = opt.xp_step(P, g, S1, S2, lr, f0, f1, xp)
    if _inplace(xp):
        P[...] = newP
        if newS1 is not S1:
            S1[...] = newS1
        if newS2 is not S2:
            S2[...] = newS2
        return P, S1, S2
    return newP, newS1, newS2


def backward_delta(G, a):
    """Fused sigmoid-derivative Hadamard step: ``G <- G * a * (1 - a)``.

    G: (m, n) = ``delta_next @ W.T``, overwritten with this layer's ``delta``.
    a: (m, n) this layer's stored activation.
    """
    xp = array_namespace(G, a)
    if _inplace(xp):
        G *= a * (1 - a)
        return G
    return G * (a * (1 - a))


def bias_grad(delta, out, scale, accumulate=False):
    """Minibatch bias gradient: ``out <- scale * sum(delta, axis=0)`` (``+=`` to accumulate).

    delta: (m, n). out: (n,). scale: usually ``1 / m``.
    """
    xp = array_namespace(delta, out)
    g = scale * xp.sum(delta, axis=-2)   # over the rows: (m, n) here, (K, m, n) for the stacked op
    if _inplace(xp):
        if accumulate:
            out += g
        else:
            out[...] = g
        return out
    return out + g if accumulate else g


def sgd_update(P, grad, scale, decay=1.0):
    """Fused SGD step with L2 decay: ``P <- decay * P - scale * grad``.

    P: parameters (any shape). grad: same shape, the *unscaled* minibatch sum (e.g. the
    GEMM output ``A_prev.T @ delta``). scale: ``eta / m``. decay: ``1 - eta * lmbda / n``.
    """
    xp = array_namespace(P, grad)
    if _inplace(xp):
        if decay != 1.0:
            P *= decay
        P -= scale * grad
        return P
    return (P * decay if decay != 1.0 else P) - scale * grad


# --- stacked: a leading K axis, one slice per network of a NetworkStack ----------------
# Every array carries the K networks along axis 0; slice k is exactly what the unstacked
# step above computes for network k. Labels y (m,) are shared by all K networks.
# Shapes are checked here (unlike above) because broadcasting would otherwise accept a
# (1, n) bias or a length-1 scale vector for K networks without a word.

def _expect_shape(fn, name, x, expected, why):
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{fn}: {name} must have shape {tuple(expected)} ({why}). "
                         f"Actual: {tuple(x.shape)}.")


def _expect_ndim(fn, name, x, ndim):
    if x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D. Actual: shape {tuple(x.shape)}.")


def _check_Z_b_stacked(fn, Z, b):
    _expect_ndim(fn, "Z", Z, 3)
    _expect_shape(fn, "b", b, (Z.shape[0], Z.shape[2]),
                  "one bias row per net, one entry per column of Z")


def bias_sigmoid_stacked(Z, b):
    """Forward step of K sigmoid layers: ``Z[k] <- sigmoid(Z[k] + b[k])``.

    Z: (K, m, n) float, overwritten with the activations. b: (K, n), same dtype.
    """
    _check_Z_b_stacked("bias_sigmoid_stacked", Z, b)
    return bias_sigmoid(Z, array_namespace(Z, b).expand_dims(b, axis=1))   # (K, 1, n): over the rows


def bias_softmax_stacked(Z, b):
    """Forward step of K softmax layers: ``Z[k] <- softmax(Z[k] + b[k])`` row by row.

    Z: (K, m, n) float, overwritten with the activations. b: (K, n).
    """
    _check_Z_b_stacked("bias_softmax_stacked", Z, b)
    return bias_softmax(Z, array_namespace(Z, b).expand_dims(b, axis=1))


def output_delta_stacked(a, y, cost, out):
    """Output-layer error of K networks on one batch: ``out[k] <- output_delta(a[k], y)``.

    a: (K, m, n_out) output activations. y: (m,) integer labels in [0, n_out), shared by
    the K networks (a label out of range is a ValueError). cost: ``"quadratic"``:
    ``(a - t) * a * (1 - a)``; ``"cross_entropy"``: ``a - t``. out: (K, m, n_out), may be
    ``a``.
    """
    fn = "output_delta_stacked"
    if cost not in ("quadratic", "cross_entropy", "mse"):
        raise ValueError(f"{fn}: cost must be 'quadratic', 'cross_entropy' or 'mse'. Actual: {cost!r}")
    _expect_ndim(fn, "a", a, 3)
    _expect_shape(fn, "out", out, a.shape, "the shape of a")
    xp = array_namespace(a, out)
    n_out = a.shape[2]
    if y.ndim == 2:                          # a target matrix (m, n_out), shared by the K nets
        _expect_shape(fn, "y", y, a.shape[1:], "one target row per row of a[k]")
        t = y
    else:
        _expect_ndim(fn, "y", y, 1)
        _expect_shape(fn, "y", y, (a.shape[1],), "one label per row of a[k]")
        if y.shape[0] and (int(xp.min(y)) < 0 or int(xp.max(y)) >= n_out):
            raise ValueError(f"{fn}: labels y must lie in [0, {n_out}). Actual: from "
                             f"{int(xp.min(y))} to {int(xp.max(y))}.")
        t = one_hot(y, n_out, a.dtype, xp)   # (m, n_out): broadcasts over the K nets
    d = a - t
    if cost == "quadratic":
        d = d * a * (1 - a)
    if _inplace(xp):
        out[...] = d
        return out
    return d


def bias_grad_stacked(delta, out, scale, accumulate=False):
    """Bias gradients of K networks: ``out[k] <- scale * sum(delta[k], axis=0)`` (or ``+=``).

    delta: (K, m, n). out: (K, n). scale: usually ``1 / m``.
    """
    fn = "bias_grad_stacked"
    _expect_ndim(fn, "delta", delta, 3)
    _expect_shape(fn, "out", out, (delta.shape[0], delta.shape[2]),
                  "one row per net, one entry per column of delta")
    return bias_grad(delta, out, scale, accumulate)


def sgd_update_stacked(P, grad, scales, decays):
    """Fused SGD step of K networks: ``P[k] <- decays[k] * P[k] - scales[k] * grad[k]``.

    P: (K, ...) parameters. grad: same shape, the *unscaled* minibatch sums. scales,
    decays: (K,) in P's dtype (``eta / m`` and ``1 - eta * lmbda / n`` per net).
    """
    fn = "sgd_update_stacked"
    if P.ndim < 1:
        raise ValueError(f"{fn}: P must have a leading K axis (at least 1-D). Actual: shape ().")
    _expect_shape(fn, "grad", grad, P.shape, "the shape of P")
    K = P.shape[0]
    _expect_shape(fn, "scales", scales, (K,), "one scale per net")
    _expect_shape(fn, "decays", decays, (K,), "one decay per net")
    xp = array_namespace(P, grad, scales, decays)
    col = (K,) + (1,) * (P.ndim - 1)         # (K, 1, ...): broadcasts over each net's slice
    s = xp.reshape(scales, col)
    d = xp.reshape(decays, col)
    if _inplace(xp):
        P *= d                                # times 1 is exact: decay 1 changes nothing
        P -= s * grad
        return P
    return P * d - s * grad


def bias_act_stacked(Z, b, code):
    """Forward step of K layers of activation ``code``: ``Z[k] <- f(Z[k] + b[k])``.

    Z: (K, m, n), overwritten where the namespace allows. b: (K, n)."""
    _check_Z_b_stacked("bias_act_stacked", Z, b)
    return bias_act(Z, array_namespace(Z, b).expand_dims(b, axis=1), code)
