"""Container layer: opens an archive, validates header, footer and index, and serves verified chunks by random access."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from ..codecs import Codec, CodecError, StoreCodec, ZstdCodec, codec_name
from ..errors import (
    ChunkCorrupt,
    CorruptArchive,
    InputError,
    NotAnArchive,
    TruncatedArchive,
    UnsupportedFeature,
    UnsupportedVersion,
)
from ..files import describe
from ..format import constants as C
from ..format.records import ChunkHeader, ChunkInfo, Entry, Footer, Header, Index

CodecProvider = Callable[[int, Header], Codec]
SALVAGE = "; lza salvage recovers the bytes its chunks hold"  # where the index cannot be used


def builtin_codecs(codec_id: int, header: Header) -> Codec:
    """Decoders that need nothing but the archive; the lm codec is provided by the layer that owns models."""
    if codec_id == C.CodecId.STORE:
        return StoreCodec()
    if codec_id == C.CodecId.ZSTD:
        return ZstdCodec()
    raise LookupError(f"chunk codec {codec_name(codec_id)} is not supported by this version of lza")


@dataclass
class ArchiveReader:
    """An open archive. Construct with ArchiveReader.open(path); use as a context manager."""

    path: str
    stream: BinaryIO
    header: Header
    header_size: int
    index: Index
    file_size: int
    codec_provider: CodecProvider = builtin_codecs
    _codecs: dict[int, Codec] = field(default_factory=dict)
    _chunk_paths: dict[int, list[str]] | None = None

    @classmethod
    def open(cls, path: str, codec_provider: CodecProvider = builtin_codecs) -> ArchiveReader:
        stream = cls._opened(path)
        try:
            return cls._parse(path, stream, _size(stream, path), codec_provider)
        except BaseException:
            stream.close()
            raise

    @classmethod
    def _parse(cls, path: str, stream: BinaryIO, file_size: int, codec_provider: CodecProvider) -> ArchiveReader:
        header, header_size = _parse_header(stream, path, file_size)
        footer_size = C.FOOTER_SIZES[header.major]
        if (_tail(stream, path, file_size) != C.FOOTER_MAGIC
                or file_size < header_size + C.MIN_INDEX_SIZES[header.major] + footer_size):
            _refuse_missing_footer(stream, path, file_size, header_size, header.major)
        try:
            footer = Footer.from_wire(_read_at(stream, file_size - footer_size, footer_size, path), header.major)
        except ValueError as exc:
            raise CorruptArchive(archive=path, reason=f"{exc}{SALVAGE}") from None
        index_end = file_size - footer_size
        index_size = index_end - footer.index_offset
        if not header_size <= footer.index_offset <= index_end or footer.index_size not in (None, index_size):
            raise CorruptArchive(archive=path, reason=f"the footer's index position does not fit the file{SALVAGE}")
        index_region = _read_at(stream, footer.index_offset, index_size, path)
        if not footer.index_ok(index_region):
            raise CorruptArchive(archive=path, reason=f"index checksum mismatch{SALVAGE}")
        try:
            index = Index.from_wire(index_region, major=header.major, data_start=header_size,
                                    data_end=footer.index_offset, strict=header.minor <= C.SUPPORTED_MINOR[header.major])
        except ValueError as exc:
            raise CorruptArchive(archive=path, reason=f"invalid index: {exc}{SALVAGE}") from None
        return cls(path, stream, header, header_size, index, file_size, codec_provider)

    @classmethod
    def scanned(cls, path: str, codec_provider: CodecProvider = builtin_codecs) -> tuple[ArchiveReader, list[Gap]]:
        """An archive whose index cannot be trusted or is gone (cut short, damaged), read by scanning for its chunks
        (SPEC 3.3): a reader of the chunks found, in order, under an index without entries, and the byte ranges where
        no chunk could be found. The header must be whole: it says how chunks are laid out and what models code them."""
        stream = cls._opened(path)
        try:
            file_size = _size(stream, path)
            header, header_size = _parse_header(stream, path, file_size)
            chunks, gaps = scan_chunks(stream, path, header.major, header_size, file_size)
            if gaps and gaps[-1] == Gap(_index_start(stream, path, file_size, header_size, header.major), file_size):
                gaps.pop()  # the index and the footer, where the footer says (a footer's own bytes have no check)
            return cls(path, stream, header, header_size, Index((), tuple(chunks)), file_size, codec_provider), gaps
        except BaseException:
            stream.close()
            raise

    @staticmethod
    def _opened(path: str) -> BinaryIO:
        try:
            if stat.S_ISFIFO(os.stat(path).st_mode):  # opening one would wait for a writer, then fail to seek
                raise InputError(path=path, reason="is a pipe: an archive's index is at its end, so lza reads archives "
                                                   "from files it can seek in (save the stream to a file first)")
            return open(path, "rb")
        except OSError as exc:
            raise InputError(path=path, reason=describe(exc)) from None

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.index.entries

    def chunk_paths(self, chunk: int) -> list[str]:
        """Entry paths whose content lies (partly) in a chunk: what a damaged chunk costs."""
        if self._chunk_paths is None:
            self._chunk_paths = {}
            for entry in self.entries:
                for ref in entry.chunks:
                    paths = self._chunk_paths.setdefault(ref.chunk, [])
                    if not paths or paths[-1] != entry.path:
                        paths.append(entry.path)
        return self._chunk_paths.get(chunk, [])

    def _corrupt(self, chunk: int, reason: str) -> ChunkCorrupt:
        return ChunkCorrupt(archive=self.path, chunk=chunk, reason=reason, paths=self.chunk_paths(chunk))

    def read_stored(self, chunk: int) -> tuple[ChunkHeader, bytes]:
        """Read one chunk's header and payload, check them against the index and the stored-bytes hash."""
        info = self.index.chunks[chunk]
        data = _read_at(self.stream, info.offset, info.header_size + info.stored_size, self.path)
        if len(data) != info.header_size + info.stored_size:
            raise self._corrupt(chunk, "cut short")
        try:
            head = ChunkHeader.from_wire(data[: info.header_size], self.header.major)
        except ValueError as exc:
            raise self._corrupt(chunk, str(exc)) from None
        if (head.codec, head.raw_size, head.stored_size) != (info.codec, info.raw_size, info.stored_size):
            raise self._corrupt(chunk, "its header disagrees with the index")
        payload = data[info.header_size :]
        if not head.stored_hash_ok(payload):
            raise self._corrupt(chunk, "stored-bytes checksum mismatch")
        return head, payload

    def _read_for_codec(self, chunk: int) -> tuple[int, bytes]:
        """Another chunk's codec and checked payload, for a payload that names it (the lm codec's primer)."""
        if not 0 <= chunk < len(self.index.chunks):
            raise CodecError(f"there is no chunk {chunk}")
        try:
            head, payload = self.read_stored(chunk)
        except ChunkCorrupt as exc:
            raise CodecError(f"chunk {chunk} is damaged: {exc.fields['reason']}") from None
        return head.codec, payload

    def mates(self, chunk: int) -> tuple[int, ...]:
        """The chunks its codec decodes together with it (Codec.mates), itself among them; just it where its stored
        bytes cannot be read (decoding reports that)."""
        try:
            head, payload = self.read_stored(chunk)
        except ChunkCorrupt:
            return (chunk,)
        return self.codec(head.codec).mates(chunk, payload)

    def codec(self, codec_id: int) -> Codec:
        if codec_id not in self._codecs:
            try:
                self._codecs[codec_id] = self.codec_provider(codec_id, self.header)
            except LookupError as exc:
                raise UnsupportedFeature(archive=self.path, reason=str(exc)) from None
        return self._codecs[codec_id]

    def decode_chunks(self, chunks: Sequence[int], prefixes: Mapping[int, int] | None = None) -> dict[int, bytes | ChunkCorrupt]:
        """Decode chunks in batches per codec; each result is the verified plaintext or the error for that chunk.
        prefixes: chunk → bytes needed from its start; a codec may stop there, and a prefix shorter than the chunk
        cannot be checked against the chunk's checksum: only callers that check every entry they read may ask."""
        prefixes = prefixes or {}
        results: dict[int, bytes | ChunkCorrupt] = {}
        by_codec: dict[int, list[tuple[int, ChunkHeader, bytes]]] = {}
        for chunk in chunks:
            try:
                head, payload = self.read_stored(chunk)
            except ChunkCorrupt as exc:
                results[chunk] = exc
                continue
            by_codec.setdefault(head.codec, []).append((chunk, head, payload))
        for codec_id, items in by_codec.items():
            codec = self.codec(codec_id)
            limits = [prefixes.get(chunk, head.raw_size) for chunk, head, _ in items]
            plains = codec.decode_batch([p for _, _, p in items], [h.raw_size for _, h, _ in items], limits,
                                        [chunk for chunk, _, _ in items], self._read_for_codec)
            for (chunk, head, payload), plain, limit in zip(items, plains, limits):
                if isinstance(plain, CodecError):
                    results[chunk] = self._corrupt(chunk, str(plain))
                elif limit <= len(plain) < head.raw_size:
                    results[chunk] = plain  # a prefix, checked through the entries read from it
                elif not head.plain_hash_ok(plain):
                    results[chunk] = self._corrupt(chunk, "decoded bytes do not match the plaintext checksum"
                                                   + _decoded_with(chunk, codec.dependencies(payload)))
                else:
                    results[chunk] = plain
        return results


