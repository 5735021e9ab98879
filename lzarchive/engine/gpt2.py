"""Engine layer: the GPT-2 architecture (SPEC.md 9.2 and 9.3, GPT-2): its exact forward steps and its converter
from a Hugging Face `GPT2LMHeadModel` directory.

Learned absolute positions, LayerNorm with gain and bias, linear layers with biases (Conv1D weights, stored (in, out),
transposed at compile time; q, k and v fused in `c_attn`), multi-head attention without rotation, a GELU MLP (the tanh
form, through a table), the output head tied to the token embedding.
"""

from __future__ import annotations

import torch

from . import tables
from .compiler import CompileError, Layout, Source, Tensor, common_layout, kept_positions, matrix
from .kernels import F64
from .model import RESIDUAL_BITS, ExactModel, ModelConfig
from .tokenizer import TokenTable

ARCHITECTURE = "gpt2"
NUMERICS = "lza-int-gpt2-v1"


class Engine(ExactModel):
    """The exact GPT-2 forward. x = wte[t] + wpe[p]; per layer: x += wo(attention(wqkv(LN1 x))), then
    x += w_down(GELU(w_up(LN2 x))), every linear layer with its bias; the output head reads LN_f(x)."""

    gate_table = "gelu"

    def _layer_norm(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ops.layer_norm_quantize(x, self.t[name], self.t[name + ".bias"], self.config.norm_eps, RESIDUAL_BITS)

    def _embed(self, tokens, start):
        positions = torch.arange(start, start + tokens.shape[1], device=self.device)
        return self._embedding("tok_embeddings", tokens) + self._embedding("pos_embeddings", positions)

    def _qkv(self, x, p, start):
        cfg = self.config
        batch, steps = x.shape[:2]
        a, s = self._layer_norm(x, p + "attn_norm")
        qkv = self._linear(a, s, p + "wqkv").view(batch, steps, 3, cfg.heads, cfg.head_dim)
        return tuple(qkv[:, :, part].transpose(1, 2) for part in range(3))  # (B, H, T, hd) each

    def _mlp(self, x, p):
        a, s = self._layer_norm(x, p + "ffn_norm")
        a, s = self.ops.gate_quantize(self._linear(a, s, p + "w_up"))
        return self._residual(self._linear(a, s, p + "w_down"))

    def _final_norm(self, x):
        return self._layer_norm(x, "norm")


def layout(config: ModelConfig) -> Layout:
    """The tensors of a compiled GPT-2 model (SPEC.md 9.2): every head is a kv head, and the heads span the hidden
    width (the fused q, k and v rows are split there)."""
    d, f = config.hidden, config.intermediate
    if config.kv_heads != config.heads or config.heads * config.head_dim != d:
        raise ValueError(f"config: GPT-2 needs kv_heads = heads and heads x head_dim = hidden, not {config.kv_heads}, "
                         f"{config.heads} x {config.head_dim}, {d}")
    tensors = {**common_layout(config, "gelu"), **matrix("pos_embeddings", config.max_positions, d),
               "norm": Tensor(F64, (d,)), "norm.bias": Tensor(F64, (d,))}
    for layer in range(config.layers):
        p = f"layers.{layer}."
        for name, rows, columns in (("wqkv", 3 * d, d), ("wo", d, d), ("w_up", f, d), ("w_down", d, f)):
            tensors.update({**matrix(p + name, rows, columns), p + name + ".bias": Tensor(F64, (rows,))})
        for name in ("attn_norm", "ffn_norm"):
            tensors.update({p + name: Tensor(F64, (d,)), p + name + ".bias": Tensor(F64, (d,))})
    return tensors


def source(config: ModelConfig, weights: dict[str, torch.Tensor], token_table: TokenTable,
           tokenizer_json: str | None) -> Source:
    """Float weights named as Engine reads them ((out, in) layout), with GPT-2's tables."""
    integer_tables = {"exp2_frac": tables.exp2_frac_table(), "gelu": tables.gelu_table()}
    return Source(config, weights, {name: torch.tensor(values, dtype=torch.int64) for name, values in integer_tables.items()},
                  token_table, tokenizer_json, NUMERICS, layout(config))


def check_hf(path: str, hf_config) -> None:
    """Refuse, before its weights are read, a Hugging Face GPT-2 whose arithmetic Engine does not run."""
    unsupported = {"activation_function": (hf_config.activation_function, "gelu_new"),
                   "scale_attn_weights": (hf_config.scale_attn_weights, True),
                   "scale_attn_by_inverse_layer_idx": (hf_config.scale_attn_by_inverse_layer_idx, False),
                   "add_cross_attention": (hf_config.add_cross_attention, False)}
    for name, (value, required) in unsupported.items():
        if value != required:
            raise CompileError(f"{path}: GPT-2 with {name} = {value!r} is not supported (only {required!r})")


def from_hf(path: str, hf_config, state: dict[str, torch.Tensor], max_positions: int | None, escape_token: int,
            token_table: TokenTable, tokenizer_json: str) -> Source:
    """A Hugging Face GPT-2 directory's config (checked by check_hf) and float64 state dict."""
    hidden, heads = hf_config.n_embd, hf_config.n_head
    config = ModelConfig(
        vocab_size=hf_config.vocab_size, hidden=hidden, intermediate=hf_config.n_inner or 4 * hidden,
        layers=hf_config.n_layer, heads=heads, kv_heads=heads, head_dim=hidden // heads, rope_theta=0.0,
        norm_eps=float(hf_config.layer_norm_epsilon),
        max_positions=kept_positions(path, hf_config.n_positions, max_positions),
        bos_token=int(hf_config.bos_token_id if hf_config.bos_token_id is not None else escape_token),
        escape_token=escape_token, architecture=ARCHITECTURE,
    )
    prefix = "transformer."
    weights = {"tok_embeddings": state[prefix + "wte.weight"],
               "pos_embeddings": state[prefix + "wpe.weight"][: config.max_positions],
               "norm": state[prefix + "ln_f.weight"], "norm.bias": state[prefix + "ln_f.bias"]}
    norms = {"attn_norm": "ln_1", "ffn_norm": "ln_2"}
    linear = {"wqkv": "attn.c_attn", "wo": "attn.c_proj", "w_up": "mlp.c_fc", "w_down": "mlp.c_proj"}
    for layer in range(config.layers):
        theirs = f"{prefix}h.{layer}."
        for ours, name in norms.items():
            weights[f"layers.{layer}.{ours}"] = state[theirs + name + ".weight"]
            weights[f"layers.{layer}.{ours}.bias"] = state[theirs + name + ".bias"]
        for ours, name in linear.items():
            weights[f"layers.{layer}.{ours}"] = state[theirs + name + ".weight"].T  # Conv1D: (in, out)
            weights[f"layers.{layer}.{ours}.bias"] = state[theirs + name + ".bias"]
    return source(config, weights, token_table, tokenizer_json)
