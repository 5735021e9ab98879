"""Round trips: generated trees (odd names, empty files and dirs, large files, links, modes, mtimes) come back exactly."""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.archive import reader, writer
from lzarchive.archive.reader import ArchiveReader
from lzarchive.archive.writer import ArchiveWriter
from lzarchive.format import constants as C

from .conftest import files_under, snapshot

NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0")
names = st.text(NAME_CHARS, min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..") and len(n.encode()) <= 255 and not n.endswith(".lza-partial")
)
mtimes = st.integers(min_value=0, max_value=4_000_000_000 * 10**9)
file_modes = st.sampled_from([0o644, 0o600, 0o755, 0o400, 0o777, 0o640])
dir_modes = st.sampled_from([0o755, 0o700, 0o750, 0o777])


@st.composite
def trees(draw, depth=0):
    """A directory as {name: node}; node = ("file", bytes, mode, mtime) | ("dir", tree, mode, mtime) | ("link", target, mtime)."""
    children = draw(st.dictionaries(names, st.just(None), max_size=5 if depth < 2 else 3))
    tree = {}
    for name in children:
        kind = draw(st.sampled_from(["file", "file", "bigfile", "dir", "link"] if depth < 2 else ["file", "link"]))
        if kind == "file":
            tree[name] = ("file", draw(st.binary(max_size=300)), draw(file_modes), draw(mtimes))
        elif kind == "bigfile":
            seed = draw(st.binary(min_size=1, max_size=16))
            tree[name] = ("file", seed * draw(st.integers(200, 4000)), draw(file_modes), draw(mtimes))
        elif kind == "dir":
            tree[name] = ("dir", draw(trees(depth=depth + 1)), draw(dir_modes), draw(mtimes))
        else:  # a sibling's name, or a path that may climb out of the tree or through names that are not there
            target = draw(st.one_of(names, st.lists(st.one_of(names, st.just("..")), min_size=2, max_size=4).map("/".join)))
            tree[name] = ("link", target, draw(mtimes))
    return tree


