"""The feedforward network: parameters, forward pass, backprop and minibatch SGD.

Layout (DESIGN.md): batches are rows, ``X`` is ``(n_samples, n_features)``, ``W`` is
``(n_in, n_out)``, ``z = a_prev @ W + b``. Hidden layers are sigmoid; the output layer is
sigmoid for the quadratic cost and softmax for the cross-entropy cost.

The backward pass for one batch of ``m`` samples (seed 002's equations, in matrix form)::

    delta_L = (a_L - y) * a_L * (1 - a_L)        # quadratic cost, sigmoid output
    delta_L = a_L - y                            # cross-entropy cost, softmax output
    grad_W_l = a_{l-1}.T @ delta_l / m           # GEMM
    grad_b_l = sum(delta_l, axis=0) / m          # reduction kernel
    delta_{l-1} = (delta_l @ W_l.T) * a_{l-1} * (1 - a_{l-1})   # GEMM + fused kernel

and the SGD step with L2 decay (Nielsen, chapter 3)::

    W_l <- (1 - eta * lmbda / n) * W_l - (eta / m) * (a_{l-1}.T @ delta_l)
    b_l <- b_l - (eta / m) * sum(delta_l, axis=0)

Every element-wise and reduction step goes through :mod:`fastnet.ops`, which picks the
Numba twin from the array type; the matrix products are BLAS / cuBLAS GEMMs.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from array_api_compat import array_namespace

from fastnet import _validate as V
from fastnet import ops, progress
from fastnet.backend import Backend, get_backend
from fastnet.history import History

#: Train NumPy networks on the Numba kernel path a chunk of steps at a time inside one
#: compiled function (the one-net case of :class:`fastnet.kernels.epoch_cpu.StackRunner`)
#: instead of step by step from Python. Same arithmetic and order; the matrix products
#: are FMA loops instead of BLAS, so float64 weights agree with the step path to rounding
#: (1e-10). Tests set it to False to compare the two.
EPOCH_FASTPATH = True

#: Steps on at least this many rows of a NumPy network whose layers are at most
#: ``LARGE_STEP_MAX_WIDTH`` wide (and integer labels) run in
#: :func:`fastnet.kernels.batch_cpu.large_step` (FMA loops, the rows split over the cores)
#: instead of OpenBLAS, which is poor at N = 30 products: [784, 30, 10] at 60,000 rows
#: 22-28 ms per step against 51-63 ms (2-core AVX-512 dev machine); at widths of 500,
#: OpenBLAS is 1.3x faster, so they keep it. ``LARGE_STEP_MIN_ROWS = None`` switches it off.
LARGE_STEP_MIN_ROWS = 5000
LARGE_STEP_MAX_WIDTH = 100

#: Steps of a NumPy network with wide hidden layers (every one at least
#: ``SPLIT_STEP_MIN_WIDTH``) whose forward pass costs at least ``SPLIT_STEP_MIN_MACS``
#: multiply-adds (rows x sum of n_l * n_{l+1}) run on several threads, each owning a run
#: of the rows and calling single-threaded OpenBLAS
#: (:class:`fastnet.kernels.split_cpu.SplitStep`), instead of one thread calling
#: multi-threaded OpenBLAS: the element-wise work runs on every core and no BLAS thread
#: spins beside it. [784, 500, 500, 10] float32 at batch 1000, 2-core dev machine: ~5 %
#: faster when the machine is otherwise idle, ~20 % with one other busy process. Narrow
#: layers (<= 200) gain nothing: OpenBLAS splits their products better than halving the
#: rows does. ``SPLIT_STEP_MIN_MACS = None`` switches it off; it is also off where
#: fastnet cannot set OpenBLAS's thread count (another BLAS, not Linux) or has one CPU.
SPLIT_STEP_MIN_MACS = 300_000_000
SPLIT_STEP_MIN_WIDTH = 256

#: From this many rows up, the step path updates NumPy biases through a row-streamed column sum.
_ROWWISE_BIAS_MIN = 256

#: Large host batches run in row chunks of about this many input elements (4 MB of
#: float32 X: in cache between the forward and the weight-gradient GEMM), from
#: ``_CHUNK_MIN_ROWS`` rows up. See ``Network._chunk_rows``.
_CHUNK_ELEMS = 1 << 20
_CHUNK_MIN_ROWS = 16384


class DivergenceError(FloatingPointError):
    """Training produced a NaN or infinite loss; the last finite weights were restored.

    >>> import numpy as np, fastnet
    >>> net = fastnet.Network([2, 2], cost="cross_entropy", device="cpu", seed=0)
    >>> try:
    ...     net.fit(np.eye(2), np.array([0, 1]), epochs=1, batch_size=1, eta=1e30)
    ... except fastnet.DivergenceError as e:
    ...     print(str(e)[:33])
    training diverged in epoch 1: los
    """


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``: the current step finished and, with a checkpoint, was saved.

    A ``KeyboardInterrupt``, so code that already handles Ctrl-C keeps working:

    >>> import fastnet
    >>> issubclass(fastnet.TrainingInterrupted, KeyboardInterrupt)
    True
    """


