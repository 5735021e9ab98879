"""Format layer: the one msgpack wrapper (pinned options, limits for untrusted input) and the blake3 hashers."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import blake3
import msgpack
import zstandard

_ERRORS = (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, msgpack.OutOfData, TypeError,
           UnicodeDecodeError)


def pack(obj: Any) -> bytes:
    """Serialize with the options SPEC.md pins: bin for bytes, str for text, shortest integer forms."""
    return msgpack.packb(obj, use_bin_type=True)


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict:
    """A map whose keys are all distinct (SPEC 2): msgpack itself would keep the last of two equal keys."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a map has a key twice")
    return obj


def _options(max_len: int) -> dict:
    return dict(raw=False, strict_map_key=True, use_list=True, object_pairs_hook=_unique_keys, max_str_len=max_len,
                max_bin_len=max_len, max_array_len=max_len, max_map_len=max_len, max_ext_len=0)


def unpack(data: bytes, *, max_len: int) -> Any:
    """Deserialize untrusted msgpack: one object, nothing after it, container sizes bounded by max_len, no map with a
    repeated key."""
    try:
        return msgpack.unpackb(data, **_options(max_len))
    except _ERRORS as exc:
        raise ValueError(f"invalid msgpack: {exc}") from None


@contextmanager
def reading(data: bytes, *, max_len: int) -> Iterator[msgpack.Unpacker]:
    """An Unpacker over untrusted msgpack, for documents too large to build as one object (the index): the caller
    reads headers and items one at a time. Same limits as unpack; every error is a ValueError."""
    # read from a view of the data, not fed to it: feeding copies the whole document into the unpacker's buffer
    unpacker = msgpack.Unpacker(io.BytesIO(data), max_buffer_size=max(len(data), 1), **_options(max_len))
    try:
        yield unpacker
    except (msgpack.OutOfData, TypeError) as exc:  # the rest are ValueErrors, the callers' own checks among them
        raise ValueError(f"invalid msgpack: {exc or 'the document ends too early'}") from None


def zstd_decompress(data: bytes, size: int) -> bytes:
    """The content of one zstd frame that decodes to exactly `size` bytes with nothing after it (SPEC 7); ValueError
    otherwise. Output is bounded by `size` before anything else is trusted."""
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd: {exc}") from None
    if len(out) != size:
        raise ValueError(f"zstd: decoded {len(out)} bytes, expected {size}")
    frame = zstandard.ZstdDecompressor().decompressobj()  # the first frame is known to hold `size` bytes: bounded
    frame.decompress(data)
    if frame.unused_data:
        raise ValueError(f"zstd: {len(frame.unused_data)} bytes after the frame")
    return out


def varint(value: int) -> bytes:
    """LEB128: seven bits per byte, least significant first, the high bit set on every byte but the last."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The LEB128 integer at data[pos:] (below 2^64) and the position after it; ValueError if cut short or longer."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or oversized varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return value, pos


def hasher(context: str) -> blake3.blake3:
    return blake3.blake3(derive_key_context=context)


def digest(context: str, *parts: bytes) -> bytes:
    h = hasher(context)
    for part in parts:
        h.update(part)
    return h.digest()
