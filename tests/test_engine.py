"""The exact engine on a tiny random Llama: frequency tables are equal (not close) between full-sequence and
incremental evaluation, across batch sizes and neighbours, and across thread counts; tables and compiled files are
deterministic; the compiler refuses bounds that would not be exact."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from decimal import Decimal, getcontext
from pathlib import Path
from types import SimpleNamespace

import numba
import numpy as np
import pytest
import torch

from lzarchive.engine import architectures, compiler, llama, tables
from lzarchive.engine.kernels import QMAX
from lzarchive.engine.llama import Engine as ExactLlama
from lzarchive.engine.model import CPU_BATCHING, batching
from lzarchive.engine.ops import CompiledOps, TorchOps, correctly_rounded_sqrt, float64_products, int8_products
from lzarchive.rangecoder import TOTAL_BITS

from .gpt2_tiny import tiny_gpt2
from .tiny import every_attention, random_weights, tiny_config, tiny_model, tiny_ops, tiny_table


def tables_for(engine: ExactLlama, tokens: list[list[int]]) -> torch.Tensor:
    """Full-sequence frequency tables, (B, T, V)."""
    cache = engine.new_cache(len(tokens), len(tokens[0]))
    q, s = engine.forward(torch.tensor(tokens), cache)
    return torch.stack([engine.frequencies(q[b], s[b], TOTAL_BITS) for b in range(len(tokens))])


def incremental_tables(engine: ExactLlama, tokens: list[int], prefill: int = 1) -> torch.Tensor:
    cache = engine.new_cache(1, len(tokens))
    q, s = engine.forward(torch.tensor([tokens[:prefill]]), cache)
    rows = [engine.frequencies(q[0], s[0], TOTAL_BITS)]
    for token in tokens[prefill:]:
        q, s = engine.forward(torch.tensor([[token]]), cache)
        rows.append(engine.frequencies(q[0], s[0], TOTAL_BITS))
    return torch.cat(rows)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def engine(request):
    """A tiny random model of each architecture."""
    return architectures.engine(tiny_model() if request.param == "llama" else tiny_gpt2())


def random_tokens(n, seed, vocab):
    rng = random.Random(seed)
    return [1] + [rng.randrange(vocab) for _ in range(n - 1)]


def test_tables_sum_to_total_with_every_token_possible(engine):
    freq = tables_for(engine, [random_tokens(40, 1, engine.config.vocab_size)])
    assert torch.all(freq.sum(-1) == 1 << TOTAL_BITS)
    assert freq.min() >= 1


def test_full_sequence_equals_incremental(engine):
    tokens = random_tokens(100, 2, engine.config.vocab_size)
    full = tables_for(engine, [tokens])[0]
    assert torch.equal(full, incremental_tables(engine, tokens))
    assert torch.equal(full, incremental_tables(engine, tokens, prefill=37))


@pytest.mark.parametrize("batch", [3, 16])
def test_batch_and_neighbours_do_not_matter(engine, batch):
    vocab = engine.config.vocab_size
    target = random_tokens(64, 3, vocab)
    alone = tables_for(engine, [target])[0]
    neighbours = [random_tokens(64, 100 + i, vocab) for i in range(batch - 1)]
    for position in (0, batch - 1):
        rows = neighbours[:position] + [target] + neighbours[position:]
        assert torch.equal(tables_for(engine, rows)[position], alone)


def test_long_batches_run_in_passes_of_fewer_rows_with_the_same_results(engine, monkeypatch):
    vocab = engine.config.vocab_size
    rows = [random_tokens(24, 200 + i, vocab) for i in range(7)]
    cache = engine.new_cache(7, 30)
    q, s = engine.forward(torch.tensor(rows), cache)
    monkeypatch.setattr(engine, "batching", replace(engine.batching, forward_tokens=3 * 24))  # passes of 3, 3, 1 rows
    passes = engine.new_cache(7, 30)
    q_passes, s_passes = engine.forward(torch.tensor(rows), passes)
    assert torch.equal(q, q_passes) and torch.equal(s, s_passes) and passes.length == 24
    assert all(torch.equal(a, b) for group in ("k", "k_scale", "v", "v_scale")
               for a, b in zip(getattr(cache, group), getattr(passes, group)))
    step = torch.tensor([[5]] * 7)  # one more position: both caches hold the same keys at the same length
    assert torch.equal(engine.forward(step, cache)[0], engine.forward(step, passes)[0])


def span_tables(engine, rows: list[list[int]], prefix: int, span: int, capacity: int, piece: int) -> torch.Tensor:
    """Tables (B, T, V) of the positions after a shared prefix (rows[0][:prefix], computed once), with a span: fed
    `piece` positions per forward into a cache of `capacity` slots per row, which slides when full."""
    kept = engine.new_cache(1, prefix)
    engine.forward(torch.tensor([rows[0][:prefix]]), kept)
    cache = engine.new_cache(len(rows), capacity, span=span)
    cache.start_from(kept)
    body = torch.tensor([row[prefix:] for row in rows])
    parts = [engine.forward(body[:, lo : lo + piece], cache) for lo in range(0, body.shape[1], piece)]
    q, s = torch.cat([q for q, _ in parts], dim=1), torch.cat([s for _, s in parts], dim=1)
    return torch.stack([engine.frequencies(q[b], s[b], TOTAL_BITS) for b in range(len(rows))])


def test_a_span_gives_the_same_tables_whatever_the_cache_and_the_passes(engine):
    """SPEC.md 9.5: with a span, a position sees the prefix and the span only, so a cache that slides (the last S - 1
    positions moved down after the prefix) gives the same integers as one that holds every position, whether the
    positions come all at once, in pieces that force slides at any phase, one at a time, or beside another row; and
    the span changes the tables (a span longer than the window does not)."""
    vocab = engine.config.vocab_size
    rows = [random_tokens(150, 30, vocab), [1, *random_tokens(150, 31, vocab)[1:]]]
    rows[1][:4] = rows[0][:4]  # the shared prefix
    whole = span_tables(engine, rows[:1], 4, 24, 150, 146)  # every position in the cache, no slide
    for capacity, piece in ((4 + 23 + 1, 1), (4 + 23 + 1, 7), (4 + 23 + 10, 10), (4 + 23 + 9, 146), (60, 37)):
        assert torch.equal(span_tables(engine, rows[:1], 4, 24, capacity, piece), whole), (capacity, piece)
    assert torch.equal(span_tables(engine, rows, 4, 24, 40, 5)[0], whole[0])
    assert not torch.equal(span_tables(engine, rows[:1], 4, 0, 150, 146), whole)
    assert torch.equal(span_tables(engine, rows[:1], 4, 200, 150, 146), span_tables(engine, rows[:1], 4, 0, 150, 146))


def test_a_sliding_cache_refuses_what_it_cannot_hold(engine):
    vocab = engine.config.vocab_size
    kept = engine.new_cache(1, 4)
    engine.forward(torch.tensor([random_tokens(4, 32, vocab)]), kept)
    cache = engine.new_cache(1, 4 + 23, span=24)  # no room left once the prefix and S - 1 positions are in
    cache.start_from(kept)
    with pytest.raises(ValueError, match="exceed the cache capacity"):
        engine.forward(torch.tensor([random_tokens(30, 33, vocab)]), cache)
    cache = engine.new_cache(1, 40, span=8)
    cache.start_from(kept)
    with pytest.raises(ValueError, match="exceed the model's"):  # positions, not slots, are what the tables hold
        engine.forward(torch.tensor([random_tokens(engine.config.max_positions, 34, vocab)]), cache)


def test_compiled_and_torch_paths_agree_with_a_span():
    model = tiny_model()
    compiled, reference = (architectures.engine(model, compiled_kernels=c) for c in (True, False))
    rows = [random_tokens(150, 35, model.config.vocab_size)]
    assert torch.equal(span_tables(compiled, rows, 3, 20, 40, 9), span_tables(reference, rows, 3, 20, 150, 147))
    assert torch.equal(span_tables(compiled, rows, 3, 20, 30, 1), span_tables(reference, rows, 3, 20, 30, 1))


def test_a_gpu_gets_batches_sized_for_its_memory(monkeypatch):
    """No GPU here: the sizes a CUDA device gets from the memory it reports free. Half of it holds the KV caches of
    the chunks decoded in lockstep: at the default model's shape and window (25 MB a chunk), all 1,024 of a batch with
    80 GiB free, 171 with 8 GiB."""
    assert batching(torch.device("cpu")) is CPU_BATCHING
    default_shape = ExactLlama.cache_bytes(SimpleNamespace(config=SimpleNamespace(layers=30, kv_heads=3, head_dim=64)),
                                           1024)
    for free, lockstep in ((80 << 30, 1024), (8 << 30, 171)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 141 << 30))
        gpu = batching(torch.device("cuda"))
        assert gpu.cache_budget == free // 2 and min(gpu.chunks, gpu.cache_budget // default_shape) == lockstep
        assert gpu.forward_tokens > CPU_BATCHING.forward_tokens and gpu.frequency_rows > CPU_BATCHING.frequency_rows


def test_thread_count_does_not_matter(engine):
    tokens = random_tokens(80, 4, engine.config.vocab_size)
    threads, compiled_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        torch.set_num_threads(1)
        numba.set_num_threads(1)
        one = tables_for(engine, [tokens, tokens[::-1]])
        torch.set_num_threads(2)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = tables_for(engine, [tokens, tokens[::-1]])
    finally:
        torch.set_num_threads(threads)
        numba.set_num_threads(compiled_threads)
    assert torch.equal(one, two)


def test_compiled_and_torch_attention_agree():
    """The compiled CPU loops (the default on a CPU) and the torch operations (any device) give the same integers."""
    model = tiny_model()
    compiled = ExactLlama(model.config, model.tensors)
    reference = ExactLlama(model.config, model.tensors, compiled_kernels=False)
    assert type(compiled.ops) is CompiledOps and type(reference.ops) is TorchOps
    vocab = model.config.vocab_size
    tokens = [random_tokens(200, 7, vocab), random_tokens(200, 8, vocab)]  # 200 positions: two attention blocks
    assert torch.equal(tables_for(compiled, tokens), tables_for(reference, tokens))
    tokens = random_tokens(60, 9, vocab)
    assert torch.equal(incremental_tables(compiled, tokens, prefill=20), incremental_tables(reference, tokens, prefill=20))
    # extreme blocks: integers at +-QMAX, scales over twelve orders of magnitude (many p = 0, some ties), one head
    # whose value scales are all 0 (its largest weight is 0)
    g = torch.Generator().manual_seed(10)
    batch, heads, keys, hd = 2, 2, 300, 18  # 18: the kernels handle head dims that are not a multiple of 4

    def integers(*shape):
        x = torch.randint(-QMAX, QMAX + 1, shape, generator=g).to(torch.float64)
        x.view(-1)[:: 7] = QMAX
        x.view(-1)[3:: 11] = -QMAX
        return x

    def scales(*shape):
        return torch.exp2(torch.randint(-40, 0, shape, generator=g).to(torch.float64)) * torch.rand(shape, generator=g, dtype=torch.float64)

    k, v = integers(batch, heads, hd, keys).to(torch.int16), integers(batch, heads, keys, hd).to(torch.int16)  # KVCache
    ks, vs = scales(batch, heads, keys, 1), scales(batch, heads, keys, 1)
    vs[1, 1] = 0.0
    attentions = every_attention(compiled.ops, reference.ops, k, ks, v, vs)
    # 2 positions: 6 rows, the causal limit inside the block; decoding with 5 rows per head and 298 keys: the loops'
    # groups of three rows and four keys, each with a remainder; with a span (kept, span): decoding reads the 7 prefix
    # keys and the span's 101 (both with a remainder of four), skipping the keys hidden between them
    for positions, group, span in ((torch.tensor([keys - 1]), 3, (0, 0)), (torch.tensor([0]), 3, (0, 0)),
                                   (torch.arange(150, 278), 3, (0, 0)), (torch.arange(150, 152), 3, (0, 0)),
                                   (torch.tensor([keys - 3]), 5, (0, 0)), (torch.tensor([keys - 2]), 5, (7, 101)),
                                   (torch.arange(150, 278), 3, (7, 101)), (torch.tensor([5]), 3, (7, 101))):
        rows = group * len(positions)
        block, block_factor = integers(batch, heads, rows, hd), scales(batch, heads, rows)
        assert torch.equal(attentions["compiled"](block, block_factor, positions, *span),
                           attentions["torch"](block, block_factor, positions, *span))
    # a tie in the weights' rounding: two equal scores (p = 2^15 each) and value scales that make the weights
    # QMAX and 2.5 exactly; 2.5 rounds to 2 (half to even), not 3
    k, v = torch.ones(1, 1, hd, 2, dtype=torch.int16), torch.ones(1, 1, 2, hd, dtype=torch.int16)
    ks = torch.ones(1, 1, 2, 1, dtype=torch.float64)
    vs = torch.tensor([QMAX, 2.5], dtype=torch.float64).view(1, 1, 2, 1) / 2**15
    attentions = every_attention(compiled.ops, reference.ops, k, ks, v, vs)
    # decoding position 1 (the loops), and a block of positions 0 and 1 (products outside the loops; rows 1, 3, 5 are
    # the heads at position 1)
    for positions, at_one in ((torch.tensor([1]), slice(None)), (torch.tensor([0, 1]), slice(1, None, 2))):
        block = torch.ones(1, 1, 3 * len(positions), hd, dtype=torch.float64)
        block_factor = torch.ones(1, 1, 3 * len(positions), dtype=torch.float64)
        expected = attentions["torch"](block, block_factor, positions)
        assert torch.equal(expected[:, :, at_one], torch.full((1, 1, 3, hd), (QMAX + 2) / 2**16, dtype=torch.float64))
        assert torch.equal(attentions["compiled"](block, block_factor, positions), expected)


def test_compiled_and_torch_paths_agree_on_gpt2():
    """The whole GPT-2 forward (learned positions, LayerNorm, biases, GELU) on both paths, over two attention blocks
    and token by token."""
    model = tiny_gpt2()
    compiled, reference = (architectures.engine(model, compiled_kernels=c) for c in (True, False))
    vocab = model.config.vocab_size
    tokens = [random_tokens(200, 7, vocab), random_tokens(200, 8, vocab)]
    assert torch.equal(tables_for(compiled, tokens), tables_for(reference, tokens))
    tokens = random_tokens(60, 9, vocab)
    assert torch.equal(incremental_tables(compiled, tokens, prefill=20), incremental_tables(reference, tokens, prefill=20))


def test_compiled_and_torch_frequency_tables_agree():
    """Frequencies in the compiled loops (the CPU default) against the torch operations, on crafted logits of the
    default model's vocabulary size; the interval lookups against cumulative sums."""
    compiled, torch_ops = tiny_ops()
    vocab, total = 49152, 1 << TOTAL_BITS
    g = torch.Generator().manual_seed(11)
    acc = torch.randint(-2**40, 2**40, (5, vocab), generator=g).to(torch.float64)  # output-head products: integers
    acc[1] = 0.0  # all logits equal: the first token gets the remainder
    acc[2, 5] = acc[2, 900] = 2.0**42  # two equal maxima
    acc[3, ::3] = -2.0**52  # far below the maximum: e = 0
    row_scale = torch.tensor([2.0**-35, 1.0, 3e-12, 1e-9, 7e-10], dtype=torch.float64)
    channel_scale = torch.rand(vocab, generator=g, dtype=torch.float64) + 0.5
    channel_scale[900] = channel_scale[5]
    logits = (acc * row_scale[:, None]) * channel_scale
    freq = compiled.frequencies(logits, TOTAL_BITS)
    assert torch.equal(freq, torch_ops.frequencies(logits.clone(), TOTAL_BITS))
    # with the bias head's states (SPEC 9.9): extreme ones, a zero row (the tables unchanged), rows shared by tables
    bias = torch.randint(-2**40, 2**40, (3, vocab), generator=g)
    bias[0, :4] = torch.tensor([2**62 - 1, -(2**62), 2**53 + 1, -(2**53 + 3)])
    bias[1] = 0
    rows = np.array([2, 1, 2, 0, 0])
    biased = compiled.frequencies(logits, TOTAL_BITS, bias, rows)
    assert torch.equal(biased, torch_ops.frequencies(logits.clone(), TOTAL_BITS, bias, rows))
    assert torch.equal(biased[1], freq[1]) and not torch.equal(biased[0], freq[0])
    assert torch.all(biased.sum(dim=1) == total) and biased.min() >= 1
    assert torch.all(freq.sum(dim=1) == total) and freq.min() >= 1
    uniform = 1 + (2**30 * (total - vocab)) // (2**30 * vocab)  # independently: e = 2^30 for every token
    assert freq[1, 0] == total - (vocab - 1) * uniform and torch.all(freq[1, 1:] == uniform)
    assert freq[2, 5] > freq[2, 900]  # the remainder goes to the first of the equal maxima
    cumulative = freq.cumsum(dim=1)
    symbols = np.array([0, vocab - 1, 5, 900, 77])
    for ops in (compiled, torch_ops):
        assert np.array_equal(ops.symbol_starts(freq, symbols), (cumulative - freq)[torch.arange(5), symbols].numpy())
        assert np.array_equal(ops.table_entries(freq, symbols), freq[torch.arange(5), symbols].numpy())
    targets = np.array([0, total - 1, int(cumulative[2, 899]), int(cumulative[3, 10]) - 1, 12345 * 4099])
    unmixed = np.full(5, 1 << 16)  # keep 2^16: the tables as they are
    for ops in (compiled, torch_ops):
        found, found_starts, found_sizes = ops.find_symbols(freq, targets, np.zeros(5, dtype=np.int64), unmixed,
                                                            np.zeros(5, dtype=np.int64), 16)
        assert np.array_equal(found, torch.searchsorted(cumulative, torch.from_numpy(targets)[:, None], right=True)[:, 0])
        assert np.array_equal(found_starts, (cumulative - freq)[torch.arange(5), found].numpy())
        assert np.array_equal(found_sizes, freq[torch.arange(5), found].numpy())


