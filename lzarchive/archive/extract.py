"""Container layer: safe extraction. Every path is checked before anything is written, and writes never follow links.

The bar is tarfile's PEP 706 "data" filter: no absolute or escaping paths, no absolute or escaping symlinks, no
device files, no ownership changes, setuid/setgid bits dropped; and beyond it, every parent directory is opened
with O_NOFOLLOW from the destination down, so no symlink (archived or pre-existing) is ever written through.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import EntryCorrupt, OutputError, PathRefused
from ..format.constants import CONTEXT_ENTRY, EntryType
from ..format.records import Entry
from ..format.wire import hasher
from .progress import NULL_PROGRESS, Progress
from .reader import DECODE_AHEAD, ArchiveReader, ChunkSource, content_order, content_prefixes

FILE_MODE_MASK = 0o777
DIR_MODE_MASK = 0o1777


@dataclass(frozen=True)
class Refusal:
    path: str
    reason: str


def symlink_refusal(entry: Entry) -> str | None:
    """Why a symlink may not be created, or None: absolute targets and targets leaving the destination."""
    target = entry.target or ""
    if target.startswith("/"):
        return f"symlink target {target!r} is absolute"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
    if resolved == ".." or resolved.startswith("../"):
        return f"symlink target {target!r} leaves the destination"
    return None


def select_entries(entries: Sequence[Entry], wanted: Sequence[str]) -> list[Entry]:
    """Entries equal to or below each wanted path; a wanted path that matches nothing is an error."""
    if not wanted:
        return list(entries)
    prefixes = [w.strip("/") for w in wanted]
    chosen = [e for e in entries if any(e.path == p or e.path.startswith(p + "/") for p in prefixes)]
    for prefix in prefixes:
        if not any(e.path == prefix or e.path.startswith(prefix + "/") for e in chosen):
            raise PathRefused(path=prefix, reason="not found in the archive")
    return chosen


def plan(entries: Sequence[Entry], dest: str, *, overwrite: bool) -> list[Refusal]:
    """Everything that would be refused, found before a single byte is written."""
    refusals = []
    for entry in entries:
        if entry.type is EntryType.SYMLINK and (reason := symlink_refusal(entry)):
            refusals.append(Refusal(entry.path, reason))
        if not overwrite:
            try:
                existing = os.lstat(os.path.join(dest, entry.path))
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                continue  # a parent is a file: the write fails later with a clear message
            if not (entry.type is EntryType.DIR and stat.S_ISDIR(existing.st_mode)):
                refusals.append(Refusal(entry.path, "already exists (use --overwrite to replace it)"))
    return refusals


class Extractor:
    """Writes selected entries under a destination directory, verifying every file's content hash."""

    def __init__(self, reader: ArchiveReader, dest: str, *, overwrite: bool, progress: Progress = NULL_PROGRESS,
                 batch: int = DECODE_AHEAD) -> None:
        self.reader = reader
        self.dest = dest
        self.overwrite = overwrite
        self.progress = progress
        self.batch = batch

    def run(self, entries: Sequence[Entry]) -> int:
        os.makedirs(self.dest, exist_ok=True)
        self.dest_fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            written = {e.path for e in entries if e.type is EntryType.FILE}
            # every file is checked against its hash before it gets its name, so decoding may stop where files end
            source = ChunkSource(self.reader, content_order(entries), self.batch, content_prefixes(entries))
            self.progress.start("extract", sum(e.size for e in entries if e.has_content))
            for entry in entries:
                self._guarded(entry, lambda: self._extract(entry, source, written))
            dirs = [e for e in entries if e.type is EntryType.DIR]
            for entry in sorted(dirs, key=lambda e: e.path.count("/"), reverse=True):
                self._guarded(entry, lambda: self._finish_dir(entry))
            self.progress.finish()
            return len(entries)
        finally:
            os.close(self.dest_fd)

    def _guarded(self, entry: Entry, action) -> None:
        try:
            action()
        except OSError as exc:
            raise OutputError(path=os.path.join(self.dest, entry.path), reason=_describe(exc)) from None

    def _parent_fd(self, path: str) -> int:
        """Open (creating as needed) the directory holding `path`, refusing any component that is not a real dir."""
        fd = os.dup(self.dest_fd)
        for part in path.split("/")[:-1]:
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PathRefused(path=path, reason=f"parent {part!r} is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = next_fd
        return fd

    def _extract(self, entry: Entry, source: ChunkSource, written: set[str]) -> None:
        name = entry.path.rsplit("/", 1)[-1]
        parent = self._parent_fd(entry.path)
        try:
            if entry.type is EntryType.DIR:
                self._make_dir(name, parent)
            elif entry.type is EntryType.SYMLINK:
                self._clear(name, parent)
                os.symlink(entry.target, name, dir_fd=parent)
                os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)
            elif entry.type is EntryType.HARDLINK and entry.target in written:
                target_parent = self._parent_fd(entry.target)
                try:
                    self._clear(name, parent)
                    os.link(entry.target.rsplit("/", 1)[-1], name, src_dir_fd=target_parent, dst_dir_fd=parent,
                            follow_symlinks=False)
                finally:
                    os.close(target_parent)
                self.progress.advance(entry.size)
            else:  # a file, or a hardlink whose target is not being extracted: write the content
                self._write_file(entry, name, parent, source)
        finally:
            os.close(parent)

    def _make_dir(self, name: str, parent: int) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(name, dir_fd=parent).st_mode):
                if not self.overwrite:
                    raise
                os.unlink(name, dir_fd=parent)
                os.mkdir(name, 0o700, dir_fd=parent)

    def _clear(self, name: str, parent: int) -> None:
        """With --overwrite, remove a non-directory in the way; without it, plan() already refused."""
        if self.overwrite:
            try:
                os.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass

    def _write_file(self, entry: Entry, name: str, parent: int, source: ChunkSource) -> None:
        """Write to a temporary name and rename into place only once the content hash matches."""
        temp = f".{name[:200]}.lza-partial"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=parent)
        content = hasher(CONTEXT_ENTRY)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                for piece in source.content(entry):
                    content.update(piece)
                    out.write(piece)
                    self.progress.advance(len(piece))
            if content.digest() != entry.content_hash:
                raise EntryCorrupt(archive=self.reader.path, path=entry.path, reason="hash of the decoded bytes differs")
            os.chmod(fd, entry.mode & FILE_MODE_MASK)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        except BaseException:
            os.close(fd)
            os.unlink(temp, dir_fd=parent)
            raise
        os.close(fd)
        if not self.overwrite and _exists(name, parent):
            os.unlink(temp, dir_fd=parent)
            raise PathRefused(path=entry.path, reason="appeared during extraction (use --overwrite to replace it)")
        os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)

    def _finish_dir(self, entry: Entry) -> None:
        """Directory modes and times last, deepest first, so writing inside them cannot disturb either."""
        parent = self._parent_fd(entry.path)
        try:
            fd = os.open(entry.path.rsplit("/", 1)[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        finally:
            os.close(parent)
        try:
            os.chmod(fd, entry.mode & DIR_MODE_MASK)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)


def _exists(name: str, parent: int) -> bool:
    try:
        os.lstat(name, dir_fd=parent)
        return True
    except FileNotFoundError:
        return False


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "disk full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)
