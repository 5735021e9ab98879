"""CLI behaviour: exit codes, one-line errors, JSON Lines, list/info output, positional output, help."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import warnings
from pathlib import Path

import pytest

import lzarchive
from lzarchive import api
from lzarchive.engine import architectures, compiler, registry
from lzarchive.errors import EXIT_MODEL, EXIT_USAGE

from .conftest import files_under, run_cli, temporaries


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "proj"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.md").write_text("# title\n" * 100)
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    return src


def test_pack_list_info_json(tree, tmp_path):
    out = tmp_path / "p.lza"
    result = run_cli("pack", "--codec", "zstd", str(tree), str(out), "--json")  # output given positionally, ending in .lza
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["schema"] == "lza.cli/1" and summary["type"] == "pack" and summary["entries"] == 4
    records = [json.loads(line) for line in run_cli("list", "--json", str(out)).stdout.splitlines()]
    assert [r["path"] for r in records] == ["proj", "proj/docs", "proj/docs/a.md", "proj/run.sh"]
    assert records[3]["mode"] == 0o755 and records[2]["size"] == 800
    long = run_cli("list", "-l", str(out)).stdout.decode()
    assert "-rwxr-xr-x" in long and "proj/run.sh" in long and long.splitlines()[0].startswith("d")
    # entries named as extract names them: a directory brings its contents, each name must match
    assert run_cli("list", str(out), "./proj/docs/", "proj/run.sh").stdout == b"proj/docs\nproj/docs/a.md\nproj/run.sh\n"
    assert run_cli("list", str(out), ".").stdout.decode().splitlines() == [r["path"] for r in records]
    result = run_cli("list", str(out), "proj/docs", "proj/nothing")
    assert result.exit_code == 1 and result.stderr == "lza: error: proj/nothing: refused: not found in the archive\n"
    assert not result.stdout
    info = json.loads(run_cli("info", "--json", str(out)).stdout)
    assert info["format_version"] == "2.0" and info["entries"] == {"dir": 2, "file": 2}
    assert info["content_bytes"] == 800 + 18 and 0 < info["ratio"]
    assert "codec" in run_cli("info", str(out)).stdout.decode()


def test_usage_errors_exit_2(tree, tmp_path):
    assert run_cli("pack", "--codec", "zstd", str(tree)).exit_code == EXIT_USAGE  # no output named
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "x.lza"), "--codec", "nope").exit_code == EXIT_USAGE
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "x.lza"), "--chunk-size", "big").exit_code == EXIT_USAGE
    assert run_cli("frobnicate").exit_code == EXIT_USAGE
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", "-")
    assert result.exit_code == EXIT_USAGE and "not to standard output" in result.stderr and not os.path.exists("-")
    for codec, option, needs in (("zstd", ["--window", "512"], "lm"), ("zstd", ["--primer", "64"], "lm"),
                                 ("store", ["--span", "64"], "lm"), ("zstd", ["--model", "any.gguf"], "lm"),
                                 ("store", ["--level", "3"], "zstd"), ("lm", ["--level", "3"], "zstd")):
        result = run_cli("pack", "--codec", codec, str(tree), "-o", str(tmp_path / "x.lza"), *option)
        assert result.exit_code == EXIT_USAGE and f"{needs} codec only" in result.stderr, (codec, option)
    for option in (["--sample", "0"], ["--sample", "-3"], ["--per-file", "0"]):
        result = run_cli("bench", "--codec", "zstd", str(tree), *option)
        assert result.exit_code == EXIT_USAGE and "at least 1 byte" in result.stderr and not result.stdout
    result = run_cli("bench", "--codec", "zstd", str(tree), "--window", "0")  # passed on, not dropped as falsy
    assert result.exit_code == 1 and result.stderr.rstrip().endswith("lm codec only, not to zstd")
    assert not (tmp_path / "x.lza").exists()


def test_an_empty_path_is_a_usage_error_before_any_work(tree, tmp_path, monkeypatch):
    """'' names nothing: the OS calls it missing, or the current directory where a directory is looked for (-C ''
    was "exists and is not a directory"). Every command that takes a path says which one was empty."""
    archive = tmp_path / "p.lza"
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(archive), "-q").exit_code == 0
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for command, what in ((["pack", "--codec", "zstd", "", "-o", "n.lza"], "file or directory to pack"),
                          (["pack", "--codec", "zstd", str(tree), "-o", ""], "archive to write"),
                          (["pack", str(tree), "-o", "n.lza", "--model", ""], "model"),
                          (["extract", str(archive), "-C", ""], "directory to extract into"),
                          (["extract", "", "-C", "out"], "archive"), (["list", ""], "archive"), (["info", ""], "archive"),
                          (["extract", str(archive), "proj", "", "-C", "out"], "entry"),  # not the whole archive
                          (["list", str(archive), ""], "entry"),
                          (["cat", str(archive), ""], "file in the archive"),
                          (["verify", ""], "archive"), (["cat", "", "proj/run.sh"], "archive"),
                          (["bench", ""], "file or directory to sample"), (["model", "compile", ""], "model")):
        result = run_cli(*command)
        assert result.exit_code == EXIT_USAGE, (command, result.stderr)
        assert result.stderr.startswith(f"lza: error: an empty path names no {what}") and not result.stdout, command
    assert sorted(os.listdir(tmp_path)) == before


def test_an_unusable_device_is_a_usage_error_before_any_work(tree, tmp_path, monkeypatch):
    """Every command that takes --device refuses one the engine cannot run on, with its reason, before it reads,
    writes or samples anything (with this CPU build of torch, and with a CUDA one whose GPU is missing)."""
    import torch

    archive = tmp_path / "p.lza"
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(archive), "-q").exit_code == 0
    commands = [["pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "n.lza")],
                ["extract", str(archive), "-C", str(tmp_path / "out")], ["verify", "--full", str(archive)],
                ["cat", str(archive), "proj/run.sh"], ["bench", str(tree)]]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for device, reason in (("cuda", "cannot use a CUDA GPU here"), ("cuda:1", "cannot use a CUDA GPU here"),
                           ("mps", "cpu and cuda devices only"), ("meta", "cpu and cuda devices only"),
                           ("gpu", "'gpu' is not a device")):
        for command in commands:
            result = run_cli(*command, "--device", device)
            assert result.exit_code == EXIT_USAGE, (command, device, result.stderr)
            assert result.stderr.startswith("lza: error: --device ") and reason in result.stderr and result.stderr.strip().count("\n") == 0 and not result.stdout
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"), "--device", "cuda:1")
    assert result.exit_code == EXIT_USAGE and "no such GPU (this machine has 1)" in result.stderr
    assert not (tmp_path / "n.lza").exists() and not (tmp_path / "out").exists()
    assert run_cli("extract", str(archive), "-C", str(tmp_path / "out"), "--device", "cpu").exit_code == 0


def test_errors_are_one_line(tree, tmp_path):
    result = run_cli("pack", "--codec", "zstd", str(tmp_path / "missing"), "-o", str(tmp_path / "m.lza"))
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
    assert "missing" in result.stderr and "no such file" in result.stderr.lower()
    (tmp_path / "file").write_text("x")
    result = run_cli("pack", "--codec", "zstd", str(tmp_path / "file") + "/", "-o", str(tmp_path / "m.lza"))
    assert result.exit_code == 1 and result.stderr.rstrip().endswith("file/: not a directory")
    out = tmp_path / "p.lza"
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out), "-q").exit_code == 0
    again = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out))
    assert again.exit_code == 1 and "--force" in again.stderr
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out), "--force", "-q").exit_code == 0
    result = run_cli("extract", str(out), "proj/nothing", "-C", str(tmp_path / "d"))
    assert result.exit_code == 1 and "not found in the archive" in result.stderr
    (tree / "link").symlink_to("run.sh")
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out), "--force", "-q").exit_code == 0
    for path, kind in (("proj/docs", "directory"), ("proj/link", "symlink")):
        result = run_cli("cat", str(out), path)
        assert result.exit_code == 1 and result.stderr == f"lza: error: {path}: refused: is a {kind}, not a file\n"


def test_every_error_message_is_one_line():
    """Each error class's template (its docstring, however wrapped in the source) reads as one line."""
    import inspect
    import string

    from lzarchive import errors

    classes = [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, errors.LzaError)]
    assert len(classes) > 10
    for cls in classes:
        fields = {name: "x" for _, name, _, _ in string.Formatter().parse(cls.__doc__) if name}
        if cls is errors.ChunkCorrupt:  # builds its `affected` from paths
            fields = {"archive": "x", "chunk": 1, "reason": "x", "paths": ["x"]}
        if issubclass(cls, errors.NotAllExtracted):  # builds its parts from the paths
            fields = {"archive": "x", "dest": "x", "extracted": 1, "damaged": ["x"], "refused": ["x"]}
        message = str(cls(**fields))
        assert "\n" not in message and "  " not in message and message == message.strip(), (cls, message)


