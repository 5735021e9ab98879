"""Format layer: one frozen dataclass per on-disk record, with its writer (to_wire) and reader (from_wire) side by side.

Readers check everything before trusting anything and raise ValueError with a reason; the container layer turns
that into an error naming the archive.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import zstandard

from . import constants as C
from .wire import digest, pack, reading, unpack

_HEADER_FIXED = struct.Struct("<8sHHIIIII")
_CHUNK_FIXED = struct.Struct("<4sBBHII32s32s")
_INDEX_FIXED = struct.Struct("<4sB3sQ")
_FOOTER = struct.Struct("<QQ32s8s8s")
assert _HEADER_FIXED.size == C.HEADER_FIXED_SIZE
assert _CHUNK_FIXED.size == C.CHUNK_HEADER_SIZE
assert _INDEX_FIXED.size == C.INDEX_HEADER_SIZE
assert _FOOTER.size == C.FOOTER_SIZE


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


def _check_hash(value: Any, what: str) -> bytes:
    _require(isinstance(value, bytes) and len(value) == C.HASH_SIZE, f"{what} must be {C.HASH_SIZE} bytes")
    return value


# ----------------------------------------------------------------------------------------------------- header


@dataclass(frozen=True)
class ModelRef:
    """A model an archive's lm chunks need: decoding requires a model whose compiled file hashes to model_hash."""

    name: str
    source: str
    model_hash: bytes
    tokenizer_hash: bytes
    numerics: str

    def to_wire(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "model_hash": self.model_hash,
            "tokenizer_hash": self.tokenizer_hash,
            "numerics": self.numerics,
        }

    @classmethod
    def from_wire(cls, obj: Any, *, strict: bool) -> ModelRef:
        _check_keys(obj, "model record", {"name", "source", "model_hash", "tokenizer_hash", "numerics"}, strict=strict)
        for key in ("name", "source", "numerics"):
            _require(isinstance(obj[key], str) and len(obj[key]) <= 1024, f"model {key} must be a string")
        return cls(
            name=obj["name"],
            source=obj["source"],
            model_hash=_check_hash(obj["model_hash"], "model_hash"),
            tokenizer_hash=_check_hash(obj["tokenizer_hash"], "tokenizer_hash"),
            numerics=obj["numerics"],
        )


@dataclass(frozen=True)
class Header:
    models: tuple[ModelRef, ...] = ()
    major: int = C.FORMAT_MAJOR
    minor: int = -1  # -1: the lowest minor version that can express this header (1.0 without models, else 1.1)
    incompat_flags: int = 0
    write_incompat_flags: int = 0
    compat_flags: int = 0

    def to_wire(self) -> bytes:
        body = pack({"models": [m.to_wire() for m in self.models]})
        minor = self.minor if self.minor >= 0 else (1 if self.models else 0)
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
        if major != C.FORMAT_MAJOR:
            return header  # the caller refuses it; the body of another major version is not ours to parse
        strict = minor <= C.FORMAT_MINOR
        obj = unpack(body, max_len=C.MAX_HEADER_BODY)
        _check_keys(obj, "header body", {"models"}, strict=strict)
        _require(isinstance(obj["models"], list) and len(obj["models"]) <= C.MAX_MODELS, "header models must be a short list")
        models = tuple(ModelRef.from_wire(m, strict=strict) for m in obj["models"])
        return cls(models, major, minor, incompat, write_incompat, compat)

    @property
    def size(self) -> int:
        return len(self.to_wire())


