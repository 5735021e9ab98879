"""The architectures from their sources, end to end. GPT-2 (SPEC.md 9.2 and 9.3, GPT-2): a Hugging Face
GPT2LMHeadModel directory compiles (to the same model as its weights) and packs with --model, archives round-trip
through the CLI, GPT-2 small's real shape passes the compiler's bounds. Llama: Hugging Face directories in bf16, fp16
and fp32 compile and predict as the float model does. A model file whose architecture and numerics this lza does not
implement is refused, never run through another architecture's arithmetic."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from lzarchive import api
from lzarchive.codecs.lm import LmCodec
from lzarchive.engine import architectures, compiler

from .conftest import run_cli
from .gpt2_tiny import tiny_gpt2, write_gpt2, write_tokenizer
from .tiny import crafted_model_file, greedy_text, tiny_model

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
    converted = architectures.read_compiled(path)
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
    payloads = [LmCodec(architectures.read_compiled(m["path"]), window=90, overlap=20).encode_batch([PROSE])[0]
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
    model = architectures.read_compiled(path)
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
        with pytest.raises(architectures.UnsupportedModel, match=f"architecture '{architecture}' with numerics"):
            architectures.read_compiled(path)  # before any tensor is read or run
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
    model = architectures.read_compiled(path)
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


def changed(tensors: dict[str, torch.Tensor], name: str, change) -> dict[str, torch.Tensor]:
    """The tensors with one replaced by change(a copy of it), or removed where change gives None."""
    out = dict(tensors)
    value = change(tensors[name].clone())
    if value is None:
        del out[name]
    else:
        out[name] = value
    return out


def set_first(value):
    def change(tensor):
        tensor.view(-1)[0] = value
        return tensor
    return change


LLAMA_CRAFTED = {  # what is changed -> what the refusal names
    "bos token beyond the vocabulary": (dict(bos_token=262), "bos_token = 262 is out of range"),
    "negative escape token": (dict(escape_token=-5), "escape_token = -5 is out of range"),
    "no kv heads": (dict(kv_heads=0), "kv_heads = 0 is out of range"),
    "heads not a multiple of kv heads": (dict(heads=3), "heads = 3 is out of range"),
    "zero epsilon": (dict(norm_eps=0.0), "norm_eps = 0.0 is out of range"),
    "NaN epsilon": (dict(norm_eps=float("nan")), "norm_eps = nan is out of range"),
    "huge epsilon": (dict(norm_eps=1e300), "norm_eps = 1e\\+300 is out of range"),
    "theta not a number": (dict(rope_theta="x"), "rope_theta = 'x' is not a number"),
    "vocabulary a boolean": (dict(vocab_size=True), "vocab_size = True is not an int"),
    "odd head width": (dict(head_dim=15), "head_dim = 15 is odd"),
    # positions beyond the RoPE tables' rows: a window would read past them
    "more positions than the tables hold": (dict(max_positions=1024),
                                            r"table.rope_cos: int64 \(512, 8\), expected int64 \(1024, 8\)"),
    "a wider hidden state than the weights": (dict(hidden=65), r"layers.0.attn_norm: float64 \(64,\), expected float64 \(65,\)"),
    "a layer more than the file holds": (dict(layers=3), "tensor layers.2.wq.q: missing"),
    "an unknown architecture": (dict(architecture="mamba"), "architecture 'mamba' with numerics 'lza-int-v1'"),
    "config without a field": (dict(config_json='{"vocab_size": 264}'), "not an object with exactly the fields"),
    "config not JSON": (dict(config_json="{"), "config: not a JSON text"),
    "a NaN gain": (dict(tensors=("layers.0.attn_norm", set_first(float("nan")))), "layers.0.attn_norm: a value not in"),
    "an infinite gain": (dict(tensors=("norm", set_first(float("inf")))), "tensor norm: a value not in"),
    "a negative scale": (dict(tensors=("layers.1.wo.scale", set_first(-0.5))), r"layers.1.wo.scale: a value not in \(0"),
    "a scale beyond 2^64": (dict(tensors=("layers.0.wq.scale", set_first(1e30))), "layers.0.wq.scale: a value not in"),
    "a gain of another dtype": (dict(tensors=("layers.0.ffn_norm", lambda t: t.to(torch.float32))),
                                r"layers.0.ffn_norm: float32 \(64,\), expected float64 \(64,\)"),
    "EXP's table not starting at one": (dict(tensors=("table.exp2_frac", set_first((1 << 30) - 1))),
                                        "table.exp2_frac: values outside the table's range"),
    "a RoPE entry above one": (dict(tensors=("table.rope_sin", set_first((1 << 30) + 1))), "table.rope_sin: values outside"),
    "a sigmoid entry below zero": (dict(tensors=("table.sigmoid", set_first(-1))), "table.sigmoid: values outside"),
    "a token table past its bytes": (dict(tensors=("tokenizer.offsets", lambda t: torch.cat([t[:-1], t[-1:] + 1]))),
                                     "tokenizer.offsets: does not tile tokenizer.bytes"),
    "a token table of fewer rows": (dict(tensors=("tokenizer.offsets", lambda t: t[:-1])),
                                    r"tokenizer.offsets: int64 \(262,\), expected int64 \(263,\)"),
    "an output head without its scales": (dict(tensors=("output.scale", lambda t: None)), "tensor output.scale: missing"),
    "a tensor no Llama has": (dict(tensors=("norm.bias", None)), "tensor norm.bias: not one of a llama model's"),
}


@pytest.mark.parametrize("case", list(LLAMA_CRAFTED))
def test_a_model_file_is_checked_before_it_is_trusted(case, tmp_path):
    """SPEC.md 9.2: every field of the config, every tensor's presence, dtype and shape, every float64's range, the
    tables' ranges and the token table are checked when a model file is read; a file that breaks a rule is refused,
    naming it, before anything runs (before, such files ran: a window read past the RoPE tables, a negative escape
    token indexed from the end, others failed with a traceback)."""
    model = tiny_model()
    change, expected = LLAMA_CRAFTED[case]
    tensors = dict(model.tensors)
    tensors["output.q"], tensors["output.scale"] = tensors["tok_embeddings.q"].clone(), tensors["tok_embeddings.scale"].clone()
    if "tensors" in change:
        name, edit = change.pop("tensors")
        if name == "norm.bias":  # a tensor to add, not one to change
            tensors["norm.bias"] = tensors["norm"].clone()
        else:
            tensors = changed(tensors, name, edit)
    path = crafted_model_file(str(tmp_path / "crafted.lzm"), model, tensors=tensors, **change)
    with pytest.raises((compiler.CompileError, architectures.UnsupportedModel), match=expected):
        architectures.read_compiled(path)


def test_a_crafted_model_file_is_refused_by_every_command(tmp_path, private_model_cache):
    """pack --model, model info and model compile refuse it (exit 12, the rule it breaks named); nothing is written."""
    model = tiny_model()
    path = crafted_model_file(str(tmp_path / "crafted.lzm"), model, max_positions=4096)
    (tmp_path / "a.txt").write_bytes(PROSE)
    out = tmp_path / "a.lza"
    for command in (["pack", str(tmp_path / "a.txt"), "-o", str(out), "--codec", "lm", "--model", path],
                    ["model", "info", path], ["model", "compile", path]):
        result = run_cli(*command)
        assert result.exit_code == 12 and "expected int64 (4096, 8)" in result.stderr, (command, result.stderr)
    assert not out.exists() and not list((tmp_path / "models").glob("*.lzm"))
    # in the cache under its own hash (as only a hand could put it), with a config out of range: `model list` reads
    # only configs, and warns of this one instead of listing it
    path = crafted_model_file(str(tmp_path / "crafted.lzm"), model, escape_token=-5)
    cached = tmp_path / "models" / (compiler.file_hash(path).hex() + ".lzm")
    cached.parent.mkdir(exist_ok=True)
    cached.write_bytes((tmp_path / "crafted.lzm").read_bytes())
    with pytest.warns(RuntimeWarning, match="not listed, not a usable compiled model: config: escape_token = -5"):
        result = run_cli("model", "list")  # the CLI prints it as "lza: warning: ..."
    assert result.exit_code == 0
    assert cached.name[:16].encode() not in result.stdout


def test_the_hash_of_a_model_file_names_the_bytes_that_run_though_the_file_changes_as_it_is_read(
        tmp_path, private_model_cache, monkeypatch):
    """A model file replaced while lza reads it (another process compiling or copying over it): the model that runs,
    the hash it reports (which an archive records) and the copy kept in the cache are all of one file's bytes. Before,
    the file was read three times (its hash, its header, its tensors), so the hash could name the old file while the
    tensors came from the new one: an archive naming a model other than the one that coded it."""
    from lzarchive.engine import registry

    path, replacement = str(tmp_path / "model.lzm"), str(tmp_path / "replacement.lzm")
    real_digest, armed = compiler.digest, []

    def digest_then_replace(context, *parts):  # the file is replaced right after lza hashes a model's bytes
        if context == compiler.CONTEXT_MODEL and armed:
            os.replace(replacement, path)
            armed.clear()
        return real_digest(context, *parts)

    def write(name: str, seed: int) -> bytes:
        model = tiny_model(seed=seed)
        return compiler.write_compiled(name, model.config, model.tensors, numerics=model.numerics, name=model.name,
                                       source=model.source, tokenizer_json=None)

    monkeypatch.setattr(compiler, "digest", digest_then_replace)
    for read in (architectures.read_compiled, registry.import_compiled):
        first, second = write(path, 0), write(replacement, 1)
        armed.append(True)
        loaded = read(path)
        assert loaded.model_hash == first, read
        assert all(torch.equal(loaded.tensors[name], tensor) for name, tensor in tiny_model(seed=0).tensors.items()), read
        assert compiler.file_hash(path) == second  # the file did change while it was read
    cached = tmp_path / "models" / (first.hex() + ".lzm")
    assert compiler.file_hash(str(cached)) == first  # the bytes checked are the bytes kept


@pytest.mark.parametrize("head", [b"", b"\x05\x00", (1 << 64) - 1, b"[1, 2]", b'{"__metadata__": [1]}',
                                  b'{"__metadata__": {"lza": 5}}', b'{"__metadata__": {"lza": "[["}}', b"{" * 100000])
def test_a_model_file_header_that_is_not_ours_is_refused_by_both_readers(head, tmp_path):
    """The header of SPEC.md 9.2 (a u64 n, n bytes of JSON, its __metadata__.lza) as lza parses it itself: cut short,
    claiming more than the file holds, or not the objects it should be, it is not a compiled model (CompileError),
    whether the whole file is read or only its header (`lza model list`)."""
    path = tmp_path / "model.lzm"
    if isinstance(head, int):  # a header length beyond any file
        path.write_bytes(head.to_bytes(8, "little") + b"{}")
    elif head[:1] in (b"[", b"{"):
        path.write_bytes(len(head).to_bytes(8, "little") + head)
    else:
        path.write_bytes(head)
    with pytest.raises(compiler.CompileError, match="not a compiled model of format"):
        compiler.read_header(str(path))
    with pytest.raises(compiler.CompileError, match="not a compiled model of format"):
        architectures.read_compiled(str(path))


def test_gpt2_model_files_are_checked_too(tmp_path):
    gpt2 = tiny_gpt2()
    cases = {"kv heads other than heads": (dict(kv_heads=1), "GPT-2 needs kv_heads = heads"),
             "positions beyond the position rows": (dict(max_positions=2 * gpt2.config.max_positions),
                                                    r"pos_embeddings.(q|scale): .*, expected"),
             "a bias missing": (dict(tensors=changed(gpt2.tensors, "layers.0.wo.bias", lambda t: None)),
                                "tensor layers.0.wo.bias: missing")}
    for case, (change, expected) in cases.items():
        path = crafted_model_file(str(tmp_path / "crafted.lzm"), gpt2, **change)
        with pytest.raises(compiler.CompileError, match=expected):
            architectures.read_compiled(path)


def test_a_source_with_a_weight_that_is_not_a_number_does_not_compile(tmp_path):
    """The compiler checks what it writes by the same rules: a NaN in a source's weights would otherwise become an
    undefined int8 and a NaN scale."""
    from .tiny import random_weights, tiny_config, tiny_table
    from lzarchive.engine import llama

    config = tiny_config()
    weights = random_weights(config, 0)
    weights["layers.1.w_up"][3, 5] = float("nan")
    with pytest.raises(compiler.CompileError, match="layers.1.w_up: a weight that is not a finite number"):
        compiler.compile_to(str(tmp_path / "nan.lzm"), llama.source(config, weights, tiny_table(config.vocab_size), None),
                            name="nan", source="test")
    assert not (tmp_path / "nan.lzm").exists()


def test_a_model_whose_tokenizer_cannot_serve(tmp_path, private_model_cache):
    """A tokenizer that does not parse is refused before packing starts (exit 12), where it failed with a traceback;
    one that gives an id its token table lacks (an added token beyond the vocabulary) leaves those chunks to other
    codecs, as any tokenization that does not give the chunk's bytes back, where it failed with an IndexError."""
    from lzarchive.engine.tokenizer import Encoder, bpe_tokenizer_json

    model = tiny_model()
    (tmp_path / "a.txt").write_bytes(PROSE)
    path = crafted_model_file(str(tmp_path / "crafted.lzm"), model, tokenizer_json="{not json")
    result = run_cli("pack", str(tmp_path / "a.txt"), "-o", str(tmp_path / "a.lza"), "--codec", "lm", "--model", path)
    assert result.exit_code == 12 and "its tokenizer cannot be read" in result.stderr, result.stderr
    assert not (tmp_path / "a.lza").exists()

    beyond = bpe_tokenizer_json([chr(0x100 + i) for i in range(299)] + ["T"], [], byte_level=False)  # "T": 299 of 262
    assert Encoder(model.token_table, beyond, model.config.escape_token).encode(b"TTT") is None
    path = crafted_model_file(str(tmp_path / "crafted.lzm"), model, tokenizer_json=beyond)
    result = run_cli("pack", str(tmp_path / "a.txt"), "-o", str(tmp_path / "a.lza"), "--codec", "lm", "--model", path)
    assert result.exit_code == 0, result.stderr
    assert "lm" not in api.info(str(tmp_path / "a.lza")).codecs
    assert run_cli("extract", str(tmp_path / "a.lza"), "-C", str(tmp_path / "x")).exit_code == 0
    assert (tmp_path / "x" / "a.txt").read_bytes() == PROSE