class _SigintFlag:
    """During ``fit``: the first SIGINT sets ``flag`` (the loop stops after the current
    step); a second one interrupts at once. Only in the main thread."""

    def __init__(self):
        self.flag = False
        self._old = None

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class _Workspace:
    """Buffers for one batch size, made once and reused by every step (no per-step allocation)."""

    def __init__(self, xp, sizes: Sequence[int], m: int, dtype, *, grads: bool = True,
                 chunk: int | None = None):
        self.m = m
        #: Rows of the activation / delta buffers: ``m``, or fewer when the step runs in
        #: row chunks (see ``Network._step_chunked``).
        self.chunk = m if chunk is None else min(m, chunk)
        self._xp, self._n_in, self._dtype = xp, sizes[0], dtype
        self._X = self._y = None   # the gather buffers: made on first use (see X, y)
        self.a = [xp.empty((self.chunk, n), dtype=dtype) for n in sizes[1:]]
        self.d = [xp.empty((self.chunk, n), dtype=dtype) for n in sizes[1:]]
        self.gW = [xp.empty((i, o), dtype=dtype) for i, o in zip(sizes[:-1], sizes[1:])] if grads else []
        self.gb = [xp.empty((o,), dtype=dtype) for o in sizes[1:]] if grads else []
        # per-chunk weight gradients, added into gW (only when the step is chunked)
        self.gW_part = ([xp.empty_like(g) for g in self.gW] if grads and self.chunk < m else [])

    @property
    def X(self):
        """The ``(m, n_in)`` batch buffer, allocated on first use: a full-batch fit reads
        the data in place and never needs it (at batch = n it would be a second copy of X)."""
        if self._X is None:
            self._X = self._xp.empty((self.m, self._n_in), dtype=self._dtype)
        return self._X

    @property
    def y(self):
        if self._y is None:
            self._y = self._xp.empty((self.m,), dtype=self._xp.int64)
        return self._y

    def rows(self, bufs: list, m: int) -> list:
        """The first ``m`` rows of each buffer (views; the buffers themselves when full)."""
        return bufs if m == self.m else [b[:m, ...] for b in bufs]


def check_seed(seed) -> None:
    """Refuse a seed that is not an int or None (``True`` included)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int or None. Actual: {seed!r}")


def initial_params(sizes: Sequence[int], init: str, seed: int | None):
    """``(weights, biases, shuffle_rng)`` for a new network: float64 host arrays drawn from
    ``default_rng(seed)`` (biases first, then weights, ``N(0, 1)``; ``init="scaled"`` divides
    W by ``sqrt(n_in)``), and the generator of its minibatch orders, seeded from the same
    stream. :class:`Network` and :class:`fastnet.NetworkStack` both start from here, so
    net ``i`` of a stack starts exactly as ``Network(sizes, seed=seeds[i])``."""
    rng = np.random.default_rng(seed)
    biases = [rng.standard_normal(n) for n in sizes[1:]]
    weights = [rng.standard_normal((i, o)) for i, o in zip(sizes[:-1], sizes[1:])]
    if init == "scaled":
        weights = [w / math.sqrt(w.shape[0]) for w in weights]
    return weights, biases, np.random.default_rng(rng.integers(2**63))


class _DeviceData:
    """Input checking and conversion shared by :class:`Network` and
    :class:`fastnet.NetworkStack`: needs ``backend``, ``sizes`` and ``dtype``."""

    @property
    def xp(self):
        """The array namespace the network lives in."""
        return self.backend.xp

    def _to_device(self, a):
        """Host (or same-device) array -> this network's device and dtype."""
        return self.backend.asarray(a, dtype=self.dtype)

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

    def _prepare_X(self, X, name="X", *, allow_host=True):
        """Validate X and return it on the device in the network's dtype (uint8 / 255)."""
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        self._check_same_device(X, name, allow_host=allow_host)
        kind = V.check_X(X, self.sizes[0], name)
        Xd = self._to_device(X)
        if kind == "u" and str(X.dtype).endswith("uint8"):
            Xd *= 1.0 / 255.0  # a fresh float array here, never the caller's
        return Xd

    def _prepare_y(self, y, n, name="y", *, allow_host=True):
        if not hasattr(y, "shape"):
            y = np.asarray(y)
        self._check_same_device(y, name, allow_host=allow_host)
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

    def _large_batch_ok(self, X, y) -> bool:
        """Whether ``(X, y)`` goes to :mod:`fastnet.kernels.batch_cpu` (the threaded FMA
        loops) rather than BLAS: see :data:`LARGE_STEP_MIN_ROWS`."""
        if (LARGE_STEP_MIN_ROWS is None or X.shape[0] < LARGE_STEP_MIN_ROWS
                or max(self.sizes[1:]) > LARGE_STEP_MAX_WIDTH
                or not self._threaded_cpu_ok(X, y, targets_ok=False)):
            return False
        try:
            from fastnet.kernels import batch_cpu  # noqa: F401
        except ImportError:  # pragma: no cover - numba is there: the njit path is
            return False
        return True

    def _threaded_cpu_ok(self, X, y, targets_ok: bool) -> bool:
        """Whether X, y and the parameters are what the threaded CPU steps take: C-contiguous
        NumPy arrays, X in the network's dtype on the njit kernel path, int64 labels (or,
        with ``targets_ok``, a target matrix in X's dtype)."""
        return (type(X) is np.ndarray and type(y) is np.ndarray
                and X.flags.c_contiguous and y.flags.c_contiguous and X.dtype == np.dtype(self.dtype)
                and (y.dtype == np.int64 and y.ndim == 1 or targets_ok and y.dtype == X.dtype and y.ndim == 2)
                and ops.kernel_path(X) == "njit"
                and all(type(p) is np.ndarray and p.flags.c_contiguous for p in self._W + self._b))

    def _prepare_validation(self, validation_data):
        """``(X_val, y_val)`` on the device, or None."""
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        Xv = self._prepare_X(validation_data[0], "X_val")
        return Xv, self._prepare_y(validation_data[1], Xv.shape[0], "y_val")

    def _prepare_target(self, Y, n, name="Y", *, allow_host=True):
        """Integer labels (n,) or a float target matrix (n, n_out)."""
        if not hasattr(Y, "shape"):
            Y = np.asarray(Y)
        if len(Y.shape) == 2 and V._numeric_kind(Y, name) == "f":
            self._check_same_device(Y, name, allow_host=allow_host)
            V.check_targets(Y, n, self.sizes[-1], name)
            return self._to_device(Y)
        return self._prepare_y(Y, n, name, allow_host=allow_host)


