"""Hostile lm chunks (with the tiny model): damage the codec itself must find, payloads crafted to run the model
for days, and archives this lza cannot decode; each gives its documented exit code and names the chunk. And the
fuzzer of crafted payloads (tools/fuzz_lm.py) reports a reader that lets an exception out."""

from __future__ import annotations

from pathlib import Path

import pytest

from lzarchive.engine.model import ExactModel
from lzarchive.errors import EXIT_INTEGRITY
from lzarchive.format.records import Header
from lzarchive.format.wire import read_varint, varint

from ..conftest import entries_and_chunks, lm_archive, run_cli
from .craft import craft2


@pytest.mark.parametrize("damage", ["flipped", "truncated", "extended", "cut-header"])
def test_damaged_lm_payloads_are_reported_with_their_chunk(lm_files, damage, tmp_path):
    """The stored-bytes checksum is right (the damage is sealed in), so the lm codec itself must find it."""
    codec, files, payloads = lm_files
    good = payloads[1]  # four one-byte varints (model, window, overlap, tokens), then the range coder's bytes
    bad = {"flipped": good[:4] + bytes([good[4] ^ 0x10]) + good[5:], "truncated": good[: 4 + (len(good) - 4) // 2],
           "extended": good + b"\xa5" * 40, "cut-header": good[:2]}[damage]
    archive = tmp_path / "damaged.lza"
    archive.write_bytes(lm_archive(codec, files, [payloads[0], bad]))
    result = run_cli("verify", str(archive))
    assert result.exit_code == EXIT_INTEGRITY and "chunk 1" in result.stderr and "b.txt" in result.stderr, result.stderr
    assert "a.txt" not in result.stderr
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "x"), "-q")
    assert result.exit_code == EXIT_INTEGRITY and "chunk 1" in result.stderr
    assert not (tmp_path / "x" / "b.txt").exists()
    assert run_cli("cat", str(archive), "a.txt").stdout == files["a.txt"]
    result = run_cli("cat", str(archive), "b.txt")
    assert result.exit_code == EXIT_INTEGRITY and result.stdout == b""


def test_a_chunk_failing_on_its_first_token_leaves_the_others_decoding(lm_files):
    """Three chunks in lockstep, the middle one's range coder stream failing before its first token: it alone fails
    (its row, which stays until half the rows are done, has no token to feed the model)."""
    from lzarchive.codecs import CodecError

    codec, files, payloads = lm_files
    texts = [files["a.txt"], files["b.txt"], files["a.txt"]]
    bad = payloads[1][:4] + b"\xff" * 9 + b"\x01" + payloads[1][5:]
    results = codec.decode_batch([payloads[0], bad, payloads[0]], [len(t) for t in texts])
    assert results[0] == results[2] == texts[0] and isinstance(results[1], CodecError)


def test_an_lm_token_bomb_stops_at_the_end_of_its_payload(lm_files, tmp_path, monkeypatch):
    """A chunk declaring a million tokens with an empty coder payload: decoding zeros past the end is damage, found
    within a few steps (not a million model steps)."""
    codec, _, _ = lm_files
    raw = b"x" * (1 << 20)
    bomb = varint(0) + varint(32) + varint(8) + varint(len(raw))
    archive = tmp_path / "bomb.lza"
    archive.write_bytes(lm_archive(codec, {"bomb.txt": raw}, [bomb]))
    steps = []
    forward = ExactModel.forward

    def counted(self, *args):
        steps.append(1)
        assert len(steps) < 1000, "the decoder runs on past the end of its payload"
        return forward(self, *args)

    monkeypatch.setattr(ExactModel, "forward", counted)
    for command in (["verify", str(archive)], ["extract", str(archive), "-C", str(tmp_path / "x")],
                    ["cat", str(archive), "bomb.txt"]):
        result = run_cli(*command)
        assert result.exit_code == EXIT_INTEGRITY and "past the end" in result.stderr, (command, result.stderr)
    assert len(steps) < 3 * 40


@pytest.mark.parametrize("header", ["two-models", "other-numerics", "other-architecture"])
def test_archives_this_lza_cannot_decode_are_unsupported_not_damaged(lm_files, header, tmp_path):
    """SPEC allows up to 16 models; this lza decodes lm chunks of archives with one, in its own numerics and of an
    architecture it runs: others exit 11 (unsupported), while everything that needs no model still works."""
    import dataclasses
    import os

    from lzarchive.engine import compiler, registry
    from lzarchive.errors import EXIT_UNSUPPORTED

    from ..tiny import crafted_model_file, tiny_model

    codec, files, payloads = lm_files
    ref = codec.model_ref
    expected = {"two-models": "2 models", "other-numerics": "lza-int-v9", "other-architecture": "architecture 'gpt3'"}
    if header == "other-architecture":  # a known profile, a model file (found by its hash) naming another architecture
        path = crafted_model_file(str(tmp_path / "gpt3.lzm"), tiny_model(), architecture="gpt3")
        model_hash = compiler.file_hash(path)
        os.replace(path, os.path.join(registry.cache_dir(), model_hash.hex() + ".lzm"))
        ref = dataclasses.replace(ref, model_hash=model_hash)
    models = {"two-models": (ref, ref), "other-numerics": (dataclasses.replace(ref, numerics="lza-int-v9"),),
              "other-architecture": (ref,)}[header]
    archive = tmp_path / "a.lza"
    archive.write_bytes(craft2(*entries_and_chunks(files, payloads), header=Header(models=models).to_wire()))
    assert run_cli("list", str(archive)).exit_code == 0 and run_cli("verify", "--quick", str(archive)).exit_code == 0
    for command in (["verify", str(archive)], ["extract", str(archive), "-C", str(tmp_path / "x")],
                    ["cat", str(archive), "a.txt"]):
        result = run_cli(*command)
        assert result.exit_code == EXIT_UNSUPPORTED, (command, result.stderr)
        assert expected[header] in result.stderr


def test_the_fuzzer_reports_a_reader_that_lets_an_exception_out(tiny_path, private_model_cache, tmp_path, monkeypatch):
    """tools/fuzz_lm.py (crafted payloads for hours, run by hand): this reader passes one tree's 8 crafted archives;
    one whose payload header lets a ValueError out where a varint is cut is reported for each command it broke."""
    import collections
    import importlib.util

    from lzarchive.codecs import lm

    spec = importlib.util.spec_from_file_location("fuzz_lm", Path(__file__).parents[2] / "tools" / "fuzz_lm.py")
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    tally = collections.Counter()
    assert fuzz.fuzz_seed(6, 8, str(tmp_path / "clean"), tiny_path, tally) == []
    assert sum(tally.values()) == 8 and set(tally) <= {0, EXIT_INTEGRITY}
    monkeypatch.setattr(lm, "_read_varint", read_varint)  # a cut varint's ValueError no longer becomes damage
    problems = fuzz.fuzz_seed(6, 8, str(tmp_path / "planted"), tiny_path, collections.Counter())
    assert problems and all("raised:" in problem and "ValueError" in problem for problem in problems)
    assert {command for command in ("verify", "extract", "cat") if any(f"{command} " in p for p in problems)} == {
        "verify", "extract", "cat"}