def test_compiled_and_torch_row_work_agree():
    """Quantization, RMSNorm, LayerNorm and the gated activations (SiLU, GELU) in the compiled row loops against the
    torch operations, on crafted rows: zeros, a constant row, residuals large enough that the sum of squares drops
    low bits, activation inputs beyond the tables and on their grid."""
    model = tiny_model()
    compiled, torch_ops = tiny_ops()
    g = torch.Generator().manual_seed(12)
    d = model.config.hidden
    x = torch.randint(-2**20, 2**20, (6, d), generator=g)
    x[1] = 0
    x[2] *= 2**30  # |x| near 2^50: the sum of squares needs the shift
    x[3, ::2] = -(2**40)
    for rows in (x, x[None, 1:5]):
        for op in (lambda ops: ops.norm_quantize(rows, model.tensors["norm"], model.config.norm_eps, 16),
                   lambda ops: ops.quantize(rows.to(torch.float64) / 3)):
            q, s = op(compiled)
            q_ref, s_ref = op(torch_ops)
            assert torch.equal(q, q_ref) and torch.equal(s, s_ref)
    gate = torch.arange(-20 * 256, 20 * 256, dtype=torch.float64).view(10, 1024) / 256  # the table's grid and beyond
    gate[9] = torch.randn(1024, generator=g, dtype=torch.float64) * 8  # between grid points
    gate[0, :5] = torch.tensor([0.0, -0.0, 16.0, -16.0, 1 / 256])
    up = torch.randn(10, 1024, generator=g, dtype=torch.float64)
    up[1] = 0.0
    expected = torch_ops.gate_quantize(gate.clone(), up)
    actual = compiled.gate_quantize(gate, up)
    assert torch.equal(actual[0], expected[0]) and torch.equal(actual[1], expected[1])
    # GPT-2's: GELU through phi's table, no product; LayerNorm with gain and bias
    compiled, torch_ops = (architectures.engine(tiny_gpt2(), compiled_kernels=c).ops for c in (True, False))
    expected = torch_ops.gate_quantize(gate.clone())
    actual = compiled.gate_quantize(gate)
    assert torch.equal(actual[0], expected[0]) and torch.equal(actual[1], expected[1])
    gain, bias = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    x[4] = 12345  # a constant row: every deviation 0, sigma = sqrt(eps), the bias alone
    for rows in (x, x[None, 1:5]):
        q, s = compiled.layer_norm_quantize(rows, gain, bias, 1e-5, 16)
        q_ref, s_ref = torch_ops.layer_norm_quantize(rows, gain, bias, 1e-5, 16)
        assert torch.equal(q, q_ref) and torch.equal(s, s_ref)