def _parse_header(stream: BinaryIO, path: str, file_size: int) -> tuple[Header, int]:
    """The archive's header, checked, and its size."""
    fixed = _read_at(stream, 0, C.HEADER_FIXED_SIZE, path)
    if fixed[:8] != C.HEADER_MAGIC:
        if 0 < len(fixed) < len(C.HEADER_MAGIC) and C.HEADER_MAGIC.startswith(fixed):
            raise TruncatedArchive(archive=path, reason=f"only {len(fixed)} bytes")
        if _tail(stream, path, file_size) == C.FOOTER_MAGIC:
            raise CorruptArchive(archive=path, reason="the header magic is damaged")
        raise NotAnArchive(archive=path, reason="no lza magic at the start")
    if len(fixed) < C.HEADER_FIXED_SIZE:
        raise TruncatedArchive(archive=path, reason="the header is incomplete")
    try:
        body_size = Header.body_size(fixed)
    except ValueError as exc:
        raise CorruptArchive(archive=path, reason=str(exc)) from None
    header_size = C.HEADER_FIXED_SIZE + body_size + C.HASH_SIZE
    if file_size < header_size:
        raise TruncatedArchive(archive=path, reason=f"{file_size} bytes cannot hold the header")
    try:
        header = Header.from_wire(_read_at(stream, 0, header_size, path))
    except ValueError as exc:
        raise CorruptArchive(archive=path, reason=str(exc)) from None
    if header.major not in C.SUPPORTED_MINOR:
        supported = " and ".join(f"{major}.x" for major in C.SUPPORTED_MINOR)
        raise UnsupportedVersion(archive=path, major=header.major, minor=header.minor, supported=supported)
    unknown = header.incompat_flags & ~C.KNOWN_INCOMPAT_FLAGS[header.major]
    if unknown:
        raise UnsupportedFeature(archive=path, reason=f"needs incompatible features 0x{unknown:08x} this lza does not know")
    if header.incompat_flags & (C.INCOMPAT_LM_BIAS_GROUP | C.INCOMPAT_LM_CACHE) and \
            not header.incompat_flags & C.INCOMPAT_LM_BIAS:
        raise CorruptArchive(archive=path, reason="the header sets lm_bias_group or lm_cache without lm_bias (SPEC 4)")
    if header.incompat_flags & (C.INCOMPAT_LM_CRLF | C.INCOMPAT_LM_WINDOWS_1252) and \
            not header.incompat_flags & C.INCOMPAT_LM_UTF16:
        raise CorruptArchive(archive=path, reason="the header sets lm_crlf or lm_windows1252 without lm_utf16 (SPEC 4)")
    if header.incompat_flags & C.INCOMPAT_LM_CODE_PAGES and not header.incompat_flags & C.INCOMPAT_LM_WINDOWS_1252:
        raise CorruptArchive(archive=path, reason="the header sets lm_code_pages without lm_windows1252 (SPEC 4)")
    return header, header_size


