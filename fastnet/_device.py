"""What :class:`fastnet.Network` and :class:`fastnet.NetworkStack` share before training:
the starting parameters a seed draws, and input checking and conversion (data to the
model's device and dtype, validated first)."""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from fastnet import _validate as V


def check_seed(seed, name: str = "seed") -> None:
    """Refuse a seed that is not an int >= 0 or None (``True`` included)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"{name} must be an int or None. Actual: {seed!r}")
    if seed is not None and not 0 <= seed < 2**63:
        raise ValueError(f"{name} must be an int in [0, 2**63) or None. Actual: {seed}")


#: The memory limit where the OS does not say how much it has (no ``os.sysconf``): 1 TiB.
FALLBACK_MEMORY_BYTES = 2**40


def host_memory_bytes() -> int:
    """This machine's physical memory in bytes (``SC_PHYS_PAGES * SC_PAGE_SIZE``), or
    :data:`FALLBACK_MEMORY_BYTES` where the OS does not say."""
    try:
        n = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY_BYTES
    return n if n > 0 else FALLBACK_MEMORY_BYTES


def check_param_memory(sizes: Sequence[int], dtype: str, k: int = 1, backend=None) -> None:
    """Refuse, before allocating anything, parameters that cannot fit in memory: a
    ``ValueError`` naming the parameter count, the bytes it needs and the limit.

    The parameters are drawn as float64 on the host, then copied in the model's
    ``dtype``, so the host needs ``count * (8 + itemsize)`` bytes at the peak; a device
    that knows its free memory (CuPy) must hold ``count * itemsize`` as well.

    >>> check_param_memory([10**7, 10**7], "float32")
    Traceback (most recent call last):
    ...
    ValueError: sizes [10000000, 10000000] make 100,000,010,000,000 parameters, which need 1,091.4 TiB (float64 while drawn, then float32) ...
    """
    count = k * sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    item = np.dtype(dtype).itemsize
    limits = [(count * (8 + item), host_memory_bytes(), "this machine's memory")]
    free = None if backend is None else backend.memory_free()
    if free is not None:
        limits.append((count * item, free, f"the free {backend.device} memory"))
    for need, limit, where in limits:
        if need > limit:
            what = f"{k} networks of sizes {list(sizes)}" if k > 1 else f"sizes {list(sizes)}"
            raise ValueError(
                f"{what} make {count:,} parameters, which need {_bytes(need)} (float64 while drawn, then "
                f"{dtype}) and {where} is {_bytes(limit)}; nothing was allocated. Fix: narrower or fewer layers"
                + (", or fewer networks" if k > 1 else ""))


def _bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} bytes"


def initial_params(sizes: Sequence[int], init: str, seed: int | None):
    """``(weights, biases, shuffle_rng)`` for a new network: float64 host arrays drawn from
    ``default_rng(seed)`` (biases first, then weights, ``N(0, 1)``; ``init="scaled"`` divides
    W by ``sqrt(n_in)``; ``"he"``: W ~ N(0, 2/n_in), ``"glorot"``: W ~ U(+-sqrt(6/(n_in+n_out))),
    both with zero biases), and the generator of its minibatch orders, seeded from the same
    stream. :class:`Network` and :class:`fastnet.NetworkStack` both start from here, so
    net ``i`` of a stack starts exactly as ``Network(sizes, seed=seeds[i])``."""
    rng = np.random.default_rng(seed)
    biases = [rng.standard_normal(n) for n in sizes[1:]]
    if init == "glorot":   # U(-r, r), r = sqrt(6 / (n_in + n_out)); biases zero (Keras, PyTorch-like)
        weights = [rng.uniform(-1.0, 1.0, (i, o)) * math.sqrt(6.0 / (i + o)) for i, o in zip(sizes[:-1], sizes[1:])]
        biases = [np.zeros(n) for n in sizes[1:]]
    else:
        weights = [rng.standard_normal((i, o)) for i, o in zip(sizes[:-1], sizes[1:])]
    if init == "scaled":
        weights = [w / math.sqrt(w.shape[0]) for w in weights]
    elif init == "he":     # N(0, 2 / n_in); biases zero
        weights = [w * math.sqrt(2.0 / w.shape[0]) for w in weights]
        biases = [np.zeros(n) for n in sizes[1:]]
    return weights, biases, np.random.default_rng(rng.integers(2**63))


class DeviceData:
    """Input checking and conversion shared by :class:`Network` and
    :class:`fastnet.NetworkStack`: needs ``backend``, ``sizes`` and ``dtype``."""

    @property
    def xp(self):
        """The array namespace the network lives in."""
        return self.backend.xp

    def _to_device(self, a):
        """Host (or same-device) array -> this network's device and dtype."""
        return self.backend.asarray(a, dtype=self.dtype)

    def _to_device_checked(self, a, n_features: int, name: str):
        """Real 2-D ``a`` checked by ``V.check_X`` (finiteness included, or left to this
        call) -> this network's device and dtype, refusing values the cast made infinite
        (float64 data beyond float32's range): finiteness is checked after the cast, in
        the dtype the network computes in."""
        if not (V._numeric_kind(a, name) == "f" and V.narrows(a, self.dtype)):
            return self._to_device(a)
        if self.backend.name == "numpy" and type(a) is np.ndarray:
            fused = V.cast_scan(a, self.dtype)   # one read: the cast and both checks
            if fused is not None:
                ad, finite, inside = fused
                if finite:
                    V.remember_inside(ad, inside)
                    return ad
                V.check_cast(a, ad, n_features, name)   # raises, naming the first bad row
        with np.errstate(over="ignore"):   # the overflow is reported below, as an error
            ad = self._to_device(a)
        V.check_cast(a, ad, n_features, name)
        return ad

    # --- input conversion ---------------------------------------------------------------

    def _check_same_device(self, a, name: str, *, allow_host: bool) -> None:
        if self.backend.owns(a):
            return
        if allow_host and isinstance(a, np.ndarray):
            return
        raise TypeError(
            f"Arrays from two different devices ({type(a).__module__}.{type(a).__name__} and this "
            f"network's {self.backend.name}) can not be combined; fix: pass host NumPy data to fit/"
            f"evaluate/predict, or move the array with network.backend.asarray(...)"
        )

    def _host_like(self, a):
        """Lists, and host containers that are not arrays (pandas, xarray): as NumPy arrays."""
        if not hasattr(a, "shape"):
            return np.asarray(a)
        if (not isinstance(a, np.ndarray) and not self.backend.owns(a) and not hasattr(a, "__dlpack_device__")
                and (hasattr(a, "to_numpy") or hasattr(a, "__array__"))):
            return np.asarray(a.to_numpy() if hasattr(a, "to_numpy") else a)
        return a

    def _prepare_X(self, X, name="X", *, allow_host=True):
        """Validate X and return it on the device in the network's dtype (uint8 / 255)."""
        X = self._host_like(X)
        self._check_same_device(X, name, allow_host=allow_host)
        kind = V.check_X(X, self.sizes[0], name, finite=not V.narrows(X, self.dtype))
        Xd = self._to_device_checked(X, self.sizes[0], name)
        if kind == "u" and str(X.dtype).endswith("uint8"):
            Xd *= 1.0 / 255.0  # a fresh float array here, never the caller's
        return Xd

    def _prepare_y(self, y, n, name="y", *, allow_host=True):
        """Class ids ``(n,)`` int64 on the device; for ``cost="mse"`` the float targets
        ``(n, n_out)`` (a 1-D y for one output)."""
        if getattr(self, "cost", None) == "mse":
            return self._prepare_regression(y, n, name, allow_host=allow_host)
        y = self._host_like(y)
        self._check_same_device(y, name, allow_host=allow_host)
        if V.is_one_hot(y):   # one-hot rows: their class ids
            y = self.backend.xp.argmax(y, axis=1) if self.backend.owns(y) else np.argmax(y, axis=1)
        V.check_y(y, n, self.sizes[-1], name)
        return self.backend.asarray(y, dtype=self.xp.int64)

    def _workspace_bytes(self, m: int) -> int:
        """Device bytes of a step's buffers for a batch of ``m`` rows (see _Workspace):
        the gathered batch and its labels, activations and deltas, gradients."""
        item = np.dtype(self.dtype).itemsize
        rows = m * (self.sizes[0] + 2 * sum(self.sizes[1:]))
        grads = sum(i * o + o for i, o in zip(self.sizes[:-1], self.sizes[1:]))
        return item * (rows + grads) + 8 * m

    def _check_fits(self, m: int, nets: int = 1) -> None:
        """Refuse, before allocating anything, a batch whose buffers (for ``nets``
        networks) the device cannot hold: a ``MemoryError`` naming the largest batch size
        that would fit. Only where the backend knows its free memory (CuPy)."""
        free = self.backend.memory_free()
        if free is None:
            return
        need = nets * self._workspace_bytes(m)
        if need <= free:
            return
        fixed = nets * self._workspace_bytes(0)
        per_row = nets * (self._workspace_bytes(1) - self._workspace_bytes(0))
        fits = max(0, (free - fixed) // per_row)
        fix = (f"use batch_size <= {fits:,}" if fits else
               "free device memory (other processes, or arrays this process still holds)")
        raise MemoryError(
            f"a batch of {m:,} needs {need / 2**20:,.1f} MiB of {self.backend.device} memory for its "
            f"buffers and {free / 2**20:,.1f} MiB are free; nothing was changed. Fix: {fix}")

    def _prepare_validation(self, validation_data):
        """``(X_val, y_val)`` on the device, or None."""
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        Xv = self._prepare_X(validation_data[0], "X_val")
        return Xv, self._prepare_y(validation_data[1], Xv.shape[0], "y_val")

    def _prepare_regression(self, y, n, name="y", *, allow_host=True):
        """Regression targets: a real ``(n, n_out)`` array (``(n,)`` when n_out is 1),
        finite, on the device in the network's dtype."""
        y = self._host_like(y)
        self._check_same_device(y, name, allow_host=allow_host)
        if len(y.shape) == 1 and self.sizes[-1] == 1:
            y = y.reshape(-1, 1) if hasattr(y, "reshape") else self.xp.reshape(y, (-1, 1))
        if len(y.shape) != 2:
            raise ValueError(f"{name} must be a float array (n, {self.sizes[-1]}) of regression targets "
                             f"(cost='mse'). Actual: shape {tuple(y.shape)}")
        if V._numeric_kind(y, name) not in "fiu":
            raise TypeError(f"{name} must hold real numbers (cost='mse'). Actual: dtype {y.dtype}")
        V.check_targets(y, n, self.sizes[-1], name)
        return self._to_device(y)

    def _prepare_target(self, Y, n, name="Y", *, allow_host=True):
        """Integer labels (n,) or a float target matrix (n, n_out)."""
        if not hasattr(Y, "shape"):
            Y = np.asarray(Y)
        if len(Y.shape) == 2 and V._numeric_kind(Y, name) == "f":
            self._check_same_device(Y, name, allow_host=allow_host)
            V.check_targets(Y, n, self.sizes[-1], name)
            return self._to_device_checked(Y, self.sizes[-1], name)
        return self._prepare_y(Y, n, name, allow_host=allow_host)
