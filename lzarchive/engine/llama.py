"""Engine layer: the Llama architecture (Llama, SmolLM and other Llama-family models; SPEC.md 9.3): its exact forward
steps and its converters from a GGUF file or a Hugging Face directory.

RMSNorm without bias, rotary positions (RoPE, adjacent pairs), grouped-query attention, a SiLU-gated MLP, no biases.
"""

from __future__ import annotations

import numpy as np
import torch

from . import tables
from .compiler import CompileError, Layout, Source, Tensor, common_layout, kept_positions, matrix
from .kernels import F64
from .model import RESIDUAL_BITS, ExactModel, ModelConfig
from .tokenizer import TokenTable, bpe_tokenizer_json, token_bytes_from_strings

ARCHITECTURE = "llama"
NUMERICS = "lza-int-v1"


class Engine(ExactModel):
    """The exact Llama forward. Per layer: x += wo(attention(RoPE(wq a), RoPE(wk a), wv a)) with a = RMSNorm(x), then
    x += w_down(SILU(w_gate b) * w_up b) with b = RMSNorm(x); the output head reads RMSNorm(x)."""

    def __init__(self, config: ModelConfig, tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                 compiled_kernels: bool | None = None):
        super().__init__(config, tensors, device, compiled_kernels)
        for layer in range(config.layers):  # output channels are independent, so fused weights give the same integers
            p = f"layers.{layer}."
            for fused, parts in (("wqkv", ("wq", "wk", "wv")), ("w_gate_up", ("w_gate", "w_up"))):
                for suffix in (".q", ".scale"):
                    self.t[p + fused + suffix] = torch.cat([self.t.pop(p + part + suffix) for part in parts])

    def _norm(self, x: torch.Tensor, weight: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ops.norm_quantize(x, self.t[weight], self.config.norm_eps, RESIDUAL_BITS)

    def _embed(self, tokens, start):
        return self._embedding("tok_embeddings", tokens)

    def _qkv(self, x, p, start):
        cfg = self.config
        batch, steps = x.shape[:2]
        a, s = self._norm(x, p + "attn_norm")
        q_width, kv_width = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        q, k, v = self._linear(a, s, p + "wqkv").split([q_width, kv_width, kv_width], dim=-1)
        q = self.ops.rope(q.view(batch, steps, cfg.heads, cfg.head_dim), start)  # (B, H, T, hd)
        k = self.ops.rope(k.view(batch, steps, cfg.kv_heads, cfg.head_dim), start)
        return q, k, v.view(batch, steps, cfg.kv_heads, cfg.head_dim).transpose(1, 2)

    def _mlp(self, x, p):
        a, s = self._norm(x, p + "ffn_norm")
        gate, up = self._linear(a, s, p + "w_gate_up").split([self.config.intermediate] * 2, dim=-1)
        a, s = self.ops.gate_quantize(gate, up)
        return self._residual(self._linear(a, s, p + "w_down"))

    def _final_norm(self, x):
        return self._norm(x, "norm")


def layout(config: ModelConfig) -> Layout:
    """The tensors of a compiled Llama model (SPEC.md 9.2); the output head may be absent (tied to the embedding)."""
    if config.head_dim % 2:
        raise ValueError(f"config: head_dim = {config.head_dim} is odd, and RoPE rotates pairs")
    d, f = config.hidden, config.intermediate
    q, kv = config.heads * config.head_dim, config.kv_heads * config.head_dim
    tensors = {**common_layout(config, "sigmoid"), **matrix("output", config.vocab_size, d, optional=True),
               "norm": Tensor(F64, (d,))}
    tensors.update({"table.rope_cos": Tensor(torch.int64, (config.max_positions, config.head_dim // 2)),
                    "table.rope_sin": Tensor(torch.int64, (config.max_positions, config.head_dim // 2))})
    for layer in range(config.layers):
        p = f"layers.{layer}."
        for name, rows, columns in (("wq", q, d), ("wk", kv, d), ("wv", kv, d), ("wo", d, q), ("w_gate", f, d),
                                    ("w_up", f, d), ("w_down", d, f)):
            tensors.update(matrix(p + name, rows, columns))
        tensors.update({p + "attn_norm": Tensor(F64, (d,)), p + "ffn_norm": Tensor(F64, (d,))})
    return tensors


def source(config: ModelConfig, weights: dict[str, torch.Tensor], token_table: TokenTable,
           tokenizer_json: str | None) -> Source:
    """Float weights named as Engine reads them ((out, in) layout, RoPE as adjacent pairs), with Llama's tables."""
    cos, sin = tables.rope_tables(config.max_positions, config.head_dim, config.rope_theta)
    integer_tables = {"exp2_frac": tables.exp2_frac_table(), "sigmoid": tables.sigmoid_table(), "rope_cos": cos,
                      "rope_sin": sin}
    return Source(config, weights, {name: torch.tensor(values, dtype=torch.int64) for name, values in integer_tables.items()},
                  token_table, tokenizer_json, NUMERICS, layout(config))


def from_gguf(path: str, reader, max_positions: int | None) -> Source:
    """A llama-architecture GGUF: every tensor dequantized (exact in float64 for Q4_1/Q8_0), GGUF's RoPE layout
    (adjacent pairs) kept, the tokenizer built from its vocabulary and merges."""
    import gguf

    def field(key: str):
        return reader.fields[key].contents() if key in reader.fields else None

    heads = field("llama.attention.head_count")
    hidden = field("llama.embedding_length")
    scaling, rotated = field("llama.rope.scaling.type"), field("llama.rope.dimension_count")
    if scaling not in (None, "none"):
        raise CompileError(f"{path}: RoPE scaling {scaling!r} is not supported (only plain RoPE)")
    if rotated not in (None, hidden // heads):
        raise CompileError(f"{path}: RoPE over {rotated} of each head's {hidden // heads} dimensions is not supported "
                           f"(only over whole heads)")
    config = ModelConfig(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        hidden=hidden,
        intermediate=field("llama.feed_forward_length"),
        layers=field("llama.block_count"),
        heads=heads,
        kv_heads=field("llama.attention.head_count_kv") or heads,
        head_dim=hidden // heads,
        rope_theta=float(field("llama.rope.freq_base") or 10000.0),
        norm_eps=float(np.float32(field("llama.attention.layer_norm_rms_epsilon"))),
        max_positions=kept_positions(path, field("llama.context_length"), max_positions),
        bos_token=int(field("tokenizer.ggml.bos_token_id") or 0),
        escape_token=min(i for i, t in enumerate(field("tokenizer.ggml.token_type")) if t != 1),
    )
    names = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}
    per_layer = {"attn_q": "wq", "attn_k": "wk", "attn_v": "wv", "attn_output": "wo", "ffn_gate": "w_gate",
                 "ffn_up": "w_up", "ffn_down": "w_down", "attn_norm": "attn_norm", "ffn_norm": "ffn_norm"}
    weights = {}
    for tensor in reader.tensors:
        base = tensor.name.removesuffix(".weight")
        if base.startswith("blk."):
            _, layer, kind = base.split(".", 2)
            target = f"layers.{layer}.{per_layer[kind]}"
        else:
            target = names[base]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        weights[target] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    token_strings = field("tokenizer.ggml.tokens")
    control = {i for i, t in enumerate(field("tokenizer.ggml.token_type")) if t != 1}
    byte_level = field("tokenizer.ggml.model") == "gpt2"
    table = TokenTable.from_list(token_bytes_from_strings(token_strings, control))
    return source(config, weights, table, bpe_tokenizer_json(token_strings, field("tokenizer.ggml.merges") or [], byte_level))


def check_hf(path: str, hf_config) -> None:
    """Refuse, before its weights are read, a Hugging Face Llama whose arithmetic Engine does not run."""
    rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    unsupported = {"hidden_act": (hf_config.hidden_act, "silu"), "rope_type": (rope.get("rope_type", "default"), "default")}
    for name, (value, required) in unsupported.items():
        if value != required:
            raise CompileError(f"{path}: a Llama with {name} = {value!r} is not supported (only {required!r})")


def from_hf(path: str, hf_config, state: dict[str, torch.Tensor], max_positions: int | None, escape_token: int,
            token_table: TokenTable, tokenizer_json: str) -> Source:
    """A Hugging Face Llama directory's config and float64 state dict. q/k rows are permuted from HF's half-split RoPE
    layout to adjacent pairs, as llama.cpp's converter does."""
    heads, kv_heads = hf_config.num_attention_heads, hf_config.num_key_value_heads
    config = ModelConfig(
        vocab_size=hf_config.vocab_size, hidden=hf_config.hidden_size, intermediate=hf_config.intermediate_size,
        layers=hf_config.num_hidden_layers, heads=heads, kv_heads=kv_heads,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
        rope_theta=float(getattr(hf_config, "rope_theta", None) or hf_config.rope_parameters["rope_theta"]),
        norm_eps=float(hf_config.rms_norm_eps),
        max_positions=kept_positions(path, hf_config.max_position_embeddings, max_positions),
        bos_token=int(hf_config.bos_token_id if hf_config.bos_token_id is not None else 0),
        escape_token=escape_token,
    )
    weights = {"tok_embeddings": state["model.embed_tokens.weight"], "norm": state["model.norm.weight"]}
    if not hf_config.tie_word_embeddings:
        weights["output"] = state["lm_head.weight"]
    hf_names = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj", "wo": "self_attn.o_proj",
                "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj",
                "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    for layer in range(config.layers):
        for ours, theirs in hf_names.items():
            w = state[f"model.layers.{layer}.{theirs}.weight"]
            if ours in ("wq", "wk"):
                w = _pairs_from_halves(w, heads if ours == "wq" else kv_heads)
            weights[f"layers.{layer}.{ours}"] = w
    if any(name.endswith(".bias") for name in state):
        raise CompileError(f"{path}: a Llama with biases is not supported")
    return source(config, weights, token_table, tokenizer_json)


def _pairs_from_halves(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's output rows from [x_0..x_{h/2-1}, y_0..] (rotate-half) to [x_0, y_0, x_1, y_1, ...]."""
    out_dim = w.shape[0]
    return w.reshape(heads, 2, out_dim // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
