"""Whole epochs of minibatch SGD in one CUDA launch: the ``fused`` engine.

On a GPU a Python-driven step costs ~15 launches (0.35-0.5 ms) whatever its size, so at
minibatch 10 (6,000 steps an epoch) the host, not the GPU, sets the pace. Here one kernel
launch runs steps ``[s0, s1)`` of an epoch -- gather, forward, output delta, backward,
update, step after step -- for K same-shape networks that share the minibatch order
(:class:`fastnet.NetworkStack`; a :class:`fastnet.Network` is K = 1). The host does
nothing per step. :class:`FusedEpoch` mirrors :class:`fastnet.kernels.epoch_cpu.StackRunner`
(``run`` / ``store`` / ``load``), tables included: a per-layer activation code, float
targets for cost="mse", and every optimizer of :mod:`fastnet.optim`. The codes, the
optimizer and the cost are run-time arguments: one compiled kernel per dtype runs them
all.

Design (see :func:`launch_config`, which plans it from the layer sizes)

- Grid: one thread block per network (grid = K). The blocks never talk to each other:
  they read the same X rows and order and write disjoint parameters.
- Parameters: one flat vector per net, ``[W_0, b_0, W_1, b_1, ...]`` (each W row-major
  ``(n_l, n_(l+1))``), kept in a ``(K, P)`` device array that this object owns. When the
  vector fits in shared memory beside the step's buffers (``[784, 30, 10]``: 95 KB in
  float32, 191 KB in float64 at minibatch 10), the block copies its net's vector into
  dynamic shared memory at the start of the launch, trains there, and writes it back at
  the end ("on chip"). Otherwise it stays in global memory and the block reads and writes
  it in place: ``[784, 100, 10]`` is 318 KB (float32), past the 227 KB a block may have;
  one net's parameters then stay resident in the 60 MB L2 across steps (K = 64 of them
  take 20 MB), and the reads of ``W[p, j]`` coalesce (neighbouring threads read
  neighbouring ``j``).
- Dynamic shared memory, always: the activations ``a_l`` and deltas of every layer
  ``l >= 1`` for one minibatch (``2 * B * sum(n_1..n_L)`` values) and ``threads`` values
  of scratch for split dot products. The input layer is not copied: X rows are read in
  place through ``order`` (global memory, L1/L2-cached).
- Optimizer state (an optimizer other than SGD): two buffers per parameter, ``(K, 2P)``
  (S1 then S2, laid out like the parameters), copied into shared memory beside the
  parameters when all of it fits, else read and written in place in global memory.
- Registers: loop counters, one accumulator, scalars of the step; nothing indexed.
  :func:`launch_config` plans at most ``65536 / threads`` per thread (128 at 512 threads;
  ptxas sm_90 with numba-cuda 0.30.4: 120 float32 / 128 float64, no spills, since the
  kernel sums the minibatch metrics; 102 / 120 before: float64 now uses all 128).
- Static shared memory: none (all sizes depend on the net and the minibatch, so all of it
  is dynamic: ``cuda.shared.array(0, dtype)`` carved by offsets).

A step (all threads of the block; ``__syncthreads`` between the phases):

1. Forward, layer by layer: ``z[i, j] = sum_p a[i, p] W[p, j] + b[j]`` for the m rows. The
   m * n_out dot products go one per thread, or, when there are fewer of them than
   threads (m * n_out = 300 for layer 0 of Nielsen's net at minibatch 10), each is split
   into ``threads // (m * n_out)`` slices of p whose partial sums go to the scratch and
   are added after a barrier. Then the layer's activation, its code read once per layer
   (``codes[l]``): sigmoid (``_math.sigmoid``), any other hidden one (``_math.act``),
   softmax by rows (one thread per row) or the identity on the output layer.
2. Output delta, one thread per element: labels read through ``order`` (no one-hot), or,
   for cost="mse", ``a - t`` with the targets ``T`` gathered by row (a (1, 1) stand-in
   when there are labels). With ``metered`` (fit's minibatch metrics), thread 0 first adds
   the batch's cost, samples right and (mse) squared errors to the net's row of the
   float64 ``msum``, row by row from the outputs, as the compiled CPU loop does.
3. Backward, top layer down: ``delta_(l-1) = (delta_l @ W_l.T) * f'(z)`` one thread
   per element (``_math.backward_delta`` for sigmoid, else ``_math.act_grad`` with the
   layer's code), from the OLD weights (no weight has been touched yet in this step).
4. Update, every layer at once (one thread per weight, then per bias). Plain SGD:
   ``W <- decay * W - (eta / m) * sum_i a_prev[i, p] delta[i, j]`` and
   ``b <- b - (eta / m) * sum_i delta[i, j]``; m is the step's row count (the last
   minibatch may be short), ``eta / m`` rounded once to the dtype on the host, as in the
   compiled CPU loop. Another optimizer: the same thread that summed a parameter's
   gradient applies ``_math.opt_step`` to it at once, with the mean gradient (``1 / m``
   from the host) plus ``l2 * W`` on weights, the net's eta, and the step's factors
   (``_math.opt_factors`` of step count t, float64 on the host and rounded to the dtype,
   one row per step of the launch: the kernel does no float64 pow). Every delta is known
   before the update starts and each parameter's rule reads only its own gradient and
   state, so this equals a separate pass over a gradient buffer (``_math.opt_block``, as
   epoch_cpu runs it), without the buffer. The host advances t by the launch's steps.

Equal to the per-sample oracles (``tests/reference.sgd``, ``train_general``) to rounding:
float64 to 1e-10 on the tests' shapes (``tests/test_epoch_cuda.py``,
``tests/test_epoch_cuda_tables.py``, under Numba's CUDA simulator).

Importing this module imports neither ``numba.cuda`` nor CuPy: :func:`launch_config` is
plain Python; the kernels are built (through :mod:`fastnet.kernels._cuda_api`) on first
use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fastnet.kernels import _math

__all__ = ["FusedEpoch", "LaunchConfig", "launch_config", "ptx_targets", "warmup", "CHUNK_SAMPLES",
           "MAX_THREADS", "SMEM_STATIC_MAX", "SMEM_OPTIN_MAX", "REGISTERS_PER_SM"]

#: The limits planned for (H100 / H200, compute capability 9.0): shared memory a block may
#: use without the opt-in attribute, and with it; registers per SM; threads per block.
SMEM_STATIC_MAX = 48 * 1024
SMEM_OPTIN_MAX = 227 * 1024
REGISTERS_PER_SM = 64 * 1024
THREADS_LIMIT = 1024
#: Threads per block planned at most: 512 leaves up to 128 registers a thread, and every
#: phase of a step loops over its elements in strides of the block.
MAX_THREADS = 512
#: One launch runs about this many samples (a whole 60,000-sample epoch): the host only
#: checks Ctrl-C and updates the progress bar between launches.
CHUNK_SAMPLES = 60_000

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# =====================================================================================
# The plan: pure Python, no GPU needed.
# =====================================================================================

@dataclass
class LaunchConfig:
    """How :class:`FusedEpoch` launches for one network shape, minibatch, dtype and K.

    fits: whether it can run; reason: why not (None when it fits). grid: blocks (one per
    net); threads: per block. static_shared / dynamic_shared: bytes per block.
    opt_in: the dynamic shared memory is past 48 KB (the kernel needs the
    max-dynamic-shared-memory attribute). params_on_chip: the parameters live in shared
    memory during the launch (else in global memory / L2). registers_per_thread: the most
    a thread may use for ``threads`` to fit one SM's register file. layout: what lives
    where, in bytes. state_on_chip: an optimizer other than SGD keeps its two state
    buffers per parameter in shared memory too (they fit beside the parameters on chip),
    else in global memory."""
    fits: bool
    reason: str | None
    grid: int
    threads: int
    static_shared: int
    dynamic_shared: int
    opt_in: bool
    params_on_chip: bool
    registers_per_thread: int
    layout: dict = field(default_factory=dict)
    state_on_chip: bool = False


def _param_count(sizes) -> int:
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


def launch_config(sizes, batch_size, dtype="float32", K=1, *, threads=None, on_chip=None, stateful=False,
                  state_on_chip=None) -> LaunchConfig:
    """Plan the fused launch for nets of layer ``sizes`` (``[n_0, ..., n_L]``, L >= 1),
    minibatches of ``batch_size`` rows, ``dtype`` (float32/float64) and ``K`` nets.

    threads: None plans one thread per weight of the largest layer (at least one warp, at
    most :data:`MAX_THREADS`, a multiple of 32); a number forces it (the simulator tests
    use a few). on_chip: None plans where the parameters live; False keeps them in global
    memory (the tests run both placements on small nets). stateful: the fit's optimizer
    is not plain SGD, so every parameter has two state buffers (velocity, moments): they
    go to shared memory when they fit there beside the parameters on chip (state_on_chip
    None), else (or with state_on_chip False) they stay in global memory and are read and
    written in place by the update. (The gradient needs no buffer: the thread that sums a
    parameter's gradient applies the optimizer's rule to it at once.) A plan that does not
    fit the H100/H200 limits has ``fits=False`` and the reason (the ``fused`` engine then
    passes it over with that reason).

    >>> c = launch_config([784, 30, 10], 10, "float32")
    >>> c.fits, c.threads, c.params_on_chip, c.opt_in, c.dynamic_shared
    (True, 512, True, True, 100688)
    >>> launch_config([784, 2000, 10], 100, "float64").reason[:48]
    'a minibatch of 100 rows needs 3,220,096 bytes of'
    """
    sizes = [int(s) for s in sizes]
    dt = np.dtype(dtype)
    B, K = int(batch_size), int(K)
    if len(sizes) < 2 or min(sizes) < 1 or B < 1 or K < 1 or dt not in _FLOATS:
        raise ValueError(f"launch_config needs >= 2 positive layer sizes, batch_size >= 1, K >= 1 and "
                         f"float32/float64. Actual: sizes {sizes}, batch_size {B}, K {K}, dtype {dt}")
    work = max(max(i * o, B * o) for i, o in zip(sizes[:-1], sizes[1:]))
    if threads is None:
        threads = min(MAX_THREADS, max(32, -(-work // 32) * 32))
    threads = int(threads)
    item = dt.itemsize
    H = sum(sizes[1:])
    params = _param_count(sizes) * item
    step_bufs = 2 * B * H * item           # activations + deltas, layers 1..L, one minibatch
    scratch = threads * item               # partial sums of split dot products
    state = 2 * params if stateful else 0  # an optimizer's two buffers per parameter
    fits_on_chip = params + step_bufs + scratch <= SMEM_OPTIN_MAX
    on_chip = fits_on_chip if on_chip is None else bool(on_chip) and fits_on_chip
    state_fits = bool(stateful) and on_chip and params + state + step_bufs + scratch <= SMEM_OPTIN_MAX
    state_on_chip = state_fits if state_on_chip is None else bool(state_on_chip) and state_fits
    dynamic = (params if on_chip else 0) + (state if state_on_chip else 0) + step_bufs + scratch
    regs = min(255, REGISTERS_PER_SM // threads)
    layout = {"params": params, "params_in": "shared" if on_chip else "global (L2-resident)",
              "activations_and_deltas": step_bufs, "scratch": scratch, "X": "global, read by index"}
    if stateful:
        layout |= {"optimizer_state": state, "state_in": "shared" if state_on_chip else "global"}
    reason = None
    if threads > THREADS_LIMIT or threads < 1:
        reason = f"{threads} threads per block: a block has 1 to {THREADS_LIMIT}"
    elif dynamic > SMEM_OPTIN_MAX:
        reason = (f"a minibatch of {B:,} rows needs {dynamic:,} bytes of shared memory per block "
                  f"(activations and deltas of {H:,} units, {dt.name}), past the {SMEM_OPTIN_MAX:,} "
                  f"a block may have on H100/H200")
    elif K >= 2 ** 31:
        reason = f"{K:,} nets: a grid has fewer than 2**31 blocks"
    return LaunchConfig(fits=reason is None, reason=reason, grid=K, threads=threads, static_shared=0,
                        dynamic_shared=dynamic, opt_in=dynamic > SMEM_STATIC_MAX, params_on_chip=on_chip,
                        registers_per_thread=regs, layout=layout, state_on_chip=state_on_chip)


# =====================================================================================
# The kernel: one body, built once per dtype (the dynamic shared array's element type
# must be a compile-time constant).
# =====================================================================================

_KERNELS: dict = {}
#: ``numba.cuda``, set by the first :func:`_build`. A module global on purpose: the
#: simulator swaps the module in a kernel's globals for its fake one (not in a closure).
cuda = None


def _build(dtype):
    """The device function and kernel for ``dtype``; imports numba.cuda (via _cuda_api)."""
    global cuda
    from numba import types

    from fastnet.kernels._cuda_api import cuda as _cuda

    cuda = _cuda

    nbt = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    sigmoid = _math.sigmoid
    act = _math.act
    act_grad = _math.act_grad
    quadratic_delta = _math.quadratic_delta
    cross_entropy_delta = _math.cross_entropy_delta
    backward_delta = _math.backward_delta
    sgd_step = _math.sgd_step
    opt_step = _math.opt_step
    SIGMOID, SOFTMAX, OPT_SGD = _math.SIGMOID, _math.SOFTMAX, _math.OPT_SGD

    @cuda.jit(device=True)
    def meter(dyn, zo, m, nL, order, k, y, T, targets, quadratic, msum, net):
        """One thread adds the minibatch's metrics to ``msum[net]`` from the outputs at
        ``dyn[zo:]``, in float64, row by row as the compiled CPU loop's
        ``cpu.metrics_rows`` / ``sqerr_row`` do: the cost, the samples whose label is their
        first largest output, and cost="mse"'s squared error per output."""
        cost = 0.0
        right = 0.0
        for i in range(m):
            r = order[k + i]
            row = zo + i * nL
            if targets:
                sq = 0.0
                for c in range(nL):
                    d = float(dyn[row + c]) - float(T[r, c])
                    msum[net, 2 + c] += d * d
                    sq += d * d
                msum[net, 0] += 0.5 * sq
            else:
                label = y[r]
                best = 0
                top = dyn[row]
                for c in range(1, nL):
                    if dyn[row + c] > top:
                        best = c
                        top = dyn[row + c]
                if best == label:
                    right += 1.0
                if quadratic:
                    sq = 0.0
                    for c in range(nL):
                        d = float(dyn[row + c]) - (1.0 if c == label else 0.0)
                        sq += d * d
                    cost += 0.5 * sq
                elif 0 <= label < nL:  # an output that underflowed to 0: an infinite cost (divergence)
                    cost -= math.log(float(dyn[row + label]))
        if not targets:
            msum[net, 0] += cost
            msum[net, 1] += right

    @cuda.jit(device=True)
    def steps(X, y, T, order, s0, s1, B, Wp, Sp, s1b, s2b, dyn, base, sizes, woff, boff, aoff, codes,
              scale_full, scale_last, decay, quadratic, targets, net, ocode, hyp, factors, msum, metered, one,
              zero):
        """Steps s0..s1-1 for the block's net. Wp: its parameter vector (shared or global);
        Sp: its optimizer state (S1 from offset s1b, S2 from s2b; shared or global; unused
        for SGD); dyn: the dynamic shared array, its step buffers from offset ``base``;
        msum: the nets' minibatch metric sums (float64), added to when ``metered``."""
        t = cuda.threadIdx.x
        T_ = cuda.blockDim.x
        n = X.shape[0]
        L = sizes.shape[0] - 1
        H = aoff[L]                        # B * sum(n_1..n_L)
        dbase = base + H                   # deltas
        pbase = dbase + H                  # scratch: T_ values
        for step in range(s0, s1):
            k = step * B
            m = min(B, n - k)
            scale = scale_full if m == B else scale_last
            # --- 1. forward
            for l in range(L):
                nin = sizes[l]
                nout = sizes[l + 1]
                w0 = woff[l]
                b0 = boff[l]
                zo = base + aoff[l]
                ai = base + aoff[l - 1] if l > 0 else 0
                items = m * nout
                S = T_ // items
                if S > nin:
                    S = nin
                if S <= 1:                 # one dot product per thread
                    for it in range(t, items, T_):
                        i = it // nout
                        j = it - i * nout
                        acc = zero
                        if l == 0:
                            r = order[k + i]
                            for p in range(nin):
                                acc += X[r, p] * Wp[w0 + p * nout + j]
                        else:
                            for p in range(nin):
                                acc += dyn[ai + i * nin + p] * Wp[w0 + p * nout + j]
                        dyn[zo + it] = acc + Wp[b0 + j]
                else:                      # S slices of p per dot product, partial sums
                    chunk = (nin + S - 1) // S
                    s = t // items
                    if s < S:
                        it = t - s * items
                        i = it // nout
                        j = it - i * nout
                        p1 = min(nin, (s + 1) * chunk)
                        acc = zero
                        if l == 0:
                            r = order[k + i]
                            for p in range(s * chunk, p1):
                                acc += X[r, p] * Wp[w0 + p * nout + j]
                        else:
                            for p in range(s * chunk, p1):
                                acc += dyn[ai + i * nin + p] * Wp[w0 + p * nout + j]
                        dyn[pbase + t] = acc
                    cuda.syncthreads()
                    for it in range(t, items, T_):
                        j = it - (it // nout) * nout
                        acc = dyn[pbase + it]
                        for s2 in range(1, S):
                            acc += dyn[pbase + s2 * items + it]
                        dyn[zo + it] = acc + Wp[b0 + j]
                cuda.syncthreads()
                code = codes[l]            # the layer's activation: one switch per layer
                if code == SOFTMAX:        # softmax by rows, one thread a row
                    for i in range(t, m, T_):
                        row = zo + i * nout
                        mx = dyn[row]
                        for j in range(1, nout):
                            if dyn[row + j] > mx:
                                mx = dyn[row + j]
                        tot = zero
                        for j in range(nout):
                            e = math.exp(dyn[row + j] - mx)
                            dyn[row + j] = e
                            tot += e
                        for j in range(nout):
                            dyn[row + j] = dyn[row + j] / tot
                elif code == SIGMOID:
                    for it in range(t, items, T_):
                        dyn[zo + it] = sigmoid(dyn[zo + it], one)
                else:
                    for it in range(t, items, T_):
                        dyn[zo + it] = act(dyn[zo + it], code, one)
                cuda.syncthreads()
            # --- 2. output delta (and the minibatch's metrics, by thread 0, from the outputs)
            nL = sizes[L]
            zo = base + aoff[L - 1]
            if metered and t == 0:
                meter(dyn, zo, m, nL, order, k, y, T, targets, quadratic, msum, net)
            do = dbase + aoff[L - 1]
            for it in range(t, m * nL, T_):
                i = it // nL
                j = it - i * nL
                if targets:                # cost="mse": a - t, t the row's targets
                    dyn[do + it] = dyn[zo + it] - T[order[k + i], j]
                else:
                    tj = one if j == y[order[k + i]] else zero
                    if quadratic:
                        dyn[do + it] = quadratic_delta(dyn[zo + it], tj, one)
                    else:
                        dyn[do + it] = cross_entropy_delta(dyn[zo + it], tj)
            cuda.syncthreads()
            # --- 3. backward with the old weights
            for l in range(L - 1, 0, -1):
                nin = sizes[l]
                nout = sizes[l + 1]
                w0 = woff[l]
                dl = dbase + aoff[l]
                dp = dbase + aoff[l - 1]
                ap = base + aoff[l - 1]
                code = codes[l - 1]
                for it in range(t, m * nin, T_):
                    i = it // nin
                    p = it - i * nin
                    g = zero
                    for q in range(nout):
                        g += dyn[dl + i * nout + q] * Wp[w0 + p * nout + q]
                    if code == SIGMOID:
                        dyn[dp + it] = backward_delta(g, dyn[ap + it], one)
                    else:
                        dyn[dp + it] = act_grad(g, dyn[ap + it], code, one)
                cuda.syncthreads()
            # --- 4. update every layer (the deltas are all known). SGD: the fused step on
            # the gradient sum; another optimizer: its rule on the mean gradient (scale is
            # 1/m then) plus L2 on the weights, each parameter right after its gradient.
            f0 = f1 = lr = l2 = zero
            if ocode != OPT_SGD:
                f0 = factors[step - s0, 0]
                f1 = factors[step - s0, 1]
                lr = hyp[net, 0]
                l2 = hyp[net, 1]
            for l in range(L):
                nin = sizes[l]
                nout = sizes[l + 1]
                w0 = woff[l]
                b0 = boff[l]
                dl = dbase + aoff[l]
                ap = base + aoff[l - 1] if l > 0 else 0
                nw = nin * nout
                for it in range(t, nw + nout, T_):
                    g = zero
                    if it < nw:
                        p = it // nout
                        j = it - p * nout
                        if l == 0:
                            for i in range(m):
                                g += X[order[k + i], p] * dyn[dl + i * nout + j]
                        else:
                            for i in range(m):
                                g += dyn[ap + i * nin + p] * dyn[dl + i * nout + j]
                        q = w0 + it
                        if ocode == OPT_SGD:
                            Wp[q] = sgd_step(Wp[q], g, scale, decay)
                        else:
                            w = Wp[q]
                            Wp[q], Sp[s1b + q], Sp[s2b + q] = opt_step(
                                w, g * scale + l2 * w, Sp[s1b + q], Sp[s2b + q], ocode, lr, hyp[net, 2],
                                hyp[net, 3], hyp[net, 4], f0, f1)
                    else:
                        j = it - nw
                        for i in range(m):
                            g += dyn[dl + i * nout + j]
                        q = b0 + j
                        if ocode == OPT_SGD:
                            Wp[q] = sgd_step(Wp[q], g, scale, one)
                        else:
                            Wp[q], Sp[s1b + q], Sp[s2b + q] = opt_step(
                                Wp[q], g * scale, Sp[s1b + q], Sp[s2b + q], ocode, lr, hyp[net, 2],
                                hyp[net, 3], hyp[net, 4], f0, f1)
            cuda.syncthreads()

    def epoch_kernel(X, y, T, order, s0, s1, B, params, state, sizes, woff, boff, aoff, codes, scales, decays,
                     hyp, factors, quadratic, targets, ocode, on_chip, state_on_chip, msum, metered, one, zero):
        """Steps ``[s0, s1)`` for net ``blockIdx.x``; see the module docstring."""
        net = cuda.blockIdx.x
        t = cuda.threadIdx.x
        T_ = cuda.blockDim.x
        P = params.shape[1]
        dyn = cuda.shared.array(0, nbt)
        sf = scales[net, 0]
        sl = scales[net, 1]
        decay = decays[net]
        base = 0
        sb = 0
        if on_chip:
            for q in range(t, P, T_):
                dyn[q] = params[net, q]
            base = P
        if state_on_chip:
            for q in range(t, 2 * P, T_):
                dyn[base + q] = state[net, q]
            sb = base
            base += 2 * P
        cuda.syncthreads()
        if on_chip:
            if state_on_chip:
                steps(X, y, T, order, s0, s1, B, dyn, dyn, sb, sb + P, dyn, base, sizes, woff, boff, aoff, codes,
                      sf, sl, decay, quadratic, targets, net, ocode, hyp, factors, msum, metered, one, zero)
            else:
                steps(X, y, T, order, s0, s1, B, dyn, state[net], 0, P, dyn, base, sizes, woff, boff, aoff, codes,
                      sf, sl, decay, quadratic, targets, net, ocode, hyp, factors, msum, metered, one, zero)
            for q in range(t, P, T_):
                params[net, q] = dyn[q]
            if state_on_chip:
                for q in range(t, 2 * P, T_):
                    state[net, q] = dyn[sb + q]
        else:
            steps(X, y, T, order, s0, s1, B, params[net], state[net], 0, P, dyn, base, sizes, woff, boff, aoff,
                  codes, sf, sl, decay, quadratic, targets, net, ocode, hyp, factors, msum, metered, one, zero)

    return epoch_kernel, cuda.jit(epoch_kernel)



def _kernel(dtype):
    dt = np.dtype(dtype)
    if dt not in _KERNELS:
        _KERNELS[dt] = _build(dt)
    return _KERNELS[dt][1]


def signature(dtype) -> str:
    """The kernel's argument types for ``dtype`` (Numba's signature syntax)."""
    f = "float32" if np.dtype(dtype) == np.float32 else "float64"
    return (f"void({f}[:, ::1], int64[::1], {f}[:, ::1], int64[::1], int64, int64, int64, {f}[:, ::1], "
            f"{f}[:, ::1], int64[::1], int64[::1], int64[::1], int64[::1], int64[::1], {f}[:, ::1], {f}[::1], "
            f"{f}[:, ::1], {f}[:, ::1], boolean, boolean, int64, boolean, boolean, float64[:, ::1], boolean, "
            f"{f}, {f})")


def ptx_targets():
    """``[(kernel_pyfunc, [signature, ...])]``: every fused kernel and the signatures it is
    launched with, for compiling to PTX offline (``numba.cuda.compile_ptx(pyfunc, sig,
    cc=(9, 0))``): one kernel body per dtype (the layer count, minibatch and placement of
    the parameters are run-time arguments)."""
    out = []
    for dt in _FLOATS:
        if dt not in _KERNELS:
            _KERNELS[dt] = _build(dt)
        out.append((_KERNELS[dt][0], [signature(dt)]))
    return out


def warmup(dtype="float32") -> None:
    """Compile the fused kernel for ``dtype`` (on a GPU; nothing to compile under the simulator)."""
    from fastnet.kernels._cuda_api import SIMULATOR

    k = _kernel(dtype)
    if not SIMULATOR:
        k.compile(signature(dtype))


# =====================================================================================
# Python side.
# =====================================================================================

def _is_device(x) -> bool:
    from fastnet.kernels._cuda_api import SIMULATOR

    if isinstance(x, np.ndarray):
        return SIMULATOR
    return hasattr(x, "__cuda_array_interface__")


def _meta(name, x):
    """(dtype, shape, C-contiguous) of a device array (NumPy under the simulator)."""
    if not _is_device(x):
        where = ("a NumPy array: the fused engine runs on the GPU; use the 'compiled' engine on the CPU"
                 if isinstance(x, np.ndarray) else type(x).__name__)
        raise TypeError(f"{name} must be a CuPy array (an object with __cuda_array_interface__). Actual: {where}")
    if isinstance(x, np.ndarray):
        return x.dtype, x.shape, x.flags.c_contiguous
    cai = x.__cuda_array_interface__
    shape, dt = tuple(cai["shape"]), np.dtype(cai["typestr"])
    strides = cai.get("strides")
    ok, expected = True, dt.itemsize
    if strides is not None:
        for d, s in zip(reversed(shape), reversed(strides)):
            if d > 1 and s != expected:
                ok = False
            expected *= d
    return dt, shape, ok


def _to_host(a):
    """A device array as a NumPy array (NumPy under the simulator passes through)."""
    if isinstance(a, np.ndarray):
        return a
    return a.get()


def _namespace(x):
    from array_api_compat import array_namespace

    return array_namespace(x)


class FusedEpoch:
    """The fused engine's working copy of K networks' parameters, on the device.

    Ws: L device arrays ``Ws[l]`` ``(K, n_l, n_(l+1))``; bs: L arrays ``(K, n_(l+1))``; all
    C-contiguous, one dtype (float32 or float64), CuPy (NumPy under the simulator); they are
    copied in (:meth:`load`) and back (:meth:`store`). etas, decays: K floats (``decay_k = 1
    - eta_k lmbda_k / n``, on the weights only). batch_size: rows per step. quadratic:
    quadratic cost on a sigmoid output, else cross-entropy on softmax (with labels).
    threads, on_chip, state_on_chip: None to plan (see :func:`launch_config`). A shape that
    does not fit is a ``ValueError`` with the plan's reason. Everything is checked before
    anything is launched.

    The tables, as :class:`fastnet.kernels.epoch_cpu.StackRunner` takes them: codes, every
    layer's activation code (``kernels/_math.py``: hidden layers from ``HIDDEN_CODES``, the
    output SIGMOID, SOFTMAX or IDENTITY; default: sigmoid hidden layers and the output
    ``quadratic`` implies); optimizer, a :class:`fastnet.optim.Optimizer` other than SGD
    with its ``state`` (an :class:`fastnet.optim.State` over the canonical ``(K, ...)``
    device arrays, s1 / s2 = W_0..W_(L-1) then b_0..b_(L-1), and its step count ``t``:
    read here, written back by :meth:`store`) and ``l2s`` (K floats, ``lmbda_k / n``, on
    the weights only). Plain SGD (no optimizer, or ``optim.SGD``) keeps the fused update.
    :meth:`run` takes integer labels, or float targets ``(n, n_L)`` (cost="mse": the
    output delta is ``a - t``)."""

    def __init__(self, Ws, bs, etas, decays, batch_size, quadratic, *, threads=None, on_chip=None, codes=None,
                 optimizer=None, state=None, l2s=None, state_on_chip=None, metered=False):
        Ws, bs = list(Ws), list(bs)
        if not Ws or len(Ws) != len(bs):
            raise ValueError(f"FusedEpoch needs one bias array per weight array (at least one). "
                             f"Actual: {len(Ws)} weights, {len(bs)} biases")
        metas = [_meta(f"Ws[{l}]", W) for l, W in enumerate(Ws)] + [_meta(f"bs[{l}]", b) for l, b in enumerate(bs)]
        dt = metas[0][0]
        if dt not in _FLOATS:
            raise TypeError(f"FusedEpoch: dtype must be float32 or float64. Actual: {dt}")
        L = len(Ws)
        wm, bm = metas[:L], metas[L:]
        ok = all(len(s) == 3 for _, s, _ in wm)
        K = wm[0][1][0] if ok else 0
        sizes = [wm[0][1][1]] + [s[2] for _, s, _ in wm] if ok else []
        for l in range(L):
            (wd, ws, wc), (bd, bsh, bc) = wm[l], bm[l]
            if not (ok and wd == dt and bd == dt and ws == (K, sizes[l], sizes[l + 1]) and bsh == (K, sizes[l + 1])):
                raise ValueError(f"FusedEpoch: layer {l} must be W (K, n_l, n_(l+1)) and b (K, n_(l+1)), one "
                                 f"dtype, chained. Actual: W {ws} {wd}, b {bsh} {bd}")
            if not (wc and bc):
                raise ValueError(f"FusedEpoch: layer {l}'s W and b must be C-contiguous")
        if K < 1 or min(sizes) < 1:
            raise ValueError(f"FusedEpoch needs at least one network and no empty layer. Actual: K={K}, sizes {sizes}")
        etas, decays = [float(e) for e in etas], [float(d) for d in decays]
        if len(etas) != K or len(decays) != K:
            raise ValueError(f"FusedEpoch: need K={K} etas and decays. Actual: {len(etas)} etas, {len(decays)} decays")
        if not all(np.isfinite(etas + decays)):
            raise ValueError(f"FusedEpoch: etas and decays must be finite. Actual: {etas}, {decays}")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Actual: {batch_size}")
        if codes is None:
            codes = [_math.SIGMOID] * (L - 1) + [_math.SIGMOID if quadratic else _math.SOFTMAX]
        codes = [int(c) for c in codes]
        outputs = (_math.SIGMOID, _math.SOFTMAX, _math.IDENTITY)
        if len(codes) != L or any(c not in _math.HIDDEN_CODES for c in codes[:-1]) or codes[-1] not in outputs:
            raise ValueError(f"FusedEpoch: codes must be {L} activation codes, hidden layers from "
                             f"{_math.HIDDEN_CODES} and the output from {outputs}. Actual: {codes}")
        stateful = optimizer is not None and optimizer.code != _math.OPT_SGD
        if stateful:
            if optimizer.code not in _math.OPT_CODES:
                raise ValueError(f"FusedEpoch: optimizer code must be one of {_math.OPT_CODES}. "
                                 f"Actual: {optimizer.code}")
            if state is None or len(state.s1) != 2 * L or len(state.s2) != 2 * L:
                raise ValueError(f"FusedEpoch: an optimizer other than SGD needs its state (2 L = {2 * L} "
                                 f"arrays per moment). Actual: {None if state is None else len(state.s1)}")
            l2s = [0.0] * K if l2s is None else [float(v) for v in l2s]
            if len(l2s) != K or not all(np.isfinite(l2s)):
                raise ValueError(f"FusedEpoch: need K={K} finite l2s (lmbda / n). Actual: {l2s}")
        cfg = launch_config(sizes, batch_size, dt, K, threads=threads, on_chip=on_chip, stateful=stateful,
                            state_on_chip=state_on_chip)
        if not cfg.fits:
            raise ValueError(f"the fused engine cannot run sizes {sizes} at minibatch {batch_size}: {cfg.reason}")
        self.K, self.sizes, self.dtype, self.batch_size = K, sizes, dt, batch_size
        self.quadratic, self.config = bool(quadratic), cfg
        self.etas, self.decays = etas, decays
        self.codes, self.optimizer = codes, optimizer if stateful else None
        self.state = state if stateful else None
        self._ocode = int(optimizer.code) if stateful else _math.OPT_SGD
        self._hyper = tuple(float(h) for h in optimizer.hyper()) if stateful else (0.0, 0.0, 0.0)
        self.t = int(state.t) if stateful else 0      # the optimizer's step count (all nets step together)
        xp = self._xp = _namespace(Ws[0])
        woff, boff, off = [], [], 0
        for i, o in zip(sizes[:-1], sizes[1:]):
            woff.append(off)
            boff.append(off + i * o)
            off += i * o + o
        self._P, self._woff, self._boff = off, woff, boff
        aoff = np.concatenate([[0], np.cumsum([batch_size * o for o in sizes[1:]])])
        aoff = np.concatenate([aoff[:-1], aoff[-1:]])   # L offsets, then the total (H)
        host = {"sizes": np.asarray(sizes, np.int64), "woff": np.asarray(woff, np.int64),
                "boff": np.asarray(boff, np.int64), "aoff": aoff.astype(np.int64),
                "codes": np.asarray(codes, np.int64)}
        self._ints = {k: xp.asarray(v) for k, v in host.items()}
        self._decays = xp.asarray(np.asarray(decays, dt))
        # per net: eta, l2, then the optimizer's h0..h2, in the dtype (the optimizer's rule)
        hyp = [[e, l2, *self._hyper] for e, l2 in zip(etas, l2s)] if stateful else [[0.0] * 5]
        self._hyp = xp.asarray(np.asarray(hyp, np.float64).astype(dt))
        self._scales = {}   # n -> (K, 2) device array: eta/B, eta/m_last (another optimizer: 1/B, 1/m_last)
        self._T0 = xp.zeros((1, 1), dtype=Ws[0].dtype)    # "no target matrix"
        self._y0 = xp.zeros(1, dtype=xp.int64)             # "no labels" (a target matrix's run)
        self._f0 = xp.ones((1, 2), dtype=Ws[0].dtype)      # no optimizer factors (SGD)
        self.params = xp.zeros((K, self._P), dtype=Ws[0].dtype)
        # the optimizer's state: S1 then S2, each laid out as params; a (K, 1) stand-in for SGD
        self.opt_state = xp.zeros((K, 2 * self._P if stateful else 1), dtype=Ws[0].dtype)
        # the minibatch metrics per net (cost, samples right, mse's squared error per output)
        self.metered = bool(metered)
        self.msum = xp.zeros((K, 2 + sizes[-1]) if metered else (1, 1), dtype=xp.float64)
        self.load(Ws, bs)

    # --- the minibatch metrics -------------------------------------------------------------

    def take_metrics(self):
        """The minibatch metrics summed since the last call, ``(K, 2 + n_L)`` float64 on the
        host (per net: the cost, the samples classified right, and cost="mse"'s squared
        error per output, over the samples it trained on), and zero them; None when not
        ``metered``. Waits for the launches queued before it."""
        if not self.metered:
            return None
        out = np.array(_to_host(self.msum), dtype=np.float64)
        self.msum[...] = 0.0
        return out

    def put_metrics(self, sums) -> None:
        """Set the sums :meth:`take_metrics` goes on from (``(K, 2 + n_L)``, e.g. a resume's)."""
        if self.metered:
            self.msum[...] = self._xp.asarray(np.asarray(sums, np.float64).reshape(self.msum.shape))

    # --- parameters in and out ---------------------------------------------------------

    def _views(self):
        """Per layer: (weight offset, weight count, weight shape (K, n_l, n_(l+1)), bias offset, bias count)."""
        K = self.K
        return [(w0, i * o, (K, i, o), b0, o)
                for w0, b0, i, o in zip(self._woff, self._boff, self.sizes[:-1], self.sizes[1:])]

    def _sets(self, Ws, bs):
        """(flat device array, canonical Ws, canonical bs) of the parameters, then of the state's S1 and S2."""
        sets = [(self.params, list(Ws), list(bs))]
        if self.state is not None:
            L, P = len(self.sizes) - 1, self._P
            st = self.state
            sets += [(self.opt_state[:, :P], st.s1[:L], st.s1[L:]), (self.opt_state[:, P:], st.s2[:L], st.s2[L:])]
        return sets

    def load(self, Ws, bs):
        """Re-read the parameters from ``Ws`` / ``bs`` (shaped as for the constructor), and
        the optimizer's state and step count; a non-finite parameter or a misshapen array is
        a ``ValueError`` and changes nothing."""
        xp, K = self._xp, self.K
        sets = self._sets(Ws, bs)
        for which, (_, Wl, bl) in zip(("Ws", "state.s1", "state.s2"), sets):
            for l, (W, b) in enumerate(zip(Wl, bl)):
                for name, a, shape in ((f"{which}[{l}]", W, (K, self.sizes[l], self.sizes[l + 1])),
                                       (f"{which}[{l}] (bias)" if which != "Ws" else f"bs[{l}]", b,
                                        (K, self.sizes[l + 1]))):
                    d, s, _ = _meta(name, a)
                    if d != self.dtype or tuple(s) != shape:
                        raise ValueError(f"FusedEpoch.load: {name} must be {shape} {self.dtype}. Actual: {s} {d}")
        if not all(bool(xp.all(xp.isfinite(a))) for a in list(Ws) + list(bs)):
            raise ValueError("FusedEpoch: the parameters must be finite (a NaN or inf is in Ws or bs)")
        for flat, Wl, bl in sets:
            for l, (w0, nw, wshape, b0, nb) in enumerate(self._views()):
                flat[:, w0:w0 + nw] = xp.reshape(Wl[l], (K, nw))
                flat[:, b0:b0 + nb] = bl[l]
        if self.state is not None:
            self.t = int(self.state.t)

    def store(self, Ws, bs):
        """Write the current parameters into ``Ws`` / ``bs`` in place (and the optimizer's
        state into its arrays, its step count into ``state.t``)."""
        xp = self._xp
        for flat, Wl, bl in self._sets(Ws, bs):
            for l, (w0, nw, wshape, b0, nb) in enumerate(self._views()):
                Wl[l][...] = xp.reshape(flat[:, w0:w0 + nw], wshape)
                bl[l][...] = flat[:, b0:b0 + nb]
        if self.state is not None:
            self.state.t = self.t

    # --- training ----------------------------------------------------------------------

    def run(self, X, y, order, s0, s1):
        """Steps ``[s0, s1)`` of one epoch, in one launch: step s trains every net on the rows
        ``order[s * batch_size : min((s + 1) * batch_size, n)]``. X (n, n_0) C-contiguous
        in the parameters' dtype; y (n,) int64 labels in ``[0, n_L)``, or (n, n_L) float
        targets in X's dtype, C-contiguous (cost="mse"); order (n,) int64 row indices in
        ``[0, n)``; all device arrays. Everything is checked first (a bad argument launches
        nothing). Returns the samples trained per net; asynchronous on a GPU (queued on
        CuPy's current stream)."""
        xd, xs, xc = _meta("X", X)
        if not (xd == self.dtype and len(xs) == 2 and xs[1] == self.sizes[0] and xc):
            raise TypeError(f"X must be a C-contiguous {self.dtype} device array (n, {self.sizes[0]}). "
                            f"Actual: {xd} {xs}{'' if xc else ' (strided)'}")
        n = xs[0]
        nL = self.sizes[-1]
        yd, ys, yc = _meta("y", y)
        targets = len(ys) == 2
        if targets and not (yd == self.dtype and tuple(ys) == (n, nL) and yc):
            raise TypeError(f"y as targets must be a C-contiguous {self.dtype} device array ({n}, {nL}). "
                            f"Actual: {yd} {ys}{'' if yc else ' (strided)'}")
        checks = [("order", order)] if targets else [("y", y), ("order", order)]
        for name, a in checks:
            d, s, c = _meta(name, a)
            if not (d == np.int64 and tuple(s) == (n,) and c):
                raise TypeError(f"{name} must be a C-contiguous int64 device array ({n},). Actual: {d} {s}")
        s0, s1 = int(s0), int(s1)
        B = self.batch_size
        n_steps = -(-n // B)
        if not 0 <= s0 <= s1 <= n_steps:
            raise ValueError(f"need 0 <= s0 <= s1 <= {n_steps} (steps in an epoch of {n} samples). "
                             f"Actual: s0={s0}, s1={s1}")
        if s0 == s1 or n == 0:
            return 0
        xp = self._xp
        rows = order[s0 * B:min(s1 * B, n)]
        lo, hi = int(xp.min(rows)), int(xp.max(rows))       # the kernel reads X at these, unchecked
        if lo < 0 or hi >= n:
            raise ValueError(f"order must hold row indices in [0, {n}). Actual: values from {lo} to {hi} "
                             f"in steps {s0}..{s1 - 1}")
        if not targets:
            ylo, yhi = int(xp.min(y)), int(xp.max(y))
            if ylo < 0 or yhi >= nL:
                raise ValueError(f"labels y must be in [0, {nL}) (one per output unit). "
                                 f"Actual: from {ylo} to {yhi}")
        scales = self._scales.get(n)
        if scales is None:
            m_last = n - (n_steps - 1) * B
            sgd = self.state is None
            host = np.asarray([[e / B, e / m_last] if sgd else [1.0 / B, 1.0 / m_last] for e in self.etas],
                              np.float64).astype(self.dtype)
            scales = self._scales[n] = xp.asarray(host)
        factors = self._f0
        if self.state is not None:      # the optimizer's per-step factors, float64 as the CPU loop, then the dtype
            h = self._hyper
            factors = xp.asarray(np.asarray([_math.opt_factors(self._ocode, h[0], h[1], float(self.t + i))
                                             for i in range(1, s1 - s0 + 1)], np.float64).astype(self.dtype))
        T, yk = (y, self._y0) if targets else (self._T0, y)
        self._launch(X, yk, T, targets, order, s0, s1, scales, factors)
        if self.state is not None:
            self.t += s1 - s0
        return min(s1 * B, n) - s0 * B

    def _launch(self, X, y, T, targets, order, s0, s1, scales, factors):
        from fastnet.kernels._cuda_api import SIMULATOR, current_stream, device_view

        cfg, t = self.config, self.dtype.type
        kernel = _kernel(self.dtype)
        ints = self._ints
        args = [X, y, T, order, s0, s1, self.batch_size, self.params, self.opt_state, ints["sizes"], ints["woff"],
                ints["boff"], ints["aoff"], ints["codes"], scales, self._decays, self._hyp, factors, self.quadratic,
                bool(targets), self._ocode, cfg.params_on_chip, cfg.state_on_chip, self.msum, self.metered, t(1),
                t(0)]
        if SIMULATOR:
            kernel[cfg.grid, cfg.threads, 0, cfg.dynamic_shared](*args)
            return
        args = [device_view(a) if hasattr(a, "__cuda_array_interface__") else a for a in args]
        if cfg.opt_in:
            _allow_dynamic_shared(kernel, self.dtype, cfg.dynamic_shared)
        kernel[cfg.grid, cfg.threads, current_stream(), cfg.dynamic_shared](*args)


_opted_in: set = set()


def _allow_dynamic_shared(kernel, dtype, nbytes) -> None:
    """Let the kernel use ``nbytes`` of dynamic shared memory (past 48 KB this needs the
    max-dynamic-shared-memory attribute), once per dtype and size."""
    key = (np.dtype(dtype), nbytes)
    if key in _opted_in:
        return
    from fastnet.kernels._cuda_api import allow_dynamic_shared

    allow_dynamic_shared(kernel, signature(dtype), nbytes)
    _opted_in.add(key)
