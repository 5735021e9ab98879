"""One failed file-system call (EIO) at every point of pack, extract, verify, list, cat, salvage, the model cache, the
model commands and bench, in turn: an error naming the path, never a traceback or a half-written result (a temporary
file left, a file under its name with other bytes, an archive that does not verify). And a stop (Ctrl-C; SIGTERM and SIGHUP stop
the same way, tests/test_atomic.py) just before each of those calls: "interrupted", and the same promises."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import stat
import tempfile
import warnings

import pytest

from lzarchive import api, bench, files
from lzarchive.archive import extract, reader, tree, writer
from lzarchive.engine import compiler, registry
from lzarchive.errors import EXIT_FAILURE, EXIT_INTEGRITY, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_USAGE

from .conftest import files_under, run_cli, snapshot, temporaries
from .gpt2_tiny import write_gpt2

# the calls that change or read the disk there; not close (an fd is let go whatever happens)
OPERATIONS = {"open", "mkdir", "makedirs", "symlink", "link", "rename", "replace", "unlink", "rmdir", "chmod", "utime",
              "fsync", "write", "lstat", "fstat", "readlink", "dup", "listdir", "stat"}


FAULTS = ("EIO", "stop")


class Faults:
    """Counts the operations the patched modules make, and fails the n-th with EIO (or another errno), or stops the
    command just before it as Ctrl-C does (SIGINT's KeyboardInterrupt, raised wherever the command is)."""

    def __init__(self, fail_at: int, fault: str) -> None:
        self.calls, self.fail_at, self.fault, self.failed = 0, fail_at, fault, None

    def hit(self, name: str) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            self.failed = name
            if self.fault == "stop":
                raise KeyboardInterrupt
            raise OSError(getattr(errno, self.fault), os.strerror(getattr(errno, self.fault)))


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


def with_fault_at(n: int, fault: str, monkeypatch, command: list[str], modules=ARCHIVE_MODULES):
    faults = Faults(n, fault)
    registry._temporary_cache.cache_clear()  # each run a process of its own, told of a cache it cannot write
    with monkeypatch.context() as patch:
        for module in modules:
            patch.setattr(module, "os", FaultyOs(faults))
            if module in (reader, registry, compiler, bench):  # what they open with open(): archives, models, samples
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


def ended_by(fault: str, result, exit_codes=(EXIT_FAILURE,), said: str | None = None) -> None:
    """Stopped: lza's one line for Ctrl-C. Failed: one error line, with EIO's reason in it or in `said` (the
    warnings before it too)."""
    if fault == "stop":
        assert (result.exit_code, result.stderr) == (EXIT_INTERRUPTED, "lza: interrupted\n"), result.stderr
        return
    assert result.exit_code in exit_codes, result.stderr
    assert result.stderr.startswith("lza: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "input/output error" in (said or result.stderr).lower(), said or result.stderr


def only_intact_models(directory: str) -> bool:
    """What a failure leaves in the model cache: no temporary file, and every model whole under its hash."""
    models = [name for name in os.listdir(directory) if name.endswith(".lzm")] if os.path.isdir(directory) else []
    return temporaries(directory) == [] and all(
        compiler.file_hash(os.path.join(directory, name)).hex() + ".lzm" == name for name in models)


@pytest.mark.parametrize("fault", FAULTS + ("EACCES",))
@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_every_failed_call_of_an_extraction_leaves_only_whole_files(overwrite, fault, source, tmp_path, monkeypatch):
    """Into an empty destination; and with --overwrite over an older extraction of the same paths, where each file is
    then the old one or the new one, never a mix or a part. A failure of one entry's own path (EACCES) leaves that
    entry out, named, and extracts all the others."""
    archive, older = tmp_path / "a.lza", tmp_path / "older.lza"
    assert run_cli("pack", str(source), "-o", str(archive), "--codec", "zstd", "--chunk-size", "4096", "-q").exit_code == 0
    want = snapshot(str(source))
    for path, value in want.items():
        if value[0] == "file" and path != "hard":
            (source / path).write_bytes(b"older " + value[1][:100])
    assert run_cli("pack", str(source), "-o", str(older), "--codec", "zstd", "-q").exit_code == 0
    old = snapshot(str(source))
    dirs_mode = {path: value[1] for path, value in want.items() if value[0] == "dir"}
    n = left_out = 0
    while True:
        n += 1
        dest = tmp_path / f"out{n}"
        if overwrite:
            assert run_cli("extract", str(older), "-C", str(dest), "-q").exit_code == 0
        command = ["extract", str(archive), "-C", str(dest), "-q"] + (["--overwrite"] if overwrite else [])
        faults, result = with_fault_at(n, fault, monkeypatch, command)
        got = snapshot(str(dest / "src")) if (dest / "src").exists() else {"<hardlink groups>": ()}
        if result.exit_code == 0:  # no call failed, or one whose failure changes nothing (a look for what is there)
            assert got == want, (n, faults.failed)
            assert fault != "stop" or faults.failed is None, n  # a stop is never swallowed
            if faults.failed is None:
                break
            continue
        assert temporaries(dest) == [], (n, faults.failed)
        if fault == "EACCES" and result.stderr.startswith("lza: warning: "):
            warning, error = result.stderr.splitlines()
            entry, _, why = warning.removeprefix("lza: warning: ").partition(": ")
            assert why in ("not extracted: permission denied", "its mode and time not restored: permission denied")
            assert error.startswith(f"lza: error: {archive}: 1 entry not extracted as archived (refused by the destination: {entry})")
            path = entry.removeprefix("src/")  # "src": the root, whose own mode the snapshot leaves out
            assert result.exit_code == EXIT_FAILURE and path in {*want, "src"}, (n, result.stderr)
            linked = ("hard", "docs/a.txt")  # one inode: unless one of them is left out
            kept = [p for p in want if p != path and (p != "<hardlink groups>" or path not in linked)]
            assert {p: got.get(p) for p in kept} == {p: want[p] for p in kept}, n
            if path in got:  # a directory made for the entries below it; an older file --overwrite did not replace; or
                # the file whole under its name, where removing its temporary name (a second link) failed
                assert got[path][0] == "dir" or got[path] == want[path] or overwrite and got[path] == old[path], n
            left_out += 1
            continue
        ended_by(fault, result, said=result.stderr.replace("permission denied", "input/output error"))
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
    assert fault != "EACCES" or left_out > 10, left_out


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("replace", [False, True], ids=["new", "force"])
def test_every_failed_call_of_a_pack_leaves_no_archive_or_a_whole_one(replace, fault, source, tmp_path, monkeypatch):
    """A new archive; and with --force over an older archive, which stays as it was unless the new one took its name.
    A source that cannot be read is left out, as tar leaves it out: the archive holds all the rest, and pack exits 1."""
    older = b"an older archive, not to be lost\n"
    everything = set(snapshot(str(source))) - {"<hardlink groups>"}
    n = left_out = 0
    while True:
        n += 1
        out_dir = tmp_path / f"out{n}"
        out_dir.mkdir()
        archive = out_dir / "a.lza"
        if replace:
            archive.write_bytes(older)
        command = ["pack", str(source), "-o", str(archive), "--codec", "zstd", "--chunk-size", "4096", "-q"]
        faults, result = with_fault_at(n, fault, monkeypatch, command + (["--force"] if replace else []))
        assert temporaries(out_dir) == [], (n, faults.failed)
        if faults.failed is None:
            assert result.exit_code == 0, result.stderr
            break
        if fault == "EIO" and result.stderr.startswith("lza: warning: "):
            warning, error = result.stderr.splitlines()
            left, _, why = warning.removeprefix("lza: warning: ").partition(": ")
            assert why.startswith("cannot be read (input/output error); "), warning
            assert error == f"lza: error: {archive}: written, but 1 source path could not be read; each is stored " \
                            f"as it was read, or left out where it was gone or could not be read (see the warnings above)"
            assert run_cli("verify", str(archive)).exit_code == 0
            stored = {row.decode().removeprefix("src/") for row in run_cli("list", str(archive)).stdout.splitlines()}
            gone, below = os.path.relpath(left, source), why.endswith("its contents are not stored")
            assert everything - stored == {p for p in everything  # a directory stays, without its contents
                                           if gone == "." or p.startswith(gone + "/") or p == gone and not below}, n
            left_out += 1
            continue
        ended_by(fault, result)
        # the archive's name is on the older file or on a whole archive (a failed fsync of its directory comes after)
        if replace and archive.read_bytes() == older:
            continue
        assert os.listdir(out_dir) == [] or run_cli("verify", str(archive)).exit_code == 0, (n, faults.failed)
        last_fault = result.stderr
    # the last call is that fsync: a stop there leaves the whole archive (the stop comes after it is placed)
    assert n > 10 and (fault == "stop" or "is written, but its directory could not be synced" in last_fault)
    assert fault == "stop" or left_out > 20, left_out  # each listing, lstat, open and readlink below the source
    assert stat.S_ISREG(os.stat(archive).st_mode) and run_cli("verify", str(archive)).exit_code == 0


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", [["verify"], ["list", "-l"], ["info"], ["cat", "src/docs/deep/b.bin"],
                                     ["cat", "src/docs/deep/b.bin", "--range", "100:9000"]],
                         ids=lambda c: c[0] + ("-range" if "--range" in c else ""))
