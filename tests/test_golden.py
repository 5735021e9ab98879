"""Golden fixtures: archives checked into fixtures/ pin the format. They must keep reading back to the manifest
(whose hashes are sha256, computed independently of lza), and the store archive must regenerate byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import operator
import os
from pathlib import Path

import pytest

from lzarchive import api
from lzarchive.engine import registry
from lzarchive.format import constants as C

ROOT = os.path.join(os.path.dirname(__file__), "..")
FIXTURES = os.path.join(ROOT, "fixtures")
MANIFEST = json.loads(Path(FIXTURES, "manifest.json").read_text(encoding="utf-8"))


# the header flags a writer of each minor version from 2.5 sets with the lm codec's defaults: each adds one
WRITER_FLAGS = dict(enumerate(itertools.accumulate(
    (C.INCOMPAT_LM_MATCH | C.INCOMPAT_LM_SPAN | C.INCOMPAT_LM_BIAS | C.INCOMPAT_LM_BIAS_GROUP, C.INCOMPAT_LM_GROUP_MATCH,
     C.INCOMPAT_LM_STREAMS, C.INCOMPAT_LM_CACHE, C.INCOMPAT_LM_UTF16, C.INCOMPAT_LM_CRLF, C.INCOMPAT_LM_WINDOWS_1252,
     C.INCOMPAT_LM_CODE_PAGES),
    operator.or_), start=5))


def load_tool():
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(ROOT, "tools", "make_fixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_entries(name: str) -> list[dict]:
    return MANIFEST["trees"][MANIFEST["archives"][name]["tree"]]


def provide_model(name: str, tmp_path, monkeypatch) -> dict[str, str]:
    """The model a fixture names when it is not the default one, compiled from its weights into a private model cache;
    returns the environment that finds it (for subprocesses)."""
    model = MANIFEST["archives"][name].get("model")
    if model is None:
        return {}
    cache = str(tmp_path / "models")
    monkeypatch.setenv("LZA_MODEL_DIR", cache)
    registry.import_compiled(load_tool().model_file(model, str(tmp_path)))
    return {"LZA_MODEL_DIR": cache}


@pytest.mark.parametrize("name", sorted(MANIFEST["archives"]))
def test_fixture_reads_back_to_the_manifest(name, tmp_path, monkeypatch):
    provide_model(name, tmp_path, monkeypatch)
    path = os.path.join(FIXTURES, name)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == MANIFEST["archives"][name]["sha256"]
    # the extraction below decodes every chunk and checks it, as a full verify would: the lm fixtures, whose decoding
    # with the default model takes minutes on two cores, are decoded once (verify --full of lm archives: test_lm_*)
    assert api.verify(path, full=not api.info(path).models).ok
    api.extract(path, str(tmp_path))
    for row in expected_entries(name):
        full = tmp_path / row["path"]
        st = os.lstat(full)
        assert st.st_mtime_ns == row["mtime_ns"], row["path"]
        if "sha256" in row:
            assert hashlib.sha256(full.read_bytes()).hexdigest() == row["sha256"], row["path"]
            assert st.st_size == row["size"]
        if "mode" in row:
            assert st.st_mode & 0o7777 == row["mode"], row["path"]
        if "target" in row:
            assert os.readlink(full) == row["target"]
        if row["kind"] == "hardlink":
            assert os.path.samefile(full, tmp_path / row["target_path"])
    assert len(api.list_entries(path)) == len(expected_entries(name))


@pytest.mark.realmodel
def test_a_file_in_the_middle_of_an_lm_chunk_reads_alone():
    """A byte range of a file in the second window of its chunk reads the bytes the fixture was made from: decoding
    stops where the file ends, in the middle of the chunk (SPEC 6), and the file's hash checks what was decoded.
    Reading the whole of a file that ends mid-chunk takes the same path (test_lm_codec's
    test_reading_one_file_decodes_its_chunk_only_up_to_the_file, with the tiny model); the whole fixture is decoded
    in test_fixture_reads_back_to_the_manifest."""
    path = os.path.join(FIXTURES, "v2-lm-windows.lza")
    with api.open_archive(path) as reader:
        chunks = {e.path: [ref.chunk for ref in e.chunks] for e in reader.entries if e.chunks}
        assert len(reader.index.chunks) == 2
    assert chunks["story/d-long.txt"] == chunks["story/e-closing.txt"] == [1]  # d is followed by e in its chunk
    long = next(data for name, _, data, _ in load_tool().WINDOWS_TREE if name == "story/d-long.txt")
    assert b"".join(api.cat(path, "story/d-long.txt", start=4000, end=4400)) == long[4000:4400]


@pytest.mark.realmodel
def test_a_file_in_a_primed_chunk_reads_alone():
    """The last file of v2.1-lm-primer lies in chunk 3, whose windows start from the first 80 tokens of chunk 0:
    reading it alone decodes that primer first, then its own chunk."""
    path = os.path.join(FIXTURES, "v2.1-lm-primer.lza")
    rows = {row["path"]: row for row in expected_entries("v2.1-lm-primer.lza")}
    with api.open_archive(path) as reader:
        assert [e.chunks[0].chunk for e in reader.entries if e.path == "letters/third.txt"] == [3]
        assert api.info(path).version == "2.1"
    third = b"".join(api.cat(path, "letters/third.txt"))
    assert hashlib.sha256(third).hexdigest() == rows["letters/third.txt"]["sha256"]


@pytest.mark.realmodel
def test_the_match_fixture_mixes_where_it_pays_and_its_chunks_read_alone():
    """v2.2-lm-match: both chunks of log lines take the match model and the chunk of prose does not (SPEC 9.8); a
    byte range in the second log chunk reads alone (its primer first), stopping where the range ends."""
    path = os.path.join(FIXTURES, "v2.2-lm-match.lza")
    with api.open_archive(path) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (2, C.INCOMPAT_LM_PRIMER | C.INCOMPAT_LM_MATCH)
        # model, window, overlap, primer chunk + 1, primer tokens, then the adaptive field: one byte each here
        heads = [reader.read_stored(chunk)[1][:6] for chunk in range(3)]
    assert heads == [bytes([0, 64, 16, 1, 24, adaptive]) for adaptive in (1, 1, 0)]
    log = next(data for path, _, data, _ in load_tool().trees()["match"] if path == "var/dpkg.log")
    assert b"".join(api.cat(path, "var/dpkg.log", start=600, end=800)) == log[600:800]


@pytest.mark.realmodel
def test_the_span_fixture_slides_and_its_chunks_read_alone():
    """v2.3-lm-span: every payload names the span (40, after the adaptive field) in windows of 160 after a primer of
    16 tokens; the log chunks hold over 300 tokens, so their windows restart and their caches slide. A byte range of
    the second chunk reads alone (the primer first), stopping where the range ends."""
    path = os.path.join(FIXTURES, "v2.3-lm-span.lza")
    with api.open_archive(path) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (3, C.INCOMPAT_LM_PRIMER | C.INCOMPAT_LM_MATCH
                                                                      | C.INCOMPAT_LM_SPAN)
        # model, window (two varint bytes), overlap, primer chunk + 1, primer tokens, adaptive, span, token count
        heads = [reader.read_stored(chunk)[1][:9] for chunk in range(3)]
    assert [head[:8] for head in heads] == [bytes([0, 0xA0, 0x01, 40, 1, 16, adaptive, 40]) for adaptive in (1, 1, 0)]
    assert [head[8] for head in heads[:2]] == [0xC1, 0xC6]  # 321 and 326 tokens: varints of two bytes
    log = next(data for path, _, data, _ in load_tool().trees()["span"] if path == "logs/dpkg.log")
    assert b"".join(api.cat(path, "logs/dpkg.log", start=700, end=900)) == log[700:900]


@pytest.mark.realmodel
def test_the_bias_fixture_learns_where_it_pays_and_its_chunks_read_alone():
    """v2.4-lm-bias: the bias head with the match model in the first two chunks (the ledger's start in the primer
    chunk, whose state learns from its primer tokens first; the ledger's end and log lines) and alone in the third
    (sentences of a few words), in lockstep, with the span of 40 in windows of 160 after a primer of 16 tokens. A
    byte range of the second chunk reads alone (the primer first), stopping where the range ends."""
    path = os.path.join(FIXTURES, "v2.4-lm-bias.lza")
    with api.open_archive(path) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (4, C.INCOMPAT_LM_PRIMER | C.INCOMPAT_LM_MATCH
                                                                      | C.INCOMPAT_LM_SPAN | C.INCOMPAT_LM_BIAS)
        # model, window (two varint bytes), overlap, primer chunk + 1, primer tokens, adaptive, span
        heads = [reader.read_stored(chunk)[1][:8] for chunk in range(3)]
    assert heads == [bytes([0, 0xA0, 0x01, 40, 1, 16, adaptive, 40]) for adaptive in (3, 3, 2)]
    ledger = next(data for path, _, data, _ in load_tool().trees()["bias"] if path == "books/ledger.txt")
    assert b"".join(api.cat(path, "books/ledger.txt", start=530, end=600)) == ledger[530:600]


@pytest.mark.realmodel
def test_the_bias_group_fixture_shares_its_head_and_its_chunks_read_alone():
    """v2.5-lm-bias-group: the ledger's four chunks share one bias head (with the match model), the chunk of words
    has its own (SPEC 9.10), in lockstep, with the span of 40 in windows of 160 (200 tokens a chunk: windows restart).
    A byte range of the ledger's third chunk reads alone (its group's chunks decoded as far as it needs), and so does
    the chunk of words."""
    path = os.path.join(FIXTURES, "v2.5-lm-bias-group.lza")
    with api.open_archive(path) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (5, WRITER_FLAGS[5])
        # model, window (two varint bytes), overlap, adaptive, then G and F where G is not 0, then the span
        heads = [reader.read_stored(chunk)[1][:8] for chunk in range(5)]
    assert heads[:4] == [bytes([0, 0xA0, 0x01, 40, 3, 4, 0, 40])] * 4
    assert heads[4][:7] == bytes([0, 0xA0, 0x01, 40, 2, 0, 40])
    tree = dict((path, data) for path, _, data, _ in load_tool().trees()["group"])
    assert b"".join(api.cat(path, "ledgers/accounts.txt", start=1100, end=1200)) == tree["ledgers/accounts.txt"][1100:1200]
    assert b"".join(api.cat(path, "ledgers/words.txt")) == tree["ledgers/words.txt"]


@pytest.mark.realmodel
def test_the_group_match_fixture_guesses_across_its_group():
    """v2.6-lm-group-match: a ledger and log lines in one run of six chunks, one bias group whose match model guesses
    from all six (SPEC 9.11), with the match model in every chunk; escapes. Byte ranges read alone."""
    path = os.path.join(FIXTURES, "v2.6-lm-group-match.lza")
    with api.open_archive(path) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (6, WRITER_FLAGS[6])
        # model, window (two varint bytes), overlap, adaptive, G and F, then the span
        heads = [reader.read_stored(chunk)[1][:8] for chunk in range(6)]
    assert heads == [bytes([0, 0xA0, 0x01, 40, 3, 6, 0, 40])] * 6
    tree = dict((path, data) for path, _, data, _ in load_tool().trees()["group-match"])
    assert b"".join(api.cat(path, "logs/dpkg.log", start=1500, end=1600)) == tree["logs/dpkg.log"][1500:1600]
    assert b"".join(api.cat(path, "logs/accounts.txt", start=0, end=50)) == tree["logs/accounts.txt"][:50]


@pytest.mark.realmodel
def test_the_streams_fixture_holds_each_group_in_one_chunk():
    """v2.7-lm-streams: log lines in a run of three chunks of 512 bytes, then sentences and a ledger in a run of four
    (escapes): each group one chunk of its streams (SPEC 9.12), the two decoded in lockstep. Byte ranges read alone,
    from the middle of a chunk's later streams."""
    path = os.path.join(FIXTURES, "v2.7-lm-streams.lza")
    with api.open_archive(path) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (7, WRITER_FLAGS[7])
        assert [chunk.raw_size for chunk in reader.index.chunks] == [1200, 1600]
        # model, window (two varint bytes), overlap, adaptive (the bias head and the match model), G, the span
        heads = [reader.read_stored(chunk)[1][:7] for chunk in range(2)]
    assert heads == [bytes([0, 0xA0, 0x01, 40, 3, 3, 40]), bytes([0, 0xA0, 0x01, 40, 3, 4, 40])]
    tree = dict((path, data) for path, _, data, _ in load_tool().trees()["streams"])
    assert b"".join(api.cat(path, "streams/a-dpkg.log", start=900, end=1000)) == tree["streams/a-dpkg.log"][900:1000]
    assert b"".join(api.cat(path, "streams/c-ledger.txt", start=700, end=800)) == tree["streams/c-ledger.txt"][700:800]
    assert b"".join(api.cat(path, "streams/b-words.txt")) == tree["streams/b-words.txt"]


