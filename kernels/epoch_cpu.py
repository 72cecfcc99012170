"""Whole minibatch-SGD steps in one compiled call: the CPU fast path of ``Network.fit``
(one net) and of :class:`fastnet.NetworkStack` (K same-shape nets, one shared order).

:class:`StackRunner` holds a working copy of the K networks' parameters in its own layout
and runs steps ``[s0, s1)`` of an epoch -- gather the batch, forward, output delta,
backward, SGD update -- without returning to Python, so a minibatch of 10 costs what its
arithmetic costs and not the ~20 Python-level kernel calls of the step path
(the ``step`` engine). The callers run it in chunks of about :data:`CHUNK_SAMPLES` samples
and, between chunks, update the progress bar and check for Ctrl-C. It is the ``compiled``
engine of :mod:`fastnet.engines`, which takes it for NumPy networks whose steps are small
(``engines.COMPILED_MAX_MACS``); bigger steps are BLAS's work.

Net ``k`` does what a separate run with its own ``eta_k`` and ``decay_k`` does on that
order: the same steps, the partial last batch with scale ``eta_k / m``, ``W <- decay_k W
- (eta_k / m) a.T @ delta`` and ``b <- b - (eta_k / m) sum(delta)`` -- to rounding: the
products use FMA and the scale is applied to delta before the sums, so float64 agrees
with the step path and with a plain NumPy loop to ~1e-13 relative over the test runs, not
bitwise. (Over many steps at a large learning rate SGD amplifies any rounding
difference, as between the njit and xp step paths; the accuracy reached is the same to
the noise of SGD.)

Layout. The nets are split into contiguous groups, one per thread. Within a group, net
``j`` owns columns ``j * n_{l+1} .. (j + 1) * n_{l+1}`` of every activation and delta
buffer ``(B, C_l)`` and of the biases, so the element-wise steps (bias + sigmoid, the
Hadamard step, the scaling by ``-eta_j / m``, the bias sums) run over whole rows for all
the nets at once, with per-column scale and decay vectors. Layer 0 (``784 x 30`` for
Nielsen's net: 98 % of the arithmetic) is one WIDE matrix ``(n_0, C_0)`` holding all the
group's nets side by side, ``C_0`` = ``g * n_1`` rounded up to a whole SIMD vector (the
padding columns are zero, get a zero delta and stay zero; K = 8, ``n_1`` = 30 on two
threads: 120 columns, padded to 128 with AVX-512's 16 lanes, 120 with AVX2's 8). So its forward pass is one product ``X_b @ W0``,
and its update ``W0 <- decay_c * W0 + X_b.T @ (-eta_c / m * delta0)`` one pass with a
decay per column. Layers >= 1 are small (``30 x 10``): ``(g, n_l, n_{l+1})`` arrays,
one product per net, reading and writing its columns of the wide buffers in place.

One net on two threads (``split``, the default for a lone net with two usable CPUs on
x86-64 Linux): layer 0's inputs are halved at row ``h = n_0 / 2`` of W0. The second
thread computes ``X_b[:, h:] @ W0[h:]`` into its own buffer, hands it over, prefetches
the next batch's rows while it waits for the layer-0 delta, then updates rows ``h ..`` of
W0 (and their optimizer state); the first
does ``X_b[:, :h] @ W0[:h]``, adds the other half, runs the rest of the step and updates
rows ``.. h``. Two one-way flags per step (``simd.atomic_store`` / ``wait_for``: spin with
``pause``, then yield the CPU), no locks, nothing allocated. Whoever computes them, the two
halves are summed in that order (one thread does both otherwise), so 1 and 2 threads give
the same bits (``tests/test_epoch_split.py``). ``bench/bench_split.py`` measures one
thread against two (Intel Xeon AVX-512, 2026-12-07: Nielsen's epoch 1.35x faster, ReLU +
Adam at ``[784, 100, 10]`` b32 1.65x).

Threads. Given the shared batch the groups are independent: each has its own parameters
and buffers, reads the batch's rows of X in place (no copy), and runs the whole chunk of
steps in one ``nogil`` call on a pool thread (the first group on the calling thread); no
synchronisation per step. Every column is computed by the same operations in the same
order whatever its group or its place in a vector (float64 activations, whose ``exp`` a
vector maths library might round by lane, are taken net by net), so the results do not
depend on the number of threads: bitwise, tested. A net that diverges (NaN) leaves the
others alone.

Arithmetic. The products are :func:`fastnet.kernels.simd.mm` and
:func:`~fastnet.kernels.simd.upd`: register-blocked SIMD loops with one fused
multiply-add per term, summed in index order from 0. Layer 0 uses the widest vectors
the CPU has (:data:`WIDE_BYTES`); the small layers use 32-byte vectors, whose 8 float32
lanes fit their 10 outputs. The element-wise maths is that of :mod:`fastnet.kernels.cpu`
and :mod:`fastnet.kernels._math`. No BLAS, so no BLAS threads compete, and nothing is
allocated per step (the next minibatch's rows are prefetched while the current one
trains). Subnormal numbers are flushed to zero while the loop runs (x86 MXCSR FTZ and DAZ,
set on each loop thread and put back when the call returns: ``simd.without_subnormals``),
as XLA does for JAX: saturated sigmoids make a(1 - a) and the deltas behind it
subnormal, and every operation on one costs x86 a microcode assist. Without the flush
Nielsen's Fashion-MNIST epoch went from 0.05 s (epoch 1) to 0.28 s (epoch 30); with it,
0.05 s throughout. A value below float32's 1.2e-38 (float64's 2.2e-308) becomes 0.

Tried and dropped: 10-row register blocks (the ten row addresses spill general
registers: slower); skipping the input columns that are zero in the whole batch (finding
and packing them cost what they saved); gathering the batch into a buffer first (no
faster than reading X in place).

Compiled code is cached on disk, one version per dtype and number of layers.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from fastnet.kernels import _math
from fastnet.kernels.cpu import bias_act_rows, bias_softmax_rows, delta_labels_rows, metrics_rows, sqerr_row
from fastnet.kernels.simd import (WIDE_BYTES, X86_64_LINUX, atomic_store, mm, narrow_zero, prefetch, upd, wait_for,
                                  wide_zero, without_subnormals)
from fastnet.kernels import threads as _threads
from fastnet.kernels.threads import spread, usable_cpus

__all__ = ["StackRunner", "warmup", "CHUNK_SAMPLES", "MAX_CHUNK_STEPS", "WIDE_BYTES"]

#: The callers run about this many samples per call of :meth:`StackRunner.run` (256
#: steps at a minibatch of 10), so that Ctrl-C and the progress bar stay prompt.
CHUNK_SAMPLES = 2560
#: ... and never more than this many steps per call.
MAX_CHUNK_STEPS = 256


# =====================================================================================
# Element-wise steps on whole rows of a group's (B, C) buffers (first m rows). Plain
# loops over the columns: LLVM vectorizes them, with the same result per element.
# =====================================================================================

@njit(cache=True)
def _scale_rows(S, D, nsc, m):
    """``S[:m] = nsc * D[:m]`` (nsc: the per-column ``-eta / m``); S may be D."""
    for i in range(m):
        for c in range(D.shape[1]):
            S[i, c] = nsc[c] * D[i, c]


@njit(cache=True)
def _hadamard_rows(G, A, nsc, m, scaled, code):
    """``G[:m] <- G * f'(z)`` from A (``_math.backward_delta`` for sigmoid, else
    ``_math.act_grad`` of activation ``code``), times nsc if scaled."""
    one = G.dtype.type(1)
    if code == _math.SIGMOID:
        for i in range(m):
            for c in range(G.shape[1]):
                d = _math.backward_delta(G[i, c], A[i, c], one)
                G[i, c] = nsc[c] * d if scaled else d
        return
    for i in range(m):
        for c in range(G.shape[1]):
            d = _math.act_grad(G[i, c], A[i, c], code, one)
            G[i, c] = nsc[c] * d if scaled else d


@njit(cache=True)
def _colsum_into(S, out, m):
    """``out = S[:m].sum(axis=0)`` in row order (the gradient of a bias, delta pre-scaled)."""
    n = S.shape[1]
    for c in range(n):
        out[c] = S[0, c]
    for i in range(1, m):
        for c in range(n):
            out[c] += S[i, c]


@njit(cache=True)
def _bias_add_colsum(S, b, acc, m):
    """``b += S[:m].sum(axis=0)``: the column sums first (row order, in scratch acc), then
    one add, as ``b - scale * sum(delta)`` with the scale already in S."""
    _colsum_into(S, acc, m)
    for c in range(S.shape[1]):
        b[c] = b[c] + acc[c]


@njit(cache=True)
def _activate(Z, b, m, g, width, code):
    """``Z[:m] <- f(Z + b)`` for activation ``code``, softmax over each net's ``width`` columns.

    float32 sigmoid, relu and identity are plain arithmetic, the same in every lane whether
    LLVM vectorizes them or not: whole rows at once. float64 sigmoid and tanh call libm,
    which a vector maths library may round differently from the scalar one: net by net, so
    that a net's results do not depend on where it sits in its group (nor on the thread
    count)."""
    if code == _math.SOFTMAX:
        for j in range(g):
            bias_softmax_rows(Z[:, j * width:(j + 1) * width], b[j * width:(j + 1) * width], 0, m)
    elif code == _math.RELU or code == _math.IDENTITY or (code == _math.SIGMOID and Z.itemsize == 4):
        bias_act_rows(Z, b, code, 0, m)
    else:
        for j in range(g):
            bias_act_rows(Z[:, j * width:(j + 1) * width], b[j * width:(j + 1) * width], code, 0, m)


# =====================================================================================
# The steps of one group of g nets.
# =====================================================================================

@njit(cache=True, nogil=True)
def _group_steps(X, y, T, order, s0, s1, quadratic, sizes, g, W0, Ws, bs, dvs, ecols, nscs, acts,
                 deltas, sdeltas, rows, acc, WT, xrows, yb, codes, opt, gW0, gWs, gbs, st0, sts, sbs,
                 l2s, zdv, lrs, msum, h, role, part, sync, tick0):
    """Steps ``s0 .. s1 - 1`` of an epoch for one group of g nets, in place; returns the
    samples done per net.

    X (n, n_0), y (n,) int64, order (n,) int64 as in :meth:`StackRunner.run`; sizes
    (L + 1,) int64, the layer sizes; g the number of nets. Net j of the group owns
    columns ``j * n_{l+1} .. (j + 1) * n_{l+1}`` of every (B, C_l) buffer: C_0 = g * n_1
    rounded up to a whole wide vector (zero padding), C_l = g * n_{l+1} above. W0
    (n_0, C_0): the wide layer 0; Ws[l] (g, n_l, n_{l+1}) for l >= 1 (Ws[0] unused).
    bs, dvs, nscs (C_l,): biases, per-column decay (padding: 1), scratch for the
    per-column ``-eta / m``; ecols (C_l,) float64: per-column eta (padding: 0). acts,
    deltas, sdeltas (B, C_l) (sdeltas[0] unused: deltas[0] holds layer 0's delta already
    scaled). rows[l] (B,) int64: ``i * C_l``, the row offsets of those buffers. acc:
    scratch of max C_l, WT of max n_l * n_{l+1}; xrows (B,) int64 and yb (B,): the
    batch's row offsets in X and labels. All C-contiguous, X's dtype unless said.

    The tables: codes (L,) int64, each layer's activation code (``_math``: the output's
    is SIGMOID, SOFTMAX or IDENTITY); T (n, n_L) float targets, read instead of y when
    ``T.shape[0] == n`` (cost="mse": delta = a - t; the callers pass a (0, 0) T otherwise). opt (6,) float64: the optimizer's
    code, h0, h1, h2, its step count t (advanced here) and the dtype's smallest normal
    number (state below it is flushed to 0); lrs: per-column eta in X's dtype. For plain SGD (code 0) the
    update is fused into the products as above; for any other the products write the
    mean gradients into gW0 / gWs / gbs (zdv: zeros, the "decay" that overwrites) and
    ``_math.opt_block`` applies the rule afterwards with state st0 / sts / sbs
    (pairs (S1, S2) laid out like W0 / Ws / bs), per-column eta (ecols, lrs) and L2 (l2s,
    ``lmbda / n``).

    msum (g, 2 + n_L) float64: each net's training metrics from its minibatches, added to
    from the outputs of each forward pass (``cpu.metrics_rows`` / ``sqerr_row``: the cost,
    the samples classified right, mse's squared error per output); a (0, 0) msum skips them.

    Two threads on one group (``role`` 1 and 2; 0: this thread does everything). Layer 0's
    inputs are split at row ``h`` of W0 (0: not split): its forward product is the sum of
    two FMA chains, ``X[:, :h] @ W0[:h]`` into acts[0] and ``X[:, h:] @ W0[h:]`` into
    ``part`` (B, C_0), added after; so the numbers are the same whether one thread does
    both (role 0) or role 2 does the second on another thread. Role 2 also updates rows
    ``h ..`` of W0 (and their optimizer state) from the delta role 1 computes; role 1 does
    the rest. They hand over through the int64 flags ``sync`` (release/acquire): ``sync[0]``
    = the last step whose ``part`` is ready (role 2), ``sync[8]`` = the last step whose
    layer-0 delta is ready (role 1), counted from ``tick0``.
    """
    sgd = opt[0] == 0
    i0 = s1 - s1                            # int64 0 and 1, not literals: a literal argument
    i1 = i0 + 1                             # makes Numba compile the callee once more
    metered = msum.shape[0] == g
    mkind = 0 if quadratic else 1
    ocode = int(opt[0])
    targets = T.shape[0] == X.shape[0]
    n = X.shape[0]
    n0 = X.shape[1]
    n_layers = sizes.shape[0] - 1            # the tuples may be longer: see padded_depth
    B = yb.shape[0]
    C0 = W0.shape[1]
    Xf = X.ravel()
    wv = wide_zero(W0)
    nv = narrow_zero(W0)
    line = max(1, 64 // X.itemsize)
    top = n_layers - 1
    last_m = -1
    for step in range(s0, s1):
        k = step * B
        m = min(B, n - k)
        for i in range(m):                     # the batch: rows of X read in place
            r = order[k + i]
            xrows[i] = r * n0
            yb[i] = r if targets else y[r]
        tick = tick0 + (step - s0) + 1
        if role == 0:                          # start fetching the next one (split: role 2, below)
            _prefetch_rows(X, order, k + m, min(k + m + B, n), n0, line)
        if m != last_m and role != 2:          # per-column -eta / m (the last batch is short)
            for l in range(n_layers):      # (another optimizer: 1 / m, its mean gradient)
                for c in range(nscs[l].shape[0]):
                    if sgd:
                        nscs[l][c] = X.dtype.type(-(ecols[l][c] / m))
                    else:
                        nscs[l][c] = X.dtype.type(1.0 / m) if ecols[l][c] != 0 else X.dtype.type(0)
            last_m = m

        # forward: layer 0 of all the nets at once (in two halves of its inputs when h > 0),
        # then layers >= 1 net by net
        for half in range(2 if h > 0 else 1):  # one call site: each inlined copy costs compile time
            if (half == 0 and role != 2) or (half == 1 and role != 1):
                p0 = 0 if half == 0 else h
                p1 = n0 if h == 0 else (h if half == 0 else n0)
                mm(Xf, p0, xrows, W0.ravel(), p0 * C0, C0, (acts[0] if half == 0 else part).ravel(), 0, C0,
                   m, p1 - p0, C0, wv)
        if h > 0:
            if role == 2:                      # hand the half over; wait for the delta
                atomic_store(sync, 0, tick)
                # the wait is role 1's serial part of the step (~1/3 of it): meanwhile fetch
                # the whole next batch, both halves (measured: 5-13 % faster a step than
                # each role fetching its own half before its product)
                _prefetch_rows(X, order, k + m, min(k + m + B, n), n0, line)
                wait_for(sync, 8, tick)
                _w0_update(Xf, xrows, deltas[0], W0, gW0, dvs[0], zdv[0], h, n0, m, sgd, wv)
                if not sgd:
                    opt[4] += 1.0
                    _w0_opt(W0, gW0, st0, h, n0, g, sizes[1], ocode, lrs[0], l2s[0], opt)
                continue
            if role == 1:
                wait_for(sync, 0, tick)
            a0 = acts[0]
            for i in range(m):
                for c in range(C0):
                    a0[i, c] += part[i, c]
        _activate(acts[0], bs[0], m, g, sizes[1], codes[0])
        for l in range(1, n_layers):
            nin = sizes[l]
            nout = sizes[l + 1]
            Cout = acts[l].shape[1]
            for j in range(g):
                mm(acts[l - 1].ravel(), j * nin, rows[l - 1], Ws[l][j].ravel(), 0, nout,
                   acts[l].ravel(), j * nout, Cout, m, nin, nout, nv)
            _activate(acts[l], bs[l], m, g, nout, codes[l])

        # output delta, net by net (labels pick each net's own column)
        nL = sizes[n_layers]
        if metered:                            # the minibatch's metrics, from its outputs
            for j in range(g):
                if targets:
                    for i in range(m):
                        sqerr_row(acts[top], i, j * nL, nL, T, yb[i], msum, j)
                else:
                    metrics_rows(acts[top], yb, j * nL, nL, m, mkind, msum, j)
        if targets:                            # cost="mse": a - t, t the rows of T
            aL, dL = acts[top], deltas[top]
            for i in range(m):
                r = yb[i]
                for j in range(g):
                    for c in range(nL):
                        dL[i, j * nL + c] = aL[i, j * nL + c] - T[r, c]
        else:
            for j in range(g):
                delta_labels_rows(acts[top][:, j * nL:(j + 1) * nL], yb,
                                  deltas[top][:, j * nL:(j + 1) * nL], quadratic, 0, m)
        if top == 0:
            _scale_rows(deltas[0], deltas[0], nscs[0], m)

        # backward through layers >= 1: the previous layer's delta uses the old W_l
        for l in range(top, 0, -1):
            nin = sizes[l]
            nout = sizes[l + 1]
            Cin = acts[l - 1].shape[1]
            Cout = acts[l].shape[1]
            _scale_rows(sdeltas[l], deltas[l], nscs[l], m)
            wt = WT[:nin * nout]
            for j in range(g):
                Wj = Ws[l][j]
                for p in range(nin):           # W_l[j] transposed, for delta @ W.T
                    for q in range(nout):
                        wt[q * nin + p] = Wj[p, q]
                mm(deltas[l].ravel(), j * nout, rows[l], wt, 0, nin,
                   deltas[l - 1].ravel(), j * nin, Cin, m, nout, nin, nv)
                if sgd:
                    upd(acts[l - 1].ravel(), j * nin, rows[l - 1], sdeltas[l].ravel(), j * nout,
                        Cout, Wj.ravel(), 0, nout, dvs[l], j * nout, m, nin, nout, nv)
                else:
                    upd(acts[l - 1].ravel(), j * nin, rows[l - 1], sdeltas[l].ravel(), j * nout,
                        Cout, gWs[l][j].ravel(), 0, nout, zdv[l], j * nout, m, nin, nout, nv)
            if sgd:
                _bias_add_colsum(sdeltas[l], bs[l], acc, m)
            else:
                _colsum_into(sdeltas[l], gbs[l], m)
            _hadamard_rows(deltas[l - 1], acts[l - 1], nscs[l - 1], m, l == 1, codes[l - 1])

        # layer 0, all the nets at once (rows h .. on the other thread: role 1)
        if role == 1:
            atomic_store(sync, 8, tick)        # its delta is ready
        r1 = h if role == 1 else n0
        _w0_update(Xf, xrows, deltas[0], W0, gW0, dvs[0], zdv[0], i0, r1, m, sgd, wv)
        if sgd:
            _bias_add_colsum(deltas[0], bs[0], acc, m)
            continue
        _colsum_into(deltas[0], gbs[0], m)

        # another optimizer: its rule over every parameter, after the whole gradient
        # (_math.opt_block: one vectorized loop per rule; the padding columns are skipped)
        opt[4] += 1.0
        f0, f1 = _math.opt_factors(ocode, opt[1], opt[2], opt[4])
        t = X.dtype.type
        h0, h1, h2, tiny, f0_, f1_, one = t(opt[1]), t(opt[2]), t(opt[3]), t(opt[5]), t(f0), t(f1), t(1)
        real0 = g * sizes[1]
        _w0_opt(W0, gW0, st0, i0, r1, g, sizes[1], ocode, lrs[0], l2s[0], opt)
        for l in range(n_layers):
            C = real0 if l == 0 else bs[l].shape[0]
            _math.opt_block(bs[l], gbs[l], sbs[l][0], sbs[l][1], i0, i1, C, C, ocode, lrs[l], zdv[l],
                            one, h0, h1, h2, f0_, f1_, tiny)                    # no L2 on biases
        for l in range(1, n_layers):
            nin = sizes[l]
            nout = sizes[l + 1]
            for j in range(g):
                _math.opt_block(Ws[l][j].ravel(), gWs[l][j].ravel(), sts[l][0][j].ravel(),
                                sts[l][1][j].ravel(), i0, i1, nin * nout, i0, ocode, lrs[l][j * nout],
                                l2s[l][j * nout], one, h0, h1, h2, f0_, f1_, tiny)
    return min(s1 * B, n) - s0 * B


@njit(cache=True, inline="always")
def _prefetch_rows(X, order, i0, i1, n0, line):
    """Hint the cache lines of rows ``order[i0:i1]`` of X (``n0`` values each, ``line``
    values a line) into the caches: the next batch, read at random from memory."""
    for i in range(i0, i1):
        row = order[i] * n0
        for j in range(0, n0, line):
            prefetch(X, row + j)


#: :func:`_group_steps` with subnormals flushed to zero on its thread (``simd.without_subnormals``).
_flushed_steps = without_subnormals(_group_steps)


@njit(cache=True)
def _w0_update(Xf, xrows, D0, W0, gW0, dv, zdv, r0, r1, m, sgd, wv):
    """Rows ``r0 .. r1 - 1`` of layer 0 from the scaled delta D0: plain SGD's fused
    ``W0 <- decay * W0 + X_b.T @ D0``, else the mean gradient into gW0."""
    C0 = W0.shape[1]
    if r1 <= r0:
        return
    upd(Xf, r0, xrows, D0.ravel(), 0, C0, (W0 if sgd else gW0).ravel(), r0 * C0, C0, dv if sgd else zdv, 0, m,
        r1 - r0, C0, wv)


@njit(cache=True, error_model="numpy")
def _w0_opt(W0, gW0, st0, r0, r1, g, n1, code, lrc, l2c, opt):
    """The optimizer's step on rows ``r0 .. r1 - 1`` of the wide layer 0 (step count and
    hyperparameters from ``opt``, already advanced): one flat loop, padding and all, for
    one net with little padding (its eta and L2 for all), else row by row over the real
    columns (per-column eta and L2)."""
    if r1 <= r0:
        return
    C0 = W0.shape[1]
    i0 = C0 - C0                            # int64, not literals (see _group_steps)
    i1 = i0 + 1
    t = W0.dtype.type
    f0, f1 = _math.opt_factors(code, opt[1], opt[2], opt[4])
    h0, h1, h2, tiny, f0_, f1_, one = t(opt[1]), t(opt[2]), t(opt[3]), t(opt[5]), t(f0), t(f1), t(1)
    real0 = g * n1
    P, G, S1, S2 = W0.ravel(), gW0.ravel(), st0[0].ravel(), st0[1].ravel()
    if g == 1 and 4 * C0 < 5 * real0:
        _math.opt_block(P, G, S1, S2, r0 * C0, i1, (r1 - r0) * C0, i0, code, lrc[0], l2c[0], one, h0, h1, h2,
                        f0_, f1_, tiny)
    else:
        _math.opt_block(P, G, S1, S2, r0 * C0, r1 - r0, real0, C0, code, lrc, l2c, one, h0, h1, h2, f0_, f1_,
                        tiny)


# =====================================================================================
# Python side.
# =====================================================================================

def _round_up(x: int, q: int) -> int:
    return -(-x // q) * q


class _Group:
    """Nets ``k0 .. k1 - 1``: their parameters in the compiled layout (see
    :func:`_group_steps`), and one thread's buffers."""

    def __init__(self, k0, k1, sizes, dt, batch_size, etas, decays, l2s=None, stateful=False):
        self.k0, self.k1 = k0, k1
        self.g = g = k1 - k0
        L = len(sizes) - 1
        B = batch_size
        lanes = WIDE_BYTES // dt.itemsize
        widths = [_round_up(g * sizes[1], lanes)] + [g * sizes[l + 1] for l in range(1, L)]
        self.sizes = np.asarray(sizes, np.int64)

        def params(full=True):   # W0, Ws, bs in this layout (tiny placeholders when not full)
            if not full:
                return (np.zeros((1, 1), dt), tuple(np.zeros((1, 1, 1), dt) for _ in range(L)),
                        tuple(np.zeros(1, dt) for _ in range(L)))
            return (np.zeros((sizes[0], widths[0]), dt),
                    tuple([np.zeros((1, 1, 1), dt)] + [np.zeros((g, sizes[l], sizes[l + 1]), dt)
                                                       for l in range(1, L)]),
                    tuple(np.zeros(c, dt) for c in widths))

        self.W0, self.Ws, self.bs = params()
        # another optimizer than SGD: the gradients and the two state buffers per parameter
        self.gW0, self.gWs, self.gbs = params(stateful)
        s1, s2 = params(stateful), params(stateful)
        self.st0 = (s1[0], s2[0])
        self.sts = tuple((a, b) for a, b in zip(s1[1], s2[1]))
        self.sbs = tuple((a, b) for a, b in zip(s1[2], s2[2]))
        self.stateful = stateful
        self.zdv = tuple(np.zeros(c, dt) for c in widths)
        self.l2s = tuple(np.zeros(c, dt) for c in widths)
        if l2s is not None:
            for l, c in enumerate(widths):
                w = sizes[l + 1]
                for j in range(g):
                    self.l2s[l][j * w:(j + 1) * w] = l2s[k0 + j]
        dvs, ecols = [], []
        for l, c in enumerate(widths):
            dv, ec = np.ones(c, dt), np.zeros(c, np.float64)
            w = sizes[l + 1]
            for j in range(g):
                dv[j * w:(j + 1) * w] = decays[k0 + j]
                ec[j * w:(j + 1) * w] = etas[k0 + j]
            dvs.append(dv)
            ecols.append(ec)
        self.dvs, self.ecols = tuple(dvs), tuple(ecols)
        self.lrs = tuple(ec.astype(dt) for ec in ecols)   # the optimizer pass's per-column eta
        self.nscs = tuple(np.zeros(c, dt) for c in widths)
        self.acts = tuple(np.zeros((B, c), dt) for c in widths)
        self.deltas = tuple(np.zeros((B, c), dt) for c in widths)
        self.sdeltas = tuple([np.zeros((1, 1), dt)] + [np.zeros((B, c), dt) for c in widths[1:]])
        self.rows = tuple(np.arange(B, dtype=np.int64) * c for c in widths)
        self.acc = np.zeros(max(widths), dt)
        self.WT = np.zeros(max([1] + [sizes[l] * sizes[l + 1] for l in range(1, L)]), dt)
        self.xrows = np.zeros(B, np.int64)
        self.yb = np.zeros(B, np.int64)
        # layer 0's inputs in two halves (see _group_steps), whoever computes them
        self.h = split_row(sizes[0])
        self.part = np.zeros((B, widths[0]), dt)
        self.sync = np.zeros(16, np.int64)   # the two threads' flags, a cache line each
        self.ticks = 0                       # steps run so far (the flags count them)
        self.xrows2 = np.zeros(B, np.int64)  # the second thread's own batch buffers
        self.yb2 = np.zeros(B, np.int64)
        self.msum = np.zeros((g, 2 + sizes[-1]), np.float64)   # minibatch metrics (see _group_steps)
        self._no_msum = np.zeros((0, 0), np.float64)
        self.metered = True
        # every per-layer tuple padded to padded_depth(L) with placeholders: one compiled
        # _group_steps serves every depth up to MAX_SHARED_DEPTH
        D = padded_depth(L)
        one, p1, p2, p3 = np.zeros(1, np.int64), np.zeros(1, dt), np.zeros((1, 1), dt), np.zeros((1, 1, 1), dt)
        for name, like in (("Ws", p3), ("gWs", p3), ("bs", p1), ("gbs", p1), ("dvs", p1),
                           ("ecols", np.zeros(1, np.float64)), ("nscs", p1), ("acts", p2), ("deltas", p2),
                           ("sdeltas", p2), ("rows", one), ("l2s", p1), ("zdv", p1), ("lrs", p1),
                           ("sts", (p3, p3)), ("sbs", (p1, p1))):
            t = tuple(getattr(self, name))
            setattr(self, name, t + (like,) * (D - len(t)))

    def _sets(self):
        """(W0, Ws, bs) of the parameters, then of the two optimizer state buffers."""
        sets = [(self.W0, self.Ws, self.bs)]
        if self.stateful:
            sets += [(self.st0[i], [p[i] for p in self.sts], [p[i] for p in self.sbs]) for i in (0, 1)]
        return sets

    def load(self, sets):
        """Read each canonical (Ws, bs) of ``sets`` (parameters, then the state's) into this layout."""
        k0, k1, n1 = self.k0, self.k1, int(self.sizes[1])
        for (W0, Wl, bl), (Ws, bs) in zip(self._sets(), sets):
            for j, k in enumerate(range(k0, k1)):
                W0[:, j * n1:(j + 1) * n1] = Ws[0][k]
            bl[0][:self.g * n1] = bs[0][k0:k1].reshape(-1)
            for l in range(1, len(Ws)):
                Wl[l][...] = Ws[l][k0:k1]
                bl[l][...] = bs[l][k0:k1].reshape(-1)

    def store(self, sets):
        k0, k1, n1 = self.k0, self.k1, int(self.sizes[1])
        for (W0, Wl, bl), (Ws, bs) in zip(self._sets(), sets):
            for j, k in enumerate(range(k0, k1)):
                Ws[0][k] = W0[:, j * n1:(j + 1) * n1]
            bs[0][k0:k1] = bl[0][:self.g * n1].reshape(self.g, n1)
            for l in range(1, len(Ws)):
                Ws[l][k0:k1] = Wl[l]
                bs[l][k0:k1] = bl[l].reshape(self.g, -1)

    def steps(self, X, y, T, order, s0, s1, quadratic, codes, opt, role=0):
        two = role == 2
        return _flushed_steps(X, y, T, order, s0, s1, quadratic, self.sizes, self.g, self.W0, self.Ws,
                            self.bs, self.dvs, self.ecols, self.nscs, self.acts, self.deltas,
                            self.sdeltas, self.rows, self.acc, self.WT, self.xrows2 if two else self.xrows,
                            self.yb2 if two else self.yb, codes, opt,
                            self.gW0, self.gWs, self.gbs, self.st0, self.sts, self.sbs, self.l2s, self.zdv,
                            self.lrs, self.msum if self.metered else self._no_msum, self.h, role, self.part,
                            self.sync, self.ticks)


