"""Format layer: one frozen dataclass per on-disk record, with its writer (to_wire) and reader (from_wire) side by side.

Readers check everything before trusting anything and raise ValueError with a reason; the container layer turns
that into an error naming the archive.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, replace
from typing import Any

import zstandard

from . import constants as C
from .wire import digest, pack, read_varint, reading, unpack, varint, zstd_decompress

_HEADER_FIXED = struct.Struct("<8sHHIIIII")
_CHUNK_FIXED = struct.Struct("<4sBBHII32s32s")
_INDEX_FIXED = struct.Struct("<4sB3sQ")
_FOOTERS = {1: struct.Struct("<QQ32s8s8s"), 2: struct.Struct("<Q8s8s")}
assert _HEADER_FIXED.size == C.HEADER_FIXED_SIZE
assert _CHUNK_FIXED.size == C.CHUNK_HEADER_SIZE
assert _INDEX_FIXED.size == C.INDEX_HEADER_SIZE
assert all(_FOOTERS[major].size == size for major, size in C.FOOTER_SIZES.items())


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise ValueError(reason)


def _check_keys(obj: Any, what: str, required: set[str], optional: set[str] = frozenset(), *, strict: bool = True) -> None:
    _require(isinstance(obj, dict), f"{what} is not a map")
    missing = required - obj.keys()
    _require(not missing, f"{what} lacks {', '.join(sorted(missing))}")
    unknown = obj.keys() - required - optional
    _require(not (strict and unknown), f"{what} has unknown keys {', '.join(sorted(map(str, unknown)))}")


def _check_int(value: Any, what: str, lo: int, hi: int) -> int:
    _require(type(value) is int and lo <= value <= hi, f"{what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _check_hash(value: Any, what: str, size: int = C.HASH_SIZE) -> bytes:
    _require(isinstance(value, bytes) and len(value) == size, f"{what} must be {size} bytes")
    return value


def _check_row(obj: Any, what: str, length: int, *, strict: bool) -> list:
    """A format 2 record: an array of `length` fields; a later minor version may append fields (ignored when not
    strict, SPEC 2)."""
    _require(isinstance(obj, list) and len(obj) >= length and not (strict and len(obj) > length),
             f"{what} must be an array of {length} fields")
    return obj


def check_size(major: int) -> int:
    """Bytes of every checksum but the header's: whole blake3 hashes in format 1, 64-bit checks in format 2."""
    return C.HASH_SIZE if major == 1 else C.CHECK_SIZE


def checks_out(expected: bytes, context: str, *parts: bytes) -> bool:
    """Whether data matches a stored checksum of either format (a check is a hash's first bytes)."""
    return digest(context, *parts)[: len(expected)] == expected


# ----------------------------------------------------------------------------------------------------- header


@dataclass(frozen=True)
class ModelRef:
    """A model an archive's lm chunks need: decoding requires a model whose compiled file hashes to model_hash."""

    name: str
    source: str
    model_hash: bytes
    tokenizer_hash: bytes | None  # format 1 only: the model file holds the token table, so model_hash covers it
    numerics: str

    def to_wire(self, major: int) -> dict | list:
        if major == 1:
            return {"name": self.name, "source": self.source, "model_hash": self.model_hash,
                    "tokenizer_hash": self.tokenizer_hash, "numerics": self.numerics}
        return [self.name, self.source, self.model_hash, self.numerics]

    @classmethod
    def from_wire(cls, obj: Any, *, major: int, strict: bool) -> ModelRef:
        if major == 1:
            _check_keys(obj, "model record", {"name", "source", "model_hash", "tokenizer_hash", "numerics"}, strict=strict)
            name, source, model_hash, numerics = obj["name"], obj["source"], obj["model_hash"], obj["numerics"]
            tokenizer_hash = _check_hash(obj["tokenizer_hash"], "tokenizer_hash")
        else:
            name, source, model_hash, numerics = _check_row(obj, "model record", 4, strict=strict)[:4]
            tokenizer_hash = None
        for key, value in (("name", name), ("source", source), ("numerics", numerics)):
            _require(isinstance(value, str) and len(value) <= 1024, f"model {key} must be a string")
        return cls(name, source, _check_hash(model_hash, "model_hash"), tokenizer_hash, numerics)


