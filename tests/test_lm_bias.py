"""The lm codec's bias head (format 2.4, SPEC 9.9) with a tiny model unsure enough to learn from the chunk: chunks
round-trip alone, together, in any lockstep grouping, with limits and with a primer (whose chunk learns from its
primer tokens first); the torch operations give the compiled loops' payloads; each chunk takes the bias head, with or
without the match model, only where that is smaller; the adaptive field's bit 1 is refused without the header's
flag; pack writes it by default (in 2.6, test_lm_bias_group) and 2.3 on request."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive.codecs import CodecError
from lzarchive.codecs.lm import ADAPTIVE_BIAS, ADAPTIVE_MATCH, LmCodec
from lzarchive.engine.ops import TorchOps
from lzarchive.errors import EXIT_INTEGRITY
from lzarchive.format import constants as C
from lzarchive.format.records import Header

from .adversarial.craft import craft2
from .conftest import entries_and_chunks, pack_each_way, reader_of, round_trips_every_way, run_cli
from .test_lm_match import log_text
from .tiny import sampled_text, unsure_model

pytestmark = pytest.mark.usefixtures("private_model_cache")


def letters(size: int, seed: int, alphabet: str = "xy") -> bytes:
    """Random letters from a small alphabet: the model ranks them no better than others, the bias head learns them."""
    draw = random.Random(seed)
    return "".join(draw.choice(alphabet) for _ in range(size)).encode()


def bias_codec(match: bool = True, **options) -> LmCodec:
    return LmCodec(unsure_model(), window=32, overlap=8, match_field=match, bias_field=True, **options)


def adaptive(payload: bytes) -> int:
    return payload[3]  # model, window, overlap (one byte each here), then the adaptive field


@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_chunks_round_trip_alone_together_in_any_grouping_and_with_limits(data):
    """The bias head's state belongs to its chunk: the same tables in lockstep with any others, or alone; the
    encoder's tables (positions in order, chunks as rows) equal the decoder's (a step at a time)."""
    chunks = [letters(data.draw(st.integers(40, 300), label=f"letters {i}"), i) for i in range(data.draw(st.integers(1, 3)))]
    chunks += [log_text(data.draw(st.integers(2, 6), label="lines"), 3) + b"\xff.", b"", b"q"]
    chunks = [chunk for chunk in chunks if chunk] + [sampled_text(unsure_model(), 60, 5)]
    assert any(adaptive(p) & ADAPTIVE_BIAS for p in round_trips_every_way(bias_codec, chunks, data))


def test_with_a_primer_the_primer_chunk_keeps_its_state():
    """The primer chunk's bias head learns from its primer tokens, coded in their own window, before the rest; the
    chunks after it start from zero."""
    chunks = [letters(300, 1), letters(200, 2), letters(150, 3, "xyz")]
    codec = bias_codec(primer_field=True, primer_tokens=20)
    payloads = codec.encode_batch(chunks)
    assert codec.primer.chunk == 0 and all(p[5] & ADAPTIVE_BIAS for p in payloads)  # after the primer's two fields

    read_chunk = reader_of(payloads)
    decoder = bias_codec(primer_field=True)
    assert decoder.decode_batch(payloads, [len(c) for c in chunks], None, [0, 1, 2], read_chunk) == chunks
    assert decoder.decode_batch(payloads[2:], [len(chunks[2])], None, [2], read_chunk) == chunks[2:]
    assert decoder.decode_batch(payloads[:1], [len(chunks[0])], [40], [0], read_chunk)[0] == chunks[0][:40]


def test_each_chunk_takes_the_bias_head_only_where_it_is_smaller():
    """Four codings per chunk; the writer keeps the smallest. Where it takes neither adaptive model the payload is the
    one a writer without them makes, but for the adaptive field; the bias head alone where it pays (bit 1 without
    the match model's field)."""
    chunks = [letters(400, 4), log_text(20, 4), sampled_text(unsure_model(), 80, 9)]
    plain = LmCodec(unsure_model(), window=32, overlap=8).encode_batch(chunks)
    matched = LmCodec(unsure_model(), window=32, overlap=8, match_field=True).encode_batch(chunks)
    both = bias_codec().encode_batch(chunks)
    values = [adaptive(p) for p in both]
    assert values[0] & ADAPTIVE_BIAS and values[1] & ADAPTIVE_MATCH and not values[2]
    assert len(both[0]) < 0.8 * len(matched[0])
    for payload, without, value in zip(both, matched, values):
        assert len(payload) <= len(without)
        assert value & ADAPTIVE_BIAS or payload == without
    assert both[2][:3] + both[2][4:] == plain[2]
    alone = bias_codec(match=False).encode_batch(chunks[:1])[0]
    assert adaptive(alone) == ADAPTIVE_BIAS and len(alone) < 0.8 * len(plain[0])
    assert bias_codec(match=False).decode_batch([alone], [len(chunks[0])]) == chunks[:1]


def test_the_torch_operations_code_and_decode_the_same_payloads(monkeypatch):
    """The bias head's tables and updates in torch operations (what a GPU runs) give the compiled loops' payloads and
    decode them."""
    chunks = [letters(300, 5), log_text(12, 5)]
    payloads = bias_codec().encode_batch(chunks)
    assert adaptive(payloads[0]) & ADAPTIVE_BIAS
    monkeypatch.setenv("LZA_KERNELS", "torch")
    codec = bias_codec()
    assert type(codec.engine.ops) is TorchOps
    assert codec.encode_batch(chunks) == payloads
    assert codec.decode_batch(payloads, [len(c) for c in chunks]) == chunks


def test_the_bias_bit_needs_its_flag_and_the_match_bit_its_own():
    """An adaptive field with a bit the archive's flags do not allow is refused by its number, before any decoding."""
    chunk = letters(200, 6)
    [biased] = bias_codec(match=False).encode_batch([chunk])
    assert adaptive(biased) == ADAPTIVE_BIAS
    [refused] = LmCodec(unsure_model(), window=32, overlap=8, match_field=True).decode_batch([biased], [len(chunk)])
    assert isinstance(refused, CodecError) and "adaptive model 2" in str(refused)
    matched = biased[:3] + bytes([ADAPTIVE_MATCH]) + biased[4:]
    [refused] = bias_codec(match=False).decode_batch([matched], [len(chunk)])
    assert isinstance(refused, CodecError) and "adaptive model 1" in str(refused) and "2: bias head" in str(refused)
    [wrong] = bias_codec().decode_batch([biased[:3] + b"\x00" + biased[4:]], [len(chunk)])  # read without the bias
    assert wrong != chunk


def test_a_damaged_biased_chunk_is_reported_and_the_others_read(unsure_path, tmp_path):
    from lzarchive.engine import registry

    registry.import_compiled(unsure_path)
    files = {"a.txt": letters(500, 7), "b.txt": letters(400, 8)}
    codec = bias_codec()
    payloads = codec.encode_batch(list(files.values()))
    assert all(adaptive(p) & ADAPTIVE_BIAS for p in payloads)
    bad = payloads[1][:-3] + bytes([payloads[1][-3] ^ 0x10]) + payloads[1][-2:]
    archive = tmp_path / "a.lza"
    header = Header(models=(codec.model_ref,), minor=4, incompat_flags=C.INCOMPAT_LM_MATCH | C.INCOMPAT_LM_BIAS)
    archive.write_bytes(craft2(*entries_and_chunks(files, [payloads[0], bad]), header=header.to_wire()))
    result = run_cli("cat", str(archive), "a.txt")
    assert result.stdout == files["a.txt"], result.stderr
    result = run_cli("verify", str(archive))
    assert result.exit_code == EXIT_INTEGRITY and "chunk 1" in result.stderr and "b.txt" in result.stderr
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"))  # decoded in one lockstep batch
    assert result.exit_code == EXIT_INTEGRITY and "b.txt: not extracted: chunk 1 is damaged" in result.stderr
    assert os.listdir(tmp_path / "out") == ["a.txt"] and (tmp_path / "out" / "a.txt").read_bytes() == files["a.txt"]


def test_pack_writes_the_bias_head_and_2_3_on_request(unsure_path, tmp_path):
    source = tmp_path / "notes"
    source.mkdir()
    (source / "xy.txt").write_bytes(letters(600, 10))
    packed = pack_each_way(source, tmp_path, unsure_path, {"default": [], "no-bias": ["--no-bias", "--format", "2.8"],
                                                           "2.3": ["--format", "2.3"], "no-match": ["--no-match"]})
    written = {name: (minor, flags) for name, (minor, flags, _) in packed.items()}
    spanned = C.INCOMPAT_LM_MATCH | C.INCOMPAT_LM_SPAN
    grouped = C.INCOMPAT_LM_BIAS | C.INCOMPAT_LM_BIAS_GROUP
    grouped |= C.INCOMPAT_LM_STREAMS
    grouped |= C.INCOMPAT_LM_CACHE
    text = C.INCOMPAT_LM_UTF16 | C.INCOMPAT_LM_CRLF | C.INCOMPAT_LM_WINDOWS_1252 | C.INCOMPAT_LM_CODE_PAGES
    assert written == {"default": (12, spanned | grouped | C.INCOMPAT_LM_GROUP_MATCH | text),
                       "no-bias": (3, spanned), "2.3": (3, spanned),
                       "no-match": (12, C.INCOMPAT_LM_SPAN | grouped | text)}
    assert packed["default"][2] < 0.8 * packed["no-bias"][2]
    assert b"--no-bias" in run_cli("pack", "--help").stdout
