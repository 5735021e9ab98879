"""CLI behaviour: exit codes, one-line errors, JSON Lines, list/info output, positional output, help."""

from __future__ import annotations

import json
import os

import pytest

from lzarchive import api
from lzarchive.errors import EXIT_USAGE

from .conftest import run_cli


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
    info = json.loads(run_cli("info", "--json", str(out)).stdout)
    assert info["format_version"] == "1.0" and info["entries"] == {"dir": 2, "file": 2}
    assert info["content_bytes"] == 800 + 18 and 0 < info["ratio"]
    assert "codec" in run_cli("info", str(out)).stdout.decode()


def test_usage_errors_exit_2(tree, tmp_path):
    assert run_cli("pack", "--codec", "zstd", str(tree)).exit_code == EXIT_USAGE  # no output named
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "x.lza"), "--codec", "nope").exit_code == EXIT_USAGE
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "x.lza"), "--chunk-size", "big").exit_code == EXIT_USAGE
    assert run_cli("frobnicate").exit_code == EXIT_USAGE
    result = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(tmp_path / "x.lza"), "--window", "512")
    assert result.exit_code == EXIT_USAGE and "lm codec only" in result.stderr
    assert not (tmp_path / "x.lza").exists()


def test_errors_are_one_line(tree, tmp_path):
    result = run_cli("pack", "--codec", "zstd", str(tmp_path / "missing"), "-o", str(tmp_path / "m.lza"))
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
    assert "missing" in result.stderr and "no such file" in result.stderr.lower()
    out = tmp_path / "p.lza"
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out), "-q").exit_code == 0
    again = run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out))
    assert again.exit_code == 1 and "--force" in again.stderr
    assert run_cli("pack", "--codec", "zstd", str(tree), "-o", str(out), "--force", "-q").exit_code == 0
    result = run_cli("extract", str(out), "proj/nothing", "-C", str(tmp_path / "d"))
    assert result.exit_code == 1 and "not found in the archive" in result.stderr


def test_selective_extract(tree, tmp_path):
    out = tmp_path / "p.lza"
    api.pack([str(tree)], str(out), codec="zstd")
    dest = tmp_path / "d"
    assert run_cli("extract", str(out), "proj/docs", "-C", str(dest), "-q").exit_code == 0
    assert (dest / "proj" / "docs" / "a.md").read_text() == "# title\n" * 100
    assert not (dest / "proj" / "run.sh").exists()


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
