"""Crafted hostile archives (like safetensors' attacks/): each is refused, and nothing lands outside the destination."""

from __future__ import annotations

import os

import pytest

from lzarchive.errors import EXIT_INTEGRITY, EXIT_NOT_ARCHIVE, EXIT_UNSUPPORTED
from lzarchive.format import constants as C
from lzarchive.format.wire import pack

from ..conftest import run_cli
from .craft import content_entry, craft, dir_entry, header_with, link_entry

PAYLOAD = b"owned\n"


def invalid_archives():
    """(name, archive bytes): archives whose index breaks the spec, refused when opened (exit 3)."""
    one = [PAYLOAD]
    ref = (0, 0, len(PAYLOAD))
    yield "dotdot", craft([content_entry("../evil", ref, PAYLOAD)], one)
    yield "dotdot-inside", craft([content_entry("a/../../evil", ref, PAYLOAD)], one)
    yield "absolute", craft([content_entry("/tmp/evil", ref, PAYLOAD)], one)
    yield "nul", craft([content_entry("a\0b", ref, PAYLOAD)], one)
    yield "empty-component", craft([content_entry("a//b", ref, PAYLOAD)], one)
    yield "duplicate", craft([content_entry("same", ref, PAYLOAD), content_entry("same", ref, PAYLOAD)], one)
    yield "through-symlink", craft([link_entry("link", ".."), content_entry("link/evil", ref, PAYLOAD)], one)
    yield "through-symlink-file-first", craft([content_entry("link/evil", ref, PAYLOAD), link_entry("link", "/tmp")], one)
    yield "under-file", craft([content_entry("f", ref, PAYLOAD), content_entry("f/evil", ref, PAYLOAD)], one)
    yield "hardlink-outside", craft([link_entry("h", "../../etc/passwd", C.EntryType.HARDLINK)])
    yield "hardlink-to-symlink", craft([link_entry("s", "/etc/passwd"),
                                         {**content_entry("h", ref, PAYLOAD), "type": 3, "target": "s"}], one)
    yield "slice-past-chunk", craft([content_entry("f", (0, 0, 999), PAYLOAD)], one)
    yield "chunk-out-of-range", craft([content_entry("f", (7, 0, len(PAYLOAD)), PAYLOAD)], one)
    yield "size-mismatch", craft([{**content_entry("f", ref, PAYLOAD), "size": 3}], one)
    yield "unknown-key", craft([{**dir_entry("d"), "owner": 0}])
    yield "mode-out-of-range", craft([{**dir_entry("d"), "mode": 0o170000}])
    # oversized counts: a msgpack array header claiming 4 billion entries, with nothing behind it
    yield "huge-entry-count", craft([], index_body=b"\x82" + pack("chunks") + b"\x90" + pack("entries") + b"\xdd\xff\xff\xff\xff")
    yield "huge-string", craft([], index_body=b"\x82" + pack("chunks") + b"\x90" + pack("entries") + b"\x91\xdb\xff\xff\xff\xff")
    # a key twice: msgpack alone would keep the last value (here a setuid mode), SPEC 2 says refuse
    yield "duplicate-key-entry", craft([], index_body=b"\x82" + pack("chunks") + b"\x90" + pack("entries") + b"\x91\x85"
                                        + b"".join(map(pack, ["path", "d", "type", 1, "mode", 0o755, "mtime_ns", 0,
                                                               "mode", 0o4755])))
    yield "duplicate-key-index", craft([], index_body=b"\x83" + pack("chunks") + b"\x90" + pack("entries") + b"\x90"
                                        + pack("entries") + b"\x91" + pack(dir_entry("d")))
    yield "duplicate-key-header", craft([], header=header_with(b"\x82" + pack("models") + b"\x90" + pack("models") + b"\x90"))
    # hard links that claim other bytes than their target: cat/extract of the link alone would differ from a full
    # extract (SPEC 5: MUST carry the target's size, hash and slices)
    two = [PAYLOAD + b"other!"]
    first, second = (0, 0, len(PAYLOAD)), (0, len(PAYLOAD), 6)
    target = content_entry("f", first, PAYLOAD)
    yield "hardlink-other-slices", craft([target, {**content_entry("h", second, b"other!"), "type": 3, "target": "f"}], two)
    yield "hardlink-other-hash", craft([target, {**target, "path": "h", "type": 3, "target": "f", "hash": b"\1" * 32}], two)
    yield "hardlink-other-size", craft([target, {**target, "path": "h", "type": 3, "target": "f", "size": 0,
                                                 "chunks": []}], two)
    # amplification: slices of files that overlap would let a tiny archive declare any size (65,536 slices of one
    # 16 MiB chunk list a 1 TiB file); slices must move forward through the chunks
    yield "overlapping-slices", craft([{**content_entry("big", first, PAYLOAD), "size": 4096 * len(PAYLOAD),
                                        "chunks": [list(first)] * 4096}], two)
    yield "overlapping-files", craft([content_entry("a", first, PAYLOAD), content_entry("b", first, PAYLOAD)], two)
    yield "slices-backwards", craft([content_entry("b", second, b"other!"), content_entry("a", first, PAYLOAD)], two)
    yield "header-body-too-big", craft([], header=header_with(b"\x80" * (C.MAX_HEADER_BODY + 1)))
    yield "header-reserved", craft([], header=header_with(pack({"models": []}), reserved=1))