def test_rms_norm_scales_match_the_spec_formula():
    """The norm scale of SPEC.md 9.3 computed in Python floats (math.sqrt: the IEEE square root) against both paths
    on 2,000 rows. torch's CPU sqrt is 1 ulp off for about 1 % of float64 inputs; a path using it fails here."""
    model = tiny_model()
    g = torch.Generator().manual_seed(13)
    x = torch.randint(-2**26, 2**26, (2000, model.config.hidden), generator=g) >> torch.randint(0, 24, (2000, 1), generator=g)
    weight = model.tensors["norm"].tolist()
    expected = []
    for row in x.tolist():
        m = max(abs(float(v) * w) for v, w in zip(row, weight)) or 1.0
        shift = max(math.frexp(float(max(map(abs, row))))[1] - 24, 0)
        mean = math.ldexp(float(sum((v >> shift) ** 2 for v in row)), 2 * shift - 2 * 16) / len(row)
        expected.append((m / QMAX) / (math.sqrt(mean + model.config.norm_eps) * 2**16))
    for ops in tiny_ops():
        assert ops.norm_quantize(x, model.tensors["norm"], model.config.norm_eps, 16)[1].flatten().tolist() == expected


def test_sqrt_rounds_correctly():
    sqrt = correctly_rounded_sqrt(torch.device("cpu"))
    x = torch.rand(20000, generator=torch.Generator().manual_seed(14), dtype=torch.float64) * 1e4
    getcontext().prec = 60
    assert sqrt(x).tolist() == [float(Decimal(v).sqrt()) for v in x.tolist()]