@dataclass(frozen=True)
class Header:
    models: tuple[ModelRef, ...] = ()
    major: int = C.FORMAT_MAJOR
    minor: int = -1  # -1: the lowest minor version that can express this header (1.0 without models, 1.1, 2.0)
    incompat_flags: int = 0
    write_incompat_flags: int = 0
    compat_flags: int = 0

    def to_wire(self) -> bytes:
        models = [m.to_wire(self.major) for m in self.models]
        body = pack({"models": models} if self.major == 1 else [models])
        minor = self.minor if self.minor >= 0 else (1 if self.major == 1 and self.models else 0)
        fixed = _HEADER_FIXED.pack(
            C.HEADER_MAGIC,
            self.major,
            minor,
            self.incompat_flags,
            self.write_incompat_flags,
            self.compat_flags,
            len(body),
            0,
        )
        return fixed + body + digest(C.CONTEXT_HEADER, fixed, body)

    @staticmethod
    def body_size(fixed: bytes) -> int:
        """Size of the msgpack body announced by the 32 fixed bytes (magic already checked by the caller)."""
        size = _HEADER_FIXED.unpack(fixed)[6]
        _require(size <= C.MAX_HEADER_BODY, f"header body size {size} exceeds the limit {C.MAX_HEADER_BODY}")
        return size

    @classmethod
    def from_wire(cls, data: bytes) -> Header:
        """Parse fixed part + body + hash. Version and flags are returned for the caller to judge."""
        fixed, rest = data[: C.HEADER_FIXED_SIZE], data[C.HEADER_FIXED_SIZE :]
        magic, major, minor, incompat, write_incompat, compat, body_size, reserved = _HEADER_FIXED.unpack(fixed)
        _require(magic == C.HEADER_MAGIC, "bad header magic")
        _require(len(rest) == body_size + C.HASH_SIZE, "header length mismatch")
        body, stored_hash = rest[:body_size], rest[body_size:]
        _require(digest(C.CONTEXT_HEADER, fixed, body) == stored_hash, "header checksum mismatch")
        _require(reserved == 0, "header reserved field is not zero")
        header = cls(major=major, minor=minor, incompat_flags=incompat, write_incompat_flags=write_incompat, compat_flags=compat)
        if major not in C.SUPPORTED_MINOR:
            return header  # the caller refuses it; the body of another major version is not ours to parse
        strict = minor <= C.SUPPORTED_MINOR[major]
        obj = unpack(body, max_len=C.MAX_HEADER_BODY)
        if major == 1:
            _check_keys(obj, "header body", {"models"}, strict=strict)
            listed = obj["models"]
        else:
            listed = _check_row(obj, "header body", 1, strict=strict)[0]
        _require(isinstance(listed, list) and len(listed) <= C.MAX_MODELS, "header models must be a short list")
        models = tuple(ModelRef.from_wire(m, major=major, strict=strict) for m in listed)
        return cls(models, major, minor, incompat, write_incompat, compat)

    @property
    def size(self) -> int:
        return len(self.to_wire())


