"""Scalar maths shared by the CPU (``@njit``) and CUDA (``@cuda.jit``) kernels.

Each function here is a plain ``@numba.njit`` function of scalars. The CPU kernels in
:mod:`fastnet.kernels.cpu` call them inside their loops (LLVM inlines them), and the CUDA
kernels in :mod:`fastnet.kernels.cuda` call the very same objects: Numba's CUDA target
compiles a CPU dispatcher it meets in a kernel as a device function (numba-cuda
``doc_examples/test_cpu_gpu_compat.py``). So the formula is written once.

Constants come in as arguments (``one``) typed like the data: in Numba a
float64 literal next to a float32 value promotes the expression to float64, which would
compute float32 kernels in double precision and round differently from NumPy (NumPy
treats a Python float next to a float32 array as float32). The callers make them with
``x.dtype.type(1)``.

The operation order of every expression matches :mod:`fastnet.kernels.reference`
exactly, and nothing is compiled with ``fastmath`` (no reassociation, no FMA
contraction), so float64 results equal the reference to the last bit wherever the
reference does one operation per element (everything but ``tanh``/``exp``, which come
from different maths libraries and may differ in the last bit).

Note on the on-disk cache: Numba keys a cached kernel on its own source file only, so
after editing this file, clear ``kernels/__pycache__/*.nbi|*.nbc`` (or touch ``cpu.py``)
for the CPU kernels to pick the change up.
"""
from __future__ import annotations

import math

try:
    from numba import njit, types
    from numba.extending import overload
except Exception:  # noqa: BLE001 - Numba missing or unable to start (NUMBA_NUM_THREADS=0): plain
    def njit(fn=None, **_):   # functions, so the tables' codes and the xp path still import
        return fn if fn is not None else (lambda f: f)
    types = overload = None


def _col(x, c):
    """``x[c]`` for an array of per-column values, ``x`` for one value for all (compiled only)."""
    return x[c] if hasattr(x, "__getitem__") else x


if overload is not None:
    @overload(_col)
    def _col_impl(x, c):
        if isinstance(x, types.Array):
            return lambda x, c: x[c]
        return lambda x, c: x


@njit
def sigmoid(z, one):
    """Logistic sigmoid, the reference's ``0.5 * tanh(0.5 z) + 0.5``; ``one`` typed like z.

    Evaluated through the same identity written with one exponential of a non-positive
    argument: with ``e = exp(-|z|)`` (``e <= 1``, never overflows),
    ``0.5 tanh(0.5 |z|) + 0.5 == 1 / (1 + e)`` and, for negative z, ``e / (1 + e)``.
    Why not ``math.tanh``: glibc's scalar tanhf costs about 18 ns per element on the dev
    CPU against 3.5 ns for expf (measured), and the forward pass calls this for every
    activation. Agrees with NumPy's tanh form to 2 eps absolute (and is more accurate
    in relative terms for very negative z, where the tanh form cancels). NaN stays NaN.
    """
    e = math.exp(-abs(z))
    s = one / (one + e)
    return s if z >= 0 else e * s


@njit
def sigmoid_prime_from_a(a, one):
    """Sigmoid derivative from its output: ``a * (1 - a)`` (``one`` typed like a)."""
    return a * (one - a)


@njit
def backward_delta(g, a, one):
    """One element of the fused backprop step: ``g * (a * (1 - a))`` (reference order)."""
    return g * (a * (one - a))


@njit
def quadratic_delta(a, t, one):
    """Output delta of the quadratic cost on a sigmoid layer: ``(a - t) * a * (1 - a)``.

    Evaluated left to right as in the reference: ``((a - t) * a) * (1 - a)``.
    """
    return (a - t) * a * (one - a)


@njit
def cross_entropy_delta(a, t):
    """Output delta of the cross-entropy cost on a softmax (or sigmoid) layer: ``a - t``."""
    return a - t


