"""GPT-2 (SPEC.md 9.2 and 9.3, GPT-2) end to end: a Hugging Face GPT2LMHeadModel directory compiles (to the same model
as its weights) and packs with --model, archives round-trip through the CLI, GPT-2 small's real shape passes the
compiler's bounds, and a model file whose architecture and numerics this lza does not implement is refused, never run
through another architecture's arithmetic."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lzarchive import api
from lzarchive.codecs.lm import LmCodec
from lzarchive.engine import architectures, compiler

from .conftest import run_cli
from .gpt2_tiny import tiny_gpt2, write_gpt2
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
