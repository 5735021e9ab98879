"""Container layer: streams entries into chunks, codes chunks in batches, writes header, chunks, index and footer."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

from ..codecs import Codec, codec_name
from ..codecs.base import Joined
from ..errors import OutputError
from ..files import create_temp, describe, not_a_file, place, remove_quietly
from ..format.constants import CONTEXT_ENTRY, FORMAT_MAJOR, MAX_CHUNK_RAW, SUPPORTED_MINOR, CodecId, EntryType, IndexEncoding
from ..format.records import ChunkHeader, ChunkInfo, ChunkRef, Entry, Footer, Header, Index, ModelRef, check_size
from ..format.wire import hasher
from .progress import NULL_PROGRESS, Progress

DEFAULT_CHUNK_SIZE = 1 << 20
READ_BLOCK = 1 << 20


class ArchiveOutput:
    """The archive file being written. A failed write (a full disk) is an OutputError naming the archive, never
    mistaken for an error reading the file being packed."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path
        st = os.fstat(fd)
        self.inode = st.st_dev, st.st_ino  # the temporary file's, so that a walk of the sources can leave it out

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except OSError as exc:
                raise OutputError(path=self.path, reason=describe(exc)) from None


@contextmanager
def atomic_output(path: str, *, replace: bool, what: str = "the archive", doing: str = "packing") -> Iterator[ArchiveOutput]:
    """A file that appears at `path` only when the block succeeds: a new temporary file (mode by the umask), fsync,
    then its name, fsync of the directory. Without `replace`, a file that appeared at `path` meanwhile is kept and
    the new one refused. `what` it holds and what it is `doing` name it in errors."""
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    dir_fd = fd = -1
    made: list[str] = []
    try:
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            fd = create_temp(name, made, dir_fd, mode=0o666)
            output = ArchiveOutput(fd, path)
        except OSError as exc:
            raise OutputError(path=path, reason=f"cannot create {what} in {directory}: {describe(exc)}") from None
        yield output
        try:
            os.fsync(fd)
            os.close(fd)
            fd = -1
            special = replace and not_a_file(name, dir_fd)  # made so while the work went on
            if special:
                raise OutputError(path=path, reason=special)
            place(made[0], name, replace=replace, dir_fd=dir_fd)
        except FileExistsError:
            raise OutputError(path=path, reason=f"appeared while {doing}; it was left alone (use --force to replace it)") from None
        except OSError as exc:
            raise OutputError(path=path, reason=describe(exc)) from None
        try:
            os.fsync(dir_fd)
        except OSError as exc:  # the archive is whole and has its name; only its name's durability is in doubt
            raise OutputError(path=path, reason=f"is written, but its directory could not be synced ({describe(exc)}): "
                                                f"a crash now could lose it") from None
    except BaseException:
        if fd >= 0:
            os.close(fd)
        for temp in made:
            remove_quietly(temp, dir_fd)
        raise
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)


@dataclass
class CodecStats:
    chunks: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0


@dataclass
class WriteStats:
    entries: int = 0
    chunks: int = 0
    raw_bytes: int = 0
    archive_bytes: int = 0
    per_codec: dict[str, CodecStats] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # source files that changed or vanished while being packed
    unreadable: list[str] = field(default_factory=list)  # source paths left out: they could not be read


