"""The chunked safetensors writer the sweep streams into: valid shards, index, order checks."""

import json

import pytest
import torch
from safetensors.torch import load_file

from bai_mergekit.safetensors_stream import ShardedWriter, TensorSpec


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
