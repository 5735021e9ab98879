"""Engine layer: what every architecture's exact forward shares (SPEC.md section 9.3): the config, the KV cache, and
ExactModel, the frame of a decoder-only transformer (embedding, attention over the cache, residual updates, MLP in
blocks, final norm) whose architecture-specific steps llama.py and gpt2.py supply.

Every row of every tensor depends only on its own token and the cached keys and values of earlier tokens, through
exact operations; so a full-sequence forward, a token-by-token forward, any batch size and any device give the same
integers. Residual stream: int64 in units of 2^-RESIDUAL_BITS. Matmul inputs: per-token quantized to |q| <= QMAX.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from .kernels import F64
from .ops import Tables, checked_device, exact_ops

RESIDUAL_BITS = 16
# every binary64 a model file holds (and its norm_eps) is at most this in magnitude: with it no intermediate value of
# the forward can overflow binary64, so there is never an infinity or a NaN to index a table with
FLOAT_LIMIT = 2.0**64
ATTENTION_BLOCK = 128  # query positions per block (memory and the causal half both shrink)


@dataclass(frozen=True)
class Batching:
    """How much work one call takes on a device. Rows are independent, so any sizes give the same integers: these
    trade memory for speed only."""

    forward_tokens: int  # batch x positions per forward pass at most
    mlp_rows: int  # rows (batch x positions) per MLP block
    frequency_rows: int  # rows of frequency tables computed at once (one output-head GEMM)
    chunks: int  # chunks coded in one batch and decoded in lockstep at most
    cache_budget: int  # bytes of KV cache for the chunks decoded in lockstep


# A CPU's, measured on this 2-core one: 64 windows of 257 positions in one pass took 30.6 s, in passes of 3-4 rows
# 14-16 s (the intermediates stay in cache) and held 1.3 GB less; per token, decoding 64 chunks in lockstep took
# 1.9 ms, 32 2.1 ms, 3 8 ms; 3 GiB of KV cache is 120 chunks at the default model and window.
CPU_BATCHING = Batching(forward_tokens=1024, mlp_rows=256, frequency_rows=64, chunks=64, cache_budget=3 << 30)


def batching(device: torch.device) -> Batching:
    """CPU_BATCHING, or on a GPU sizes for its memory: thousands of rows per kernel instead of a CPU cache's worth,
    and half of the memory free when the model has loaded for the KV caches of the chunks in lockstep (the passes'
    intermediates take a few GB at these sizes). Not yet measured on a GPU."""
    if device.type != "cuda":
        return CPU_BATCHING
    free, _ = torch.cuda.mem_get_info(device)
    return Batching(forward_tokens=16384, mlp_rows=16384, frequency_rows=1024, chunks=1024, cache_budget=free // 2)


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
        """A config as a model file holds it (SPEC.md 9.2), every field checked: ValueError names the first one wrong."""
        try:
            values = json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("config: not a JSON text") from None
        names = [f.name for f in fields(cls)]
        if not isinstance(values, dict) or sorted(values) != sorted(names):
            raise ValueError(f"config: not an object with exactly the fields {', '.join(names)}")
        checked = {}
        for f in fields(cls):
            value = values[f.name]
            kind = {"int": int, "float": (int, float), "str": str}[f.type]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"config: {f.name} = {value!r} is not {'a number' if f.type == 'float' else 'an ' + f.type}")
            if f.type == "float" and not -FLOAT_LIMIT <= value <= FLOAT_LIMIT:  # also NaN; a huge integer never converts
                raise ValueError(f"config: {f.name} = {value!r} is out of range")
            checked[f.name] = float(value) if f.type == "float" else value  # a number: the nearest binary64
        config = cls(**checked)
        config.check()
        return config

    def check(self) -> None:
        """The ranges of SPEC.md 9.2: ValueError names the first field out of range."""
        rules = {
            "vocab_size": 2 <= self.vocab_size <= 1 << 31,  # frequency tables of total 2^32, each at least 1
            "hidden": self.hidden >= 1, "intermediate": self.intermediate >= 1, "layers": self.layers >= 1,
            "kv_heads": self.kv_heads >= 1,
            "heads": self.heads >= 1 and self.kv_heads >= 1 and self.heads % self.kv_heads == 0,
            "head_dim": self.head_dim >= 1, "max_positions": self.max_positions >= 2,  # BOS and one token
            "bos_token": 0 <= self.bos_token < self.vocab_size, "escape_token": 0 <= self.escape_token < self.vocab_size,
            "norm_eps": 0 < self.norm_eps <= FLOAT_LIMIT, "rope_theta": 0 <= self.rope_theta <= FLOAT_LIMIT,
        }
        for name, holds in rules.items():
            if not holds:
                raise ValueError(f"config: {name} = {getattr(self, name)!r} is out of range")


@dataclass
class KVCache:
    """Per layer: keys and values quantized per (token, kv head) as int16 (|q| <= QMAX), with float64 scales.
    Preallocated for `capacity` slots; `length` are filled. Keys are stored transposed: decoding computes a score
    per key, and reading a key's component d for all keys at once vectorizes.

    With a span S (SPEC.md 9.5), the position p after the `kept` prefix slots sees the prefix and the positions
    p - S < j <= p only, so the cache can slide: when full, the last S - 1 positions move down to follow the prefix
    (`dropped` counts the positions slid out, so slot i >= kept holds position i + dropped). Slots stay in position
    order, and the exact attention does not depend on which slot a key is in, so any capacity gives the same integers."""

    k: list[torch.Tensor]  # (B, KVH, hd, capacity) int16
    k_scale: list[torch.Tensor]  # (B, KVH, capacity, 1) float64
    v: list[torch.Tensor]  # (B, KVH, capacity, hd) int16
    v_scale: list[torch.Tensor]
    length: int = 0
    span: int = 0  # 0: every earlier position is seen
    kept: int = 0  # the prefix's slots, seen by every position and never slid out
    dropped: int = 0

    @property
    def capacity(self) -> int:
        return self.v[0].shape[2]

    @property
    def positions(self) -> int:
        """Positions filled: the next one's index."""
        return self.length + self.dropped

    def room(self) -> int:
        """With a span: the positions a slide leaves room for."""
        return self.capacity - self.kept - (self.span - 1)

    def rows(self, lo: int, hi: int) -> KVCache:
        """Batch rows lo..hi as a cache of their own, sharing this one's storage."""
        tensors = [[t[lo:hi] for t in group] for group in (self.k, self.k_scale, self.v, self.v_scale)]
        return KVCache(*tensors, self.length, self.span, self.kept, self.dropped)

    def start_from(self, prefix: KVCache) -> None:
        """Every batch row begins with the positions of a one-row cache (a prefix every row shares, kept while the
        cache slides): they are copied, so positions computed once give the same integers as computing them in each
        row."""
        for mine, theirs in zip((self.k, self.k_scale, self.v, self.v_scale), (prefix.k, prefix.k_scale, prefix.v, prefix.v_scale)):
            for layer, tensor in enumerate(theirs):
                if mine is self.k:
                    mine[layer][..., : prefix.length] = tensor[..., : prefix.length]
                else:
                    mine[layer][:, :, : prefix.length] = tensor[:, :, : prefix.length]
        self.length = self.kept = prefix.length

    def slide(self) -> None:
        """Keep the prefix and the last S - 1 positions, the only ones a later position sees."""
        keep = min(self.span - 1, self.length - self.kept)
        lo, to = self.length - keep, self.kept
        if lo == to:
            return
        for layer in range(len(self.k)):
            self.k[layer][..., to : to + keep] = self.k[layer][..., lo : lo + keep].clone()  # the ranges may overlap
            for tensor in (self.k_scale[layer], self.v[layer], self.v_scale[layer]):
                tensor[:, :, to : to + keep] = tensor[:, :, lo : lo + keep].clone()
        self.dropped += lo - to
        self.length = to + keep

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows `rows`, one layer at a time (the peak is the old cache plus one layer)."""
        for group in (self.k, self.k_scale, self.v, self.v_scale):
            for layer, tensor in enumerate(group):
                group[layer] = tensor[rows]


class ExactModel:
    """Runs a compiled model: int8 weights (out, in) with float64 per-output-channel scales (and float64 biases where the
    architecture has them), through the exact operations of one device (ops.py). Subclasses supply the steps that
    differ between architectures: _embed, _qkv, _mlp and _final_norm."""

    gate_table = "sigmoid"  # the table of the MLP's gated activation (ops.TorchOps.gate_quantize)

    def __init__(self, config: ModelConfig, tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                 compiled_kernels: bool | None = None):
        self.config = config
        self.device = checked_device(device)
        self.t = {name: tensor.to(self.device) for name, tensor in tensors.items()}
        if "output.q" not in self.t:  # tied embeddings: the output head is the embedding table
            self.t["output.q"], self.t["output.scale"] = self.t["tok_embeddings.q"], self.t["tok_embeddings.scale"]
        # the compiled CPU loops (the default on a CPU) or torch operations (any device): the same integers
        self.ops = exact_ops(self.device, Tables.of(self.t, self.gate_table), compiled_kernels)
        self.batching = batching(self.device)

    # ------------------------------------------------------------------------------------------ building blocks

    def _linear(self, a: torch.Tensor, a_scale: torch.Tensor, name: str) -> torch.Tensor:
        """Real-valued output of a quantized input times an int8 weight: (acc * input scale) * channel scale, then
        + bias where the layer has one."""
        out = self.ops.linear(a, a_scale, self.t[name + ".q"], self.t[name + ".scale"])
        bias = self.t.get(name + ".bias")
        return out if bias is None else out + bias

    def _embedding(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        """Rows of an int8 embedding table as residuals: round((q * scale) * 2^R), int64 (..., d)."""
        values = self.t[name + ".q"][rows].to(F64) * self.t[name + ".scale"][rows][..., None]
        return torch.round(values * (1 << RESIDUAL_BITS)).to(torch.int64)

    @staticmethod
    def _residual(y: torch.Tensor) -> torch.Tensor:
        """A layer's real output as a residual update: round(y * 2^R), int64."""
        return torch.round(y * (1 << RESIDUAL_BITS)).to(torch.int64)

    def _attention(self, q: torch.Tensor, cache: KVCache, layer: int, start: int) -> torch.Tensor:
        """q: (B, H, T, hd) real, for the cache's slots start + t (filled up to there). Query head h reads kv head
        h // (H / KVH). Returns (B, T, H*hd) real.

        Queries are processed in blocks of positions, each against the keys up to its last position only (the
        others are masked anyway); every row's arithmetic is the same as for the whole matrix at once."""
        cfg = self.config
        batch, _, steps, hd = q.shape
        group = cfg.heads // cfg.kv_heads
        q_q, q_s = self.ops.quantize(q.reshape(batch, cfg.kv_heads, group, steps, hd))  # per (token, head)
        row_factor = q_s * (1.0 / math.sqrt(cfg.head_dim))
        out = torch.empty(batch, cfg.kv_heads, group, steps, hd, dtype=F64, device=self.device)
        slots = torch.arange(start, start + steps, device=self.device)
        # the whole cache tensors: each block reads only the keys up to its last slot, and whole tensors are
        # contiguous, which the compiled loops need to vectorize
        keys = (cache.k[layer], cache.k_scale[layer], cache.v[layer], cache.v_scale[layer])
        for lo in range(0, steps, ATTENTION_BLOCK):
            hi = min(steps, lo + ATTENTION_BLOCK)
            # rows are (head in group, position)
            block = q_q[:, :, :, lo:hi].reshape(batch, cfg.kv_heads, group * (hi - lo), hd)
            block_factor = row_factor[:, :, :, lo:hi].reshape(batch, cfg.kv_heads, group * (hi - lo))
            result = self.ops.attention(*keys, block, block_factor, slots[lo:hi], cache.kept, cache.span)
            out[:, :, :, lo:hi] = result.view(batch, cfg.kv_heads, group, hi - lo, hd)
        return out.reshape(batch, cfg.heads, steps, hd).transpose(1, 2).flatten(2)

    # ------------------------------------------------------------------------------------------ architecture steps

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Tokens (B, T) at positions start + t -> the residual stream (B, T, d) int64."""
        raise NotImplementedError

    def _qkv(self, x: torch.Tensor, p: str, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer p's queries (B, H, T, hd), keys and values (B, KVH, T, hd), real, from the residual stream."""
        raise NotImplementedError

    def _mlp(self, x: torch.Tensor, p: str) -> torch.Tensor:
        """Layer p's MLP residual update (n, d) int64 for residual rows x (n, d)."""
        raise NotImplementedError

    def _final_norm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream -> the output head's quantized input (q, scale)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ forward

    def new_cache(self, batch: int, capacity: int | None = None, span: int = 0) -> KVCache:
        """A cache of `capacity` slots per batch row; with a span S (SPEC.md 9.5) it slides when full, so it needs no
        more slots than the prefix, S - 1 and the positions one forward adds (more make slides rarer)."""
        cfg = self.config
        capacity = capacity or cfg.max_positions

        def zeros(*shape: int, dtype: torch.dtype) -> list[torch.Tensor]:
            return [torch.zeros(batch, cfg.kv_heads, *shape, dtype=dtype, device=self.device) for _ in range(cfg.layers)]

        hd = cfg.head_dim
        return KVCache(zeros(hd, capacity, dtype=torch.int16), zeros(capacity, 1, dtype=F64),
                       zeros(capacity, hd, dtype=torch.int16), zeros(capacity, 1, dtype=F64), span=span)

    def cache_bytes(self, capacity: int) -> int:
        """Memory of one batch row of new_cache(batch, capacity)."""
        cfg = self.config
        return cfg.layers * 2 * cfg.kv_heads * capacity * (cfg.head_dim * 2 + 8)  # int16 values, a float64 scale

    def forward(self, tokens: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Append tokens (B, T) at positions cache.positions ..; fills the cache in place (a cache with a span
        slides, in as many passes of positions as its room needs). Right padding is inert: causal attention never
        lets an earlier position see a later one.
        Returns the final normalized hidden state quantized per token: q (B, T, d) and scale (B, T, 1).
        """
        cfg = self.config
        batch, steps = tokens.shape
        if cache.positions + steps > cfg.max_positions:  # the position tables end there (unchecked in loops)
            raise ValueError(f"{cache.positions + steps} positions exceed the model's {cfg.max_positions}")
        if cache.length + steps > cache.capacity:
            room = cache.room() if cache.span else 0
            if room < 1:
                raise ValueError(f"{cache.length + steps} slots exceed the cache capacity {cache.capacity}")
            parts = []
            for lo in range(0, steps, room):
                if cache.length + min(room, steps - lo) > cache.capacity:
                    cache.slide()
                parts.append(self.forward(tokens[:, lo : lo + room], cache))
            return torch.cat([q for q, _ in parts], dim=1), torch.cat([s for _, s in parts], dim=1)
        rows = max(1, self.batching.forward_tokens // steps)
        if batch > rows:  # rows are independent: the same integers in passes of fewer rows
            parts = [self.forward(tokens[lo : lo + rows], cache.rows(lo, lo + rows)) for lo in range(0, batch, rows)]
            cache.length += steps
            return torch.cat([q for q, _ in parts]), torch.cat([s for _, s in parts])
        start, end, position = cache.length, cache.length + steps, cache.positions
        x = self._embed(tokens, position)
        for layer in range(cfg.layers):
            p = f"layers.{layer}."
            q, k, v = self._qkv(x, p, position)
            k_q, cache.k_scale[layer][:, :, start:end] = self.ops.quantize(k)
            cache.k[layer][..., start:end] = k_q.transpose(-1, -2)
            cache.v[layer][:, :, start:end], cache.v_scale[layer][:, :, start:end] = self.ops.quantize(v)
            attn = self._attention(q, cache, layer, start)
            a, s = self.ops.quantize(attn)
            x = x + self._residual(self._linear(a, s, p + "wo"))
            # the MLP is row-wise: blocks of rows keep its float64 intermediates in cache, whatever the batch
            rows = x.reshape(batch * steps, cfg.hidden)
            x = torch.cat([block + self._mlp(block, p) for block in rows.split(self.batching.mlp_rows)])
            x = x.view(batch, steps, cfg.hidden)
        cache.length = end
        return self._final_norm(x)

    def logits(self, hidden_q: torch.Tensor, hidden_scale: torch.Tensor) -> torch.Tensor:
        """(n, d) final hidden rows → (n, V) logits."""
        return self._linear(hidden_q, hidden_scale, "output")

    def frequencies(self, hidden_q: torch.Tensor, hidden_scale: torch.Tensor, total_bits: int,
                    bias: torch.Tensor | None = None, bias_rows: np.ndarray | None = None) -> torch.Tensor:
        """(n, d) final hidden rows → (n, V) int64 frequency tables (with the bias head's rows: ops.frequencies)."""
        return self.ops.frequencies(self.logits(hidden_q, hidden_scale), total_bits, bias, bias_rows)