# ----------------------------------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class ChunkHeader:
    """Format 1: 80 fixed bytes with two blake3 hashes. Format 2: magic, codec, varint sizes, two 64-bit checks."""

    codec: int
    raw_size: int
    stored_size: int
    plain_hash: bytes
    stored_hash: bytes
    major: int = C.FORMAT_MAJOR

    def _covered(self) -> bytes:
        """The header bytes before stored_hash: what it covers besides the payload."""
        if self.major == 1:
            return _CHUNK_FIXED.pack(C.CHUNK_MAGIC, self.codec, 0, 0, self.raw_size, self.stored_size, self.plain_hash,
                                     b"\0" * 32)[:48]
        return C.CHUNK_MAGIC_2 + bytes([self.codec]) + varint(self.raw_size) + varint(self.stored_size) + self.plain_hash

    @staticmethod
    def wire_size(major: int, raw_size: int, stored_size: int) -> int:
        if major == 1:
            return C.CHUNK_HEADER_SIZE
        return len(C.CHUNK_MAGIC_2) + 1 + len(varint(raw_size)) + len(varint(stored_size)) + 2 * C.CHECK_SIZE

    @classmethod
    def seal(cls, codec: int, plaintext: bytes, payload: bytes, major: int = C.FORMAT_MAJOR) -> tuple[ChunkHeader, bytes]:
        """Build the header for a payload and return it with the full on-disk bytes of the chunk. A payload larger
        than its plaintext is refused (readers refuse it: a writer falls back to store)."""
        if len(payload) > len(plaintext):
            raise ValueError(f"a chunk's payload ({len(payload)} bytes) is larger than its plaintext "
                             f"({len(plaintext)} bytes): it must be stored")
        size = check_size(major)
        head = cls(int(codec), len(plaintext), len(payload), digest(C.CONTEXT_CHUNK_PLAIN, plaintext)[:size],
                   b"\0" * size, major)
        covered = head._covered()
        sealed = replace(head, stored_hash=digest(C.CONTEXT_CHUNK_STORED, covered, payload)[:size])
        return sealed, covered + sealed.stored_hash + payload

    @classmethod
    def from_wire(cls, data: bytes, major: int) -> ChunkHeader:
        """Parse exactly the header's bytes (format 2: the size the index implies)."""
        if major == 1:
            magic, codec, flags, reserved, raw_size, stored_size, plain_hash, stored_hash = _CHUNK_FIXED.unpack(data)
            _require(magic == C.CHUNK_MAGIC, "bad chunk magic")
            _require(flags == 0 and reserved == 0, "chunk reserved bits are not zero")
        else:
            _require(data[:2] == C.CHUNK_MAGIC_2 and len(data) > 3, "bad chunk magic")
            codec = data[2]
            raw_size, pos = read_varint(data, 3)
            stored_size, pos = read_varint(data, pos)
            _require(data[3:pos] == varint(raw_size) + varint(stored_size), "chunk sizes are not in their shortest form")
            _require(len(data) == pos + 2 * C.CHECK_SIZE, "chunk header length disagrees with its sizes")
            plain_hash, stored_hash = data[pos : pos + C.CHECK_SIZE], data[pos + C.CHECK_SIZE :]
        _require(1 <= raw_size <= C.MAX_CHUNK_RAW, f"chunk raw size {raw_size} out of range")
        _require(stored_size <= raw_size, "chunk stored size exceeds its raw size")
        _require(codec != C.CodecId.STORE or stored_size == raw_size, "store chunk sizes differ")
        return cls(codec, raw_size, stored_size, plain_hash, stored_hash, major)

    @classmethod
    def starting(cls, data: bytes, major: int) -> ChunkHeader:
        """The header that `data` begins with, whatever follows it: for a scan for chunks where no index says where
        they lie (SPEC 3.3). ValueError if none does."""
        if major == 1:
            _require(len(data) >= C.CHUNK_HEADER_SIZE, "cut short")
            return cls.from_wire(data[: C.CHUNK_HEADER_SIZE], 1)
        _require(data[:2] == C.CHUNK_MAGIC_2 and len(data) > 3, "bad chunk magic")
        _, pos = read_varint(data, 3)
        _, pos = read_varint(data, pos)
        return cls.from_wire(data[: pos + 2 * C.CHECK_SIZE], 2)

    @staticmethod
    def magic(major: int) -> bytes:
        return C.CHUNK_MAGIC if major == 1 else C.CHUNK_MAGIC_2

    @staticmethod
    def max_size(major: int) -> int:
        return ChunkHeader.wire_size(major, C.MAX_CHUNK_RAW, C.MAX_CHUNK_RAW)

    def stored_hash_ok(self, payload: bytes) -> bool:
        return checks_out(self.stored_hash, C.CONTEXT_CHUNK_STORED, self._covered(), payload)

    def plain_hash_ok(self, plaintext: bytes) -> bool:
        return len(plaintext) == self.raw_size and checks_out(self.plain_hash, C.CONTEXT_CHUNK_PLAIN, plaintext)

    @property
    def size(self) -> int:
        return self.wire_size(self.major, self.raw_size, self.stored_size)


# ----------------------------------------------------------------------------------------------------- entries