def test_selective_extract(tree, tmp_path):
    out = tmp_path / "p.lza"
    api.pack([str(tree)], str(out), codec="zstd")
    dest = tmp_path / "d"
    assert run_cli("extract", str(out), "proj/docs", "-C", str(dest), "-q").exit_code == 0
    assert (dest / "proj" / "docs" / "a.md").read_text() == "# title\n" * 100
    assert not (dest / "proj" / "run.sh").exists()
    # names as a shell gives them: ./, //, a trailing /; "." is the whole archive
    for i, (named, expected) in enumerate([("./proj/docs/", ["a.md"]), ("proj//docs/./a.md", ["a.md"]),
                                           ("/proj/run.sh", ["run.sh"]), (".", ["a.md", "run.sh"])]):
        assert run_cli("extract", str(out), named, "-C", str(tmp_path / str(i)), "-q").exit_code == 0
        assert sorted(f.name for f in (tmp_path / str(i)).rglob("*") if f.is_file()) == expected
    assert run_cli("cat", str(out), "./proj//run.sh").stdout == b"#!/bin/sh\necho hi\n"
    assert run_cli("extract", str(out), "proj/../proj", "-C", str(tmp_path / "up")).exit_code == 1


def test_an_archive_read_from_a_pipe_is_refused_at_once(tree, tmp_path):
    """A FIFO or a pipe (`cat a.lza | lza list /dev/stdin`) cannot be read from its end: said so, without waiting for a
    writer (a subprocess, so that a regression times out instead of hanging the suite)."""
    import subprocess
    import sys

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    archive = tmp_path / "p.lza"
    api.pack([str(tree)], str(archive), codec="zstd")
    lza = [sys.executable, "-m", "lzarchive"]
    for command in (["list", str(fifo)], ["extract", str(fifo), "-C", str(tmp_path / "out")]):
        proc = subprocess.run(lza + command, capture_output=True, timeout=60)
        assert proc.returncode == 1 and b"is a pipe" in proc.stderr and proc.stderr.count(b"\n") == 1
    proc = subprocess.run(lza + ["list", "/dev/stdin"], input=archive.read_bytes(), capture_output=True, timeout=60)
    assert proc.returncode == 1 and b"/dev/stdin: is a pipe" in proc.stderr and b"Traceback" not in proc.stderr