@pytest.mark.parametrize("name,data", list(invalid_archives()), ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_archive_is_refused_and_writes_nothing(name, data, tmp_path):
    archive = tmp_path / "hostile.lza"
    archive.write_bytes(data)
    dest = tmp_path / "box" / "dest"
    dest.mkdir(parents=True)
    for command in (["extract", str(archive), "-C", str(dest)], ["list", str(archive)], ["verify", str(archive)]):
        result = run_cli(*command)
        assert result.exit_code == EXIT_INTEGRITY, (name, command, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.startswith("lza: error:")
    assert sorted(os.listdir(tmp_path)) == ["box", "hostile.lza"]
    assert os.listdir(tmp_path / "box") == ["dest"] and os.listdir(dest) == []


@pytest.mark.parametrize("target", ["/tmp/outside", "../outside", "sub/../../outside", "../../../../../../../../etc"])
def test_escaping_symlinks_are_refused_before_anything_is_written(target, tmp_path):
    archive = tmp_path / "links.lza"
    archive.write_bytes(craft([content_entry("first.txt", (0, 0, 3), b"abc"), link_entry("link", target)], [b"abc"]))
    dest = tmp_path / "dest"
    result = run_cli("extract", str(archive), "-C", str(dest))
    assert result.exit_code == 1 and "link" in result.stderr and "symlink target" in result.stderr
    assert not dest.exists() or os.listdir(dest) == []
    # --skip-unsafe extracts the rest and leaves the link out
    result = run_cli("extract", str(archive), "-C", str(dest), "--skip-unsafe")
    assert result.exit_code == 0
    assert sorted(os.listdir(dest)) == ["first.txt"]


def test_writes_never_follow_a_symlink_in_the_destination(tmp_path):
    """A path under a symlink (here a pre-existing one; an archived one is refused when the index is read) is
    refused when its parent is opened, not followed; with a directory entry and --overwrite the link is replaced."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(outside), dest / "trap")
    implicit = tmp_path / "implicit.lza"
    implicit.write_bytes(craft([content_entry("trap/evil", (0, 0, len(PAYLOAD)), PAYLOAD)], [PAYLOAD]))
    result = run_cli("extract", str(implicit), "-C", str(dest), "--overwrite")
    assert result.exit_code == 1 and "symlink or not a directory" in result.stderr
    explicit = tmp_path / "explicit.lza"
    explicit.write_bytes(craft([dir_entry("trap"), content_entry("trap/evil", (0, 0, len(PAYLOAD)), PAYLOAD)], [PAYLOAD]))
    assert run_cli("extract", str(explicit), "-C", str(dest)).exit_code == 1  # refused: trap exists
    assert run_cli("extract", str(explicit), "-C", str(dest), "--overwrite").exit_code == 0
    assert not os.path.islink(dest / "trap") and (dest / "trap" / "evil").read_bytes() == PAYLOAD
    assert os.listdir(outside) == []


def test_relative_symlink_inside_destination_is_allowed(tmp_path):
    archive = tmp_path / "ok.lza"
    archive.write_bytes(craft([dir_entry("d"), link_entry("d/up", "../d"), link_entry("top", "d/up")]))
    dest = tmp_path / "dest"
    assert run_cli("extract", str(archive), "-C", str(dest)).exit_code == 0
    assert os.readlink(dest / "d" / "up") == "../d"


def test_not_an_archive_and_unsupported_versions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"just some text, long enough to be something" * 5)
    assert run_cli("list", str(plain)).exit_code == EXIT_NOT_ARCHIVE
    future = tmp_path / "future.lza"
    future.write_bytes(craft([], header=header_with(b"", major=2)))
    result = run_cli("list", str(future))
    assert result.exit_code == EXIT_UNSUPPORTED and "format version 2." in result.stderr
    flagged = tmp_path / "flagged.lza"
    flagged.write_bytes(craft([], header=header_with(pack({"models": []}), incompat=1)))
    assert run_cli("list", str(flagged)).exit_code == EXIT_UNSUPPORTED


def test_existing_files_are_not_overwritten_without_permission(tmp_path):
    archive = tmp_path / "a.lza"
    archive.write_bytes(craft([content_entry("f", (0, 0, len(PAYLOAD)), PAYLOAD)], [PAYLOAD]))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "f").write_bytes(b"precious")
    result = run_cli("extract", str(archive), "-C", str(dest))
    assert result.exit_code == 1 and "already exists" in result.stderr
    assert (dest / "f").read_bytes() == b"precious"
    assert run_cli("extract", str(archive), "-C", str(dest), "--overwrite").exit_code == 0
    assert (dest / "f").read_bytes() == PAYLOAD