def check_path(path: Any, what: str = "path") -> str:
    """A relative, '/'-separated UTF-8 path with no empty, '.' or '..' component and no NUL (SPEC.md "Paths")."""
    _require(isinstance(path, str), f"{what} must be a string")
    raw = path.encode("utf-8", "surrogatepass")
    _require(0 < len(raw) <= C.MAX_PATH_BYTES, f"{what} length must be 1..{C.MAX_PATH_BYTES} bytes")
    _require("\0" not in path, f"{what} contains NUL")
    _require(not path.startswith("/"), f"{what} {path!r} is absolute")
    parts = path.split("/")  # a path may have 2,000 components: the message is made only on failure
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{what} {path!r} has an empty, '.' or '..' component")
    _require(max(len(part.encode("utf-8", "surrogatepass")) for part in parts) <= C.MAX_COMPONENT_BYTES,
             f"{what} component too long")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path!r} is not valid UTF-8") from None
    return path


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A slice of one chunk's plaintext: chunk index, offset inside the chunk, length."""

    chunk: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)  # slots: an index may hold millions of entries
class Entry:
    path: str
    type: C.EntryType
    mode: int
    mtime_ns: int
    size: int = 0
    content_hash: bytes | None = None
    chunks: tuple[ChunkRef, ...] = ()
    target: str | None = None

    @property
    def has_content(self) -> bool:
        return self.type in (C.EntryType.FILE, C.EntryType.HARDLINK)

    def content_ok(self, content_hasher) -> bool:
        """Whether the bytes fed to a hasher(CONTEXT_ENTRY) are this file's (format 2 stores the hash's first bytes)."""
        return content_hasher.digest()[: len(self.content_hash)] == self.content_hash

    def to_wire(self, major: int) -> dict | list:
        _check_common(self.path, self.mode, self.mtime_ns)  # never write what no reader would accept
        if major == 2:  # slices are implied (SPEC 5), a hard link's content is its target's
            row = [int(self.type), self.path, self.mode, self.mtime_ns]
            if self.type is C.EntryType.FILE:
                row += [self.size, self.content_hash]
            elif self.target is not None:
                row.append(self.target)
            return row
        obj: dict[str, Any] = {"path": self.path, "type": int(self.type), "mode": self.mode, "mtime_ns": self.mtime_ns}
        if self.has_content:
            obj["size"] = self.size
            obj["hash"] = self.content_hash
            obj["chunks"] = [[r.chunk, r.offset, r.length] for r in self.chunks]
        if self.type in (C.EntryType.SYMLINK, C.EntryType.HARDLINK):
            obj["target"] = self.target
        return obj

    @classmethod
    def from_wire(cls, obj: Any, chunks: list[ChunkInfo], *, strict: bool) -> Entry:
        _require(isinstance(obj, dict), "entry is not a map")
        kind = _check_int(obj.get("type"), "entry type", 0, max(C.EntryType))
        etype = C.EntryType(kind)
        required = {"path", "type", "mode", "mtime_ns"}
        if etype in (C.EntryType.FILE, C.EntryType.HARDLINK):
            required |= {"size", "hash", "chunks"}
        if etype in (C.EntryType.SYMLINK, C.EntryType.HARDLINK):
            required |= {"target"}
        _check_keys(obj, f"entry {obj.get('path')!r}", required, strict=strict)
        path, mode, mtime_ns = _check_common(obj["path"], obj["mode"], obj["mtime_ns"])
        size, content_hash, refs, target = 0, None, (), None
        if etype in (C.EntryType.FILE, C.EntryType.HARDLINK):
            size = _check_int(obj["size"], f"{path}: size", 0, (1 << 63) - 1)
            content_hash = _check_hash(obj["hash"], f"{path}: hash")
            refs = _parse_refs(obj["chunks"], chunks, path)
            _require(sum(r.length for r in refs) == size, f"{path}: chunk slices do not add up to its size")
        if etype is C.EntryType.SYMLINK:
            target = _check_symlink_target(obj["target"], path)
        if etype is C.EntryType.HARDLINK:
            target = check_path(obj["target"], f"{path}: hardlink target")
        return cls(path, etype, mode, mtime_ns, size, content_hash, refs, target)

    @classmethod
    def from_wire_2(cls, row: Any, tiling: ChunkTiling, files: dict[str, Entry], *, strict: bool) -> Entry:
        """A format 2 entry row; a file's slices are the next `size` bytes of the chunks, a hard link's content is
        that of the earlier file it names."""
        _require(isinstance(row, list) and row, "entry is not an array")
        etype = C.EntryType(_check_int(row[0], "entry type", 0, max(C.EntryType)))
        fields = 6 if etype is C.EntryType.FILE else 4 if etype is C.EntryType.DIR else 5
        _check_row(row, f"entry {row[1] if len(row) > 1 else ''!r}", fields, strict=strict)
        path, mode, mtime_ns = _check_common(row[1], row[2], row[3])
        if etype is C.EntryType.FILE:
            size = _check_int(row[4], f"{path}: size", 0, (1 << 63) - 1)
            content_hash = _check_hash(row[5], f"{path}: check", C.CHECK_SIZE)
            return cls(path, etype, mode, mtime_ns, size, content_hash, tiling.take(size, path))
        if etype is C.EntryType.SYMLINK:
            return cls(path, etype, mode, mtime_ns, target=_check_symlink_target(row[4], path))
        if etype is C.EntryType.HARDLINK:
            target = files.get(check_path(row[4], f"{path}: hardlink target"))
            _require(target is not None, f"hardlink {path!r} must point to an earlier file")
            return cls(path, etype, mode, mtime_ns, target.size, target.content_hash, target.chunks, target.path)
        return cls(path, etype, mode, mtime_ns)


