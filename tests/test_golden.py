"""Golden fixtures: archives checked into fixtures/ pin the format. They must keep reading back to the manifest
(whose hashes are sha256, computed independently of lza), and the store archive must regenerate byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest

from lzarchive import api

ROOT = os.path.join(os.path.dirname(__file__), "..")
FIXTURES = os.path.join(ROOT, "fixtures")
MANIFEST = json.loads(Path(FIXTURES, "manifest.json").read_text(encoding="utf-8"))


def load_tool():
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(ROOT, "tools", "make_fixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(MANIFEST["archives"]))
def test_fixture_reads_back_to_the_manifest(name, tmp_path):
    path = os.path.join(FIXTURES, name)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == MANIFEST["archives"][name]
    assert api.verify(path, full=True).ok
    api.extract(path, str(tmp_path))
    for row in MANIFEST["entries"]:
        full = tmp_path / row["path"]
        st = os.lstat(full)
        assert st.st_mtime_ns == row["mtime_ns"], row["path"]
        if "sha256" in row:
            assert hashlib.sha256(full.read_bytes()).hexdigest() == row["sha256"], row["path"]
            assert st.st_size == row["size"]
        if "mode" in row:
            assert st.st_mode & 0o7777 == row["mode"], row["path"]
        if "target" in row:
            assert os.readlink(full) == row["target"]
    assert os.path.samefile(tmp_path / "tree/bin/run.sh", tmp_path / "tree/bin/hardlink.sh")
    assert len(api.list_entries(path)) == len(MANIFEST["entries"])


@pytest.mark.parametrize("name", ["v1-store.lza", "v2-store.lza", pytest.param("v1-lm.lza", marks=pytest.mark.realmodel),
                                  pytest.param("v2-lm.lza", marks=pytest.mark.realmodel)])
def test_fixture_regenerates_byte_for_byte(name, tmp_path):
    """Neither depends on the zstd library's output; the lm one pins the exact engine and the default model."""
    fresh = tmp_path / name
    load_tool().build(name, str(fresh))
    assert fresh.read_bytes() == Path(FIXTURES, name).read_bytes(), (
        "the writer's or the engine's bytes changed: that is a format change (bump the version in SPEC.md)"
    )


def test_manifest_matches_the_tool():
    assert load_tool().manifest()["entries"] == MANIFEST["entries"]
