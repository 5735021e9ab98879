"""One failed file-system call (EIO) at every point of pack, extract, verify, list, cat and the model cache, in turn:
an error naming the path, never a traceback or a half-written result (a temporary file left, a file under its name
with other bytes, an archive that does not verify)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import warnings

import pytest

from lzarchive import api, files
from lzarchive.archive import extract, reader, tree, writer
from lzarchive.engine import compiler, registry
from lzarchive.errors import EXIT_FAILURE, EXIT_MODEL

from .conftest import files_under, run_cli, snapshot, temporaries

# the calls that change or read the disk there; not close (an fd is let go whatever happens)
OPERATIONS = {"open", "mkdir", "makedirs", "symlink", "link", "rename", "replace", "unlink", "rmdir", "chmod", "utime",
              "fsync", "write", "lstat", "fstat", "readlink", "dup", "listdir", "stat"}


class Faults:
    """Counts the operations the patched modules make, and fails the n-th with EIO."""

    def __init__(self, fail_at: int) -> None:
        self.calls, self.fail_at, self.failed = 0, fail_at, None

    def hit(self, name: str) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            self.failed = name
            raise OSError(errno.EIO, os.strerror(errno.EIO))


class FaultyOs:
    """The os module as the patched modules see it: OPERATIONS counted, and writes to the files os.fdopen opens."""

    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    def __getattr__(self, name: str):
        real = getattr(os, name)
        if name == "fdopen":
            return lambda *args, **kwargs: FaultyFile(real(*args, **kwargs), self._faults)
        if name not in OPERATIONS:
            return real

        def call(*args, **kwargs):
            self._faults.hit(name)
            return real(*args, **kwargs)
        return call


class FaultyFile:
    def __init__(self, file, faults: Faults) -> None:
        self._file, self._faults = file, faults

    def write(self, data) -> int:
        self._faults.hit("file write")
        return self._file.write(data)

    def read(self, *args) -> bytes:
        self._faults.hit("file read")
        return self._file.read(*args)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def __getattr__(self, name: str):
        return getattr(self._file, name)


ARCHIVE_MODULES = (extract, writer, files, api, reader, tree)
MODEL_MODULES = (registry, compiler)  # the model cache, and reading the models there and the one given


def with_fault_at(n: int, monkeypatch, command: list[str], modules=ARCHIVE_MODULES):
    faults = Faults(n)
    with monkeypatch.context() as patch:
        for module in modules:
            patch.setattr(module, "os", FaultyOs(faults))
            if module in (reader, registry, compiler):  # the files they open with open(): archives, models
                patch.setattr(module, "open", lambda *args: FaultyFile(open(*args), faults), raising=False)
        result = run_cli(*command)
    return faults, result


@pytest.fixture
def source(tmp_path):
    """Directories (one with a mode of its own), files that share a chunk and one over several, an empty file,
    a symbolic link and a hard link."""
    root = tmp_path / "src"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "a.txt").write_bytes(b"alpha\n" * 50)
    (root / "docs" / "deep" / "b.bin").write_bytes(bytes(range(256)) * 40)
    (root / "empty").write_bytes(b"")
    os.symlink("docs/a.txt", root / "link")
    os.link(root / "docs" / "a.txt", root / "hard")
    os.chmod(root / "docs" / "deep", 0o750)
    return root


def one_error_line(result) -> None:
    assert result.exit_code == 1, result.stderr
    assert result.stderr.startswith("lza: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "input/output error" in result.stderr.lower()


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_every_failed_call_of_an_extraction_leaves_only_whole_files(overwrite, source, tmp_path, monkeypatch):
    """Into an empty destination; and with --overwrite over an older extraction of the same paths, where each file is
    then the old one or the new one, never a mix or a part."""
    archive, older = tmp_path / "a.lza", tmp_path / "older.lza"
    assert run_cli("pack", str(source), "-o", str(archive), "--codec", "zstd", "--chunk-size", "4096", "-q").exit_code == 0
    want = snapshot(str(source))
    for path, value in want.items():
        if value[0] == "file" and path != "hard":
            (source / path).write_bytes(b"older " + value[1][:100])
    assert run_cli("pack", str(source), "-o", str(older), "--codec", "zstd", "-q").exit_code == 0
    old = snapshot(str(source))
    dirs_mode = {path: value[1] for path, value in want.items() if value[0] == "dir"}
    n = 0
    while True:
        n += 1
        dest = tmp_path / f"out{n}"
        if overwrite:
            assert run_cli("extract", str(older), "-C", str(dest), "-q").exit_code == 0
        command = ["extract", str(archive), "-C", str(dest), "-q"] + (["--overwrite"] if overwrite else [])
        faults, result = with_fault_at(n, monkeypatch, command)
        got = snapshot(str(dest / "src")) if (dest / "src").exists() else {"<hardlink groups>": ()}
        if result.exit_code == 0:  # no call failed, or one whose failure changes nothing (a look for what is there)
            assert got == want, (n, faults.failed)
            if faults.failed is None:
                break
            continue
        one_error_line(result)
        assert temporaries(dest) == [], (n, faults.failed)
        got.pop("<hardlink groups>")
        for path, value in got.items():
            if value[0] == "file":  # under its own name only with its own bytes, mode and time
                assert value == want[path] or overwrite and value == old[path], (n, faults.failed, path)
            elif value[0] == "symlink":
                assert value[1] == want[path][1]
        # directories get their modes on the way out of a failure too (SPEC 10.9), all but one whose step failed
        assert sum(value[0] == "dir" and value[1] != dirs_mode[path] for path, value in got.items()) <= 1, \
            (n, faults.failed)
    assert n > 30  # the faults reached every kind of entry


@pytest.mark.parametrize("replace", [False, True], ids=["new", "force"])
def test_every_failed_call_of_a_pack_leaves_no_archive_or_a_whole_one(replace, source, tmp_path, monkeypatch):
    """A new archive; and with --force over an older archive, which stays as it was unless the new one took its name."""
    older = b"an older archive, not to be lost\n"
    n = 0
    while True:
        n += 1
        out_dir = tmp_path / f"out{n}"
        out_dir.mkdir()
        archive = out_dir / "a.lza"
        if replace:
            archive.write_bytes(older)
        command = ["pack", str(source), "-o", str(archive), "--codec", "zstd", "--chunk-size", "4096", "-q"]
        faults, result = with_fault_at(n, monkeypatch, command + (["--force"] if replace else []))
        assert temporaries(out_dir) == [], (n, faults.failed)
        if faults.failed is None:
            assert result.exit_code == 0, result.stderr
            break
        one_error_line(result)
        # the archive's name is on the older file or on a whole archive (a failed fsync of its directory comes after)
        if replace and archive.read_bytes() == older:
            continue
        assert os.listdir(out_dir) == [] or run_cli("verify", str(archive)).exit_code == 0, (n, faults.failed)
        last_fault = result.stderr
    assert n > 10 and "is written, but its directory could not be synced" in last_fault
    assert stat.S_ISREG(os.stat(archive).st_mode) and run_cli("verify", str(archive)).exit_code == 0


@pytest.mark.parametrize("command", [["verify"], ["list"], ["cat", "src/docs/deep/b.bin"]], ids=lambda c: c[0])
def test_every_failed_read_of_an_archive_is_an_error_naming_it(command, source, tmp_path, monkeypatch):
    archive = str(tmp_path / "a.lza")
    assert run_cli("pack", str(source), "-o", archive, "--codec", "zstd", "--chunk-size", "4096", "-q").exit_code == 0
    args = [command[0], archive, *command[1:]]
    clean = run_cli(*args)
    n = 0
    while True:
        n += 1
        faults, result = with_fault_at(n, monkeypatch, args)
        if faults.failed is None:
            assert (result.exit_code, result.stdout) == (0, clean.stdout)
            break
        one_error_line(result)
        assert result.stderr.startswith(f"lza: error: {archive}: ") and result.stdout == b"", n
    assert n > 3


def test_every_failed_call_reading_or_caching_a_model_is_an_error_naming_it(tiny_path, private_model_cache, tmp_path,
                                                                             monkeypatch):
    """The model given to pack (read, then copied into the cache) and the cached model extract loads: a failed call
    there ends the command with an error that says so (exit 12, or 1 for the cache), after a warning naming the
    cached file where that is what could not be read; or the command does without it (a cache that cannot be used
    gives way to a temporary one)."""
    source = tmp_path / "text"
    source.mkdir()
    (source / "a.txt").write_bytes(b"the same words again and again\n" * 8)
    runs = {}
    for command in ("pack", "extract"):
        n = 0
        while True:
            n += 1
            out = tmp_path / f"{command}{n}"
            args = (["pack", str(source), "-o", str(out / "a.lza"), "--codec", "lm", "--model", tiny_path, "-q"]
                    if command == "pack" else ["extract", str(tmp_path / f"pack{runs['pack']}" / "a.lza"), "-C", str(out),
                                               "-q"])
            out.mkdir()
            if command == "pack":
                shutil.rmtree(registry.configured_dir(), ignore_errors=True)  # each pack imports the model anew
            with warnings.catch_warnings(record=True) as warned:  # the CLI prints them as "lza: warning: ..."
                warnings.simplefilter("always")
                faults, result = with_fault_at(n, monkeypatch, args, MODEL_MODULES)
            said = result.stderr + "".join(str(w.message) for w in warned)
            assert temporaries(registry.configured_dir()) == [], (command, n, faults.failed)
            if result.exit_code == 0:
                assert files_under(str(out / "text" if command == "extract" else source)) == files_under(str(source))
                if faults.failed is None:
                    break
                continue
            assert result.exit_code in (EXIT_FAILURE, EXIT_MODEL) and result.stderr.startswith("lza: error: ")
            assert result.stderr.count("\n") == 1 and "input/output error" in said, (command, n, said)
            assert os.listdir(out) == [], (command, n, faults.failed)
        runs[command] = n
    assert runs["pack"] > 3 and runs["extract"] > 3
