"""Crafted hostile archives (like safetensors' attacks/): each is refused, and nothing lands outside the destination."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive.errors import EXIT_INTEGRITY, EXIT_NOT_ARCHIVE, EXIT_UNSUPPORTED
from lzarchive.format import constants as C
from lzarchive.format import records
from lzarchive.format.records import Footer, Header
from lzarchive.format.wire import digest, pack, varint

from ..conftest import run_cli
from .craft import content_entry, craft, craft2, dir_entry, dir_row, file_row, header_with, link_entry, link_row

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


def invalid_archives_2():
    """The same attacks on format 2, whose files tile the chunks in entry order (SPEC 5): each archive's chunks hold
    exactly its files' bytes, so each is refused for the rule it breaks."""
    one, two = [PAYLOAD], [PAYLOAD * 2]
    for name, path in [("dotdot", "../evil"), ("dotdot-inside", "a/../../evil"), ("absolute", "/tmp/evil"),
                       ("nul", "a\0b"), ("empty-component", "a//b")]:
        yield f"2-{name}", craft2([file_row(path, PAYLOAD)], one)
    yield "2-duplicate", craft2([file_row("same", PAYLOAD), file_row("same", PAYLOAD)], two)
    yield "2-through-symlink", craft2([link_row("link", ".."), file_row("link/evil", PAYLOAD)], one)
    yield "2-under-file", craft2([file_row("f", PAYLOAD), file_row("f/evil", PAYLOAD)], two)
    yield "2-hardlink-outside", craft2([link_row("h", "../../etc/passwd", C.EntryType.HARDLINK)])
    yield "2-hardlink-to-symlink", craft2([link_row("s", "/etc/passwd"), link_row("h", "s", C.EntryType.HARDLINK)])
    yield "2-hardlink-forward", craft2([link_row("h", "f", C.EntryType.HARDLINK), file_row("f", PAYLOAD)], one)
    yield "2-hardlink-to-dir", craft2([dir_row("d"), link_row("h", "d", C.EntryType.HARDLINK)])
    # sizes must add up to the chunks exactly: a file cannot claim bytes no chunk holds, nor leave some unclaimed
    yield "2-files-exceed-chunks", craft2([file_row("f", PAYLOAD, size=len(PAYLOAD) + 1)], one)
    yield "2-huge-file", craft2([file_row("f", PAYLOAD, size=1 << 62)], one)
    yield "2-chunks-exceed-files", craft2([file_row("f", PAYLOAD)], [PAYLOAD + b"!"])
    yield "2-no-files-for-chunk", craft2([], one)
    yield "2-extra-field", craft2([dir_row("d") + [0]])
    yield "2-short-file-row", craft2([file_row("f", PAYLOAD)[:5]], one)
    yield "2-long-check", craft2([file_row("f", PAYLOAD, check=b"\0" * 32)], one)
    yield "2-unknown-type", craft2([[4, "x", 0o644, 0]])
    yield "2-mode-out-of-range", craft2([[1, "d", 0o170000, 0]])
    yield "2-entry-not-array", craft2([{"path": "d"}])
    yield "2-index-is-a-map", craft2([], index_body=pack({"chunks": [], "entries": []}))
    yield "2-index-extra-field", craft2([], index_body=pack([[], [], []]))
    yield "2-index-trailing-bytes", craft2([], index_body=pack([[], []]) + b"\xc0")
    yield "2-index-overlong-size", craft2([], index_body=pack([[], []]), index_size=b"\x83\x00")
    yield "2-huge-entry-count", craft2([], index_body=b"\x92\x90\xdd\xff\xff\xff\xff")
    yield "2-huge-string", craft2([], index_body=b"\x92\x90\x91\xdb\xff\xff\xff\xff")
    yield "2-chunk-row-stored-over-raw", craft2([file_row("f", PAYLOAD)], one,
                                                index_body=pack([[[0, len(PAYLOAD), len(PAYLOAD) + 1]], [file_row("f", PAYLOAD)]]))
    yield "2-header-body-v1", craft2([], header=header_with(pack({"models": []}), major=2, minor=0))
    yield "2-header-model-extra-field", craft2([], header=header_with(pack([[["m", "s", b"\0" * 32, "n", 0]]]),
                                                                         major=2, minor=0))
    yield "2-header-model-hash-short", craft2([], header=header_with(pack([[["m", "s", b"\0" * 31, "n"]]]),
                                                                        major=2, minor=0))
    yield "2-chunk-overlong-size", overlong_chunk_archive()