@pytest.mark.realmodel
def test_the_cache_fixture_mixes_the_neural_cache_into_a_group_and_a_chunk_alone():
    """v2.8-lm-cache: a ledger in a run of three chunks of 512 bytes (one chunk of three streams, escapes) and log
    lines in a chunk of their own, each with the neural cache (SPEC 9.13), decoded in lockstep. Byte ranges read
    alone, from a later stream."""
    path = os.path.join(FIXTURES, "v2.8-lm-cache.lza")
    with api.open_archive(path) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (8, WRITER_FLAGS[8])
        assert [chunk.raw_size for chunk in reader.index.chunks] == [1536, 500]
        # model, window (two varint bytes), overlap, adaptive (the match model, the bias head, the neural cache), G
        heads = [reader.read_stored(chunk)[1][:6] for chunk in range(2)]
    assert heads == [bytes([0, 0xA0, 0x01, 40, 7, 3]), bytes([0, 0xA0, 0x01, 40, 7, 0])]
    tree = dict((path, data) for path, _, data, _ in load_tool().trees()["cache"])
    assert b"".join(api.cat(path, "cache/a-ledger.txt", start=1100, end=1200)) == tree["cache/a-ledger.txt"][1100:1200]
    assert b"".join(api.cat(path, "cache/b-dpkg.log")) == tree["cache/b-dpkg.log"]