def _tail(stream: BinaryIO, path: str, file_size: int) -> bytes:
    """Where the footer magic ends a whole archive."""
    return _read_at(stream, max(0, file_size - len(C.FOOTER_MAGIC)), len(C.FOOTER_MAGIC), path)


def _decoded_with(chunk: int, dependencies: Sequence[int]) -> str:
    """Where a chunk decodes with others (the lm codec's primer, its bias group), damage in any of them shows in it."""
    others = [c for c in dependencies if c != chunk]
    if not others:
        return ""
    named = f"chunk {others[0]}" if len(others) == 1 else f"chunks {', '.join(map(str, others))}"
    return f" (it is decoded with {named}: damage there shows here too)"


DECODE_AHEAD = 64  # chunks decoded together at most: lm decodes them in lockstep (throughput grows with the batch)
DECODE_AHEAD_BYTES = 256 << 20  # and at most this much plaintext held at once (unless one chunk is larger)


class ChunkSource:
    """Decoded chunks for reads that follow a known order: decodes ahead in batches and keeps one batch."""

    def __init__(self, reader: ArchiveReader, order: Sequence[int], batch: int = DECODE_AHEAD,
                 prefixes: Mapping[int, int] | None = None) -> None:
        self._reader = reader
        self._prefixes = prefixes
        self._order = list(dict.fromkeys(order))
        self._position = {chunk: i for i, chunk in enumerate(self._order)}
        self._batch = max(1, batch)
        self._cache: dict[int, bytes | ChunkCorrupt] = {}

    def get(self, chunk: int) -> bytes:
        if chunk not in self._cache:
            start = self._position.get(chunk)
            wanted = self._ahead(start) if start is not None else [chunk]
            self._cache = self._reader.decode_chunks(wanted, self._prefixes)
        result = self._cache[chunk]
        if isinstance(result, ChunkCorrupt):
            raise result
        return result

    def _ahead(self, start: int) -> list[int]:
        wanted, held = [], 0
        for chunk in self._order[start : start + self._batch]:
            held += self._reader.index.chunks[chunk].raw_size
            if wanted and held > DECODE_AHEAD_BYTES:
                break
            wanted.append(chunk)
        return self._whole_groups(wanted, start + len(wanted))

    def _whole_groups(self, wanted: list[int], following: int) -> list[int]:
        """A batch that ends inside a group of chunks decoded together (Codec.mates) would decode the group twice, its
        chunks in the next batch now as helpers of those in this one and again later: the batch ends before the group
        instead, unless the group is all of it."""
        if following >= len(self._order):
            return wanted
        chunks = self._reader.index.chunks
        after = self._order[following]
        if chunks[after].codec != chunks[wanted[-1]].codec:  # a group's chunks share a codec
            return wanted
        mates = set(self._reader.mates(after))
        kept = len(wanted)
        while kept and wanted[kept - 1] in mates:
            kept -= 1
        return wanted[:kept] or wanted

    def content(self, entry: Entry, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end) of an entry, touching only the chunks that hold them."""
        end = entry.size if end is None else min(end, entry.size)
        position = 0
        for ref in entry.chunks:
            lo, hi = max(start, position), min(end, position + ref.length)
            if lo < hi:
                data = self.get(ref.chunk)
                yield data[ref.offset + lo - position : ref.offset + hi - position]
            position += ref.length
            if position >= end:
                break


def content_order(entries: Sequence[Entry]) -> list[int]:
    return [ref.chunk for entry in entries for ref in entry.chunks]


def content_prefixes(entries: Sequence[Entry]) -> dict[int, int]:
    """Chunk → the end of the last byte these entries use in it: where decoding can stop for readers that check each
    entry's content against its checksum."""
    ends: dict[int, int] = {}
    for entry in entries:
        for ref in entry.chunks:
            ends[ref.chunk] = max(ends.get(ref.chunk, 0), ref.offset + ref.length)
    return ends