def test_unreadable_source_is_named(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    with open(os.path.join(os.fsencode(src), b"bad\xffname"), "wb") as f:
        f.write(b"x")
    result = run_cli("pack", "--codec", "zstd", str(src), "-o", str(tmp_path / "o.lza"))
    assert result.exit_code == 1 and "not valid UTF-8" in result.stderr
    assert not (tmp_path / "o.lza").exists()


def test_help_teaches():
    text = run_cli("--help").stdout.decode()
    for word in ("pack", "extract", "list", "info", "verify", "cat", "Exit codes"):
        assert word in text
    assert "--overwrite" in run_cli("extract", "--help").stdout.decode()


def test_version_names_the_formats_lza_reads_and_writes(tree, tmp_path):
    result = run_cli("--version")
    match = re.fullmatch(r"lza (\S+): reads archive formats ((?:\d+\.0-\d+\.\d+(?: and )?)+); writes (\d+)\.x, the "
                         r"oldest minor version that holds what it stores \(format 1 with pack --format 1\)\n",
                         result.stdout.decode())
    assert result.exit_code == 0 and match, result.stdout
    assert match[1] == lzarchive.__version__
    newest = {int(major): int(minor) for major, minor in re.findall(r"(\d+)\.0-\d+\.(\d+)", match[2])}
    read = [json.loads(run_cli("info", "--json", str(f)).stdout)["format_version"]
            for f in sorted(Path(__file__).parent.parent.glob("fixtures/*.lza"))]
    assert {v.split(".")[0] for v in read} == {str(major) for major in newest}  # every major has a fixture
    assert all(int(v.split(".")[1]) <= newest[int(v.split(".")[0])] for v in read), read
    run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "p.lza"))
    assert json.loads(run_cli("info", "--json", str(tmp_path / "p.lza")).stdout)["format_version"] == f"{match[3]}.0"


# ------------------------------------------------------------------------------------------- pack: faults and misuse

def test_pack_into_a_missing_directory_or_onto_a_directory_fails_at_once(tree, tmp_path):
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "nowhere" / "p.lza"))
    assert result.exit_code == 1 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "taken").mkdir()
    # lm would compress for minutes before the final rename failed: the check comes before any work
    result = run_cli("pack", str(tree), "-o", str(tmp_path / "taken"), "--force", "--model", str(tmp_path / "nothing.gguf"))
    assert result.exit_code == 1 and "is a directory" in result.stderr
    assert os.listdir(tmp_path / "taken") == []


@pytest.mark.parametrize("option", [["--chunk-size", "0"], ["--chunk-size", "-1"], ["--chunk-size", "17M"],
                                    ["--level", "0"], ["--level", "23"], ["--level", "-1"]])
def test_out_of_range_options_are_usage_errors(option, tree, tmp_path):
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "p.lza"), *option)
    assert result.exit_code == EXIT_USAGE and result.stderr.startswith("lza: error:"), result.stderr
    assert not (tmp_path / "p.lza").exists()


@pytest.mark.parametrize("kind", ["garbage.gguf", "garbage.lzm", "directory"])
def test_an_unusable_model_is_named(kind, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("LZA_MODEL_DIR", str(tmp_path / "models"))
    model = tmp_path / kind
    if kind == "directory":
        model.mkdir()
        (model / "README").write_text("not a model")
    else:
        model.write_bytes(b"GGUF" + os.urandom(300) if kind.endswith("gguf") else os.urandom(300))
    result = run_cli("pack", str(tree), "-o", str(tmp_path / "p.lza"), "--model", str(model))
    assert result.exit_code == EXIT_MODEL and str(model) in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "p.lza").exists()


