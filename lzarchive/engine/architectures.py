"""Engine layer: the architectures lza runs, keyed by (architecture, numerics profile) as a compiled model file names
them (SPEC.md 9.2-9.3). Each is a module with ARCHITECTURE, NUMERICS, an Engine class (an ExactModel) and its
converters; a model file naming anything else is refused as unsupported, never run through another's arithmetic.
"""

from __future__ import annotations

import json
import os
from types import ModuleType

import torch

from . import compiler, gpt2, llama
from .compiler import CompiledModel, CompileError, Source
from .model import ExactModel
from .tokenizer import TokenTable, token_bytes_from_strings

ARCHITECTURES: dict[tuple[str, str], ModuleType] = {(m.ARCHITECTURE, m.NUMERICS): m for m in (llama, gpt2)}
NUMERICS_PROFILES = frozenset(numerics for _, numerics in ARCHITECTURES)


class UnsupportedModel(LookupError):
    """A compiled model this lza does not implement: its architecture and numerics profile are not a known pair."""


def architecture(config_architecture: str, numerics: str) -> ModuleType:
    try:
        return ARCHITECTURES[(config_architecture, numerics)]
    except KeyError:
        known = ", ".join(f"{a} ({n})" for a, n in sorted(ARCHITECTURES))
        raise UnsupportedModel(f"architecture {config_architecture!r} with numerics {numerics!r} is not implemented "
                               f"by this lza (it runs {known})") from None


def read_compiled(path: str, data: bytes | None = None) -> CompiledModel:
    """A compiled model file (from its bytes `data` where they have been read), checked against its architecture's
    layout before it is trusted: UnsupportedModel for an architecture this lza does not run, CompileError for any
    other rule of SPEC.md 9.2 it breaks."""
    return compiler.read_compiled(path, lambda config, numerics: architecture(config.architecture, numerics).layout(config),
                                  data)


def engine(model: CompiledModel, device: str | torch.device = "cpu", compiled_kernels: bool | None = None) -> ExactModel:
    """The exact forward of a compiled model, on `device`."""
    return architecture(model.config.architecture, model.numerics).Engine(model.config, model.tensors, device,
                                                                          compiled_kernels)


def read_source(path: str, max_positions: int | None = None) -> Source:
    """A GGUF file or a Hugging Face directory, read by its architecture's converter, with the positions it was
    trained for (or the first `max_positions` of them)."""
    if os.path.isdir(path):
        return _from_hf_directory(path, max_positions)
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.fields.get("general.architecture")
    name = field.contents() if field is not None else None
    if name != llama.ARCHITECTURE:
        raise CompileError(f"{path}: GGUF architecture {name!r} is not supported (supported: llama)")
    return llama.from_gguf(path, reader, max_positions)


def _from_hf_directory(path: str, max_positions: int | None) -> Source:
    """A Hugging Face directory (config.json, weights in any float dtype, tokenizer), its weights as float64."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    hf_config = AutoConfig.from_pretrained(path)
    modules = {"llama": llama, "gpt2": gpt2}
    if hf_config.model_type not in modules:
        raise CompileError(f"{path}: architecture {hf_config.model_type!r} is not supported (supported: "
                           f"{', '.join(sorted(modules))})")
    module = modules[hf_config.model_type]
    module.check_hf(path, hf_config)
    logging.disable_progress_bar()  # lza shows its own progress; transformers' bars would interleave with it
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    state = {name: tensor.detach().to(torch.float64) for name, tensor in model.state_dict().items()}
    tokenizer = AutoTokenizer.from_pretrained(path)
    control = set(tokenizer.all_special_ids)
    vocab = tokenizer.convert_ids_to_tokens(list(range(hf_config.vocab_size)))
    table = TokenTable.from_list(token_bytes_from_strings([t or "" for t in vocab], control))
    tokenizer_json = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str()), sort_keys=True)
    # the escape token: the smallest special token id, which tokenization never produces
    return module.from_hf(path, hf_config, state, max_positions, min(control), table, tokenizer_json)