# ----------------------------------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class ChunkHeader:
    codec: int
    raw_size: int
    stored_size: int
    plain_hash: bytes
    stored_hash: bytes = b"\0" * C.HASH_SIZE

    def _covered(self) -> bytes:
        """The first 48 bytes of the header: what stored_hash covers besides the payload."""
        return _CHUNK_FIXED.pack(C.CHUNK_MAGIC, self.codec, 0, 0, self.raw_size, self.stored_size, self.plain_hash, b"\0" * 32)[:48]

    @classmethod
    def seal(cls, codec: int, plaintext: bytes, payload: bytes) -> tuple[ChunkHeader, bytes]:
        """Build the header for a payload and return it with the full on-disk bytes of the chunk."""
        head = cls(int(codec), len(plaintext), len(payload), digest(C.CONTEXT_CHUNK_PLAIN, plaintext))
        covered = head._covered()
        sealed = cls(head.codec, head.raw_size, head.stored_size, head.plain_hash, digest(C.CONTEXT_CHUNK_STORED, covered, payload))
        return sealed, covered + sealed.stored_hash + payload

    @classmethod
    def from_wire(cls, data: bytes) -> ChunkHeader:
        magic, codec, flags, reserved, raw_size, stored_size, plain_hash, stored_hash = _CHUNK_FIXED.unpack(data)
        _require(magic == C.CHUNK_MAGIC, "bad chunk magic")
        _require(flags == 0 and reserved == 0, "chunk reserved bits are not zero")
        _require(codec in set(C.CodecId), f"unknown codec id {codec}")
        _require(1 <= raw_size <= C.MAX_CHUNK_RAW, f"chunk raw size {raw_size} out of range")
        _require(stored_size <= raw_size, "chunk stored size exceeds its raw size")
        _require(codec != C.CodecId.STORE or stored_size == raw_size, "store chunk sizes differ")
        return cls(codec, raw_size, stored_size, plain_hash, stored_hash)

    def stored_hash_ok(self, payload: bytes) -> bool:
        return digest(C.CONTEXT_CHUNK_STORED, self._covered(), payload) == self.stored_hash

    def plain_hash_ok(self, plaintext: bytes) -> bool:
        return len(plaintext) == self.raw_size and digest(C.CONTEXT_CHUNK_PLAIN, plaintext) == self.plain_hash

    @property
    def total_size(self) -> int:
        return C.CHUNK_HEADER_SIZE + self.stored_size


# ----------------------------------------------------------------------------------------------------- entries


def check_path(path: Any, what: str = "path") -> str:
    """A relative, '/'-separated UTF-8 path with no empty, '.' or '..' component and no NUL (SPEC.md "Paths")."""
    _require(isinstance(path, str), f"{what} must be a string")
    raw = path.encode("utf-8", "surrogatepass")
    _require(0 < len(raw) <= C.MAX_PATH_BYTES, f"{what} length must be 1..{C.MAX_PATH_BYTES} bytes")
    _require("\0" not in path, f"{what} contains NUL")
    _require(not path.startswith("/"), f"{what} {path!r} is absolute")
    for part in path.split("/"):
        _require(part not in ("", ".", ".."), f"{what} {path!r} has an empty, '.' or '..' component")
        _require(len(part.encode("utf-8", "surrogatepass")) <= C.MAX_COMPONENT_BYTES, f"{what} component too long")
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

    def to_wire(self) -> dict:
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
        path = check_path(obj["path"])
        mode = _MODES.setdefault(_check_int(obj["mode"], f"{path}: mode", 0, C.MODE_MASK), obj["mode"])
        mtime_ns = _check_int(obj["mtime_ns"], f"{path}: mtime_ns", -(1 << 63), (1 << 63) - 1)
        size, content_hash, refs, target = 0, None, (), None
        if etype in (C.EntryType.FILE, C.EntryType.HARDLINK):
            size = _check_int(obj["size"], f"{path}: size", 0, (1 << 63) - 1)
            content_hash = _check_hash(obj["hash"], f"{path}: hash")
            refs = _parse_refs(obj["chunks"], chunks, path)
            _require(sum(r.length for r in refs) == size, f"{path}: chunk slices do not add up to its size")
        if etype is C.EntryType.SYMLINK:
            target = obj["target"]
            _require(isinstance(target, str) and 0 < len(target.encode("utf-8", "surrogatepass")) <= C.MAX_LINK_TARGET_BYTES
                     and "\0" not in target, f"{path}: invalid symlink target")
        if etype is C.EntryType.HARDLINK:
            target = check_path(obj["target"], f"{path}: hardlink target")
        return cls(path, etype, mode, mtime_ns, size, content_hash, refs, target)