@pytest.mark.parametrize("damage", ["truncated", "one bit in the weights"])
def test_a_damaged_model_in_the_cache_is_removed_and_reported_missing(damage, tree, tmp_path, tiny_path,
                                                                       private_model_cache):
    """A cached model file whose bytes no longer hash to its name (a full disk, a crash, bit rot) is removed with a
    warning by whatever command meets it: readers then ask for the model (exit 12) as if it had never been cached, and
    importing it again heals the cache. Before, `model list` and `extract` failed with a traceback, or with 'does not
    match' and no way out but deleting the file by hand."""
    archive = tmp_path / "p.lza"
    assert run_cli("pack", str(tree), "-o", str(archive), "--codec", "lm", "--model", tiny_path, "-q").exit_code == 0
    model_hash = architectures.read_compiled(tiny_path).model_hash
    cached = registry.find(model_hash)
    intact = Path(cached).read_bytes()

    def damage_it():
        data = bytearray(intact[: len(intact) // 2] if damage == "truncated" else intact)
        data[-10] ^= 1 if damage != "truncated" else 0
        Path(cached).write_bytes(data)

    damage_it()
    with pytest.warns(RuntimeWarning, match="is damaged .* removed"):
        listed = run_cli("model", "list", "--json")
    assert listed.exit_code == 0 and listed.stdout == b"" and not os.path.exists(cached)
    damage_it()
    with pytest.warns(RuntimeWarning, match="is damaged .* removed"):
        result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"))
    assert result.exit_code == EXIT_MODEL and "this archive needs model tiny-0" in result.stderr
    assert "Traceback" not in result.stderr and not os.path.exists(cached)
    assert run_cli("pack", str(tree), "-o", str(tmp_path / "again.lza"), "--codec", "lm", "--model", tiny_path,
                   "-q").exit_code == 0
    assert registry.find(model_hash) == cached and Path(cached).read_bytes() == intact
    assert run_cli("extract", str(archive), "-C", str(tmp_path / "out"), "-q").exit_code == 0


def test_model_list_marks_the_model_pack_uses_by_default(tmp_path, tiny_path, private_model_cache, monkeypatch):
    """Compiled models of earlier lza versions stay in the cache for their archives, beside today's default: the list
    says which one a pack without --model uses (before, several 'SmolLM2-135M-Instruct' rows looked alike)."""
    import json

    from .gpt2_tiny import write_gpt2

    source = write_gpt2(str(tmp_path / "default-source"))
    monkeypatch.setattr(registry, "default_source_path", lambda: source)
    assert run_cli("model", "compile", tiny_path).exit_code == 0  # another model in the cache, never the default
    assert [json.loads(row)["default"] for row in run_cli("model", "list", "--json").stdout.splitlines()] == [False]
    assert run_cli("model", "compile", "--json").exit_code == 0  # the default, compiled
    rows = {row["name"]: row for row in map(json.loads, run_cli("model", "list", "--json").stdout.splitlines())}
    assert {name: row["default"] for name, row in rows.items()} == {"tiny-0": False, registry.DEFAULT_NAME: True}
    listed = run_cli("model", "list").stdout.decode().splitlines()
    assert [row.endswith("  default") for row in listed] == [row["default"] for row in sorted(
        rows.values(), key=lambda row: row["model_hash"])]


def test_a_model_cache_that_is_a_file_is_passed_over_quietly(tmp_path, monkeypatch):
    """LZA_MODEL_DIR naming a file (or a home that is not a directory): nothing can be cached or found there, which
    is said once; looking a model up there is not 'cannot be read (not a directory)' for each file name tried."""
    (tmp_path / "file").write_bytes(b"")
    monkeypatch.setenv("LZA_MODEL_DIR", str(tmp_path / "file"))
    registry._temporary_cache.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        temporary = registry.cache_dir()
        assert registry.find(bytes(32)) is None
    assert not [w for w in caught if "cannot be read" in str(w.message)]
    assert [str(w.message) for w in caught if "cannot be written" in str(w.message)] == [
        f"the model cache {tmp_path / 'file'} cannot be written (it is not a directory): models are compiled into "
        f"{temporary} for this run only (set LZA_MODEL_DIR to a writable directory to keep them)"]


def test_a_model_cache_without_room_is_named_and_left_clean(tree, tmp_path, tiny_path, private_model_cache,
                                                            monkeypatch):
    """A compiled model that cannot be written into the cache (a full disk) fails the command with the cache's path
    and why (was 'not a usable model' for a source that is fine), and leaves no partial file there."""
    import errno

    from .gpt2_tiny import write_gpt2

    source = str(tmp_path / "gpt2")
    write_gpt2(source)

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    write_atomically = compiler.write_atomically
    monkeypatch.setattr(compiler, "write_atomically", full)
    for model in (tiny_path, source):  # imported as it is, or compiled from a source
        result = run_cli("pack", str(tree), "-o", str(tmp_path / "p.lza"), "--codec", "lm", "--model", model)
        assert result.exit_code == 1, result.stderr
        assert f"{registry.cache_dir()}: the model cache cannot take the compiled model: no space left on the device" \
            in result.stderr and result.stderr.count("\n") == 1
        assert os.listdir(registry.cache_dir()) in ([], ["sources"]) and not (tmp_path / "p.lza").exists()
    monkeypatch.setattr(compiler, "write_atomically", write_atomically)
    marker = registry._marker(source, None)  # a damaged marker is a reason to compile again, not a failure
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    Path(marker).write_text("not hex")
    assert run_cli("pack", str(tree), "-o", str(tmp_path / "p.lza"), "--codec", "lm", "--model", source, "-q").exit_code == 0


def test_a_model_file_lza_cannot_parse_is_named_not_a_traceback(tree, tmp_path, tiny_path, private_model_cache,
                                                                 monkeypatch):
    """A file that has the hash an archive names but is no compiled model (crafted to it, as hashes are public)."""
    archive = tmp_path / "p.lza"
    assert run_cli("pack", str(tree), "-o", str(archive), "--codec", "lm", "--model", tiny_path, "-q").exit_code == 0
    garbage = tmp_path / "garbage.lzm"
    garbage.write_bytes(b"\x08" + bytes(300))
    monkeypatch.setattr(registry, "resolve", lambda model_hash, source=None, announce=None: str(garbage))
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"))
    assert result.exit_code == EXIT_MODEL and "is not a compiled model lza can read" in result.stderr
    assert str(garbage) in result.stderr and result.stderr.count("\n") == 1


def test_a_symlink_whose_target_is_not_utf8_is_named(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    os.symlink(b"bad\xfftarget", os.path.join(os.fsencode(src), b"link"))
    result = run_cli("pack", "--codec", "zstd", str(src), "-o", str(tmp_path / "o.lza"))
    assert result.exit_code == 1 and "link" in result.stderr and "not valid UTF-8" in result.stderr
    assert os.listdir(tmp_path) == ["s"]


def test_a_full_disk_is_an_error_naming_the_archive(tree, tmp_path):
    """The kernel refuses the archive's writes past a size limit (RLIMIT_FSIZE: EFBIG, as ENOSPC would)."""
    import resource
    import signal
    import subprocess
    import sys

    big = tree / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    out = tmp_path / "p.lza"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))

    proc = subprocess.run([sys.executable, "-m", "lzarchive", "pack", "--codec", "store", str(tree), "-o", str(out)],
                          capture_output=True, preexec_fn=limit_file_size)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.decode().startswith(f"lza: error: {out}: ") and b"Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == ["proj"]  # no archive, no temporary file
    # and extraction: the file that does not fit is named, and no temporary file stays behind
    api.pack([str(tree)], str(out), codec="store")
    dest = tmp_path / "dest"
    proc = subprocess.run([sys.executable, "-m", "lzarchive", "extract", str(out), "-C", str(dest)], capture_output=True,
                          preexec_fn=limit_file_size)
    assert proc.returncode == 1 and b"big.bin" in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr
    assert temporaries(dest) == []


def test_an_output_that_appears_during_pack_is_not_replaced(tree, tmp_path):
    out = tmp_path / "p.lza"

    class Intruder(api.Progress):
        def advance(self, amount):
            if not out.exists():
                out.write_bytes(b"another pack's archive")

    with pytest.raises(api.OutputError, match="appeared while packing"):
        api.pack([str(tree)], str(out), codec="zstd", progress=Intruder())
    assert out.read_bytes() == b"another pack's archive" and os.listdir(tmp_path) == ["p.lza", "proj"]
    api.pack([str(tree)], str(out), codec="zstd", force=True, progress=Intruder())
    assert api.verify(str(out)).ok


def _not_files(where: Path) -> dict[str, str]:
    """An output name of each kind that --force must not rename a file over, and how each is told apart."""
    (where / "kept.lza").write_bytes(b"the file a link leads to")
    os.mkfifo(where / "fifo")
    bound = socket.socket(socket.AF_UNIX)
    bound.bind(str(where / "sock"))
    bound.close()
    for link, target in (("to-file", "kept.lza"), ("to-fifo", "fifo"), ("dangling", "missing.lza")):
        os.symlink(target, where / link)
    return {"fifo": "is a pipe", "sock": "is a socket", "to-file": "is a symbolic link (to kept.lza)",
            "to-fifo": "is a symbolic link (to fifo)", "dangling": "is a symbolic link (to missing.lza)"}


def _kinds(where: Path) -> dict[str, tuple[int, str | None]]:
    return {name: (os.lstat(where / name).st_mode, os.readlink(where / name) if (where / name).is_symlink() else None)
            for name in os.listdir(where)}


@pytest.mark.parametrize("command", ["pack", "salvage"])
def test_force_replaces_only_a_regular_file_never_a_link_a_pipe_or_a_device(command, tree, tmp_path):
    # -o /dev/stdout --force replaced the link /dev/stdout with a file, and -o /dev/null --force run as root would
    # have replaced the device: a rename takes away whatever has the name
    where = tmp_path / "out"
    where.mkdir()
    reasons = _not_files(where)
    before = _kinds(where)
    archive = tmp_path / "a.lza"
    api.pack([str(tree)], str(archive), codec="zstd")
    for name, reason in reasons.items():
        for force in ((), ("--force",)):
            args = ("pack", "--codec", "zstd", str(tree)) if command == "pack" else ("salvage", str(archive))
            result = run_cli(*args, "-o", str(where / name), *force)
            assert result.exit_code == 1 and f"{where / name}: {reason}" in result.stderr, (name, result.stderr)
    assert _kinds(where) == before and (where / "kept.lza").read_bytes() == b"the file a link leads to"


def test_an_output_that_becomes_a_pipe_during_pack_is_not_replaced(tree, tmp_path):
    out = tmp_path / "p.lza"

    class Intruder(api.Progress):
        def advance(self, amount):
            if not out.exists():
                os.mkfifo(out)

    with pytest.raises(api.OutputError, match="is a pipe"):
        api.pack([str(tree)], str(out), codec="zstd", force=True, progress=Intruder())
    assert stat.S_ISFIFO(os.lstat(out).st_mode) and sorted(os.listdir(tmp_path)) == ["p.lza", "proj"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_archives_honour_the_umask(umask, mode, tree, tmp_path):
    old = os.umask(umask)
    try:
        api.pack([str(tree)], str(tmp_path / "p.lza"), codec="zstd")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "p.lza").st_mode & 0o777 == mode


def test_a_file_that_grows_while_packed_is_stored_as_seen_and_reported(tree, tmp_path, monkeypatch):
    from lzarchive.archive.writer import ArchiveWriter

    growing = tree / "docs" / "a.md"
    add_file = ArchiveWriter.add_file

    def grow_then_add(self, path, stream, **kwargs):
        if path.endswith("a.md"):
            with open(growing, "ab") as f:
                f.write(b"x" * 100_000)
        return add_file(self, path, stream, **kwargs)

    monkeypatch.setattr(ArchiveWriter, "add_file", grow_then_add)
    out = tmp_path / "p.lza"
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out))
    assert result.exit_code == 1, result.stderr
    assert "a.md: file changed as we read it" in result.stderr and "written, but 1 source file changed or vanished" in result.stderr
    entry = next(e for e in api.list_entries(str(out)) if e.path.endswith("a.md"))
    assert entry.size == 800 and b"".join(api.cat(str(out), entry.path)) == b"# title\n" * 100
    record = json.loads(run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out), "--force", "--json").stdout)
    assert record["changed"] == [str(growing)]


