"""`--ray`: the lm codec's batches on a Ray cluster (a local one started here: two nodes with two CPUs and one, and a
third that declares a GPU it does not have) give the same bytes as in-process: archives packed on it are identical
(bias groups as chunks of streams too), extraction and full verification round-trip, a worker killed in the middle
of a batch costs a rerun and not a byte, a damaged chunk is reported exactly as without Ray. Workers are placed one
per node with all its CPUs, or one per GPU; one that cannot run the codec where it is placed fails the run, saying
why."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from lzarchive import api
from lzarchive.codecs.distributed import Placement, RayCodec, _balanced, _runs, placements
from lzarchive.codecs.lm import LmCodec
from lzarchive.errors import EXIT_INTEGRITY, EXIT_USAGE, ClusterError

from .conftest import files_under, lm_archive, run_cli
from .test_lm_bias_group import two_groups_archive
from .test_lm_primer import header_of
from .tiny import greedy_text, tiny_model

# one worker of a parallel run (pytest-xdist) takes them all: one local cluster at a time on this machine
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two nodes with CPUs, so two workers, one with two threads and one with one, and a node with a GPU only (as Ray
    is told: this machine has none); the workers' model cache starts empty, so the model reaches them through the
    object store."""
    workers_cache = tmp_path_factory.mktemp("worker-models")
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    nodes.add_node(num_cpus=1)
    nodes.add_node(num_cpus=0, num_gpus=1)
    ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"LZA_MODEL_DIR": str(workers_cache)}})
    yield workers_cache
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture
def tree(tmp_path, tiny_path, private_model_cache):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_bytes(greedy_text(tiny_model(), 300, seed_token=2 + ord("a") + i))
    return src


def test_a_cluster_packs_the_same_archive_and_reads_it_back(cluster, tree, tiny_path, tmp_path):
    options = ["--codec", "auto", "--chunk-size", "512", "--model", tiny_path, "-q"]
    assert run_cli("pack", str(tree), "-o", str(tmp_path / "here.lza"), *options).exit_code == 0
    result = run_cli("pack", str(tree), "-o", str(tmp_path / "ray.lza"), *options, "--ray", "local")
    assert result.exit_code == 0, result.stderr
    archive = (tmp_path / "ray.lza").read_bytes()
    assert archive == (tmp_path / "here.lza").read_bytes()
    assert api.info(str(tmp_path / "ray.lza")).codecs["lm"]["chunks"] > 4  # several chunks, on both workers
    assert os.listdir(cluster) == [f"{tiny_model().model_hash.hex()}.lzm"]  # imported from the object store
    result = run_cli("extract", str(tmp_path / "ray.lza"), "-C", str(tmp_path / "out"), "-q", "--ray", "local")
    assert result.exit_code == 0, result.stderr
    assert files_under(str(tmp_path / "out" / "src")) == files_under(str(tree))
    result = run_cli("verify", "--full", str(tmp_path / "ray.lza"), "--ray", "local")
    assert result.exit_code == 0, result.stderr


def test_a_worker_killed_mid_batch_costs_a_rerun_not_a_byte(cluster, tiny_path, private_model_cache):
    model = tiny_model()
    api.load_model(tiny_path)  # into the driver's cache, where RayCodec reads the file it sends
    chunks = [b"".join(greedy_text(model, 400, seed_token=2 + ord("a") + i + j) for j in range(4)) for i in range(24)]
    expected = LmCodec(model, window=64, overlap=16).encode_batch(chunks)
    codec = RayCodec(LmCodec(model, window=64, overlap=16))
    pids = [pid for _, pid, _ in ray.get([worker.describe.remote() for worker in codec.workers])]
    assert codec.encode_batch(chunks[:3]) == expected[:3]  # both workers up (their shares: two chunks and one)
    assert codec.encode_batch([]) == [] and codec.decode_batch([], []) == []  # the writer's last, empty batch
    result: list = []
    run = threading.Thread(target=lambda: result.append(codec.encode_batch(chunks)))
    run.start()
    time.sleep(0.1)  # the parts are on their way to the workers, or running there
    assert run.is_alive(), "the batch finished before the kill: make it longer"
    os.kill(pids[0], signal.SIGKILL)
    run.join()
    assert result == [expected]
    assert ray.get(codec.workers[0].describe.remote())[1] != pids[0]  # restarted; the rerun part came from the new one


