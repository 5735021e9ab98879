"""Shared test helpers: run the CLI in-process, build source trees, compare trees byte for byte and in metadata."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from lzarchive.cli.app import app


@dataclass
class CliResult:
    exit_code: int
    stdout: bytes
    stderr: str


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


def files_under(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                with open(full, "rb") as f:
                    out[os.path.relpath(full, root)] = f.read()
    return out
