"""Container layer: walks source paths into archive paths, in a deterministic order, without following symlinks."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import InputError, UsageError
from ..format.records import check_path
from .files import describe
from .progress import Progress


@dataclass(frozen=True)
class SourceItem:
    archive_path: str
    fs_path: str
    st: os.stat_result


def archive_name(source: str) -> str:
    """The top-level name a source gets in the archive: its last path component (like tar and zip)."""
    name = os.path.basename(os.path.normpath(os.path.abspath(source)))
    if not name:
        raise UsageError(reason=f"{source}: cannot archive the file-system root; name a directory inside it")
    return name


def walk(sources: Sequence[str], excludes: Sequence[str], progress: Progress) -> Iterator[SourceItem]:
    """Yield every source and everything below it, directories before their contents, names sorted."""
    names: dict[str, str] = {}
    for source in sources:
        name = archive_name(source)
        if name in names:
            raise UsageError(reason=f"{source} and {names[name]} would both be stored as {name!r}")
        names[name] = source
    for name, source in names.items():
        if os.path.islink(source) and os.path.isdir(source):  # `source/` (a trailing slash) follows it, as in tar
            progress.warn(f"{source}: a symlink to a directory, stored as the link: name it {source}/ to pack the "
                          f"directory's contents")
        yield from _walk_one(source, name, excludes, progress)


def _excluded(archive_path: str, excludes: Sequence[str], is_dir: bool) -> bool:
    """tar's default for --exclude: a glob matches the whole path or any part of it that starts after a '/' (a name,
    or cache/* at any depth), its * matching '/' too; a trailing '/' matches directories only (as rsync and git do)."""
    parts = archive_path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    for pattern in excludes:
        if pattern.endswith("/") and not is_dir:
            continue
        if any(fnmatch.fnmatchcase(tail, pattern.rstrip("/")) for tail in tails):
            return True
    return False


def _walk_one(fs_path: str, archive_path: str, excludes: Sequence[str], progress: Progress) -> Iterator[SourceItem]:
    if _excluded(archive_path, excludes, is_dir=False):  # before lstat: an excluded path need not be readable
        return
    try:
        st = os.lstat(fs_path)
    except OSError as exc:
        raise InputError(path=fs_path, reason=describe(exc)) from None
    if stat.S_ISDIR(st.st_mode) and _excluded(archive_path, excludes, is_dir=True):
        return
    try:
        check_path(archive_path)
    except ValueError as exc:
        raise InputError(path=fs_path, reason=f"cannot be stored: {exc}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        progress.warn(f"{fs_path}: skipped: not a regular file, directory or symlink")
        return
    yield SourceItem(archive_path, fs_path, st)
    if stat.S_ISDIR(st.st_mode):
        try:
            children = sorted(os.listdir(fs_path))
        except OSError as exc:
            raise InputError(path=fs_path, reason=describe(exc)) from None
        for child in children:
            yield from _walk_one(os.path.join(fs_path, child), f"{archive_path}/{child}", excludes, progress)