@dataclass(frozen=True)
class Gap:
    """Bytes [start, end) of an archive where a scan found no chunk; `unsearched`: the search gave up there."""

    start: int
    end: int
    unsearched: bool = False


SCAN_BLOCK = 1 << 20  # bytes searched for a chunk magic at a time
# A search past damage checks every chunk magic it meets, hashing what the header there claims; bytes crafted to be
# magics everywhere would make that quadratic. It hashes at most this many times the bytes it searches, 16 MiB more.
SEARCH_EFFORT = 64


def scan_chunks(stream: BinaryIO, path: str, major: int, start: int, end: int) -> tuple[list[ChunkInfo], list[Gap]]:
    """The chunks between `start` and `end`, found as SPEC 3.3 allows: each where the one before it ends; where none is
    there, the next place a chunk header parses and its stored check holds. A chunk whose payload is damaged keeps its
    place (decoding reports it) where another chunk, or the end, follows it where its header says it ends."""
    chunks, gaps = [], []
    position, effort = start, SEARCH_EFFORT * (end - start) + C.MAX_CHUNK_RAW
    while position < end:
        head = _valid_chunk(stream, path, major, position, end)
        if head is None:
            head = _damaged_chunk(stream, path, major, position, end)
        if head is not None:
            chunks.append(ChunkInfo(position, head.stored_size, head.raw_size, head.codec, head.size))
            position += head.size + head.stored_size
            continue
        following, effort = _next_chunk(stream, path, major, position + 1, end, effort)
        gaps.append(Gap(position, following, unsearched=effort < 0))
        position = following
    return chunks, gaps