def overlong_chunk_archive() -> bytes:
    """A format 2 chunk whose raw size is written in two varint bytes (0x86 0x00) with valid checks: a second
    encoding of the same header, which SPEC 3.3 forbids (each header has exactly one)."""
    head = Header(major=2).to_wire()
    plain = digest(C.CONTEXT_CHUNK_PLAIN, PAYLOAD)[: C.CHECK_SIZE]
    covered = C.CHUNK_MAGIC_2 + bytes([C.CodecId.STORE]) + bytes([0x80 | len(PAYLOAD), 0]) + varint(len(PAYLOAD)) + plain
    chunk = covered + digest(C.CONTEXT_CHUNK_STORED, covered, PAYLOAD)[: C.CHECK_SIZE] + PAYLOAD
    body = pack([[[0, len(PAYLOAD), len(PAYLOAD)]], [file_row("f", PAYLOAD)]])
    index = b"\0" + varint(len(body)) + body
    return head + chunk + index + Footer.of(2, len(head) + len(chunk), index).to_wire()


@pytest.mark.parametrize("name,data", list(invalid_archives()) + list(invalid_archives_2()),
                         ids=lambda v: v if isinstance(v, str) else "")
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
    assert result.exit_code == 0 and "--trust-links creates it as archived" in result.stderr
    assert sorted(os.listdir(dest)) == ["first.txt"]
    # --trust-links makes the link as archived (nothing is written through it)
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "trusted"), "--trust-links")
    assert result.exit_code == 0 and os.readlink(tmp_path / "trusted" / "link") == target


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
    future.write_bytes(craft([], header=header_with(b"", major=3)))
    result = run_cli("list", str(future))
    assert result.exit_code == EXIT_UNSUPPORTED and "format version 3." in result.stderr
    flagged = tmp_path / "flagged.lza"
    flagged.write_bytes(craft([], header=header_with(pack({"models": []}), incompat=1)))
    assert run_cli("list", str(flagged)).exit_code == EXIT_UNSUPPORTED  # format 1 defines no flags
    # SPEC 4: lm_bias_group and lm_cache only with lm_bias (a reader given the cache without the head failed with a
    # usage error, exit 2, when it decoded a chunk), lm_crlf and lm_windows1252 only with lm_utf16, lm_code_pages only
    # with lm_windows1252
    bias, text = C.INCOMPAT_LM_BIAS, C.INCOMPAT_LM_UTF16
    no_bias, no_text = (EXIT_INTEGRITY, "without lm_bias (SPEC 4)"), (EXIT_INTEGRITY, "without lm_utf16 (SPEC 4)")
    no_pages = (EXIT_INTEGRITY, "lm_code_pages without lm_windows1252 (SPEC 4)")
    unknown, read = (EXIT_UNSUPPORTED, "incompatible features"), (0, "")
    for flags, (code, said) in ((C.INCOMPAT_LM_PRIMER, read), (C.INCOMPAT_LM_MATCH, read), (C.INCOMPAT_LM_SPAN, read),
                                (bias, read), (bias | C.INCOMPAT_LM_BIAS_GROUP, read), (C.INCOMPAT_LM_GROUP_MATCH, read),
                                (C.INCOMPAT_LM_STREAMS, read), (bias | C.INCOMPAT_LM_CACHE, read),
                                (C.INCOMPAT_LM_BIAS_GROUP, no_bias), (C.INCOMPAT_LM_CACHE, no_bias), (text, read),
                                (text | C.INCOMPAT_LM_CRLF, read), (C.INCOMPAT_LM_CRLF, no_text),
                                (text | C.INCOMPAT_LM_WINDOWS_1252, read), (C.INCOMPAT_LM_WINDOWS_1252, no_text),
                                (text | C.INCOMPAT_LM_WINDOWS_1252 | C.INCOMPAT_LM_CODE_PAGES, read),
                                (text | C.INCOMPAT_LM_CODE_PAGES, no_pages), (C.INCOMPAT_LM_CODE_PAGES, no_pages),
                                (4096, unknown),
                                (1 << 31, unknown)):
        flagged.write_bytes(craft2([], header=header_with(pack([[]]), major=2, minor=3, incompat=flags)))
        result = run_cli("list", str(flagged))
        assert result.exit_code == code and said in result.stderr, (flags, result.stderr)


