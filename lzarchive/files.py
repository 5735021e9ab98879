"""Bottom layer (as errors): file-system steps shared by the writer, the extractor and the model cache:
unpredictable temporary names that a stop never leaves behind, putting a finished file into place without replacing
anything that appeared meanwhile, and telling whether two paths name one directory entry (the archive a command reads
or replaces is never one of its own inputs or outputs)."""

from __future__ import annotations

import errno
import os
import secrets
import stat

TEMP_SUFFIX = ".lza-partial"


def create_temp(name: str, made: list[str], dir_fd: int | None = None, mode: int = 0o600) -> int:
    """Create a new file next to `name` (a path, or a name in `dir_fd`) under a name nothing else uses (exclusive,
    random) and return its fd. The name starts with a dot and the first bytes of `name`'s last component, so a
    leftover (after a kill) says whose it was. It is added to `made` before the file exists: a caller that removes
    what `made` holds on its way out (remove_quietly: a name whose file was never made is no harm) removes the file
    even if a stop (SIGTERM, Ctrl-C) lands as this call returns, before the caller has its fd."""
    directory, last = os.path.split(name)
    stem = last.encode("utf-8", "surrogateescape")[:100].decode("utf-8", "ignore")
    while True:
        made.append(os.path.join(directory, f".{stem}.{secrets.token_hex(8)}{TEMP_SUFFIX}"))
        try:
            return os.open(made[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                           dir_fd=dir_fd)
        except FileExistsError:
            made.pop()  # 2^-64 odds: another file's name; draw another


def place(temp: str, name: str, *, replace: bool, dir_fd: int | None = None) -> None:
    """Rename temp to name. Without `replace`, refuse (FileExistsError) if name exists, atomically: a hard link
    fails rather than replace, then the temporary name goes. Where the file system has no hard links, the check and
    the rename are two steps."""
    if replace:
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    try:
        os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        try:
            os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name) from None
    os.unlink(temp, dir_fd=dir_fd)


def not_a_file(path: str, dir_fd: int | None = None) -> str | None:
    """Why an existing output `path` must not be replaced by a new file renamed over it, where it is not a regular
    file: a symbolic link (the link would go, not what it leads to: `-o /dev/stdout` would become a file), a device,
    a pipe or a socket (`-o /dev/null --force` run as root would remove the system's /dev/null). None where it is
    missing, a regular file or a directory (a rename fails over one); OSError where it cannot be told."""
    try:
        mode = os.lstat(path, dir_fd=dir_fd).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(mode):
        return (f"is a symbolic link (to {os.readlink(path, dir_fd=dir_fd)}): lza replaces a regular file only, never "
                f"a link nor what it leads to: name the file itself")
    for test, kind in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "pipe"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return (f"is a {kind}: lza writes its output to a new file and renames it into place, which would remove "
                    f"the {kind}: name a regular file")
    return None


def entry_id(path: str) -> tuple[int, int, str]:
    """Which directory entry `path` names, however it is spelled: its directory's device and inode, and its name (the
    last component is not followed: a symlink's entry is the link's). OSError where the directory cannot be read."""
    path = os.path.abspath(path)
    st = os.stat(os.path.dirname(path))
    return st.st_dev, st.st_ino, os.path.basename(path)


def remove_quietly(name: str, dir_fd: int | None = None) -> None:
    """Remove a temporary file on the way out of a failure (it may already be gone)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def describe(exc: OSError) -> str:
    """A short reason for a failed file-system call, for messages that already name the path."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if exc.errno == errno.EFBIG:
        return "file too large for the device or the process's file size limit"
    if exc.errno == errno.ENAMETOOLONG:
        return "name too long for the file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]  # "input/output error", as lza's own reasons read