def text_form_fixture(name: str, minor: int, raw_sizes: list[int]) -> tuple[str, list[bytes], dict[str, bytes]]:
    """A fixture of the lm text forms (SPEC 9.14), three chunks decoded in lockstep: its path, once its header is
    checked to carry the flags of the writer at `minor` and its chunks to hold `raw_sizes` bytes; each chunk's first 8
    payload bytes (model, window (two varint bytes), overlap, adaptive, G where the bias head is on, the span, the
    text form); and the files it was packed from, by path."""
    path = os.path.join(FIXTURES, name)
    with api.open_archive(path) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (minor, WRITER_FLAGS[minor])
        assert [chunk.raw_size for chunk in reader.index.chunks] == raw_sizes
        heads = [reader.read_stored(chunk)[1][:8] for chunk in range(len(raw_sizes))]
    return path, heads, {path: data for path, _, data, _ in load_tool().trees()[MANIFEST["archives"][name]["tree"]]}


@pytest.mark.realmodel
def test_the_utf16_fixture_codes_utf16_text_as_its_utf8_form():
    """v2.9-lm-utf16: prose as UTF-16LE (a byte order mark, accents, a surrogate pair) in a run of three chunks of 512
    bytes (one chunk of three streams, each in text form 1), a few words as UTF-16BE (form 2) and log lines as they
    are (form 0), decoded in lockstep (SPEC 9.14). Byte ranges read alone, across the surrogate pair and from a later
    stream."""
    path, heads, tree = text_form_fixture("v2.9-lm-utf16.lza", 9, [1352, 400, 300])
    # adaptive: the bias head and the neural cache, then none (no G)
    assert heads[0] == bytes([0, 0xA0, 0x01, 40, 6, 3, 40, 1])
    assert heads[1][:7] == bytes([0, 0xA0, 0x01, 40, 0, 40, 2])
    assert heads[2] == bytes([0, 0xA0, 0x01, 40, 6, 0, 40, 0])
    assert b"".join(api.cat(path, "utf16/a-le.txt", start=601, end=701)) == tree["utf16/a-le.txt"][601:701]
    assert b"".join(api.cat(path, "utf16/a-le.txt", start=1100, end=1200)) == tree["utf16/a-le.txt"][1100:1200]
    assert b"".join(api.cat(path, "utf16/b-be.txt", start=3, end=9)) == tree["utf16/b-be.txt"][3:9]