def test_a_chunk_with_an_unknown_codec_is_unsupported_not_damaged(tmp_path):
    """SPEC 7: ids 3..255 are unassigned; an archive that uses one is listed, and refused as unsupported (exit 11,
    naming the codec) when its content is read, with nothing written."""
    archive = tmp_path / "future-codec.lza"
    archive.write_bytes(craft2([file_row("f", b"abc")], [(9, b"abc", b"xyz")]))
    assert run_cli("list", str(archive)).exit_code == 0
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"))
    assert result.exit_code == EXIT_UNSUPPORTED and "unknown(9)" in result.stderr
    assert not (tmp_path / "out" / "f").exists()


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


# --------------------------------------------------------------------------------------------- symlink chains

CHAINS = {
    # each link alone stays inside, lexically; together `esc` points above the destination
    "chain": [dir_entry("a"), dir_entry("a/b"), link_entry("a/b/s", "../.."), link_entry("esc", "a/b/s/../..")],
    "chain-reversed": [link_entry("esc", "a/b/s/../.."), dir_entry("a"), dir_entry("a/b"), link_entry("a/b/s", "../..")],
    "chain-through-two": [link_entry("up", ".."), link_entry("x", "up/up"), link_entry("esc", "x/../..")],
    "chain-to-absolute": [link_entry("root", "/"), link_entry("esc", "root/etc")],
    # up out of what is no directory: a link made there later would decide where `a` leads (tests below)
    "up-out-of-nothing": [link_entry("a", "b/..")],
}
# links that resolve nowhere (ELOOP): nothing a kernel follows leaves the destination, and a tree holding them packs
LOOPS = [link_entry("self", "self"), link_entry("a", "b"), link_entry("b", "a"), link_entry("grows", "grows/x"),
         dir_entry("d"), link_entry("d/s", "../d/s"), link_entry("d/up", "s/.."), link_entry("to-loop", "d/s/f")]
INSIDE = [dir_entry("d"), link_entry("d/up", "../d"), link_entry("top", "d/up/up")]


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_symlink_chains_that_escape_are_refused(name, tmp_path):
    archive = tmp_path / "chain.lza"
    archive.write_bytes(craft(CHAINS[name]))
    dest = tmp_path / "box" / "dest"
    result = run_cli("extract", str(archive), "-C", str(dest))
    assert result.exit_code == 1 and "refused" in result.stderr, result.stderr
    assert not dest.exists() or os.listdir(dest) == []


def test_links_that_loop_are_extracted_as_they_were_packed(tmp_path):
    """A link to itself, two links to each other, a link through itself that grows: tar, cp and `lza pack` keep
    them; they resolve to nothing, so extraction restores them too (it refused them before, so a tree that held one
    packed and did not extract)."""
    archive = tmp_path / "loops.lza"
    archive.write_bytes(craft(LOOPS))
    dest = tmp_path / "dest"
    result = run_cli("extract", str(archive), "-C", str(dest))
    assert result.exit_code == 0, result.stderr
    for entry in LOOPS:
        if entry["type"] == int(C.EntryType.SYMLINK):
            assert os.readlink(dest / entry["path"]) == entry["target"]
            with pytest.raises(OSError) as resolving:
                os.stat(dest / entry["path"])
            assert resolving.value.errno == errno.ELOOP, entry  # the kernel agrees: nowhere


