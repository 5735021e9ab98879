"""Codec layer: a codec whose batches run on a Ray cluster (`lza pack/extract/verify --ray`).

Workers are Ray actors, one per machine of the cluster using all of its CPUs as threads (with `--device cuda`, one
per GPU, each with a share of its machine's CPUs): one process decodes all of its chunks in lockstep, which is
faster per CPU than several processes sharing them (wider matrix products), and holds one model and one KV cache
budget per machine instead of one per CPU. Each holds one copy of the codec, built from the same settings around the
same compiled model: found by its hash in the worker's own model cache, or else fetched once from Ray's object store
(where the driver put the model file) and imported into that cache. The driver splits every batch into one part per
worker, in proportion to their CPUs (GPUs alike), and puts the results back in order. Chunks are independent and the
engine is exact, so every payload and every plaintext is the same bytes whichever worker made it; the archive itself
is read and written only by the driver. A worker that dies is restarted by Ray and its part run again (RETRIES times
at most); a decoded chunk is still checked against its hash by the reader, as without Ray.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
from collections.abc import Hashable, Sequence

from ..errors import ClusterError
from .base import Codec, CodecError, Joined, ReadChunk

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
    one already. Returns the cluster's CPUs."""
    ray = ray_module()
    if not ray.is_initialized():
        _check_reachable(address)
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one worker runs: a node of the cluster, the CPUs it reserves there (its threads), and a GPU or none."""

    node_id: str
    cpus: int
    gpu: bool

    @property
    def share(self) -> int:
        """Its part of every batch, relative to the other workers': its threads on CPUs; GPUs count alike."""
        return 1 if self.gpu else max(1, self.cpus)


