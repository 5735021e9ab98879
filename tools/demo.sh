#!/usr/bin/env bash
# The main job end to end: pack a sample tree, inspect it, verify it, extract it and compare with the original.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-out
rm -rf "$out" && mkdir -p "$out"
# a small sample: the language model runs on this CPU (the first run also compiles the model, ~10 s)
mkdir -p "$out/sample"
cp README.md lzarchive/errors.py "$out/sample/"
lza pack "$out/sample" -o "$out/sample.lza"
lza info "$out/sample.lza"
lza verify --quick "$out/sample.lza"
lza extract "$out/sample.lza" -C "$out/restored"
diff -r "$out/sample" "$out/restored/sample"
echo "demo ok: extracted tree is identical to the original"
