"""Builds hostile archives: valid checksums around contents a careful writer would never produce."""

from __future__ import annotations

import struct

from lzarchive.format import constants as C
from lzarchive.format.records import ChunkHeader, Footer, Header
from lzarchive.format.wire import digest, pack


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
    out = bytearray(header if header is not None else Header().to_wire())
    table = []
    for chunk in chunks:
        codec, plaintext, payload = chunk if isinstance(chunk, tuple) else (C.CodecId.STORE, chunk, chunk)
        head, data = ChunkHeader.seal(codec, plaintext, payload)
        table.append([len(out), head.stored_size, head.raw_size, int(codec)])
        out += data
    body = index_body if index_body is not None else pack({"chunks": table, "entries": entries})
    index = struct.pack("<4sB3sQ", C.INDEX_MAGIC, int(C.IndexEncoding.MSGPACK), b"\0\0\0", len(body)) + body
    footer = Footer(len(out), len(index), digest(C.CONTEXT_INDEX, index)).to_wire()
    return bytes(out + index + footer)


def header_with(body: bytes, *, major: int = C.FORMAT_MAJOR, incompat: int = 0, reserved: int = 0) -> bytes:
    fixed = struct.pack("<8sHHIIIII", C.HEADER_MAGIC, major, C.FORMAT_MINOR, incompat, 0, 0, len(body), reserved)
    return fixed + body + digest(C.CONTEXT_HEADER, fixed, body)