def placements(nodes: list[dict], device: str) -> list[Placement]:
    """One worker per live node with CPUs, holding them all; for a CUDA device, one per GPU instead, each with an
    equal share of its node's CPUs (at least one thread). `nodes`: ray.nodes(). ClusterError where none fits."""
    found = []
    for node in nodes:
        resources = node.get("Resources", {}) if node.get("Alive") else {}
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        if not device.startswith("cuda"):
            found += [Placement(node["NodeID"], cpus, False)] if cpus else []
        elif gpus:
            found += [Placement(node["NodeID"], cpus // gpus, True)] * gpus
    if not found:
        raise ClusterError(reason=f"--device {device}: the Ray cluster has no "
                                  f"{'GPU' if device.startswith('cuda') else 'CPU'} for a worker")
    return found


def _check_reachable(address: str) -> None:
    """Fail at once where nothing answers at an explicit HOST:PORT: Ray itself retries for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # 'local', 'auto', or a form only Ray understands
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc.strerror or exc})") from None


class WorkerUnfit(Exception):
    """A worker that cannot build the codec on its node (its device, an engine switch there): nothing can run there."""


class _Worker:
    """One actor: the codec, rebuilt from its settings around the model with this hash on the first call (which
    brings the model file's object reference, so that a restarted actor's constructor holds none)."""

    def __init__(self, codec_type: type, settings: dict, model_hash: bytes, threads: int) -> None:
        import numba
        import torch

        torch.set_num_threads(threads)  # the CPUs this worker reserved on its node
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        self.recipe = codec_type, settings, model_hash
        self.codec: Codec | None = None

    def _codec(self, model_file: list) -> Codec:
        if self.codec is None:
            from ..engine import registry
            from ..engine.architectures import read_compiled

            codec_type, settings, model_hash = self.recipe
            path = registry.find(model_hash)
            if path is not None:
                model = read_compiled(path)
            else:
                with tempfile.TemporaryDirectory() as directory:
                    staged = os.path.join(directory, "model.lzm")
                    with open(staged, "wb") as f:
                        f.write(ray_module().get(model_file[0]))
                    model = registry.import_compiled(staged)
            if model.model_hash != model_hash:  # the file changed since the driver or find read it
                raise WorkerUnfit(f"{ray_module().util.get_node_ip_address()}: its model file is not the model "
                                  f"{model_hash.hex()} (it changed while it was read)")
            try:
                self.codec = codec_type(model, **settings)
            except ValueError as exc:  # what refuses the driver's own codec as a usage error
                raise WorkerUnfit(f"{ray_module().util.get_node_ip_address()}: {exc}") from None
        return self.codec

    def describe(self) -> tuple[str, int, int]:
        """Where this worker runs: its node, its process and its threads."""
        import torch

        return ray_module().get_runtime_context().get_node_id(), os.getpid(), torch.get_num_threads()

    def encode(self, model_file: list, chunks: list[bytes], first_chunk: int,
               runs: list[int] | None) -> list[bytes | Joined | None]:
        return self._codec(model_file).encode_batch(chunks, first_chunk, runs)

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
    """`codec` (a dataclass codec around a compiled model, such as LmCodec) run on Ray actors with the model on
    `device` (by default the codec's), one at each of `where` (by default: placements() on the cluster this process
    has joined)."""

    def __init__(self, codec: Codec, device: str | None = None, where: list[Placement] | None = None) -> None:
        ray = ray_module()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from ..engine import registry

        self.inner = codec
        self.codec_id, self.name, self.costly = codec.codec_id, codec.name, codec.costly
        device = device or getattr(codec, "device", "cpu")
        where = placements(ray.nodes(), device) if where is None else where
        self.shares = [p.share for p in where]
        self.batch_chunks = max(getattr(codec, "batch_chunks", 8), 8 * sum(self.shares))
        self.bias_group = getattr(codec, "bias_group", 1)
        settings = {f.name: getattr(codec, f.name) for f in dataclasses.fields(codec) if f.init and f.name != "model"}
        settings["device"] = "cuda" if device.startswith("cuda") else device  # Ray shows a GPU worker only its own
        model = codec.model
        with open(registry.resolve(model.model_hash, model.source), "rb") as f:
            # in a list, so that actors get the reference and fetch the bytes only if their cache lacks the model
            self._model_file = [ray.put(f.read())]
        actor = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)(_Worker)
        # soft: a worker whose node is gone restarts wherever its CPUs are free
        self.workers = [actor.options(num_cpus=p.cpus, num_gpus=int(p.gpu),
                                      scheduling_strategy=NodeAffinitySchedulingStrategy(p.node_id, soft=True))
                        .remote(type(codec), settings, model.model_hash, max(1, p.cpus)) for p in where]

    @property
    def model_ref(self):
        return self.inner.model_ref

    def keeps(self, chunk: int, payload: bytes) -> bool:
        return self.inner.keeps(chunk, payload)

    def dependencies(self, payload: bytes) -> tuple[int, ...]:
        return self.inner.dependencies(payload)

    def mates(self, chunk: int, payload: bytes) -> tuple[int, ...]:
        return self.inner.mates(chunk, payload)

    def _run(self, calls: list) -> list:
        ray = ray_module()
        try:
            return ray.get(calls)
        except ray.exceptions.RayTaskError as exc:  # the codec raised in the worker: what it would raise here
            if isinstance(exc.cause, WorkerUnfit):
                raise ClusterError(reason=f"a Ray worker cannot run the {self.name} codec on {exc.cause}") from None
            raise exc.cause from None
        except ray.exceptions.RayError as exc:
            raise ClusterError(reason=f"a Ray worker was lost {RETRIES + 1} times ({type(exc).__name__}); nothing "
                                      f"it coded was used") from None

    def contends(self, chunk: bytes, rival: int) -> bool:
        return self.inner.contends(chunk, rival)

    def encode_batch(self, chunks: Sequence[bytes], first_chunk: int = 0,
                     runs: Sequence[int] | None = None) -> list[bytes | Joined | None]:
        # each worker's part ends where a bias group ends: the payloads are those of one process
        starts = None if runs is None else [i for i, place in enumerate(runs) if place % self.bias_group == 0]
        calls = [worker.encode.remote(self._model_file, [bytes(c) for c in chunks[lo:hi]], first_chunk + lo,
                                      None if runs is None else list(runs[lo:hi]))
                 for worker, (lo, hi) in zip(self.workers, _runs(len(chunks), self.shares, starts)) if hi > lo]
        results: list[bytes | Joined | None] = []
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
        # a bias group's chunks to one worker: split, each worker would decode all of them
        units = [i if chunks is None else self.inner.mates(chunks[i], bytes(payload))
                 for i, payload in enumerate(payloads)]
        parts = _balanced(raw_sizes, self.shares, units)
        calls = [worker.decode.remote(self._model_file, [bytes(payloads[i]) for i in part], [raw_sizes[i] for i in part],
                                      [limits[i] for i in part], None if chunks is None else [chunks[i] for i in part],
                                      others)
                 for worker, part in zip(self.workers, parts) if part]
        results: list[bytes | CodecError] = [b""] * len(payloads)
        for part, decoded in zip([p for p in parts if p], self._run(calls)):
            for i, plain in zip(part, decoded):
                results[i] = plain
        return results


def _runs(count: int, shares: Sequence[int], starts: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """[lo, hi) of `count` items in one contiguous run per worker (chunk numbers stay consecutive), of lengths in
    proportion to the workers' `shares`, rounded up; with `starts`, each run ends at the next of these items."""
    ends = [-(-count * sum(shares[: w + 1]) // sum(shares)) for w in range(len(shares))]
    if starts is not None:
        ends = [min([s for s in starts if s >= end] + [count]) for end in ends]
    return list(zip([0, *ends], ends))


def _balanced(sizes: Sequence[int], shares: Sequence[int], units: Sequence[Hashable] | None = None) -> list[list[int]]:
    """Indices of `sizes` in one part per worker, of total sizes about in proportion to the workers' `shares` (the
    largest first, each to the part it would leave least loaded per share), each in its original order: a part's
    decoding takes as long as its longest chunks. Indices of one of `units` go to one part."""
    members: dict[Hashable, list[int]] = {}
    for i in range(len(sizes)):
        members.setdefault(i if units is None else units[i], []).append(i)
    parts: list[list[int]] = [[] for _ in shares]
    loads = [0] * len(shares)
    for unit in sorted(members.values(), key=lambda unit: -sum(sizes[i] for i in unit)):
        size = sum(sizes[i] for i in unit)
        lightest = min(range(len(shares)), key=lambda w: (loads[w] + size) / shares[w])
        parts[lightest].extend(unit)
        loads[lightest] += size
    return [sorted(part) for part in parts]
