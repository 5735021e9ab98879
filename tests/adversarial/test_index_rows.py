"""Indexes drawn from a grammar of hostile entries, judged by the entry rules of SPEC.md written out again here.

The crafted suites name each attack once; these draw them together (paths, types, modes, times, sizes, checks, slices,
link targets, entries of the wrong shape) with every checksum valid, so that only the index's rules stand between an
entry and the disk. The rules below restate SPEC 5, 5.1 and 8 (format 2) and appendix A.5 (format 1) independently of
`records.py`: an index they refuse must be refused by list, verify and extract with nothing written; one they accept
must list, and extract to exactly the tree it describes, but for a file whose content fails its check (that file and
its hard links never appear, exit 3) or a link the file system cannot hold (left out, exit 1), or when a link is unsafe
(SPEC 10.3: nothing is written).
"""

from __future__ import annotations

import ast
import copy
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive.errors import EXIT_FAILURE, EXIT_INTEGRITY, EXIT_OK
from lzarchive.format import constants as C
from lzarchive.format.wire import digest

from ..conftest import run_cli, snapshot
from .craft import craft, craft2

INT64 = (-(1 << 63), (1 << 63) - 1)
FIELDS = {0: 6, 1: 4, 2: 5, 3: 5}  # a format 2 row's length by type: [type, path, mode, mtime_ns] then size and check, or target
KEYS = {0: {"size", "hash", "chunks"}, 1: set(), 2: {"target"}, 3: {"size", "hash", "chunks", "target"}}  # format 1
LINUX_TARGET_BYTES = 4095  # symlink(2) takes less than PATH_MAX; SPEC 5 allows one byte more (other systems)
FILE_SYSTEM_SECONDS = (-(1 << 31), 1 << 31)  # what every common file system keeps (ext4 clamps to 1901..2446)

paths = st.lists(st.sampled_from(["a", "b", "c", "é", "e\u0301", "x" * 255]), min_size=1, max_size=3).map("/".join)
symlink_targets = st.sampled_from(["a", "b", "a/b", "c", "é", "x" * LINUX_TARGET_BYTES, "x" * 4096, "../a", "/etc"])


def fresh(*values: str):
    """One of these literals, built anew for every draw (a hostile list must not be shared between examples)."""
    return st.sampled_from(values).map(ast.literal_eval)


# what a hostile writer puts in each field (a few of them valid after all: the rules decide)
HOSTILE = {
    "type": st.sampled_from([0, 1, 2, 3, 4, 255, -1, True, "0", None]),
    "path": st.sampled_from(["/a", "/", "a//b", "a/./b", "a/..", "../a", ".", "", "a\0b", "x" * 256, b"a", 7,
                             "/".join(["y" * 255] * 17)]),  # the last over 4096 bytes
    "mode": st.sampled_from([0o10000, -1, True, 1.5, "644", None]),
    "mtime_ns": st.sampled_from([INT64[1] + 1, (1 << 64) - 1, 2.5, None, False]),
    "size": st.sampled_from([-1, 0, 1, 2, INT64[1], INT64[1] + 1, 1.0, None]),
    "check": st.sampled_from([b"\0" * 8, b"\0" * 7, b"\0" * 9, "x" * 8, None]),
    "hash": st.sampled_from([b"\0" * 32, b"\0" * 31, b"\0" * 8, "x" * 32, None]),
    "target": st.sampled_from(["", "a\0", "x" * 4097, "/", "a", "b", 7, b"a", None]),
    "chunks": fresh("[]", "'x'", "[[0, 0]]", "[[0, 0, 1, 2]]", "[['0', 0, 1]]", "[[0, 0, 0]]", "[[9, 0, 1]]",
                    "[[0, -1, 1]]", "[[0, 0, 99]]", "None"),
    "slice field": st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 99, INT64[1], True]),
    "entry": fresh("[]", "{}", "{'path': 'a'}", "'a'", "None"),
    "extra": st.sampled_from([0, None, "a"]),
}
ROW_FIELDS = ("type", "path", "mode", "mtime_ns")


@st.composite
def valid_tree(draw) -> tuple[list, bytes]:
    """A valid tree as format 2 rows (files with their checks, hard links to earlier files) and the files' bytes."""
    rows, stored = [], b""
    for path in draw(st.lists(paths, unique=True, max_size=6)):
        kind = draw(st.sampled_from([0, 0, 1, 2, 3]))
        row = [kind, path, draw(st.sampled_from([0o644, 0o755, 0o600, 0, 0o4755, 0o2755, 0o1777, 0o7777])),
               draw(st.sampled_from([0, 1_600_000_000_123_456_789, -1, 1, INT64[0], INT64[1]]))]
        if kind == 0:
            data = draw(st.binary(max_size=6))
            row += [len(data), digest(C.CONTEXT_ENTRY, data)[: C.CHECK_SIZE]]
            stored += data
        elif kind == 2:
            row.append(draw(symlink_targets))
        elif kind == 3:
            files = [earlier[1] for earlier in rows if earlier[0] == 0]
            row.append(draw(st.sampled_from(files) if files else paths))
        rows.append(row)
    return rows, stored