_MODES: dict[int, int] = {}  # one int object per distinct mode: a few kinds of mode among millions of entries


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

    @property
    def end(self) -> int:
        return self.offset + C.CHUNK_HEADER_SIZE + self.stored_size


@dataclass(frozen=True)
class Index:
    entries: tuple[Entry, ...]
    chunks: tuple[ChunkInfo, ...]

    def to_wire(self, encoding: C.IndexEncoding = C.IndexEncoding.MSGPACK_ZSTD) -> bytes:
        body = pack({
            "chunks": [[c.offset, c.stored_size, c.raw_size, int(c.codec)] for c in self.chunks],
            "entries": [e.to_wire() for e in self.entries],
        })
        stored = _zstd_compress(body) if encoding == C.IndexEncoding.MSGPACK_ZSTD else body
        return _INDEX_FIXED.pack(C.INDEX_MAGIC, int(encoding), b"\0\0\0", len(body)) + stored

    @classmethod
    def from_wire(cls, data: bytes, *, data_start: int, data_end: int, strict: bool) -> Index:
        """Parse and validate the index region; chunks must tile [data_start, data_end) exactly."""
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
        chunks = _read_index_item(body, "chunks", lambda u: _parse_chunk_table(u, data_start, data_end))
        entries = _read_index_item(body, "entries", lambda u: _parse_entries(u, chunks, strict))
        _check_tree(entries)
        _check_slices(entries)
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


def _parse_chunk_table(unpacker, data_start: int, data_end: int) -> list[ChunkInfo]:
    count = unpacker.read_array_header()
    _require(count <= C.MAX_CHUNKS, "chunk table exceeds the limit")
    chunks, position = [], data_start
    for i in range(count):
        item = unpacker.unpack()
        _require(isinstance(item, list) and len(item) == 4, f"chunk table row {i} is malformed")
        offset = _check_int(item[0], f"chunk {i} offset", position, position)
        stored = _check_int(item[1], f"chunk {i} stored size", 0, C.MAX_CHUNK_RAW)
        raw = _check_int(item[2], f"chunk {i} raw size", max(stored, 1), C.MAX_CHUNK_RAW)
        codec = _check_int(item[3], f"chunk {i} codec", 0, 255)
        _require(codec in set(C.CodecId), f"chunk {i}: unknown codec id {codec}")
        chunks.append(ChunkInfo(offset, stored, raw, codec))
        position = chunks[-1].end
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
    for entry in entries:
        parent = entry.path.rpartition("/")[0]
        while parent:
            _require(kinds.get(parent, C.EntryType.DIR) is C.EntryType.DIR,
                     f"{entry.path!r} lies under {parent!r}, which is not a directory")
            parent = parent.rpartition("/")[0]


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
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=raw_size)
    except zstandard.ZstdError as exc:
        raise ValueError(f"index does not decompress: {exc}") from None


# ----------------------------------------------------------------------------------------------------- footer


@dataclass(frozen=True)
class Footer:
    index_offset: int
    index_size: int
    index_hash: bytes = field(default=b"\0" * C.HASH_SIZE)

    def to_wire(self) -> bytes:
        return _FOOTER.pack(self.index_offset, self.index_size, self.index_hash, b"\0" * 8, C.FOOTER_MAGIC)

    @classmethod
    def from_wire(cls, data: bytes) -> Footer:
        index_offset, index_size, index_hash, reserved, magic = _FOOTER.unpack(data)
        _require(magic == C.FOOTER_MAGIC, "bad footer magic")
        _require(reserved == b"\0" * 8, "footer reserved bytes are not zero")
        return cls(index_offset, index_size, index_hash)