_MODES: dict[int, int] = {}  # one int object per distinct mode: a few kinds of mode among millions of entries


def _check_common(path: Any, mode: Any, mtime_ns: Any) -> tuple[str, int, int]:
    path = check_path(path)
    mode = _MODES.setdefault(_check_int(mode, f"{path}: mode", 0, C.MODE_MASK), mode)
    return path, mode, _check_int(mtime_ns, f"{path}: mtime_ns", *C.MTIME_RANGE)


def _check_symlink_target(target: Any, path: str) -> str:
    _require(isinstance(target, str) and 0 < len(target.encode("utf-8", "surrogatepass")) <= C.MAX_LINK_TARGET_BYTES
             and "\0" not in target, f"{path}: invalid symlink target")
    return target


def _parse_refs(obj: Any, chunks: list[ChunkInfo], path: str) -> tuple[ChunkRef, ...]:
    _require(isinstance(obj, list), f"{path}: chunks must be a list")
    refs = []
    for item in obj:
        _require(isinstance(item, list) and len(item) == 3, f"{path}: a chunk reference must be [chunk, offset, length]")
        index = _check_int(item[0], f"{path}: chunk index", 0, len(chunks) - 1)
        offset = _check_int(item[1], f"{path}: chunk offset", 0, C.MAX_CHUNK_RAW)
        length = _check_int(item[2], f"{path}: slice length", 1, C.MAX_CHUNK_RAW)
        _require(offset + length <= chunks[index].raw_size, f"{path}: slice runs past the end of chunk {index}")
        refs.append(ChunkRef(index, offset, length))
    return tuple(refs)


# ----------------------------------------------------------------------------------------------------- index


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """The index's copy of a chunk's placement; must agree with the chunk's own header."""

    offset: int
    stored_size: int
    raw_size: int
    codec: int
    header_size: int = C.CHUNK_HEADER_SIZE

    @property
    def end(self) -> int:
        return self.offset + self.header_size + self.stored_size


class ChunkTiling:
    """Format 2's implied slices: the files, in entry order, tile the chunks' plaintexts exactly (SPEC 5)."""

    def __init__(self, chunks: list[ChunkInfo]) -> None:
        self._chunks = chunks
        self._chunk = self._offset = 0

    def take(self, size: int, path: str) -> tuple[ChunkRef, ...]:
        """The slices of the next `size` bytes. Each step ends a file or a chunk, so a huge size costs no more steps
        than there are chunks."""
        refs = []
        while size:
            _require(self._chunk < len(self._chunks), f"{path}: the files hold more bytes than the chunks")
            room = self._chunks[self._chunk].raw_size - self._offset
            length = min(size, room)
            refs.append(ChunkRef(self._chunk, self._offset, length))
            size -= length
            self._offset += length
            if length == room:
                self._chunk, self._offset = self._chunk + 1, 0
        return tuple(refs)

    def finish(self) -> None:
        _require(self._chunk == len(self._chunks), "the chunks hold bytes that no file uses")