SECRET = b"root's secret\n"


@pytest.mark.parametrize("swap", ["file-to-link", "parent-to-link", "file-to-fifo", "dir-while-walked"])
def test_what_replaces_a_walked_file_or_directory_is_never_read(swap, tmp_path, monkeypatch):
    """Whoever can write in a tree root packs can swap a file, or a directory above it, for a link to what they
    cannot read (a FIFO, to hang the pack) between the walk and the read: pack opened the path, following every link,
    and stored the target's bytes. Now each file is reached from its source without following a link and read only
    if it is the file the walk found (device and inode); a directory is listed the same way."""
    tree, outside = tmp_path / "t", tmp_path / "outside"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f.txt").write_bytes(b"user data")
    outside.mkdir()
    (outside / "f.txt").write_bytes(SECRET)

    def replace(path, by_link_to=None):
        (shutil.rmtree if path.is_dir() else os.unlink)(path)
        if by_link_to is None:
            os.mkfifo(path)
        else:
            path.symlink_to(by_link_to)

    swaps = {"file-to-link": lambda: replace(tree / "d" / "f.txt", outside / "f.txt"),
             "parent-to-link": lambda: replace(tree / "d", outside),
             "file-to-fifo": lambda: replace(tree / "d" / "f.txt"),
             "dir-while-walked": lambda: replace(tree / "d", outside)}
    real_walk = api.walk

    def walk_then_swap(*args):
        for item in real_walk(*args):
            yield item
            if swap == "dir-while-walked" and item.archive_path == "t/d":  # after its lstat, before its listing
                swaps[swap]()
        if swap != "dir-while-walked":  # after the walk, before any read
            swaps[swap]()

    monkeypatch.setattr(api, "walk", walk_then_swap)
    out = tmp_path / "p.lza"
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out))
    assert result.exit_code == 1 and "written, but 1 source file changed or vanished" in result.stderr, result.stderr
    gone = tree / "d" if swap == "dir-while-walked" else tree / "d" / "f.txt"
    assert f"{gone}: " in result.stderr and "replaced by a link or another file" in result.stderr
    stored = {e.path: b"".join(api.cat(str(out), e.path)) for e in api.list_entries(str(out)) if e.type is api.EntryType.FILE}
    assert SECRET not in out.read_bytes() and SECRET not in stored.values() and list(stored) == []


