"""A tiny randomly initialized GPT-2 from a fixed seed: compiled directly (weights and a byte token table; no
transformers or tokenizers involved, so the same model file on every version of them: the golden fixture's model),
or written as a Hugging Face directory (config, safetensors weights, a byte-level BPE tokenizer) with the same
weights, as `lza pack --model DIR` reads a GPT-2 checkpoint, with no download."""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache

import torch

from lzarchive.engine import architectures, compiler, gpt2
from lzarchive.engine.model import ModelConfig
from lzarchive.engine.tokenizer import TokenTable, byte_level_alphabet

MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("in", "g"), ("Ġ", "a"), ("e", "r"), ("Ġ", "s"),
          ("o", "n"), ("Ġ", "w")]
END_OF_TEXT = "<|endoftext|>"
TOKENS = 256 + len(MERGES) + 1  # bytes (id = byte), merges, <|endoftext|>


def tiny_gpt2_config(**overrides) -> ModelConfig:
    values = dict(vocab_size=TOKENS, hidden=64, intermediate=256, layers=2, heads=4, kv_heads=4, head_dim=16,
                  rope_theta=0.0, norm_eps=1e-5, max_positions=256, bos_token=TOKENS - 1, escape_token=TOKENS - 1,
                  architecture="gpt2")
    values.update(overrides)
    return ModelConfig(**values)


def gpt2_weights(config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Weights named as the GPT-2 engine reads them ((out, in) layout), drawn in float32 from torch's seeded CPU
    generator (a checkpoint's precision), as float64."""
    g = torch.Generator().manual_seed(seed)
    d, inner = config.hidden, config.intermediate

    def w(*shape, scale=0.2, offset=0.0):
        return (offset + scale * torch.randn(*shape, generator=g, dtype=torch.float32)).to(torch.float64)

    # the token embedding's scale sets the model's confidence (it is also the output head): its own samples take
    # about 6 bits per token, neither near-certain tables nor near-uniform ones
    weights = {"tok_embeddings": w(config.vocab_size, d, scale=0.5), "pos_embeddings": w(config.max_positions, d),
               "norm": w(d, scale=0.1, offset=1.0), "norm.bias": w(d, scale=0.1)}
    for layer in range(config.layers):
        p = f"layers.{layer}."
        for name, shape in (("wqkv", (3 * d, d)), ("wo", (d, d)), ("w_up", (inner, d)), ("w_down", (d, inner))):
            weights[p + name], weights[p + name + ".bias"] = w(*shape), w(shape[0], scale=0.05)
        for name in ("attn_norm", "ffn_norm"):
            weights[p + name], weights[p + name + ".bias"] = w(d, scale=0.1, offset=1.0), w(d, scale=0.1)
    return weights


def gpt2_token_table() -> TokenTable:
    alphabet = byte_level_alphabet()
    pieces = [bytes([b]) for b in range(256)] + [bytes(alphabet[c] for c in left + right) for left, right in MERGES]
    return TokenTable.from_list(pieces + [END_OF_TEXT.encode()])


@lru_cache(maxsize=2)
def tiny_gpt2(seed: int = 0) -> compiler.CompiledModel:
    config = tiny_gpt2_config()
    with tempfile.TemporaryDirectory(prefix="lza-gpt2-") as directory:  # read whole: nothing is left behind
        path = os.path.join(directory, "gpt2.lzm")
        compiler.compile_to(path, gpt2.source(config, gpt2_weights(config, seed), gpt2_token_table(), None),
                            name=f"gpt2-tiny-{seed}", source="test:random")
        return architectures.read_compiled(path)


def write_tokenizer(directory: str) -> None:
    """GPT-2's byte-level BPE tokenizer with MERGES (TOKENS ids, <|endoftext|> last) into a Hugging Face directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2TokenizerFast

    vocab = {char: byte for char, byte in byte_level_alphabet().items()}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab, MERGES))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                      unk_token=END_OF_TEXT).save_pretrained(directory)


def write_gpt2(directory: str, seed: int = 0, **shape) -> str:
    """The same random GPT-2 (tiny_gpt2_config with `shape` overrides) as a Hugging Face directory: GPT2LMHeadModel
    weights (Conv1D: (in, out)) in safetensors and GPT-2's byte-level BPE tokenizer with MERGES; vocab_size beyond
    the tokenizer's leaves the extra tokens without text."""
    from transformers import GPT2Config, GPT2LMHeadModel

    write_tokenizer(directory)
    config = tiny_gpt2_config(**shape)
    hf = GPT2Config(vocab_size=config.vocab_size, n_positions=config.max_positions, n_embd=config.hidden,
                    n_layer=config.layers, n_head=config.heads, bos_token_id=TOKENS - 1, eos_token_id=TOKENS - 1)
    ours = gpt2_weights(config, seed)
    state = {"transformer.wte.weight": ours["tok_embeddings"], "transformer.wpe.weight": ours["pos_embeddings"],
             "transformer.ln_f.weight": ours["norm"], "transformer.ln_f.bias": ours["norm.bias"]}
    names = {"attn_norm": "ln_1", "ffn_norm": "ln_2", "wqkv": "attn.c_attn", "wo": "attn.c_proj", "w_up": "mlp.c_fc",
             "w_down": "mlp.c_proj"}
    for layer in range(config.layers):
        for mine, theirs in names.items():
            weight = ours[f"layers.{layer}.{mine}"]
            state[f"transformer.h.{layer}.{theirs}.weight"] = weight.T if weight.dim() == 2 else weight
            state[f"transformer.h.{layer}.{theirs}.bias"] = ours[f"layers.{layer}.{mine}.bias"]
    model = GPT2LMHeadModel(hf)
    model.load_state_dict({name: tensor.to(torch.float32) for name, tensor in state.items()}, strict=False)
    model.tie_weights()
    model.save_pretrained(directory)
    return directory
