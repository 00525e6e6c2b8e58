"""The safetensors writers the merges stream into: the sweep's chunked writer (valid shards,
index, order checks), the arrival-order stream of mergekit-yaml's bai merges, and the writer
thread with its byte budget."""

import json
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from bai_mergekit.safetensors_stream import (
    BackgroundWriter,
    ShardedWriter,
    TensorSpec,
    TensorStream,
)


def test_chunks_become_loadable_shards_with_an_index(tmp_path):
    tensors = {
        "a": torch.randn(10, 3).bfloat16(),
        "b": torch.arange(7, dtype=torch.int64),
        "c": torch.randn(5, 4),
        "empty": torch.zeros(0, 4),
    }
    specs = [TensorSpec(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    writer = ShardedWriter(tmp_path, specs, max_shard_size=64)
    for name, t in tensors.items():
        flat = t.reshape(-1)
        for start in range(0, max(flat.numel(), 1), 4):
            writer.write(name, flat[start:start + 4])
    writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert len(set(index["weight_map"].values())) > 1
    loaded = {}
    for shard in set(index["weight_map"].values()):
        loaded.update(load_file(tmp_path / shard))
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t), name


def test_single_shard_is_model_safetensors(tmp_path):
    t = torch.randn(3, 3)
    writer = ShardedWriter(tmp_path, [TensorSpec("w", (3, 3), torch.float32)], 1 << 30)
    writer.write("w", t)
    writer.close()
    assert torch.equal(load_file(tmp_path / "model.safetensors")["w"], t)
    assert not (tmp_path / "model.safetensors.index.json").exists()


def test_out_of_order_or_missing_data_is_refused(tmp_path):
    specs = [TensorSpec("a", (2,), torch.float32), TensorSpec("b", (2,), torch.float32)]
    writer = ShardedWriter(tmp_path, specs, 1 << 30)
    with pytest.raises(ValueError, match="expected data for a"):
        writer.write("b", torch.zeros(2))
    writer.write("a", torch.zeros(2))
    with pytest.raises(ValueError, match="1 tensors missing"):
        writer.close()


def _load_shards(folder):
    loaded = {}
    for shard in sorted(folder.glob("*.safetensors")):
        loaded.update(load_file(shard))
    return loaded


def test_tensor_stream_shards_in_arrival_order_with_mergekits_names(tmp_path):
    tensors = {f"t{i}": torch.randn(4, 5).bfloat16() for i in range(5)}  # 40 bytes each
    stream = TensorStream(tmp_path, max_shard_size=100, header_reserve=512,
                          index_metadata={"mergekit_version": "x"})
    for name in ("t3", "t0", "t4", "t1", "t2"):
        stream.write(name, tensors[name])
    names = stream.close()
    assert names == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"] == {"mergekit_version": "x", "total_size": 200}
    assert index["weight_map"] == {"t3": names[0], "t0": names[0], "t4": names[1],
                                   "t1": names[1], "t2": names[2]}
    loaded = _load_shards(tmp_path)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names, "model.safetensors.index.json"])


def test_tensor_stream_header_larger_than_its_room_rewrites_the_shard(tmp_path):
    tensors = {f"a_rather_long_tensor_name_{i}": torch.randn(3, i + 1) for i in range(6)}
    stream = TensorStream(tmp_path, max_shard_size=1 << 30, header_reserve=16)
    for name, t in tensors.items():
        stream.write(name, t)
    assert stream.close() == ["model.safetensors"]
    loaded = load_file(tmp_path / "model.safetensors")
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


class _SlowSink:
    def __init__(self, fail_at=None):
        self.seen, self.fail_at, self.closed = [], fail_at, False
        self.gate = threading.Event()

    def write(self, name, tensor):
        self.gate.wait(5)
        if name == self.fail_at:
            raise OSError(28, "No space left on device")
        self.seen.append((name, tensor.clone()))

    def close(self):
        self.closed = True
        return "done"


def test_background_writer_keeps_order_and_its_byte_budget():
    sink = _SlowSink()
    writer = BackgroundWriter(sink, budget=100)
    blocked = threading.Event()

    def produce():
        for i in range(4):
            writer.write(f"t{i}", torch.full((10,), float(i)))  # 40 bytes each
        blocked.set()

    thread = threading.Thread(target=produce)
    thread.start()
    time.sleep(0.3)
    # the sink has not written yet: two tensors wait (80 bytes), a third would pass 100
    assert not blocked.is_set() and writer._pending == 80
    sink.gate.set()
    thread.join(5)
    assert writer.close() == "done" and sink.closed
    assert [n for n, _ in sink.seen] == ["t0", "t1", "t2", "t3"]
    assert all(torch.equal(t, torch.full((10,), float(i))) for i, (_, t) in enumerate(sink.seen))


def test_background_writer_raises_the_threads_error_and_abort_stops_it():
    sink = _SlowSink(fail_at="t1")
    sink.gate.set()
    writer = BackgroundWriter(sink, budget=1 << 20)
    writer.write("t0", torch.zeros(2))
    writer.write("t1", torch.zeros(2))
    with pytest.raises(OSError, match="No space left"):
        for i in range(2, 200):
            writer.write(f"t{i}", torch.zeros(2))
            time.sleep(0.01)
    writer.abort()  # after a failure: stops, never raises
    assert not writer._thread.is_alive() and not sink.closed
    assert [n for n, _ in sink.seen] == ["t0"]
