"""Codec layer: the interface every chunk codec implements; batch-shaped so the lm codec can run many chunks at once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

from ..format.constants import CodecId


class CodecError(ValueError):
    """A payload that the codec cannot decode (damaged data or a codec bug); the reader names the chunk."""


ReadChunk = Callable[[int], tuple[int, bytes]]  # chunk index → (codec id, checked stored payload)


class Joined:
    """encode_batch's answer for a chunk whose bytes the payload of the chunk before it codes too (the lm codec's
    streams, format 2.7): the writer stores them as one chunk, with that payload. A class, not a sentinel object, so
    that it survives pickling (Ray's workers)."""


JOINED = Joined()


class Codec(ABC):
    codec_id: ClassVar[CodecId]
    name: ClassVar[str]
    costly: ClassVar[bool] = False  # runs a model: coded after the cheap codecs, on the chunks where it contends

    @abstractmethod
    def encode_batch(self, chunks: Sequence[bytes], first_chunk: int = 0,
                     runs: Sequence[int] | None = None) -> list[bytes | Joined | None]:
        """Code each chunk; None where this codec declines a chunk (the writer falls back), a Joined where the payload
        of the chunk before it codes it too (that payload is then one the codec keeps). first_chunk: the archive
        index of chunks[0], for codecs whose payloads may name an earlier chunk (the lm codec's primer); runs: each
        chunk's place in its run of chunks that go on with the file the chunk before holds (0: a run's first), by which
        the lm codec groups chunks (its bias groups: see ArchiveWriter, which never ends a batch inside one)."""

    def contends(self, chunk: bytes, rival: int) -> bool:
        """Whether a costly codec is worth running on `chunk`, which a cheap codec codes in `rival` bytes: where it
        says no, the writer keeps the cheap payload without asking this codec for one."""
        return True

    def keeps(self, chunk: int, payload: bytes) -> bool:
        """Whether other payloads of this codec depend on this chunk's (this payload, which encode_batch made): the
        writer then stores it with this codec, or, where it has mates, stores them all with it only where they are
        smaller in all than another codec's payloads of the same chunks (archive.writer.choose_payloads)."""
        return False

    def dependencies(self, payload: bytes) -> tuple[int, ...]:
        """The other chunks whose stored payloads decoding this payload reads through read_chunk (the lm primer's);
        a reader that decodes elsewhere (codecs.distributed) reads them first and sends them along."""
        return ()

    def mates(self, chunk: int, payload: bytes) -> tuple[int, ...]:
        """The chunks that decode together with this one, itself among them (the lm codec's bias group): a reader
        batches them together, since a batch holding only some of them decodes the others as well."""
        return (chunk,)

    @abstractmethod
    def decode_batch(self, payloads: Sequence[bytes], raw_sizes: Sequence[int], limits: Sequence[int] | None = None,
                     chunks: Sequence[int] | None = None, read_chunk: ReadChunk | None = None) -> list[bytes | CodecError]:
        """Invert encode_batch; raw_sizes come from the chunk headers. A payload that cannot be decoded gets its
        CodecError in its place (the others in the batch are decoded all the same).
        With limits, a codec may stop once a chunk's first `limit` bytes are out and return that prefix (at least
        `limit` bytes); codecs that gain nothing from stopping early return whole chunks.
        chunks: the payloads' archive indices; read_chunk: another chunk's codec id and checked stored payload (for a
        payload that names an earlier chunk, as the lm codec's primer does; it raises CodecError if unreadable)."""