@pytest.mark.realmodel
def test_the_crlf_fixture_codes_cr_lf_line_ends_as_lf():
    """v2.10-lm-crlf: prose with CR LF line ends and a lone CR in a run of three chunks of 512 bytes (one chunk of three
    streams, each in text form 4), a few words with CR LF as UTF-16LE (form 5) and log lines with LF (form 0), decoded
    in lockstep (SPEC 9.14). Byte ranges read alone, from a later stream and across CR LF line ends."""
    path, heads, tree = text_form_fixture("v2.10-lm-crlf.lza", 10, [1347, 406, 300])
    # adaptive: the bias head and the neural cache, with the match model for the log
    assert heads == [bytes([0, 0xA0, 0x01, 40, 6, 3, 40, 4]), bytes([0, 0xA0, 0x01, 40, 6, 0, 40, 5]),
                     bytes([0, 0xA0, 0x01, 40, 7, 0, 40, 0])]
    dos = tree["crlf/a-dos.txt"]
    assert dos.count(b"\r\n") == dos.count(b"\n") > 3 and b"%\rCopying" in dos
    for start, end in ((0, 1347), (600, 700), (1290, 1347)):
        assert b"".join(api.cat(path, "crlf/a-dos.txt", start=start, end=end)) == dos[start:end]
    assert b"".join(api.cat(path, "crlf/b-le.txt", start=3, end=99)) == tree["crlf/b-le.txt"][3:99]


