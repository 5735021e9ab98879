"""Engine layer: compiles a source model (GGUF file, Hugging Face directory, or tensors) into the canonical compiled
model file (SPEC.md section 9.2): int8 weights with float64 per-channel scales, integer tables, the token → bytes
table and the config, in a safetensors file. Deterministic: the same source gives the same bytes."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save

from ..format.wire import digest
from . import tables
from .kernels import F64, WMAX
from .ops import divide
from .model import ModelConfig
from .tokenizer import TokenTable, bpe_tokenizer_json, token_bytes_from_strings

FILE_FORMAT = "lza-compiled-model/1"
NUMERICS = "lza-int-v1"
DEFAULT_MAX_POSITIONS = 2048
CONTEXT_MODEL = "lza v1 model file"
CONTEXT_TOKENIZER = "lza v1 token table"
# The exact-integer bound for an int8 weight row times an activation row (|a| <= QMAX) in the int8 path:
# each half (|hi|, |lo| <= 128) sums at most K * 128 * 128 products, which must stay below 2^31 (int32 accumulator).
INT32_LIMIT = 1 << 31

LAYER_NAMES = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


class CompileError(ValueError):
    """The source cannot be compiled (unsupported architecture, bounds that would not be exact)."""


@dataclass(frozen=True)
class CompiledModel:
    """A compiled model file's contents."""

    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    name: str
    source: str
    model_hash: bytes
    tokenizer_hash: bytes
    tokenizer_json: str | None

    @property
    def token_table(self) -> TokenTable:
        return TokenTable.from_tensors(self.tensors)


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel (row) symmetric int8 as SPEC.md 9.2 has it: q = round(w * (127 * (1 / m))), the reciprocal
    and then a product (every model file has been compiled so; one division 127 / m gives other files and hashes)."""
    w = w.to(F64)
    m = w.abs().amax(dim=-1, keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))
    q = torch.round(w * (torch.reciprocal(m) * WMAX))
    return q.to(torch.int8), divide(m, WMAX).squeeze(-1)


def check_bounds(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The largest possible partial sum of every matmul, from the actual int8 weights; refuse any over the limit.

    Linear layers (int8 path, per half): sum |w| * 128 over a row. Attention (float64): 64 * QMAX^2 for scores and
    max_positions * QMAX^2 for the weighted values, both below 2^53.
    """
    from .kernels import QMAX

    worst = {}
    for name, tensor in tensors.items():
        if name.endswith(".q") and tensor.dtype == torch.int8:
            worst[name] = int(tensor.to(torch.int64).abs().sum(dim=-1).max()) * 128
    worst["attention.scores"] = config.head_dim * QMAX * QMAX
    worst["attention.values"] = config.max_positions * QMAX * QMAX
    for name, bound in worst.items():
        limit = INT32_LIMIT if name.endswith(".q") else 1 << 53
        if bound >= limit:
            raise CompileError(f"{name}: worst-case partial sum {bound} is not below {limit}")
    return worst


def build_tensors(config: ModelConfig, weights: dict[str, torch.Tensor], token_table: TokenTable) -> dict[str, torch.Tensor]:
    """Float source weights (names as in ExactLlama, (out, in) layout, RoPE as adjacent pairs) → compiled tensors."""
    out: dict[str, torch.Tensor] = {}
    for name, w in weights.items():
        if w.dim() == 2:
            out[name + ".q"], out[name + ".scale"] = quantize_weight(w)
        else:
            out[name] = w.to(F64)
    cos, sin = tables.rope_tables(config.max_positions, config.head_dim, config.rope_theta)
    out["table.exp2_frac"] = torch.tensor(tables.exp2_frac_table(), dtype=torch.int64)
    out["table.sigmoid"] = torch.tensor(tables.sigmoid_table(), dtype=torch.int64)
    out["table.rope_cos"] = torch.tensor(cos, dtype=torch.int64)
    out["table.rope_sin"] = torch.tensor(sin, dtype=torch.int64)
    out.update(token_table.to_tensors())
    check_bounds(config, out)
    return out


def write_compiled(path: str, config: ModelConfig, tensors: dict[str, torch.Tensor], *, name: str, source: str,
                   tokenizer_json: str | None) -> bytes:
    """Serialize deterministically; returns the model hash (blake3 of the file)."""
    fields = {"format": FILE_FORMAT, "numerics": NUMERICS, "config": config.to_json(), "name": name,
              "source": source, "tokenizer_json": tokenizer_json or ""}
    # one metadata key: safetensors writes several keys in hash-map order, which would make the bytes vary
    data = save({k: v.contiguous() for k, v in sorted(tensors.items())}, metadata={"lza": json.dumps(fields, sort_keys=True)})
    write_atomically(path, data)
    return digest(CONTEXT_MODEL, data)