def choose_payloads(chunks: Sequence[bytes], codecs: Sequence[Codec], first_chunk: int = 0,
                    runs: Sequence[int] | None = None) -> list[tuple[int, bytes | Joined]]:
    """Code every chunk with the candidate codecs and keep the smallest payload (on a tie: store, else the codec listed
    first); store is the floor, so nothing expands. Chunks whose payloads depend on each other (a codec's group: the chunks of
    Codec.mates, or a chunk and those it joins) are taken together where their payloads are smaller in all than what
    the chunks hold so far, else none of them; a chunk that other payloads name (Codec.keeps, alone: the lm primer's)
    stays with its codec. Cheap codecs go first; a costly one (a model) is offered a chunk they coded only where it
    contends (Codec.contends: the lm codec leaves zstd the chunks it shrinks to 1/64 or less). The chunks it is not
    offered split its batch, as chunks it declines do. runs: see Codec.encode_batch."""
    best: list[tuple[int, bytes | Joined]] = [(CodecId.STORE, bytes(c)) for c in chunks]
    rank_of = {codec.codec_id: rank for rank, codec in enumerate(codecs)} | {CodecId.STORE: -1}
    kept: set[int] = set()
    for rank, codec in sorted(enumerate(codecs), key=lambda item: item[1].costly):
        if codec.codec_id == CodecId.STORE:
            continue
        offered = [not codec.costly or best[i][0] == CodecId.STORE or codec.contends(c, len(best[i][1]))
                   for i, c in enumerate(chunks)]
        for lo, hi in _spans(offered):
            payloads = codec.encode_batch(chunks[lo:hi], first_chunk + lo, None if runs is None else runs[lo:hi])
            for unit, named in _units(codec, payloads, first_chunk + lo):
                members = [lo + k for k in unit]
                if kept.intersection(members):
                    continue
                size = sum(len(payloads[k]) for k in unit if not isinstance(payloads[k], Joined))
                held = sum(len(best[i][1]) for i in members)  # bytes: only kept payloads are Joined
                if named or size < held or (size == held and all(rank < rank_of[best[i][0]] for i in members)):
                    for k, i in zip(unit, members):
                        best[i] = (codec.codec_id, payloads[k])
                    if named or len(unit) > 1:
                        kept.update(members)
    return best


def _units(codec: Codec, payloads: Sequence[bytes | Joined | None], first: int) -> Iterator[tuple[list[int], bool]]:
    """The payloads (indices) that must be stored with this codec together or not at all, and whether other payloads
    name them (a unit of one the codec keeps outside a group: it must be stored as it is)."""
    done: set[int] = set()
    for k, payload in enumerate(payloads):
        if payload is None or isinstance(payload, Joined) or k in done:
            continue
        unit = [k]
        while unit[-1] + 1 < len(payloads) and isinstance(payloads[unit[-1] + 1], Joined):
            unit.append(unit[-1] + 1)
        named = len(unit) == 1 and codec.keeps(first + k, payload)
        if named and len(mates := codec.mates(first + k, payload)) > 1:  # a group of chunks apart (lm format 2.6)
            unit, named = [m - first for m in mates], False
        done.update(unit)
        yield unit, named


def _spans(flags: Sequence[bool]) -> Iterator[tuple[int, int]]:
    """(lo, hi) of each run of consecutive true flags."""
    lo = None
    for i, flag in enumerate([*flags, False]):
        if flag and lo is None:
            lo = i
        elif not flag and lo is not None:
            yield lo, i
            lo = None


