"""Integrity: any single flipped byte is caught by verify --full (exit 3), truncation anywhere is caught,
extraction never writes wrong bytes and loses only the damaged chunk's files, and cat reaches its file while every
other chunk is damaged."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from lzarchive import api
from lzarchive.errors import EXIT_INTEGRITY, IntegrityError

from .conftest import files_under, run_cli

SOURCE_FILES = {
    "alpha.txt": b"alpha " * 40,
    "beta.bin": random.Random(1).randbytes(400),
    "sub/gamma.txt": b"gamma\n" * 60,
    "sub/empty": b"",
}


@pytest.fixture(scope="module", params=[2, 1], ids=["format2", "format1"])
def small_archive(tmp_path_factory, request):
    """A ~2 KB archive with several chunks of both codecs, a symlink and an empty dir, in each format."""
    root = tmp_path_factory.mktemp("src")
    src = root / "tree"
    for rel, data in SOURCE_FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "emptydir").mkdir()
    os.symlink("alpha.txt", src / "link")
    archive = root / "small.lza"
    api.pack([str(src)], str(archive), codec="zstd", chunk_size=300, format_version=request.param)
    data = archive.read_bytes()
    with api.open_archive(str(archive)) as reader:
        assert len({c.codec for c in reader.index.chunks}) == 2
    return src, data


def write(tmp_path, data: bytes, name="damaged.lza") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_every_single_byte_flip_fails_full_verify(small_archive, tmp_path):
    _, data = small_archive
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x5A
        result = run_cli("verify", "--full", "-q", write(tmp_path, bytes(damaged)))
        assert result.exit_code == EXIT_INTEGRITY, f"flip at {position}: exit {result.exit_code}"


def test_every_truncation_is_detected(small_archive, tmp_path):
    _, data = small_archive
    for length in range(1, len(data)):
        result = run_cli("verify", "--quick", "-q", write(tmp_path, data[:length]))
        assert result.exit_code == EXIT_INTEGRITY, f"truncated to {length}: exit {result.exit_code}"


def test_extract_never_writes_wrong_bytes_and_loses_only_the_damaged_files(small_archive, tmp_path):
    """Each flip: no wrong byte written; damage the header, index or footer stops everything (nothing can be trusted);
    damage to a chunk costs exactly the files verify names for it, each named in a warning, and the rest is extracted."""
    src, data = small_archive
    expected = files_under(str(src))
    for position in range(0, len(data), 3):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        path, dest = write(tmp_path, bytes(damaged)), tmp_path / f"out{position}"
        result = run_cli("extract", path, "-C", str(dest))
        written = files_under(str(dest / "tree")) if (dest / "tree").exists() else {}
        for rel, content in written.items():
            assert content == expected[rel], f"flip at {position} produced wrong bytes in {rel}"
        try:
            problems = api.verify(path, full=True).problems
        except IntegrityError:
            assert result.exit_code == EXIT_INTEGRITY and not dest.exists(), (position, result.stderr)
            continue
        lost = {p.removeprefix("tree/") for problem in problems for p in problem.paths}
        assert written == {rel: content for rel, content in expected.items() if rel not in lost}, position
        assert result.exit_code == (EXIT_INTEGRITY if problems else 0), (position, result.stderr)
        for rel in lost:
            assert f"tree/{rel}: not extracted: " in result.stderr


def test_hard_links_to_a_damaged_file_are_left_out_without_decoding_it_again(tmp_path, monkeypatch):
    """Each would decode its target's chunks again (the batch ahead of them: up to 64 lm chunks) only to fail again;
    a hostile archive could hold thousands."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"shared content\n" * 200)
    for i in range(70):  # a batch of chunks between the file and its links: the first batch is gone by then
        (src / f"m{i:02}.txt").write_bytes(random.Random(i).randbytes(1024))
    for i in range(3):
        os.link(src / "a.txt", src / f"z{i}")
    archive = tmp_path / "a.lza"
    api.pack([str(src)], str(archive), codec="zstd", chunk_size=1024)
    with api.open_archive(str(archive)) as reader:
        first = reader.index.chunks[0]
    damaged = bytearray(archive.read_bytes())
    damaged[first.end - 1] ^= 1
    archive.write_bytes(bytes(damaged))
    from lzarchive.archive.reader import ArchiveReader

    decoded = []
    real = ArchiveReader.decode_chunks
    monkeypatch.setattr(ArchiveReader, "decode_chunks", lambda self, chunks, *a: decoded.extend(chunks) or real(self, chunks, *a))
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"))
    assert result.exit_code == EXIT_INTEGRITY and decoded.count(0) == 1, decoded
    assert result.stderr.count("not extracted: a hard link to src/a.txt, which is damaged") == 3, result.stderr
    assert sorted(os.listdir(tmp_path / "out" / "src")) == [f"m{i:02}.txt" for i in range(70)]