@pytest.mark.parametrize("device", ["mps", "meta", "gpu"])
def test_an_engine_is_built_only_where_it_can_run(device):
    """Only the CPU and CUDA devices: MPS has no float64, a meta tensor no values; the engine says so, not torch."""
    with pytest.raises(ValueError, match="cpu and cuda devices only|is not a device"):
        architectures.engine(tiny_model(), device)


@pytest.mark.parametrize("name,value", [("LZA_KERNELS", "Torch"), ("LZA_KERNELS", ""), ("LZA_INT8_GEMM", "no")])
def test_an_engine_switch_with_an_unknown_value_is_refused(name, value, monkeypatch):
    """A typo must not run the default path while a cross-platform proof believes it ran another."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}='{value}': choose"):
        architectures.engine(tiny_model())


def test_int8_and_float64_matmul_paths_agree():
    g = torch.Generator().manual_seed(5)
    for rows in (1, 2, 8, 9, 17, 300):
        a = torch.randint(-QMAX, QMAX + 1, (rows, 1536), generator=g).to(torch.float64)
        a[0] = QMAX
        a[-1, ::2] = -QMAX
        w = torch.randint(-128, 128, (96, 1536), generator=g).to(torch.int8)
        w[0], w[1] = 127, -128
        a_scale = torch.rand(rows, 1, generator=g, dtype=torch.float64)
        w_scale = torch.rand(96, generator=g, dtype=torch.float64)
        exact = (a.to(torch.int64) @ w.to(torch.int64).T).to(torch.float64)
        assert torch.equal(float64_products(a, w), exact) and torch.equal(int8_products(a, w), exact)
        # the compiled split and join (a CPU's path) and the torch operations, also on a strided view of the rows
        expected = exact * a_scale * w_scale
        for ops in tiny_ops():
            assert ops.use_int8  # the CPU's int8 GEMM passed its own exactness check: the path under test runs
            assert torch.equal(ops.linear(a, a_scale, w, w_scale), expected)
            assert torch.equal(ops.linear(a[::2], a_scale[::2], w, w_scale), expected[::2])


def test_table_values_match_independent_computation():
    e = tables.exp2_frac_table()
    assert e[0] == 1 << 30 and e[2048] == round(math.isqrt(1 << 60) / math.sqrt(2))
    assert all(abs(v - 2 ** 30 * 2 ** (-i / 4096)) <= 1 for i, v in enumerate(e))
    s = tables.sigmoid_table()
    assert s[4096] == 1 << 29 and all(abs(v - 2 ** 30 / (1 + math.exp(16 - i / 256))) <= 1 for i, v in enumerate(s))
    cos, sin = tables.rope_tables(64, 16, 10000.0)
    for p in range(64):
        for j in range(8):
            angle = p * 10000.0 ** (-2 * j / 16)
            assert abs(cos[p][j] - 2 ** 30 * math.cos(angle)) <= 2 and abs(sin[p][j] - 2 ** 30 * math.sin(angle)) <= 2


def test_compilation_is_deterministic(tmp_path):
    config = tiny_config()
    loaded = llama.source(config, random_weights(config, 9), tiny_table(config.vocab_size), None)
    a, b = str(tmp_path / "a.lzm"), str(tmp_path / "b.lzm")
    assert compiler.compile_to(a, loaded, name="t", source="s") == compiler.compile_to(b, loaded, name="t", source="s")
    assert Path(a).read_bytes() == Path(b).read_bytes()


def test_bounds_hold_and_are_enforced():
    model = tiny_model()
    worst = compiler.check_bounds(model.config, model.tensors)
    for name, tensor in model.tensors.items():
        if name.endswith(".q"):
            # independent recomputation: the largest |row| . 128 any half-activation can reach, below int32
            assert worst[name] == int(tensor.to(torch.int64).abs().sum(-1).max()) * 128 < 2 ** 31
    assert worst["attention.values"] < 2 ** 53
    wide = dict(model.tensors)
    wide["layers.0.w_down.q"] = torch.full((64, 140_000), 127, dtype=torch.int8)  # 127 * 128 * 140000 > 2^31
    with pytest.raises(compiler.CompileError, match="w_down"):
        compiler.check_bounds(model.config, wide)
    with pytest.raises(compiler.CompileError, match="attention.values"):
        compiler.check_bounds(tiny_config(max_positions=1 << 24), model.tensors)


PINNED_TABLES = "773894d17c7703f22d4674dc4f76bf19cd559d849b45f2b80a04d54c7a0e8d46"


@pytest.mark.parametrize("compiled_kernels", [True, False], ids=["compiled", "torch"])
def test_frequency_tables_are_pinned(compiled_kernels):
    """Every frequency table the lm codec would use on a 1.5 KB text with escapes, in three windows of 200 positions
    (W 200, O 50: past the first 128-position attention block, each window after the first primed with overlap),
    hashed and compared with a pinned value: any change to the arithmetic, made alike in both device paths, fails
    here even where no golden fixture reaches (SPEC 9.3-9.5). It also pins the tiny model itself, built from torch's
    seeded CPU generator."""
    from lzarchive.codecs.lm import LmCodec, window_bodies
    from lzarchive.format.wire import digest

    from .tiny import greedy_text

    model = tiny_model()
    text = greedy_text(model, 420) + b"\xff\x00 escaped bytes \xff"
    codec = LmCodec(model, window=200, overlap=50)
    tokens, escaped = codec.encoder.encode(text)
    assert escaped and len(tokens) > 420
    engine = ExactLlama(model.config, model.tensors, compiled_kernels=compiled_kernels)
    windows = window_bodies(len(tokens), 200, 50)
    assert len(windows) == 3
    hashed = []
    for start, end in windows:
        primer = tokens[max(0, start - 50) : start] if start else []
        rows = tables_for(engine, [[model.config.bos_token] + primer + tokens[start:end]])[0]
        hashed.append(rows[len(primer) : len(primer) + end - start].numpy().astype("<i8").tobytes())
    assert digest("lza test pinned tables", *hashed).hex() == PINNED_TABLES


def test_environment_selects_the_paths_of_the_cross_platform_proof(monkeypatch):
    model = tiny_model()
    assert isinstance(ExactLlama(model.config, model.tensors).ops, CompiledOps)
    monkeypatch.setenv("LZA_KERNELS", "torch")
    ops = ExactLlama(model.config, model.tensors).ops
    assert type(ops) is TorchOps and ops.use_int8
    monkeypatch.setenv("LZA_INT8_GEMM", "off")
    assert not ExactLlama(model.config, model.tensors).ops.use_int8
