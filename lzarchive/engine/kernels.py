"""Engine layer: the compiled CPU loops behind ops.CompiledOps, and the constants of the exact arithmetic (SPEC.md
section 9.3). Every function here returns values that no implementation choice can change: reductions only over
integers whose partial sums stay exactly representable, elementwise work only with single correctly rounded binary64
operations in the order the SPEC gives (numba does not contract a * b + c into an FMA without fastmath, which only the
loops that sum integer products get), and tables instead of transcendental functions.

Integer-valued arrays are float64 (exact below 2^53), int64, or int16 (the KV cache: |q| <= QMAX); the int8 GEMM
takes them as int8 halves (q = 256 * hi + lo) and sums the products in int32 below 2^31.
"""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np
import torch

from . import tables

QMAX = 32639  # activations: |q| <= QMAX, so q = 256 * hi + lo with hi, lo in int8 (the fast int8 path)
WMAX = 127  # weights: int8
EXP_TABLE_SHIFTS = 31  # E[i] < 2^31, so shifts of 31 and more give 0
LOG2E = 1.4426950408889634  # the binary64 nearest to log2(e)
EXP_INDEX_SCALE = -LOG2E * tables.EXP2_FRAC_STEPS  # exact: times a power of two
F64 = torch.float64
SIGMOID_RANGE = float(tables.SIGMOID_RANGE)
SIGMOID_STEPS_PER_UNIT = float(tables.SIGMOID_STEPS_PER_UNIT)
TABLE_UNIT = float(1 << tables.TABLE_BITS)
BIAS_UNIT = 2.0**-32  # the bias head's state counts logits in these units (SPEC.md 9.9)
BIAS_COLUMNS = 4096  # columns of the bias head's state per thread's block in its update


def compiled(**options):
    """numba.njit with numba's on-disk cache where one can be written (next to this file, or the user cache). Where
    neither can (a read-only install and home), each process compiles the kernels again: slower to start, the same
    results."""

    def decorate(function):
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            warnings.warn("no writable cache for compiled kernels (the package directory and the user cache are "
                          "read-only): compiling them in this process, which takes longer", RuntimeWarning)
            return numba.njit(**options)(function)

    return decorate


# ---------------------------------------------------------------------------------------------- int8 halves
# An integer |x| <= QMAX is 256 * hi + lo with hi, lo in int8: the int8 GEMM multiplies the halves exactly.


@compiled()
def _halves(x):
    """(hi, lo) of x = 256 * hi + lo, lo in [-128, 127] (two's complement: (x + 128) mod 256 - 128)."""
    lo = ((x + 128) & 255) - 128
    return (x - lo) >> 8, lo


@compiled(parallel=True)
def split_halves(a, halves):
    """halves[i] = hi, halves[rows + i] = lo of each a[i] (|a| <= QMAX)."""
    rows, width = a.shape
    for i in numba.prange(rows):
        for j in range(width):
            halves[i, j], halves[rows + i, j] = _halves(np.int32(a[i, j]))


@compiled(parallel=True)
def join_halves(acc, a_scale, w_scale, out):
    """out[i, j] = ((256 * hi + lo) * a_scale[i]) * w_scale[j] from the int32 products of both halves: the exact
    integer (|.| < 2^34), then the two scale products."""
    rows, width = out.shape
    for i in numba.prange(rows):
        for j in range(width):
            out[i, j] = (np.float64(acc[i, j]) * 256.0 + np.float64(acc[rows + i, j])) * a_scale[i] * w_scale[j]


# ---------------------------------------------------------------------------------------------- fused CPU row work
# TorchOps' quantize, norm_quantize, layer_norm_quantize, gate_quantize and rope in loops, one row at a time: the same single IEEE
# operations in the same order.


@compiled()
def _quantize_row(x, q):
    """quantize for one row: q = rint(x * (QMAX / m)) (q may be x); returns the scale m / QMAX."""
    m = 0.0
    for j in range(x.shape[0]):
        m = max(m, abs(x[j]))
    if not m > 0:
        m = 1.0
    to_q = QMAX / m
    for j in range(x.shape[0]):
        q[j] = np.rint(x[j] * to_q)
    return m / QMAX