def _header_at(stream: BinaryIO, path: str, major: int, position: int, end: int) -> ChunkHeader | None:
    """The chunk header at `position`, if one parses there and its chunk ends by `end`."""
    try:
        head = ChunkHeader.starting(_read_at(stream, position, ChunkHeader.max_size(major), path), major)
    except ValueError:
        return None
    return head if position + head.size + head.stored_size <= end else None


def _valid_chunk(stream: BinaryIO, path: str, major: int, position: int, end: int) -> ChunkHeader | None:
    head = _header_at(stream, path, major, position, end)
    if head is None or not head.stored_hash_ok(_read_at(stream, position + head.size, head.stored_size, path)):
        return None
    return head


def _damaged_chunk(stream: BinaryIO, path: str, major: int, position: int, end: int) -> ChunkHeader | None:
    head = _header_at(stream, path, major, position, end)
    if head is None:
        return None
    following = position + head.size + head.stored_size
    return head if following == end or _valid_chunk(stream, path, major, following, end) else None


def _next_chunk(stream: BinaryIO, path: str, major: int, position: int, end: int, effort: int) -> tuple[int, int]:
    """Where the next whole chunk after `position` starts (`end` if none does), and the effort left: the bytes it may
    still hash, below 0 where it gave up."""
    magic = ChunkHeader.magic(major)
    while position < end:
        block = _read_at(stream, position, min(SCAN_BLOCK + len(magic) - 1, end - position), path)
        found = block.find(magic)
        while 0 <= found < SCAN_BLOCK:
            head = _header_at(stream, path, major, position + found, end)
            if head is not None:
                effort -= head.size + head.stored_size
                if effort < 0:
                    return end, effort
                if _valid_chunk(stream, path, major, position + found, end):
                    return position + found, effort
            found = block.find(magic, found + 1)
        position += SCAN_BLOCK
    return end, effort


def _index_start(stream: BinaryIO, path: str, file_size: int, header_size: int, major: int) -> int | None:
    """Where the footer at the end says the index starts, if one is there."""
    footer_size = C.FOOTER_SIZES[major]
    if file_size - footer_size < header_size or _tail(stream, path, file_size) != C.FOOTER_MAGIC:
        return None
    try:
        return Footer.from_wire(_read_at(stream, file_size - footer_size, footer_size, path), major).index_offset
    except ValueError:
        return None


APPENDED_SEARCH = 1 << 20  # bytes before the end searched for a footer that other bytes were appended to


def _refuse_missing_footer(stream: BinaryIO, path: str, file_size: int, header_size: int, major: int) -> None:
    """No footer at the end: the archive was cut short or never finished, or bytes were appended after its footer
    (concatenated files, a download with a trailer). The latter is said so when a footer whose index checksum holds
    ends earlier (an archive stored inside this one has footers too, whose indexes do not sit there)."""
    footer_size = C.FOOTER_SIZES[major]
    start = max(header_size, file_size - APPENDED_SEARCH)
    tail = _read_at(stream, start, file_size - start, path)
    found = tail.rfind(C.FOOTER_MAGIC)
    while found >= 0:
        end = start + found + len(C.FOOTER_MAGIC)
        try:
            footer = Footer.from_wire(_read_at(stream, end - footer_size, footer_size, path), major)
        except ValueError:
            footer = None
        if footer is not None and header_size <= footer.index_offset <= end - footer_size and \
                footer.index_ok(_read_at(stream, footer.index_offset, end - footer_size - footer.index_offset, path)):
            raise CorruptArchive(archive=path, reason=f"{file_size - end} bytes follow its footer (which ends at byte "
                                                      f"{end}): appended to the archive? lza reads the footer only "
                                                      f"from the end")
        found = tail.rfind(C.FOOTER_MAGIC, 0, found)
    raise TruncatedArchive(archive=path, reason=f"no footer at the end (the archive was cut short or never finished){SALVAGE}")


def _size(stream: BinaryIO, path: str) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except OSError as exc:
        raise InputError(path=path, reason=f"cannot be read: {describe(exc)}") from None


def _read_at(stream: BinaryIO, offset: int, size: int, path: str) -> bytes:
    """Bytes of the archive at `path`; a device error (EIO: a failing disk or network share) names the archive."""
    try:
        stream.seek(offset)
        return stream.read(size)
    except OSError as exc:
        raise InputError(path=path, reason=f"cannot be read: {describe(exc)}") from None
