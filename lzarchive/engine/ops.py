"""Engine layer: the exact operations of SPEC.md 9.3-9.4, the only arithmetic a model does, in two implementations
chosen once per engine by `exact_ops`:

- TorchOps: torch operations on any device (CUDA; a CPU with LZA_KERNELS=torch, for cross-platform proofs), and the
  interface: each method's docstring defines its operation;
- CompiledOps: the default on a CPU, TorchOps with the compiled loops of kernels.py in place of each operation where
  they pay.

Both give the same integers and binary64 values for every input; the tests compare them op by op on extreme and tie
inputs. A quantized row is a pair (q, scale): q integer-valued float64 with |q| <= QMAX along the last axis, scale
float64 (..., 1), q * scale the row.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch

from . import tables
from .kernels import (BIAS_UNIT, EXP_INDEX_SCALE, EXP_TABLE_SHIFTS, F64, QMAX, attention_weights, cache_rows,
                      decoding_attention, find_symbols, frequency_rows, gate_quantize_rows, join_halves,
                      layer_norm_quantize_rows, mix_cache_rows, norm_quantize_rows, quantize_rows, rope_rows,
                      split_halves, symbol_starts, update_bias_rows)


class Tables:
    """The integer tables as tensors on one device: EXP, the gate of the MLP's activation (sigmoid for SiLU, phi for
    GELU), and RoPE's where the architecture rotates."""

    def __init__(self, exp2_frac: torch.Tensor, gate: torch.Tensor, rope_cos: torch.Tensor | None = None,
                 rope_sin: torch.Tensor | None = None):
        self.exp2_frac = exp2_frac  # (4096,) int64, 2^-30 units
        self._exp_tables: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        self.gate = gate.to(F64)  # (8193,) integers in 2^-30 units, held in float64 (exact)
        self.gate_step = self.gate[1:] - self.gate[:-1]  # hi - lo of each interval, exact
        if rope_cos is not None:
            self.rope_cos = rope_cos.to(F64) / (1 << tables.TABLE_BITS)  # exact: integer / power of two
            self.rope_sin = rope_sin.to(F64) / (1 << tables.TABLE_BITS)

    @classmethod
    def of(cls, model_tensors: dict[str, torch.Tensor], gate: str) -> Tables:
        """A model's tables; `gate` names its activation's table ("sigmoid", "gelu")."""
        return cls(model_tensors["table.exp2_frac"], model_tensors["table." + gate], model_tensors.get("table.rope_cos"),
                   model_tensors.get("table.rope_sin"))

    def exp_neg(self, d: torch.Tensor, extra_shift: int = 0, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """e^d for d <= 0 as an integer in units of 2^-(30 - extra_shift): with y = -d * LOG2E, n = floor(y) and
        f = y - n, the value is E[floor(f * 4096)] >> (n + extra_shift); 0 once n >= 31 (E < 2^31). Returned as
        `dtype` (float64 holds these integers exactly). Overwrites d.

        Computed as one gather from the table of all E[i] >> (n + extra_shift), indexed by k = floor(y * 4096)
        (the same integers: scaling by 4096 is exact, so floor(y * 4096) = 4096 * n + floor(f * 4096))."""
        table = self.shifted(extra_shift, dtype)
        k = d.mul_(EXP_INDEX_SCALE).clamp_(max=float(len(table) - 1))
        return table[k.to(torch.int64)]

    def shifted(self, extra_shift: int, dtype: torch.dtype) -> torch.Tensor:
        """The table exp_neg gathers from: E[i] >> (n + extra_shift) at index 4096 * n + i, then one 0."""
        key = (extra_shift, dtype)
        if key not in self._exp_tables:
            n = torch.arange(EXP_TABLE_SHIFTS - extra_shift, device=self.exp2_frac.device)[:, None]  # then all zero
            shifted = torch.bitwise_right_shift(self.exp2_frac[None, :], n + extra_shift).flatten()
            self._exp_tables[key] = torch.cat([shifted, shifted.new_zeros(1)]).to(dtype)
        return self._exp_tables[key]

    def gated(self, x: torch.Tensor) -> torch.Tensor:
        """x * G(x) (SiLU with the sigmoid table, GELU with phi's), G linearly interpolated in the table as
        lo + (hi - lo) * f; the table's ends (exactly 0 and 1) beyond +-16."""
        t = torch.clamp(x, -tables.SIGMOID_RANGE, tables.SIGMOID_RANGE).add_(tables.SIGMOID_RANGE)
        t.mul_(tables.SIGMOID_STEPS_PER_UNIT)
        i = torch.floor(t).clamp_(max=float(len(self.gate) - 2))
        index = i.to(torch.int64)
        f = t.sub_(i)
        g = self.gate_step[index].mul_(f).add_(self.gate[index]).div_(1 << tables.TABLE_BITS)
        return g.mul_(x)


def divide(numerator: torch.Tensor | float, denominator: torch.Tensor | float) -> torch.Tensor:
    """numerator / denominator in one correctly rounded division per element, as SPEC.md 9.3 has every ÷, with a
    number on either side. torch does not divide there: `number / tensor` is number * (1 / tensor) on every device
    and `tensor / number` is tensor * (1 / number) on CUDA (aten's div_true_kernel_cuda), two roundings that are 1 ulp
    off for about a quarter of binary64 inputs and move q wherever x * c lands on a half."""
    if not isinstance(numerator, torch.Tensor):
        numerator = torch.full_like(denominator, numerator)
    if not isinstance(denominator, torch.Tensor):
        denominator = torch.full_like(numerator, denominator)
    return torch.div(numerator, denominator)


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization along the last axis: q = round(x * (QMAX / m)), scale = m / QMAX, m = max |x| (1 where
    0). Returns float64 q (integer-valued, |q| <= QMAX) and the float64 scale (..., 1)."""
    m = x.abs().amax(dim=-1, keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))
    return torch.round(x * divide(QMAX, m)), divide(m, QMAX)


def mean_square(v: torch.Tensor, divisor: float, residual_bits: int) -> torch.Tensor:
    """ldexp(sum of (v_j >> k)^2, 2k - 2 * bits) / divisor along the last axis of int64 v (kept as size 1): the sum
    exact in int64, k = max(0, the binary exponent of max |v| - 24) so that every reduced |v_j| < 2^24."""
    peak = v.abs().amax(dim=-1, keepdim=True).to(F64)
    shift = torch.clamp(torch.frexp(peak).exponent.to(torch.int64) - 24, min=0)
    reduced = torch.bitwise_right_shift(v, shift)
    sum_sq = (reduced * reduced).sum(dim=-1, keepdim=True).to(F64)  # exact: < d * 2^48
    return divide(torch.ldexp(sum_sq, 2 * shift - 2 * residual_bits), divisor)


def correctly_rounded_sqrt(device: torch.device):
    """A float64 sqrt on `device` that rounds correctly, as SPEC.md 9.3 requires: torch.sqrt where it agrees with
    numpy's (the hardware instruction) on a probe, else numpy's on the CPU. torch 2.13's CPU sqrt is 1 ulp off for
    about 1 % of float64 inputs, 1755.4540978446098 among them."""
    probe = torch.rand(4096, generator=torch.Generator().manual_seed(0), dtype=F64) * 1e4
    probe[0] = 1755.4540978446098
    if torch.equal(torch.sqrt(probe.to(device)).cpu(), torch.from_numpy(np.sqrt(probe.numpy()))):
        return torch.sqrt
    return lambda x: torch.from_numpy(np.sqrt(x.cpu().numpy())).to(x.device)


def float64_products(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a @ w.T for integer-valued a and int8 w in float64: exact while the partial sums stay below 2^53."""
    return a @ w.to(F64).T


def int8_halves(rows: int, width: int, device: torch.device) -> torch.Tensor:
    """Room for the hi and lo halves of `rows` rows, rows first. CUDA's int8 GEMM wants more than 16 rows: there,
    padding rows are zero."""
    if device.type == "cuda" and 2 * rows <= 16:
        return torch.zeros(17, width, dtype=torch.int8, device=device)
    return torch.empty(2 * rows, width, dtype=torch.int8, device=device)


def int8_products(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """float64_products in the int8 GEMM, in torch operations: a = 256 * hi + lo with hi, lo in int8, both halves in
    one GEMM with int32 sums (|partial sums| < 2^25), joined exactly."""
    shape = a.shape
    flat = a.reshape(-1, shape[-1]).to(torch.int32)
    rows = flat.shape[0]
    lo = torch.bitwise_and(flat + 128, 255) - 128  # two's complement: the same as (flat + 128) mod 256 - 128
    hi = torch.bitwise_right_shift(flat - lo, 8)  # exact division by 256
    halves = int8_halves(rows, shape[-1], a.device)
    halves[:rows], halves[rows : 2 * rows] = hi, lo
    acc = torch._int_mm(halves, w.T).to(F64)
    # 256 * hi + lo: integers below 2^34, exact however the add is evaluated
    return torch.add(acc[rows : 2 * rows], acc[:rows], alpha=256).reshape(*shape[:-1], w.shape[0])


def checked_device(name: str | torch.device, here: bool = True) -> torch.device:
    """The device `name` names, where the engine can run there: the CPU, or a CUDA GPU this torch can use (unless not
    `here`: a cluster's workers check that where they run). Others lack what the exact operations need (float64 on
    Apple's MPS) or were never checked; ValueError says why."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name!r} is not a device (cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: lza runs models on cpu and cuda devices only")
    if device.type == "cuda" and here:
        if not torch.cuda.is_available():
            why = "it was built without CUDA" if torch.version.cuda is None else "it finds no usable GPU or driver"
            raise ValueError(f"{name}: this torch ({torch.__version__}) cannot use a CUDA GPU here: {why}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: no such GPU (this machine has {torch.cuda.device_count()})")
    return device


class TorchOps:
    """The exact operations in torch operations, on any device; the base of CompiledOps, which replaces them with
    compiled loops on a CPU. Integer products take the int8 GEMM where a self-check on extreme values shows it exact
    on this device, else float64 products."""

    def __init__(self, device: torch.device, tables: Tables) -> None:
        self.device = device
        self.tables = tables
        self.sqrt = correctly_rounded_sqrt(device)
        # LZA_INT8_GEMM=off: the float64 products even where the int8 GEMM is exact (cross-platform proofs)
        self.use_int8 = switch("LZA_INT8_GEMM", ("on", "off")) == "on" and self._int8_exact()

    def _int8_exact(self) -> bool:
        """The int8 GEMM against float64 products on extreme values, for 1 to 8 rows (a GEMM may take another kernel
        for few rows) and for 40."""
        generator = torch.Generator().manual_seed(0)
        a = torch.randint(-QMAX, QMAX + 1, (40, 1536), generator=generator, dtype=torch.int64).to(F64)
        a[0], a[1] = QMAX, -QMAX
        w = torch.randint(-128, 128, (64, 1536), generator=generator, dtype=torch.int64).to(torch.int8)
        w[0], w[1] = 127, -128
        a, w = a.to(self.device), w.to(self.device)
        try:
            return all(torch.equal(int8_products(a[:rows], w), float64_products(a[:rows], w)) for rows in (*range(1, 9), 40))
        except (RuntimeError, NotImplementedError):
            return False

    def linear(self, a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
        """(a @ w.T) * a_scale * w_scale, the product exact: a (..., k) integers, a_scale (..., 1), w (n, k) int8,
        w_scale (n,)."""
        if not self.use_int8:
            return float64_products(a, w) * a_scale * w_scale
        return self._int8_linear(a, a_scale, w, w_scale)

    def _int8_linear(self, a, a_scale, w, w_scale) -> torch.Tensor:
        return int8_products(a, w) * a_scale * w_scale

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """quantize() along the last axis."""
        return quantize(x)

    def norm_quantize(self, x: torch.Tensor, weight: torch.Tensor, eps: float, residual_bits: int):
        """RMSNorm with gain `weight` fused with quantize: the 1/rms factor is one per row, so it moves into the
        scale. x: (..., d) int64 residual in units of 2^-residual_bits. Returns q and scale with q * scale =
        norm(x) * weight; the sum of squares is exact in int64 after dropping low bits of large rows."""
        q, m_scale = quantize(x.to(F64) * weight)
        rms = self.sqrt(mean_square(x, float(x.shape[-1]), residual_bits) + eps)
        return q, m_scale / (rms * (1 << residual_bits))

    def layer_norm_quantize(self, x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, eps: float,
                            residual_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """LayerNorm with gain and bias, then quantize. x: (..., d) int64 residual in units of 2^-residual_bits.
        The mean subtraction is exact in integers: y = d * x - sum x; the variance is that of y (its sum of squares
        exact in int64 after dropping low bits, as in norm_quantize) over d^3; n = ((y / (sigma * (d * 2^bits))) *
        gain) + bias."""
        d = x.shape[-1]
        y = x * d - x.sum(dim=-1, keepdim=True)  # d * (x - mean), exact
        sigma = self.sqrt(mean_square(y, float(d * d * d), residual_bits) + eps)
        return quantize((y.to(F64) / (sigma * float(d << residual_bits))) * gain + bias)

    def gate_quantize(self, x: torch.Tensor, up: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """quantize(Tables.gated(x) * up) along the last axis (SiLU-gated MLPs), or quantize(Tables.gated(x)) without
        up (GELU)."""
        gated = self.tables.gated(x)
        return quantize(gated if up is None else gated * up)

    def rope(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x (B, T, H, hd) at positions start + t, each pair (x0, x1) rotated to (x0 * cos - x1 * sin,
        x0 * sin + x1 * cos) by the tables. Returns (B, H, T, hd)."""
        x = x.transpose(1, 2)
        cos = self.tables.rope_cos[start : start + x.shape[2]]  # (T, hd/2)
        sin = self.tables.rope_sin[start : start + x.shape[2]]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)

    def attention(self, k: torch.Tensor, ks: torch.Tensor, v: torch.Tensor, vs: torch.Tensor, block: torch.Tensor,
                  block_factor: torch.Tensor, slots: torch.Tensor, kept: int = 0, span: int = 0) -> torch.Tensor:
        """One block of queries against one layer's cache: k (B, KVH, hd, C) and v (B, KVH, C, hd) int16, ks and vs
        (B, KVH, C, 1); block (B, KVH, rows, hd) integers, rows (head in group, position) for the positions in these
        slots, block_factor (B, KVH, rows) their qs / sqrt(hd). The query in slot s sees the keys in slots j <= s
        (causal) and, with a span S > 0, only those below `kept` (the prefix) or above s - S (SPEC.md 9.5).
        Returns the attention output (B, KVH, rows, hd)."""
        batch, kv_heads = block.shape[:2]
        keys = int(slots[-1]) + 1
        z = block @ k[..., :keys].to(F64)  # exact: |.| <= hd * QMAX^2
        z.mul_(block_factor[..., None]).mul_(ks[:, :, :keys].transpose(-1, -2))
        lo = min(kept, int(slots[0]) + 1) if span else int(slots[0]) + 1  # every row of the block sees the keys below
        j = torch.arange(lo, keys, device=self.device)[None, :]
        allowed = j <= slots[:, None]
        if span:
            allowed &= (j < kept) | (j > slots[:, None] - span)
        z.view(batch, kv_heads, -1, len(slots), keys)[..., lo:].masked_fill_(~allowed, -1e300)
        z.sub_(z.amax(dim=-1, keepdim=True))  # masked keys end up with p = 0 exactly
        p = self.tables.exp_neg(z, extra_shift=15, dtype=F64)  # integers <= 2^15, as float64
        p_sum = p.sum(dim=-1, keepdim=True)  # exact: integers below 2^53
        w_q, w_scale = quantize(p.mul_(vs[:, :, :keys].transpose(-1, -2)))
        return (w_q @ v[:, :, :keys].to(F64)).mul_(w_scale / p_sum)  # exact product < 2^41

    def frequencies(self, logits: torch.Tensor, total_bits: int, bias: torch.Tensor | None = None,
                    bias_rows: np.ndarray | None = None) -> torch.Tensor:
        """(n, V) logits -> (n, V) int64 frequencies summing to 2^total_bits, each at least 1 (SPEC.md 9.4):
        e = exp_neg(z - max z); f = 1 + floor(e * (2^total - V) / sum e); the remainder goes to the first maximal
        token. With the bias head's state (m, V) int64 (SPEC.md 9.9), row i's logits are first z + bias[bias_rows[i]]
        * BIAS_UNIT (the conversion, then an exact product, then one rounded sum)."""
        if bias is not None:
            rows = torch.as_tensor(bias_rows, device=logits.device)
            logits = logits + bias[rows].to(F64).mul_(BIAS_UNIT)
        vocab = logits.shape[-1]
        e = self.tables.exp_neg(logits - logits.amax(dim=-1, keepdim=True))  # int64 <= 2^30
        free = (1 << total_bits) - vocab
        freq = 1 + torch.div(e * free, e.sum(dim=-1, keepdim=True), rounding_mode="floor")
        remainder = (1 << total_bits) - freq.sum(dim=-1, keepdim=True)
        top = e.argmax(dim=-1, keepdim=True)  # argmax returns the first maximal index
        return freq.scatter_add(-1, top, remainder)

    def update_bias(self, bias: torch.Tensor, bias_rows: np.ndarray, freq: torch.Tensor, symbols: np.ndarray, rate: int,
                    total_bits: int) -> None:
        """The bias head's update after each row's symbol (SPEC.md 9.9), in place: bias[bias_rows[i]] -= (freq[i] *
        rate) >> total_bits, then bias[bias_rows[i], symbols[i]] += rate. freq: the tables the bias gave; rows named
        more than once (a shared bias head, SPEC.md 9.10) take the sum of their updates."""
        rows = torch.as_tensor(bias_rows, device=bias.device)
        bias.index_add_(0, rows, -torch.bitwise_right_shift(freq * rate, total_bits))
        rate_at = torch.full((len(rows),), rate, dtype=bias.dtype, device=bias.device)
        bias.index_put_((rows, torch.as_tensor(symbols, device=bias.device)), rate_at, accumulate=True)

    def cache_keys(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A neural cache's keys (SPEC.md 9.13) from final rows q (n, d), integers with |q| <= QMAX: k = round(127 q
        / m) as int8, m = max |q| (1 where 0), and each key's length sqrt(max(1, sum k^2)) (float64: the sum exact,
        one correctly rounded sqrt)."""
        m = q.abs().amax(dim=-1, keepdim=True)
        k = torch.round(divide(q * 127, torch.where(m > 0, m, torch.ones_like(m))))
        return k.to(torch.int8), self.sqrt((k * k).sum(dim=-1).clamp_(min=1))

    def key_products(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """rows @ keys.T of int8 keys, exact (|sums| <= d * 127^2 < 2^24 for d < 1,040): the int8 GEMM's int32
        where it is exact, else float64 products. CUDA's int8 GEMM wants more than 16 rows and keys in multiples of
        8: padded with zeros."""
        if not self.use_int8:
            return rows.to(F64) @ keys.to(F64).T
        if rows.device.type != "cuda":
            return torch._int_mm(rows, keys.T)
        padded_rows = torch.cat([rows, rows.new_zeros(max(0, 17 - len(rows)), rows.shape[1])])
        padded_keys = torch.cat([keys, keys.new_zeros(-len(keys) % 8, keys.shape[1])])
        return torch._int_mm(padded_rows, padded_keys.T)[: len(rows), : len(keys)]

    def cache_table(self, dots: torch.Tensor, row_lengths: torch.Tensor, lengths: torch.Tensor, values: torch.Tensor,
                    lo: np.ndarray, hi: np.ndarray, vocab: int, theta: float, shift: int,
                    bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The neural cache's distribution for rows whose keys' products with the cache's keys are dots (key_products),
        row i over the keys lo[i] <= s < hi[i] (SPEC.md 9.13): cos = dot / (row length * key length), the product
        and the quotient rounded once each; e = exp_neg(theta * cos - its row's max) in 2^-(30 - shift) units; c_v =
        floor(2^bits * (the sum of e over the keys followed by token v) / (the sum of all e)). Returns c (n, V) int64
        and each row's largest cos (n,)."""
        keys = int(hi.max())
        s, device = torch.arange(keys, device=dots.device), dots.device
        seen = (s >= torch.as_tensor(lo, device=device)[:, None]) & (s < torch.as_tensor(hi, device=device)[:, None])
        cos = divide(dots[:, :keys].to(F64), row_lengths[:, None] * lengths[:keys]).masked_fill_(~seen, -math.inf)
        top = cos.amax(dim=-1)
        z = cos.mul_(theta)
        e = self.tables.exp_neg(z.sub_(z.amax(dim=-1, keepdim=True)), extra_shift=shift)  # 0 where unseen
        c = torch.zeros(len(dots), vocab, dtype=torch.int64, device=dots.device)
        c.scatter_add_(-1, values[:keys].expand(len(dots), -1), e)
        return torch.div(c.bitwise_left_shift_(bits), e.sum(dim=-1, keepdim=True), rounding_mode="floor"), top

    @staticmethod
    def mix_cache(freq: torch.Tensor, cache: torch.Tensor, weights: torch.Tensor, weight_bits: int, cache_bits: int,
                  total_bits: int) -> torch.Tensor:
        """Tables (n, V) summing to 2^total_bits mixed with the cache's c (cache_table) at weights Q (n,) in
        [0, 2^weight_bits) (SPEC.md 9.13): f'_v = 1 + (((f_v - 1) (2^wb - Q)) >> wb) + ((c_v G) >> cb), G = ((2^total -
        V) Q) >> wb, the remainder to the first maximal f'_v: every symbol keeps at least 1."""
        keep = (1 << weight_bits) - weights[:, None]
        given = (((1 << total_bits) - freq.shape[-1]) * weights[:, None]) >> weight_bits
        mixed = ((freq - 1) * keep).bitwise_right_shift_(weight_bits).add_(1)
        mixed.add_((cache * given).bitwise_right_shift_(cache_bits))
        remainder = (1 << total_bits) - mixed.sum(dim=-1, keepdim=True)
        return mixed.scatter_add_(-1, mixed.argmax(dim=-1, keepdim=True), remainder)

    # The range coder runs on the host; of the (n, V) tables only a few integers per row cross to it: a GPU's link
    # would otherwise carry V integers per token (49,152 at the default model).

    @staticmethod
    def table_entries(freq: torch.Tensor, symbols: np.ndarray) -> np.ndarray:
        """freq[i, symbols[i]] for each row i, on the host."""
        return freq.gather(-1, torch.as_tensor(symbols, device=freq.device)[:, None])[:, 0].cpu().numpy()

    def symbol_starts(self, freq: torch.Tensor, symbols: np.ndarray) -> np.ndarray:
        """Where each row's symbol's interval begins: freq[i, 0] + ... + freq[i, symbols[i] - 1], on the host."""
        index = torch.as_tensor(symbols, device=freq.device)[:, None]
        return (freq.cumsum(dim=-1).gather(-1, index) - freq.gather(-1, index))[:, 0].cpu().numpy()

    def find_symbols(self, freq: torch.Tensor, targets: np.ndarray, guesses: np.ndarray, keeps: np.ndarray,
                     givens: np.ndarray, weight_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(symbols, starts, sizes) on the host: in row i of freq with guesses[i] mixed in (kernels.mixed_cumulative;
        keeps[i] = 2^weight_bits and givens[i] = 0 leave the row as it is), the symbol whose interval [start, start +
        size) holds targets[i] (below the table's total)."""

        def column(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, device=freq.device)[:, None]

        after = torch.arange(1, freq.shape[-1] + 1, device=freq.device)  # s + 1: each symbol's interval ends at C'(s + 1)
        ends = freq.cumsum(dim=-1).sub_(after).mul_(column(keeps)).bitwise_right_shift_(weight_bits).add_(after)
        ends.add_(torch.where(after > column(guesses), column(givens), 0))
        symbols = torch.searchsorted(ends, column(targets), right=True)  # the first end above the target
        starts = torch.where(symbols > 0, ends.gather(-1, (symbols - 1).clamp(min=0)), 0)
        sizes = ends.gather(-1, symbols) - starts
        return symbols[:, 0].cpu().numpy(), starts[:, 0].cpu().numpy(), sizes[:, 0].cpu().numpy()


class CompiledOps(TorchOps):
    """The exact operations in the compiled CPU loops of kernels.py: one pass per row where the torch operations
    make a dozen, each a pass over memory or, when decoding, mostly dispatch overhead. Around the loops the buffers are
    numpy arrays, handed to torch without a copy: a torch call costs a microsecond or more, as much as a loop over a
    decoding step's rows (a one-row decoding step of the default model spent half its time in such calls)."""

    @staticmethod
    def _rows(kernel, x: torch.Tensor, *inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs a row kernel, kernel(rows of x, *inputs, q, scale), that writes q (rows, d) and scale (rows,) for the
        rows of x's last axis."""
        q, scale = np.empty(x.shape), np.empty((*x.shape[:-1], 1))
        kernel(x.numpy().reshape(-1, x.shape[-1]), *inputs, q.reshape(-1, x.shape[-1]), scale.reshape(-1))
        return torch.from_numpy(q), torch.from_numpy(scale)

    def _int8_linear(self, a, a_scale, w, w_scale) -> torch.Tensor:
        flat = a.numpy().reshape(-1, a.shape[-1])
        halves = np.empty((2 * len(flat), flat.shape[1]), dtype=np.int8)
        split_halves(flat, halves)
        acc = torch._int_mm(torch.from_numpy(halves), w.T).numpy()
        out = np.empty((*a.shape[:-1], w.shape[0]))
        join_halves(acc, a_scale.numpy().reshape(-1), w_scale.numpy(), out.reshape(-1, w.shape[0]))
        return torch.from_numpy(out)

    def quantize(self, x):
        return self._rows(quantize_rows, x)

    def norm_quantize(self, x, weight, eps, residual_bits):
        return self._rows(norm_quantize_rows, x, weight.numpy(), eps, residual_bits)

    def layer_norm_quantize(self, x, gain, bias, eps, residual_bits):
        return self._rows(layer_norm_quantize_rows, x, gain.numpy(), bias.numpy(), eps, residual_bits)

    def gate_quantize(self, x, up=None):
        # without up, times 1.0: exact, so the same values as no product at all
        up = torch.ones(1, dtype=F64).expand(x.shape) if up is None else up
        return self._rows(gate_quantize_rows, x, up.numpy().reshape(-1, x.shape[-1]), self.tables.gate.numpy(),
                          self.tables.gate_step.numpy())

    def rope(self, x, start):
        batch, steps, heads, hd = x.shape
        out = np.empty((batch, heads, steps, hd))
        rope_rows(x.numpy(), start, self.tables.rope_cos.numpy(), self.tables.rope_sin.numpy(), out)
        return torch.from_numpy(out)

    def attention(self, k, ks, v, vs, block, block_factor, slots, kept=0, span=0):
        """Decoding (one position, its rows the heads of a group) in one compiled pass per head of the cache:
        the scores and the weighted values in loops streaming the cache, where BLAS is slow on products of three rows,
        and the keys a span hides skipped (the same sums: their weights are 0). Blocks of several positions take
        TorchOps' float64 products, exact in any summation order, around the compiled softmax weights. (The int8 GEMM
        is slower here: its inner dimension, head_dim, is too short to pay for four times the products in halves.)"""
        batch, kv_heads, rows, hd = block.shape
        keys = int(slots[-1]) + 1
        kept = kept if span else 0  # no span: no prefix apart, every row sees 0 .. its slot
        exp15 = self.tables.shifted(15, F64).numpy()
        if len(slots) == 1:
            z = np.empty((batch, kv_heads, rows, keys))
            out = np.empty((batch, kv_heads, rows, hd))
            decoding_attention(block.numpy(), block_factor.numpy(), k.numpy(), ks.numpy()[..., 0], v.numpy(),
                               vs.numpy()[..., 0], kept, max(keys - span, kept) if span else 0, exp15, z, out)
            return torch.from_numpy(out)
        z = block @ k[..., :keys].to(F64)  # exact: |.| <= hd * QMAX^2
        first = (slots + 1 - span).clamp(min=kept) if span else torch.zeros_like(slots)
        factor = torch.empty(batch, kv_heads, rows, dtype=F64)
        attention_weights(z.numpy(), block_factor.numpy(), ks[..., 0].numpy(), vs[..., 0].numpy(), kept,
                          first.repeat(rows // len(slots)).numpy(), (slots + 1).repeat(rows // len(slots)).numpy(),
                          exp15, factor.numpy())
        return (z @ v[:, :, :keys].to(F64)).mul_(factor[..., None])  # exact: products below 2^41

    def frequencies(self, logits, total_bits, bias=None, bias_rows=None):
        if bias is None:  # a zero row: adding 0.0 leaves every logit as it is
            bias, bias_rows = _zero_bias(logits.shape[-1]), np.zeros(len(logits), dtype=np.int64)
        freq = torch.empty(logits.shape, dtype=torch.int64)
        frequency_rows(logits.numpy(), bias.numpy(), np.asarray(bias_rows, dtype=np.int64),
                       self.tables.shifted(0, torch.int64).numpy(), total_bits, freq.numpy())
        return freq

    def cache_table(self, dots, row_lengths, lengths, values, lo, hi, vocab, theta, shift, bits):
        c = torch.zeros(len(dots), vocab, dtype=torch.int64)
        top = torch.empty(len(dots), dtype=F64)
        cache_rows(dots.numpy(), row_lengths.numpy(), lengths.numpy(), values.numpy(), lo, hi, theta,
                   self.tables.shifted(shift, torch.int64).numpy(), bits, c.numpy(), top.numpy())
        return c, top

    @staticmethod
    def mix_cache(freq, cache, weights, weight_bits, cache_bits, total_bits):
        out = torch.empty_like(freq)
        mix_cache_rows(freq.numpy(), cache.numpy(), weights.numpy(), weight_bits, cache_bits, total_bits, out.numpy())
        return out

    def update_bias(self, bias, bias_rows, freq, symbols, rate, total_bits):
        update_bias_rows(bias.numpy(), np.asarray(bias_rows, dtype=np.int64), freq.numpy(),
                         np.asarray(symbols, dtype=np.int64), rate, total_bits)

    def symbol_starts(self, freq, symbols):
        starts = np.empty_like(symbols)
        symbol_starts(freq.numpy(), symbols, starts)
        return starts

    def find_symbols(self, freq, targets, guesses, keeps, givens, weight_bits):
        symbols, starts, sizes = (np.empty_like(targets) for _ in range(3))
        find_symbols(freq.numpy(), targets, guesses, keeps, givens, weight_bits, symbols, starts, sizes)
        return symbols, starts, sizes


@functools.cache
def _zero_bias(vocab: int) -> torch.Tensor:
    return torch.zeros(1, vocab, dtype=torch.int64)


def switch(name: str, choices: tuple[str, ...]) -> str:
    """An environment switch of the engine (the first choice when unset): a value outside its choices is an error, not
    a silent default, since cross-platform proofs rely on which path ran."""
    value = os.environ.get(name, choices[0])
    if value not in choices:
        raise ValueError(f"{name}={value!r}: choose {' or '.join(choices)}")
    return value


def exact_ops(device: torch.device, tables: Tables, compiled: bool | None = None) -> TorchOps:
    """CompiledOps on a CPU (unless LZA_KERNELS=torch: the torch operations there too), TorchOps elsewhere."""
    if compiled is None:
        compiled = device.type == "cpu" and switch("LZA_KERNELS", ("compiled", "torch")) == "compiled"
    return (CompiledOps if compiled else TorchOps)(device, tables)