def test_every_failed_read_of_an_archive_is_an_error_naming_it(command, fault, source, tmp_path, monkeypatch):
    archive = str(tmp_path / "a.lza")
    assert run_cli("pack", str(source), "-o", archive, "--codec", "zstd", "--chunk-size", "4096", "-q").exit_code == 0
    args = [command[0], archive, *command[1:]]
    clean = run_cli(*args)
    n = 0
    while True:
        n += 1
        faults, result = with_fault_at(n, fault, monkeypatch, args)
        if faults.failed is None:
            assert (result.exit_code, result.stdout) == (0, clean.stdout)
            break
        ended_by(fault, result)
        assert (fault == "stop" or result.stderr.startswith(f"lza: error: {archive}: ")) and result.stdout == b"", n
    assert n > 3


@pytest.mark.parametrize("fault", FAULTS)
def test_every_failed_call_of_a_salvage_leaves_no_output_or_a_whole_one(fault, source, tmp_path, monkeypatch):
    """An archive cut short (no index): a failed read or write is an error naming the archive or the output, and the
    output's name holds nothing or everything the chunks hold."""
    archive, out_dir = tmp_path / "a.lza", tmp_path / "out"
    assert run_cli("pack", str(source), "-o", str(archive), "--codec", "zstd", "--chunk-size", "4096", "-q").exit_code == 0
    archive.write_bytes(archive.read_bytes()[:-30])
    out_dir.mkdir()
    output = out_dir / "salvaged.bin"
    assert run_cli("salvage", str(archive), "-o", str(output), "-q").exit_code == EXIT_INTEGRITY
    whole = output.read_bytes()
    n = 0
    while True:
        n += 1
        output.unlink(missing_ok=True)
        faults, result = with_fault_at(n, fault, monkeypatch, ["salvage", str(archive), "-o", str(output), "-q"])
        assert temporaries(out_dir) == [] and (not output.exists() or output.read_bytes() == whole), n
        if faults.failed is None:
            assert result.exit_code == EXIT_INTEGRITY, result.stderr
            break
        if result.exit_code == EXIT_INTEGRITY:  # a failed look for what is there (the whole index), which it does without
            continue
        ended_by(fault, result)
        assert fault == "stop" or result.stderr.startswith((f"lza: error: {archive}: ", f"lza: error: {output}: ")), n
    assert n > 30  # the reads of the scan and the decoding, and the writes of the output