class Warnings(api.Progress):
    """What a pack or an extraction warns of, in order."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def warn(self, text: str) -> None:
        self.said.append(text)


def materialize(root: str, tree: dict, hardlinks: list[str]) -> None:
    """Create the tree; then, deepest first, fix modes and mtimes (writing inside a dir changes its mtime)."""
    os.makedirs(root, exist_ok=True)
    for name, node in tree.items():
        path = os.path.join(root, name)
        if node[0] == "file":
            with open(path, "wb") as f:
                f.write(node[1])
            os.chmod(path, node[2])
            os.utime(path, ns=(node[3], node[3]))
        elif node[0] == "dir":
            materialize(path, node[1], hardlinks)
            os.chmod(path, node[2])
            os.utime(path, ns=(node[3], node[3]))
        else:
            os.symlink(node[1], path)
            os.utime(path, ns=(node[2], node[2]), follow_symlinks=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), chunk_size=st.sampled_from([64, 1000, 4096, 1 << 20]), codec=st.sampled_from(["store", "zstd"]),
       link_count=st.integers(0, 3))
@example(tree={"1": ("file", b"", 0o644, 0), "0": ("link", "0", 0)}, chunk_size=64, codec="store", link_count=0)
def test_tree_round_trip(tree, chunk_size, codec, link_count):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        materialize(src, tree, [])
        files = [n for n, node in tree.items() if node[0] == "file"]
        for i in range(min(link_count, len(files))):  # extra names for top-level files: hardlinks
            os.link(os.path.join(src, files[i]), os.path.join(src, f"hardlink-{i}"))
        os.utime(src, ns=(10**18, 10**18))
        archive = os.path.join(tmp, "out.lza")
        packed = Warnings()
        api.pack([src], archive, codec=codec, chunk_size=chunk_size, progress=packed)
        assert api.verify(archive, full=True).ok
        # the links pack says need --trust-links are the ones extraction refuses without it
        unsafe = [w.split(": stored, but ")[0] for w in packed.said if ": stored, but " in w]
        more = sum(int(w.split()[1]) for w in packed.said if w.startswith("and "))
        skipped = Warnings()
        api.extract(archive, os.path.join(tmp, "safe"), skip_unsafe=True, progress=skipped)
        refused = [w.split(": skipped: ")[0] for w in skipped.said]
        assert refused[:10] == unsafe and len(refused) == len(unsafe) + more
        api.extract(archive, os.path.join(tmp, "dest"), trust_links=bool(refused))
        assert snapshot(os.path.join(tmp, "dest", "src")) == snapshot(src)
        # format 1 holds the same index in its own words: format 2's implied slices and 64-bit checks agree with it
        old = os.path.join(tmp, "old.lza")
        api.pack([src], old, codec=codec, chunk_size=chunk_size, format_version=1)
        with api.open_archive(archive) as lean, api.open_archive(old) as full:
            assert (lean.header.major, full.header.major) == (2, 1)
            assert [(c.codec, c.raw_size, c.stored_size) for c in lean.index.chunks] == \
                   [(c.codec, c.raw_size, c.stored_size) for c in full.index.chunks]
            assert [(e.path, e.type, e.mode, e.mtime_ns, e.size, e.chunks, e.target) for e in lean.entries] == \
                   [(e.path, e.type, e.mode, e.mtime_ns, e.size, e.chunks, e.target) for e in full.entries]
            assert all(e.content_hash == f.content_hash[:8] for e, f in zip(lean.entries, full.entries) if e.has_content)
        assert os.path.getsize(archive) < os.path.getsize(old)


def test_large_file_spans_many_chunks(tmp_path):
    data = os.urandom(300_000) + b"text " * 50_000
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    archive = str(tmp_path / "big.lza")
    stats = api.pack([str(src)], archive, codec="zstd", chunk_size=16 * 1024)
    assert stats.chunks == -(-len(data) // (16 * 1024))
    [entry] = api.list_entries(archive)
    assert len(entry.chunks) == stats.chunks
    api.extract(archive, str(tmp_path / "out"))
    assert (tmp_path / "out" / "big.bin").read_bytes() == data


def test_extraction_decodes_ahead_within_chunk_and_byte_limits(tmp_path, monkeypatch):
    """Chunks are decoded together (lm decodes them in lockstep) up to DECODE_AHEAD chunks and DECODE_AHEAD_BYTES of
    plaintext per batch, in file order."""
    data = os.urandom(150 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    archive = str(tmp_path / "big.lza")
    api.pack([str(tmp_path / "big.bin")], archive, codec="store", chunk_size=1024)  # 150 chunks
    batches = []
    original = ArchiveReader.decode_chunks
    monkeypatch.setattr(ArchiveReader, "decode_chunks",
                        lambda self, chunks, prefixes=None: batches.append(list(chunks)) or original(self, chunks, prefixes))
    api.extract(archive, str(tmp_path / "out"))
    assert [len(b) for b in batches] == [64, 64, 22] and sum(batches, []) == list(range(150))
    batches.clear()
    monkeypatch.setattr(reader, "DECODE_AHEAD_BYTES", 10 * 1024 + 1)
    api.extract(archive, str(tmp_path / "out2"))
    assert [len(b) for b in batches] == [10] * 15
    assert (tmp_path / "out2" / "big.bin").read_bytes() == data


def test_full_verify_decodes_every_chunk_once(tmp_path, monkeypatch):
    """About 150 chunks, decoded in batches of 64: each decoded exactly once."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(100 * 1024))
    for i in range(50):
        (src / f"small{i:02}.txt").write_bytes(os.urandom(1000))
    archive = str(tmp_path / "a.lza")
    chunks = api.pack([str(src)], archive, codec="store", chunk_size=1024).chunks
    assert chunks > 2 * 64
    decoded = []
    original = ArchiveReader.decode_chunks
    monkeypatch.setattr(ArchiveReader, "decode_chunks",
                        lambda self, chunks, prefixes=None: decoded.extend(chunks) or original(self, chunks, prefixes))
    report = api.verify(archive, full=True)
    assert report.ok and report.bytes_checked == 100 * 1024 + 50 * 1000
    assert sorted(decoded) == list(range(chunks))