@dataclass(frozen=True)
class Index:
    entries: tuple[Entry, ...]
    chunks: tuple[ChunkInfo, ...]

    def to_wire(self, major: int, encoding: C.IndexEncoding | None = None) -> bytes:
        """The index region; encoding None: whichever is smaller. ValueError where a reader would refuse it."""
        _require(len(self.entries) <= C.MAX_ENTRIES, f"{len(self.entries):,} entries, more than the "
                                                     f"{C.MAX_ENTRIES:,} an archive holds")
        _require(len(self.chunks) <= C.MAX_CHUNKS, f"{len(self.chunks):,} chunks, more than the {C.MAX_CHUNKS:,} an "
                                                   f"archive holds")
        if major == 1:
            body = pack({
                "chunks": [[c.offset, c.stored_size, c.raw_size, int(c.codec)] for c in self.chunks],
                "entries": [e.to_wire(major) for e in self.entries],
            })
        else:
            body = pack([[[int(c.codec), c.raw_size, c.stored_size] for c in self.chunks],
                         [e.to_wire(major) for e in self.entries]])
        _require(len(body) <= C.MAX_INDEX_RAW, f"an index of {len(body):,} bytes, more than the {C.MAX_INDEX_RAW:,} an "
                                               f"archive holds")
        # compressed only where it may be kept
        stored = body if encoding == C.IndexEncoding.MSGPACK else _zstd_compress(body)
        if encoding is None:
            encoding, stored = ((C.IndexEncoding.MSGPACK_ZSTD, stored) if len(stored) < len(body)
                                else (C.IndexEncoding.MSGPACK, body))
        if major == 1:
            return _INDEX_FIXED.pack(C.INDEX_MAGIC, int(encoding), b"\0\0\0", len(body)) + stored
        return bytes([encoding]) + varint(len(body)) + stored

    @classmethod
    def from_wire(cls, data: bytes, *, major: int, data_start: int, data_end: int, strict: bool) -> Index:
        """Parse and validate the index region; chunks must tile [data_start, data_end) exactly."""
        if major == 2:
            return cls._from_wire_2(data, data_start, data_end, strict)
        _require(len(data) >= C.INDEX_HEADER_SIZE, "index region too short")
        magic, encoding, reserved, raw_size = _INDEX_FIXED.unpack(data[: C.INDEX_HEADER_SIZE])
        _require(magic == C.INDEX_MAGIC, "bad index magic")
        _require(reserved == b"\0\0\0", "index reserved bytes are not zero")
        _require(encoding in set(C.IndexEncoding), f"unknown index encoding {encoding}")
        _require(raw_size <= C.MAX_INDEX_RAW, f"index size {raw_size} exceeds the limit")
        stored = data[C.INDEX_HEADER_SIZE :]
        body = _zstd_decompress(stored, raw_size) if encoding == C.IndexEncoding.MSGPACK_ZSTD else stored
        _require(len(body) == raw_size, "index size mismatch")
        # Read item by item, never as one msgpack object: a million entries built as maps first would take ~500 bytes
        # each on top of the entries themselves. Two passes, so the keys may come in any order: the chunk table
        # first (entries refer to it), then the entries.
        keys = _index_keys(body)
        _require(len(set(keys)) == len(keys), "the index map has a key twice")
        _check_keys(dict.fromkeys(keys), "index", {"chunks", "entries"}, strict=strict)
        chunks = _read_index_item(body, "chunks", lambda u: _parse_chunk_table(u, data_start, data_end, major=1,
                                                                                strict=strict))
        entries = _read_index_item(body, "entries", lambda u: _parse_entries(u, chunks, strict))
        _check_tree(entries)
        _check_slices(entries)
        return cls(entries, tuple(chunks))

    @classmethod
    def _from_wire_2(cls, data: bytes, data_start: int, data_end: int, strict: bool) -> Index:
        _require(len(data) >= C.MIN_INDEX_SIZES[2], "index region too short")
        encoding = data[0]
        _require(encoding in set(C.IndexEncoding), f"unknown index encoding {encoding}")
        raw_size, start = read_varint(data, 1)
        _require(data[1:start] == varint(raw_size), "index size is not in its shortest form")
        _require(raw_size <= C.MAX_INDEX_RAW, f"index size {raw_size} exceeds the limit")
        stored = data[start:]
        body = _zstd_decompress(stored, raw_size) if encoding == C.IndexEncoding.MSGPACK_ZSTD else stored
        _require(len(body) == raw_size, "index size mismatch")
        with reading(body, max_len=_INDEX_ITEM_LIMIT) as unpacker:
            fields = unpacker.read_array_header()
            _require(fields == 2 or (fields > 2 and not strict), "the index must be an array [chunks, entries]")
            chunks = _parse_chunk_table(unpacker, data_start, data_end, major=2, strict=strict)
            tiling = ChunkTiling(chunks)
            count = unpacker.read_array_header()
            _require(count <= C.MAX_ENTRIES, "too many entries")
            files: dict[str, Entry] = {}
            entries = []
            for _ in range(count):
                entries.append(entry := Entry.from_wire_2(unpacker.unpack(), tiling, files, strict=strict))
                if entry.type is C.EntryType.FILE:
                    files.setdefault(entry.path, entry)  # a second file of that path is refused below
            tiling.finish()
            for _ in range(fields - 2):
                unpacker.skip()
            _require(unpacker.tell() == len(body), "the index document has bytes after its array")
        entries = tuple(entries)
        _check_tree(entries)
        return cls(entries, tuple(chunks))