@st.composite
def hostile_rows(draw) -> tuple[list, bytes]:
    """Format 2: a valid tree with up to two fields, rows or row lengths changed, and a byte the files may not hold."""
    rows, stored = draw(valid_tree())
    for _ in range(draw(st.integers(0, 2)) if rows else 0):
        i = draw(st.integers(0, len(rows) - 1))
        fields = list(range(len(rows[i]))) if isinstance(rows[i], list) else []
        change = draw(st.sampled_from(["entry", "extra", "cut"] + fields if fields else ["entry"]))
        if change == "cut":
            rows[i] = rows[i][:-1]
        elif change == "extra":
            rows[i] = rows[i] + [draw(HOSTILE["extra"])]
        elif change == "entry":
            rows[i] = draw(HOSTILE["entry"])
        else:
            names = ROW_FIELDS + {0: ("size", "check"), 2: ("target",), 3: ("target",)}.get(rows[i][0], ())
            rows[i][change] = draw(HOSTILE[names[change] if change < len(names) else "extra"])
    return rows, stored + draw(st.sampled_from([b"", b"", b"", b"!"]))


def slices_of(start: int, size: int, chunks: list[bytes]) -> list[list[int]]:
    """[chunk, offset, length] of bytes [start, start + size) of the chunks' concatenation."""
    slices, chunk_start = [], 0
    for i, chunk in enumerate(chunks):
        low, high = max(start, chunk_start), min(start + size, chunk_start + len(chunk))
        if low < high:
            slices.append([i, low - chunk_start, high - low])
        chunk_start += len(chunk)
    return slices


@st.composite
def hostile_maps(draw) -> tuple[list, list[bytes]]:
    """Format 1: a valid tree's entry maps with slices into its chunks (bytes that no file uses between files), then
    up to two keys, slices or entries changed; and the chunks."""
    rows, _ = draw(valid_tree())
    maps, files, starts, stored = [], {}, {}, b""
    for kind, path, mode, mtime, *rest in rows:
        entry = {"path": path, "type": kind, "mode": mode, "mtime_ns": mtime}
        if kind == 0:
            stored += draw(st.sampled_from([b"", b"", b"~"]))
            content = draw(st.binary(min_size=rest[0], max_size=rest[0]))
            entry.update(size=rest[0], hash=digest(C.CONTEXT_ENTRY, content))
            files[path], starts[path], stored = entry, len(stored), stored + content
        elif kind in (2, 3):
            entry["target"] = rest[0]
        maps.append(entry)
    cut = draw(st.integers(1, 4))
    chunks = [stored[i:i + cut] for i in range(0, len(stored), cut)]
    for path, entry in files.items():
        entry["chunks"] = slices_of(starts[path], entry["size"], chunks)
    for entry in maps:
        if entry["type"] == 3:
            linked = files.get(entry["target"], {"size": 0, "hash": digest(C.CONTEXT_ENTRY, b""), "chunks": []})
            entry.update(size=linked["size"], hash=linked["hash"], chunks=copy.deepcopy(linked["chunks"]))
    for _ in range(draw(st.integers(0, 2)) if maps else 0):
        i = draw(st.integers(0, len(maps) - 1))
        if not isinstance(maps[i], dict) or not maps[i]:
            maps[i] = draw(HOSTILE["entry"])
            continue
        change = draw(st.sampled_from(["entry", "drop", "extra", "slice", "earlier slices"] + sorted(maps[i])))
        if change == "entry":
            maps[i] = draw(HOSTILE["entry"])
        elif change == "drop":
            del maps[i][draw(st.sampled_from(sorted(maps[i])))]
        elif change == "extra":
            maps[i]["owner"] = draw(HOSTILE["extra"])
        elif change == "slice" and isinstance(maps[i].get("chunks"), list) and maps[i]["chunks"]:
            ref = draw(st.sampled_from(maps[i]["chunks"]))
            if isinstance(ref, list) and ref:
                ref[draw(st.integers(0, len(ref) - 1))] = draw(HOSTILE["slice field"])
        elif change == "earlier slices" and files:  # a file's bytes claimed again, or claimed backwards
            maps[i]["chunks"] = copy.deepcopy(files[draw(st.sampled_from(sorted(files)))].get("chunks"))
        elif change in HOSTILE:
            maps[i][change] = draw(HOSTILE[change])
    return maps, chunks