@pytest.mark.realmodel
def test_the_windows_1252_fixture_codes_8_bit_text_as_utf8():
    """v2.11-lm-windows1252: Latin-1 prose in a run of three chunks of 512 bytes, the middle one ASCII (one chunk of
    three streams, each in text form 3), windows-1252 text with CR LF, curly quotes and the euro sign (form 7) and
    UTF-8 text (form 0), decoded in lockstep (SPEC 9.14). Byte ranges read alone, from a later stream and across
    accents."""
    path, heads, tree = text_form_fixture("v2.11-lm-windows1252.lza", 11, [1400, 307, 346])
    # adaptive: the bias head and the neural cache
    assert heads == [bytes([0, 0xA0, 0x01, 40, 6, 3, 40, 3]), bytes([0, 0xA0, 0x01, 40, 6, 0, 40, 7]),
                     bytes([0, 0xA0, 0x01, 40, 6, 0, 40, 0])]
    latin, dos = tree["latin1/a-latin1.txt"], tree["latin1/b-dos.txt"]
    assert latin[512:1024].isascii() and not latin[:512].isascii() and b"\x80" in dos and b"\r\n" in dos
    for start, end in ((0, 1400), (500, 530), (1100, 1400)):
        assert b"".join(api.cat(path, "latin1/a-latin1.txt", start=start, end=end)) == latin[start:end]
    assert b"".join(api.cat(path, "latin1/b-dos.txt", start=3, end=99)) == dos[3:99]


@pytest.mark.realmodel
def test_the_code_pages_fixture_codes_cyrillic_and_greek_8_bit_text_as_utf8():
    """v2.12-lm-code-pages: Russian in windows-1251 in a run of two chunks of 512 bytes (one chunk of two streams, text
    form 8), Russian in KOI8-R with CR LF (form 13), Greek in ISO-8859-7 (form 11) and Russian in IBM866 with
    box-drawing signs (form 10), decoded in lockstep (SPEC 9.14): the default model's tokens chose each code page.
    Byte ranges read alone, across the two streams and across CR LF (the whole files: the manifest test)."""
    path, heads, tree = text_form_fixture("v2.12-lm-code-pages.lza", 12, [900, 310, 300, 295])
    # adaptive: the match model, the bias head and the neural cache (the last chunk without the match model)
    assert heads == [bytes([0, 0xA0, 0x01, 40, 7, 2, 40, 8]), bytes([0, 0xA0, 0x01, 40, 7, 0, 40, 13]),
                     bytes([0, 0xA0, 0x01, 40, 7, 0, 40, 11]), bytes([0, 0xA0, 0x01, 40, 6, 0, 40, 10])]
    russian = tree["pages/a-cp1251.txt"]
    assert russian.decode("cp1251").count("и") > 10 and b"\r\n" in tree["pages/b-koi8.txt"]
    assert b"".join(api.cat(path, "pages/a-cp1251.txt", start=505, end=531)) == russian[505:531]
    assert b"".join(api.cat(path, "pages/b-koi8.txt", start=3, end=99)) == tree["pages/b-koi8.txt"][3:99]