def test_one_worker_per_node_holds_its_cpus_or_one_per_gpu(cluster, tiny_path, private_model_cache):
    api.load_model(tiny_path)
    codec = RayCodec(LmCodec(tiny_model(), window=64, overlap=16))
    nodes = sorted((n["NodeID"], int(n["Resources"]["CPU"])) for n in ray.nodes() if "CPU" in n["Resources"])
    assert sorted((node, threads) for node, _, threads in ray.get([w.describe.remote() for w in codec.workers])) == \
        nodes and sorted(cpus for _, cpus in nodes) == [1, 2]
    gpu_node = next(node["NodeID"] for node in ray.nodes() if "GPU" in node["Resources"])
    assert placements(ray.nodes(), "cuda") == [Placement(gpu_node, 0, True)]
    with pytest.raises(ClusterError, match="--device cuda: the Ray cluster has no GPU for a worker"):
        placements([node for node in ray.nodes() if node["NodeID"] != gpu_node], "cuda")
    described = [{"NodeID": "head", "Alive": True, "Resources": {"CPU": 0.0, "memory": 1e9}},  # ray start --num-cpus 0
                 {"NodeID": "gone", "Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}},
                 {"NodeID": "a", "Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
                 {"NodeID": "b", "Alive": True, "Resources": {"CPU": 4.0}}]
    assert placements(described, "cpu") == [Placement("a", 16, False), Placement("b", 4, False)]
    assert placements(described, "cuda:1") == [Placement("a", 8, True), Placement("a", 8, True)]
    assert [p.share for p in (Placement("a", 16, False), Placement("a", 8, True), Placement("g", 0, True))] == [16, 1, 1]
    # parts in proportion to the workers' CPUs: contiguous runs when packing, balanced sizes when decoding
    assert _runs(10, [16, 4]) == [(0, 8), (8, 10)] and _runs(1, [1, 1]) == [(0, 1), (1, 1)]
    assert _balanced([5, 1, 3, 2, 4, 5], [2, 1]) == [[0, 1, 2, 5], [3, 4]]


def test_gpu_workers_go_where_the_gpus_are_and_say_why_they_cannot_run(cluster, tree, tiny_path, lm_files, tmp_path):
    """--device cuda with --ray: this process needs no GPU of its own (it has none here), the worker goes to the node
    with the GPU, and there torch cannot use it: the run fails naming the node and the reason, writing nothing."""
    result = run_cli("pack", str(tree), "-o", str(tmp_path / "a.lza"), "--model", tiny_path, "--device", "cuda",
                     "--ray", "local")
    assert result.exit_code == 1 and not (tmp_path / "a.lza").exists()
    assert re.search(r"a Ray worker cannot run the lm codec on [\d.]+: cuda: this torch \(.*\) cannot use a CUDA "
                     r"GPU here", result.stderr), result.stderr
    codec, files, payloads = lm_files
    archive = tmp_path / "lm.lza"
    archive.write_bytes(lm_archive(codec, files, payloads))
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"), "--device", "cuda", "--ray", "local")
    assert result.exit_code == 1 and "a Ray worker cannot run the lm codec on" in result.stderr
    assert not any((tmp_path / "out").rglob("*.txt"))
    result = run_cli("verify", "--full", str(archive), "--device", "cudaa", "--ray", "local")
    assert result.exit_code == EXIT_USAGE and "'cudaa' is not a device" in result.stderr  # the name, checked here


def test_a_damaged_chunk_is_reported_as_without_ray(cluster, lm_files, tmp_path):
    codec, files, payloads = lm_files
    good = payloads[1]
    archive = tmp_path / "damaged.lza"
    archive.write_bytes(lm_archive(codec, files, [payloads[0], good[:4] + bytes([good[4] ^ 0x10]) + good[5:]]))
    here = run_cli("verify", "--full", str(archive))
    on_cluster = run_cli("verify", "--full", str(archive), "--ray", "local")
    assert on_cluster.exit_code == here.exit_code == EXIT_INTEGRITY
    assert on_cluster.stderr == here.stderr and "chunk 1" in here.stderr
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "x"), "-q", "--ray", "local")
    assert result.exit_code == EXIT_INTEGRITY and "chunk 1" in result.stderr
    assert not (tmp_path / "x" / "b.txt").exists()


def test_primed_chunks_decode_on_a_cluster(cluster, tree, tiny_path, tmp_path):
    """Each worker gets the primer chunk's payload from the driver (workers read no archive), whichever holds it."""
    archive = tmp_path / "primed.lza"
    # the tiny model's 512 positions leave no room for a primer at the default window (512 there)
    api.pack([str(tree)], str(archive), codec="lm", chunk_size=512, model=tiny_path, primer=16, window=256)
    with api.open_archive(str(archive)) as reader:  # the primer field of every payload: its chunk + 1, then 16 tokens
        primed = [header_of(reader.read_stored(i)[1])[0][3:5] for i in range(len(reader.index.chunks))]
    assert len(primed) > 2 and all(fields == [1, 16] for fields in primed)
    api.extract(str(archive), str(tmp_path / "out"), ray="local")
    assert files_under(str(tmp_path / "out" / "src")) == files_under(str(tree))