def is_int(value, lo: int, hi: int) -> bool:
    return type(value) is int and lo <= value <= hi


def valid_path(path) -> bool:
    if not isinstance(path, str) or "\0" in path or path.startswith("/"):
        return False
    parts = path.split("/")
    return (0 < len(path.encode()) <= C.MAX_PATH_BYTES and all(part not in ("", ".", "..") for part in parts)
            and all(len(part.encode()) <= C.MAX_COMPONENT_BYTES for part in parts))


def valid_symlink_target(target) -> bool:
    return isinstance(target, str) and "\0" not in target and 0 < len(target.encode()) <= C.MAX_LINK_TARGET_BYTES


def valid_slices(slices, chunks: list[bytes]) -> bool:
    return isinstance(slices, list) and all(
        isinstance(s, list) and len(s) == 3 and is_int(s[0], 0, len(chunks) - 1) and is_int(s[1], 0, INT64[1])
        and is_int(s[2], 1, INT64[1]) and s[1] + s[2] <= len(chunks[s[0]]) for s in slices)


def nothing_under_a_non_directory(kinds: dict[str, int]) -> bool:
    return all(kinds.get("/".join(path.split("/")[:i]), 1) == 1 for path in kinds for i in range(1, path.count("/") + 1))


def entries_of_rows(rows: list, stored: bytes) -> list[tuple] | None:
    """SPEC 5, 5.1 and 8: the rows as (type, path, mode, mtime_ns, content or target, check), or None if refused."""
    kinds: dict[str, int] = {}
    entries, start = [], 0
    for row in rows:
        if not isinstance(row, list) or not row or not is_int(row[0], 0, 3) or len(row) != FIELDS[row[0]]:
            return None
        kind, path, mode, mtime, *rest = row
        if not valid_path(path) or path in kinds or not is_int(mode, 0, 0o7777) or not is_int(mtime, *INT64):
            return None
        if kind == 0:
            if not (is_int(rest[0], 0, INT64[1]) and isinstance(rest[1], bytes) and len(rest[1]) == C.CHECK_SIZE):
                return None
            entries.append((kind, path, mode, mtime, stored[start:start + rest[0]], rest[1]))
            start += rest[0]
        elif (kind == 2 and not valid_symlink_target(rest[0])) or (kind == 3 and kinds.get(rest[0]) != 0):
            return None
        else:
            entries.append((kind, path, mode, mtime, rest[0] if rest else None, None))
        kinds[path] = kind
    return entries if nothing_under_a_non_directory(kinds) and start == len(stored) else None


def entries_of_maps(maps: list, chunks: list[bytes]) -> list[tuple] | None:
    """Appendix A.5 (and SPEC 5.1, 8): the maps as entries_of_rows gives them, or None if refused."""
    kinds: dict[str, int] = {}
    files, entries, position = {}, [], (0, 0)
    for entry in maps:
        if (not isinstance(entry, dict) or not is_int(entry.get("type"), 0, 3)
                or entry.keys() != {*ROW_FIELDS} | KEYS[entry["type"]]):
            return None
        kind, path, mode, mtime = (entry[key] for key in ROW_FIELDS)
        if not valid_path(path) or path in kinds or not is_int(mode, 0, 0o7777) or not is_int(mtime, *INT64):
            return None
        if kind in (0, 3) and not (is_int(entry["size"], 0, INT64[1]) and isinstance(entry["hash"], bytes)
                                   and len(entry["hash"]) == C.HASH_SIZE and valid_slices(entry["chunks"], chunks)
                                   and sum(s[2] for s in entry["chunks"]) == entry["size"]):
            return None
        if kind == 0:
            for chunk, offset, length in entry["chunks"]:  # strictly forward through the chunks
                if (chunk, offset) < position:
                    return None
                position = (chunk, offset + length)
            content = b"".join(chunks[c][o:o + n] for c, o, n in entry["chunks"])
            entries.append((kind, path, mode, mtime, content, entry["hash"]))
            files[path] = entry
        elif kind == 2 and not valid_symlink_target(entry["target"]):
            return None
        elif kind == 3 and (entry["target"] not in files or any(entry[key] != files[entry["target"]][key]
                                                                 for key in KEYS[0])):
            return None
        else:
            entries.append((kind, path, mode, mtime, entry.get("target"), None))
        kinds[path] = kind
    return entries if nothing_under_a_non_directory(kinds) else None