def test_a_chain_is_walked_past_every_kernels_limit_before_it_is_kept(tmp_path):
    """l0 -> l1 -> ... -> ln -> "..": l0 leaves the destination after n links. Within MAX_LINK_HOPS (more than any
    kernel follows) that is seen and refused; one link more and no system reaches the "..", so l0 is kept. Each link
    of the chain is judged so, in either order, for chains far longer than Python's stack (a walk nested in the
    walks of the links before it stopped with a RecursionError at 1,000 links)."""
    from lzarchive.archive.extract import MAX_LINK_HOPS, DestinationView
    from lzarchive.format.records import Entry

    def chain(n):
        return [Entry(f"l{i}", C.EntryType.SYMLINK, 0o777, 0, target=f"l{i + 1}" if i < n else "..") for i in range(n + 1)]

    for n, refused in ((MAX_LINK_HOPS, True), (MAX_LINK_HOPS + 1, False)):
        links = chain(n)
        reason = DestinationView(links, str(tmp_path)).symlink_refusal(links[0])
        assert (reason == "symlink target 'l1' leaves the destination") if refused else reason is None, (n, reason)
    assert MAX_LINK_HOPS >= 63  # Windows follows 63 links, Linux 40, macOS and the BSDs 32
    for n in (MAX_LINK_HOPS, 5000):
        links = chain(n)
        walked = [walked_refusal({e.path: e.target for e in links}, e.path) for e in links]
        assert sum(reason is not None for reason in walked) == min(n + 1, MAX_LINK_HOPS + 1)
        for order in (links, links[::-1]):
            view = DestinationView(links, None)
            assert {e.path: view.symlink_refusal(e) for e in order} == {e.path: r for e, r in zip(links, walked)}
    # and the place a deep walk ends at is read from the disk through 1,500 archived directories, in a loop too
    deep = "/".join(["d"] * 1500)
    entries = [Entry("/".join(["d"] * k), C.EntryType.DIR, 0o755, 0) for k in range(1, 1501)]
    link = Entry("up", C.EntryType.SYMLINK, 0o777, 0, target=f"{deep}/nothing/..")
    reason = DestinationView([*entries, link], str(tmp_path)).symlink_refusal(link)
    assert reason.endswith(f"goes up out of '{deep}/nothing', which is no directory")


def test_links_through_one_long_chain_cost_what_the_archive_holds(tmp_path, monkeypatch):
    """A link bomb: 200 links into a pair of links far apart that lead to each other. Each link's check walked the
    pair's long targets until the hop limit: 17 s for 200 links into a pair 1,364 directories apart (4 KB targets;
    an index zstd makes 955 bytes). Now each link is walked once: the check takes a step per component of the
    archive's targets, two per component of its paths (placed, then looked up), and keeps every link (they loop)."""
    from lzarchive.archive import extract

    depth = 300  # directories the extraction makes: shutil.rmtree, which cleans pytest's, recurses through them
    rows = [link_row(f"A{i}", "x/" * depth + "B") for i in range(200)] + [link_row("x/" * depth + "B", "../" * depth + "A0")]
    archive = tmp_path / "bomb.lza"
    archive.write_bytes(craft2(rows))
    steps = []
    child = extract._Place.child
    monkeypatch.setattr(extract._Place, "child", lambda place, name: steps.append(name) or child(place, name))
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "dest"))
    assert result.exit_code == 0, result.stderr
    named = sum(2 * len(row[1].split("/")) + len(row[4].split("/")) for row in rows)  # a path: placed, looked up
    assert len(steps) <= named, (len(steps), named)
    assert os.readlink(tmp_path / "dest" / "A199") == "x/" * depth + "B"


def walked_refusal(links: dict[str, str], path: str) -> str | None:
    """The link check restated as the kernel walks: the target's components one at a time, a link's target put in
    place of its name, MAX_LINK_HOPS links in all (the check before each link was walked once); a ".." only out of
    a directory (one above a link)."""
    from lzarchive.archive.extract import MAX_LINK_HOPS

    target = links[path]
    if target.startswith("/"):
        return f"symlink target {target!r} is absolute"
    resolved, todo, hops = path.split("/")[:-1], target.split("/")[::-1], 0
    while todo:
        part = todo.pop()
        if part == "..":
            if not resolved:
                return f"symlink target {target!r} leaves the destination"
            here = "/".join(resolved)
            if not any(path.startswith(here + "/") for path in links):
                return f"symlink target {target!r} goes up out of {here!r}, which is no directory"
            resolved.pop()
        elif part not in ("", "."):
            resolved.append(part)
            link = links.get("/".join(resolved))
            if link is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    return None
                if link.startswith("/"):
                    return f"symlink target {target!r} goes through {'/'.join(resolved)!r}, a link to an absolute path"
                resolved.pop()
                todo.extend(link.split("/")[::-1])
    return None