@pytest.mark.parametrize("when", ["listed", "walked", "walked-link", "dir-walked"])
def test_a_file_removed_during_pack_is_reported_and_the_rest_packed(when, tmp_path, monkeypatch):
    """A file removed between its directory's listing and its lstat, a symlink removed before its target was read,
    or a directory removed between its lstat and its listing, stopped the pack (an error, nothing written), where a
    file removed after the walk was reported and left out; now all are, and pack exits 1 with the archive (a
    directory as it was found, without its contents)."""
    tree = tmp_path / "t"
    tree.mkdir()
    if when == "walked-link":
        (tree / "gone.txt").symlink_to("kept.txt")
    elif when == "dir-walked":
        (tree / "gone.txt").mkdir()
        (tree / "gone.txt" / "inside").write_text("going")
    else:
        (tree / "gone.txt").write_text("going")
    (tree / "kept.txt").write_text("kept")
    real_walk, real_lstat = api.walk, os.lstat

    def walk_then_remove(*args):
        yield from real_walk(*args)
        (tree / "gone.txt").unlink()

    def lstat_around_removal(path, *, dir_fd=None):  # a file goes before its lstat, a directory before its listing
        if path == "gone.txt" and dir_fd is not None:
            if when == "dir-walked":
                st = real_lstat(path, dir_fd=dir_fd)
                shutil.rmtree(tree / "gone.txt")
                return st
            os.unlink(path, dir_fd=dir_fd)
        return real_lstat(path, dir_fd=dir_fd)

    if when.startswith("walked"):
        monkeypatch.setattr(api, "walk", walk_then_remove)
    else:
        monkeypatch.setattr(os, "lstat", lstat_around_removal)
    out = tmp_path / "p.lza"
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out))
    monkeypatch.undo()
    assert result.exit_code == 1 and "written, but 1 source file changed or vanished" in result.stderr, result.stderr
    assert f"{tree / 'gone.txt'}: " in result.stderr and "removed" in result.stderr
    entries = {e.path: e.type for e in api.list_entries(str(out))}
    assert entries == {"t": api.EntryType.DIR, "t/kept.txt": api.EntryType.FILE,
                       **({"t/gone.txt": api.EntryType.DIR} if when == "dir-walked" else {})}


def test_what_cannot_be_read_is_left_out_and_the_rest_packed(tmp_path, monkeypatch):
    """A file that cannot be opened and a directory that cannot be listed (permission denied: emulated, since root
    reads everything) are left out with a warning each, as tar leaves them out; everything else is packed, the
    directory itself too, and pack exits 1 with the archive written and the paths in --json's `unreadable`."""
    tree = tmp_path / "t"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked" / "inside.txt").write_text("unseen")
    (tree / "secret.txt").write_text("unseen")
    (tree / "kept.txt").write_text("kept")
    real_open = os.open

    def denied(path, flags, mode=0o777, *, dir_fd=None):
        if path in ("locked", "secret.txt") and dir_fd is not None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", denied)
    out = tmp_path / "p.lza"
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out), "--json")
    monkeypatch.undo()
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"lza: warning: {tree / 'locked'}: cannot be read (permission denied); its contents are not stored",
        f"lza: warning: {tree / 'secret.txt'}: cannot be read (permission denied); not stored",
        f"lza: error: {out}: written, but 2 source paths could not be read; each is stored as it was read, or left "
        f"out where it was gone or could not be read (see the warnings above)"]
    assert json.loads(result.stdout)["unreadable"] == [str(tree / "locked"), str(tree / "secret.txt")]
    assert [e.path for e in api.list_entries(str(out))] == ["t", "t/kept.txt", "t/locked"]
    assert run_cli("verify", str(out), "-q").exit_code == 0