def test_verify_reports_each_bad_chunk_with_its_files(small_archive, tmp_path):
    _, data = small_archive
    path = write(tmp_path, data)
    with api.open_archive(path) as reader:
        chunks = reader.index.chunks
    damaged = bytearray(data)
    for i in (0, len(chunks) - 1):  # damage the payload of the first and the last chunk
        damaged[chunks[i].end - 1] ^= 1
    path = write(tmp_path, bytes(damaged))
    report = api.verify(path, full=True)
    assert [p.chunk for p in report.problems] == [0, len(chunks) - 1]
    assert "tree/alpha.txt" in report.problems[0].paths
    result = run_cli("verify", "--json", path)
    assert result.exit_code == EXIT_INTEGRITY
    assert result.stdout.count(b'"type": "problem"') == 2


def test_cat_reads_one_file_while_every_other_chunk_is_damaged(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    contents = {f"f{i}.txt": (f"file number {i} " * 30).encode() for i in range(6)}
    for name, data in contents.items():
        (src / name).write_bytes(data)
    archive = str(tmp_path / "a.lza")
    api.pack([str(src)], archive, codec="zstd", chunk_size=512)
    with api.open_archive(archive) as reader:
        target = next(e for e in reader.entries if e.path == "src/f3.txt")
        keep = {r.chunk for r in target.chunks}
        chunks = reader.index.chunks
    damaged = bytearray(Path(archive).read_bytes())
    for i, chunk in enumerate(chunks):
        if i not in keep:
            for position in range(chunk.offset, chunk.end):
                damaged[position] ^= 0xFF
    path = write(tmp_path, bytes(damaged))
    assert b"".join(api.cat(path, "src/f3.txt")) == contents["f3.txt"]
    result = run_cli("cat", path, "src/f3.txt", "--range", "12:40")
    assert result.exit_code == 0 and result.stdout == contents["f3.txt"][12:40]
    with pytest.raises(IntegrityError):
        b"".join(api.cat(path, "src/f1.txt"))


def test_cat_ranges(tmp_path):
    data = bytes(range(256)) * 100
    (tmp_path / "d.bin").write_bytes(data)
    archive = str(tmp_path / "d.lza")
    api.pack([str(tmp_path / "d.bin")], archive, codec="zstd", chunk_size=1000)
    for start, end in [(0, None), (0, 1), (999, 1001), (5000, 12345), (25599, None), (30000, None), (7, 7)]:
        assert b"".join(api.cat(archive, "d.bin", start, end)) == data[start:end]
    assert run_cli("cat", archive, "d.bin", "--range", "10:").stdout == data[10:]
    assert run_cli("cat", archive, "d.bin", "--range", ":10").stdout == data[:10]
    assert run_cli("cat", archive, "d.bin", "--range", ":").stdout == data
    # what int() would take but is no byte offset, an empty value (a script's unset variable), and END before START
    for bad in ["nonsense", "1_0:20", " 1:3", "\u0663:5", "-1:2", "", "5:0"]:
        result = run_cli("cat", archive, "d.bin", "--range", bad)
        assert result.exit_code == 2 and result.stdout == b"" and f"invalid --range {bad!r}" in result.stderr, bad
    assert run_cli("cat", archive, "missing").exit_code == 1