LINK_NAMES = st.sampled_from(["a", "b", "c"])
LINK_PATHS = st.lists(LINK_NAMES, min_size=1, max_size=3).map("/".join)
LINK_TARGETS = st.one_of(st.lists(st.sampled_from(["a", "b", "c", "..", ".", ""]), min_size=1, max_size=5).map("/".join),
                         st.just("/abs"))


@settings(max_examples=400, deadline=None)
@given(links=st.dictionaries(LINK_PATHS, LINK_TARGETS, min_size=1, max_size=8))
def test_the_link_check_refuses_what_a_walk_of_each_link_refuses(links):
    """Walking each link once (and reusing its walk wherever the link is met) decides as walking every chain in
    full: loops, chains, links through links and through directories of other links, in an empty destination."""
    from lzarchive.archive.extract import DestinationView
    from lzarchive.format.records import Entry

    entries = [Entry(path, C.EntryType.SYMLINK, 0o777, 0, target=target or ".") for path, target in links.items()]
    links = {e.path: e.target for e in entries}
    view = DestinationView(entries, None)
    assert [view.symlink_refusal(e) for e in entries] == [walked_refusal(links, e.path) for e in entries]


def test_a_chain_split_across_two_archives_is_refused_in_either_order(tmp_path):
    """`a -> b/..` and `b -> .` look harmless apart, and together `a` is the destination's parent. Extracted one
    after the other into one directory: with `b` first, `a` goes through the link on disk and is refused; with `a`
    first, `a` is refused for going up out of `b`, which is nothing yet."""
    first, second = tmp_path / "a.lza", tmp_path / "b.lza"
    first.write_bytes(craft([link_entry("a", "b/..")]))
    second.write_bytes(craft([link_entry("b", ".")]))
    for order in ((second, first), (first, second)):
        dest = tmp_path / order[0].stem
        results = [run_cli("extract", str(archive), "-C", str(dest)) for archive in order]
        assert [r.exit_code for r in results] == ([0, 1] if order[0] is second else [1, 0]), results[0].stderr
        refused = results[1] if order[0] is second else results[0]
        assert "symlink target 'b/..'" in refused.stderr
        assert os.listdir(dest) == ["b"]
    assert "goes up out of 'b', which is no directory" in run_cli("extract", str(first), "-C", str(tmp_path / "c")).stderr
    filed = tmp_path / "f.lza"
    filed.write_bytes(craft([content_entry("f", (0, 0, 3), b"abc"), link_entry("a", "f/../f")], [b"abc"]))
    assert "goes up out of 'f', which is no directory" in run_cli("extract", str(filed), "-C", str(tmp_path / "f")).stderr
    # where b is a directory (in the archive, or on disk), a -> b/.. is the destination itself, and kept
    third = tmp_path / "c.lza"
    third.write_bytes(craft([dir_entry("b"), link_entry("a", "b/..")]))
    assert run_cli("extract", str(third), "-C", str(tmp_path / "d")).exit_code == 0
    (tmp_path / "e" / "b").mkdir(parents=True)
    assert run_cli("extract", str(first), "-C", str(tmp_path / "e")).exit_code == 0


def test_a_link_through_a_link_already_in_the_destination_is_refused(tmp_path):
    dest = tmp_path / "box" / "dest"
    (dest / "a").mkdir(parents=True)
    os.symlink("../..", dest / "a" / "s")  # the user's own link: harmless by itself
    archive = tmp_path / "a.lza"
    archive.write_bytes(craft([link_entry("esc", "a/s/..")]))
    result = run_cli("extract", str(archive), "-C", str(dest))
    assert result.exit_code == 1 and "leaves the destination" in result.stderr
    assert not os.path.lexists(dest / "esc")