class Network(_DeviceData):
    """A fully connected feedforward network trained by minibatch SGD.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first, e.g. ``[784, 30, 10]``.
    cost : {"quadratic", "cross_entropy"}
        Quadratic cost with a sigmoid output layer, or cross-entropy with softmax.
    init : {"nielsen", "scaled"}
        ``W ~ N(0, 1)`` (Nielsen's chapter 1) or ``W ~ N(0, 1/n_in)`` (chapter 3);
        biases ``~ N(0, 1)`` in both.
    dtype : {"float32", "float64"}
    device : "auto", "cpu", "cuda" or an Array API namespace module
        See :func:`fastnet.backend.get_backend`.
    seed : int or None
        Seeds the initial parameters and the shuffle order; float64 runs with the same
        seed give the same result every time.

    Attributes
    ----------
    weights : list of arrays, ``weights[l]`` shape ``(sizes[l], sizes[l+1])``
    biases : list of arrays, ``biases[l]`` shape ``(sizes[l+1],)``

    Example
    -------
    >>> import numpy as np, fastnet
    >>> net = fastnet.Network([4, 8, 2], cost="cross_entropy", device="cpu", seed=0)
    >>> X = np.eye(4); y = np.array([0, 1, 0, 1])
    >>> hist = net.fit(X, y, epochs=200, batch_size=2, eta=1.0)
    >>> net.predict(X).tolist()
    [0, 1, 0, 1]
    """

    def __init__(self, sizes, *, cost="quadratic", init="nielsen", dtype="float32",
                 device="auto", seed=None):
        self.sizes = V.check_sizes(sizes)
        self.cost = V.check_choice("cost", cost, V.COSTS)
        self.init = V.check_choice("init", init, V.INITS)
        self.dtype = V.check_dtype(dtype)
        self.backend: Backend = get_backend(device)
        check_seed(seed)
        self.seed = None if seed is None else int(seed)
        weights, biases, self._shuffle_rng = initial_params(self.sizes, self.init, self.seed)
        self._W = [self._to_device(w) for w in weights]
        self._b = [self._to_device(b) for b in biases]
        self._ws: dict[int, _Workspace] = {}

    # --- construction helpers -----------------------------------------------------------

    @classmethod
    def from_params(cls, weights, biases, **kw) -> "Network":
        """A network with the given parameters; ``sizes`` come from the weight shapes.

        weights: list of ``(n_in, n_out)`` arrays; biases: list of ``(n_out,)`` arrays.
        Other keywords as in :class:`Network` (``seed`` only seeds the shuffle order).

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network.from_params([np.array([[1.58]])], [np.array([-0.14])],
        ...                                   dtype="float64", device="cpu")
        >>> round(float(net.feedforward(np.array([[0.8]]))[0, 0]), 12)
        0.754729921358
        """
        weights = [np.asarray(w) if not hasattr(w, "shape") else w for w in weights]
        biases = [np.asarray(b) if not hasattr(b, "shape") else b for b in biases]
        if len(weights) != len(biases) or not weights:
            raise ValueError(f"need one bias vector per weight matrix (at least one). "
                             f"Actual: {len(weights)} weights, {len(biases)} biases")
        sizes = [int(weights[0].shape[0])] + [int(w.shape[-1]) for w in weights]
        net = cls(sizes, **kw)
        net.weights = weights
        net.biases = biases
        return net

    # --- parameters ---------------------------------------------------------------------

    @property
    def weights(self) -> list:
        """``weights[l]``: ``(sizes[l], sizes[l+1])`` arrays on the network's device."""
        return list(self._W)

    @weights.setter
    def weights(self, values) -> None:
        self._W = self._check_params("weights", values,
                                     [(i, o) for i, o in zip(self.sizes[:-1], self.sizes[1:])])

    @property
    def biases(self) -> list:
        """``biases[l]``: ``(sizes[l+1],)`` arrays on the network's device."""
        return list(self._b)

    @biases.setter
    def biases(self, values) -> None:
        self._b = self._check_params("biases", values, [(o,) for o in self.sizes[1:]])

    def _check_params(self, name, values, shapes):
        values = list(values)
        if len(values) != len(shapes):
            raise ValueError(f"{name}: expected {len(shapes)} arrays. Actual: {len(values)}")
        out = []
        for l, (v, shape) in enumerate(zip(values, shapes)):
            v = np.asarray(v) if not hasattr(v, "shape") else v
            if tuple(v.shape) != shape:
                raise ValueError(f"{name}[{l}] must have shape {shape}. Actual: {tuple(v.shape)}")
            self._check_same_device(v, f"{name}[{l}]", allow_host=True)
            V.check_X(v.reshape(1, -1) if hasattr(v, "reshape") else v, int(np.prod(shape)), f"{name}[{l}]")
            out.append(self.backend.copy(self._to_device(v)))  # never alias the caller's
        return out

    @property
    def n_layers(self) -> int:
        """Number of weight layers (``len(sizes) - 1``)."""
        return len(self.sizes) - 1

    def __repr__(self) -> str:
        return (f"Network({self.sizes}, cost={self.cost!r}, init={self.init!r}, dtype={self.dtype!r}, "
                f"device={self.backend.device!r}, backend={self.backend.name!r})")

    # --- forward ------------------------------------------------------------------------

    def _activate(self, l: int, Z):
        if l == self.n_layers - 1 and self.cost == "cross_entropy":
            return ops.bias_softmax(Z, self._b[l])
        return ops.bias_sigmoid(Z, self._b[l])

    def _forward(self, X, outs=None) -> list:
        """Activations of every layer after the input; into ``outs`` buffers when given."""
        acts = []
        a = X
        for l in range(self.n_layers):
            Z = ops.matmul(a, self._W[l], out=None if outs is None else outs[l])
            a = self._activate(l, Z)
            acts.append(a)
        return acts

    def feedforward(self, X):
        """Output-layer activations for a batch.

        X: ``(n, sizes[0])`` array (uint8 is scaled by 1/255). Returns ``(n, sizes[-1])``
        in the network's dtype, on its device.

        >>> import numpy as np, fastnet
        >>> fastnet.Network([3, 2], device="cpu", seed=0).feedforward(np.zeros((4, 3))).shape
        (4, 2)
        """
        return self._forward(self._prepare_X(X, allow_host=True))[-1]

    def predict_proba(self, X):
        """Output activations (softmax probabilities for the cross-entropy cost). Shape ``(n, n_out)``.

        >>> import numpy as np, fastnet
        >>> p = fastnet.Network([3, 4], cost="cross_entropy", device="cpu", seed=0).predict_proba(np.ones((2, 3)))
        >>> np.allclose(p.sum(axis=1), 1.0)
        True
        """
        return self.feedforward(X)

    def predict(self, X):
        """Predicted class ids, ``(n,)`` int64 on the network's device.

        >>> import numpy as np, fastnet
        >>> fastnet.Network([3, 4], device="cpu", seed=0).predict(np.ones((2, 3))).shape
        (2,)
        """
        return self.xp.argmax(self.feedforward(X), axis=1)

    # --- backward -----------------------------------------------------------------------

    def _workspace(self, m: int) -> _Workspace:
        ws = self._ws.get(m)
        if ws is None:
            self._check_fits(m)
            ws = self._ws[m] = _Workspace(self.xp, self.sizes, m, self.backend.dtype(self.dtype),
                                          chunk=self._chunk_rows(m))
        return ws

    def _chunk_rows(self, m: int) -> int:
        """Rows per chunk for a step on ``m`` rows: ``m`` (one piece) unless the batch is
        large and lives in host memory, then about :data:`_CHUNK_ELEMS` input elements.

        A chunked step runs forward and backward on one block of rows at a time and adds
        up the gradients, so the block of X read by the forward GEMM is still in cache for
        the weight-gradient GEMM (at batch 60000 X is 188 MB and would be streamed from
        memory twice), and the activation and delta buffers hold one chunk, not the batch.
        """
        if type(self._W[0]) is not np.ndarray or self._epoch_kernel(m) is not None:
            return m
        c = max(256, _CHUNK_ELEMS // self.sizes[0])
        return c if m >= max(_CHUNK_MIN_ROWS, 2 * c) else m

    def _step_chunked(self, X, y, ws, m, eta, decay, check=None) -> None:
        """One SGD step on ``m`` rows, ``ws.chunk`` rows at a time (see :meth:`_chunk_rows`).

        The gradient sums are accumulated over the chunks (unscaled, as in :meth:`_backward`),
        then one fused update: the same step up to the order of the additions. ``check``:
        the caller's X (a C-contiguous NumPy float array) when its finiteness is still to
        be checked: each chunk is, before its forward pass, and a NaN/inf raises the usual
        error before any parameter changes."""
        L, c = self.n_layers, ws.chunk
        if check is not None:
            from fastnet.kernels.cpu import all_finite_cpu
        for k in range(0, m, c):
            stop = min(k + c, m)
            r = stop - k
            Xc, yc = X[k:stop, ...], y[k:stop, ...]
            if check is not None and not all_finite_cpu(Xc):
                V.check_X(check, self.sizes[0], "X")   # raises, naming the first bad row
                raise ValueError("X must be finite")   # pragma: no cover - check_X raised
            acts = self._forward(Xc, ws.a if r == c else [b[:r, ...] for b in ws.a])
            self._grad_sums(Xc, yc, acts, ws, r, accumulate=k > 0)
        scale = eta / m
        for l in range(L):
            self._W[l] = ops.sgd_update(self._W[l], ws.gW[l], scale, decay)
            self._b[l] = ops.sgd_update(self._b[l], ws.gb[l], scale, 1.0)   # b - scale * sum

    def _grad_sums(self, X, y, acts, ws, m, accumulate=False):
        """Unscaled gradient sums of one batch (or chunk) of ``m`` rows into ``ws.gW`` and
        ``ws.gb`` (added to them with ``accumulate``): the chunked step and ``backprop``."""
        ds = ws.rows(ws.d, m)
        delta = ops.output_delta(acts[-1], y, self.cost, out=ds[-1])
        for l in range(self.n_layers - 1, -1, -1):
            a_prev = X if l == 0 else acts[l - 1]
            if accumulate:
                ws.gW[l] += ops.matmul(a_prev.T, delta, out=ws.gW_part[l])
            else:
                ws.gW[l] = ops.matmul(a_prev.T, delta, out=ws.gW[l])
            ws.gb[l] = ops.bias_grad(delta, ws.gb[l], 1.0, accumulate=accumulate)
            if l > 0:
                delta = ops.backward_delta(ops.matmul(delta, self._W[l].T, out=ds[l - 1]), acts[l - 1])

    def _backward(self, X, y, acts, ws, m, eta, decay=1.0):
        """Backprop one batch and update in place, layer by layer (fused SGD)."""
        ds = ws.rows(ws.d, m)
        delta = ops.output_delta(acts[-1], y, self.cost, out=ds[-1])
        scale = eta / m
        for l in range(self.n_layers - 1, -1, -1):
            a_prev = X if l == 0 else acts[l - 1]
            gW = ops.matmul(a_prev.T, delta, out=ws.gW[l])          # unscaled sum over the batch
            if l > 0:  # uses the old W_l, so it comes before the update
                G = ops.matmul(delta, self._W[l].T, out=ds[l - 1])
                delta_prev = ops.backward_delta(G, acts[l - 1])
            self._W[l] = ops.sgd_update(self._W[l], gW, scale, decay)
            if m >= _ROWWISE_BIAS_MIN and type(delta) is np.ndarray:
                # Column sums streamed row by row into ws.gb (NumPy's order), then
                # b - scale * sum: bitwise what bias_update computes, which walks the
                # columns 8 at a time down all the rows (slow once delta leaves cache).
                gb = ops.bias_grad(delta, ws.gb[l], 1.0)
                self._b[l] = ops.sgd_update(self._b[l], gb, scale, 1.0)
            else:
                self._b[l] = ops.bias_update(self._b[l], delta, scale)
            if l > 0:
                delta = delta_prev

    def backprop(self, X, Y):
        """Gradients of the cost averaged over the batch.

        X: ``(m, sizes[0])``. Y: ``(m,)`` integer labels or an ``(m, sizes[-1])`` float
        target matrix. Returns ``(grads_W, grads_b)``, lists shaped like ``weights`` and
        ``biases``. The network is not changed.

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([3, 5, 2], dtype="float64", device="cpu", seed=0)
        >>> grads_W, grads_b = net.backprop(np.ones((4, 3)), np.array([0, 1, 1, 0]))
        >>> [g.shape for g in grads_W], [g.shape for g in grads_b]
        ([(3, 5), (5, 2)], [(5,), (2,)])
        """
        Xd = self._prepare_X(X)
        yd = self._prepare_target(Y, Xd.shape[0])
        m = Xd.shape[0]
        ws = _Workspace(self.xp, self.sizes, m, self.backend.dtype(self.dtype))
        acts = self._forward(Xd, ws.a)
        self._grad_sums(Xd, yd, acts, ws, m)
        return [g * (1.0 / m) for g in ws.gW], [g * (1.0 / m) for g in ws.gb]

    def train_step(self, X, Y, eta, lmbda=0.0, n=None):
        """One SGD step on one batch, in place.

        X: ``(m, sizes[0])``; Y: labels ``(m,)`` or targets ``(m, sizes[-1])``; eta > 0;
        lmbda >= 0 with ``n`` (the training-set size, default ``m``) for L2 decay.

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([2, 1], dtype="float64", device="cpu", seed=0)
        >>> before = net.loss(np.ones((1, 2)), np.array([0]))
        >>> net.train_step(np.ones((1, 2)), np.array([0]), eta=0.5)
        >>> net.loss(np.ones((1, 2)), np.array([0])) < before
        True
        """
        eta = V.check_real("eta", eta, positive=True)
        lmbda = V.check_real("lmbda", lmbda)
        # A large C-contiguous batch already in the network's dtype is checked for NaN/inf
        # chunk by chunk inside the step, while each chunk is in cache for its GEMM (a
        # separate pass over 188 MB costs about 12 ms); the weights change only after
        # every chunk passed, so a refused batch still changes nothing.
        finite_checked = not (type(X) is np.ndarray and X.ndim == 2 and X.flags.c_contiguous
                              and X.dtype == np.dtype(self.dtype) and ops.kernel_path(X) == "njit"
                              and type(self._W[0]) is np.ndarray
                              and self._chunk_rows(X.shape[0]) < X.shape[0])
        if finite_checked:
            Xd = self._prepare_X(X)
        else:
            V.check_X(X, self.sizes[0], "X", finite=False)
            Xd = X
        m = Xd.shape[0]
        yd = self._prepare_target(Y, m)
        n = m if n is None else V.check_positive_int("n", n)
        ws = self._workspace(m)
        if self._large_step(Xd, yd, eta, 1.0 - eta * lmbda / n, check=None if finite_checked else X):
            return
        if ws.chunk < m:
            self._step_chunked(Xd, yd, ws, m, eta, 1.0 - eta * lmbda / n,
                               check=None if finite_checked else X)
            return
        if self._split_step(Xd, yd, ws, m, eta, 1.0 - eta * lmbda / n):
            return
        acts = self._forward(Xd, ws.a)
        self._backward(Xd, yd, acts, ws, m, eta, 1.0 - eta * lmbda / n)

    # --- metrics ------------------------------------------------------------------------

    def _metrics(self, Xd, yd, lmbda=0.0, chunk=10_000):
        """(mean cost incl. L2 term, accuracy) over device data; one sync at the end."""
        n = Xd.shape[0]
        if self._large_batch_ok(Xd, yd):   # large narrow data: the threaded FMA forward pass
            from fastnet.kernels.batch_cpu import forward_metrics

            total, correct = forward_metrics(Xd, yd, self._W, self._b, self.cost == "quadratic")
            loss = total / n
            if lmbda:
                loss += 0.5 * lmbda / n * sum(float(np.sum(w * w)) for w in self._W)
            return loss, correct / n
        xp = array_namespace(Xd)
        cost_sum = xp.zeros((), dtype=self.backend.dtype(self.dtype))
        correct = xp.zeros((), dtype=xp.int64)
        for k in range(0, n, chunk):
            stop = min(k + chunk, n)  # no out-of-bounds slice stops in the Array API
            a = self._forward(Xd[k:stop, ...])[-1]
            yk = yd[k:stop]
            t = ops._ref.one_hot(yk, self.sizes[-1], a.dtype, xp)
            if self.cost == "quadratic":
                cost_sum = cost_sum + 0.5 * xp.sum((a - t) ** 2)
            else:
                # -log of the true class's probability; a probability that underflowed
                # to 0 gives an infinite loss, which fit reports as divergence
                with np.errstate(divide="ignore"):
                    cost_sum = cost_sum - xp.sum(xp.log(xp.sum(t * a, axis=1)))
            correct = correct + xp.sum(xp.astype(xp.argmax(a, axis=1) == yk, xp.int64))
        loss = float(cost_sum) / n
        if lmbda:
            loss += 0.5 * lmbda / n * sum(float(xp.sum(w * w)) for w in self._W)
        return loss, int(correct) / n

    def evaluate(self, X, y) -> float:
        """Fraction of samples whose predicted class equals ``y``; X ``(n, sizes[0])``, y ``(n,)``.

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([2, 2], device="cpu", seed=0)
        >>> 0.0 <= net.evaluate(np.eye(2), np.array([0, 1])) <= 1.0
        True
        """
        Xd = self._prepare_X(X)
        yd = self._prepare_y(y, Xd.shape[0])
        return self._metrics(Xd, yd)[1]

    def loss(self, X, y, lmbda: float = 0.0) -> float:
        """Mean cost over ``(X, y)`` (plus Nielsen's L2 term ``lmbda/(2n) sum W**2``).

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network.from_params([np.zeros((2, 1))], [np.zeros(1)], dtype="float64", device="cpu")
        >>> net.loss(np.ones((3, 2)), np.array([0, 0, 0]))  # a = 0.5, target 1: 0.5 * 0.25
        0.125
        """
        Xd = self._prepare_X(X)
        yd = self._prepare_y(y, Xd.shape[0])
        return self._metrics(Xd, yd, V.check_real("lmbda", lmbda))[0]

    # --- training -----------------------------------------------------------------------

    def fit(self, X, y, *, epochs, batch_size, eta, lmbda=0.0, validation_data=None,
            shuffle=True, verbose=0, callbacks: Iterable[Callable] = (),
            on_divergence="stop", checkpoint=None, checkpoint_every=1, resume=False) -> History:
        """Train by minibatch SGD; returns the per-epoch :class:`fastnet.history.History`.

        X: ``(n, sizes[0])`` (uint8 is scaled by 1/255); y: ``(n,)`` integer class ids.
        The data moves to the device once; every step reuses buffers made here. The last
        minibatch of an epoch holds the ``n % batch_size`` leftover samples.
        validation_data: optional ``(X_val, y_val)``, scored after each epoch.
        verbose: 0 silent; 1 a progress bar (on a terminal) and one line per epoch; 2 one
        line per epoch (Keras's meaning). callbacks: each called as
        ``cb(network, record)`` after every epoch (``record`` is that epoch's dict).
        on_divergence: "stop" (restore the last finite weights and raise
        :class:`DivergenceError`) or "continue".
        checkpoint: a path; every ``checkpoint_every`` epochs the weights, the shuffle RNG
        state, the position and the history are written there atomically. ``resume=True``
        continues from that file when it exists (same data and hyperparameters), giving
        bit-for-bit the weights of an uninterrupted run. Ctrl-C (SIGINT) finishes the
        current step (on the compiled CPU path: the current chunk of at most a few ms of
        steps), writes the checkpoint (when one is set) and raises
        :class:`TrainingInterrupted`.

        Nothing is changed when an argument is refused.

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([2, 3, 2], device="cpu", seed=0)
        >>> h = net.fit(np.eye(2), np.array([0, 1]), epochs=2, batch_size=1, eta=1.0)
        >>> h["epoch"], sorted(h[0])[:3]
        ([1, 2], ['accuracy', 'epoch', 'loss'])
        """
        Xd = self._prepare_X(X)
        n = Xd.shape[0]
        yd = self._prepare_y(y, n)
        epochs = V.check_positive_int("epochs", epochs)
        batch_size = V.check_positive_int("batch_size", batch_size, upper=n, upper_name="the number of samples")
        eta = V.check_real("eta", eta, positive=True)
        lmbda = V.check_real("lmbda", lmbda)
        on_divergence = V.check_choice("on_divergence", on_divergence, ("stop", "continue"))
        checkpoint_every = V.check_positive_int("checkpoint_every", checkpoint_every)
        if resume and checkpoint is None:
            raise ValueError("resume=True needs checkpoint=PATH (the file to resume from)")
        callbacks = list(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables cb(network, record). Actual: {cb!r}")
        val = self._prepare_validation(validation_data)

        run = {"epochs": epochs, "batch_size": batch_size, "eta": eta, "lmbda": lmbda, "n_train": n,
               "shuffle": bool(shuffle)}
        history = History(config=self.config() | run | {
            "device": self.backend.device, "backend": self.backend.name,
            "kernels": ops.kernel_path(self._W[0]),
            "n_val": None if val is None else int(val[0].shape[0]),
        })
        bar = progress.for_fit(verbose, epochs, history, callbacks)
        start_epoch, start_step = 1, 0
        if resume and Path(checkpoint).exists():
            start_epoch, start_step = self._restore_checkpoint(checkpoint, run, history)
        with _SigintFlag() as interrupted:
            try:
                self._epochs(Xd, yd, val, history, run, start_epoch, start_step, on_divergence, bar,
                             callbacks, checkpoint, checkpoint_every, interrupted)
            finally:
                bar.close()
        return history

    def _epochs(self, Xd, yd, val, history, run, start_epoch, start_step, on_divergence, bar,
                callbacks, checkpoint, checkpoint_every, interrupted):
        xp = self.xp
        n, batch_size, eta, lmbda = run["n_train"], run["batch_size"], run["eta"], run["lmbda"]
        ws = self._workspace(batch_size)
        decay = 1.0 - eta * lmbda / n
        order = xp.arange(n, dtype=xp.int64)
        if self._epoch_kernel(batch_size) is not None:  # the compiled loop reads rows by flat index
            Xd, yd = np.ascontiguousarray(Xd), np.ascontiguousarray(yd)
        for epoch in range(start_epoch, run["epochs"] + 1):
            t0 = time.perf_counter()
            fast = self._epoch_kernel(batch_size)  # per epoch: a callback may set new weights
            saved = [self.backend.copy(p) for p in self._W + self._b]
            rng_state = self._shuffle_rng.bit_generator.state  # replaying from here redraws this epoch's order
            if run["shuffle"]:
                order = self.backend.asarray(self._shuffle_rng.permutation(n), dtype=xp.int64)
            bar.start_epoch(epoch, -(-n // batch_size))
            first = start_step if epoch == start_epoch else 0
            if fast is not None:
                self._fast_steps(fast, Xd, yd, order, ws, first, run, decay, bar, interrupted,
                                 history, epoch, checkpoint, rng_state)
                first = n
            for k in range(first, n, batch_size):
                m = min(batch_size, n - k)
                self._step(Xd, yd, order[k:k + m], ws, m, eta, decay)
                bar.update(k // batch_size + 1)
                if interrupted.flag:
                    self._interrupt(checkpoint, run, history, epoch, k + m, rng_state)
            self.backend.synchronize()
            seconds = time.perf_counter() - t0
            loss, acc = self._metrics(Xd, yd, lmbda)
            record = {"epoch": epoch, "loss": loss, "accuracy": acc, "seconds": seconds,
                      "samples_per_s": n / seconds if seconds > 0 else float("inf")}
            if val is not None:
                record["val_loss"], record["val_accuracy"] = self._metrics(*val, lmbda)
            history.append(record)
            weights_finite = all(math.isfinite(float(xp.sum(w))) for w in self._W)
            if not (math.isfinite(loss) and weights_finite) and on_divergence == "stop":
                self._W = saved[:self.n_layers]
                self._b = saved[self.n_layers:]
                raise DivergenceError(
                    f"training diverged in epoch {epoch}: loss {loss}{'' if weights_finite else ', weights not finite'}; "
                    f"the weights from before "
                    f"that epoch were restored. Fix: lower eta (now {eta})"
                )
            if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == run["epochs"]):
                self._write_checkpoint(checkpoint, run, history, epoch + 1, 0,
                                       self._shuffle_rng.bit_generator.state)
            bar.end_epoch(record)
            for cb in callbacks:
                cb(self, record)

    def _step(self, Xd, yd, idx, ws, m, eta, decay) -> None:
        """One SGD step on the rows ``idx`` of the device data, entirely in ``ws``'s buffers."""
        full = m == ws.m
        if m == Xd.shape[0]:
            # One batch of all the samples: the shuffle only reorders the rows of the sum
            # over the batch, so use the data in place (no gather, no batch copy of X).
            Xb, yb = Xd, yd
        else:
            Xb = ops.take_rows(Xd, idx, out=ws.X if full else ws.X[:m, ...])
            yb = ops.take_rows(yd, idx, out=ws.y if full else ws.y[:m])
        if self._large_step(Xb, yb, eta, decay):
            return
        if ws.chunk < m:
            self._step_chunked(Xb, yb, ws, m, eta, decay)
            return
        if self._split_step(Xb, yb, ws, m, eta, decay):
            return
        acts = self._forward(Xb, ws.rows(ws.a, m))
        self._backward(Xb, yb, acts, ws, m, eta, decay)

    def _split_step(self, X, y, ws, m, eta, decay) -> bool:
        """One unchunked step in :class:`fastnet.kernels.split_cpu.SplitStep` when it
        applies (see :data:`SPLIT_STEP_MIN_MACS` and :data:`SPLIT_STEP_MIN_WIDTH`); False
        (nothing done) otherwise."""
        if (SPLIT_STEP_MIN_MACS is None or m < 2 or self.n_layers < 2
                or min(self.sizes[1:-1]) < SPLIT_STEP_MIN_WIDTH
                or m * sum(i * o for i, o in zip(self.sizes[:-1], self.sizes[1:])) < SPLIT_STEP_MIN_MACS
                or not self._threaded_cpu_ok(X, y, targets_ok=True)):
            return False
        try:
            from fastnet.kernels import split_cpu
        except ImportError:  # pragma: no cover - numba is there: the njit path is
            return False
        threads = split_cpu.split_threads(m)
        if threads < 2:
            return False
        split_cpu.SplitStep(threads).run(
            X, y, self._W, self._b, ws.rows(ws.a, m), ws.rows(ws.d, m), ws.gW, ws.gb, eta, decay,
            quadratic=self.cost == "quadratic", softmax=self.cost == "cross_entropy")
        return True

    def _large_step(self, X, y, eta, decay, check=None) -> bool:
        """One step in :func:`fastnet.kernels.batch_cpu.large_step` when it applies (see
        :data:`LARGE_STEP_MIN_ROWS`); False (nothing done) otherwise. ``check``: the
        caller's X when its finiteness is still to be checked: the step runs first and,
        only when it left a parameter non-finite, X is checked; a NaN/inf in X then
        restores the parameters (copies of the small W and b) and raises the usual error."""
        if not self._large_batch_ok(X, y):
            return False
        from fastnet.kernels.batch_cpu import large_step

        saved = [p.copy() for p in self._W + self._b] if check is not None else None
        large_step(X, y, self._W, self._b, eta, decay, self.cost == "quadratic")
        if saved is not None and not all(np.isfinite(p).all() for p in self._W + self._b):
            try:
                V.check_X(check, self.sizes[0], "X")   # raises, naming the first bad row
            except ValueError:
                for p, old in zip(self._W + self._b, saved):
                    p[...] = old
                raise
        return True

    def _epoch_kernel(self, batch_size: int):
        """:class:`fastnet.kernels.epoch_cpu.StackRunner` when this network should use it:
        NumPy arrays on the njit kernel path, C-contiguous parameters, and steps small
        enough that Python's per-step cost matters more than BLAS (``MAX_STEP_MACS``).
        Else None: the step path."""
        if not (EPOCH_FASTPATH and ops.kernel_path(self._W[0]) == "njit"):
            return None
        if not all(type(a) is np.ndarray and a.flags.c_contiguous for a in self._W + self._b):
            return None  # the step path (and its error messages) handles anything else
        try:
            from fastnet.kernels import epoch_cpu
        except ImportError:  # pragma: no cover - numba is there: the njit path is
            return None
        macs = batch_size * sum(int(w.size) for w in self._W) * self._W[0].itemsize // 4
        return epoch_cpu.StackRunner if macs <= epoch_cpu.MAX_STEP_MACS else None

    def _fast_steps(self, runner_cls, Xd, yd, order, ws, first, run, decay, bar, interrupted,
                    history, epoch, checkpoint, rng_state) -> None:
        """The steps of one epoch from sample ``first`` on, in compiled chunks.

        A :class:`fastnet.kernels.epoch_cpu.StackRunner` of one net keeps a working copy
        of the parameters and writes it back into ``self._W`` / ``self._b`` (in place) at
        the end and before a checkpoint. Between chunks: the progress bar, and Ctrl-C (the
        flag; when it is already set as a chunk begins, that chunk is one step, as on the
        step path)."""
        from fastnet.kernels.epoch_cpu import CHUNK_SAMPLES, MAX_CHUNK_STEPS

        n, batch_size, eta = run["n_train"], run["batch_size"], run["eta"]
        n_steps = -(-n // batch_size)
        chunk = max(1, min(MAX_CHUNK_STEPS, CHUNK_SAMPLES // batch_size))
        quadratic = self.cost == "quadratic"
        Ws = [W[None, ...] for W in self._W]   # (1, ...) views of the parameters
        bs = [b[None, ...] for b in self._b]
        runner = runner_cls(Ws, bs, [eta], [decay], batch_size, quadratic, threads=1)
        s = -(-first // batch_size)
        try:
            while s < n_steps:
                s1 = s + 1 if interrupted.flag else min(n_steps, s + chunk)
                runner.run(Xd, yd, order, s, s1)
                s = s1
                bar.update(s)
                if interrupted.flag:
                    runner.store(Ws, bs)
                    self._interrupt(checkpoint, run, history, epoch, min(s * batch_size, n), rng_state)
        finally:
            runner.store(Ws, bs)

    def _interrupt(self, checkpoint, run, history, epoch, next_sample, rng_state):
        """Ctrl-C was pressed: write the checkpoint (next sample ``next_sample``) and raise."""
        where = f"epoch {epoch}, sample {next_sample} of {run['n_train']}"
        if checkpoint is not None:
            self._write_checkpoint(checkpoint, run, history, epoch, next_sample, rng_state)
            raise TrainingInterrupted(f"interrupted in {where}; checkpoint written to {checkpoint}; "
                                      "resume with fit(..., checkpoint=PATH, resume=True) or "
                                      "fastnet train ... --checkpoint PATH --resume")
        raise TrainingInterrupted(f"interrupted in {where} (no checkpoint was set)")

    def _write_checkpoint(self, path, run, history, epoch, step, rng_state) -> None:
        """Save weights plus where to go on: next ``epoch`` and ``step``, the RNG state then."""
        from fastnet.io import save_model

        save_model(self, path, extra={"checkpoint": {"run": run, "epoch": epoch, "step": step,
                                                     "rng_state": rng_state, "history": history.records}})

    def _restore_checkpoint(self, path, run, history) -> tuple[int, int]:
        from fastnet.io import ModelFileError, read_model

        meta, weights, biases = read_model(path)
        ck = (meta.get("extra") or {}).get("checkpoint")
        if not isinstance(ck, dict):
            raise ModelFileError(f"{path} is a model, not a training checkpoint (no checkpoint state)")
        for key in ("sizes", "cost", "dtype"):
            if meta.get(key) != self.config()[key]:
                raise ValueError(f"checkpoint {path} is for {key}={meta.get(key)!r}, this network has "
                                 f"{self.config()[key]!r}")
        saved_run = ck["run"]
        diff = {k: (saved_run.get(k), v) for k, v in run.items() if k != "epochs" and saved_run.get(k) != v}
        if diff:
            raise ValueError(f"checkpoint {path} was written with other settings (saved, now): {diff}; "
                             "resume with the same data and hyperparameters")
        self.weights, self.biases = weights, biases
        self._shuffle_rng.bit_generator.state = ck["rng_state"]
        history.records[:] = ck["history"]
        return int(ck["epoch"]), int(ck["step"])

    def config(self) -> dict:
        """The constructor arguments that describe this network (JSON-ready).

        >>> import fastnet
        >>> fastnet.Network([3, 2], device="cpu", seed=1).config()
        {'sizes': [3, 2], 'cost': 'quadratic', 'init': 'nielsen', 'dtype': 'float32', 'seed': 1}
        """
        return {"sizes": list(self.sizes), "cost": self.cost, "init": self.init, "dtype": self.dtype,
                "seed": self.seed}

    def copy(self) -> "Network":
        """A deep copy on the same device.

        >>> import fastnet
        >>> net = fastnet.Network([3, 2], device="cpu", seed=1)
        >>> twin = net.copy(); twin.weights[0][0, 0] = 99.0
        >>> float(net.weights[0][0, 0]) != 99.0
        True
        """
        twin = Network.from_params(self._W, self._b, cost=self.cost, init=self.init, dtype=self.dtype,
                                   device=self.backend, seed=self.seed)
        twin._shuffle_rng.bit_generator.state = self._shuffle_rng.bit_generator.state
        return twin

    def save(self, path) -> None:
        """Write weights, biases and metadata to ``path`` (``.npz``, no pickle, atomic).

        >>> import fastnet, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "net.npz")
        >>> fastnet.Network([3, 2], device="cpu", seed=1).save(path)
        >>> fastnet.load(path, device="cpu").config()["seed"]
        1
        """
        from fastnet.io import save_model

        save_model(self, path)