@pytest.mark.parametrize("name", ["v1-store.lza", "v2-store.lza", "v2-gpt2.lza"] + [
    pytest.param(name, marks=pytest.mark.realmodel)
    for name in ("v1-lm.lza", "v2-lm.lza", "v2-lm-windows.lza", "v2.1-lm-primer.lza", "v2.2-lm-match.lza",
                 "v2.3-lm-span.lza", "v2.4-lm-bias.lza", "v2.5-lm-bias-group.lza", "v2.6-lm-group-match.lza",
                 "v2.7-lm-streams.lza", "v2.8-lm-cache.lza", "v2.9-lm-utf16.lza", "v2.10-lm-crlf.lza",
                 "v2.11-lm-windows1252.lza", "v2.12-lm-code-pages.lza")])
def test_fixture_regenerates_byte_for_byte(name, tmp_path, monkeypatch):
    """None depends on the zstd library's output; the lm ones pin the exact engine, the default model's and GPT-2's."""
    provide_model(name, tmp_path, monkeypatch)
    fresh = tmp_path / name
    load_tool().build(name, str(fresh))
    assert fresh.read_bytes() == Path(FIXTURES, name).read_bytes(), (
        "the writer's or the engine's bytes changed: that is a format change (bump the version in SPEC.md)"
    )


def test_manifest_matches_the_tool():
    tool = load_tool().manifest()
    assert tool["trees"] == MANIFEST["trees"]
    assert {name: row["tree"] for name, row in tool["archives"].items()} == \
           {name: row["tree"] for name, row in MANIFEST["archives"].items()}


# v1-lm and v2-lm give the model the same work (one tree, chunking and window in two container formats), so the rows
# decode v2-lm alone; the bias fixture holds a primer, the match model and a span too, so it stands for the match and
# span fixtures, and the group match fixture adds the shared head's updates (rows named more than once) and the
# group's match finder (compiled loops too), as the bias group fixture does the former; the float64
# products change only the integer products, whose shapes the bias fixture shares with the primer fixture (windows
# after a primer). tools/crossplatform.py decodes every fixture in every row.
EVERY_MODEL_PATH = ["v2-lm.lza", "v2.1-lm-primer.lza", "v2.4-lm-bias.lza", "v2.6-lm-group-match.lza", "v2.8-lm-cache.lza",
                    "v2-gpt2.lza"]


@pytest.mark.realmodel
@pytest.mark.parametrize("env, names", [
    ({"ATEN_CPU_CAPABILITY": "default", "NUMBA_CPU_NAME": "generic"}, EVERY_MODEL_PATH),
    ({"LZA_KERNELS": "torch"}, EVERY_MODEL_PATH),
    ({"LZA_INT8_GEMM": "off"}, ["v2-lm.lza", "v2.1-lm-primer.lza", "v2.8-lm-cache.lza", "v2-gpt2.lza"]),
], ids=["generic-cpu", "torch-ops", "float64-products"])
def test_lm_fixtures_decode_under_other_kernels(env, names, tmp_path, monkeypatch):
    """The cross-platform proof's rows that run anywhere (tools/crossplatform.py): torch's generic kernels with numba
    built for a generic CPU, the torch operations instead of the compiled loops, the float64 products instead of the
    int8 GEMM. Each row in a process of its own (the switches are read when torch and numba start), which extracts
    its fixtures one after another; every file compared with the manifest."""
    import subprocess
    import sys

    usual = {"LZA_MODEL_DIR": os.environ["LZA_MODEL_DIR"]} if "LZA_MODEL_DIR" in os.environ else {}
    jobs = [(os.path.join(FIXTURES, name), str(tmp_path / name), provide_model(name, tmp_path, monkeypatch) or usual)
            for name in names]
    script = ("import json, os, sys\nfrom lzarchive import api\n"
              "for archive, out, model_env in json.loads(sys.argv[1]):\n"
              "    os.environ.pop('LZA_MODEL_DIR', None)\n    os.environ.update(model_env)\n"
              "    api.extract(archive, out)\n")
    result = subprocess.run([sys.executable, "-c", script, json.dumps(jobs)], env={**os.environ, **env},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in names:
        for row in expected_entries(name):
            if "sha256" in row:
                assert hashlib.sha256((tmp_path / name / row["path"]).read_bytes()).hexdigest() == row["sha256"], \
                    (name, row["path"])
