"""Engine layer: the exact integer Llama forward (SPEC.md section 9.3), full-sequence and incremental with a KV cache.

Every row of every tensor depends only on its own token and the cached keys and values of earlier tokens, through
exact operations; so a full-sequence forward, a token-by-token forward, any batch size and any device give the same
integers. Residual stream: int64 in units of 2^-RESIDUAL_BITS. Matmul inputs: per-token quantized to |q| <= QMAX.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from .kernels import F64, IntMatmul, Tables, frequency_table, quantize

RESIDUAL_BITS = 16


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
    """Per layer: keys and values quantized per (token, kv head): int16 values and float64 scales."""

    k: list[torch.Tensor]  # (B, KVH, T, hd) int16
    k_scale: list[torch.Tensor]  # (B, KVH, T, 1) float64
    v: list[torch.Tensor]
    v_scale: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.k[0].shape[2] if self.k else 0

    def select(self, rows: torch.Tensor) -> KVCache:
        return KVCache(*[[t[rows] for t in group] for group in (self.k, self.k_scale, self.v, self.v_scale)])


class ExactLlama:
    """Runs a compiled model. Weights: int8 (out, in) with float64 per-output-channel scales."""

    def __init__(self, config: ModelConfig, tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.t = {name: tensor.to(self.device) for name, tensor in tensors.items()}
        if "output.q" not in self.t:  # tied embeddings: the output head is the embedding table
            self.t["output.q"], self.t["output.scale"] = self.t["tok_embeddings.q"], self.t["tok_embeddings.scale"]
        self.tables = Tables(self.t["table.exp2_frac"], self.t["table.sigmoid"], self.t["table.rope_cos"],
                             self.t["table.rope_sin"])
        self.matmul = IntMatmul(self.device)

    # ------------------------------------------------------------------------------------------ building blocks

    def _linear(self, a: torch.Tensor, a_scale: torch.Tensor, name: str) -> torch.Tensor:
        """Real-valued output of a quantized input times an int8 weight: acc * input scale * channel scale."""
        acc = self.matmul(a, self.t[name + ".q"])  # (..., out) exact integers
        return acc * a_scale * self.t[name + ".scale"]

    def _norm_quantize(self, x: torch.Tensor, weight: str) -> tuple[torch.Tensor, torch.Tensor]:
        """RMSNorm fused with per-token quantization: the 1/rms factor is a per-token scalar, so it moves into the
        scale. x: (..., d) int64 residual. Returns q (..., d) and scale (..., 1) with q * scale = norm(x) * g."""
        u = x.to(F64) * self.t[weight]  # (..., d) rounded products
        q, m_scale = quantize(u)
        # sum of squares exactly in int64 after dropping low bits so that it cannot overflow
        peak = x.abs().amax(dim=-1, keepdim=True).to(F64)
        shift = torch.clamp(torch.frexp(peak).exponent.to(torch.int64) - 24, min=0)  # |reduced| < 2^24
        reduced = torch.bitwise_right_shift(x, shift)
        sum_sq = (reduced * reduced).sum(dim=-1, keepdim=True).to(F64)  # exact: < d * 2^48
        mean = torch.ldexp(sum_sq, 2 * shift - 2 * RESIDUAL_BITS) / self.config.hidden
        rms = torch.sqrt(mean + self.config.norm_eps)
        return q, m_scale / (rms * (1 << RESIDUAL_BITS))

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate adjacent pairs (2i, 2i+1) by position * theta^(-2i/hd). x: (B, H, T, hd), positions: (B, T)."""
        cos = self.tables.rope_cos[positions][:, None]  # (B, 1, T, hd/2)
        sin = self.tables.rope_sin[positions][:, None]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        r0 = x0 * cos - x1 * sin
        r1 = x0 * sin + x1 * cos
        return torch.stack([r0, r1], dim=-1).flatten(-2)

    def _attention(self, q: torch.Tensor, cache_k, cache_ks, cache_v, cache_vs, q_pos: torch.Tensor,
                   k_valid: torch.Tensor) -> torch.Tensor:
        """q: (B, H, T, hd) real. Keys/values: (B, KVH, S, hd) int16 + scales. q_pos: (B, T) position of each query,
        k_valid: (B, S) mask of usable keys. Returns (B, T, H*hd) real."""
        cfg = self.config
        group = cfg.heads // cfg.kv_heads
        q_q, q_s = quantize(q)  # (B, H, T, hd), (B, H, T, 1)
        k = cache_k.to(F64).repeat_interleave(group, dim=1)  # (B, H, S, hd)
        ks = cache_ks.repeat_interleave(group, dim=1)  # (B, H, S, 1)
        v = cache_v.to(F64).repeat_interleave(group, dim=1)
        vs = cache_vs.repeat_interleave(group, dim=1)
        scores = q_q @ k.transpose(-1, -2)  # (B, H, T, S) exact: |.| <= 64 * QMAX^2 < 2^37
        z = scores * (q_s * (1.0 / cfg.head_dim ** 0.5)) * ks.transpose(-1, -2)
        key_pos = torch.arange(k.shape[2], device=self.device)
        allowed = (key_pos[None, None, :] <= q_pos[:, :, None]) & k_valid[:, None, :]  # (B, T, S)
        allowed = allowed[:, None]  # (B, 1, T, S)
        z = torch.where(allowed, z, torch.full_like(z, -1e300))
        d = z - z.amax(dim=-1, keepdim=True)
        p = self.tables.exp_neg(d, extra_shift=15)  # (B, H, T, S) int64 <= 2^15
        p = torch.where(allowed, p, torch.zeros_like(p))
        p_sum = p.sum(dim=-1, keepdim=True).to(F64)  # exact
        w_q, w_s = quantize(p.to(F64) * vs.transpose(-1, -2))  # per query row
        out = (w_q @ v) * (w_s / p_sum)  # (B, H, T, hd): |w_q @ v| <= S * QMAX^2 < 2^41
        return out.transpose(1, 2).flatten(2)

    # ------------------------------------------------------------------------------------------ forward

    def new_cache(self, batch: int) -> KVCache:
        cfg = self.config
        empty = lambda dtype, last: torch.zeros(batch, cfg.kv_heads, 0, last, dtype=dtype, device=self.device)  # noqa: E731
        return KVCache(*[[empty(dt, last) for _ in range(cfg.layers)]
                         for dt, last in ((torch.int16, cfg.head_dim), (F64, 1), (torch.int16, cfg.head_dim), (F64, 1))])

    def forward(self, tokens: torch.Tensor, cache: KVCache, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Append tokens (B, T) at positions cache.length ..; extends the cache in place.

        valid: (B, cache.length + T) bool, False for padding positions that must never be attended to.
        Returns the final normalized hidden state quantized per token: q (B, T, d) and scale (B, T, 1).
        """
        cfg = self.config
        batch, steps = tokens.shape
        start = cache.length
        positions = torch.arange(start, start + steps, device=self.device).expand(batch, steps)
        if valid is None:
            valid = torch.ones(batch, start + steps, dtype=torch.bool, device=self.device)
        emb_rows = self.t["tok_embeddings.q"][tokens].to(F64)  # (B, T, d)
        x = torch.round(emb_rows * self.t["tok_embeddings.scale"][tokens][..., None] * (1 << RESIDUAL_BITS)).to(torch.int64)
        for layer in range(cfg.layers):
            p = f"layers.{layer}."
            a, s = self._norm_quantize(x, p + "attn_norm")
            q = self._linear(a, s, p + "wq").view(batch, steps, cfg.heads, cfg.head_dim).transpose(1, 2)
            k = self._linear(a, s, p + "wk").view(batch, steps, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
            v = self._linear(a, s, p + "wv").view(batch, steps, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
            q = self._rope(q, positions)
            k_q, k_s = quantize(self._rope(k, positions))
            v_q, v_s = quantize(v)
            cache.k[layer] = torch.cat([cache.k[layer], k_q.to(torch.int16)], dim=2)
            cache.k_scale[layer] = torch.cat([cache.k_scale[layer], k_s], dim=2)
            cache.v[layer] = torch.cat([cache.v[layer], v_q.to(torch.int16)], dim=2)
            cache.v_scale[layer] = torch.cat([cache.v_scale[layer], v_s], dim=2)
            attn = self._attention(q, cache.k[layer], cache.k_scale[layer], cache.v[layer], cache.v_scale[layer],
                                   positions, valid)
            a, s = quantize(attn)
            x = x + torch.round(self._linear(a, s, p + "wo") * (1 << RESIDUAL_BITS)).to(torch.int64)
            a, s = self._norm_quantize(x, p + "ffn_norm")
            gate = self._linear(a, s, p + "w_gate")
            up = self._linear(a, s, p + "w_up")
            a, s = quantize(self.tables.silu(gate) * up)
            x = x + torch.round(self._linear(a, s, p + "w_down") * (1 << RESIDUAL_BITS)).to(torch.int64)
        return self._norm_quantize(x, "norm")

    def frequencies(self, hidden_q: torch.Tensor, hidden_scale: torch.Tensor, total_bits: int) -> torch.Tensor:
        """(n, d) final hidden rows → (n, V) int64 frequency tables (the output head shares the embedding)."""
        logits = self._linear(hidden_q, hidden_scale, "output")
        return frequency_table(logits, self.tables, total_bits)
