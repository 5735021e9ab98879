"""Builds hostile archives: valid checksums around contents a careful writer would never produce."""

from __future__ import annotations

import struct

from lzarchive.format import constants as C
from lzarchive.format.records import ChunkHeader, Footer, Header, Index
from lzarchive.format.wire import digest, pack, varint


def content_entry(path: str, data_ref: tuple[int, int, int] | None, data: bytes = b"", **extra) -> dict:
    """A raw file entry; data_ref is [chunk, offset, length] into the crafted chunks."""
    entry = {"path": path, "type": int(C.EntryType.FILE), "mode": 0o644, "mtime_ns": 0, "size": len(data),
             "hash": digest(C.CONTEXT_ENTRY, data), "chunks": [list(data_ref)] if data_ref else []}
    entry.update(extra)
    return entry


def link_entry(path: str, target: str, kind: C.EntryType = C.EntryType.SYMLINK) -> dict:
    return {"path": path, "type": int(kind), "mode": 0o777, "mtime_ns": 0, "target": target}


def dir_entry(path: str) -> dict:
    return {"path": path, "type": int(C.EntryType.DIR), "mode": 0o755, "mtime_ns": 0}


def craft(entries: list[dict], chunks: list[bytes | tuple[int, bytes, bytes]] = (), *, index_body: bytes | None = None,
          header: bytes | None = None) -> bytes:
    """Header, chunks (plaintexts, stored; or (codec, plaintext, payload)), a raw msgpack index (or the given body)
    and a footer with correct checksums."""
    return _craft(1, entries, chunks, index_body, header)


def craft2(rows: list[list], chunks: list[bytes | tuple[int, bytes, bytes]] = (), *, index_body: bytes | None = None,
           header: bytes | None = None, index_size: bytes | None = None) -> bytes:
    """A format 2 archive: entry rows as written (files [0, path, mode, mtime_ns, size, check], ...); index_size
    replaces the varint of the index size."""
    return _craft(2, rows, chunks, index_body, header, index_size)


def _craft(major, entries, chunks, index_body, header, index_size=None) -> bytes:
    out = bytearray(header if header is not None else Header(major=major).to_wire())
    table = []
    for chunk in chunks:
        codec, plaintext, payload = chunk if isinstance(chunk, tuple) else (C.CodecId.STORE, chunk, chunk)
        head, data = ChunkHeader.seal(codec, plaintext, payload, major)
        table.append([len(out), head.stored_size, head.raw_size, int(codec)] if major == 1
                     else [int(codec), head.raw_size, head.stored_size])
        out += data
    if major == 1:
        body = index_body if index_body is not None else pack({"chunks": table, "entries": entries})
        index = struct.pack("<4sB3sQ", C.INDEX_MAGIC, int(C.IndexEncoding.MSGPACK), b"\0\0\0", len(body)) + body
    else:
        body = index_body if index_body is not None else pack([table, entries])
        index = bytes([C.IndexEncoding.MSGPACK]) + (index_size if index_size is not None else varint(len(body))) + body
    return bytes(out + index + Footer.of(major, len(out), index).to_wire())


def resealed(archive: bytes, header_size: int, index: Index, plaintexts: list[bytes], payloads: list[bytes]) -> bytes:
    """A format 2 archive's header and entries around other chunk payloads, every check valid again."""
    chunks = [(info.codec, plaintext, payload) for info, plaintext, payload in zip(index.chunks, plaintexts, payloads)]
    return craft2([entry.to_wire(2) for entry in index.entries], chunks, header=archive[:header_size])


def file_row(path: str, data: bytes, **changes) -> list:
    row = {"type": int(C.EntryType.FILE), "path": path, "mode": 0o644, "mtime_ns": 0, "size": len(data),
           "check": digest(C.CONTEXT_ENTRY, data)[: C.CHECK_SIZE]}
    row.update(changes)
    return list(row.values())


def link_row(path: str, target: str, kind: C.EntryType = C.EntryType.SYMLINK) -> list:
    return [int(kind), path, 0o777, 0, target]


def dir_row(path: str) -> list:
    return [int(C.EntryType.DIR), path, 0o755, 0]


def header_with(body: bytes, *, major: int = 1, minor: int = 1, incompat: int = 0, reserved: int = 0) -> bytes:
    fixed = struct.pack("<8sHHIIIII", C.HEADER_MAGIC, major, minor, incompat, 0, 0, len(body), reserved)
    return fixed + body + digest(C.CONTEXT_HEADER, fixed, body)
