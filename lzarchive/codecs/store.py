"""Codec layer: store, the identity codec and the floor every chunk falls back to."""

from __future__ import annotations

from collections.abc import Sequence

from ..format.constants import CodecId
from .base import Codec, CodecError, ReadChunk


class StoreCodec(Codec):
    codec_id = CodecId.STORE
    name = "store"

    def encode_batch(self, chunks: Sequence[bytes], first_chunk: int = 0,
                     runs: Sequence[int] | None = None) -> list[bytes | None]:
        return [bytes(c) for c in chunks]

    def decode_batch(self, payloads: Sequence[bytes], raw_sizes: Sequence[int], limits: Sequence[int] | None = None,
                     chunks: Sequence[int] | None = None, read_chunk: ReadChunk | None = None) -> list[bytes | CodecError]:
        return [bytes(p) for p in payloads]