def test_what_the_destination_refuses_is_left_out_and_the_rest_extracted(tmp_path, monkeypatch):
    """A file and a directory the destination refuses (permission denied: emulated, since root writes everything) are
    left out with a warning each, as tar leaves them out, and what lies in that directory with them; everything else
    is extracted and extract exits 1, naming them, in --json's `refused` too. A failure of the destination as a whole
    (no space) stops the extraction at once, naming the file."""
    tree = tmp_path / "t"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked" / "inside.txt").write_text("unseen")
    (tree / "secret.txt").write_text("unseen")
    (tree / "kept.txt").write_text("kept")
    archive = tmp_path / "p.lza"
    api.pack([str(tree)], str(archive), codec="zstd")
    real_mkdir, real_open = os.mkdir, os.open

    def mkdir_denied(path, mode=0o777, *, dir_fd=None):
        if path == "locked":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    def open_failing(errno_code):
        def failing(path, flags, mode=0o777, *, dir_fd=None):
            if path.startswith(".secret.txt.") and flags & os.O_CREAT:  # the temporary file the content goes to
                raise OSError(errno_code, os.strerror(errno_code), path)
            return real_open(path, flags, mode, dir_fd=dir_fd)
        return failing

    monkeypatch.setattr(os, "mkdir", mkdir_denied)
    monkeypatch.setattr(os, "open", open_failing(errno.EACCES))
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"), "--json")
    monkeypatch.undo()
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "lza: warning: t/locked: not extracted: permission denied",
        "lza: warning: t/locked/inside.txt: not extracted: permission denied",
        "lza: warning: t/secret.txt: not extracted: permission denied",
        f"lza: error: {archive}: 3 entries not extracted as archived (refused by the destination: t/locked, t/locked/inside.txt, "
        f"t/secret.txt); the other 2 were extracted to {tmp_path / 'out'} (see the warnings above)"]
    record = json.loads(result.stdout)
    assert (record["entries"], record["damaged"], record["refused"]) == (2, [], ["t/locked", "t/locked/inside.txt", "t/secret.txt"])
    assert files_under(str(tmp_path / "out")) == {"t/kept.txt": b"kept"} and os.listdir(tmp_path / "out" / "t") == ["kept.txt"]

    monkeypatch.setattr(os, "open", open_failing(errno.ENOSPC))
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "full"))
    monkeypatch.undo()
    assert result.exit_code == 1
    assert result.stderr == f"lza: error: {tmp_path / 'full' / 't' / 'secret.txt'}: no space left on the device\n"
    assert "secret.txt" not in os.listdir(tmp_path / "full" / "t")


# ------------------------------------------------------------------------------------------- terminal safety

HOSTILE_NAMES = ["forged\nproj/docs/a.md", "\x1b[31mred\x1b[0m", "bidi\u202eevil", "back\\slash", "[bold]x[/bold]"]


def test_names_are_escaped_on_human_output_and_exact_in_json(tmp_path):
    from .adversarial.craft import content_entry, craft, link_entry

    data = bytes(range(len(HOSTILE_NAMES)))
    entries = [content_entry(name, (0, i, 1), data[i : i + 1]) for i, name in enumerate(HOSTILE_NAMES)]
    entries.append(link_entry("link", "\x1b]0;title\x07"))
    archive = tmp_path / "names.lza"
    archive.write_bytes(craft(entries, [data]))
    for options in ([], ["-l"]):
        result = run_cli("list", *options, str(archive))
        text = result.stdout.decode()
        assert result.exit_code == 0 and len(text.splitlines()) == len(entries)  # a newline in a name forges no line
        assert "\x1b" not in text and "\u202e" not in text
        assert '"forged\\nproj/docs/a.md"' in text and '"\\x1b[31mred\\x1b[0m"' in text and '"back\\\\slash"' in text
        assert "[bold]x[/bold]" in text
    assert '-> "\\x1b]0;title\\x07"' in run_cli("list", "-l", str(archive)).stdout.decode()
    records = [json.loads(line) for line in run_cli("list", "--json", str(archive)).stdout.splitlines()]
    assert [r["path"] for r in records] == HOSTILE_NAMES + ["link"]
    # errors name entries escaped too: here every entry exists already
    dest = tmp_path / "dest"
    assert run_cli("extract", str(archive), "-C", str(dest)).exit_code == 0
    result = run_cli("extract", str(archive), "-C", str(dest))
    assert result.exit_code == 1 and "\x1b" not in result.stderr and result.stderr.count("\n") == 1


def test_a_name_that_is_not_utf8_is_refused_naming_its_bytes(tmp_path):
    """Archive paths are UTF-8 (SPEC 5): a file name that is not stops the pack with an error showing the name's
    bytes as the shell writes them (b'\\xff'), not Python's surrogate (\\udcff); --exclude leaves it out."""
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "kept.txt").write_text("kept")
    with open(os.path.join(os.fsencode(tree), b"bad\xff.txt"), "wb") as f:
        f.write(b"data")
    out = tmp_path / "p.lza"
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out))
    assert result.exit_code == 1 and not out.exists()
    assert result.stderr == f"lza: error: {tree}/bad\\xff.txt: cannot be stored: its name is not valid UTF-8, which " \
                            f"every path in an archive is (SPEC 5): rename it, or leave it out with --exclude\n"
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out), "--exclude", os.fsdecode(b"bad\xff.txt"))
    assert result.exit_code == 0 and [e.path for e in api.list_entries(str(out))] == ["t", "t/kept.txt"]