def test_small_files_share_chunks_without_straddling(tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(50):
        (src / f"f{i:02}.txt").write_bytes(f"file {i}\n".encode() * (i + 1) * 10)
    archive = str(tmp_path / "many.lza")
    api.pack([str(src)], archive, codec="zstd", chunk_size=4096)
    entries = [e for e in api.list_entries(archive) if e.size]
    assert all(len(e.chunks) == 1 for e in entries)  # every file fits a chunk, so none is split
    assert len({e.chunks[0].chunk for e in entries}) < len(entries)  # and small files share chunks


def test_several_sources_and_excludes(tmp_path, cli):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("keep")
    (tmp_path / "a" / "skip.o").write_text("skip")
    (tmp_path / "a" / "cache").mkdir()
    (tmp_path / "a" / "cache" / "x").write_text("x")
    (tmp_path / "b.txt").write_text("b")
    out = str(tmp_path / "o.lza")
    result = cli("pack", "--codec", "zstd", str(tmp_path / "a"), str(tmp_path / "b.txt"), "-o", out, "-x", "*.o", "--exclude", "a/cache", "-q")
    assert result.exit_code == 0, result.stderr
    assert [e.path for e in api.list_entries(out)] == ["a", "a/keep.txt", "b.txt"]


@pytest.mark.parametrize("pattern,left", [
    ("cache/*", ["t", "t/a", "t/a/cache", "t/a/keep.txt", "t/cache", "t/cache.txt"]),  # a path at any depth, as tar
    ("a/cache", ["t", "t/a", "t/a/keep.txt", "t/cache", "t/cache/x", "t/cache.txt"]),
    ("cache/", ["t", "t/a", "t/a/keep.txt", "t/cache.txt"]),  # a trailing / matches directories only
    ("cache.txt/", ["t", "t/a", "t/a/cache", "t/a/cache/x", "t/a/keep.txt", "t/cache", "t/cache/x", "t/cache.txt"]),
    ("t/a", ["t", "t/cache", "t/cache/x", "t/cache.txt"]),  # the source's own name begins every path
    ("*.txt", ["t", "t/a", "t/a/cache", "t/a/cache/x", "t/cache", "t/cache/x"]),
])
def test_excludes_match_as_tar_does(pattern, left, tmp_path):
    for path in ("a/cache/x", "a/keep.txt", "cache/x", "cache.txt"):
        (tmp_path / "t" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "t" / path).write_text(path)
    archive = str(tmp_path / "o.lza")
    api.pack([str(tmp_path / "t")], archive, codec="zstd", excludes=[pattern])
    assert [e.path for e in api.list_entries(archive)] == left


def test_archive_inside_its_own_source_is_not_packed_into_itself(tmp_path):
    (tmp_path / "f.txt").write_text("hello")
    archive = str(tmp_path / "self.lza")
    api.pack([str(tmp_path)], archive, codec="zstd")
    api.pack([str(tmp_path)], archive, codec="zstd", force=True)  # the old archive and the temp file are both skipped
    names = [e.path.rsplit("/", 1)[-1] for e in api.list_entries(archive)]
    assert "self.lza" not in names and not any(n.endswith(".lza-partial") for n in names)


def test_a_source_that_is_the_archive_to_replace_is_refused_and_its_other_names_are_packed(tmp_path):
    """`lza pack notes.txt -o notes.txt --force` skipped the source as the archive being replaced, then replaced
    it: the user's file became an archive of nothing, without a word. Now a source that is the output is refused
    before any work, however either is spelled. A hard link to the output was skipped too (by inode) though it
    outlives the pack; now only the output's own name is, with a warning."""
    notes, other = tmp_path / "notes.txt", tmp_path / "other.txt"
    notes.write_text("the user's notes")
    other.write_text("other")
    for sources in ([str(notes)], [str(other), f"{tmp_path}/./notes.txt"]):
        with pytest.raises(api.UsageError, match="notes.txt: is both a source and the archive to write"):
            api.pack(sources, str(notes), codec="zstd", force=True)
        assert notes.read_text() == "the user's notes"
    os.link(notes, tmp_path / "notes.lza")
    api.pack([str(notes)], str(tmp_path / "notes.lza"), codec="zstd", force=True)
    assert b"".join(api.cat(str(tmp_path / "notes.lza"), "notes.txt")) == b"the user's notes"
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f.txt").write_text("f")
    os.link(tree / "f.txt", tree / "t.lza")  # the output, a hard link of f.txt: f.txt stays and is packed
    warnings = Warnings()
    api.pack([str(tree)], str(tree / "t.lza"), codec="zstd", force=True, progress=warnings)
    assert [e.path for e in api.list_entries(str(tree / "t.lza"))] == ["tree", "tree/f.txt"]
    assert warnings.said == [f"{tree / 't.lza'}: skipped: it is the archive this pack replaces"]


def test_a_source_that_is_a_symlink_to_a_directory_is_stored_as_the_link_with_a_hint(tmp_path):
    """As tar: `pack link` stores the link, `pack link/` the directory it points to; the first packed one entry of
    0 bytes without a word, which reads like an empty directory."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f.txt").write_text("f")
    (tmp_path / "link").symlink_to("real")
    warnings = Warnings()
    link = str(tmp_path / "link")
    api.pack([link], str(tmp_path / "a.lza"), codec="zstd", progress=warnings)
    assert [(e.path, e.target) for e in api.list_entries(str(tmp_path / "a.lza"))] == [("link", "real")]
    assert warnings.said == [f"{link}: a symlink to a directory, stored as the link: name it {link}/ to pack the "
                        f"directory's contents"]
    api.pack([link + "/"], str(tmp_path / "b.lza"), codec="zstd", progress=warnings)
    assert [e.path for e in api.list_entries(str(tmp_path / "b.lza"))] == ["link", "link/f.txt"] and len(warnings.said) == 1


def test_a_tree_deeper_than_the_recursion_limit_packs(tmp_path):
    """Paths of 4,095 bytes nest 2,000 directories: the recursive walk stopped with a RecursionError (a traceback)
    past about 1,000, and checking each path cost its depth times its length."""
    fd = os.open(tmp_path, os.O_RDONLY)
    for name in ["deep"] + ["a"] * 1100:  # one level at a time: os.makedirs recurses as deep as the tree
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    bottom = tmp_path / "deep" / ("a/" * 1100)
    (bottom / "f.txt").write_text("at the bottom")
    try:
        archive = str(tmp_path / "deep.lza")
        api.pack([str(tmp_path / "deep")], archive, codec="zstd")
        entries = api.list_entries(archive)
        assert len(entries) == 1102 and entries[-1].path == "deep/" + "a/" * 1100 + "f.txt"
        assert b"".join(api.cat(archive, entries[-1].path)) == b"at the bottom"
    finally:  # bottom up: shutil.rmtree, which cleans pytest's temporary directories, recurses too
        (bottom / "f.txt").unlink()
        for directory in [bottom, *bottom.parents][:1101]:
            directory.rmdir()


def line_cut_sizes(data: bytes, chunk_size: int) -> list[int]:
    """The line_cuts rule for one file alone, restated: a full chunk that more of the file follows ends after the last
    line break in its final eighth, where there is one (a file that ends where its chunk does is not cut)."""
    sizes = []
    while len(data) > chunk_size:
        sizes.append(data.rfind(b"\n", chunk_size - chunk_size // 8, chunk_size) + 1 or chunk_size)
        data = data[sizes[-1]:]
    return sizes + ([len(data)] if data else [])


def write_store(path: str, files: list[bytes], chunk_size: int, line_cuts: bool, major: int = 2) -> None:
    with open(path, "wb") as out:
        archive = ArchiveWriter(out, [], chunk_size=chunk_size, line_cuts=line_cuts, major=major)
        for i, data in enumerate(files):
            archive.add_file(f"f{i}", io.BytesIO(data), mode=0o644, mtime_ns=0, size=len(data))
        archive.finish()


lines = st.binary(max_size=6).map(lambda b: b.replace(b"\n", b"")) | st.sampled_from([b"", b"\n", b"x\n"])


@settings(max_examples=150, deadline=None)
@given(data=st.lists(lines, max_size=400).map(b"\n".join), chunk_size=st.sampled_from([1, 7, 8, 64, 100]),
       read_block=st.sampled_from([3, 64, 1 << 20]))
@example(data=b"\n" * 9 + b"\x00" * 48 + b"\nx\n\x00\x00\x00\x00", chunk_size=64, read_block=3)  # 64 bytes: one chunk
def test_line_cuts_end_full_chunks_after_their_last_line_break_in_the_final_eighth(data, chunk_size, read_block):
    """Whatever blocks the file is read in; and without line_cuts every full chunk is exactly chunk_size."""
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(writer, "READ_BLOCK", read_block):
        for line_cuts in (True, False):
            path = os.path.join(tmp, f"{line_cuts}.lza")
            write_store(path, [data], chunk_size, line_cuts)
            with ArchiveReader.open(path) as archive:
                sizes = [c.raw_size for c in archive.index.chunks]
                assert [(r.chunk, r.offset) for r in archive.entries[0].chunks] == [(i, 0) for i in range(len(sizes))]
            exact = [len(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]
            assert sizes == (line_cut_sizes(data, chunk_size) if line_cuts else exact)
            assert api.verify(path, full=True).ok
            api.extract(path, os.path.join(tmp, f"out-{line_cuts}"))
            assert files_under(os.path.join(tmp, f"out-{line_cuts}")) == {"f0": data}


@settings(max_examples=150, deadline=None)
@example(files=[b"a" * 35 + b"\ncd", b"x" * 100], chunk_size=40)  # the last line break of chunk 0 is the first file's
@given(files=st.lists(st.lists(lines, max_size=60).map(b"\n".join), max_size=8), chunk_size=st.sampled_from([8, 40, 100]))
def test_line_cuts_never_move_an_earlier_file_and_every_file_reads_back(files, chunk_size):
    """A cut moves bytes of the file being added only: the slices of the files before it are final (format 1 stores
    them; format 2 implies them from the sizes, the same slices)."""
    with tempfile.TemporaryDirectory() as tmp:
        for major in (1, 2):
            path = os.path.join(tmp, f"{major}.lza")
            write_store(path, files, chunk_size, True, major)
            with ArchiveReader.open(path) as archive:
                assert all(c.raw_size <= chunk_size for c in archive.index.chunks)
            api.extract(path, os.path.join(tmp, f"out-{major}"))
            assert files_under(os.path.join(tmp, f"out-{major}")) == {f"f{i}": data for i, data in enumerate(files)}



def test_a_modification_time_beyond_what_the_format_holds_is_stored_as_its_nearest(tmp_path):
    """A file dated 2300 (a damaged clock): its nanoseconds exceed int64, and pack wrote an archive that no reader
    accepted ('invalid index'). Now the time is stored as the latest the format holds, with a warning, and the writer
    refuses to write any entry a reader would refuse."""
    (tmp_path / "t").mkdir()
    future = tmp_path / "t" / "future.txt"
    future.write_text("from the future")
    year_2300 = 10_413_792_000 * 10**9
    os.utime(future, ns=(year_2300, year_2300))
    archive = str(tmp_path / "t.lza")
    warnings = Warnings()
    api.pack([str(tmp_path / "t")], archive, codec="zstd", progress=warnings)
    assert warnings.said == [f"{future}: modification time outside 1677-09-21 .. 2262-04-11, which the format holds: "
                        f"stored as 2262-04-11"]
    latest = C.MTIME_RANGE[1]
    assert [e.mtime_ns for e in api.list_entries(archive) if e.path == "t/future.txt"] == [latest]
    api.extract(archive, str(tmp_path / "out"))
    assert (tmp_path / "out" / "t" / "future.txt").read_text() == "from the future"
    entry = api.list_entries(archive)[1]
    with pytest.raises(ValueError, match="mtime_ns"):
        dataclasses.replace(entry, mtime_ns=latest + 1).to_wire(2)


def test_links_leading_out_of_the_tree_are_packed_with_a_warning_and_restored_with_trust_links(tmp_path):
    """A tree of one's own may hold links that safe extraction refuses (a virtualenv's python -> /usr/bin/python3):
    pack stores them and says which; extract refuses them, naming --trust-links, which restores the tree whole."""
    tree = tmp_path / "venv"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "activate").write_text("# activate")
    os.symlink("/usr/bin/python3", tree / "bin" / "python")
    os.symlink("../../../elsewhere", tree / "bin" / "up")
    os.symlink("../../in-the-destination", tree / "bin" / "out-of-the-tree")  # not of the destination: no warning
    (tree / "lib").mkdir()
    os.symlink("lib/..", tree / "up-out-of-a-directory")  # lib holds no link, and is a directory: no warning
    os.symlink("activate", tree / "bin" / "inside")
    os.symlink("bin/../../..", tree / "root")
    for i in range(12):
        os.symlink(f"/abs/{i}", tree / f"abs-{i:02}")
    archive = str(tmp_path / "venv.lza")
    warnings = Warnings()
    api.pack([str(tree)], archive, codec="zstd", progress=warnings)
    unsafe = {"venv/bin/python": "symlink target '/usr/bin/python3' is absolute",
              "venv/bin/up": "symlink target '../../../elsewhere' leaves the destination",
              "venv/root": "symlink target 'bin/../../..' leaves the destination"}
    unsafe |= {f"venv/abs-{i:02}": f"symlink target '/abs/{i}' is absolute" for i in range(12)}
    in_order = [e.path for e in api.list_entries(archive) if e.path in unsafe]
    assert len(in_order) == 15
    assert warnings.said == [f"{path}: stored, but extracted only with --trust-links: {unsafe[path]}"
                             for path in in_order[:10]] + ["and 5 more such symlinks: all extracted only with --trust-links"]
    with pytest.raises(api.PathRefused, match=r": --trust-links creates it as archived \(and 14 more; nothing was "):
        api.extract(archive, str(tmp_path / "safe"))
    assert not (tmp_path / "safe").exists() or not os.listdir(tmp_path / "safe")
    api.extract(archive, str(tmp_path / "trusted"), trust_links=True)
    assert snapshot(str(tmp_path / "trusted" / "venv")) == snapshot(str(tree))
    skipped = Warnings()
    api.extract(archive, str(tmp_path / "skipped"), skip_unsafe=True, progress=skipped)
    assert len(skipped.said) == 15 and os.readlink(tmp_path / "skipped" / "venv" / "bin" / "inside") == "activate"


def test_sources_beyond_the_format_limits_are_refused_not_written(tmp_path, monkeypatch):
    """More entries, chunks or index bytes than an archive holds (SPEC 8) made an archive no reader accepted, after
    all the compression work. Now: too many entries is refused before any work, and the writer refuses any index a
    reader would (nothing is left at the output either way). The limits are lowered here to make them reachable."""
    for name in ("a", "b", "c"):
        (tmp_path / "t" / name).mkdir(parents=True)
        (tmp_path / "t" / name / "f").write_text(name * 40)
    archive = tmp_path / "t.lza"
    monkeypatch.setattr(C, "MAX_ENTRIES", 6)
    with pytest.raises(api.UsageError, match="the sources hold 7 entries, more than the 6 an archive holds"):
        api.pack([str(tmp_path / "t")], str(archive), codec="zstd")
    monkeypatch.setattr(C, "MAX_ENTRIES", 7)
    monkeypatch.setattr(C, "MAX_CHUNKS", 2)
    with pytest.raises(api.LzaError, match="cannot hold these sources: 3 chunks, more than the 2 an archive holds"):
        api.pack([str(tmp_path / "t")], str(archive), codec="zstd", chunk_size=40)
    monkeypatch.setattr(C, "MAX_CHUNKS", 1 << 26)
    monkeypatch.setattr(C, "MAX_INDEX_RAW", 100)
    with pytest.raises(api.LzaError, match="cannot hold these sources: an index of 1.. bytes, more than the 100"):
        api.pack([str(tmp_path / "t")], str(archive), codec="zstd")
    assert not archive.exists() and os.listdir(tmp_path) == ["t"]
    monkeypatch.setattr(C, "MAX_INDEX_RAW", 1 << 30)
    api.pack([str(tmp_path / "t")], str(archive), codec="zstd", chunk_size=40)
    assert len(api.list_entries(str(archive))) == 7
