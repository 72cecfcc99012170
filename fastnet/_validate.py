"""Input checks at the public boundary: host side, before any upload or kernel launch.

Each error is one line: what was expected, what was received, and the fix.
``ValueError`` for bad values, ``TypeError`` for wrong types.
"""
from __future__ import annotations

import math
import numbers
import warnings
import weakref

import numpy as np

COSTS = ("quadratic", "cross_entropy", "mse")
INITS = ("nielsen", "scaled", "he", "glorot")
DTYPES = ("float32", "float64")


def check_choice(name: str, value, allowed) -> str:
    """``value`` must be a string in ``allowed``; returns it lower-cased."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {allowed}. Actual: {value!r} ({type(value).__name__})")
    v = value.strip().lower().replace("-", "_")
    if name == "cost" and v in ("crossentropy", "xent", "ce"):
        v = "cross_entropy"
    if v not in allowed:
        raise ValueError(f"{name} must be one of {allowed}. Actual: {value!r}")
    return v


def check_bool(name: str, value) -> bool:
    """``True`` or ``False`` (NumPy's bools too); a string like "no" is refused, not read as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False. Actual: {value!r} ({type(value).__name__})")
    return bool(value)


def check_dtype(dtype) -> str:
    """Accepts "float32"/"float64" or the NumPy dtypes; returns the name."""
    if dtype is None:   # np.dtype(None) is float64: a None is a mistake, not a choice
        raise ValueError(f"dtype must be one of {DTYPES}. Actual: None")
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype.strip().lower()
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}. Actual: {dtype!r}")
    return name


def check_sizes(sizes) -> list[int]:
    """Layer sizes: a sequence of at least two positive ints, e.g. ``[784, 30, 10]``."""
    if isinstance(sizes, (str, bytes, dict, set, frozenset)) or not hasattr(sizes, "__len__") or hasattr(sizes, "keys"):
        raise TypeError(f"sizes must be a list of layer widths like [784, 30, 10]. Actual: {sizes!r}")
    out = []
    for i, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"sizes[{i}] must be an int. Actual: {s!r} ({type(s).__name__})")
        if s < 1:
            raise ValueError(f"sizes[{i}] must be >= 1. Actual: {s}")
        out.append(int(s))
    if len(out) < 2:
        raise ValueError(
            f"sizes needs at least 2 layers (input and output), e.g. [784, 30, 10]. Actual: {list(sizes)!r}"
        )
    return out