def write_atomically(path: str, data: bytes) -> None:
    """`data` at `path`, all or nothing: a new file under a unique temporary name beside it, then its name (two
    processes compiling or importing the same model never write into one file)."""
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".", suffix=".lzm-partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def read_header(path: str) -> dict[str, str]:
    """The metadata of a compiled model file, checked to be ours."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        try:
            metadata = json.loads((f.metadata() or {}).get("lza", "{}"))
        except ValueError:
            metadata = {}
    if metadata.get("format") != FILE_FORMAT or metadata.get("numerics") != NUMERICS:
        raise CompileError(f"{path}: not a compiled model of format {FILE_FORMAT} / {NUMERICS}")
    return metadata


def read_compiled(path: str) -> CompiledModel:
    with open(path, "rb") as f:
        model_hash = digest(CONTEXT_MODEL, f.read())
    metadata = read_header(path)
    tensors = load_file(path)
    table = TokenTable.from_tensors(tensors)
    return CompiledModel(ModelConfig.from_json(metadata["config"]), tensors, metadata["name"], metadata["source"],
                         model_hash, tokenizer_hash(table), metadata["tokenizer_json"] or None)


def tokenizer_hash(table: TokenTable) -> bytes:
    return digest(CONTEXT_TOKENIZER, table.offsets.astype("<i8").tobytes(), table.data)


# ------------------------------------------------------------------------------------------------------ sources


def from_gguf(path: str, max_positions: int = DEFAULT_MAX_POSITIONS) -> tuple[ModelConfig, dict, TokenTable, str]:
    """Read a llama-architecture GGUF: dequantize every tensor (exact in float64 for Q4_1/Q8_0), keep GGUF's RoPE
    layout (adjacent pairs), and build the tokenizer from its vocabulary and merges."""
    import gguf

    reader = gguf.GGUFReader(path)

    def field(key: str):
        return reader.fields[key].contents() if key in reader.fields else None

    arch = field("general.architecture")
    if arch != "llama":
        raise CompileError(f"{path}: architecture {arch!r} is not supported (supported: llama)")
    heads = field("llama.attention.head_count")
    hidden = field("llama.embedding_length")
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
        max_positions=min(max_positions, field("llama.context_length") or max_positions),
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
    token_types = field("tokenizer.ggml.token_type")
    control = {i for i, t in enumerate(token_types) if t != 1}
    byte_level = field("tokenizer.ggml.model") == "gpt2"
    table = TokenTable.from_list(token_bytes_from_strings(token_strings, control))
    tokenizer_json = bpe_tokenizer_json(token_strings, field("tokenizer.ggml.merges") or [], byte_level)
    return config, weights, table, tokenizer_json


def from_hf_directory(path: str, max_positions: int = DEFAULT_MAX_POSITIONS) -> tuple[ModelConfig, dict, TokenTable, str]:
    """A Hugging Face Llama directory (config.json, weights, tokenizer). q/k rows are permuted from HF's half-split
    RoPE layout to adjacent pairs, as llama.cpp's converter does."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    hf_config = AutoConfig.from_pretrained(path)
    if hf_config.model_type != "llama":
        raise CompileError(f"{path}: architecture {hf_config.model_type!r} is not supported (supported: llama)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    heads, kv_heads = hf_config.num_attention_heads, hf_config.num_key_value_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    config = ModelConfig(
        vocab_size=hf_config.vocab_size, hidden=hf_config.hidden_size, intermediate=hf_config.intermediate_size,
        layers=hf_config.num_hidden_layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        rope_theta=float(getattr(hf_config, "rope_theta", None) or hf_config.rope_parameters["rope_theta"]),
        norm_eps=float(hf_config.rms_norm_eps),
        max_positions=min(max_positions, hf_config.max_position_embeddings),
        bos_token=int(hf_config.bos_token_id if hf_config.bos_token_id is not None else 0),
        escape_token=min(AutoTokenizer.from_pretrained(path).all_special_ids),
    )
    state = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}
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
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = tokenizer.convert_ids_to_tokens(list(range(config.vocab_size)))
    control = set(tokenizer.all_special_ids)
    table = TokenTable.from_list(token_bytes_from_strings([t or "" for t in vocab], control))
    tokenizer_json = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str()), sort_keys=True)
    return config, weights, table, tokenizer_json


def _pairs_from_halves(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's output rows from [x_0..x_{h/2-1}, y_0..] (rotate-half) to [x_0, y_0, x_1, y_1, ...]."""
    out_dim = w.shape[0]
    return w.reshape(heads, 2, out_dim // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def compile_to(path: str, loaded: tuple[ModelConfig, dict, TokenTable, str | None], *, name: str, source: str) -> bytes:
    config, weights, table, tokenizer_json = loaded
    return write_compiled(path, config, build_tensors(config, weights, table), name=name, source=source,
                          tokenizer_json=tokenizer_json)
