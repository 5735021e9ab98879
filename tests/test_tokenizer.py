"""The lm codec's tokenization front end: the split into valid UTF-8 runs is the maximal one, in linear time."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive.engine.tokenizer import Encoder, TokenTable, _utf8_runs

PIECES = st.sampled_from([b"abc", "é€😀".encode(), b"\xed\xa0\x80", b"\xf0\x9f", b"\xc3", b"\x80", b"\xff", b"\x04"])


def reference_runs(data: bytes) -> list:
    """Maximal valid runs by trial decoding (quadratic, obviously right), invalid bytes merged between them."""
    out: list = []
    start = 0
    while start < len(data):
        try:
            out.append(data[start:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            if exc.start:
                out.append(data[start : start + exc.start].decode("utf-8"))
            bad = data[start + exc.start : start + exc.end]
            out[-1:] = [out[-1] + bad] if out and isinstance(out[-1], bytes) else out[-1:] + [bad]
            start += exc.end
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES | st.binary(max_size=3), max_size=20).map(b"".join))
def test_runs_are_the_maximal_valid_ones(data):
    assert list(_utf8_runs(data)) == reference_runs(data)


def test_splitting_is_linear():
    """Alternating valid and invalid bytes: 0.36 s at 64 KiB and 3 s at 256 KiB when each run was found by decoding
    the whole rest again; 4 MiB would take minutes. A bound 20x above the linear time, not a benchmark."""
    data = b"A\xff" * (2 << 20)
    started = time.process_time()
    runs = sum(1 for _ in _utf8_runs(data))
    assert runs == 4 << 20 and time.process_time() - started < 20


def test_characters_without_a_token_are_escaped():
    """A vocabulary without 0x04 and 0xF1 (a 4-byte UTF-8 lead byte): those bytes are escaped, the rest tokenized."""
    pieces = [b"<esc>"] + [bytes([b]) for b in range(256) if b not in (0x04, 0xF1)]
    table = TokenTable.from_list(pieces)
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {p.decode("latin-1"): i for i, p in enumerate(pieces)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<esc>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    encoder = Encoder(table, json.dumps(json.loads(tokenizer.to_str())), escape_token=0)
    data = "ab\x04c\U00050000d".encode()
    assert list(encoder._pieces(data)) == ["ab", b"\x04", "c", "\U00050000".encode(), "d"]
    tokens, escaped = encoder.encode(data)
    assert escaped == {2: 0x04, 4: 0xF1} and encoder.decode(tokens, escaped) == data