def expected_tree(entries: list[tuple]) -> dict[str, tuple]:
    """What extraction must leave, per path: a file's bytes, permission bits and mtime (where file systems keep it);
    a directory's bits and mtime; a link's target and mtime; a hard link its target's inode."""
    tree = {}
    for kind, path, mode, mtime, content, _ in entries:
        for i in range(1, path.count("/") + 1):
            tree.setdefault("/".join(path.split("/")[:i]), ("implicit dir",))
        kept = mtime if FILE_SYSTEM_SECONDS[0] * 10**9 <= mtime < FILE_SYSTEM_SECONDS[1] * 10**9 else "clamped"
        tree[path] = (("file", content, mode & 0o777, kept), ("dir", mode & 0o1777, kept), ("symlink", content, kept),
                      tree.get(content))[kind]
    return tree


def check_commands(data: bytes, entries: list[tuple] | None, box) -> None:
    """list, verify and extract (and cat of each file) of the crafted archive against what the rules say."""
    archive, dest = box / "crafted.lza", box / "dest"
    archive.write_bytes(data)
    dest.mkdir()
    results = {command: run_cli(command, str(archive)) for command in ("list", "verify")}
    results["extract"] = run_cli("extract", str(archive), "-C", str(dest))
    assert sorted(os.listdir(box)) == ["crafted.lza", "dest"]
    if entries is None:
        for command, result in results.items():
            assert result.exit_code == EXIT_INTEGRITY, (command, result.stderr)
            assert result.stderr.startswith("lza: error:")
        assert os.listdir(dest) == []
        return
    tree = expected_tree(entries)
    wrong = sorted(path for kind, path, _, _, content, check in entries  # content the check does not match
                   if kind == 0 and digest(C.CONTEXT_ENTRY, content)[: len(check)] != check)
    assert results["list"].exit_code == EXIT_OK, results["list"].stderr
    assert results["verify"].exit_code == (EXIT_INTEGRITY if wrong else EXIT_OK), results["verify"].stderr
    extract, found = results["extract"], snapshot(str(dest))
    found.pop("<hardlink groups>")  # each hard link is checked against its target below
    if extract.exit_code == EXIT_FAILURE and "symlink target" in extract.stderr:  # SPEC 10.3, checked in its own tests
        assert found == {} and any(kind == 2 for kind, *_ in entries)
        return
    # a file whose check fails never gets its name, nor a hard link to it; the others are extracted all the same
    lost = set(wrong) | {path for kind, path, _, _, target, _ in entries if kind == 3 and target in wrong}
    too_long = {path for kind, path, _, _, target, _ in entries if kind == 2 and len(target.encode()) > LINUX_TARGET_BYTES}
    assert not lost & set(found)
    for path in sorted(lost | too_long):
        assert f"{path}: not extracted: " in extract.stderr, extract.stderr
    if lost or too_long:
        assert extract.exit_code == (EXIT_INTEGRITY if lost else EXIT_FAILURE), extract.stderr
        assert "name too long for the file system" in extract.stderr or not too_long
    else:
        assert extract.exit_code == EXIT_OK, extract.stderr
    tree = {path: value for path, value in tree.items() if path not in lost | too_long}
    want = {path: value for path, value in tree.items() if value[0] != "implicit dir"}
    assert {path: value[:-1] + ("clamped",) if want[path][-1] == "clamped" else value
            for path, value in found.items() if path in want} == want
    assert all(found[path][0] == "dir" for path in tree.keys() - want.keys())
    assert found.keys() == tree.keys()
    for kind, path, _, _, target, _ in entries:
        if kind == 0 and path in lost:
            assert run_cli("cat", str(archive), path).exit_code == EXIT_INTEGRITY
        elif kind == 0:
            assert run_cli("cat", str(archive), path).stdout == tree[path][1]
        elif kind == 3 and path not in lost:
            assert os.path.samefile(dest / path, dest / target)


@settings(max_examples=400, deadline=None)
@given(drawn=hostile_rows(), cut=st.integers(1, 4))
def test_a_format_2_index_is_refused_exactly_when_the_spec_refuses_it(drawn, cut, tmp_path_factory):
    rows, stored = drawn
    chunks = [stored[i:i + cut] for i in range(0, len(stored), cut)]  # several chunks, one file across two of them
    check_commands(craft2(rows, chunks), entries_of_rows(rows, stored), tmp_path_factory.mktemp("box"))


@settings(max_examples=400, deadline=None)
@given(drawn=hostile_maps())
def test_a_format_1_index_is_refused_exactly_when_appendix_a_refuses_it(drawn, tmp_path_factory):
    """Format 1 names each file's slices: bytes no file uses are allowed, slices that go back or overlap are not."""
    maps, chunks = drawn
    check_commands(craft(maps, chunks), entries_of_maps(maps, chunks), tmp_path_factory.mktemp("box"))