@pytest.mark.parametrize("fault", FAULTS)
def test_every_failed_call_reading_or_caching_a_model_is_an_error_naming_it(fault, tiny_path, private_model_cache,
                                                                             tmp_path, monkeypatch):
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
                faults, result = with_fault_at(n, fault, monkeypatch, args, MODEL_MODULES)
            said = result.stderr + "".join(str(w.message) for w in warned)
            assert only_intact_models(registry.configured_dir()), (command, n, faults.failed)
            if result.exit_code == 0:
                assert files_under(str(out / "text" if command == "extract" else source)) == files_under(str(source))
                assert fault == "EIO" or faults.failed is None, n
                if faults.failed is None:
                    break
                continue
            ended_by(fault, result, (EXIT_FAILURE, EXIT_MODEL), said)
            assert os.listdir(out) == [], (command, n, faults.failed)
        runs[command] = n
    assert runs["pack"] > 3 and runs["extract"] > 3


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", ["compile a directory", "compile a file", "info", "list"])
def test_every_failed_call_of_a_model_command_is_an_error_naming_it(command, fault, tiny_path, private_model_cache,
                                                                    tmp_path, monkeypatch):
    """`lza model compile` of a Hugging Face directory or a compiled file, `lza model info` and `lza model list`:
    an error (exit 12 for the model given, 1 for the cache), or done without what could not be read (the default
    mark, a cached model: a warning says so), and the cache holds whole models only."""
    directory = write_gpt2(str(tmp_path / "gpt2"))
    model = {"compile a directory": directory, "compile a file": tiny_path, "info": directory}.get(command)
    args = ["model", "list"] if command == "list" else ["model", command.split()[0], model]
    listed = compiler.file_hash(tiny_path).hex()[:16]  # as the list shows it, and in the cached file's name
    n = 0
    while True:
        n += 1
        cache = registry.configured_dir()
        if command == "list":
            assert run_cli("model", "compile", tiny_path).exit_code == 0
        else:
            shutil.rmtree(cache, ignore_errors=True)  # compiled anew each time
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            faults, result = with_fault_at(n, fault, monkeypatch, args, MODEL_MODULES)
        said = result.stderr + "".join(str(w.message) for w in warned)
        assert only_intact_models(cache), (n, faults.failed)
        if result.exit_code == 0:
            assert fault == "EIO" or faults.failed is None, n
            if faults.failed is None:
                break
            assert "input/output error" in said, (n, faults.failed)  # what was done without is told
            if command == "list":  # listed, or named where it could not be read
                assert listed in result.stdout.decode() or listed in said, (n, faults.failed, said)
            continue
        ended_by(fault, result, (EXIT_FAILURE, EXIT_MODEL), said)
        named = tuple(f"lza: error: {path}: " for path in (model, cache) if path)  # the model given, or the cache
        assert fault == "stop" or result.stderr.startswith(named), (n, result.stderr)
    assert n > 3


