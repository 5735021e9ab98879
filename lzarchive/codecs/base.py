"""Codec layer: the interface every chunk codec implements; batch-shaped so the lm codec can run many chunks at once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from ..format.constants import CodecId


class CodecError(ValueError):
    """A payload that the codec cannot decode (damaged data or a codec bug); the reader names the chunk."""


class Codec(ABC):
    codec_id: ClassVar[CodecId]
    name: ClassVar[str]

    @abstractmethod
    def encode_batch(self, chunks: Sequence[bytes]) -> list[bytes | None]:
        """Code each chunk independently; None where this codec declines a chunk (the writer falls back)."""

    @abstractmethod
    def decode_batch(self, payloads: Sequence[bytes], raw_sizes: Sequence[int],
                     limits: Sequence[int] | None = None) -> list[bytes | CodecError]:
        """Invert encode_batch; raw_sizes come from the chunk headers. A payload that cannot be decoded gets its
        CodecError in its place (the others in the batch are decoded all the same).
        With limits, a codec may stop once a chunk's first `limit` bytes are out and return that prefix (at least
        `limit` bytes); codecs that gain nothing from stopping early return whole chunks."""
