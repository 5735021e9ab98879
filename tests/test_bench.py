"""The benchmark helpers and `lza bench`: every tool's output is decompressed and compared, a tool that loses data
fails the benchmark, and `lza bench` reports lza next to xz and zstd on the same sampled bytes."""

from __future__ import annotations

import json
import sys

import pytest

from lzarchive import bench
from lzarchive.errors import BenchmarkFailed

from .conftest import run_cli

TEXT = b"The quick brown fox jumps over the lazy dog.\n" * 200


@pytest.mark.parametrize("tool", bench.CLASSICAL, ids=lambda t: t.name)
def test_classical_round_trip_on_the_same_bytes(tool, tmp_path):
    m = bench.measure_classical(tool, TEXT, str(tmp_path))
    assert m is not None, f"{tool.name}: neither the command nor its Python library is installed (the test extra has both)"
    assert m.raw_bytes == len(TEXT) and 0 < m.stored_bytes < len(TEXT) // 10


def test_ppmd_the_strongest_peer_the_test_extra_installs_round_trips(tmp_path):
    ppmd = next(tool for tool in bench.PEERS if tool.name == "PPMd -o16")
    m = bench.measure_classical(ppmd, TEXT, str(tmp_path))
    assert m is not None and m.how == "python" and 0 < m.stored_bytes < len(TEXT) // 10


def test_a_command_that_names_its_files_is_measured_through_them(tmp_path):
    """The zpaq form: the commands take {raw}, {packed} and {back} paths, not stdin and stdout; a file left from the
    last run is removed first (zpaq would add to it)."""
    copy = bench.Classical("copy", ("cp", "{raw}", "{packed}"), ("cp", "{packed}", "{back}"), None, None,
                           names_files=True)
    (tmp_path / "classical.packed").write_bytes(b"left over")
    m = bench.measure_classical(copy, TEXT, str(tmp_path))
    assert m.how == "command" and m.stored_bytes == len(TEXT) and m.peak_rss > 0
    lossy = bench.Classical("lossy", ("cp", "{raw}", "{packed}"), ("truncate", "-s", "0", "{back}"), None, None,
                            names_files=True)
    with pytest.raises(BenchmarkFailed, match="differ"):
        bench.measure_classical(lossy, TEXT, str(tmp_path))


def test_per_file_sums_every_file_compressed_alone(tmp_path):
    xz = bench.CLASSICAL[0]
    files = {"a": TEXT, "b": TEXT[:100], "c": b""}
    per_file = bench.measure_per_file(xz, files, str(tmp_path))
    alone = [bench.measure_classical(xz, data, str(tmp_path)).stored_bytes for data in files.values()]
    assert per_file.tool == "xz -9e, per file" and per_file.raw_bytes == len(TEXT) + 100
    assert per_file.stored_bytes == sum(alone) > bench.measure_classical(xz, TEXT + TEXT[:100], str(tmp_path)).stored_bytes
    missing = bench.Classical("missing", ("no-such-command-lza",), ("no-such-command-lza",), None, None)
    assert bench.measure_per_file(missing, files, str(tmp_path)) is None


def test_a_tool_that_loses_data_fails_the_benchmark(tmp_path):
    lossy = bench.Classical("lossy", ("no-such-command-lza",), ("no-such-command-lza",), lambda d: d[:-1], lambda d: d)
    with pytest.raises(BenchmarkFailed, match="differ"):
        bench.measure_classical(lossy, TEXT, str(tmp_path))


def test_a_decompressor_that_raises_fails_the_benchmark_naming_the_tool(tmp_path):
    """pyppmd 1.3.1 at order 16 refuses some of its own output ("Corrupted input data"): a failure, not a crash."""
    def refuse(packed: bytes) -> bytes:
        raise ValueError("Corrupted input data.")

    refusing = bench.Classical("refusing", (), (), lambda d: d, refuse)
    with pytest.raises(BenchmarkFailed, match="refusing: its decompressor failed: ValueError: Corrupted input data"):
        bench.measure_classical(refusing, TEXT, str(tmp_path))


def test_sample_files_takes_a_prefix_of_each_file_within_the_budget(tmp_path):
    for name, size in (("a.txt", 100), ("b.txt", 50), ("c.txt", 80)):
        (tmp_path / name).write_bytes(bytes([ord(name[0])]) * size)
    files = bench.sample_files([str(tmp_path)], budget=150, per_file=60)
    assert list(files.values()) == [b"a" * 60, b"b" * 50, b"c" * 40]


def test_sample_files_reads_rotated_logs_decompressed_when_asked(tmp_path):
    import gzip
    import lzma

    (tmp_path / "a.log").write_bytes(b"plain\n")
    (tmp_path / "b.log.1.gz").write_bytes(gzip.compress(b"gzipped\n"))
    (tmp_path / "c.log.xz").write_bytes(lzma.compress(b"xz'd\n"))
    (tmp_path / "d.log.2.gz").write_bytes(b"not gzip at all")
    with pytest.warns(RuntimeWarning, match=r"d\.log\.2\.gz: not sampled, cannot be read \(not a gzipped file"):
        files = bench.sample_files([str(tmp_path)], budget=1000, per_file=1000, decompress=True)
    assert list(files.values()) == [b"plain\n", b"gzipped\n", b"xz'd\n"]
    assert bench.sample_files([str(tmp_path)], budget=1000, per_file=1000)["0002-c.log.xz"] == lzma.compress(b"xz'd\n")


def test_lza_bench_reports_lza_xz_and_zstd(tmp_path):
    (tmp_path / "notes.txt").write_bytes(TEXT)
    result = run_cli("bench", str(tmp_path), "--codec", "zstd", "--json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["tool"] for r in records] == ["lza --codec zstd", "xz -9e", "zstd -19"]
    assert all(r["raw_bytes"] == len(TEXT) for r in records)
    assert records[0]["stored_bytes"] < len(TEXT)
    # pack options reach lza pack: 9 KiB in 1 KiB chunks, each coded alone, store more than one chunk does
    small = run_cli("bench", str(tmp_path), "--codec", "zstd", "--chunk-size", "1K", "--json")
    first = json.loads(small.stdout.decode().splitlines()[0])
    assert first["tool"] == "lza --codec zstd --chunk-size 1K" and first["stored_bytes"] > records[0]["stored_bytes"]
    table = run_cli("bench", str(tmp_path), "--codec", "zstd")  # no model loaded, none said to be
    assert table.exit_code == 0 and "xz -9e" in table.stdout.decode() and "model" not in table.stderr


def test_lza_bench_refuses_a_missing_path(tmp_path):
    result = run_cli("bench", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_peak_rss_is_the_commands_own_not_this_process():
    ballast = bytearray(400 << 20)  # this process is large; a plain fork would report at least this much
    ballast[::4096] = b"x" * len(ballast[::4096])
    _, small = bench.run_measured(["true"])
    _, large = bench.run_measured([sys.executable, "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"])
    assert small < 64 << 20
    assert 200 << 20 <= large < 400 << 20


def test_a_failing_command_fails_the_benchmark():
    with pytest.raises(BenchmarkFailed, match="exit 3"):
        bench.run_measured(["sh", "-c", "echo broken >&2; exit 3"])