def check_positive_int(name: str, value, *, upper: int | None = None, upper_name: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int. Actual: {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1. Actual: {value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be <= {upper_name} ({upper}). Actual: {value}")
    return int(value)


def check_real(name: str, value, *, positive: bool = False) -> float:
    """A finite real number, > 0 when ``positive`` else >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number. Actual: {value!r} ({type(value).__name__})")
    try:
        v = float(value)
    except OverflowError:   # an int beyond float64 (10**400): one line, not Python's OverflowError
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}. Actual: an int of "
                         f"about 10**{int(abs(int(value)).bit_length() * math.log10(2))}, beyond float64's "
                         f"largest (about 1.8e308)") from None
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}. Actual: {value!r}")
    return v


def check_representable(name: str, value: float, dtype: str) -> float:
    """``value`` (a checked finite float) must be finite in the model's ``dtype`` too:
    ``eta=1e39`` is a float64 number but ``inf`` in a float32 network."""
    top = float(np.finfo(dtype).max)
    if abs(value) > top:
        raise ValueError(f"{name} must be at most {top:.4g} (the largest {dtype}) for a {dtype} network. "
                         f"Actual: {value!r}; fix: a smaller {name}, or dtype='float64'")
    return value


def check_step(eta: float, lmbda: float, n: int, dtype: str, *, eta_name: str = "eta",
               lmbda_name: str = "lmbda", growing: bool = False) -> float:
    """The SGD step's numbers (``eta``, ``lmbda`` checked by :func:`check_real`, ``n``
    training samples) for a network of ``dtype``; returns the L2 decay factor
    ``1 - eta * lmbda / n`` that multiplies W every step.

    Refused up front, before any step: an ``eta`` that is not finite in ``dtype``, and a
    decay factor outside [-1, 1] (``eta * lmbda / n > 2``), which grows the weights by
    ``|decay|`` every step whatever the data: they overflow, and "lower eta" would be the
    wrong advice. ``growing=True`` (a :class:`fastnet.NetworkStack`, where a net that
    diverges is marked and the others go on) refuses only a factor beyond ``dtype``'s range.

    >>> check_step(3.0, 5.0, 50000, "float32")
    0.9997
    """
    check_representable(eta_name, eta, dtype)
    r = eta * lmbda / n
    top = float(np.finfo(dtype).max)
    if not abs(1.0 - r) <= (top if growing else 1.0):   # inf (1e300 * 1e300) included
        what = (f"is beyond {dtype}'s range (|x| <= {top:.4g})" if growing else
                f"would multiply the weights by {abs(1.0 - r):.4g} every step (it must lie in [-1, 1])")
        raise ValueError(
            f"{lmbda_name}={lmbda!r} is too large for {eta_name}={eta!r} and n={n} training samples: the L2 "
            f"decay factor 1 - eta*lmbda/n = {1.0 - r:.4g} {what}; fix: {lmbda_name} <= {2.0 * n / eta:.4g}")
    return 1.0 - r


def check_per_net(name: str, value) -> bool:
    """True when ``value`` is a sequence of per-network values (a list, tuple, array,
    range), False for a scalar; dicts and sets are refused (their order and keys mean
    nothing here: ``etas={1: 0.5, 2: 2.0}`` would train with the keys)."""
    from collections.abc import Mapping, Set

    if isinstance(value, (Mapping, Set)) or hasattr(value, "keys"):
        raise TypeError(f"{name} must be one value or a list of values (one per network), not a "
                        f"{type(value).__name__}. Actual: {value!r}")
    return not isinstance(value, (str, bytes)) and hasattr(value, "__len__")


def _numeric_kind(arr, name: str) -> str:
    kind = getattr(getattr(arr, "dtype", None), "kind", None)
    if kind is None:  # Array API namespaces other than NumPy/CuPy: ask by name
        dt = str(arr.dtype)
        kind = "f" if "float" in dt else "u" if "uint" in dt else "i" if "int" in dt else "b" if "bool" in dt else "?"
    if kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers. Actual dtype: {arr.dtype}")
    return kind


def check_X(X, n_features: int, name: str = "X", *, finite: bool = True):
    """X: 2-D (n_samples, n_features), real, finite, non-empty. Returns its dtype kind.

    Rule: uint8 images are scaled by 1/255 to [0, 1]; any other real dtype is used as is.
    ``finite=False`` leaves out the finiteness pass (the caller then checks every
    element before it changes anything, see ``Network.train_step``).
    """
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        raise TypeError(f"{name} must be an array of shape (n_samples, {n_features}). Actual: {type(X).__name__}")
    kind = _numeric_kind(X, name)
    if len(X.shape) != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, {n_features}). Actual: {len(X.shape)}-D shape {tuple(X.shape)}; "
            f"fix: X.reshape(len(X), -1)"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples); need at least 1 row of {n_features} features")
    if X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features per sample, the network's input layer expects {n_features}"
        )
    if kind == "f" and finite:
        if _all_finite_fast(X):  # NumPy: one read-only compiled pass at memory speed
            return kind
        xp = _xp(X)
        if bool(xp.all(xp.isfinite(X))):  # the common case: one pass, no per-row work
            return kind
        bad = ~xp.all(xp.isfinite(X), axis=1)
        nbad = int(xp.sum(xp.astype(bad, xp.int64)) if hasattr(xp, "astype") else bad.sum())
        if nbad:
            first = int(xp.argmax(xp.astype(bad, xp.int8)))
            raise ValueError(
                f"{name} must be finite: {nbad} row(s) hold NaN or inf, the first at index {first}; "
                "fix: drop or impute those rows"
            )
    return kind


def narrows(a, dtype: str) -> bool:
    """True when casting float array ``a`` to ``dtype`` can overflow (float64 data for a
    float32 network); True too when ``a``'s dtype cannot be read (then check)."""
    dt = getattr(a, "dtype", None)
    try:
        src = np.dtype(getattr(dt, "name", None) or str(dt).rsplit(".", 1)[-1])
    except TypeError:
        return True
    return src.kind == "f" and src.itemsize > np.dtype(dtype).itemsize


def check_cast(X, Xd, n_features: int, name: str = "X") -> None:
    """``Xd`` (``X`` cast to the network's narrower float dtype) must be finite: a value
    that is finite in float64 but beyond float32's range (1e39) becomes inf in the cast,
    and one training step would fill the weights with NaN. ``X`` went through
    :func:`check_X` with ``finite=False``: this one pass over ``Xd`` checks both (NaN and
    inf in ``X`` stay NaN and inf), and the error names which it was and the first row."""
    if _all_finite_fast(Xd):
        return
    xp = _xp(Xd)
    if bool(xp.all(xp.isfinite(Xd))):
        return
    check_X(X, n_features, name)   # NaN or inf in X itself: that message
    bad = ~xp.all(xp.isfinite(Xd), axis=1)
    nbad = int(xp.sum(xp.astype(bad, xp.int64)))
    first = int(xp.argmax(xp.astype(bad, xp.int8)))
    xpx = _xp(X)
    big = float(xpx.max(xpx.abs(X[first, ...])))
    dtype = str(getattr(Xd.dtype, "name", Xd.dtype)).rsplit(".", 1)[-1]
    top = float(np.finfo(dtype).max)
    fix = "scale the features (e.g. into [0, 1])" if name.startswith("X") else "smaller values"
    raise ValueError(
        f"{name} holds values beyond {dtype}'s range (|x| <= {top:.4g}), the network's dtype: {nbad} row(s), "
        f"the first at index {first} (|x| up to {big:.4g}); fix: {fix}, or use dtype='float64'")


def check_y(y, n_samples: int, n_out: int, name: str = "y"):
    """y: 1-D integer class ids in [0, n_out), one per sample."""
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{name} must be an integer array of shape ({n_samples},). Actual: {type(y).__name__}")
    kind = _numeric_kind(y, name)
    if kind not in "iu":
        raise TypeError(
            f"{name} must hold integer class ids in [0, {n_out}). Actual dtype: {y.dtype}; "
            f"fix: y.astype(int) if the values are whole numbers"
        )
    if len(y.shape) != 1:
        raise ValueError(f"{name} must be 1-D ({n_samples},) class ids or one-hot rows ({n_samples}, classes). "
                         f"Actual: shape {tuple(y.shape)}")
    if y.shape[0] != n_samples:
        raise ValueError(f"X and {name} lengths differ: X has {n_samples} samples, {name} has {y.shape[0]}")
    xp = _xp(y)
    bad = (y < 0) | (y >= n_out)
    nbad = int(xp.sum(xp.astype(bad, xp.int64)))
    if nbad:
        first = int(xp.argmax(xp.astype(bad, xp.int8)))
        raise ValueError(
            f"{name} must be class ids in [0, {n_out}): {nbad} label(s) out of range, the first "
            f"{name}[{first}] = {int(y[first])}; fix: the output layer needs one unit per class"
        )


class InputScaleWarning(UserWarning):
    """Training data that a sigmoid net is unlikely to learn from as given (pixels in 0-255
    as floats, say); ``warnings.simplefilter("ignore", fastnet.InputScaleWarning)`` hushes it.

    >>> import warnings, numpy as np, fastnet
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     _ = fastnet.Network([2, 2], device="cpu", seed=0).fit(np.array([[0.0, 255.0]]), np.array([1]), epochs=1,
    ...                                                             batch_size=1)
    >>> w[0].category.__name__, "divide by 255" in str(w[0].message)
    ('InputScaleWarning', True)
    """


def _inside_unit_fast(Xd) -> bool:
    """True when NumPy ``Xd`` is known to lie in [0, 1.5] by one fast pass (the usual case:
    no min and max needed), or by the pass that just checked it (:func:`remember_inside`);
    False when it does not or cannot be told that way."""
    known = _recall_inside(Xd)
    if known is not None:
        return known
    try:
        from fastnet.kernels.cpu import outside_unit_cpu

        return outside_unit_cpu(Xd) is False
    except Exception:  # noqa: BLE001 - no Numba, or a damaged kernel cache: the min and max
        return False


def warn_input_scale(X, Xd, name: str = "X") -> None:
    """One :class:`InputScaleWarning` when float input ``X`` (``Xd`` on the device) reaches
    above 1.5 or below 0: sigmoid units saturate, and training stalls near chance."""
    if getattr(getattr(X, "dtype", None), "kind", "f") != "f":
        return   # integer data: uint8 is scaled by 1/255 already; other ints are the user's choice
    xp = _xp(Xd)
    if _inside_unit_fast(Xd):
        return
    lo, hi = float(xp.min(Xd)), float(xp.max(Xd))
    if hi > 1.5:
        fix = ("divide by 255 (X / 255.0), or pass the uint8 array, which fastnet scales"
               if hi <= 255.5 and lo >= 0 else "scale the features into [0, 1] (e.g. MinMaxScaler)")
    elif lo < 0:
        fix = "scale the features into [0, 1] (e.g. MinMaxScaler)"
    else:
        return
    warnings.warn(f"{name} holds values in [{lo:g}, {hi:g}]; sigmoid nets train best on inputs in [0, 1] "
                  f"and may stay near chance otherwise; fix: {fix}", InputScaleWarning, stacklevel=3)


def warn_output_width(yd, n_out: int, name: str = "y") -> None:
    """A ``UserWarning`` when the output layer has more units than the labels have classes
    (labels beyond it are an error in :func:`check_y`)."""
    xp = _xp(yd)
    n_classes = int(xp.max(yd)) + 1
    if n_classes < n_out:
        warnings.warn(f"the output layer has {n_out} units but {name} holds classes 0..{n_classes - 1} "
                      f"({n_classes} classes); fix: make the last layer size {n_classes} "
                      f"(e.g. sizes [..., {n_classes}]) unless some classes are absent from this data",
                      UserWarning, stacklevel=3)


def is_one_hot(y) -> bool:
    """True for a 2-D array whose every row holds a single 1 and zeros elsewhere.

    >>> import numpy as np
    >>> is_one_hot(np.eye(3)), is_one_hot(np.ones((2, 2)))
    (True, False)
    """
    if len(getattr(y, "shape", ())) != 2 or y.shape[0] == 0:
        return False
    xp = _xp(y)
    ones, zeros = y == 1, y == 0
    return bool(xp.all(xp.sum(xp.astype(ones, xp.int64), axis=1) == 1) and xp.all(ones | zeros))


def check_targets(Y, n_samples: int, n_out: int, name: str = "Y"):
    """Y: 2-D float target matrix (n_samples, n_out), finite."""
    if len(Y.shape) != 2 or tuple(Y.shape) != (n_samples, n_out):
        raise ValueError(f"{name} must have shape ({n_samples}, {n_out}). Actual: {tuple(Y.shape)}")
    check_X(Y, n_out, name)


# The answer of the last fused pass over an array (finite and inside [0, 1.5] together,
# :func:`_all_finite_fast` or the cast in ``Network._to_device_checked``) to the input-scale
# question, for the same array object, read once: fit asks it a few lines later, so X
# is read once instead of twice. Held by a weak reference: it keeps no array alive.
_last_scan = None


def remember_inside(X, inside: bool) -> None:
    """Record that ``X`` (as it is now) lies in [0, 1.5] or not, for the next
    :func:`warn_input_scale` on that same array object."""
    global _last_scan
    _last_scan = (weakref.ref(X), bool(inside))


def _recall_inside(X):
    """The remembered answer for ``X`` (then forgotten), or None."""
    global _last_scan
    last, _last_scan = _last_scan, None
    if last is not None and last[0]() is X:
        return last[1]
    return None


def _all_finite_fast(X) -> bool:
    """True when one compiled read says every element of a C-contiguous float32/float64
    NumPy array is finite; False when it finds one that is not, or cannot tell (then the
    caller's ``isfinite`` pass decides and words the error). The same read answers the
    input-scale question, which is remembered for ``X`` (:func:`remember_inside`)."""
    if type(X) is not np.ndarray or X.dtype.kind != "f" or not X.flags.c_contiguous:
        return False
    try:
        from fastnet.kernels.cpu import scan_cpu
    except ImportError:  # pragma: no cover - Numba missing: the isfinite pass
        return False
    try:
        r = scan_cpu(X)
    except Exception:  # noqa: BLE001 - e.g. a damaged kernel cache: the isfinite pass decides
        return False
    if r is None:
        return False
    finite, inside = r
    if finite:
        remember_inside(X, inside)
    return finite


def cast_scan(X, dtype):
    """``(X cast to dtype, finite, inside)`` in one compiled read of a C-contiguous NumPy
    float array (see :func:`fastnet.kernels.cpu.cast_scan_cpu`); None when that cannot
    be done (no Numba, another array type): then cast and check the usual way."""
    try:
        from fastnet.kernels.cpu import cast_scan_cpu
    except ImportError:  # pragma: no cover - Numba missing
        return None
    try:
        return cast_scan_cpu(X, dtype)
    except Exception:  # noqa: BLE001 - e.g. a damaged kernel cache: the caller's way
        return None


def _xp(a):
    from array_api_compat import array_namespace

    return array_namespace(a)
