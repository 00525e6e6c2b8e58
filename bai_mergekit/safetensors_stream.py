"""Stream tensors chunk by chunk into sharded safetensors files, never holding a whole tensor."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one output tensor, known before any data is written."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.shape)


def plan_shards(specs: list[TensorSpec], max_shard_size: int) -> list[list[TensorSpec]]:
    """Greedy, in order: a new shard starts when the next tensor would overflow this one."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def _header(shard: list[TensorSpec]) -> bytes:
    meta: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in shard:
        meta[spec.name] = {"dtype": SAFETENSORS_DTYPES[spec.dtype], "shape": list(spec.shape),
                           "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Writes `specs` in order into HF-style shards; data arrives as contiguous chunks."""

    def __init__(self, out_dir: Path, specs: list[TensorSpec], max_shard_size: int):
        self.out_dir = Path(out_dir)
        self.shards = plan_shards(specs, max_shard_size)
        n = len(self.shards)
        self.names = ["model.safetensors"] if n == 1 else [
            f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._queue = [(s, i) for i, shard in enumerate(self.shards) for s in shard]
        self._pos = self._written = 0  # the current tensor, and its bytes written so far
        self._file: BinaryIO | None = None
        self._shard = -1

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append the next bytes of tensor `name` (which must be the current tensor)."""
        spec, shard = self._queue[self._pos]
        if name != spec.name or chunk.dtype != spec.dtype:
            raise ValueError(f"expected data for {spec.name} ({spec.dtype}), got {name}")
        if shard != self._shard:
            self._open(shard)
        data = chunk.contiguous().view(-1).view(torch.uint8)
        self._file.write(memoryview(data.numpy()))
        self._written += data.numel()
        if self._written > spec.nbytes:
            raise ValueError(f"too much data for {spec.name}")
        if self._written == spec.nbytes:
            self._pos += 1
            self._written = 0

    def _open(self, shard: int) -> None:
        if self._file is not None:
            self._file.close()
        self._shard = shard
        self._file = open(self.out_dir / self.names[shard], "wb")  # noqa: SIM115
        self._file.write(_header(self.shards[shard]))

    def close(self) -> None:
        """Finish the last shard and write the index when there is more than one."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._pos != len(self._queue):
            raise ValueError(f"incomplete output: {len(self._queue) - self._pos} tensors missing")
        if len(self.shards) > 1:
            weight_map = {s.name: self.names[i] for s, i in self._queue}
            total = sum(s.nbytes for s, _ in self._queue)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2))