@compiled(parallel=True)
def quantize_rows(x, q, scale):
    """quantize along the last axis of (rows, d) x."""
    for i in numba.prange(x.shape[0]):
        scale[i] = _quantize_row(x[i], q[i])


@compiled()
def _mean_square(v, divisor, residual_bits):
    """ldexp(sum of (v_j >> k)^2, 2k - 2 * bits) / divisor for an int64 row v: the sum exact in int64, k = max(0, the
    binary exponent of max |v| - 24) so that every reduced |v_j| < 2^24."""
    peak = 0
    for j in range(v.shape[0]):
        peak = max(peak, abs(v[j]))
    shift = max(math.frexp(np.float64(peak))[1] - 24, 0)
    sum_sq = 0
    for j in range(v.shape[0]):
        reduced = v[j] >> shift
        sum_sq += reduced * reduced
    return math.ldexp(np.float64(sum_sq), 2 * shift - 2 * residual_bits) / divisor


@compiled(parallel=True)
def norm_quantize_rows(x, weight, eps, residual_bits, q, scale):
    """TorchOps.norm_quantize for (rows, d) int64 x: q = quantize(x * weight), scale = its scale / (rms * 2^bits)."""
    rows, d = x.shape
    for i in numba.prange(rows):
        for j in range(d):
            q[i, j] = np.float64(x[i, j]) * weight[j]
        m_scale = _quantize_row(q[i], q[i])
        mean = _mean_square(x[i], np.float64(d), residual_bits)
        scale[i] = m_scale / (math.sqrt(mean + eps) * (1 << residual_bits))


@compiled(parallel=True)
def gate_quantize_rows(gate, up, table, table_step, q, scale):
    """quantize(Tables.gated(gate) * up) along the last axis of (rows, d) gate and up."""
    last = np.float64(table.shape[0] - 2)
    for i in numba.prange(gate.shape[0]):
        row = q[i]
        for j in range(gate.shape[1]):
            x = gate[i, j]
            t = (min(max(x, -SIGMOID_RANGE), SIGMOID_RANGE) + SIGMOID_RANGE) * SIGMOID_STEPS_PER_UNIT
            index = min(np.floor(t), last)
            k = int(index)
            g = (table_step[k] * (t - index) + table[k]) / TABLE_UNIT
            row[j] = (g * x) * up[i, j]
        scale[i] = _quantize_row(row, row)


@compiled(parallel=True)
def layer_norm_quantize_rows(x, gain, bias, eps, residual_bits, q, scale):
    """TorchOps.layer_norm_quantize for (rows, d) int64 x."""
    rows, d = x.shape
    for i in numba.prange(rows):
        total = 0
        for j in range(d):
            total += x[i, j]
        y = np.empty(d, np.int64)
        for j in range(d):
            y[j] = x[i, j] * d - total  # d * (x - mean), exact
        unit = math.sqrt(_mean_square(y, np.float64(d * d * d), residual_bits) + eps) * np.float64(d << residual_bits)
        for j in range(d):
            q[i, j] = ((np.float64(y[j]) / unit) * gain[j]) + bias[j]
        scale[i] = _quantize_row(q[i], q[i])