def tar_refuses(entries: list[dict], tmp_path) -> bool:
    """Whether tarfile's "data" filter (PEP 706) refuses the same tree."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry["path"])
            info.type = {int(C.EntryType.DIR): tarfile.DIRTYPE, int(C.EntryType.SYMLINK): tarfile.SYMTYPE}[entry["type"]]
            info.linkname = entry.get("target", "")
            tar.addfile(info)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        try:
            tar.extractall(tmp_path / "tar-dest", filter="data")
        except (tarfile.FilterError, OSError):
            return True
    return False


@pytest.mark.parametrize("name", sorted(CHAINS) + ["inside", "loops"])
def test_every_tree_tarfile_refuses_lza_refuses(name, tmp_path):
    """PEP 706's "data" filter is the bar the README names: whatever it refuses, lza refuses too (it also refuses
    the reversed chain, which tarfile lets through because it judges each link as it comes)."""
    entries = CHAINS.get(name) or {"inside": INSIDE, "loops": LOOPS}[name]
    archive = tmp_path / "t.lza"
    archive.write_bytes(craft(entries))
    lza_refuses = run_cli("extract", str(archive), "-C", str(tmp_path / "lza-dest")).exit_code != 0
    tar = tar_refuses(entries, tmp_path)
    assert lza_refuses or not tar
    assert lza_refuses == (name in CHAINS)
    assert tar == (name in ("chain", "chain-through-two", "chain-to-absolute"))


# --------------------------------------------------------------------------------------------- temporary names

def test_temporary_names_never_collide_with_anything(tmp_path):
    """A file `x` is written under a fresh random name first: a user's `.x.lza-partial` and an archived one survive."""
    files = {".x.lza-partial": b"archived partial", "x": PAYLOAD}
    data = b"".join(files.values())
    entries, offset = [], 0
    for name, content in files.items():
        entries.append(content_entry(name, (0, offset, len(content)), content))
        offset += len(content)
    archive = tmp_path / "a.lza"
    archive.write_bytes(craft(entries, [data]))
    dest = tmp_path / "dest"
    assert run_cli("extract", str(archive), "-C", str(dest)).exit_code == 0
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".x.lza-partial").write_bytes(b"the user's own file")
    single = tmp_path / "single.lza"
    single.write_bytes(craft([content_entry("x", (0, 0, len(PAYLOAD)), PAYLOAD)], [PAYLOAD]))
    assert run_cli("extract", str(single), "-C", str(mine)).exit_code == 0
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == {".x.lza-partial": b"the user's own file", "x": PAYLOAD}


def test_a_failed_final_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    archive = tmp_path / "a.lza"
    archive.write_bytes(craft([content_entry("x", (0, 0, len(PAYLOAD)), PAYLOAD)], [PAYLOAD]))
    dest = tmp_path / "dest"
    dest.mkdir()

    def refuse(*args, **kwargs):  # what a directory that appeared at x meanwhile would do
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))

    monkeypatch.setattr("lzarchive.archive.extract.place", refuse)
    result = run_cli("extract", str(archive), "-C", str(dest), "--overwrite")
    assert result.exit_code == 1 and "Traceback" not in result.stderr and "x" in result.stderr
    assert os.listdir(dest) == []


def test_overwrite_replaces_empty_directories_and_refuses_others_before_writing(tmp_path):
    """--overwrite puts a file or a link where an empty directory is (a rename cannot replace one: it was 'Is a
    directory' after the entries before it were written); a directory that holds anything is refused up front."""
    archive = tmp_path / "a.lza"
    archive.write_bytes(craft([content_entry("a", None), content_entry("x", (0, 0, len(PAYLOAD)), PAYLOAD),
                               link_entry("y", "x")], [PAYLOAD]))
    dest = tmp_path / "dest"
    (dest / "x").mkdir(parents=True)
    (dest / "y").mkdir()
    (dest / "y" / "keep").write_bytes(b"the user's")
    result = run_cli("extract", str(archive), "-C", str(dest), "--overwrite")
    assert result.exit_code == 1 and "y: refused: is a directory that is not empty" in result.stderr
    assert sorted(os.listdir(dest)) == ["x", "y"] and os.listdir(dest / "x") == []  # not even "a", listed first
    (dest / "y" / "keep").unlink()
    assert run_cli("extract", str(archive), "-C", str(dest), "--overwrite").exit_code == 0
    assert (dest / "x").read_bytes() == PAYLOAD and os.readlink(dest / "y") == "x" and (dest / "a").read_bytes() == b""


