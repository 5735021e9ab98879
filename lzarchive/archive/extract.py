"""Container layer: safe extraction. Every path is checked before anything is written, and writes never follow links.

The bar is tarfile's PEP 706 "data" filter: no absolute or escaping paths, no absolute or escaping symlinks, no
device files, no ownership changes, setuid/setgid bits dropped; and beyond it, a symlink's target is followed
through every other link the archive creates and every link already in the destination (tarfile judges each link
against the disk as it is when that link comes, so a later link can still make an earlier one escape), and every
parent directory is opened with O_NOFOLLOW from the destination down, so no symlink is ever written through.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ChunkCorrupt, DamagedNotExtracted, EntryCorrupt, InputError, NotAllExtracted, OutputError, PathRefused
from ..files import create_temp, describe, entry_id, place, remove_quietly
from ..format.constants import CONTEXT_ENTRY, EntryType
from ..format.records import Entry
from ..format.wire import hasher
from .progress import NULL_PROGRESS, Progress
from .reader import DECODE_AHEAD, ArchiveReader, ChunkSource, content_order, content_prefixes

FILE_MODE_MASK = 0o777
DIR_MODE_MASK = 0o1777
# More links than any kernel follows in one lookup (Linux 40, macOS and the BSDs 32, Windows 63): a target still
# inside the destination after this many hops resolves to nothing anywhere (ELOOP), whatever follows
MAX_LINK_HOPS = 64
# Failures of one entry's own path: it is left out with a warning and the others are extracted, as tar does. Any
# other (no space, a read-only or failing file system) would fail every entry after it, and stops the extraction.
ENTRY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.EFBIG, errno.EISDIR, errno.ENOTDIR,
                          errno.ELOOP, errno.EEXIST, errno.ENOTEMPTY, errno.EINVAL, errno.EILSEQ, errno.EMLINK,
                          errno.EOPNOTSUPP})


class _Place:
    """A path below the destination as the symlink check meets it: one object per path, so that what is learnt of
    it (what the archive or the disk holds there, where a link there leads) is learnt once."""

    __slots__ = ("parent", "name", "children", "kind", "directory", "target", "disk", "resolved")

    def __init__(self, parent: _Place | None, name: str) -> None:
        self.parent, self.name = parent, name
        self.children: dict[str, _Place] = {}
        self.kind: EntryType | None = None  # an entry's type where one names this path: the archive decides it
        self.directory = False  # a directory once extracted: an entry's, or one above an entry
        self.target: str | None = None  # the archive's symlink target here
        self.disk: tuple[bool, str | None] | None = None  # DestinationView._on_disk, once read
        self.resolved: _Resolved | None = None  # where a link here leads, once walked

    def child(self, name: str) -> _Place:
        place = self.children.get(name)
        if place is None:
            place = self.children[name] = _Place(self, name)
        return place

    def path(self) -> str:
        parts = []
        place = self
        while place.parent is not None:
            parts.append(place.name)
            place = place.parent
        return "/".join(reversed(parts))


@dataclass(frozen=True)
class _Resolved:
    """Where a symlink leads: a place (None where it does not resolve), after following `hops` links; or why it is
    refused, found on the way: "absolute" (at: the link itself, or an absolute link it leads through), "leaves"
    (a ".." above the destination) or "climbs" (at: no directory, which a ".." goes up out of)."""

    place: _Place | None
    hops: int
    why: str | None = None
    at: _Place | None = None


NOWHERE = _Resolved(None, MAX_LINK_HOPS + 1)  # more links than any kernel follows: ELOOP, wherever it would go


class _Deeper(Exception):
    """A walk nested past MAX_LINK_HOPS walks met `link`, not yet walked."""

    def __init__(self, link: _Place) -> None:
        super().__init__()
        self.link = link


@dataclass(frozen=True)
class Refusal:
    path: str
    reason: str


class DestinationView:
    """The destination as it will be after extraction: every path an entry names is what the archive makes it; any
    other path is what is on disk now, read without following links (nothing, where dest is None: an empty one)."""

    def __init__(self, entries: Sequence[Entry], dest: str | None) -> None:
        self.dest = dest
        self.root = _Place(None, "")
        for entry in entries:
            place = self._place(entry.path)
            place.kind = entry.type
            place.directory = entry.type is EntryType.DIR
            place.target = entry.target if entry.type is EntryType.SYMLINK else None

    def _place(self, path: str) -> _Place:
        place = self.root
        for part in path.split("/"):
            place.directory = True
            place = place.child(part)
        return place

    def symlink_refusal(self, entry: Entry) -> str | None:
        """Why a symlink may not be created, or None. Its target is resolved as the kernel will resolve it once
        everything is extracted, following the archive's other links and those already on disk: it must stay
        inside the destination and must not go through an absolute link, nor go up ("..") out of anything but a
        directory: a link another archive makes there later would decide where that leads (`a -> b/..` with no `b`
        is refused, so that a `b -> .` to come cannot take `a` out). A chain that loops (or grows) is walked
        for MAX_LINK_HOPS links and kept if it has not left by then: no system follows it further, so it is a
        dangling link, which tar and cp restore too (a tree holding `a -> a` packs, and must extract)."""
        target = entry.target or ""
        place = self._place(entry.path)
        outcome = self._resolved(place)
        if outcome.why == "absolute":
            if outcome.at is place:
                return f"symlink target {target!r} is absolute"
            return f"symlink target {target!r} goes through {outcome.at.path()!r}, a link to an absolute path"
        if outcome.why == "leaves":
            return f"symlink target {target!r} leaves the destination"
        if outcome.why == "climbs":
            return f"symlink target {target!r} goes up out of {outcome.at.path()!r}, which is no directory"
        return None

    def _resolved(self, link: _Place) -> _Resolved:
        """Where the symlink at `link` leads. Each link is walked once (a link met again reuses its walk), so links
        that all lead through one long chain cost the chain once, not once each. A walk that meets a link not yet
        walked walks it first, nested; past MAX_LINK_HOPS nested walks (a chain of a million links would exhaust
        Python's stack) the deepest link not yet walked is walked on its own first, and the walk begun again."""
        pending = [link]
        while pending:
            try:
                self._resolve(pending[-1], 0)
                pending.pop()
            except _Deeper as deeper:
                pending.append(deeper.link)
        return link.resolved

    def _resolve(self, link: _Place, depth: int) -> _Resolved:
        """`link`'s walk, nested `depth` walks deep; a link met while its own walk is under way loops, and leads
        nowhere."""
        if link.resolved is None:
            if depth > MAX_LINK_HOPS:
                raise _Deeper(link)
            link.resolved = NOWHERE  # until its walk ends: met again on the way, it loops
            try:
                link.resolved = self._walk(link, depth)
            except _Deeper:
                link.resolved = None  # not walked yet: begun again once the deeper link is
                raise
        return link.resolved

    def _walk(self, link: _Place, depth: int) -> _Resolved:
        target = self._link_at(link) or ""
        if target.startswith("/"):
            return _Resolved(None, 0, "absolute", link)
        place, hops = link.parent, 0
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if place.parent is None:
                    return _Resolved(None, hops, "leaves")
                if not (place.directory or place.kind is None and self._on_disk(place)[0]):
                    return _Resolved(None, hops, "climbs", place)
                place = place.parent
                continue
            place = place.child(part)
            if self._link_at(place) is None:
                continue
            through = self._resolve(place, depth + 1)
            hops += 1 + through.hops
            if hops > MAX_LINK_HOPS:
                return NOWHERE
            if through.place is None:
                return _Resolved(None, hops, through.why, through.at)
            place = through.place
        return _Resolved(place, hops)

    def _link_at(self, place: _Place) -> str | None:
        """The link at `place` once extracted: the archive's, or the one on disk."""
        if place.kind is not None:
            return place.target
        return self._on_disk(place)[1]

    def _on_disk(self, place: _Place) -> tuple[bool, str | None]:
        """(whether a directory is on disk at place, the target of a link there), read once, without following
        links; nothing can be below a path that is no directory on disk."""
        unread = []  # place and its ancestors up to the first already read (a loop: paths nest 2,000 deep)
        above = place
        while above is not None and above.disk is None:
            unread.append(above)
            above = above.parent
        for below in reversed(unread):
            if below.parent is None:
                below.disk = (self.dest is not None and os.path.isdir(self.dest), None)
            elif not below.parent.disk[0]:
                below.disk = (False, None)
            else:
                below.disk = _disk_entry(self.dest, below.path().split("/"))
        return place.disk

    def existing(self, path: str) -> os.stat_result | None | str:
        """What is on disk at `path` now (not following links): its stat, None, or why the path cannot be reached
        (a parent that is a symlink or no directory, and that no entry of the archive replaces)."""
        parts = path.split("/")
        fd, depth, error = _open_parent(self.dest, parts)
        if fd is None:
            parent = "/".join(parts[: depth + 1])
            if depth >= 0 and error in (errno.ELOOP, errno.ENOTDIR) and self._place(parent).kind is not EntryType.DIR:
                return f"parent {parent!r} is a symlink or not a directory"
            return None  # nothing there yet
        try:
            return os.lstat(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def holds_anything(self, path: str) -> bool:
        """Whether the directory on disk at `path` (reached without following links) has entries."""
        parts = path.split("/")
        fd, _, _ = _open_parent(self.dest, parts)
        if fd is None:
            return False
        try:
            directory = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            return False
        finally:
            os.close(fd)
        try:
            return bool(os.listdir(directory))
        finally:
            os.close(directory)


def _disk_entry(dest: str, parts: list[str]) -> tuple[bool, str | None]:
    """What is on disk at dest/parts, reached without following any link: (True, None) for a directory, (False, its
    target) for a symlink, (False, None) for anything else or nothing."""
    fd, _, _ = _open_parent(dest, parts)
    if fd is None:
        return False, None
    try:
        found = os.lstat(parts[-1], dir_fd=fd)
        if stat.S_ISLNK(found.st_mode):
            return False, os.readlink(parts[-1], dir_fd=fd)
        return stat.S_ISDIR(found.st_mode), None
    except OSError:  # nothing there
        return False, None
    finally:
        os.close(fd)


def _open_parent(dest: str, parts: list[str]) -> tuple[int | None, int, int]:
    """The directory dest/parts[:-1], opened without following any link: (fd, -, -), or (None, depth, errno) when
    component parts[depth] cannot be opened (depth -1: the destination itself)."""
    try:
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return None, -1, exc.errno
    for depth, part in enumerate(parts[:-1]):
        try:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            return None, depth, exc.errno
        os.close(fd)
        fd = next_fd
    return fd, len(parts) - 1, 0


def wanted_path(path: str) -> str:
    """A path the user names, as the archive stores paths: `./a//b/` and `/a/b` are `a/b` ("" for the root)."""
    return "/".join(part for part in path.split("/") if part not in ("", "."))


def select_entries(entries: Sequence[Entry], wanted: Sequence[str]) -> list[Entry]:
    """Entries equal to or below each wanted path; a wanted path that matches nothing is an error."""
    prefixes = [wanted_path(w) for w in wanted]
    if not wanted or "" in prefixes:  # nothing named, or the archive's root ("." or "/")
        return list(entries)
    chosen = [e for e in entries if any(e.path == p or e.path.startswith(p + "/") for p in prefixes)]
    for prefix in prefixes:
        if not any(e.path == prefix or e.path.startswith(prefix + "/") for e in chosen):
            raise PathRefused(path=prefix, reason="not found in the archive")
    return chosen


def unsafe_links(entries: Sequence[Entry]) -> list[Refusal]:
    """The symlinks among `entries` that an extraction into an empty directory refuses without --trust-links."""
    view = DestinationView(entries, None)
    return [Refusal(e.path, reason) for e in entries if e.type is EntryType.SYMLINK and (reason := view.symlink_refusal(e))]


def plan(entries: Sequence[Entry], dest: str, *, overwrite: bool, trust_links: bool = False,
         archive: str | None = None) -> list[Refusal]:
    """Everything that would be refused, found before a single byte is written; `archive`, the file being read, is
    never replaced, even with --overwrite (as bsdtar refuses to). With trust_links, symlinks are made as archived,
    wherever they lead (writes still never follow one)."""
    probe = dest  # the destination, or its nearest ancestor that exists: it must be a directory
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe) or "."
    if not os.path.isdir(probe):
        if os.path.islink(probe) and not os.path.exists(probe):  # lexists, not exists: a link to nothing
            where = "is" if probe == dest else f"lies under {probe},"
            raise OutputError(path=dest, reason=f"cannot extract there: it {where} a symlink to {os.readlink(probe)}, "
                                                f"which does not exist")
        where = "exists" if probe == dest else f"lies under {probe}, which exists"
        raise OutputError(path=dest, reason=f"cannot extract there: it {where} and is not a directory")
    view = DestinationView(entries, dest)
    try:
        reading = entry_id(os.path.realpath(archive)) if archive is not None else None
    except OSError as exc:
        raise InputError(path=archive, reason=describe(exc)) from None
    refusals = []
    for entry in entries:
        if entry.type is EntryType.SYMLINK and not trust_links and (reason := view.symlink_refusal(entry)):
            refusals.append(Refusal(entry.path, f"{reason}: --trust-links creates it as archived"))
        try:
            reason = _in_the_way(entry, view, dest, overwrite=overwrite, reading=reading)
        except OSError as exc:  # the destination cannot say what is there (a failing disk): nothing is written
            reason = f"cannot be looked up in the destination: {describe(exc)}"
        if reason:
            refusals.append(Refusal(entry.path, reason))
    return refusals


def _in_the_way(entry: Entry, view: DestinationView, dest: str, *, overwrite: bool,
                reading: tuple[int, int, str] | None) -> str | None:
    """Why what is on disk where `entry` goes refuses the extraction, if it does."""
    existing = view.existing(entry.path)
    if isinstance(existing, str):
        return existing
    if existing is None or (entry.type is EntryType.DIR and stat.S_ISDIR(existing.st_mode)):
        return None
    if reading is not None and (entry.path.rsplit("/", 1)[-1] == reading[2]
                                and entry_id(os.path.join(dest, entry.path)) == reading):
        return "is the archive being extracted, which is never replaced"
    if not overwrite:
        return "already exists (use --overwrite to replace it)"
    if stat.S_ISDIR(existing.st_mode) and view.holds_anything(entry.path):
        return "is a directory that is not empty (--overwrite replaces files, links and empty directories)"
    return None


class Extractor:
    """Writes selected entries under a destination directory, verifying every file's content hash. An entry that
    cannot be extracted (damaged in the archive, or refused by the destination for its own path) is left out with a
    warning, and the others are extracted: damage to one chunk costs only the files in it."""

    def __init__(self, reader: ArchiveReader, dest: str, *, overwrite: bool, progress: Progress = NULL_PROGRESS,
                 batch: int = DECODE_AHEAD) -> None:
        self.reader = reader
        self.dest = dest
        self.overwrite = overwrite
        self.progress = progress
        self.batch = batch
        self.advanced = 0  # content bytes extracted so far, for the progress of an entry left out part way
        self.damaged: list[str] = []
        self.refused: list[str] = []

    def run(self, entries: Sequence[Entry]) -> int:
        """The number of entries extracted; NotAllExtracted (DamagedNotExtracted, where any was damaged) once
        everything else is, if some were left out."""
        try:
            os.makedirs(self.dest, exist_ok=True)
            self.dest_fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise OutputError(path=self.dest, reason=describe(exc)) from None
        made: list[Entry] = []  # directories created or entered so far: their modes and times are due even on failure
        try:
            # every file is checked against its hash before it gets its name, so decoding may stop where files end
            source = ChunkSource(self.reader, content_order(entries), self.batch, content_prefixes(entries))
            self.progress.start("extract", sum(e.size for e in entries if e.has_content))
            copies: dict[str, str] = {}  # a file's path -> the path its content was written to (for hard links)
            for entry in entries:
                if entry.type is EntryType.HARDLINK and entry.target in self.damaged:  # not decoded again to fail again
                    self._leave_out(entry, "not extracted", f"a hard link to {entry.target}, which is damaged", 0,
                                    self.damaged)
                elif self._guarded(entry, lambda: self._extract(entry, source, copies)) and entry.type is EntryType.DIR:
                    made.append(entry)
            for entry in _deepest_first(made):
                self._guarded(entry, lambda: self._finish_dir(entry), "its mode and time not restored")
            made.clear()
            self.progress.finish()
        finally:
            for entry in _deepest_first(made):  # a failure: leave no directory at the 0700 it was created with
                try:
                    self._finish_dir(entry)
                except (OSError, PathRefused):
                    pass
            os.close(self.dest_fd)
        left_out = set(self.damaged) | set(self.refused)
        extracted = sum(1 for e in entries if e.path not in left_out)
        if left_out:
            kind = DamagedNotExtracted if self.damaged else NotAllExtracted
            raise kind(archive=self.reader.path, dest=self.dest, extracted=extracted, damaged=self.damaged,
                       refused=self.refused)
        return extracted

    def _guarded(self, entry: Entry, action, failed: str = "not extracted") -> bool:
        """Whether `action` did its part of extracting `entry`; a failure of that entry alone leaves it out, with a
        warning naming it, what `failed` and why."""
        advanced = self.advanced
        try:
            action()
            return True
        except ChunkCorrupt as exc:
            reason, into = f"chunk {exc.fields['chunk']} is damaged ({exc.fields['reason']})", self.damaged
        except EntryCorrupt as exc:
            reason, into = f"its content does not match its checksum ({exc.fields['reason']})", self.damaged
        except PathRefused as exc:
            reason, into = exc.fields["reason"], self.refused
        except OSError as exc:
            if exc.errno not in ENTRY_ERRNOS:
                raise OutputError(path=os.path.join(self.dest, entry.path), reason=describe(exc)) from None
            reason, into = describe(exc), self.refused
        self._leave_out(entry, failed, reason, self.advanced - advanced, into)
        return False

    def _leave_out(self, entry: Entry, failed: str, reason: str, advanced: int, into: list[str]) -> None:
        """Note and say what `failed` for an entry, which has `advanced` the progress so far, and why."""
        if entry.has_content:
            self._advance(entry.size - advanced)
        into.append(entry.path)
        self.progress.warn(f"{entry.path}: {failed}: {reason}")

    def _advance(self, amount: int) -> None:
        self.advanced += amount
        self.progress.advance(amount)

    def _parent_fd(self, path: str) -> int:
        """Open (creating as needed) the directory holding `path`, refusing any component that is not a real dir."""
        fd = os.dup(self.dest_fd)
        for part in path.split("/")[:-1]:
            try:
                os.mkdir(part, 0o777, dir_fd=fd)  # a directory the archive does not list: the umask decides, as tar
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

    def _extract(self, entry: Entry, source: ChunkSource, copies: dict[str, str]) -> None:
        name = entry.path.rsplit("/", 1)[-1]
        parent = self._parent_fd(entry.path)
        try:
            if entry.type is EntryType.DIR:
                self._make_dir(name, parent)
            elif entry.type is EntryType.SYMLINK:
                self._clear(name, parent)
                os.symlink(entry.target, name, dir_fd=parent)
                try:
                    os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)
                except BaseException:  # a link is whole with its time, as a file is, or not there
                    remove_quietly(name, parent)
                    raise
            elif entry.type is EntryType.HARDLINK and entry.target in copies:
                source_path = copies[entry.target]
                source_parent = self._parent_fd(source_path)
                try:
                    self._clear(name, parent)
                    os.link(source_path.rsplit("/", 1)[-1], name, src_dir_fd=source_parent, dst_dir_fd=parent,
                            follow_symlinks=False)
                finally:
                    os.close(source_parent)
                self._advance(entry.size)
            else:  # a file, or the first hard link to a file that is not extracted: write the content
                self._write_file(entry, name, parent, source)
                copies[entry.target if entry.type is EntryType.HARDLINK else entry.path] = entry.path
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
        """With --overwrite, remove what is in the way (plan() refused directories that are not empty); without it,
        plan() already refused."""
        if self.overwrite:
            try:
                os.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                os.rmdir(name, dir_fd=parent)

    def _clear_directory(self, name: str, parent: int) -> None:
        """With --overwrite, remove an empty directory where a file goes: a rename cannot replace it."""
        if self.overwrite:
            try:
                os.rmdir(name, dir_fd=parent)
            except (FileNotFoundError, NotADirectoryError):
                pass

    def _write_file(self, entry: Entry, name: str, parent: int, source: ChunkSource) -> None:
        """Write to a new temporary file and give it its name only once the content hash matches; without
        --overwrite, never replace what appeared at that name meanwhile."""
        made: list[str] = []
        fd = -1
        try:
            fd = create_temp(name, made, parent)
            content = hasher(CONTEXT_ENTRY)
            with os.fdopen(fd, "wb", closefd=False) as out:
                for piece in source.content(entry):
                    content.update(piece)
                    out.write(piece)
                    self._advance(len(piece))
            if not entry.content_ok(content):
                raise EntryCorrupt(archive=self.reader.path, path=entry.path, reason="hash of the decoded bytes differs")
            os.chmod(fd, entry.mode & FILE_MODE_MASK)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            os.close(fd)
            fd = -1
            self._clear_directory(name, parent)
            place(made[0], name, replace=self.overwrite, dir_fd=parent)
        except FileExistsError:
            remove_quietly(made[0], parent)
            raise PathRefused(path=entry.path, reason="appeared during extraction (use --overwrite to replace it)") from None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            for temp in made:
                remove_quietly(temp, parent)
            raise

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


def _deepest_first(dirs: list[Entry]) -> list[Entry]:
    return sorted(dirs, key=lambda e: e.path.count("/"), reverse=True)