_INDEX_ITEM_LIMIT = max(C.MAX_ENTRIES, C.MAX_CHUNKS)


def _index_keys(body: bytes) -> list[Any]:
    with reading(body, max_len=_INDEX_ITEM_LIMIT) as unpacker:
        count = unpacker.read_map_header()
        keys = []
        for _ in range(count):
            keys.append(unpacker.unpack())
            unpacker.skip()
        _require(unpacker.tell() == len(body), "the index document has bytes after its map")
    return keys


def _read_index_item(body: bytes, wanted: str, parse):
    """The value of one key of the index map, parsed by parse(unpacker) as it is read."""
    with reading(body, max_len=_INDEX_ITEM_LIMIT) as unpacker:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == wanted:
                return parse(unpacker)
            unpacker.skip()
    raise AssertionError("unreachable: the keys were checked")


def _parse_chunk_table(unpacker, data_start: int, data_end: int, *, major: int, strict: bool) -> list[ChunkInfo]:
    """Format 1 rows [offset, stored_size, raw_size, codec]; format 2 rows [codec, raw_size, stored_size], each chunk
    starting where the one before it ends. Either way the chunks must tile [data_start, data_end) exactly."""
    count = unpacker.read_array_header()
    _require(count <= C.MAX_CHUNKS, "chunk table exceeds the limit")
    chunks, position = [], data_start
    for i in range(count):
        item = unpacker.unpack()
        if major == 1:
            _require(isinstance(item, list) and len(item) == 4, f"chunk table row {i} is malformed")
            _check_int(item[0], f"chunk {i} offset", position, position)
            stored, raw, codec = item[1:]
        else:
            codec, raw, stored = _check_row(item, f"chunk table row {i}", 3, strict=strict)[:3]
        stored = _check_int(stored, f"chunk {i} stored size", 0, C.MAX_CHUNK_RAW)
        raw = _check_int(raw, f"chunk {i} raw size", max(stored, 1), C.MAX_CHUNK_RAW)
        codec = _check_int(codec, f"chunk {i} codec", 0, 255)
        chunks.append(ChunkInfo(position, stored, raw, codec, ChunkHeader.wire_size(major, raw, stored)))
        position = chunks[-1].end
        _require(position <= data_end, "the chunks run past the index")
    _require(position == data_end, "chunks do not tile the data region exactly")
    return chunks


def _parse_entries(unpacker, chunks: list[ChunkInfo], strict: bool) -> tuple[Entry, ...]:
    count = unpacker.read_array_header()
    _require(count <= C.MAX_ENTRIES, "too many entries")
    return tuple(Entry.from_wire(unpacker.unpack(), chunks, strict=strict) for _ in range(count))


