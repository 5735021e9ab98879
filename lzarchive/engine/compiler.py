"""Engine layer: compiles a source model (read by its architecture's converter: architectures.py) into the canonical
compiled model file (SPEC.md section 9.2): int8 weights with float64 per-channel scales, integer tables, the token →
bytes table and the config, in a safetensors file. Deterministic: the same source gives the same bytes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from safetensors.torch import load, save

from ..files import create_temp, remove_quietly
from ..format.wire import digest
from . import tables
from .kernels import F64, WMAX
from .model import FLOAT_LIMIT, ModelConfig
from .ops import divide
from .tokenizer import TokenTable

FILE_FORMAT = "lza-compiled-model/1"
CONTEXT_MODEL = "lza v1 model file"
CONTEXT_TOKENIZER = "lza v1 token table"
# The exact-integer bound for an int8 weight row times an activation row (|a| <= QMAX) in the int8 path:
# each half (|hi|, |lo| <= 128) sums at most K * 128 * 128 products, which must stay below 2^31 (int32 accumulator).
INT32_LIMIT = 1 << 31


class CompileError(ValueError):
    """The source cannot be compiled (unsupported architecture, bounds that would not be exact), or a compiled model
    file breaks a rule of SPEC.md 9.2."""


class Tensor(NamedTuple):
    """What a model file's tensor must be: its dtype, its shape (None: any length) and whether it may be absent."""

    dtype: torch.dtype
    shape: tuple[int | None, ...]
    optional: bool = False


Layout = dict[str, Tensor]  # an architecture's tensors, by name


def matrix(name: str, rows: int, columns: int, optional: bool = False) -> Layout:
    """A weight matrix's tensors: int8 rows and their float64 scales."""
    return {name + ".q": Tensor(torch.int8, (rows, columns), optional), name + ".scale": Tensor(F64, (rows,), optional)}


def common_layout(config: ModelConfig, gate_table: str) -> Layout:
    """The tensors of every architecture: the token embedding, the token table, EXP's table and the activation's."""
    return {**matrix("tok_embeddings", config.vocab_size, config.hidden),
            "tokenizer.bytes": Tensor(torch.uint8, (None,)),
            "tokenizer.offsets": Tensor(torch.int64, (config.vocab_size + 1,)),
            "table.exp2_frac": Tensor(torch.int64, (tables.EXP2_FRAC_STEPS,)),
            "table." + gate_table: Tensor(torch.int64, (tables.GATE_POINTS,))}


@dataclass(frozen=True)
class Source:
    """A model read from its source, ready to compile: float weights named as its architecture's engine reads them
    ((out, in) layout), the architecture's integer tables and numerics profile, the token table and tokenizer."""

    config: ModelConfig
    weights: dict[str, torch.Tensor]
    tables: dict[str, torch.Tensor]
    token_table: TokenTable
    tokenizer_json: str | None
    numerics: str
    layout: Layout  # the tensors its compiled file must hold


@dataclass(frozen=True)
class CompiledModel:
    """A compiled model file's contents."""

    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    name: str
    source: str
    model_hash: bytes
    tokenizer_hash: bytes
    tokenizer_json: str | None
    numerics: str  # the exact arithmetic it runs with (SPEC.md 9.3), which names its architecture's profile

    @property
    def token_table(self) -> TokenTable:
        return TokenTable.from_tensors(self.tensors)


def kept_positions(path: str, trained: int | None, limit: int | None) -> int:
    """The positions a compiled model keeps: all its source was trained for, or the first `limit` of them."""
    if not trained:
        raise CompileError(f"{path}: the source does not say how many positions it was trained for")
    if limit and limit > trained:  # asking for more was given the trained count without a word
        raise CompileError(f"{path}: was trained for {trained} positions; --positions {limit} asks for more")
    return limit or trained


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel (row) symmetric int8 as SPEC.md 9.2 has it: q = round(w * (127 * (1 / m))), the reciprocal
    and then a product (every model file has been compiled so; one division 127 / m gives other files and hashes)."""
    w = w.to(F64)
    m = w.abs().amax(dim=-1, keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))
    q = torch.round(w * (torch.reciprocal(m) * WMAX))
    return q.to(torch.int8), divide(m, WMAX).squeeze(-1)


def check_bounds(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The largest possible partial sum of every matmul, from the actual int8 weights; refuse any over the limit.

    Linear layers (int8 path, per half): sum |w| * 128 over a row. Attention (float64): head_dim * QMAX^2 for scores
    and max_positions * QMAX^2 for the weighted values, both below 2^53.
    """
    from .kernels import QMAX

    worst = {}
    for name, tensor in tensors.items():
        if name.endswith(".q") and tensor.dtype == torch.int8:
            # |int8| <= 128 in int16; row sums exact in int32 below 2^24 columns (3x faster than in int64)
            exact = torch.int32 if tensor.shape[-1] < 1 << 24 else torch.int64
            worst[name] = int(tensor.to(torch.int16).abs_().sum(dim=-1, dtype=exact).max()) * 128
    worst["attention.scores"] = config.head_dim * QMAX * QMAX
    worst["attention.values"] = config.max_positions * QMAX * QMAX
    for name, bound in worst.items():
        limit = INT32_LIMIT if name.endswith(".q") else 1 << 53
        if bound >= limit:
            raise CompileError(f"{name}: worst-case partial sum {bound} is not below {limit}")
    return worst


