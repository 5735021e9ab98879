"""lza salvage: the chunks of an archive whose index is damaged or gone, found by scanning (SPEC 3.3), decoded and
checked; their bytes in order, never one that was not packed, and each loss reported where it belongs."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from lzarchive import api
from lzarchive.errors import EXIT_INTEGRITY, EXIT_MODEL, EXIT_NOT_ARCHIVE, IntegrityError
from lzarchive.format.constants import FOOTER_SIZES

from .conftest import run_cli
from .test_golden import FIXTURES, provide_model

SOURCE_FILES = {
    "alpha.txt": b"alpha " * 200,
    "beta.bin": random.Random(1).randbytes(1500),
    "sub/gamma.txt": b"gamma\n" * 300,
    "sub/empty": b"",
}


def stream_of(archive: str) -> bytes:
    """The files' contents, one after another in the archive's order: what salvage gives back of a whole archive."""
    return b"".join(b"".join(api.cat(archive, e.path)) for e in api.list_entries(archive) if e.type is api.EntryType.FILE)


def chunk_spans(archive: str) -> list[tuple[int, int, int, int]]:
    """Each chunk's (start, end) in the archive and in the stream of its plaintexts."""
    spans, at = [], 0
    with api.open_archive(archive) as reader:
        for chunk in reader.index.chunks:
            spans.append((chunk.offset, chunk.end, at, at + chunk.raw_size))
            at += chunk.raw_size
    return spans


@pytest.fixture(scope="module", params=[2, 1], ids=["format2", "format1"])
def small_archive(tmp_path_factory, request):
    """An archive of several chunks of both codecs, a symlink and an empty directory, in each format."""
    root = tmp_path_factory.mktemp("src")
    for rel, data in SOURCE_FILES.items():
        (root / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "tree" / rel).write_bytes(data)
    (root / "tree" / "emptydir").mkdir()
    os.symlink("alpha.txt", root / "tree" / "link")
    archive = str(root / "small.lza")
    api.pack([str(root / "tree")], archive, codec="zstd", chunk_size=500, format_version=request.param)
    with api.open_archive(archive) as reader:
        assert len({c.codec for c in reader.index.chunks}) == 2 and len(reader.index.chunks) > 6
    return archive


def salvaged(data: bytes, tmp_path, name: str = "damaged.lza", *options: str):
    archive, out = tmp_path / name, tmp_path / (name + ".bin")
    archive.write_bytes(data)
    out.unlink(missing_ok=True)
    result = run_cli("salvage", str(archive), "-o", str(out), *options)
    return result, (out.read_bytes() if out.exists() else None)


@pytest.mark.parametrize("name", ["v1-store.lza", "v1-zstd.lza", "v2-store.lza", "v2-zstd.lza", "v2-gpt2.lza"])
def test_a_whole_archive_gives_its_files_contents_in_order(name, tmp_path, monkeypatch):
    provide_model(name, tmp_path, monkeypatch)
    path = os.path.join(FIXTURES, name)
    result = run_cli("salvage", path, "-o", str(tmp_path / "out.bin"))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out.bin").read_bytes() == stream_of(path)
    assert "its index is whole: lza extract gets every file that is not damaged back" in result.stderr


def test_an_archive_cut_anywhere_gives_every_chunk_before_the_cut(small_archive, tmp_path):
    data = Path(small_archive).read_bytes()
    stream, spans = stream_of(small_archive), chunk_spans(small_archive)
    header_end = spans[0][0]
    for length in range(header_end, len(data), 7):
        result, out = salvaged(data[:length], tmp_path)
        whole = [span for span in spans if span[1] <= length]
        assert result.exit_code == EXIT_INTEGRITY, (length, result.stderr)
        assert out == stream[: whole[-1][3] if whole else 0], length
        cut = length > (whole[-1][1] if whole else header_end)
        assert ("hold no chunk that can be read (a chunk cut short, or the index)" in result.stderr) == cut, length
    result, out = salvaged(data[: header_end - 1], tmp_path, "headless.lza")  # the header cut: nothing can be read
    assert result.exit_code == EXIT_INTEGRITY and out is None and "truncated archive" in result.stderr


