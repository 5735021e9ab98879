"""Container layer: walks source paths into archive paths, in a deterministic order, without following symlinks."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import InputError, UsageError
from ..files import describe
from ..format.records import check_path
from .progress import Progress


NOT_FOLLOWED = (errno.ELOOP, errno.ENOTDIR, errno.ENXIO)  # a link (O_NOFOLLOW), no directory, a socket


@dataclass(frozen=True)
class SourceItem:
    archive_path: str
    fs_path: str
    st: os.stat_result
    source: str  # the source it lies under, as named: links there are followed, as the user named them

    def _at(self, call):
        """call(name, directory fd) where the fd is this item's directory, reached from the source without following
        any link (None: the item is the source, reached by its path), closed afterwards. OSError with an errno of
        NOT_FOLLOWED where a directory the walk went through has been replaced by a link or a file since."""
        parts = self.archive_path.split("/")[1:]
        if not parts:
            return call(self.source, None)
        fd = os.open(self.source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = next_fd
            return call(parts[-1], fd)
        finally:
            os.close(fd)

    def open(self, flags: int) -> int | None:
        """This item opened (O_NOFOLLOW, without blocking on a FIFO put in its place) if it is still what the walk
        found there, the same file (device and inode): else None (a link or another file there now, or in place of
        a directory above it), and nothing of it is read. OSError otherwise (FileNotFoundError: gone)."""
        flags |= os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = self._at(lambda name, parent: os.open(name, flags, dir_fd=parent))
        except OSError as exc:
            if exc.errno in NOT_FOLLOWED:
                return None
            raise
        if _identity(os.fstat(fd)) != _identity(self.st):
            os.close(fd)
            return None
        return fd

    def link_target(self) -> str | None:
        """This symlink's target, read as the item is opened: None where it is gone or no link is there now (or a
        link or another file in place of a directory above it). OSError otherwise."""
        try:
            return self._at(lambda name, parent: os.readlink(name, dir_fd=parent))
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or exc.errno in (*NOT_FOLLOWED, errno.EINVAL):  # EINVAL: no link
                return None
            raise


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode)


def archive_name(source: str) -> str:
    """The top-level name a source gets in the archive: its last path component (like tar and zip)."""
    name = os.path.basename(os.path.normpath(os.path.abspath(source)))
    if not name:
        raise UsageError(reason=f"{source}: cannot archive the file-system root; name a directory inside it")
    return name


def walk(sources: Sequence[str], excludes: Sequence[str], progress: Progress,
         changed: list[str], unreadable: list[str]) -> Iterator[SourceItem]:
    """Yield every source and everything below it, directories before their contents, names sorted, never following
    a link below a source. A directory removed or replaced meanwhile (by a link, say) is yielded as found, its
    contents not walked: its path goes to `changed`, with a warning. What below a source cannot be looked at (a
    directory that cannot be listed, an entry that cannot be lstat-ed: permission denied, a failing disk) is left out
    as tar leaves it out: its path goes to `unreadable`, with a warning (a directory itself is still yielded)."""
    names: dict[str, str] = {}
    for source in sources:
        name = archive_name(source)
        if name in names:
            raise UsageError(reason=f"{source} and {names[name]} would both be stored as {name!r}")
        names[name] = source
    for name, source in names.items():
        if _excluded(name, excludes, is_dir=False):
            continue
        if os.path.islink(source) and os.path.isdir(source):  # `source/` (a trailing slash) follows it, as in tar
            progress.warn(f"{source}: a symlink to a directory, stored as the link: name it {source}/ to pack the "
                          f"directory's contents")
        try:
            pending = [SourceItem(name, source, os.lstat(source), source)]  # a stack, the next item last
        except OSError as exc:
            raise InputError(path=source, reason=describe(exc)) from None
        while pending:  # a loop, not recursion: a tree may be 2,000 directories deep (paths of 4,095 bytes)
            item = pending.pop()
            if _admitted(item, excludes, progress):
                yield item
                if stat.S_ISDIR(item.st.st_mode):
                    pending.extend(reversed(_children(item, excludes, progress, changed, unreadable)))


def _excluded(archive_path: str, excludes: Sequence[str], is_dir: bool) -> bool:
    """tar's default for --exclude: a glob matches the whole path or any part of it that starts after a '/' (a name,
    or cache/* at any depth), its * matching '/' too; a trailing '/' matches directories only (as rsync and git do)."""
    if not excludes:  # the tails cost a path's depth times its length
        return False
    parts = archive_path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    for pattern in excludes:
        if pattern.endswith("/") and not is_dir:
            continue
        if any(fnmatch.fnmatchcase(tail, pattern.rstrip("/")) for tail in tails):
            return True
    return False


def _admitted(item: SourceItem, excludes: Sequence[str], progress: Progress) -> bool:
    """Whether an item found by the walk is packed: not excluded as a directory, a path the format holds (else
    InputError), a regular file, directory or symlink (else skipped, with a warning)."""
    st = item.st
    if stat.S_ISDIR(st.st_mode) and _excluded(item.archive_path, excludes, is_dir=True):
        return False
    try:
        item.archive_path.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, which Python hands over as surrogates
        raise InputError(path=item.fs_path, reason="cannot be stored: its name is not valid UTF-8, which every path in "
                                                   "an archive is (SPEC 5): rename it, or leave it out with --exclude")
    try:
        check_path(item.archive_path)
    except ValueError as exc:
        raise InputError(path=item.fs_path, reason=f"cannot be stored: {exc}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        progress.warn(f"{item.fs_path}: skipped: not a regular file, directory or symlink")
        return False
    return True


def _children(directory: SourceItem, excludes: Sequence[str], progress: Progress, changed: list[str],
              unreadable: list[str]) -> list[SourceItem]:
    """A directory's entries not excluded by name, sorted, each lstat-ed through the directory as the walk found it
    (opened without following a link: one that replaced it or removed it meanwhile is not walked, and goes to
    `changed`; one that cannot be read goes to `unreadable`)."""
    fs_path, happened = directory.fs_path, "replaced by a link or another file"
    try:
        fd = directory.open(os.O_DIRECTORY)
    except FileNotFoundError:  # as a file removed before its read: reported, and the rest packed
        fd, happened = None, "removed"
    except OSError as exc:
        left_out(fs_path, exc, "its contents are not stored", progress, unreadable)
        return []
    if fd is None:
        changed.append(fs_path)
        progress.warn(f"{fs_path}: {happened} as we walked it; its contents are not stored")
        return []
    children = []
    try:
        for name in sorted(os.listdir(fd)):
            path, child = os.path.join(fs_path, name), f"{directory.archive_path}/{name}"
            if _excluded(child, excludes, is_dir=False):  # before lstat: an excluded path need not be readable
                continue
            try:
                children.append(SourceItem(child, path, os.lstat(name, dir_fd=fd), directory.source))
            except FileNotFoundError:  # as a file removed before its read: the archive is written, pack exits 1
                changed.append(path)
                progress.warn(f"{path}: removed as we walked it; not stored")
            except OSError as exc:
                left_out(path, exc, "not stored", progress, unreadable)
    except OSError as exc:  # the listing
        left_out(fs_path, exc, "its contents are not stored", progress, unreadable)
        return []
    finally:
        os.close(fd)
    return children


def left_out(fs_path: str, exc: OSError, what: str, progress: Progress, unreadable: list[str]) -> None:
    """A source path that cannot be read, left out with a warning (the archive is written, pack exits 1)."""
    unreadable.append(fs_path)
    progress.warn(f"{fs_path}: cannot be read ({describe(exc)}); {what}")
