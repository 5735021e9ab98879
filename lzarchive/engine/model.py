"""Engine layer: the exact integer Llama forward (SPEC.md section 9.3), full-sequence and incremental with a KV cache.

Every row of every tensor depends only on its own token and the cached keys and values of earlier tokens, through
exact operations; so a full-sequence forward, a token-by-token forward, any batch size and any device give the same
integers. Residual stream: int64 in units of 2^-RESIDUAL_BITS. Matmul inputs: per-token quantized to |q| <= QMAX.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass

import torch

from .kernels import (F64, IntMatmul, Tables, attention_scores, attention_values, attention_weights,
                      attention_weights_halves, correctly_rounded_sqrt, divide, frequency_rows, frequency_table,
                      interleave_halves, norm_quantize_rows, quantize, quantize_rows, rope_rows,
                      silu_product_quantize_rows, split_halves)

RESIDUAL_BITS = 16
ATTENTION_BLOCK = 128  # query positions per block (memory and the causal half both shrink)
MLP_BLOCK = 256  # rows (batch x positions) per MLP block
INT8_ATTENTION_KEYS = 1 << 17  # the int8 values product sums up to keys x 2^14 in int32
FORWARD_TOKENS = 1024  # batch x positions per pass at most: 64 windows of 257 positions in one pass took 30.6 s, in
# passes of 3-4 rows 14-16 s (the intermediates stay in cache), and held 1.3 GB more


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float
    norm_eps: float
    max_positions: int  # rows of the RoPE tables: the longest window the model can run
    bos_token: int
    escape_token: int  # a control token that tokenization never produces; the lm codec uses it to escape raw bytes
    architecture: str = "llama"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls(**json.loads(text))


@dataclass
class KVCache:
    """Per layer: keys and values quantized per (token, kv head) as int16 (|q| <= QMAX), with float64 scales.
    Preallocated for `capacity` positions; `length` are filled. Keys are stored transposed: decoding computes a score
    per key, and reading a key's component d for all keys at once vectorizes."""

    k: list[torch.Tensor]  # (B, KVH, hd, capacity) int16
    k_scale: list[torch.Tensor]  # (B, KVH, capacity, 1) float64
    v: list[torch.Tensor]  # (B, KVH, capacity, hd) int16
    v_scale: list[torch.Tensor]
    length: int = 0

    def rows(self, lo: int, hi: int) -> KVCache:
        """Batch rows lo..hi as a cache of their own, sharing this one's storage."""
        return KVCache(*[[t[lo:hi] for t in group] for group in (self.k, self.k_scale, self.v, self.v_scale)], self.length)

    def start_from(self, prefix: KVCache) -> None:
        """Every batch row begins with the positions of a one-row cache (a prefix every row shares): they are copied,
        so positions computed once give the same integers as computing them in each row."""
        for mine, theirs in zip((self.k, self.k_scale, self.v, self.v_scale), (prefix.k, prefix.k_scale, prefix.v, prefix.v_scale)):
            for layer, tensor in enumerate(theirs):
                if mine is self.k:
                    mine[layer][..., : prefix.length] = tensor[..., : prefix.length]
                else:
                    mine[layer][:, :, : prefix.length] = tensor[:, :, : prefix.length]
        self.length = prefix.length

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows `rows`, one layer at a time (the peak is the old cache plus one layer)."""
        for group in (self.k, self.k_scale, self.v, self.v_scale):
            for layer, tensor in enumerate(group):
                group[layer] = tensor[rows]


class ExactLlama:
    """Runs a compiled model. Weights: int8 (out, in) with float64 per-output-channel scales."""

    def __init__(self, config: ModelConfig, tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                 compiled_kernels: bool | None = None):
        self.config = config
        self.device = torch.device(device)
        # the elementwise row work, attention and frequency tables in the compiled CPU loops of kernels.py (the default
        # on a CPU) or in torch operations (any device): the same integers
        if compiled_kernels is None:  # LZA_KERNELS=torch: the torch operations on a CPU too (cross-platform proofs)
            compiled_kernels = self.device.type == "cpu" and os.environ.get("LZA_KERNELS", "compiled") != "torch"
        self.compiled_kernels = compiled_kernels
        self.t = {name: tensor.to(self.device) for name, tensor in tensors.items()}
        if "output.q" not in self.t:  # tied embeddings: the output head is the embedding table
            self.t["output.q"], self.t["output.scale"] = self.t["tok_embeddings.q"], self.t["tok_embeddings.scale"]
        for layer in range(config.layers):  # output channels are independent, so fused weights give the same integers
            p = f"layers.{layer}."
            for fused, parts in (("wqkv", ("wq", "wk", "wv")), ("w_gate_up", ("w_gate", "w_up"))):
                for suffix in (".q", ".scale"):
                    self.t[p + fused + suffix] = torch.cat([self.t.pop(p + part + suffix) for part in parts])
        self.tables = Tables(self.t["table.exp2_frac"], self.t["table.sigmoid"], self.t["table.rope_cos"],
                             self.t["table.rope_sin"])
        self.matmul = IntMatmul(self.device, self.compiled_kernels)
        self.sqrt = correctly_rounded_sqrt(self.device)

    # ------------------------------------------------------------------------------------------ building blocks

    def _linear(self, a: torch.Tensor, a_scale: torch.Tensor, name: str) -> torch.Tensor:
        """Real-valued output of a quantized input times an int8 weight: acc * input scale * channel scale."""
        return self.matmul.linear(a, a_scale, self.t[name + ".q"], self.t[name + ".scale"])

    @staticmethod
    def _compiled_rows(kernel, x: torch.Tensor, *inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs a row kernel of kernels.py that writes q (rows, d) and scale (rows,) for the rows of x's last axis."""
        q = torch.empty(x.shape, dtype=F64)
        scale = torch.empty(*x.shape[:-1], 1, dtype=F64)
        kernel(*inputs, q.view(-1, x.shape[-1]).numpy(), scale.view(-1).numpy())
        return q, scale

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.compiled_kernels:
            return quantize(x)
        return self._compiled_rows(quantize_rows, x, x.reshape(-1, x.shape[-1]).numpy())

    def _norm_quantize(self, x: torch.Tensor, weight: str) -> tuple[torch.Tensor, torch.Tensor]:
        """RMSNorm fused with per-token quantization: the 1/rms factor is a per-token scalar, so it moves into the
        scale. x: (..., d) int64 residual. Returns q (..., d) and scale (..., 1) with q * scale = norm(x) * g."""
        if self.compiled_kernels:
            return self._compiled_rows(norm_quantize_rows, x, x.reshape(-1, x.shape[-1]).numpy(), self.t[weight].numpy(),
                                       self.config.norm_eps, RESIDUAL_BITS)
        u = x.to(F64) * self.t[weight]  # (..., d) rounded products
        q, m_scale = quantize(u)
        # sum of squares exactly in int64 after dropping low bits so that it cannot overflow
        peak = x.abs().amax(dim=-1, keepdim=True).to(F64)
        shift = torch.clamp(torch.frexp(peak).exponent.to(torch.int64) - 24, min=0)  # |reduced| < 2^24
        reduced = torch.bitwise_right_shift(x, shift)
        sum_sq = (reduced * reduced).sum(dim=-1, keepdim=True).to(F64)  # exact: < d * 2^48
        mean = divide(torch.ldexp(sum_sq, 2 * shift - 2 * RESIDUAL_BITS), self.config.hidden)
        rms = self.sqrt(mean + self.config.norm_eps)
        return q, m_scale / (rms * (1 << RESIDUAL_BITS))

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate adjacent pairs (2i, 2i+1) by position * theta^(-2i/hd). x: (B, T, H, hd), positions: (B, T), the same
        consecutive positions in every row. Returns (B, H, T, hd)."""
        if self.compiled_kernels:
            batch, steps, heads, hd = x.shape
            out = torch.empty(batch, heads, steps, hd, dtype=F64)
            rope_rows(x.numpy(), int(positions[0, 0]), self.tables.rope_cos.numpy(), self.tables.rope_sin.numpy(), out.numpy())
            return out
        x = x.transpose(1, 2)
        cos = self.tables.rope_cos[positions][:, None]  # (B, 1, T, hd/2)
        sin = self.tables.rope_sin[positions][:, None]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        r0 = x0 * cos - x1 * sin
        r1 = x0 * sin + x1 * cos
        return torch.stack([r0, r1], dim=-1).flatten(-2)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, ks: torch.Tensor, v: torch.Tensor, vs: torch.Tensor,
                   q_pos: torch.Tensor) -> torch.Tensor:
        """q: (B, H, T, hd) real. Keys (B, KVH, hd, S) and values (B, KVH, S, hd): KVCache tensors, S at least the last
        query position + 1.
        q_pos: (B, T) query positions (equal across the batch). Returns (B, T, H*hd) real.

        Queries are processed in blocks of positions, each against the keys up to its last position only (the
        others are masked anyway); every row's arithmetic is the same as for the whole matrix at once."""
        cfg = self.config
        batch, _, steps, hd = q.shape
        group = cfg.heads // cfg.kv_heads
        q_q, q_s = self._quantize(q.reshape(batch, cfg.kv_heads, group, steps, hd))  # per (token, head)
        row_factor = q_s * (1.0 / math.sqrt(cfg.head_dim))
        out = torch.empty(batch, cfg.kv_heads, group, steps, hd, dtype=F64, device=self.device)
        block_attention = self._torch_block
        if self.compiled_kernels:
            int8_products = steps > 1 and self.matmul.use_int8 and cfg.max_positions < INT8_ATTENTION_KEYS
            block_attention = self._int8_blocks(k, v, int(q_pos[0, -1]) + 1) if int8_products else self._compiled_block
        for lo in range(0, steps, ATTENTION_BLOCK):
            hi = min(steps, lo + ATTENTION_BLOCK)
            # rows are (head in group, position)
            block = q_q[:, :, :, lo:hi].reshape(batch, cfg.kv_heads, group * (hi - lo), hd)
            block_factor = row_factor[:, :, :, lo:hi].reshape(batch, cfg.kv_heads, group * (hi - lo))
            result = block_attention(block, block_factor, k, ks, v, vs, q_pos[0, lo:hi])
            out[:, :, :, lo:hi] = result.view(batch, cfg.kv_heads, group, hi - lo, hd)
        return out.reshape(batch, cfg.heads, steps, hd).transpose(1, 2).flatten(2)

    def _torch_block(self, block, block_factor, k, ks, v, vs, positions) -> torch.Tensor:
        """One block of queries (B, KVH, rows, hd) at `positions` against the cache, in torch operations (any device)."""
        batch, kv_heads = block.shape[:2]
        keys = int(positions[-1]) + 1
        z = block @ k[..., :keys].to(F64)  # exact: |.| <= hd * QMAX^2
        z.mul_(block_factor[..., None]).mul_(ks[:, :, :keys].transpose(-1, -2))
        visible = int(positions[0]) + 1  # keys every row of the block sees; the causal mask covers only the rest
        allowed = torch.arange(visible, keys, device=self.device)[None, :] <= positions[:, None]
        z.view(batch, kv_heads, -1, len(positions), keys)[..., visible:].masked_fill_(~allowed, -1e300)
        z.sub_(z.amax(dim=-1, keepdim=True))  # masked keys end up with p = 0 exactly
        p = self.tables.exp_neg(z, extra_shift=15, dtype=F64)  # integers <= 2^15, as float64
        p_sum = p.sum(dim=-1, keepdim=True)  # exact: integers below 2^53
        w_q, w_scale = quantize(p.mul_(vs[:, :, :keys].transpose(-1, -2)))
        return (w_q @ v[:, :, :keys].to(F64)).mul_(w_scale / p_sum)  # exact product < 2^41

    def _int8_blocks(self, k: torch.Tensor, v: torch.Tensor, keys: int):
        """_compiled_block for blocks of several positions, with both products in the int8 GEMM (IntMatmul's halves
        on both sides: the same integers). The key and value halves are split once for all blocks."""
        batch, kv_heads, hd = k.shape[:3]
        k_halves = torch.empty(batch, kv_heads, hd, 2 * keys, dtype=torch.int8)
        interleave_halves(k[..., :keys].numpy(), k_halves.numpy())
        v_halves = torch.empty(batch, kv_heads, keys, 2 * hd, dtype=torch.int8)
        interleave_halves(v[:, :, :keys].numpy(), v_halves.numpy())

        def block_attention(block, block_factor, _k, ks, _v, vs, positions) -> torch.Tensor:
            rows, keys = block.shape[2], int(positions[-1]) + 1
            # at least 17 rows, as IntMatmul gives the int8 GEMM; rows past 2 x rows are padding, their products unread
            q_halves = torch.empty(batch, kv_heads, max(2 * rows, 17), hd, dtype=torch.int8)
            w_halves = torch.empty(batch, kv_heads, len(q_halves[0, 0]), keys, dtype=torch.int8)
            scores = torch.empty(batch, kv_heads, len(q_halves[0, 0]), 2 * keys, dtype=torch.int32)
            for b, h in itertools.product(range(batch), range(kv_heads)):
                split_halves(block[b, h].numpy(), q_halves[b, h].numpy())
                torch._int_mm(q_halves[b, h], k_halves[b, h, :, : 2 * keys], out=scores[b, h])
            factor = torch.empty(batch, kv_heads, rows, dtype=F64)
            visible = (positions + 1).repeat(rows // len(positions))
            attention_weights_halves(scores.numpy(), block_factor.numpy(), ks[..., 0].numpy(), vs[..., 0].numpy(),
                                     visible.numpy(), self.tables.shifted(15, F64).numpy(), w_halves.numpy(),
                                     factor.numpy())
            products = torch.stack([torch._int_mm(w_halves[b, h], v_halves[b, h, :keys])
                                    for b, h in itertools.product(range(batch), range(kv_heads))]).to(F64)
            hi, lo = (products[:, part : part + rows].reshape(batch, kv_heads, rows, hd, 2) for part in (0, rows))
            # 65536 hi.hi + 256 (hi.lo + lo.hi) + lo.lo: integers below 2^41
            result = hi[..., 0] * 65536 + (hi[..., 1] + lo[..., 0]) * 256 + lo[..., 1]
            return result.mul_(factor[..., None])

        return block_attention

    def _compiled_block(self, block, block_factor, k, ks, v, vs, positions) -> torch.Tensor:
        """The same as _torch_block in kernels.py's compiled CPU loops: one pass per row instead of a dozen tensor
        passes. Decoding (one position) also computes its products there, streaming the cache, where BLAS is slow on
        products of three rows; longer blocks take _int8_blocks, or the float64 BLAS products here where the int8
        GEMM is not exact."""
        batch, kv_heads, rows, hd = block.shape
        keys = int(positions[-1]) + 1
        decoding = len(positions) == 1
        if decoding:
            z = torch.empty(batch, kv_heads, rows, keys, dtype=F64)
            attention_scores(block.numpy(), k.numpy(), z.numpy())
        else:
            z = block @ k[..., :keys].to(F64)
        factor = torch.empty(batch, kv_heads, rows, dtype=F64)
        visible = (positions + 1).repeat(rows // len(positions))
        attention_weights(z.numpy(), block_factor.numpy(), ks[..., 0].numpy(), vs[..., 0].numpy(), visible.numpy(),
                          self.tables.shifted(15, F64).numpy(), factor.numpy())
        if decoding:
            result = torch.empty(batch, kv_heads, rows, hd, dtype=F64)
            attention_values(z.numpy(), v.numpy(), result.numpy())
        else:
            result = z @ v[:, :, :keys].to(F64)
        return result.mul_(factor[..., None])

    # ------------------------------------------------------------------------------------------ forward

    def new_cache(self, batch: int, capacity: int | None = None) -> KVCache:
        cfg = self.config
        capacity = capacity or cfg.max_positions

        def zeros(*shape: int, dtype: torch.dtype) -> list[torch.Tensor]:
            return [torch.zeros(batch, cfg.kv_heads, *shape, dtype=dtype, device=self.device) for _ in range(cfg.layers)]

        hd = cfg.head_dim
        return KVCache(zeros(hd, capacity, dtype=torch.int16), zeros(capacity, 1, dtype=F64),
                       zeros(capacity, hd, dtype=torch.int16), zeros(capacity, 1, dtype=F64))

    def cache_bytes(self, capacity: int) -> int:
        """Memory of one batch row of new_cache(batch, capacity)."""
        cfg = self.config
        return cfg.layers * 2 * cfg.kv_heads * capacity * (cfg.head_dim * 2 + 8)  # int16 values, a float64 scale

    def forward(self, tokens: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Append tokens (B, T) at positions cache.length ..; fills the cache in place. Right padding is inert:
        causal attention never lets an earlier position see a later one.
        Returns the final normalized hidden state quantized per token: q (B, T, d) and scale (B, T, 1).
        """
        cfg = self.config
        batch, steps = tokens.shape
        rows = max(1, FORWARD_TOKENS // steps)
        if batch > rows:  # rows are independent: the same integers in passes of fewer rows
            parts = [self.forward(tokens[lo : lo + rows], cache.rows(lo, lo + rows)) for lo in range(0, batch, rows)]
            cache.length += steps
            return torch.cat([q for q, _ in parts]), torch.cat([s for _, s in parts])
        start, end = cache.length, cache.length + steps
        if end > cache.v[0].shape[2]:
            raise ValueError(f"{end} positions exceed the cache capacity {cache.v[0].shape[2]}")
        positions = torch.arange(start, end, device=self.device).expand(batch, steps)
        emb_rows = self.t["tok_embeddings.q"][tokens].to(F64)  # (B, T, d)
        x = torch.round(emb_rows * self.t["tok_embeddings.scale"][tokens][..., None] * (1 << RESIDUAL_BITS)).to(torch.int64)
        q_width, kv_width = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        for layer in range(cfg.layers):
            p = f"layers.{layer}."
            a, s = self._norm_quantize(x, p + "attn_norm")
            q, k, v = self._linear(a, s, p + "wqkv").split([q_width, kv_width, kv_width], dim=-1)
            q = self._rope(q.view(batch, steps, cfg.heads, cfg.head_dim), positions)
            k = self._rope(k.view(batch, steps, cfg.kv_heads, cfg.head_dim), positions)
            v = v.view(batch, steps, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
            k_q, cache.k_scale[layer][:, :, start:end] = self._quantize(k)
            cache.k[layer][..., start:end] = k_q.transpose(-1, -2)
            cache.v[layer][:, :, start:end], cache.v_scale[layer][:, :, start:end] = self._quantize(v)
            # the whole cache tensors: each block reads only the keys up to its last position, and whole tensors are
            # contiguous, which the compiled loops need to vectorize
            attn = self._attention(q, cache.k[layer], cache.k_scale[layer], cache.v[layer], cache.v_scale[layer], positions)
            a, s = self._quantize(attn)
            x = x + torch.round(self._linear(a, s, p + "wo") * (1 << RESIDUAL_BITS)).to(torch.int64)
            # the MLP is row-wise: blocks of rows keep its float64 intermediates in cache, whatever the batch
            rows = x.reshape(batch * steps, cfg.hidden)
            x = torch.cat([block + self._mlp(block, p) for block in rows.split(MLP_BLOCK)]).view(batch, steps, cfg.hidden)
        cache.length = end
        return self._norm_quantize(x, "norm")

    def _mlp(self, x: torch.Tensor, p: str) -> torch.Tensor:
        """The residual update of one MLP block for rows x (n, d) int64."""
        cfg = self.config
        a, s = self._norm_quantize(x, p + "ffn_norm")
        gate, up = self._linear(a, s, p + "w_gate_up").split([cfg.intermediate, cfg.intermediate], dim=-1)
        if self.compiled_kernels:
            a, s = self._compiled_rows(silu_product_quantize_rows, gate, gate.numpy(), up.numpy(), self.tables.sigmoid.numpy(),
                                       self.tables.sigmoid_step.numpy())
        else:
            a, s = quantize(self.tables.silu(gate) * up)
        return torch.round(self._linear(a, s, p + "w_down") * (1 << RESIDUAL_BITS)).to(torch.int64)

    def frequencies(self, hidden_q: torch.Tensor, hidden_scale: torch.Tensor, total_bits: int) -> torch.Tensor:
        """(n, d) final hidden rows → (n, V) int64 frequency tables (the output head shares the embedding)."""
        logits = self._linear(hidden_q, hidden_scale, "output")
        if not self.compiled_kernels:
            return frequency_table(logits, self.tables, total_bits)
        freq = torch.empty(logits.shape, dtype=torch.int64)
        frequency_rows(logits.numpy(), self.tables.shifted(0, torch.int64).numpy(), total_bits, freq.numpy())
        return freq