def test_directories_get_their_modes_even_when_extraction_fails(tmp_path):
    bad = {**content_entry("d/sub/f", (0, 0, len(PAYLOAD)), PAYLOAD), "hash": b"\0" * 32}
    archive = tmp_path / "a.lza"
    archive.write_bytes(craft([{**dir_entry("d"), "mode": 0o751}, bad], [PAYLOAD]))
    dest = tmp_path / "dest"
    old = os.umask(0o022)
    try:
        result = run_cli("extract", str(archive), "-C", str(dest))
    finally:
        os.umask(old)
    assert result.exit_code == EXIT_INTEGRITY
    assert os.stat(dest / "d").st_mode & 0o7777 == 0o751
    assert os.stat(dest / "d" / "sub").st_mode & 0o7777 == 0o755  # not listed in the archive: the umask decides
    assert os.listdir(dest / "d" / "sub") == []


def test_a_path_of_4095_bytes_extracts(tmp_path):
    parts = ["p" * 254 + str(i % 10) for i in range(16)]
    path = "/".join(parts)
    assert len(path.encode()) == 4095
    archive = tmp_path / "long.lza"
    archive.write_bytes(craft([content_entry(path, (0, 0, len(PAYLOAD)), PAYLOAD)], [PAYLOAD]))
    dest = tmp_path / "dest"
    result = run_cli("extract", str(archive), "-C", str(dest))
    assert result.exit_code == 0, result.stderr
    fd = os.open(dest, os.O_RDONLY)
    for part in parts[:-1]:
        fd, old = os.open(part, os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    with open(os.open(parts[-1], os.O_RDONLY, dir_fd=fd), "rb") as f:
        assert f.read() == PAYLOAD
    os.close(fd)
    assert run_cli("extract", str(archive), "-C", str(dest)).exit_code == 1  # exists now: refused, not a traceback


@pytest.mark.parametrize("where", ["file", "under-file", "dangling-link", "under-dangling-link"])
def test_extracting_into_a_file_is_a_clear_error(where, tmp_path):
    """-C naming a file, or a symlink to nothing (said so: it was "exists and is not a directory"), or a path below
    either: nothing is created, not even the link's target."""
    archive = tmp_path / "a.lza"
    archive.write_bytes(craft([content_entry("x", (0, 0, len(PAYLOAD)), PAYLOAD)], [PAYLOAD]))
    (tmp_path / "plain").write_bytes(b"not a directory")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    dest = tmp_path / ("plain" if "file" in where else "link") / ("sub" if where.startswith("under") else "")
    result = run_cli("extract", str(archive), "-C", str(dest))
    expected = f"a symlink to {tmp_path / 'nowhere'}, which does not exist" if "link" in where else "not a directory"
    assert result.exit_code == 1 and expected in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "plain").read_bytes() == b"not a directory"
    assert sorted(os.listdir(tmp_path)) == ["a.lza", "link", "plain"]


def test_bytes_after_a_zstd_frame_are_damage(tmp_path):
    """SPEC 7: a zstd payload is one frame and nothing after it (the library would ignore the rest)."""
    import zstandard

    text = b"all work and no play " * 20
    frame = zstandard.ZstdCompressor().compress(text)
    archive = tmp_path / "trailing.lza"
    archive.write_bytes(craft2([file_row("f", text)], [(C.CodecId.ZSTD, text, frame + b"junk")]))
    result = run_cli("verify", str(archive))
    assert result.exit_code == EXIT_INTEGRITY and "after the frame" in result.stderr and "chunk 0" in result.stderr
    assert run_cli("extract", str(archive), "-C", str(tmp_path / "x")).exit_code == EXIT_INTEGRITY
    assert not (tmp_path / "x" / "f").exists()
    body = pack([[], []])
    index = bytes([C.IndexEncoding.MSGPACK_ZSTD]) + varint(len(body)) + zstandard.ZstdCompressor().compress(body) + b"x"
    header = Header(major=2).to_wire()
    archive.write_bytes(header + index + Footer.of(2, len(header), index).to_wire())
    result = run_cli("list", str(archive))
    assert result.exit_code == EXIT_INTEGRITY and "after the frame" in result.stderr