def test_a_bias_group_decodes_on_one_worker(cluster, unsure_path, private_model_cache, tmp_path, monkeypatch):
    """A worker given some of a group's chunks would decode all of them: the parts keep each group whole."""
    from lzarchive.codecs import distributed
    from lzarchive.engine import registry

    registry.import_compiled(unsure_path)
    archive = tmp_path / "groups.lza"
    chunks = two_groups_archive(archive)
    parts, balanced = [], distributed._balanced
    monkeypatch.setattr(distributed, "_balanced", lambda *args: parts.append(balanced(*args)) or parts[-1])
    api.extract(str(archive), str(tmp_path / "out"), ray="local")
    assert (tmp_path / "out" / "long.txt").read_bytes() == b"".join(chunks[1:])
    [batch] = parts  # chunks 0-6: each group in one worker's part
    assert all(any(group <= set(part) for part in batch) for group in ({1, 2, 3}, {4, 5, 6}))


def test_a_cluster_packs_a_bias_group_as_one_chunk_of_streams_the_same(cluster, unsure_path, private_model_cache,
                                                                        tmp_path):
    """A worker's answer that a chunk is joined to the one before (format 2.7) survives the trip: the same bytes."""
    from .test_lm_bias import letters

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "long.txt").write_bytes(letters(1800, 3))
    archives = [str(tmp_path / name) for name in ("here.lza", "ray.lza")]
    for archive, ray_address in zip(archives, (None, "local")):
        api.pack([str(tmp_path / "src")], archive, codec="lm", model=unsure_path, chunk_size=600, ray=ray_address)
    assert (tmp_path / "here.lza").read_bytes() == (tmp_path / "ray.lza").read_bytes()
    with api.open_archive(archives[1]) as reader:
        assert len(reader.index.chunks) == 1 and reader.header.minor == 12


def test_what_ray_cannot_do_is_refused_before_any_work(tree, tiny_path, tmp_path, monkeypatch):
    result = run_cli("pack", str(tree), "-o", str(tmp_path / "a.lza"), "--model", tiny_path, "--primer", "16",
                     "--ray", "local")
    assert result.exit_code == EXIT_USAGE and "--primer and --ray" in result.stderr
    # an address where nothing answers fails at once, before the model loads (Ray alone retried for minutes)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()
    proc = subprocess.run([sys.executable, "-m", "lzarchive", "pack", str(tree), "-o", str(tmp_path / "a.lza"), "--model",
                           tiny_path, "--ray", f"127.0.0.1:{closed}"], capture_output=True, timeout=120)
    assert proc.returncode == 1 and f"cannot join the Ray cluster: nothing answers at 127.0.0.1:{closed}".encode() \
        in proc.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    result = run_cli("pack", str(tree), "-o", str(tmp_path / "a.lza"), "--model", tiny_path, "--ray", "local")
    assert result.exit_code == EXIT_USAGE and "pip install 'lzarchive[ray]'" in result.stderr
    assert not (tmp_path / "a.lza").exists()


def test_a_worker_runs_only_the_model_the_driver_names(tiny_path, private_model_cache, monkeypatch):
    """A worker builds its codec around the model whose hash the driver sent, whether from its own cache or from the
    driver's bytes; a file there that is another model (replaced since find checked it) is refused, never run."""
    import numba
    import torch

    from lzarchive.codecs import distributed
    from lzarchive.engine import compiler, registry

    for module in (torch, numba):  # a worker sets its process's threads: not this one's
        monkeypatch.setattr(module, "set_num_threads", lambda threads: None)
    model, other = tiny_model(seed=0), tiny_model(seed=1)
    worker = distributed._Worker(LmCodec, {}, model.model_hash, 1)
    monkeypatch.setattr(distributed, "ray_module", lambda: FakeRay(tiny_path))
    assert worker._codec([None]).model.model_hash == model.model_hash  # the driver's bytes, imported
    replaced = registry.find(model.model_hash)
    compiler.write_compiled(replaced, other.config, other.tensors, numerics=other.numerics, name=other.name,
                            source=other.source, tokenizer_json=None)
    monkeypatch.setattr(registry, "find", lambda model_hash: replaced)  # found intact, then replaced
    with pytest.raises(distributed.WorkerUnfit, match=f"is not the model {model.model_hash.hex()}"):
        distributed._Worker(LmCodec, {}, model.model_hash, 1)._codec([None])


class FakeRay:
    """What a worker asks of ray, without a cluster: the driver's model bytes and the node's address."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.util = type("util", (), {"get_node_ip_address": staticmethod(lambda: "127.0.0.1")})

    def get(self, reference) -> bytes:
        with open(self.model_path, "rb") as f:
            return f.read()
