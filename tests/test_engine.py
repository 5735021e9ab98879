"""The exact engine on a tiny random Llama: frequency tables are equal (not close) between full-sequence and
incremental evaluation, across batch sizes and neighbours, and across thread counts; tables and compiled files are
deterministic; the compiler refuses bounds that would not be exact."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lzarchive.engine import compiler, tables
from lzarchive.engine.kernels import QMAX, IntMatmul
from lzarchive.engine.model import ExactLlama
from lzarchive.rangecoder import TOTAL_BITS

from .tiny import random_weights, tiny_config, tiny_model, tiny_table


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


@pytest.fixture(scope="module")
def engine():
    model = tiny_model()
    return ExactLlama(model.config, model.tensors)


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


def test_thread_count_does_not_matter(engine):
    tokens = random_tokens(80, 4, engine.config.vocab_size)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = tables_for(engine, [tokens, tokens[::-1]])
        torch.set_num_threads(2)
        two = tables_for(engine, [tokens, tokens[::-1]])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_int8_and_float64_matmul_paths_agree():
    matmul = IntMatmul(torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    for rows in (1, 2, 16, 17, 300):
        a = torch.randint(-QMAX, QMAX + 1, (rows, 1536), generator=g).to(torch.float64)
        a[0] = QMAX
        w = torch.randint(-128, 128, (96, 1536), generator=g).to(torch.int8)
        assert torch.equal(matmul._float64(a, w), a @ w.to(torch.float64).T)
        if matmul.use_int8:
            assert torch.equal(matmul._int8(a, w), matmul._float64(a, w))


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
    loaded = (config, random_weights(config, 9), tiny_table(config.vocab_size), None)
    a, b = str(tmp_path / "a.lzm"), str(tmp_path / "b.lzm")
    assert compiler.compile_to(a, loaded, name="t", source="s") == compiler.compile_to(b, loaded, name="t", source="s")
    assert open(a, "rb").read() == open(b, "rb").read()


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