@njit
def sgd_step(p, g, scale, decay):
    """One parameter of the fused SGD step: ``decay * p - scale * g``.

    With ``decay == 1`` this is bitwise ``p - scale * g`` (multiplying by one is exact).
    """
    return decay * p - scale * g


# --- the activation and optimizer tables' scalar maths ----------------------------------
# fastnet/activations.py and fastnet/optim.py are the tables (names, defaults, the plain-xp
# forms); each row names one of these codes. Every compiled path (the @njit step kernels,
# the compiled epoch loop, the CUDA twins) calls `act`, `act_grad` and `opt_step` with the
# code of a layer or of the fit, a value that is constant over the loop it sits in, so
# the branch is taken once per layer and not per element (LLVM unswitches the loop).
# Adding an activation or an optimizer: a row in its table and a branch here.

#: Activation codes (fastnet/activations.py). SOFTMAX is an output layer only.
SIGMOID = 0
TANH = 1
RELU = 2
IDENTITY = 3
LEAKY_RELU = 4
SOFTMAX = -1
#: Every hidden-layer activation code the kernels know.
HIDDEN_CODES = (SIGMOID, TANH, RELU, IDENTITY, LEAKY_RELU)
#: leaky_relu's slope for z < 0 (PyTorch's and Keras's default).
LEAKY_SLOPE = 0.01


@njit
def _leaky_slope(one):
    """LEAKY_SLOPE in one's dtype: 1 / 100, both exact, so the division rounds once to the
    float nearest 0.01 (as NumPy's cast of 0.01 does); a float64 literal next to a float32
    value would promote the expression to float64."""
    two = one + one
    ten = two * two * two + two
    return one / (ten * ten)

#: Optimizer codes (fastnet/optim.py).
OPT_SGD = 0
OPT_MOMENTUM = 1
OPT_NESTEROV = 2
OPT_ADAM = 3
OPT_RMSPROP = 4
#: Every optimizer code the kernels know.
OPT_CODES = (OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM, OPT_RMSPROP)


@njit
def act(z, code, one):
    """The activation ``code`` of one pre-activation ``z`` (``one`` typed like z).
    Sigmoid has a faster float32 twin in kernels/cpu.py, taken before this is called."""
    zero = one - one
    if code == SIGMOID:
        return sigmoid(z, one)
    if code == TANH:
        return math.tanh(z)
    if code == RELU:
        return zero if z < zero else z          # NaN stays NaN
    if code == LEAKY_RELU:
        return z * _leaky_slope(one) if z < zero else z
    return z                                    # IDENTITY


@njit
def act_grad(g, a, code, one):
    """``g * f'(z)`` from the layer's output ``a = f(z)``: the backward Hadamard step of
    activation ``code`` (every activation here has its derivative as a function of a)."""
    zero = one - one
    if code == SIGMOID:
        return g * (a * (one - a))
    if code == TANH:
        return g * (one - a * a)
    if code == RELU:
        return g * (one if a > zero else zero)
    if code == LEAKY_RELU:                      # a > 0 exactly where z > 0
        return g * (one if a > zero else _leaky_slope(one))
    return g                                    # IDENTITY


@njit
def opt_factors(code, h0, h1, t):
    """Per-step factors of optimizer ``code`` at step ``t`` (1, 2, ...), float64: Adam's
    bias corrections ``1 - beta1**t`` and ``1 / sqrt(1 - beta2**t)`` (the reciprocal, so
    the rule multiplies: one division per parameter, not two); ``(1, 1)`` for the rest."""
    if code == OPT_ADAM:
        return 1.0 - h0 ** t, 1.0 / math.sqrt(1.0 - h1 ** t)
    return 1.0, 1.0