def test_rich_markup_in_paths_is_printed_as_text(tmp_path):
    src = tmp_path / "a["
    src.mkdir()
    (src / "f.txt").write_text("text")
    os.mkfifo(src / "]b")  # skipped with a warning naming "a[/]b", which rich would read as a closing tag
    out = tmp_path / "[red]out.lza"
    result = run_cli("pack", "--codec", "zstd", str(src), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert f"{src}/]b: skipped" in result.stderr and str(out) in result.stderr


def test_commands_that_need_no_model_do_not_load_torch_or_numba(tmp_path):
    """`lza list` must start fast (under 0.3 s on this machine's kind): torch and numba take seconds to import."""
    import subprocess
    import sys

    src = tmp_path / "s"
    src.mkdir()
    (src / "f.txt").write_text("hello")
    archive = str(tmp_path / "a.lza")
    api.pack([str(src)], archive, codec="zstd")
    probe = ("import sys; from lzarchive.cli.app import app; app(sys.argv[1:], standalone_mode=False); "
             "sys.stderr.write(' '.join(m for m in ('torch', 'numba', 'numpy') if m in sys.modules))")
    for command in (["--help"], ["list", "-l", archive], ["info", archive], ["verify", "--quick", archive],
                    ["verify", archive], ["cat", archive, "s/f.txt"], ["extract", archive, "-C", str(tmp_path / "x")],
                    ["pack", "--codec", "zstd", str(src), "-o", str(tmp_path / "b.lza")]):
        proc = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.decode().rsplit("\n", 1)[-1] == "", (command, proc.stderr[-300:])


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_a_stdout_that_cannot_be_written_is_one_error_line(stdout, tree, tmp_path):
    """`lza list a.lza > /dev/full` (a full disk) or with stdout closed: one line naming standard output, exit 1; the
    output still buffered is not a second error at exit. Commands that write nothing there do not mind."""
    import shlex
    import subprocess
    import sys

    archive = tmp_path / "p.lza"
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(archive), "-q").exit_code == 0
    redirect = "> /dev/full" if stdout == "full" else ">&-"
    reason = "no space left on device" if stdout == "full" else "it is closed"

    def lza(*args: str) -> subprocess.CompletedProcess:
        command = shlex.join([sys.executable, "-m", "lzarchive", *args]) + " " + redirect
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True)

    for args in (["list", str(archive)], ["list", "--json", str(archive)], ["info", str(archive)],
                 ["cat", str(archive), "proj/run.sh"], ["--help"], ["model", "--help"]):
        result = lza(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr == f"lza: error: standard output cannot be written: {reason}\n", (args, result.stderr)
    assert lza("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "q.lza"), "-q").returncode == 0
    assert (tmp_path / "q.lza").exists()


def test_a_device_error_names_the_file_it_reads(tmp_path):
    """An I/O error (a failing disk, a network share gone; here /proc/self/mem, whose first page is never mapped)
    names the file and the error, exit 1: reading an archive was a traceback. Nothing is written."""
    for command in (["list", "/proc/self/mem"], ["verify", "/proc/self/mem"],
                    ["extract", "/proc/self/mem", "-C", str(tmp_path / "out")]):
        result = run_cli(*command)
        assert result.exit_code == 1, (command, result.stderr)
        assert result.stderr == "lza: error: /proc/self/mem: cannot be read: input/output error\n", command
    result = run_cli("pack", "--codec", "zstd", "/proc/self/mem", "-o", str(tmp_path / "m.lza"))
    assert result.exit_code == 1 and result.stderr == "lza: error: /proc/self/mem: input/output error\n"
    assert os.listdir(tmp_path) == []


def test_names_a_stdout_encoding_lacks_come_out_escaped(tmp_path):
    """Under an ASCII or Latin-1 locale (here PYTHONIOENCODING), `lza list` of a name with é or ✓ ended in a
    traceback (UnicodeEncodeError): the listing escapes what the encoding lacks, and --json writes \\u escapes, the
    same JSON strings."""
    import subprocess
    import sys

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "héllo ✓").write_text("x")
    archive = tmp_path / "t.lza"
    assert run_cli("pack", "--codec", "zstd", str(tmp_path / "t"), "-o", str(archive), "-q").exit_code == 0

    def lza(*args: str, encoding: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lzarchive", *args], capture_output=True,
                              env={**os.environ, "PYTHONIOENCODING": encoding})

    listed = lza("list", str(archive), encoding="ascii")
    assert listed.returncode == 0 and listed.stdout == b"t\nt/h\\xe9llo \\u2713\n", listed.stderr
    assert lza("list", str(archive), encoding="latin-1").stdout == "t\nt/héllo \\u2713\n".encode("latin-1")
    records = lza("list", "--json", str(archive), encoding="ascii")
    assert records.returncode == 0 and records.stdout.isascii()
    assert [json.loads(line)["path"] for line in records.stdout.splitlines()] == ["t", "t/héllo ✓"]


def test_summaries_count_in_words(tree, tmp_path):
    """'packed 1 entry ... in 1 chunk', 'entries 2 directories, 2 files': they said '1 entries', '1 chunks', '2 dir'."""
    out = tmp_path / "p.lza"
    packed = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out))
    assert "packed 4 entries, " in packed.stderr and " in 1 chunk, " in packed.stderr
    assert "entries      2 directories, 2 files\n" in run_cli("info", str(out)).stdout.decode()
    single = run_cli("pack", "--codec", "zstd", str(tree / "run.sh"), "-o", str(tmp_path / "s.lza"))
    assert single.stderr.startswith("packed 1 entry, ")
    assert run_cli("verify", str(tmp_path / "s.lza")).stderr.startswith("ok (full): 1 chunk, 1 entry: ")
    assert run_cli("extract", str(tmp_path / "s.lza"), "-C", str(tmp_path / "o")).stderr.startswith("extracted 1 entry to ")
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "e.lza"), "-x", "proj").exit_code == 0
    assert "entries      none\n" in run_cli("info", str(tmp_path / "e.lza")).stdout.decode()


@pytest.mark.parametrize("setting", [None, "OMP_WAIT_POLICY=ACTIVE", "GOMP_SPINCOUNT=5", "KMP_BLOCKTIME=0"])
def test_the_cli_shortens_openmp_waits_unless_they_are_set(setting):
    """The CLI sets GOMP_SPINCOUNT before torch or numba loads (two lza processes at once spun each other to a
    standstill at libgomp's default), and leaves it alone where the user set any of OpenMP's wait settings."""
    import subprocess
    import sys

    from lzarchive.cli import OPENMP_WAITS

    env = {name: value for name, value in os.environ.items() if name not in OPENMP_WAITS}
    if setting:
        name, value = setting.split("=")
        env[name] = value
    probe = ("import os, sys; import lzarchive.cli.app; "
             "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules, 'numba' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    expected = {None: "1000", "GOMP_SPINCOUNT=5": "5"}.get(setting, "None")
    assert proc.stdout.split() == [expected, "False", "False"]