#: Nets of up to this many weight layers share one compiled ``_group_steps`` per dtype
#: (their per-layer tuples are padded to this length with placeholders the loop never
#: reads); a deeper net compiles its own.
MAX_SHARED_DEPTH = 4


def padded_depth(n_layers: int) -> int:
    """The tuple length a net of ``n_layers`` weight layers is compiled for."""
    return max(int(n_layers), MAX_SHARED_DEPTH)


#: Layer 0's inputs are summed in two halves (and may run on two threads) from this many
#: inputs up: MNIST's 784 are; a tiny test net's 12 are not.
SPLIT_MIN_INPUTS = 64


def split_row(n_inputs: int) -> int:
    """Where layer 0's inputs are halved (0: not, below :data:`SPLIT_MIN_INPUTS`)."""
    return n_inputs // 2 if n_inputs >= SPLIT_MIN_INPUTS else 0


def splits_by_default(n_inputs: int) -> bool:
    """Whether :class:`StackRunner` runs a lone net of ``n_inputs`` inputs on two threads
    when not told: two usable CPUs on x86-64 Linux, and inputs to halve."""
    return X86_64_LINUX and _threads.usable_cpus() >= 2 and split_row(n_inputs) > 0


class StackRunner:
    """Holds the compiled-path working copy of K networks' parameters for one fit.

    Ws: L NumPy arrays, ``Ws[l]`` ``(K, n_l, n_{l+1})``; bs: L arrays ``(K, n_{l+1})``;
    all C-contiguous, one dtype (float32 or float64); they are copied in (see
    :meth:`store` / :meth:`load`). etas, decays: K floats (``decay_k = 1 - eta_k *
    lmbda_k / n``, applied to the weights only). batch_size: rows per step. quadratic:
    True for the quadratic cost on a sigmoid output, False for cross-entropy on softmax.
    threads: None for ``min(usable CPUs, K)``, else at most K threads; 1 runs everything
    on the calling thread. The results do not depend on it.

    The tables: codes, every layer's activation code (``kernels/_math.py``; default:
    sigmoid hidden layers and the output ``quadratic`` implies); optimizer, a
    :class:`fastnet.optim.Optimizer` other than SGD with its ``state`` (an
    :class:`fastnet.optim.State` over the canonical ``(K, ...)`` arrays, read here and
    written back by :meth:`store`) and ``l2s`` (K floats, ``lmbda_k / n``).

    split: with one group of nets (one net, or ``threads=1``), run each step on two threads:
    half of layer 0's inputs (its forward product and its rows' update and optimizer step:
    ~98 % of Nielsen's arithmetic) on a second thread, which waits for the other at two
    points per step. None (the default): where two CPUs are usable on x86-64 Linux and the
    net has at least :data:`SPLIT_MIN_INPUTS` inputs; True; False. The results are the same
    bits either way (the two halves are summed in the same order on one thread).

    All the buffers are made here; :meth:`run` allocates nothing per step.
    """

    def __init__(self, Ws, bs, etas, decays, batch_size, quadratic, threads=None, *, codes=None,
                 optimizer=None, state=None, l2s=None, split=None):
        Ws, bs = list(Ws), list(bs)
        if not Ws or len(Ws) != len(bs):
            raise ValueError(f"StackRunner needs one bias array per weight array (at least one). "
                             f"Actual: {len(Ws)} weights, {len(bs)} biases")
        for name, arrs in (("Ws", Ws), ("bs", bs)):
            for l, a in enumerate(arrs):
                if type(a) is not np.ndarray:
                    raise TypeError(f"{name}[{l}] must be a NumPy array. "
                                    f"Actual: {type(a).__name__}")
        dt = Ws[0].dtype
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"StackRunner: dtype must be float32 or float64. Actual: {dt}")
        shapes_ok = all(W.ndim == 3 for W in Ws)
        K = int(Ws[0].shape[0]) if shapes_ok else 0
        sizes = [int(Ws[0].shape[1])] + [int(W.shape[2]) for W in Ws] if shapes_ok else []
        for l, (W, b) in enumerate(zip(Ws, bs)):
            if not (shapes_ok and W.dtype == dt and b.dtype == dt
                    and W.shape == (K, sizes[l], sizes[l + 1]) and b.shape == (K, sizes[l + 1])):
                raise ValueError(
                    f"StackRunner: layer {l} must be W (K, n_l, n_(l+1)) and b (K, n_(l+1)), "
                    f"one dtype, chained. Actual: W {W.shape} {W.dtype}, b {b.shape} {b.dtype}")
        if K < 1 or min(sizes) < 1:
            raise ValueError(f"StackRunner needs at least one network and no empty layer. "
                             f"Actual: K={K}, sizes {sizes}")
        etas = [float(e) for e in etas]
        decays = [float(d) for d in decays]
        if len(etas) != K or len(decays) != K:
            raise ValueError(f"StackRunner: need K={K} etas and decays. "
                             f"Actual: {len(etas)} etas, {len(decays)} decays")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Actual: {batch_size}")
        if threads is None:
            threads = usable_cpus()
        threads = int(threads)
        if threads < 1:
            raise ValueError(f"threads must be None or >= 1. Actual: {threads}")
        threads = min(threads, K)
        self.K, self.sizes, self.dtype = K, sizes, dt
        self.batch_size = batch_size
        self.quadratic = bool(quadratic)
        self.threads = threads
        L = len(Ws)
        if codes is None:
            codes = [_math.SIGMOID] * (L - 1) + [_math.SIGMOID if quadratic else _math.SOFTMAX]
        self.codes = np.asarray(codes, np.int64)
        stateful = optimizer is not None and optimizer.code != _math.OPT_SGD
        if stateful and (state is None or len(state.s1) != 2 * L):
            raise ValueError("StackRunner: an optimizer other than SGD needs its state (2 L arrays per moment)")
        self.state = state if stateful else None
        h = optimizer.hyper() if stateful else (0.0, 0.0, 0.0)
        self.opt = np.array([optimizer.code if stateful else 0, *h, state.t if stateful else 0,
                             np.finfo(dt).tiny], np.float64)
        self._groups = [_Group(t * K // threads, (t + 1) * K // threads, sizes, dt, batch_size,
                               etas, decays, l2s, stateful) for t in range(threads)]
        if split is None:
            split = splits_by_default(sizes[0])
        self.split = bool(split) and len(self._groups) == 1 and self._groups[0].h > 0
        self._T0 = np.zeros((0, 0), dt)     # "no target matrix" (0 rows: never n)
        self._y0 = np.zeros(0, np.int64)    # "no labels" (a target matrix's fit), grown to n
        self.load(Ws, bs)

    def run(self, X, y, order, s0, s1):
        """Steps ``[s0, s1)`` of one epoch, in place: step s trains every net on the rows
        ``order[s * batch_size : min((s + 1) * batch_size, n)]``. X (n, n_0) C-contiguous
        in the parameters' dtype; y (n,) int64 labels, or (n, n_L) float targets in X's
        dtype (cost="mse"); order (n,) int64. Returns the number of samples trained per net."""
        T = self._T0
        if (type(y) is np.ndarray and y.ndim == 2 and y.dtype == self.dtype and y.flags.c_contiguous
                and type(X) is np.ndarray and y.shape == (X.shape[0], self.sizes[-1])):
            T = y
            if self._y0.shape[0] != X.shape[0]:
                self._y0 = np.zeros(X.shape[0], np.int64)
            y = self._y0
        if not (type(X) is np.ndarray and X.dtype == self.dtype and X.ndim == 2
                and X.flags.c_contiguous and X.shape[1] == self.sizes[0]):
            raise TypeError(f"X must be a C-contiguous {self.dtype} NumPy array "
                            f"(n, {self.sizes[0]}). Actual: {type(X).__name__} "
                            f"{getattr(X, 'dtype', '')} {getattr(X, 'shape', '')}")
        n = X.shape[0]
        for name, a in (("y", y), ("order", order)):
            if not (type(a) is np.ndarray and a.dtype == np.int64 and a.shape == (n,)
                    and a.flags.c_contiguous):
                raise TypeError(f"{name} must be a C-contiguous int64 NumPy array ({n},). "
                                f"Actual: {type(a).__name__} {getattr(a, 'dtype', '')} "
                                f"{getattr(a, 'shape', '')}")
        s0, s1 = int(s0), int(s1)
        n_steps = -(-n // self.batch_size)
        if not 0 <= s0 <= s1 <= n_steps:
            raise ValueError(f"need 0 <= s0 <= s1 <= {n_steps} (steps in an epoch of {n} samples). "
                             f"Actual: s0={s0}, s1={s1}")
        if s0 == s1:
            return 0
        rows = order[s0 * self.batch_size:s1 * self.batch_size]   # the compiled loop reads
        if rows.min() < 0 or rows.max() >= n:                    # X at these, unchecked
            raise ValueError(f"order must hold row indices in [0, {n}). Actual: values from "
                             f"{rows.min()} to {rows.max()} in steps {s0}..{s1 - 1}")
        t0 = self.opt[4]
        grp = self._groups[0]
        if self.split:   # one net on two threads: role 1 here, role 2 (rows h.. of layer 0) there
            opts = [self.opt, self.opt.copy()]
            done = spread(_Group.steps, [(grp, X, y, T, order, s0, s1, self.quadratic, self.codes, o, role)
                                         for o, role in zip(opts, (1, 2))])[0]
        else:
            opts = [self.opt] + [self.opt.copy() for _ in self._groups[1:]]   # each thread counts steps
            done = spread(_Group.steps, [(g, X, y, T, order, s0, s1, self.quadratic, self.codes, o)
                                         for g, o in zip(self._groups, opts)])[0]
        for g in self._groups:
            g.ticks += s1 - s0
        assert all(o[4] == self.opt[4] for o in opts) and self.opt[4] >= t0
        return done

    @property
    def metered(self) -> bool:
        """Whether :meth:`run` adds each minibatch's metrics to :meth:`take_metrics`'s sums
        (default True; the cost is a few percent of a minibatch-10 step)."""
        return self._groups[0].metered

    @metered.setter
    def metered(self, on: bool) -> None:
        for grp in self._groups:
            grp.metered = bool(on)

    def take_metrics(self):
        """The minibatch metrics summed since the last call, ``(K, 2 + n_L)`` float64 (per
        net: the cost, the samples classified right, and cost="mse"'s squared error per
        output, over the samples it trained on), and zero them."""
        out = np.concatenate([grp.msum for grp in self._groups], axis=0)
        for grp in self._groups:
            grp.msum[...] = 0.0
        return out

    def put_metrics(self, sums):
        """Set the sums :meth:`take_metrics` goes on from (``(K, 2 + n_L)``, e.g. a resume's)."""
        for grp in self._groups:
            grp.msum[...] = np.asarray(sums, np.float64)[grp.k0:grp.k1]

    def _sets(self, Ws, bs):
        if self.state is None:
            return [(Ws, bs)]
        st, L = self.state, len(Ws)
        return [(Ws, bs), (st.s1[:L], st.s1[L:]), (st.s2[:L], st.s2[L:])]

    def store(self, Ws, bs):
        """Write the current parameters into ``Ws`` / ``bs`` (the canonical ``(K, ...)``
        arrays, shaped as for the constructor), in place; and the optimizer's state."""
        for grp in self._groups:
            grp.store(self._sets(Ws, bs))
        if self.state is not None:
            self.state.t = int(self.opt[4])

    def load(self, Ws, bs):
        """Re-read the parameters (and the optimizer's state) from ``Ws`` / ``bs``."""
        for grp in self._groups:
            grp.load(self._sets(Ws, bs))


def warmup(dtype="float32", n_layers=(1, 2, 3)) -> int:
    """Compile (or load from the on-disk cache) :class:`StackRunner`'s steps for ``dtype``
    and networks of each of ``n_layers`` weight layers (one compiled version serves every
    depth up to :data:`MAX_SHARED_DEPTH`; a deeper one is its own), by running one tiny
    step. Returns the number of versions touched. ``fit`` does this on its first call
    anyway.
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"warmup: dtype must be float32 or float64. Actual: {dt}.")
    X = np.zeros((2, 3), dt)
    y = np.zeros(2, np.int64)
    order = np.arange(2, dtype=np.int64)
    versions = sorted({padded_depth(layers) for layers in n_layers})
    for depth in versions:
        Ws = [np.zeros((1, 3, 3), dt) for _ in range(depth)]
        bs = [np.zeros((1, 3), dt) for _ in range(depth)]
        StackRunner(Ws, bs, [0.1], [1.0], 2, True, threads=1).run(X, y, order, 0, 1)
    return len(versions)
