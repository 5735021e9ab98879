#!/usr/bin/env bash
# The main job end to end: pack a sample tree, inspect it, verify it, extract it and compare with the original.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-out
rm -rf "$out" && mkdir -p "$out"
lza pack lzarchive SPEC.md README.md -x __pycache__ -o "$out/sample.lza"
lza info "$out/sample.lza"
lza verify "$out/sample.lza"
lza extract "$out/sample.lza" -C "$out/restored"
diff -r --exclude=__pycache__ lzarchive "$out/restored/lzarchive"
cmp SPEC.md "$out/restored/SPEC.md" && cmp README.md "$out/restored/README.md"
echo "demo ok: extracted tree is identical to the original"