class ArchiveWriter:
    """Writes one archive to a binary stream. Memory is bounded by chunk_size × batch_chunks."""

    def __init__(
        self,
        out: BinaryIO,
        codecs: Sequence[Codec],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        batch_chunks: int = 8,
        models: Sequence[ModelRef] = (),
        index_encoding: IndexEncoding | None = None,
        major: int = FORMAT_MAJOR,
        minor: int = -1,
        incompat_flags: int = 0,
        progress: Progress = NULL_PROGRESS,
        line_cuts: bool = False,
    ) -> None:
        """index_encoding None: the smaller of the two; major, minor: the format version to write (minor -1: the
        lowest that can express the header); incompat_flags: the features the codecs' payloads need (SPEC 4);
        line_cuts: a full chunk ends after the last line break in its final eighth, where there is one, so that the
        next chunk starts a line (a language model then starts cold on a line's first token, not on a word cut in
        two)."""
        if not 1 <= chunk_size <= MAX_CHUNK_RAW:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_RAW} bytes, got {chunk_size}")
        if major not in SUPPORTED_MINOR:
            raise ValueError(f"format version must be one of {', '.join(map(str, SUPPORTED_MINOR))}, got {major}")
        self._major = major
        self._out = out
        self._codecs = list(codecs)
        self._chunk_size = chunk_size
        self._line_slack = chunk_size // 8 if line_cuts else 0
        self._batch_chunks = max(1, batch_chunks)
        # chunks that share a codec's state (the lm codec's bias groups: runs of chunks of one file, cut every this
        # many from the run's first) are coded in one batch
        self._group = max([1] + [getattr(codec, "bias_group", 1) for codec in codecs])
        self._progress = progress
        self._index_encoding = index_encoding
        self._entries: list[Entry] = []
        self._chunks: list[ChunkInfo] = []
        self._open = bytearray()  # plaintext of the chunk being filled
        self._open_start = 0  # where it starts in the content (all files' bytes, in the order added)
        self._chunk_starts: list[int] = []  # where each sealed chunk starts in the content
        self._sealed: list[bytes] = []  # full chunks waiting to be coded as one batch
        self._runs: list[int] = []  # each one's place in its run of chunks going on with a file (Codec.encode_batch)
        self._open_run = 0  # the open chunk's
        # each sealed chunk's place once written: (the archive's chunk, offset), where a codec joined it to the one
        # before (the lm codec's streams) not its own
        self._placed: list[tuple[int, int]] = []
        self.stats = WriteStats()
        header = Header(models=tuple(models), major=major, minor=minor, incompat_flags=incompat_flags).to_wire()
        out.write(header)
        self._position = len(header)

    def _seal(self, end: int | None = None, file_goes_on: bool = False) -> None:
        """Close the open chunk after its first `end` bytes (all of them by default); the rest opens the next, which
        goes on with the file being added (file_goes_on) or starts another. A batch is coded once full, where the next
        chunk starts a group."""
        end = len(self._open) if end is None else end
        if end:
            self._sealed.append(bytes(self._open[:end]))
            self._runs.append(self._open_run)
            self._chunk_starts.append(self._open_start)
            self._open_start += end
            del self._open[:end]
            self._open_run = self._open_run + 1 if file_goes_on else 0
        if len(self._sealed) >= self._batch_chunks and self._open_run % self._group == 0:
            self._flush()

    def _flush(self) -> None:
        chosen = choose_payloads(self._sealed, self._codecs, len(self._chunks), self._runs)
        stored: list[tuple[int, bytes, bytearray]] = []  # the chunks to write: codec, payload, plaintext
        for plaintext, (codec_id, payload) in zip(self._sealed, chosen):
            if isinstance(payload, Joined):
                assert stored and stored[-1][0] == codec_id, "a codec joins a chunk only to its own payload before it"
                self._placed.append((len(self._chunks) + len(stored) - 1, len(stored[-1][2])))
                stored[-1][2].extend(plaintext)
            else:
                self._placed.append((len(self._chunks) + len(stored), 0))
                stored.append((codec_id, payload, bytearray(plaintext)))
        for codec_id, payload, plaintext in stored:
            head, data = ChunkHeader.seal(codec_id, bytes(plaintext), payload, self._major)
            self._out.write(data)
            self._chunks.append(ChunkInfo(self._position, head.stored_size, head.raw_size, head.codec, head.size))
            self._position += len(data)
            stats = self.stats.per_codec.setdefault(codec_name(codec_id), CodecStats())
            stats.chunks += 1
            stats.raw_bytes += head.raw_size
            stats.stored_bytes += head.stored_size
        self._sealed.clear()
        self._runs.clear()

    def _append(self, data: bytes, file_start: int) -> None:
        """A full chunk is sealed when more of the file comes: one that the file ends exactly is no run's part."""
        view = memoryview(data)
        while view:
            if len(self._open) == self._chunk_size:
                self._seal(self._line_end(file_start), file_goes_on=True)
            room = self._chunk_size - len(self._open)
            self._open += view[:room]
            view = view[room:]

    def _line_end(self, file_start: int) -> int:
        """Where a full chunk ends: after its last line break in the final eighth (with line_cuts), but never before
        the file being added starts (earlier files' slices are made, and a file that fits in a chunk stays in one),
        else at chunk_size. A break at an even offset in its file followed by a zero byte is UTF-16LE's (0A 00): the
        cut comes after both, so that chunks of UTF-16 text hold whole characters (SPEC 9.14; UTF-16BE's, 00 0A, ends
        with the break)."""
        lead = file_start - self._open_start  # where that file starts in the open chunk (before it where negative)
        cut = self._open.rfind(b"\n", max(self._chunk_size - self._line_slack, lead)) + 1
        if not cut:
            return self._chunk_size
        return cut + 1 if (cut - lead) % 2 and self._open[cut:cut + 1] == b"\0" else cut

    def _refs(self, chunk: int, start: int, end: int) -> tuple[ChunkRef, ...]:
        """The slices of the content bytes [start, end), which start in chunk `chunk`, in it and the chunks after."""
        starts = self._chunk_starts[chunk:] + [self._open_start]
        spans = ((chunk + i, max(start, lo), min(end, hi)) for i, (lo, hi) in enumerate(zip(starts, starts[1:] + [end])))
        return tuple(ChunkRef(c, lo - starts[c - chunk], hi - lo) for c, lo, hi in spans if lo < hi)

    def add_file(self, path: str, stream: BinaryIO, *, mode: int, mtime_ns: int, size: int) -> Entry:
        """Stream a regular file of `size` bytes (what the walk saw): never more, so a file that grows while it is
        read cannot grow the archive; fewer if it shrank (the caller compares). A file that fits in one chunk never
        straddles two (random access stays cheap), nor, where codecs group a run's chunks (Codec.encode_batch), joins
        the last chunk of a file that goes on from the chunk before: reading it decodes its own chunk only."""
        fits = 0 < size <= self._chunk_size
        if len(self._open) == self._chunk_size or fits and (len(self._open) + size > self._chunk_size
                                                            or self._open_run and self._group > 1):
            self._seal()
        if not self._open:
            self._open_run = 0  # the chunk it starts in goes on with no file
        content = hasher(CONTEXT_ENTRY)
        chunk, start = len(self._chunk_starts), self._open_start + len(self._open)
        wanted, size = size, 0
        while size < wanted and (block := stream.read(min(READ_BLOCK, wanted - size))):
            content.update(block)
            self._append(block, start)
            size += len(block)
            self._progress.advance(len(block))
        entry = Entry(path, EntryType.FILE, mode, mtime_ns, size, content.digest()[: check_size(self._major)],
                      self._refs(chunk, start, start + size))
        return self._add(entry)

    @property
    def entries(self) -> Sequence[Entry]:
        """The entries added so far, in order."""
        return self._entries

    def add_dir(self, path: str, *, mode: int, mtime_ns: int) -> Entry:
        return self._add(Entry(path, EntryType.DIR, mode, mtime_ns))

    def add_symlink(self, path: str, target: str, *, mode: int, mtime_ns: int) -> Entry:
        return self._add(Entry(path, EntryType.SYMLINK, mode, mtime_ns, target=target))

    def add_hardlink(self, path: str, target: Entry, *, mode: int, mtime_ns: int) -> Entry:
        """A second name for an earlier file; it shares that file's chunk slices, so it costs no data."""
        entry = Entry(path, EntryType.HARDLINK, mode, mtime_ns, target.size, target.content_hash, target.chunks, target.path)
        return self._add(entry)

    def _add(self, entry: Entry) -> Entry:
        self._entries.append(entry)
        self.stats.entries += 1
        self.stats.raw_bytes += entry.size if entry.type is EntryType.FILE else 0
        return entry

    def _placed_refs(self, refs: tuple[ChunkRef, ...]) -> tuple[ChunkRef, ...]:
        """A file's slices of the sealed chunks as slices of the chunks written (joined ones' slices run on)."""
        placed: list[ChunkRef] = []
        for ref in refs:
            chunk, offset = self._placed[ref.chunk]
            if placed and placed[-1].chunk == chunk:
                placed[-1] = ChunkRef(chunk, placed[-1].offset, placed[-1].length + ref.length)
            else:
                placed.append(ChunkRef(chunk, offset + ref.offset, ref.length))
        return tuple(placed)

    def finish(self) -> WriteStats:
        self._seal()
        self._flush()
        if len(self._chunks) < len(self._placed):
            self._entries = [dataclasses.replace(e, chunks=self._placed_refs(e.chunks)) for e in self._entries]
        try:
            index = Index(tuple(self._entries), tuple(self._chunks)).to_wire(self._major, self._index_encoding)
        except ValueError as exc:  # never an archive that no reader accepts
            raise OutputError(path=getattr(self._out, "path", "the archive"),
                              reason=f"cannot hold these sources: {exc} (pack them into several archives)") from None
        footer = Footer.of(self._major, self._position, index).to_wire()
        self._out.write(index)
        self._out.write(footer)
        self.stats.chunks = len(self._chunks)
        self.stats.archive_bytes = self._position + len(index) + len(footer)
        return self.stats

