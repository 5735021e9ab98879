"""A tiny randomly initialized Llama-architecture model, built from a fixed seed, for fast engine tests."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from functools import lru_cache, partial

import torch
from safetensors.torch import save

from lzarchive.engine import architectures, compiler, llama
from lzarchive.engine.model import ModelConfig
from lzarchive.engine.ops import CompiledOps, Tables, TorchOps
from lzarchive.engine.tokenizer import TokenTable

ESCAPE, BOS = 0, 1
MISSING_BYTES = (0xFF, 0x00)  # bytes with no token of their own: the codec must escape them


def tiny_config(**overrides) -> ModelConfig:
    values = dict(vocab_size=2 + 256 - len(MISSING_BYTES) + 6, hidden=64, intermediate=160, layers=2, heads=4,
                  kv_heads=2, head_dim=16, rope_theta=10000.0, norm_eps=1e-5, max_positions=512, bos_token=BOS,
                  escape_token=ESCAPE)
    values.update(overrides)
    return ModelConfig(**values)


def tiny_table(vocab_size: int) -> TokenTable:
    pieces = [b"<esc>", b"<s>"] + [bytes([b]) for b in range(256) if b not in MISSING_BYTES]
    pieces += [b"the", b" the", b"ing", b"  ", b"\n", b"e "][: vocab_size - len(pieces)]
    return TokenTable.from_list(pieces)


def random_weights(config: ModelConfig, seed: int, logit_scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d, kv = config.hidden, config.kv_heads * config.head_dim

    def w(*shape, scale=0.2):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    # large embeddings (the tied output head) make the model confident, so text it generates compresses well
    # (logit_scale < 1 makes it less sure of itself: text that a model learning from it can improve on)
    weights = {"tok_embeddings": w(config.vocab_size, d, scale=4.0), "norm": (1 + w(d, scale=0.1)) * logit_scale}
    for layer in range(config.layers):
        p = f"layers.{layer}."
        weights.update({p + "wq": w(d, d), p + "wk": w(kv, d), p + "wv": w(kv, d), p + "wo": w(d, d),
                        p + "w_gate": w(config.intermediate, d), p + "w_up": w(config.intermediate, d),
                        p + "w_down": w(d, config.intermediate), p + "attn_norm": 1 + w(d, scale=0.1),
                        p + "ffn_norm": 1 + w(d, scale=0.1)})
    return weights


@lru_cache(maxsize=4)
def tiny_model(seed: int = 0, logit_scale: float = 1.0, **overrides) -> compiler.CompiledModel:
    config = tiny_config(**overrides)
    with tempfile.TemporaryDirectory(prefix="lza-tiny-") as directory:  # read whole: nothing is left behind
        path = os.path.join(directory, "tiny.lzm")
        weights = random_weights(config, seed, logit_scale)
        compiler.compile_to(path, llama.source(config, weights, tiny_table(config.vocab_size), None),
                            name=f"tiny-{seed}", source="test:random")
        return architectures.read_compiled(path)


UNSURE = 0.03  # the tiny model's logits scaled down: a bias of a few logits changes its tables


def unsure_model() -> compiler.CompiledModel:
    return tiny_model(logit_scale=UNSURE)


def greedy_text(model: compiler.CompiledModel, tokens: int, seed_token: int = 2 + ord("t")) -> bytes:
    """Text the model itself finds likely: greedy decoding (control tokens excluded), so the lm codec must win. Made
    once per model, length and seed (a step per token: the suite asks for the same texts many times)."""
    key = (model.model_hash, tokens, seed_token)
    if key not in _GREEDY_TEXTS:
        _GREEDY_TEXTS[key] = _greedy_decoding(model, tokens, seed_token)
    return _GREEDY_TEXTS[key]


_GREEDY_TEXTS: dict[tuple[bytes, int, int], bytes] = {}


def _greedy_decoding(model: compiler.CompiledModel, tokens: int, seed_token: int) -> bytes:
    from lzarchive.rangecoder import TOTAL_BITS

    engine = architectures.engine(model)
    cfg = model.config
    cache = engine.new_cache(1, tokens + 2)
    out, token = [seed_token], [[cfg.bos_token, seed_token]]
    for _ in range(tokens):
        q, s = engine.forward(torch.tensor(token), cache)
        freq = engine.frequencies(q[0, -1:], s[0, -1:], TOTAL_BITS)[0]
        freq[[cfg.escape_token, cfg.bos_token]] = 0
        out.append(int(freq.argmax()))
        token = [[out[-1]]]
    return model.token_table.decode(out)


def sampled_text(model: compiler.CompiledModel, tokens: int, seed: int) -> bytes:
    """Text sampled from the model's own frequency tables (control tokens excluded) by a 64-bit LCG (no library's
    generator, so the same text for decades): it compresses to about the model's entropy."""
    from lzarchive.rangecoder import TOTAL_BITS

    engine, cfg, state = architectures.engine(model), model.config, seed
    cache, out, token = engine.new_cache(1, tokens + 1), [], cfg.bos_token
    for _ in range(tokens):
        q, s = engine.forward(torch.tensor([[token]]), cache)
        freq = engine.frequencies(q[0, -1:], s[0, -1:], TOTAL_BITS)[0]
        freq[[cfg.escape_token, cfg.bos_token]] = 0
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        cumulative = freq.cumsum(0)
        token = int(torch.searchsorted(cumulative, (state >> 32) % int(cumulative[-1]), right=True))
        out.append(token)
    return model.token_table.decode(out)


def tiny_ops() -> tuple[CompiledOps, TorchOps]:
    """Both implementations of the exact operations, with the tiny model's tables."""
    tables = Tables.of(tiny_model().tensors, "sigmoid")
    return CompiledOps(torch.device("cpu"), tables), TorchOps(torch.device("cpu"), tables)


def every_attention(compiled: CompiledOps, torch_ops: TorchOps, k, ks, v, vs) -> dict[str, Callable]:
    """Both ways the engine computes a block of attention: the torch operations, and the compiled path (loops when
    decoding, float64 products around the compiled weights for blocks of several positions)."""
    return {"torch": partial(torch_ops.attention, k, ks, v, vs), "compiled": partial(compiled.attention, k, ks, v, vs)}


def crafted_model_file(path: str, model: compiler.CompiledModel, config_json: str | None = None,
                       tensors: dict[str, torch.Tensor] | None = None, tokenizer_json: str = "", **config_changes) -> str:
    """A model file like `model`'s but with its config changed (or given as JSON text) or other tensors: what a damaged
    or crafted file can hold, written as the compiler writes files."""
    config = config_json or dataclasses.replace(model.config, **config_changes).to_json()
    metadata = {"format": compiler.FILE_FORMAT, "numerics": model.numerics, "config": config, "name": "crafted",
                "source": "test", "tokenizer_json": tokenizer_json}
    tensors = model.tensors if tensors is None else tensors
    with open(path, "wb") as f:
        f.write(save({k: v.contiguous() for k, v in sorted(tensors.items())},
                     metadata={"lza": json.dumps(metadata, sort_keys=True)}))
    return path
