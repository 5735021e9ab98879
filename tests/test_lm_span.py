"""The lm codec's span (format 2.3, SPEC 9.5) with the tiny model: chunks round-trip alone, together, with limits,
with a primer and the match model, whatever the caches' room between slides and the lockstep grouping; the payload
carries the span, which the decoder reads and checks; the archive says so in its header and older formats refuse it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.codecs import CodecError
from lzarchive.codecs import lm as lm_module
from lzarchive.codecs.lm import LmCodec
from lzarchive.errors import UsageError
from lzarchive.format import constants as C
from lzarchive.format.wire import varint

from .conftest import run_cli
from .tiny import greedy_text, tiny_model

pytestmark = pytest.mark.usefixtures("private_model_cache")


def span_codec(span: int = 12, window: int = 100, **options) -> LmCodec:
    return LmCodec(tiny_model(), window=window, span_field=True, span=span, **options)


def texts(*sizes: int) -> list[bytes]:
    return [greedy_text(tiny_model(), size, seed_token=2 + ord(c)) for size, c in zip(sizes, "tahse")]


def test_span_payloads_round_trip_and_differ_from_no_span():
    """Three chunks of 120-300 tokens in windows of 100 positions (restarts on the last 12 tokens), each token seeing
    the last 12 positions: decoded together and alone. The span changes the tables, so the bytes."""
    chunks = texts(300, 120, 200)
    codec = span_codec()
    assert (codec.window, codec.overlap) == (100, 12)  # the overlap defaults to the span
    payloads = codec.encode_batch(chunks)
    assert [p[:4] for p in payloads] == [bytes([0, 100, 12, 12])] * 3  # model, window, overlap, span
    assert span_codec().decode_batch(payloads, [len(c) for c in chunks]) == chunks
    assert [span_codec().decode_batch([p], [len(c)])[0] for p, c in zip(payloads, chunks)] == chunks
    unspanned = span_codec(span=0, overlap=12).encode_batch(chunks)
    assert [p[:4] for p in unspanned] == [bytes([0, 100, 12, 0])] * 3
    assert [p[4:] for p in unspanned] != [p[4:] for p in payloads]


@settings(max_examples=12, deadline=None)
@given(span=st.integers(1, 60), window=st.integers(20, 90), packing=st.integers(1, 40), decoding=st.integers(1, 40),
       data=st.data())
def test_the_caches_room_and_the_groups_do_not_change_the_bytes(span, window, packing, decoding, data):
    """However much room a sliding cache has beyond the prefix and S - 1 (slides at any phase, one position per
    forward or many), and however chunks share a lockstep group or stop early, the payloads and the decoded bytes are
    the same: the integers do not depend on where a key sits in the cache."""
    span = min(span, window - 1)
    chunks = texts(data.draw(st.integers(40, 160)), data.draw(st.integers(10, 160)))
    reference = span_codec(span, window, overlap=min(span, window - 2)).encode_batch(chunks)
    limits = [data.draw(st.integers(1, len(c))) for c in chunks]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lm_module, "SPAN_ROOM_PACKING", packing)
        patch.setattr(lm_module, "SPAN_ROOM_DECODING", decoding)
        codec = span_codec(span, window, overlap=min(span, window - 2))
        assert codec.encode_batch(chunks) == reference
        decoded = codec.decode_batch(reference, [len(c) for c in chunks], limits)
    for got, chunk, limit in zip(decoded, chunks, limits):
        assert chunk.startswith(got) and len(got) >= limit


def test_packing_holds_the_outputs_of_one_piece_of_positions_at_a_time(monkeypatch):
    """With a span, a group's rows cost SPAN_ROOM_PACKING positions each, so a window's outputs are made and turned
    into tables that many positions at a time (they would otherwise be window x hidden float64 per row); the bytes are
    those of one forward over the whole window."""
    chunks = texts(300, 250)
    whole = span_codec(span=0, window=100, overlap=12)
    monkeypatch.setattr(lm_module, "SPAN_ROOM_PACKING", 10)
    codec = span_codec(span=99, window=100, overlap=12)
    forward = codec.engine.forward
    widths = []

    def recording_forward(tokens, cache):
        widths.append(tokens.shape[1])
        return forward(tokens, cache)

    monkeypatch.setattr(codec.engine, "forward", recording_forward)
    payloads = codec.encode_batch(chunks)
    assert widths and max(widths) == 10
    # a span of W - 1 sees every position of its window: the tables, so the bodies, are the unspanned codec's
    assert [p[4:] for p in payloads] == [p[4:] for p in whole.encode_batch(chunks)]
    assert [p[:4] for p in payloads] == [bytes([0, 100, 12, 99])] * 2


def test_a_span_with_a_primer_and_the_match_model():
    """The prefix (BOS and the primer's tokens) stays visible to every position however far the span slides."""
    chunks = texts(260, 180, 90)
    options = dict(span=10, window=80, primer_field=True, match_field=True)
    payloads = span_codec(primer_tokens=20, **options).encode_batch(chunks)
    assert span_codec(**options).decode_batch(payloads, [len(c) for c in chunks], chunks=[0, 1, 2]) == chunks
    [alone] = span_codec(**options).decode_batch([payloads[2]], [len(chunks[2])], chunks=[2],
                                                 read_chunk=lambda i: (C.CodecId.LM, payloads[i]))
    assert alone == chunks[2]


def test_spans_the_decoder_refuses():
    """A span at or above the window (SPEC 9.6), and a codec asked for a span it cannot write."""
    [chunk] = texts(60)
    payload = span_codec(span=12, window=40).encode_batch([chunk])[0]
    assert payload[3] == 12
    for span in (40, 1000):
        [refused] = span_codec(span=12, window=40).decode_batch([payload[:3] + varint(span) + payload[4:]], [len(chunk)])
        assert isinstance(refused, CodecError) and f"span {span} is not below the window" in str(refused)
    with pytest.raises(ValueError, match="format 2.3"):
        LmCodec(tiny_model(), window=40, span=12)
    with pytest.raises(ValueError, match="lm span 40"):
        span_codec(span=40, window=40)


def test_pack_writes_a_span_and_refuses_it_in_older_formats(tiny_path, tmp_path):
    source = tmp_path / "text"
    source.mkdir()
    (source / "a.txt").write_bytes(b"".join(texts(300, 200)))
    archive = str(tmp_path / "span.lza")
    result = run_cli("pack", str(source), "-o", archive, "--codec", "lm", "--model", str(tiny_path), "--span", "16",
                     "--chunk-size", "600", "-q")
    assert result.exit_code == 0, result.stderr
    with api.open_archive(archive) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (12, C.INCOMPAT_LM_MATCH | C.INCOMPAT_LM_SPAN
                                                                      | C.INCOMPAT_LM_BIAS | C.INCOMPAT_LM_BIAS_GROUP
                                                                      | C.INCOMPAT_LM_GROUP_MATCH | C.INCOMPAT_LM_STREAMS
                                                                      | C.INCOMPAT_LM_CACHE | C.INCOMPAT_LM_UTF16
                                                                      | C.INCOMPAT_LM_CRLF | C.INCOMPAT_LM_WINDOWS_1252
                                                                      | C.INCOMPAT_LM_CODE_PAGES)
        # model, window (the model's 512 positions: two varint bytes), overlap and span 16 after the adaptive field
        assert reader.read_stored(0)[1][:6] == bytes([0]) + varint(512) + bytes([16, 0]) + bytes([16])
    assert run_cli("verify", archive, "--full").exit_code == 0
    out = tmp_path / "out"
    assert run_cli("extract", archive, "-C", str(out), "-q").exit_code == 0
    assert (out / "text" / "a.txt").read_bytes() == (source / "a.txt").read_bytes()
    with pytest.raises(UsageError, match="needs format 2.3"):
        api.pack([str(source)], str(tmp_path / "old.lza"), codec="lm", model=str(tiny_path), span=16,
                 format_version="2.2")
    with pytest.raises(UsageError, match="lm codec only"):
        api.pack([str(source)], str(tmp_path / "z.lza"), codec="zstd", span=16)
    api.pack([str(source)], str(tmp_path / "plain.lza"), codec="lm", model=str(tiny_path), span=0)
    with api.open_archive(str(tmp_path / "plain.lza")) as reader:
        assert (reader.header.minor, reader.header.incompat_flags) == (12, C.INCOMPAT_LM_MATCH | C.INCOMPAT_LM_BIAS
                                                                      | C.INCOMPAT_LM_BIAS_GROUP
                                                                      | C.INCOMPAT_LM_GROUP_MATCH | C.INCOMPAT_LM_STREAMS
                                                                      | C.INCOMPAT_LM_CACHE | C.INCOMPAT_LM_UTF16
                                                                      | C.INCOMPAT_LM_CRLF | C.INCOMPAT_LM_WINDOWS_1252
                                                                      | C.INCOMPAT_LM_CODE_PAGES)