# value ranges of the integer tables (SPEC.md 9.2): units of 2^-30, EXP's largest exactly 1 (the largest score's
# weight and the likeliest token's e, so that no sum of them is 0)
TABLE_RANGES = {"exp2_frac": (0, 1 << tables.TABLE_BITS), "sigmoid": (0, 1 << tables.TABLE_BITS),
                "gelu": (0, 1 << tables.TABLE_BITS), "rope_cos": (-(1 << tables.TABLE_BITS), 1 << tables.TABLE_BITS),
                "rope_sin": (-(1 << tables.TABLE_BITS), 1 << tables.TABLE_BITS)}


def check_model(config: ModelConfig, tensors: dict[str, torch.Tensor], layout: Layout) -> None:
    """Everything SPEC.md 9.2 asks of a compiled model's tensors, before any is used: exactly the layout's tensors
    (an optional group all or none), their dtypes and shapes, every float64 finite and at most FLOAT_LIMIT in
    magnitude (scales positive), the tables' ranges, a token table that tiles its bytes, and the bounds of 9.3.
    CompileError names the first rule broken."""
    unknown = sorted(set(tensors) - set(layout))
    if unknown:
        raise CompileError(f"tensor {unknown[0]}: not one of a {config.architecture} model's")
    optional = [name for name, rule in layout.items() if rule.optional]
    for name, rule in layout.items():
        if name not in tensors and not (rule.optional and not any(other in tensors for other in optional)):
            raise CompileError(f"tensor {name}: missing")
    for name, tensor in sorted(tensors.items()):  # in name order: the first rule broken is the same in every reader
        rule = layout[name]
        if tensor.dtype != rule.dtype or tensor.dim() != len(rule.shape) or any(
                size is not None and size != actual for size, actual in zip(rule.shape, tensor.shape)):
            sizes = ["n" if size is None else str(size) for size in rule.shape]
            shape = f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"
            raise CompileError(f"tensor {name}: {str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)}, "
                               f"expected {str(rule.dtype).removeprefix('torch.')} {shape}")
        if tensor.dtype == F64:  # NaN fails both comparisons
            low = (tensor > 0) if name.endswith(".scale") else (tensor >= -FLOAT_LIMIT)
            if not bool((low & (tensor <= FLOAT_LIMIT)).all()):
                raise CompileError(f"tensor {name}: a value not in {'(0' if name.endswith('.scale') else '[-2^64'}, 2^64]")
        table = name.removeprefix("table.")
        if table in TABLE_RANGES:
            low, high = TABLE_RANGES[table]
            if not bool(((tensor >= low) & (tensor <= high)).all()) or (table == "exp2_frac" and tensor[0] != high):
                raise CompileError(f"tensor {name}: values outside the table's range")
    offsets = tensors["tokenizer.offsets"]
    if offsets[0] != 0 or offsets[-1] != len(tensors["tokenizer.bytes"]) or bool((offsets[1:] < offsets[:-1]).any()):
        raise CompileError("tensor tokenizer.offsets: does not tile tokenizer.bytes")
    check_bounds(config, tensors)


def build_tensors(loaded: Source) -> dict[str, torch.Tensor]:
    """A source's float weights → compiled tensors: matrices as int8 rows with float64 scales (`.q`, `.scale`), vectors
    (gains, biases) as float64; then the architecture's tables and the token table."""
    try:
        loaded.config.check()
    except ValueError as exc:
        raise CompileError(str(exc)) from None
    out: dict[str, torch.Tensor] = {}
    for name, w in loaded.weights.items():
        if not bool(torch.isfinite(w).all()):  # NaN would quantize to no int8 at all
            raise CompileError(f"{name}: a weight that is not a finite number")
        if w.dim() == 2:
            out[name + ".q"], out[name + ".scale"] = quantize_weight(w)
        else:
            out[name] = w.to(F64)
    out.update({"table." + name: table for name, table in loaded.tables.items()})
    out.update(loaded.token_table.to_tensors())
    check_model(loaded.config, out, loaded.layout)
    return out


