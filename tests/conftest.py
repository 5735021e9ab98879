"""Shared test helpers: run the CLI in-process, build source trees, compare trees byte for byte and in metadata."""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass

import numba
import pytest
import torch
import typer.testing
from hypothesis import strategies as st
from typer.testing import CliRunner

from lzarchive import api
from lzarchive.cli.app import app
from lzarchive.codecs import CodecError
from lzarchive.codecs.lm import LmCodec
from lzarchive.engine import compiler, registry
from lzarchive.files import TEMP_SUFFIX
from lzarchive.format import constants as C
from lzarchive.format.records import Header

from .adversarial.craft import craft2, file_row
from .tiny import greedy_text, tiny_model, unsure_model


@dataclass
class CliResult:
    exit_code: int
    stdout: bytes
    stderr: str


# typer's runner builds the click command from the app's signatures on every invoke, most of a quick command's time
# (the integrity sweeps run thousands); the app never changes during the tests, so it is built once
typer.testing._get_command = functools.cache(typer.testing._get_command)


def pytest_configure(config):
    """A worker of a parallel run (`make test`: pytest-xdist, a worker per core) computes in one thread, and torch in
    the processes it starts too: the engine's loops wait for their threads by spinning, and two workers' threads on
    two cores slowed every test down about twice. Results are the same at any thread count (test_engine checks 1
    against 2). Not NUMBA_NUM_THREADS: numba reads it again at every compilation and refuses a value other than the
    one its threads were started with."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        numba.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


def run_cli(*args: str) -> CliResult:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout_bytes, result.stderr)


@pytest.fixture
def cli():
    return run_cli


def snapshot(root: str) -> dict[str, tuple]:
    """Everything lza promises to keep, per relative path: type, content or target, permission bits, mtime_ns."""
    result: dict[str, tuple] = {}
    inode_groups: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("symlink", os.readlink(full), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                with open(full, "rb") as f:
                    result[rel] = ("file", f.read(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
                inode_groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
    links = sorted(sorted(g) for g in inode_groups.values() if len(g) > 1)
    result["<hardlink groups>"] = tuple(map(tuple, links))
    return result


def temporaries(root) -> list[str]:
    """Temporary files (an archive or an extracted file before its name) left anywhere under root."""
    return [name for _, _, names in os.walk(root) for name in names if name.endswith(TEMP_SUFFIX)]


def files_under(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                with open(full, "rb") as f:
                    out[os.path.relpath(full, root)] = f.read()
    return out


def pack_each_way(source, tmp_path, model_path: str, variants: dict[str, list[str]],
                  *common: str) -> dict[str, tuple[int, int, int]]:
    """`lza pack source -o tmp_path/NAME.lza --codec lm --model model_path -q` with the common arguments and each
    variant's own: for each NAME, (header minor, incompat flags, archive bytes), once `lza extract` has given every file
    of source back."""
    written = {}
    for name, args in variants.items():
        archive = str(tmp_path / f"{name}.lza")
        result = run_cli("pack", str(source), "-o", archive, "--codec", "lm", "--model", model_path, "-q", *common,
                         *args)
        assert result.exit_code == 0, result.stderr
        with api.open_archive(archive) as reader:
            written[name] = (reader.header.minor, reader.header.incompat_flags, os.path.getsize(archive))
        out = tmp_path / f"out-{name}"
        assert run_cli("extract", archive, "-C", str(out), "-q").exit_code == 0
        assert files_under(str(out / source.name)) == files_under(str(source))
    return written


@pytest.fixture
def private_model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LZA_MODEL_DIR", str(tmp_path / "models"))


def compiled_file(model: compiler.CompiledModel, path) -> str:
    """A model as a compiled file, as a user would pass it to --model."""
    compiler.write_compiled(str(path), model.config, model.tensors, numerics=model.numerics, name=model.name,
                            source=model.source, tokenizer_json=None)
    return str(path)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    return compiled_file(tiny_model(), tmp_path_factory.mktemp("model") / "tiny.lzm")


@pytest.fixture(scope="session")
def unsure_path(tmp_path_factory):
    return compiled_file(unsure_model(), tmp_path_factory.mktemp("model") / "unsure.lzm")


def round_trips_every_way(make_codec, chunks: list[bytes], data) -> list[bytes]:
    """Payloads of `make_codec()` decode to the chunks together, each alone, in lockstep groups of any size (drawn)
    and, with limits (drawn), to prefixes that reach them: an adaptive model's state belongs to its chunk. Returns
    the payloads."""
    payloads = make_codec().encode_batch(chunks)
    sizes, decoder = [len(c) for c in chunks], make_codec()
    assert decoder.decode_batch(payloads, sizes) == chunks
    for payload, chunk in zip(payloads, chunks):
        assert decoder.decode_batch([payload], [len(chunk)]) == [chunk]
    decoder.batch_chunks = data.draw(st.integers(1, 3), label="lockstep")
    assert decoder.decode_batch(payloads, sizes) == chunks
    limits = [data.draw(st.integers(1, size), label=f"limit {i}") for i, size in enumerate(sizes)]
    for chunk, limit, prefix in zip(chunks, limits, decoder.decode_batch(payloads, sizes, limits)):
        assert limit <= len(prefix) and chunk.startswith(prefix)
    return payloads


def reader_of(payloads: list[bytes]):
    """A read_chunk over these lm payloads, as an archive's: chunk i is payloads[i]; others do not exist."""
    def read_chunk(chunk: int) -> tuple[int, bytes]:
        if not 0 <= chunk < len(payloads):
            raise CodecError(f"there is no chunk {chunk}")
        return C.CodecId.LM, payloads[chunk]

    return read_chunk


def lm_archive(codec: LmCodec, files: dict[str, bytes], payloads: list[bytes]) -> bytes:
    """One lm chunk per file, with the given payloads (sealed with valid stored-bytes checksums)."""
    return craft2(*entries_and_chunks(files, payloads), header=Header(models=(codec.model_ref,)).to_wire())


def entries_and_chunks(files: dict[str, bytes], payloads: list[bytes]) -> tuple[list, list]:
    entries = [file_row(name, data) for name, data in files.items()]
    return entries, [(C.CodecId.LM, data, payload) for data, payload in zip(files.values(), payloads)]


@pytest.fixture
def lm_files(tiny_path, private_model_cache):
    registry.import_compiled(tiny_path)  # the archives below name the tiny model: readers find it in the cache
    codec = LmCodec(tiny_model(), window=32, overlap=8)
    files = {name: greedy_text(tiny_model(), 90, seed_token=2 + ord(seed)) for name, seed in (("a.txt", "t"), ("b.txt", "q"))}
    payloads = codec.encode_batch(list(files.values()))
    assert None not in payloads
    return codec, files, payloads


