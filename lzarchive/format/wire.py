"""Format layer: the one msgpack wrapper (pinned options, limits for untrusted input) and the blake3 hashers."""

from __future__ import annotations

from typing import Any

import blake3
import msgpack


def pack(obj: Any) -> bytes:
    """Serialize with the options SPEC.md pins: bin for bytes, str for text, shortest integer forms."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, *, max_len: int) -> Any:
    """Deserialize untrusted msgpack: one object, nothing after it, container sizes bounded by max_len."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_len,
            max_bin_len=max_len,
            max_array_len=max_len,
            max_map_len=max_len,
            max_ext_len=0,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid msgpack: {exc}") from None


def hasher(context: str) -> blake3.blake3:
    return blake3.blake3(derive_key_context=context)


def digest(context: str, *parts: bytes) -> bytes:
    h = hasher(context)
    for part in parts:
        h.update(part)
    return h.digest()
