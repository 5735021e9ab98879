"""The architectures from their sources, end to end. GPT-2 (SPEC.md 9.2 and 9.3, GPT-2): a Hugging Face
GPT2LMHeadModel directory compiles (to the same model as its weights) and packs with --model, archives round-trip
through the CLI, GPT-2 small's real shape passes the compiler's bounds. Llama: Hugging Face directories in bf16, fp16
and fp32 compile and predict as the float model does. A model file whose architecture and numerics this lza does not
implement is refused, never run through another architecture's arithmetic."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from lzarchive import api
from lzarchive.codecs.lm import LmCodec
from lzarchive.engine import architectures, compiler

from .conftest import run_cli
from .gpt2_tiny import tiny_gpt2, write_gpt2, write_tokenizer
from .tiny import greedy_text, tiny_model

PROSE = (b"The archive keeps every byte of every file. A model predicts the next token; the coder spends what the "
         b"prediction deserves, and the reader, with the same model, gets the same predictions back.\n") * 3


def test_a_gpt2_directory_packs_and_extracts(tmp_path, private_model_cache):
    model_dir = write_gpt2(str(tmp_path / "gpt2-dir"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "likely.txt").write_bytes(greedy_text(tiny_gpt2(), 250))  # what the model predicts: lm must win
    (src / "odd.bin").write_bytes(b"tabs\tand \x00 NULs \xff not utf-8 \xc3( <|endoftext|> literally\n")
    out = str(tmp_path / "g.lza")
    result = run_cli("pack", str(src), "-o", out, "--codec", "lm", "--model", model_dir, "--chunk-size", "300", "-q")
    assert result.exit_code == 0, result.stderr
    info = api.info(out)
    (record,) = info.models
    assert "lm" in info.codecs
    assert record["numerics"] == "lza-int-gpt2-v1" and record["name"] == "gpt2-dir"
    assert run_cli("verify", out, "-q").exit_code == 0
    assert run_cli("extract", out, "-C", str(tmp_path / "x"), "-q").exit_code == 0
    for name in ("likely.txt", "odd.bin"):
        assert (tmp_path / "x" / "src" / name).read_bytes() == (src / name).read_bytes()
    described = json.loads(run_cli("model", "info", model_dir, "--json").stdout)
    assert described["config"]["architecture"] == "gpt2" and described["numerics"] == "lza-int-gpt2-v1"


def test_compiling_a_source_is_announced_once(tmp_path, private_model_cache):
    """The first use of a source compiles it (seconds to minutes, before any progress can show): the user is told."""
    from lzarchive.archive.progress import Progress

    class Notes(Progress):
        def __init__(self):
            self.notes = []

        def note(self, text):
            self.notes.append(text)

    directory = str(tmp_path / "gpt2")
    write_gpt2(directory)
    first, again = Notes(), Notes()
    assert api.load_model(directory, progress=first).model_hash == api.load_model(directory, progress=again).model_hash
    assert len(first.notes) == 1 and first.notes[0].startswith(f"compiling {directory} into the model cache")
    assert again.notes == []


def test_a_gpt2_directory_compiles_to_the_same_model_as_its_weights(tmp_path):
    """The converter (GPT2LMHeadModel names, Conv1D weights transposed, the fused c_attn, tied head, positions and
    special tokens from the config and tokenizer) gives exactly the tensors and config of compiling the weights
    directly under the engine's names."""
    direct = tiny_gpt2()
    path = str(tmp_path / "hf.lzm")
    compiler.compile_to(path, architectures.read_source(write_gpt2(str(tmp_path / "dir"))), name="x", source="y")
    converted = compiler.read_compiled(path)
    assert converted.config == direct.config and converted.numerics == direct.numerics == "lza-int-gpt2-v1"
    assert converted.tensors.keys() == direct.tensors.keys()
    assert all(torch.equal(converted.tensors[name], tensor) for name, tensor in direct.tensors.items())
    assert converted.tokenizer_json  # the directory's BPE tokenizer, which the direct compile has not
    assert relative_error(converted, str(tmp_path / "dir"), "GPT2LMHeadModel") < 0.05  # int8 weights: a few percent


def test_a_source_keeps_its_trained_positions_or_the_first_n_asked(tmp_path, private_model_cache):
    """`lza model compile` keeps every position the source was trained for (the tiny GPT-2's 256); `--positions N`
    keeps the first N: another model (hash), whose predictions within those N are the same. A compiled file's positions
    are what they are."""
    model_dir = write_gpt2(str(tmp_path / "dir"))
    full = json.loads(run_cli("model", "compile", model_dir, "--json").stdout)
    cut = json.loads(run_cli("model", "compile", model_dir, "--positions", "100", "--json").stdout)
    assert (full["config"]["max_positions"], cut["config"]["max_positions"]) == (256, 100)
    assert full["model_hash"] != cut["model_hash"]
    payloads = [LmCodec(compiler.read_compiled(m["path"]), window=90, overlap=20).encode_batch([PROSE])[0]
                for m in (full, cut)]
    assert payloads[0] is not None and payloads[0] == payloads[1]
    refused = run_cli("model", "compile", full["path"], "--positions", "100")
    assert refused.exit_code == 12 and "keeps its positions" in refused.stderr
    refused = run_cli("model", "compile", model_dir, "--positions", "257")
    assert refused.exit_code == 12 and "was trained for 256 positions; --positions 257 asks for more" in refused.stderr