def _check_tree(entries: tuple[Entry, ...]) -> None:
    """No duplicate paths; every ancestor that is an entry is a directory; a hard link names an earlier file and
    carries exactly that file's size, hash and slices (so reading it alone gives the same bytes)."""
    kinds: dict[str, C.EntryType] = {}
    files: dict[str, Entry] = {}
    for entry in entries:
        _require(entry.path not in kinds, f"duplicate entry {entry.path!r}")
        if entry.type is C.EntryType.HARDLINK:
            target = files.get(entry.target)
            _require(target is not None, f"hardlink {entry.path!r} must point to an earlier file")
            _require((entry.size, entry.content_hash, entry.chunks) == (target.size, target.content_hash, target.chunks),
                     f"hardlink {entry.path!r} differs from its target {entry.target!r} in size, hash or slices")
        elif entry.type is C.EntryType.FILE:
            files[entry.path] = entry
        kinds[entry.path] = entry.type
    # an entry that is no directory is no other's ancestor: the paths below it, if any, follow `path/` in sorted
    # order (a search per entry, where walking every entry's ancestors costs its depth times its length)
    paths = sorted(kinds)
    for path, kind in kinds.items():
        if kind is not C.EntryType.DIR:
            below = path + "/"
            first = paths[min(bisect.bisect_left(paths, below), len(paths) - 1)]
            if first.startswith(below):  # the message made only then: this runs for every file of the index
                raise ValueError(f"{first!r} lies under {path!r}, which is not a directory")


def _check_slices(entries: tuple[Entry, ...]) -> None:
    """The slices of regular files, in entry order, move strictly forward through the chunks and never overlap
    (SPEC 5): every stored byte belongs to at most one file, so the declared sizes are bounded by the chunks, and
    one pass over the chunks in order reads every file."""
    chunk, offset = 0, 0  # the earliest place the next slice may start
    for entry in entries:
        if entry.type is C.EntryType.FILE:
            for ref in entry.chunks:
                _require((ref.chunk, ref.offset) >= (chunk, offset),
                         f"{entry.path}: slice [{ref.chunk}, {ref.offset}, {ref.length}] overlaps or precedes the "
                         f"content of an earlier slice")
                chunk, offset = ref.chunk, ref.offset + ref.length


def _zstd_compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19, write_content_size=True, write_checksum=False).compress(data)


def _zstd_decompress(data: bytes, raw_size: int) -> bytes:
    try:
        return zstd_decompress(data, raw_size)
    except ValueError as exc:
        raise ValueError(f"index does not decompress: {exc}") from None


# ----------------------------------------------------------------------------------------------------- footer


@dataclass(frozen=True)
class Footer:
    """Where the index is and its checksum. Format 2 leaves out the index size: the index ends where the footer
    starts."""

    index_offset: int
    index_size: int | None
    index_hash: bytes

    @classmethod
    def of(cls, major: int, index_offset: int, index: bytes) -> Footer:
        return cls(index_offset, len(index) if major == 1 else None, digest(C.CONTEXT_INDEX, index)[: check_size(major)])

    def to_wire(self) -> bytes:
        if self.index_size is not None:
            return _FOOTERS[1].pack(self.index_offset, self.index_size, self.index_hash, b"\0" * 8, C.FOOTER_MAGIC)
        return _FOOTERS[2].pack(self.index_offset, self.index_hash, C.FOOTER_MAGIC)

    @classmethod
    def from_wire(cls, data: bytes, major: int) -> Footer:
        if major == 1:
            index_offset, index_size, index_hash, reserved, magic = _FOOTERS[1].unpack(data)
            _require(reserved == b"\0" * 8, "footer reserved bytes are not zero")
        else:
            (index_offset, index_hash, magic), index_size = _FOOTERS[2].unpack(data), None
        _require(magic == C.FOOTER_MAGIC, "bad footer magic")
        return cls(index_offset, index_size, index_hash)

    def index_ok(self, index: bytes) -> bool:
        return checks_out(self.index_hash, C.CONTEXT_INDEX, index)