@pytest.mark.parametrize("fault", FAULTS)
def test_every_failed_call_of_a_benchmark_is_an_error_naming_it(fault, tmp_path, monkeypatch):
    """`lza bench`: its sample read (a file that cannot be read is left out, with a warning) and its scratch copies
    (the tools run on, each in a process of its own), which go with the command whatever happens."""
    source, scratch = tmp_path / "notes", tmp_path / "scratch"
    source.mkdir()
    scratch.mkdir()
    (source / "a.txt").write_bytes(b"a sample to measure\n" * 40)
    (source / "b.txt").write_bytes(b"and another one\n" * 40)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    n = 0
    while True:
        n += 1
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            faults, result = with_fault_at(n, fault, monkeypatch, ["bench", str(source), "--codec", "zstd"],
                                           (bench, api))
        said = result.stderr + "".join(str(w.message) for w in warned)
        result = dataclasses.replace(result, stderr="".join(  # without its progress lines
            line for line in result.stderr.splitlines(keepends=True) if line.startswith("lza: ")))
        assert os.listdir(scratch) == [], (n, faults.failed)
        if result.exit_code == 0:
            assert fault == "EIO" or faults.failed is None, n
            if faults.failed is None:
                break
            assert "not sampled, cannot be read (input/output error)" in said, (n, faults.failed)
            continue
        ended_by(fault, result, (EXIT_FAILURE, EXIT_USAGE), said)
        assert fault == "stop" or f"lza: error: {scratch}: " in result.stderr, (n, result.stderr)
    assert n > 3