def test_a_damaged_index_or_footer_costs_nothing(small_archive, tmp_path):
    data = Path(small_archive).read_bytes()
    chunks_end = chunk_spans(small_archive)[-1][1]
    footer = len(data) - FOOTER_SIZES[int(api.info(small_archive).version[0])]  # its first field: where the index is
    for position in (chunks_end, (chunks_end + len(data)) // 2, footer, len(data) - 1):
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        result, out = salvaged(bytes(damaged), tmp_path)
        assert result.exit_code == EXIT_INTEGRITY and out == stream_of(small_archive), (position, result.stderr)
        assert "its index is whole" not in result.stderr


def test_every_flip_costs_one_chunk_at_most_and_writes_no_wrong_byte(small_archive, tmp_path):
    """With the index cut off too, so that only the scan finds the chunks: each flip in a chunk costs that chunk's
    bytes and no other's, reported where they belong; one in the header leaves nothing to read."""
    data = Path(small_archive).read_bytes()
    stream, spans = stream_of(small_archive), chunk_spans(small_archive)
    cut = data[: spans[-1][1]]
    for position in range(0, len(cut), 5):
        damaged = bytearray(cut)
        damaged[position] ^= 0x10
        result, out = salvaged(bytes(damaged), tmp_path, "flipped.lza", "--json")
        if position < spans[0][0]:  # damaged, or (its magic) no lza archive
            assert result.exit_code in (EXIT_INTEGRITY, EXIT_NOT_ARCHIVE) and out is None, position
            continue
        assert result.exit_code == EXIT_INTEGRITY, position
        [(start, end, lo, hi)] = [span for span in spans if span[0] <= position < span[1]]
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert out in (stream, stream[:lo] + stream[hi:]), position  # a flip nothing reads (a stored check's bit) costs nothing
        if out != stream:  # reported where its bytes belong (their count is its header's, which may be the damage)
            [record] = records[:-1]
            assert record["type"] == "missing" and record["output_offset"] == lo or \
                   (record["type"], record["start"], record["end"], record["output_offset"]) == ("gap", start, end, lo), \
                   (position, records)


def test_a_chunk_whose_header_is_lost_is_a_gap_and_the_chunks_after_it_are_found(small_archive, tmp_path):
    data = Path(small_archive).read_bytes()
    stream, spans = stream_of(small_archive), chunk_spans(small_archive)
    start, end, lo, hi = spans[3]
    damaged = data[:start] + b"\xff" * 4 + data[start + 4 : spans[-1][1]]  # its magic gone, and the index
    result, out = salvaged(damaged, tmp_path, "lost.lza", "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == EXIT_INTEGRITY and out == stream[:lo] + stream[hi:]
    assert records[0] == {"schema": records[0]["schema"], "type": "gap", "start": start, "end": end, "output_offset": lo,
                          "searched": True}
    assert records[-1]["chunks"] == len(spans) - 1 and records[-1]["index_whole"] is False


@pytest.mark.parametrize("named, lost", [({"primer": 16, "bias_group": 1}, 4),
                                         ({"primer": 0, "bias_group": 2, "format_version": "2.6"}, 2)],
                         ids=["primer", "bias-group"])
def test_lm_chunks_that_name_others_are_salvaged(named, lost, tiny_path, tmp_path, monkeypatch):
    """Chunks that name others (the primer; a bias group's first chunk, format 2.6) decode where those were found in
    their places; a chunk lost to a cut takes only its own bytes, a damaged one those of the chunks that need it."""
    src = tmp_path / "src"
    src.mkdir()
    text = b"".join(b"the quick brown fox %d jumps over the lazy dog\n" % i for i in range(60))
    (src / "fox.txt").write_bytes(text)
    archive = str(tmp_path / "a.lza")
    api.pack([str(src)], archive, codec="lm", model=tiny_path, chunk_size=256, window=64, **named)
    spans = chunk_spans(archive)
    assert len(spans) > 4
    data = Path(archive).read_bytes()
    result, out = salvaged(data[: spans[3][1] + 5], tmp_path, "lm.lza")
    assert result.exit_code == EXIT_INTEGRITY and out == text[: spans[3][3]], result.stderr
    damaged = bytearray(data[: spans[3][1]])
    damaged[spans[0][1] - 1] ^= 1  # the first chunk's payload: the primer, or the group's first chunk
    result, out = salvaged(bytes(damaged), tmp_path, "lm.lza", "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["type"], r["chunk"]) for r in records[:-1]] == [("missing", i) for i in range(lost)], records
    assert out == text[spans[lost - 1][3] : spans[3][3]] and "chunk 0" in records[1]["reason"], records
    monkeypatch.setenv("LZA_MODEL_DIR", str(tmp_path / "no models"))  # exit 12 naming the model, and no output
    result, out = salvaged(data[: spans[3][1]], tmp_path, "no-model.lza")
    assert result.exit_code == EXIT_MODEL and "this archive needs model" in result.stderr and out is None


def test_a_chunk_of_a_codec_this_lza_does_not_know_is_reported_and_the_others_salvaged(tmp_path):
    from .adversarial.craft import craft2, file_row

    data = b"first" + b"later codec" + b"last"
    archive = craft2([file_row("f", data)], [b"first", (9, b"later codec", b"later codec"), b"last"])
    result, out = salvaged(archive[:-20], tmp_path, "later.lza", "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == EXIT_INTEGRITY and out == b"firstlast", result.stderr
    assert (records[0]["type"], records[0]["chunk"], records[0]["output_offset"]) == ("missing", 1, 5)
    assert "chunk codec unknown(9) is not supported by this version of lza" in records[0]["reason"], records


def test_bytes_crafted_to_be_chunk_magics_everywhere_cost_a_bounded_search(small_archive, tmp_path):
    """Each magic the search meets claims a chunk of about 1 MB to hash: 40,000 of them would be 40 GB. The search
    gives up once it has hashed 64 times the bytes it searches, and says so."""
    from lzarchive.format.wire import varint

    data = Path(small_archive).read_bytes()
    false_start = b"LC\x01" + varint(1_000_000) * 2 + b"\0" * 16 if api.info(small_archive).version[0] == "2" else \
        b"LZAC\x01\0\0\0" + (1_000_000).to_bytes(4, "little") * 2 + b"\0" * 64
    header_end = chunk_spans(small_archive)[0][0]
    crafted = data[:header_end] + b"?" + false_start * (2_000_000 // len(false_start))
    result, out = salvaged(crafted, tmp_path, "magics.lza", "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == EXIT_INTEGRITY and out == b""
    assert [(r["type"], r["start"], r["end"], r["searched"]) for r in records[:-1]] == \
           [("gap", header_end, len(crafted), False)], records


def test_salvage_refuses_to_write_over_the_archive_or_an_existing_file(small_archive, tmp_path):
    archive = tmp_path / "a.lza"
    archive.write_bytes(Path(small_archive).read_bytes())
    (tmp_path / "there.bin").write_bytes(b"mine")
    result = run_cli("salvage", str(archive), "-o", str(tmp_path / "there.bin"))
    assert result.exit_code == 1 and "already exists (use --force to replace it)" in result.stderr
    assert (tmp_path / "there.bin").read_bytes() == b"mine"
    assert run_cli("salvage", str(archive), "-o", str(tmp_path / "there.bin"), "--force").exit_code == 0
    assert (tmp_path / "there.bin").read_bytes() == stream_of(str(archive))
    result = run_cli("salvage", str(archive), "-o", str(archive), "--force")
    assert result.exit_code == 2 and "is the archive being salvaged" in result.stderr
    assert archive.read_bytes() == Path(small_archive).read_bytes()
    with pytest.raises(IntegrityError):  # a header that cannot be trusted says nothing about the chunks
        damaged = bytearray(archive.read_bytes())
        damaged[10] ^= 1
        archive.write_bytes(bytes(damaged))
        api.salvage(str(archive), str(tmp_path / "x.bin"))
    assert not (tmp_path / "x.bin").exists()
