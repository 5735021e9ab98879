"""Codec layer: a codec whose batches run on a Ray cluster (`lza pack/extract/verify --ray`).

Workers are Ray actors, each holding one copy of the codec, built from the same settings around the same compiled
model: found by its hash in the worker's own model cache, or else fetched once from Ray's object store (where the
driver put the model file) and imported into that cache. The driver splits every batch into one part per worker and
puts the results back in order. Chunks are independent and the engine is exact, so every payload and every plaintext
is the same bytes whichever worker made it; the archive itself is read and written only by the driver. A worker that
dies is restarted by Ray and its part run again (RETRIES times at most); a decoded chunk is still checked against
its hash by the reader, as without Ray.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
from collections.abc import Sequence

from ..errors import ClusterError
from .base import Codec, CodecError, ReadChunk

RETRIES = 3  # restarts of a worker, and reruns of its part, before the run fails


def ray_module():
    """The ray package, or ImportError with the install hint."""
    try:
        import ray
    except ImportError:
        raise ImportError("Ray is not installed; install the extra: pip install 'lzarchive[ray]'") from None
    return ray


def connect(address: str) -> int:
    """Join the cluster at `address` (a Ray address; 'auto': the cluster running on this machine) or, for 'local',
    the one running here or else a new one for this process (ray.init's own choice), unless this process has joined
    one already. Returns the cluster's CPUs: one worker each."""
    ray = ray_module()
    _check_reachable(address)
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _check_reachable(address: str) -> None:
    """Fail at once where nothing answers at an explicit HOST:PORT: Ray itself retries for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # 'local', 'auto', or a form only Ray understands
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc.strerror or exc})") from None


class _Worker:
    """One actor: the codec, rebuilt from its settings around the model with this hash on the first call (which
    brings the model file's object reference, so that a restarted actor's constructor holds none)."""

    def __init__(self, codec_type: type, settings: dict, model_hash: bytes) -> None:
        import numba
        import torch

        torch.set_num_threads(1)  # one CPU per actor: the cluster's CPUs are the parallelism
        numba.set_num_threads(1)
        self.recipe = codec_type, settings, model_hash
        self.codec: Codec | None = None

    def _codec(self, model_file: list) -> Codec:
        if self.codec is None:
            from ..engine import registry
            from ..engine.compiler import read_compiled

            codec_type, settings, model_hash = self.recipe
            path = registry.find(model_hash)
            if path is None:
                with tempfile.TemporaryDirectory() as directory:
                    staged = os.path.join(directory, "model.lzm")
                    with open(staged, "wb") as f:
                        f.write(ray_module().get(model_file[0]))
                    path = registry.import_compiled(staged)
            self.codec = codec_type(read_compiled(path), **settings)
        return self.codec

    def pid(self) -> int:
        return os.getpid()

    def encode(self, model_file: list, chunks: list[bytes], first_chunk: int) -> list[bytes | None]:
        return self._codec(model_file).encode_batch(chunks, first_chunk)

    def decode(self, model_file: list, payloads: list[bytes], raw_sizes: list[int], limits: list[int],
               chunks: list[int] | None, others: dict[int, tuple[int, bytes] | CodecError]) -> list[bytes | CodecError]:
        def read_chunk(chunk: int) -> tuple[int, bytes]:
            found = others.get(chunk)
            if found is None:
                raise CodecError(f"chunk {chunk} was not sent to this worker")
            if isinstance(found, CodecError):
                raise found
            return found

        return self._codec(model_file).decode_batch(payloads, raw_sizes, limits, chunks, read_chunk)


class RayCodec(Codec):
    """`codec` (a dataclass codec around a compiled model, such as LmCodec) run on `workers` Ray actors."""

    def __init__(self, codec: Codec, workers: int) -> None:
        ray = ray_module()
        from ..engine import registry

        self.inner = codec
        self.codec_id, self.name = codec.codec_id, codec.name
        self.batch_chunks = max(getattr(codec, "batch_chunks", 8), 8 * workers)
        settings = {f.name: getattr(codec, f.name) for f in dataclasses.fields(codec) if f.init and f.name != "model"}
        model = codec.model
        with open(registry.resolve(model.model_hash, model.source), "rb") as f:
            # in a list, so that actors get the reference and fetch the bytes only if their cache lacks the model
            self._model_file = [ray.put(f.read())]
        actor = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(_Worker)
        self.workers = [actor.remote(type(codec), settings, model.model_hash) for _ in range(workers)]

    @property
    def model_ref(self):
        return self.inner.model_ref

    def keeps(self, chunk: int) -> bool:
        return self.inner.keeps(chunk)

    def dependencies(self, payload: bytes) -> tuple[int, ...]:
        return self.inner.dependencies(payload)

    def _run(self, calls: list) -> list:
        ray = ray_module()
        try:
            return ray.get(calls)
        except ray.exceptions.RayTaskError as exc:  # the codec raised in the worker: what it would raise here
            raise exc.cause from None
        except ray.exceptions.RayError as exc:
            raise ClusterError(reason=f"a Ray worker was lost {RETRIES + 1} times ({type(exc).__name__}); nothing "
                                      f"it coded was used") from None

    def encode_batch(self, chunks: Sequence[bytes], first_chunk: int = 0) -> list[bytes | None]:
        per_worker = max(1, -(-len(chunks) // len(self.workers)))  # contiguous runs: chunk numbers stay consecutive
        calls = [worker.encode.remote(self._model_file, [bytes(c) for c in chunks[lo : lo + per_worker]],
                                      first_chunk + lo)
                 for worker, lo in zip(self.workers, range(0, len(chunks), per_worker))]
        results: list[bytes | None] = []
        for part in self._run(calls):
            results.extend(part)
        return results

    def decode_batch(self, payloads: Sequence[bytes], raw_sizes: Sequence[int], limits: Sequence[int] | None = None,
                     chunks: Sequence[int] | None = None, read_chunk: ReadChunk | None = None) -> list[bytes | CodecError]:
        limits = list(raw_sizes if limits is None else limits)
        others: dict[int, tuple[int, bytes] | CodecError] = {}
        for payload in payloads:  # the chunks a payload reads (the lm primer's), read here: workers see no archive
            for chunk in self.inner.dependencies(bytes(payload)):
                if chunk not in others and read_chunk is not None:
                    try:
                        others[chunk] = read_chunk(chunk)
                    except CodecError as exc:
                        others[chunk] = exc
        parts = _balanced(raw_sizes, len(self.workers))
        calls = [worker.decode.remote(self._model_file, [bytes(payloads[i]) for i in part], [raw_sizes[i] for i in part],
                                      [limits[i] for i in part], None if chunks is None else [chunks[i] for i in part],
                                      others)
                 for worker, part in zip(self.workers, parts) if part]
        results: list[bytes | CodecError] = [b""] * len(payloads)
        for part, decoded in zip([p for p in parts if p], self._run(calls)):
            for i, plain in zip(part, decoded):
                results[i] = plain
        return results


def _balanced(sizes: Sequence[int], workers: int) -> list[list[int]]:
    """Indices of `sizes` in `workers` parts of about equal total size (the largest first, each to the least loaded
    part), each in its original order: a part's decoding takes as long as its longest chunks."""
    parts: list[list[int]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        lightest = loads.index(min(loads))
        parts[lightest].append(i)
        loads[lightest] += sizes[i]
    return [sorted(part) for part in parts]