@compiled(parallel=True)
def rope_rows(x, start, cos, sin, out):
    """TorchOps.rope for x (B, T, H, hd) at positions start + t: out[b, h, t] holds each pair (x0, x1) of x[b, t, h]
    as (x0 * cos - x1 * sin, x0 * sin + x1 * cos)."""
    batch, steps, heads, hd = x.shape
    for n in numba.prange(batch * steps):
        b, t = n // steps, n % steps
        c, s = cos[start + t], sin[start + t]
        for h in range(heads):
            for i in range(hd // 2):
                x0, x1 = x[b, t, h, 2 * i], x[b, t, h, 2 * i + 1]
                out[b, h, t, 2 * i] = x0 * c[i] - x1 * s[i]
                out[b, h, t, 2 * i + 1] = x0 * s[i] + x1 * c[i]


# ---------------------------------------------------------------------------------------------- fused CPU attention
# The same arithmetic as TorchOps' attention, in loops: one pass per row instead of a dozen tensor
# passes, and no tiny batched GEMMs when decoding. Every operation is a single IEEE operation in the order SPEC.md
# 9.3 gives. The integer dot products accumulate in whatever order the loops give: their sums are exact below 2^53.
# So the loops that only sum integer products may let LLVM reassociate them and fuse a product into an add (an FMA
# of exact operands rounds nothing): INTEGER_SUMS, never for a kernel with a rounding operation. (decoding_attention,
# compiled without it, calls such loops: LLVM's fast-math flags belong to each operation, not to the code calling it.)
INTEGER_SUMS = {"reassoc", "contract"}


@compiled()
def _seen_ranges(end0, start1, end1):
    """The keys a row sees, 0 .. end0 and start1 .. end1, as two pairs of unsigned bounds: numba then knows an index
    j >= 0 needs no wraparound for negative values, which keeps the loops over keys vectorized (with signed bounds
    from arguments, a decoding step's scores took 5x as long)."""
    return (np.uint64(0), np.uint64(end0)), (np.uint64(start1), np.uint64(end1))


@compiled(fastmath=INTEGER_SUMS)
def _head_scores(q, k, z, ranges):
    """z[r, j] = q[r] · k[:, j] over one head's rows for the keys in `ranges` (the others left unwritten), with k = kᵀ
    (head_dim, capacity) int16: exact integer sums, vectorized across keys. Rows three at a time (a grouped-query
    head's rows when decoding), four components per pass: each key component is converted once for three rows, and
    each row loaded and stored a quarter as often. A pass's four components are a quarter of head_dim apart: rows of
    kᵀ in different 4 KB pages, which the CPU's prefetcher follows as four streams (adjacent rows, often in one page,
    read the cache 1.5x as slowly)."""
    rows, hd = q.shape
    s = hd // 4
    for r in range(0, rows - 2, 3):
        za, zb, zc = z[r], z[r + 1], z[r + 2]
        qa, qb, qc = q[r], q[r + 1], q[r + 2]
        za[:], zb[:], zc[:] = 0.0, 0.0, 0.0
        for lo, hi in ranges:
            for d in range(s):
                k0, k1, k2, k3 = k[d], k[d + s], k[d + 2 * s], k[d + 3 * s]
                a0, a1, a2, a3 = qa[d], qa[d + s], qa[d + 2 * s], qa[d + 3 * s]
                b0, b1, b2, b3 = qb[d], qb[d + s], qb[d + 2 * s], qb[d + 3 * s]
                c0, c1, c2, c3 = qc[d], qc[d + s], qc[d + 2 * s], qc[d + 3 * s]
                for j in range(lo, hi):
                    x0, x1, x2, x3 = np.float64(k0[j]), np.float64(k1[j]), np.float64(k2[j]), np.float64(k3[j])
                    za[j] += (a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3)
                    zb[j] += (b0 * x0 + b1 * x1) + (b2 * x2 + b3 * x3)
                    zc[j] += (c0 * x0 + c1 * x1) + (c2 * x2 + c3 * x3)
            for d in range(4 * s, hd):
                for j in range(lo, hi):
                    x = np.float64(k[d, j])
                    za[j] += qa[d] * x
                    zb[j] += qb[d] * x
                    zc[j] += qc[d] * x
    for r in range(rows - rows % 3, rows):  # the rows left over, one at a time
        row, q_row = z[r], q[r]
        row[:] = 0.0
        for lo, hi in ranges:
            for d in range(hd):
                for j in range(lo, hi):
                    row[j] += q_row[d] * k[d, j]


@compiled()
def _row_weights(row, row_factor, k_scale, v_scale, prefix_end, span_start, seen, exp15):
    """One row's scores → its quantized softmax weights in place (SPEC.md 9.3): the row sees the keys j < prefix_end
    and span_start <= j < seen (its other weights become 0). Returns ws / Σ p."""
    last = exp15.shape[0] - 1
    ranges = _seen_ranges(prefix_end, span_start, seen)
    top = -np.inf
    for lo, hi in ranges:  # in any order: a maximum and exact sums
        for j in range(lo, hi):
            row[j] = (row[j] * row_factor) * k_scale[j]
            top = max(top, row[j])
    p_sum = 0.0
    w_max = 0.0
    for lo, hi in ranges:
        for j in range(lo, hi):
            p = exp15[int(min((row[j] - top) * EXP_INDEX_SCALE, last))]
            p_sum += p  # exact: integers below 2^53
            row[j] = p * v_scale[j]
            w_max = max(w_max, row[j])
    if not w_max > 0:
        w_max = 1.0
    to_q = QMAX / w_max
    for lo, hi in ranges:
        for j in range(lo, hi):
            row[j] = np.rint(row[j] * to_q)
    row[prefix_end:span_start] = 0.0
    row[seen:] = 0.0
    return (w_max / QMAX) / p_sum


@compiled(parallel=True)
def attention_weights(z, row_factor, k_scale, v_scale, kept, first, visible, exp15, factor):
    """Scores → quantized softmax weights in place, one row at a time (_row_weights). z: (B, H, R, keys) exact scores;
    row_factor: (B, H, R) qs / sqrt(head_dim); k_scale, v_scale: (B, H, keys); row r sees the keys j < kept and
    first[r] <= j < visible[r] (the prefix, and the span up to the causal limit); exp15: EXP15 as a table. Writes wq
    into z and ws / Σ p into factor (B, H, R)."""
    batch, heads, rows, keys = z.shape
    for i in numba.prange(batch * heads * rows):
        b, h, r = i // (heads * rows), i // rows % heads, i % rows
        prefix_end = min(kept, visible[r])
        factor[b, h, r] = _row_weights(z[b, h, r], row_factor[b, h, r], k_scale[b, h], v_scale[b, h], prefix_end,
                                       max(first[r], prefix_end), visible[r], exp15)


@compiled(fastmath=INTEGER_SUMS)
def _head_values(w, v, acc, hidden_lo, hidden_hi):
    """acc[r] = Σ_j w[r, j] · v[j] over one head's rows, v int16, for j outside hidden_lo <= j < hidden_hi (weights 0
    there: skipping them adds nothing): exact integer sums. Keys four at a time, converted once for all rows, each
    pass over a row's accumulators adding four products."""
    rows, keys = w.shape
    hd = v.shape[-1]
    acc[:] = 0.0
    v4 = np.empty((4, hd))
    for part in range(2):  # the keys seen: two ranges
        lo, hi = (0, hidden_lo) if part == 0 else (hidden_hi, keys)
        for j in range(lo, hi - 3, 4):
            for t in range(4):
                for d in range(hd):
                    v4[t, d] = v[j + t, d]
            for r in range(rows):
                w0, w1, w2, w3 = w[r, j], w[r, j + 1], w[r, j + 2], w[r, j + 3]
                acc_row = acc[r]
                for d in range(hd):
                    acc_row[d] += (w0 * v4[0, d] + w1 * v4[1, d]) + (w2 * v4[2, d] + w3 * v4[3, d])
        for j in range(hi - (hi - lo) % 4, hi):
            for r in range(rows):
                weight = w[r, j]
                for d in range(hd):
                    acc[r, d] += weight * v[j, d]


@compiled(parallel=True)
def decoding_attention(q, row_factor, k_t, k_scale, v, v_scale, kept, first, exp15, z, out):
    """One position's attention, a head of the cache at a time: z (B, H, R, keys) <- the scores of q (B, H, R, hd)
    (R: the query heads reading cache head h) with kᵀ (B, H, head_dim, capacity) int16, then their quantized weights
    (row_factor (B, H, R), k_scale and v_scale (B, H, capacity), exp15: EXP15 as a table), then out (B, H, R, hd) <-
    (wq · v) * (ws / Σ p). Every row sees the keys j < kept (the prefix) and first <= j < keys (the span up to this
    position); the loops over keys skip those between, which the weights make 0 (the same sums: reading the cache's
    keys is most of the scores' time)."""
    batch, heads, rows, keys = z.shape
    prefix_end = min(kept, keys)
    span_start = min(max(first, prefix_end), keys)
    for i in numba.prange(batch * heads):
        b, h = i // heads, i % heads
        _head_scores(q[b, h], k_t[b, h], z[b, h], _seen_ranges(prefix_end, span_start, keys))
        factor = np.empty(rows)
        for r in range(rows):
            factor[r] = _row_weights(z[b, h, r], row_factor[b, h, r], k_scale[b, h], v_scale[b, h], prefix_end,
                                     span_start, keys, exp15)
        _head_values(z[b, h], v[b, h], out[b, h], prefix_end, span_start)
        for r in range(rows):
            for d in range(out.shape[-1]):
                out[b, h, r, d] *= factor[r]


# ---------------------------------------------------------------------------------------------- frequency tables


@compiled(parallel=True)
def frequency_rows(logits, bias, bias_rows, exp_table, total_bits, freq):
    """TorchOps.frequencies, one row at a time: the same integers. Row i's logits are z + bias[bias_rows[i]] *
    BIAS_UNIT (bias: int64, a zero row for tables without the bias head). exp_table: Tables.shifted(0, int64); freq:
    (rows, vocab) int64. The integer division is the row's costliest part done one entry at a time (a third of its
    time): a binary64 quotient estimates it instead, off by at most one (the quotient is below 2^32 and its
    relative error below 2^-50), and two exact int64 comparisons correct it to the floor."""
    rows, vocab = logits.shape
    last = exp_table.shape[0] - 1
    total = 1 << total_bits
    free = total - vocab
    for i in numba.prange(rows):
        row, out, b = logits[i], freq[i], bias[bias_rows[i]]
        top = -np.inf
        for j in range(vocab):
            top = max(top, row[j] + np.float64(b[j]) * BIAS_UNIT)
        e_sum = 0
        for j in range(vocab):
            e = exp_table[int(min(((row[j] + np.float64(b[j]) * BIAS_UNIT) - top) * EXP_INDEX_SCALE, last))]
            out[j] = e
            e_sum += e
        best = 0  # the first maximal e: the top logit's is EXP(0), the table's first entry, and none is larger
        while out[best] != exp_table[0]:
            best += 1
        reciprocal = 1.0 / np.float64(e_sum)
        assigned = 0
        for j in range(vocab):
            product = out[j] * free  # e * free < 2^30 * 2^total_bits: exact in int64
            quotient = np.int64(np.float64(product) * reciprocal)
            quotient -= quotient * e_sum > product  # both products stay near `product`: below 2^63
            quotient += (quotient + 1) * e_sum <= product
            out[j] = 1 + quotient
            assigned += out[j]
        out[best] += total - assigned


@compiled(parallel=True)
def cache_rows(dots, row_lengths, lengths, values, lo, hi, theta, exp_table, bits, out, tops):
    """TorchOps.cache_table, one row at a time, without a (rows, keys) temporary: dots (rows, keys) the exact products
    of each row's key with the cache's (int32 or float64), row_lengths (rows,) and lengths (keys,) their lengths,
    values the keys' tokens, row i seeing keys lo[i] <= s < hi[i] (lo < hi); exp_table: Tables.shifted(shift, int64);
    out: (rows, vocab) int64 zeros, which receive c; tops: each row's largest cosine. The cosines and table indices
    in vectorized passes over a row's keys; only keys of nonzero weight reach their token's slot, and only tokens
    with a weight are divided (zeros stay zero): the same integers in 40 % of the time on a book's keys."""
    last = exp_table.shape[0] - 1
    for i in numba.prange(dots.shape[0]):
        first, count = lo[i], hi[i] - lo[i]
        cos = np.empty(count)
        for s in range(count):
            cos[s] = np.float64(dots[i, first + s]) / (row_lengths[i] * lengths[first + s])
        top = -np.inf
        for s in range(count):
            top = max(top, cos[s])
        z_top = theta * top  # the largest theta * cos: rounding keeps the order
        index = np.empty(count, dtype=np.int64)
        for s in range(count):
            index[s] = int(min((theta * cos[s] - z_top) * EXP_INDEX_SCALE, last))
        row, total = out[i], 0
        for s in range(count):
            e = exp_table[index[s]]
            if e:
                row[values[first + s]] += e
                total += e
        for v in range(row.shape[0]):
            if row[v]:
                row[v] = (row[v] << bits) // total
        tops[i] = top


@compiled(parallel=True)
def mix_cache_rows(freq, cache, weights, weight_bits, cache_bits, total_bits, out):
    """TorchOps.mix_cache, one row at a time: the same integers into out (rows, vocab) int64 (the mixing in a
    vectorized pass, then the first maximum)."""
    total = 1 << total_bits
    for i in numba.prange(freq.shape[0]):
        keep = (1 << weight_bits) - weights[i]
        given = ((total - freq.shape[1]) * weights[i]) >> weight_bits
        row, f, c = out[i], freq[i], cache[i]
        for v in range(row.shape[0]):
            row[v] = 1 + (((f[v] - 1) * keep) >> weight_bits) + ((c[v] * given) >> cache_bits)
        assigned, best = 0, 0
        for v in range(row.shape[0]):
            assigned += row[v]
            if row[v] > row[best]:
                best = v
        row[best] += total - assigned


@compiled(parallel=True)
def update_bias_rows(bias, bias_rows, freq, symbols, rate, total_bits):
    """TorchOps.update_bias: bias[bias_rows[i]] -= (freq[i] * rate) >> total_bits, then += rate at symbols[i]. Rows
    may repeat (a shared bias head, SPEC.md 9.10): integer sums in any order, so the threads split the columns."""
    vocab = freq.shape[1]
    for block in numba.prange((vocab + BIAS_COLUMNS - 1) // BIAS_COLUMNS):
        lo, hi = block * BIAS_COLUMNS, min(vocab, (block + 1) * BIAS_COLUMNS)
        for i in range(freq.shape[0]):
            b, f = bias[bias_rows[i]], freq[i]
            for j in range(lo, hi):
                b[j] -= (f[j] * rate) >> total_bits  # below 2^62: f <= 2^total_bits, rate < 2^30
    for i in range(freq.shape[0]):
        bias[bias_rows[i], symbols[i]] += rate


@compiled(parallel=True)
def symbol_starts(freq, symbols, starts):
    """starts[i] = freq[i, 0] + ... + freq[i, symbols[i] - 1]: where each row's symbol interval begins."""
    for i in numba.prange(freq.shape[0]):
        start = 0
        for j in range(symbols[i]):
            start += freq[i, j]
        starts[i] = start


@compiled()
def mixed_cumulative(cumulative, symbol, guess, keep, given, weight_bits):
    """C'(s) = s + floor((C(s) - s) keep / 2^weight_bits) + [s > guess] given: where symbol s's interval starts once
    a guess is mixed into a table whose own cumulative there is C(s) (the match model's mixing, SPEC.md 9.8). keep =
    2^weight_bits (given = 0) leaves the table as it is. Integers below 2^48 for tables of total 2^32."""
    return symbol + (((cumulative - symbol) * keep) >> weight_bits) + (given if symbol > guess else 0)


@compiled(parallel=True)
def find_symbols(freq, targets, guesses, keeps, givens, weight_bits, symbols, starts, sizes):
    """symbols[i]: the symbol whose interval [starts[i], starts[i] + sizes[i]) holds targets[i] (below the table's
    total) in row i of freq, or, where keeps[i] < 2^weight_bits, in that row with guesses[i] mixed in
    (mixed_cumulative): searched one symbol at a time, without writing the mixed row."""
    for i in numba.prange(freq.shape[0]):
        cumulative, symbol = 0, 0
        if keeps[i] == 1 << weight_bits:
            while targets[i] >= cumulative + freq[i, symbol]:
                cumulative += freq[i, symbol]
                symbol += 1
            symbols[i], starts[i], sizes[i] = symbol, cumulative, freq[i, symbol]
            continue
        start = 0  # mixed_cumulative(0, 0, ...) for every guess
        while True:
            cumulative += freq[i, symbol]
            end = mixed_cumulative(cumulative, symbol + 1, guesses[i], keeps[i], givens[i], weight_bits)
            if targets[i] < end:
                break
            start = end
            symbol += 1
        symbols[i], starts[i], sizes[i] = symbol, start, end - start
