"""CLI layer: `lza model list|info|compile`."""

from __future__ import annotations

import dataclasses
import os
from typing import Annotated, Optional

import typer

from .. import api
from .render import BarProgress, emit_json, human_bytes, say, stdout

model_app = typer.Typer(help="Compiled models for the lm codec: list the cache, inspect one, compile a source.",
                        no_args_is_help=True)


def _describe(model, json_output: bool, path: str | None = None) -> None:
    cfg = model.config
    params = sum(t.numel() for name, t in model.tensors.items() if name.endswith(".q"))
    fields = dict(name=model.name, source=model.source, model_hash=model.model_hash.hex(),
                  tokenizer_hash=model.tokenizer_hash.hex(), numerics=model.numerics, parameters=params,
                  config=dataclasses.asdict(cfg),
                  path=path)
    if json_output:
        emit_json("model", **fields)
        return
    say(f"{model.name}  ({model.source})", out=stdout)
    say(f"  model hash      {fields['model_hash']}", out=stdout)
    say(f"  tokenizer hash  {fields['tokenizer_hash']}", out=stdout)
    say(f"  numerics        {model.numerics}, int8 weights, {params / 1e6:.1f} M parameters", out=stdout)
    say(f"  architecture    {cfg.architecture}: {cfg.layers} layers, hidden {cfg.hidden}, {cfg.heads} heads "
                 f"/ {cfg.kv_heads} kv, vocab {cfg.vocab_size}, window up to {cfg.max_positions}", out=stdout)
    if path:
        say(f"  file            {path} ({human_bytes(os.path.getsize(path))})", out=stdout)


@model_app.command("list")
def list_models(json_output: Annotated[bool, typer.Option("--json", help="JSON Lines.")] = False) -> None:
    """Compiled models in the cache (LZA_MODEL_DIR or the user cache directory). The one marked `default` is what
    pack uses without --model; the others are kept for the archives made with them (earlier lza versions, other
    sources)."""
    for entry in api.list_models():
        if json_output:
            emit_json("model", name=entry.name, source=entry.source, model_hash=entry.model_hash.hex(),
                      positions=entry.positions, path=entry.path, default=entry.default)
        else:
            say(f"{entry.model_hash.hex()[:16]}  {entry.name}  {entry.source}  {entry.positions} positions"
                + ("  default" if entry.default else ""), out=stdout)


def _load_and_describe(model: str | None, json_output: bool, positions: int | None = None) -> None:
    loaded = api.load_model(model, positions, BarProgress(enabled=not json_output))
    _describe(loaded, json_output, api.cached_model_path(loaded.model_hash))


@model_app.command("info")
def info(
    model: Annotated[Optional[str], typer.Argument(help="A compiled .lzm, GGUF file or HF directory; default model if omitted.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON Lines.")] = False,
) -> None:
    """Show a model's hashes, numerics and architecture (compiling it first if needed)."""
    _load_and_describe(model, json_output)


@model_app.command("compile")
def compile_command(
    source: Annotated[Optional[str], typer.Argument(help="GGUF file or Hugging Face directory; default model if omitted.")] = None,
    positions: Annotated[Optional[int], typer.Option(min=2, help="Keep only the first N positions of those the source was trained for. Archives packed while lza cut every model at 2048 positions name that variant: compile it with --positions 2048 (lza rebuilds the default model's by itself).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON Lines.")] = False,
) -> None:
    """Compile a source model into the cache (deterministic: the same source always gives the same model hash)."""
    _load_and_describe(source, json_output, positions)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