def test_bytes_appended_after_the_footer_are_named_as_such(tmp_path):
    """An archive with bytes after its footer (concatenated, a download's trailer) is refused as damaged, saying so,
    not as 'cut short'; a cut-short archive that holds another archive (whose footer is not this one's) stays cut
    short."""
    inner = craft2([file_row("f", PAYLOAD)], [PAYLOAD])
    appended = tmp_path / "appended.lza"
    appended.write_bytes(inner + b"trailer\n")
    result = run_cli("list", str(appended))
    assert result.exit_code == EXIT_INTEGRITY
    assert f"8 bytes follow its footer (which ends at byte {len(inner)}): appended to the archive?" in result.stderr
    outer = craft2([file_row("inner.lza", inner)], [inner])
    cut = tmp_path / "cut.lza"
    cut.write_bytes(outer[: outer.index(inner) + len(inner) + 5])
    result = run_cli("list", str(cut))
    assert result.exit_code == EXIT_INTEGRITY and "truncated archive: no footer at the end" in result.stderr


@pytest.mark.parametrize("kind", ["file", "dir", "symlink"])
def test_the_archive_being_extracted_is_never_replaced(kind, tmp_path):
    """An entry named as the archive itself, extracted where the archive lies: with --overwrite the archive was
    replaced while it was read (unlinked for a directory or a link). Now it is refused as bsdtar refuses, even with
    --overwrite; --skip-unsafe extracts the rest. Another name of the archive (a hard link) is an ordinary file."""
    dest = tmp_path / "dest"
    dest.mkdir()
    size = len(PAYLOAD)
    entry = {"file": content_entry("a.lza", (0, 2 * size, size), PAYLOAD), "dir": dir_entry("a.lza"),
             "symlink": link_entry("a.lza", "x")}[kind]
    crafted = craft([content_entry("other-name.lza", (0, 0, size), PAYLOAD), content_entry("x", (0, size, size), PAYLOAD),
                     entry], [PAYLOAD * 3])
    archive = dest / "a.lza"
    archive.write_bytes(crafted)
    os.link(archive, dest / "other-name.lza")
    os.symlink(archive, tmp_path / "via-link.lza")
    for name in ("a.lza", "via-link.lza"):  # the archive as named, and through a symlink to it
        result = run_cli("extract", str(archive.parent / name if name == "a.lza" else tmp_path / name), "-C",
                         str(dest), "--overwrite")
        assert result.exit_code == 1 and "a.lza: refused: is the archive being extracted" in result.stderr
        assert sorted(os.listdir(dest)) == ["a.lza", "other-name.lza"] and archive.read_bytes() == crafted
    result = run_cli("extract", str(archive), "-C", str(dest), "--overwrite", "--skip-unsafe")
    assert result.exit_code == 0 and "a.lza: skipped: is the archive being extracted" in result.stderr
    assert archive.read_bytes() == crafted  # the same file, never rewritten
    assert (dest / "x").read_bytes() == PAYLOAD and (dest / "other-name.lza").read_bytes() == PAYLOAD


components = st.sampled_from(["a", "a-", "a.", "a0", "b", "a a"])  # names that sort just before and after "a/"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.lists(components, min_size=1, max_size=4).map("/".join),
                       st.sampled_from([C.EntryType.DIR, C.EntryType.SYMLINK]), min_size=1, max_size=12))
def test_entries_under_a_non_directory_are_refused_exactly_as_the_ancestor_rule_says(kinds):
    """SPEC 5: no entry lies under an entry that is not a directory. The index check finds such an entry by a sorted
    search (walking every entry's ancestors cost its depth times its length: a 2,198-byte archive of 800 paths 2,000
    deep took 75 s to open); it must refuse exactly what the rule refuses."""
    entries = tuple(SimpleNamespace(path=path, type=kind) for path, kind in kinds.items())
    ancestors = {path: ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)] for path in kinds}
    broken = any(kinds.get(parent, C.EntryType.DIR) is not C.EntryType.DIR for path in kinds for parent in ancestors[path])
    if broken:
        with pytest.raises(ValueError, match="which is not a directory"):
            records._check_tree(entries)
    else:
        records._check_tree(entries)


def test_a_deep_path_is_checked_in_time_linear_in_its_length(monkeypatch):
    """The same deep index, counted instead of timed: checking a path of 2,000 components formatted its repr for every
    component, whether or not anything was wrong."""
    deep = "d/" + "/".join(["a"] * 2000)
    calls, require = [], records._require

    def counted(condition: bool, reason: str) -> None:
        calls.append(len(reason))
        require(condition, reason)

    monkeypatch.setattr(records, "_require", counted)
    records.check_path(deep)
    assert sum(calls) < 4 * len(deep)  # the messages made: a few, not one per component
