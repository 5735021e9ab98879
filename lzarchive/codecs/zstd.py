"""Codec layer: zstd (one frame per chunk, via the zstandard package) for data the language model does not help."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from ..format.constants import CodecId
from ..format.wire import zstd_decompress
from .base import Codec, CodecError, ReadChunk

DEFAULT_LEVEL = 12


@dataclass(frozen=True)
class ZstdCodec(Codec):
    level: int = DEFAULT_LEVEL
    threads: int = 2

    codec_id = CodecId.ZSTD
    name = "zstd"

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 22:
            raise ValueError(f"zstd level must be 1..22, got {self.level}")

    def _map(self, fn, items):
        # zstandard releases the GIL, so independent chunks compress in parallel threads.
        if self.threads <= 1 or len(items) <= 1:
            return [fn(*item) for item in items]
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda item: fn(*item), items))

    def encode_batch(self, chunks: Sequence[bytes], first_chunk: int = 0,
                     runs: Sequence[int] | None = None) -> list[bytes | None]:
        def compress(chunk: bytes) -> bytes:
            return zstandard.ZstdCompressor(level=self.level, write_checksum=False, write_content_size=True).compress(chunk)

        return self._map(compress, [(c,) for c in chunks])

    def decode_batch(self, payloads: Sequence[bytes], raw_sizes: Sequence[int], limits: Sequence[int] | None = None,
                     chunks: Sequence[int] | None = None, read_chunk: ReadChunk | None = None) -> list[bytes | CodecError]:
        def decompress(payload: bytes, raw_size: int) -> bytes | CodecError:
            try:
                return zstd_decompress(payload, raw_size)
            except ValueError as exc:
                return CodecError(str(exc))

        return self._map(decompress, list(zip(payloads, raw_sizes)))