def test_gpt2_small_shape_compiles_within_bounds_and_round_trips(tmp_path):
    """GPT-2 small's shape (12 layers of 768, 12 heads, 1,024 positions, 50,257 tokens), randomly initialized."""
    model_dir = write_gpt2(str(tmp_path / "small"), hidden=768, intermediate=3072, layers=12, heads=12, kv_heads=12,
                           head_dim=64, max_positions=1024, vocab_size=50257)
    path = str(tmp_path / "small.lzm")
    compiler.compile_to(path, architectures.read_source(model_dir), name="gpt2-small-random", source="test:random")
    model = compiler.read_compiled(path)
    worst = compiler.check_bounds(model.config, model.tensors)
    assert worst["attention.values"] == 1024 * 32639**2 and max(worst.values()) < 2**53
    assert max(v for name, v in worst.items() if name.endswith(".q")) < 2**31
    codec = LmCodec(model, window=64, overlap=16)
    (payload,) = codec.encode_batch([PROSE[:200]])
    assert payload is not None and codec.decode_batch([payload], [200]) == [PROSE[:200]]


def test_an_architecture_this_lza_does_not_implement_is_refused(tmp_path, private_model_cache):
    gpt2 = tiny_gpt2()
    for architecture, numerics in (("gpt2", "lza-int-v1"), ("llama", "lza-int-gpt2-v1"), ("gpt3", "lza-int-gpt2-v1")):
        path = str(tmp_path / f"{architecture}-{numerics}.lzm")
        compiler.write_compiled(path, dataclasses.replace(gpt2.config, architecture=architecture), gpt2.tensors,
                                numerics=numerics, name="odd", source="test", tokenizer_json=gpt2.tokenizer_json)
        model = compiler.read_compiled(path)
        with pytest.raises(architectures.UnsupportedModel, match=f"architecture '{architecture}' with numerics"):
            LmCodec(model)
        result = run_cli("pack", str(tmp_path), "-o", str(tmp_path / "x.lza"), "--codec", "lm", "--model", path)
        assert result.exit_code == 12 and "is not implemented by this lza" in result.stderr
    (tmp_path / "a.txt").write_bytes(greedy_text(tiny_model(), 60))  # the Llama profile still packs
    assert LmCodec(tiny_model()).encode_batch([(tmp_path / "a.txt").read_bytes()])[0] is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_llama_directories_of_every_float_dtype_compile(dtype, tmp_path):
    """A random Hugging Face Llama saved in each dtype compiles, and the exact engine's logits follow the float
    model's (int8 weights: within a few percent): the converter's names and RoPE permutation are right."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = str(tmp_path / "llama")
    write_tokenizer(directory)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=267, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      bos_token_id=266, eos_token_id=266, tie_word_embeddings=True))
    with torch.no_grad():
        for parameter in hf.parameters():
            parameter.normal_(0, 0.1 if parameter.dim() == 2 else 0.05).add_(1.0 if parameter.dim() == 1 else 0.0)
    hf.to(dtype).save_pretrained(directory)
    path = str(tmp_path / "llama.lzm")
    compiler.compile_to(path, architectures.read_source(directory), name="llama", source="test")
    model = compiler.read_compiled(path)
    assert (model.config.architecture, model.numerics, model.config.kv_heads) == ("llama", "lza-int-v1", 2)
    assert relative_error(model, directory, "LlamaForCausalLM") < 0.05


@pytest.mark.parametrize("option", [{"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, {"hidden_act": "gelu"}],
                         ids=["rope scaling", "gelu"])
def test_a_llama_directory_with_arithmetic_lza_does_not_run_is_refused(option, tmp_path, private_model_cache):
    """Compiling it would silently drop what the source does differently (scaled positions, another activation)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = str(tmp_path / "llama")
    write_tokenizer(directory)
    LlamaForCausalLM(LlamaConfig(vocab_size=267, hidden_size=64, intermediate_size=160, num_hidden_layers=1,
                                 num_attention_heads=4, max_position_embeddings=256, bos_token_id=266, eos_token_id=266,
                                 **option)).save_pretrained(directory)
    with pytest.raises(compiler.CompileError, match="is not supported"):
        architectures.read_source(directory)
    result = run_cli("model", "compile", directory)
    assert result.exit_code == 12 and "is not supported" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("field,value", [("llama.rope.scaling.type", "linear"), ("llama.rope.dimension_count", 8)])
def test_a_llama_gguf_with_scaled_or_partial_rope_is_refused(field, value, tmp_path):
    import gguf

    path = str(tmp_path / "m.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.attention.head_count", 4)
    writer.add_uint32("llama.embedding_length", 64)
    (writer.add_string if isinstance(value, str) else writer.add_uint32)(field, value)
    writer.add_tensor("token_embd.weight", np.zeros((10, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(compiler.CompileError, match="is not supported"):
        architectures.read_source(path)


def relative_error(model: compiler.CompiledModel, directory: str, hf_class: str) -> float:
    """RMS of (exact engine's logits − the float model's) over RMS of the float model's, on 60 positions."""
    import transformers

    tokens = torch.tensor([[model.config.bos_token] + list(range(40, 100))])
    engine = architectures.engine(model)
    q, s = engine.forward(tokens, engine.new_cache(1, tokens.shape[1]))
    logits = engine._linear(q[0], s[0], "output")
    with torch.no_grad():
        expected = getattr(transformers, hf_class).from_pretrained(directory, dtype=torch.float64)(tokens).logits[0]
    return float(((logits - expected).pow(2).mean() / expected.pow(2).mean()).sqrt())