def serialized(config: ModelConfig, tensors: dict[str, torch.Tensor], *, numerics: str, name: str, source: str,
               tokenizer_json: str | None) -> bytes:
    """A model file's bytes, deterministically."""
    fields = {"format": FILE_FORMAT, "numerics": numerics, "config": config.to_json(), "name": name,
              "source": source, "tokenizer_json": tokenizer_json or ""}
    # one metadata key: safetensors writes several keys in hash-map order, which would make the bytes vary
    return save({k: v.contiguous() for k, v in sorted(tensors.items())}, metadata={"lza": json.dumps(fields, sort_keys=True)})


def write_compiled(path: str, config: ModelConfig, tensors: dict[str, torch.Tensor], *, numerics: str, name: str,
                   source: str, tokenizer_json: str | None) -> bytes:
    """A model file at `path`; returns the model hash (blake3 of the file)."""
    data = serialized(config, tensors, numerics=numerics, name=name, source=source, tokenizer_json=tokenizer_json)
    write_atomically(path, data)
    return model_hash(data)


def write_atomically(path: str, data: bytes) -> None:
    """`data` at `path`, all or nothing: a new file under a unique temporary name beside it, then its name (two
    processes compiling or importing the same model never write into one file; a stop leaves neither)."""
    made: list[str] = []
    try:
        with os.fdopen(create_temp(os.path.abspath(path), made), "wb") as f:
            f.write(data)
        os.replace(made[0], path)
    except BaseException:
        for temp in made:
            remove_quietly(temp)
        raise


def read_header(path: str) -> dict[str, str]:
    """The metadata of a compiled model file, checked to be ours (every field a string), reading only its header."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = min(int.from_bytes(head, "little"), os.fstat(f.fileno()).st_size)  # never more than the file holds
        return _metadata(head + f.read(size), path)


def _metadata(data: bytes, path: str) -> dict[str, str]:
    """The `lza` metadata of a safetensors file's bytes (SPEC.md 9.2: a little-endian u64 n, then n bytes of JSON
    whose `__metadata__` holds it), or at least of its first 8 + n bytes."""
    size = int.from_bytes(data[:8], "little")
    try:
        if len(data) < 8 + size:
            raise ValueError("cut short")
        metadata = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
        metadata = json.loads(metadata.get("lza", "{}"))
    except (ValueError, RecursionError, AttributeError, TypeError):  # not JSON, or not the objects it should be
        metadata = {}
    if not isinstance(metadata, dict) or metadata.get("format") != FILE_FORMAT:
        raise CompileError(f"{path}: not a compiled model of format {FILE_FORMAT}")
    for name in ("numerics", "config", "name", "source", "tokenizer_json"):
        if not isinstance(metadata.get(name), str):
            raise CompileError(f"{path}: its metadata field {name} is missing or not a string")
    return metadata


def model_hash(data: bytes) -> bytes:
    """A compiled model file's hash: blake3 of its bytes (the model_hash archives name)."""
    return digest(CONTEXT_MODEL, data)


def file_hash(path: str) -> bytes:
    """The model hash of the file at `path`."""
    with open(path, "rb") as f:
        return model_hash(f.read())


def read_compiled(path: str, layout_of: Callable[[ModelConfig, str], Layout], data: bytes | None = None) -> CompiledModel:
    """A compiled model file, from its bytes `data` where they have been read (the file is read once: the hash names
    the very bytes that run, even where the file changes meanwhile), checked before anything in it is trusted (SPEC.md
    9.2): its metadata, its config, and its tensors against the layout `layout_of` gives for its config and numerics
    (architectures.read_compiled passes its architecture's). CompileError says what is wrong."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    metadata = _metadata(data, path)
    try:
        config = ModelConfig.from_json(metadata["config"])
        layout = layout_of(config, metadata["numerics"])
    except ValueError as exc:  # a CompileError too
        raise CompileError(f"{path}: {exc}") from None
    tensors = load(data)
    try:
        check_model(config, tensors, layout)
    except CompileError as exc:
        raise CompileError(f"{path}: {exc}") from None
    table = TokenTable.from_tensors(tensors)
    return CompiledModel(config, tensors, metadata["name"], metadata["source"], model_hash(data),
                         tokenizer_hash(table), metadata["tokenizer_json"] or None, metadata["numerics"])


def tokenizer_hash(table: TokenTable) -> bytes:
    return digest(CONTEXT_TOKENIZER, table.offsets.astype("<i8").tobytes(), table.data)


def compiled(loaded: Source, *, name: str, source: str) -> bytes:
    """A source model compiled into a model file's bytes."""
    return serialized(loaded.config, build_tensors(loaded), numerics=loaded.numerics, name=name, source=source,
                      tokenizer_json=loaded.tokenizer_json)


def compile_to(path: str, loaded: Source, *, name: str, source: str) -> bytes:
    """Compile a source model into a model file at `path`; returns its hash."""
    data = compiled(loaded, name=name, source=source)
    write_atomically(path, data)
    return model_hash(data)