@njit
def opt_step(p, g, s1, s2, code, lr, h0, h1, h2, f0, f1):
    """One parameter of one optimizer step: ``(p, s1, s2)`` after it, PyTorch's rules.

    g: the mean gradient (plus ``l2 * p`` for a weight); s1, s2: the parameter's state
    (velocity; Adam's first and second moments); lr: eta; h0..h2: the optimizer's
    hyperparameters (momentum; beta1, beta2, eps); f0, f1: :func:`opt_factors` of
    this step. Everything in p's dtype."""
    one = f0 / f0                                       # 1 in p's dtype (f0 > 0 always)
    if code == OPT_MOMENTUM:
        s1 = h0 * s1 + g
        return p - lr * s1, s1, s2
    if code == OPT_NESTEROV:
        s1 = h0 * s1 + g
        return p - lr * (g + h0 * s1), s1, s2
    if code == OPT_ADAM:
        s1 = s1 + (one - h0) * (g - s1)                 # torch's lerp_(grad, 1 - beta1)
        s2 = s2 * h1 + (one - h1) * (g * g)
        denom = math.sqrt(s2) * f1 + h2                # sqrt(v) / sqrt(1 - beta2^t) + eps
        return p - (lr / f0) * (s1 / denom), s1, s2
    if code == OPT_RMSPROP:                             # h0: alpha, h1: eps
        s2 = s2 * h0 + (one - h0) * (g * g)
        return p - lr * (g / (math.sqrt(s2) + h1)), s1, s2
    return p - lr * g, s1, s2                           # OPT_SGD


def opt_state_used(code):
    """Which of the two state buffers optimizer ``code`` reads and writes: the array loops
    below skip the other's store."""
    return (code in (OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM), code in (OPT_ADAM, OPT_RMSPROP))


_BLOCK_LOOP = """
    if code == {code}:
        for r in range(rows):
            k0 = off + r * ld     # row slices: indices LLVM knows are in range (vectorizes)
            Pr, Gr, Ar, Br = P[k0:k0 + cols], G[k0:k0 + cols], S1[k0:k0 + cols], S2[k0:k0 + cols]
            for c in range(cols):
                p = Pr[c]
                q, a, b = opt_step(p, sc * Gr[c] + _col(l2c, c) * p, Ar[c], Br[c], {code}, _col(lrc, c),
                                   h0, h1, h2, f0, f1)
                Pr[c] = q
                if {use1}:
                    Ar[c] = a if abs(a) >= tiny else zero
                if {use2}:
                    Br[c] = b if abs(b) >= tiny else zero
        return
"""


def _block_source(codes) -> str:
    """The source of :func:`opt_block`: one loop per code, the code a literal in each, so
    LLVM folds :func:`opt_step`'s branches and vectorizes one rule per loop, all in one
    compiled function (a function per rule cost Numba ~0.5 s of compile time each)."""
    head = ("def opt_block(P, G, S1, S2, off, rows, cols, ld, code, lrc, l2c, sc, h0, h1, h2, f0, f1, tiny):\n"
            "    zero = tiny - tiny\n")
    body = "".join(_BLOCK_LOOP.format(code=c, use1=opt_state_used(c)[0], use2=opt_state_used(c)[1])
                   for c in codes)
    return head + body


def _make_block(codes):
    ns = {"opt_step": opt_step, "_col": _col}
    exec(compile(_block_source(codes), "<fastnet.kernels._math.opt_block>", "exec"), ns)
    return njit(error_model="numpy")(ns["opt_block"])


#: ``opt_block(P, G, S1, S2, off, rows, cols, ld, code, lrc, l2c, sc, h0, h1, h2, f0, f1, tiny)``:
#: one optimizer step over a (rows, cols) block of flat arrays (CPU only): element
#: ``k = off + r * ld + c``, gradient ``sc * G[k] + l2c[c] * P[k]``, learning rate ``lrc[c]``
#: (columns may belong to different nets; lrc and l2c may also be one value for all),
#: state S1, S2; state below ``tiny`` (the dtype's smallest normal number) is flushed to 0,
#: as subnormals cost some CPUs a hundred times an ordinary operation (the rule changes by
#: less than 1e-38). Every scalar in P's dtype. One vectorized loop per code of
#: :data:`OPT_CODES`, made from :func:`opt_step` (an unknown code does nothing).
opt_block = _make_block(OPT_CODES) if overload is not None else None
