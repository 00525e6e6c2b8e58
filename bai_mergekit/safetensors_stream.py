"""Sharded safetensors output written as the merge goes: chunk by chunk in a known layout
(`ShardedWriter`), whole tensors in arrival order (`TensorStream`), on a writer thread with a
byte budget (`BackgroundWriter`), so a merge holds no shard in memory and computes while the
disk writes."""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import torch

LOG = logging.getLogger(__name__)

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


def _header(shard: list[TensorSpec], size: int = 0) -> bytes:
    """The 8-byte length and the JSON header, padded with spaces to `size` bytes (the format
    allows trailing whitespace) or to the next multiple of 8, so the data stays aligned."""
    meta: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in shard:
        meta[spec.name] = {"dtype": SAFETENSORS_DTYPES[spec.dtype], "shape": list(spec.shape),
                           "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (max(size - 8 - len(raw), -len(raw) % 8))
    return struct.pack("<Q", len(raw)) + raw


def header_bound(specs: list[TensorSpec]) -> int:
    """Bytes that hold the header of any shard made of some of `specs`."""
    return len(_header(specs)) + 8


def _write_all(fh: BinaryIO, tensor: torch.Tensor) -> int:
    data = tensor.contiguous().view(-1).view(torch.uint8)
    if data.numel():
        fh.write(memoryview(data.numpy()))  # a large write() releases the GIL
    return data.numel()


def write_index(path: Path, placed: list[tuple[TensorSpec, str]], metadata: dict | None = None
                ) -> None:
    """The HF index of a sharded model: which file holds each tensor, and the total size."""
    total = sum(spec.nbytes for spec, _ in placed)
    index = {"metadata": {**(metadata or {}), "total_size": total},
             "weight_map": {spec.name: file for spec, file in placed}}
    path.write_text(json.dumps(index, indent=2))


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
        self._written += _write_all(self._file, chunk)
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
            write_index(self.out_dir / INDEX_NAME, [(s, self.names[i]) for s, i in self._queue])


class TensorStream:
    """Whole tensors in the order they come, into shards of at most `max_shard_size` bytes (a
    tensor larger than that gets a shard of its own). Each shard's data follows a header region
    of `header_reserve` bytes, filled when the shard is complete; a header that does not fit
    rewrites the shard once. `close()` gives the shards their final names (`model.safetensors`,
    or `model-0000i-of-0000N.safetensors` and an index with `index_metadata`)."""

    def __init__(self, out_dir: Path, max_shard_size: int, header_reserve: int,
                 basename: str = "model", index_metadata: dict | None = None):
        self.out_dir = Path(out_dir)
        self.max_shard_size = max_shard_size
        self.reserve = header_reserve + (-header_reserve % 8)
        self.basename = basename
        self.index_metadata = index_metadata or {}
        self.shards: list[list[TensorSpec]] = []
        self._file: BinaryIO | None = None
        self._size = 0

    def _path(self, i: int) -> Path:
        return self.out_dir / f"{self.basename}-{i + 1}.safetensors"

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append one whole tensor."""
        spec = TensorSpec(name, tuple(tensor.shape), tensor.dtype)
        if spec.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name}: dtype {spec.dtype} cannot be written")
        if self._file is not None and self._size + spec.nbytes > self.max_shard_size:
            self._finish_shard()
        if self._file is None:
            self.shards.append([])
            self._file = open(self._path(len(self.shards) - 1), "wb")  # noqa: SIM115
            self._file.seek(self.reserve)
            self._size = 0
        self._size += _write_all(self._file, tensor)
        self.shards[-1].append(spec)

    def _finish_shard(self) -> None:
        fh, self._file = self._file, None
        header = _header(self.shards[-1], self.reserve)
        if len(header) == self.reserve:
            fh.seek(0)
            fh.write(header)
            fh.close()
            return
        fh.close()  # the header outgrew its region: one rewrite with the data moved after it
        LOG.info("safetensors header of %d bytes > %d reserved: rewriting the shard",
                 len(header), self.reserve)
        path = self._path(len(self.shards) - 1)
        moved = path.with_name(path.name + ".tmp")
        with open(path, "rb") as src, open(moved, "wb") as dst:
            dst.write(header)
            src.seek(self.reserve)
            while chunk := src.read(1 << 24):
                dst.write(chunk)
        os.replace(moved, path)

    def close(self) -> list[str]:
        """Finish the last shard, name the shards, write the index; returns the file names."""
        if self._file is not None:
            self._finish_shard()
        if not self.shards:  # a model without tensors still gets its (empty) file
            self.shards.append([])
            with open(self._path(0), "wb") as fh:
                fh.write(_header([]))
        n = len(self.shards)
        names = [f"{self.basename}.safetensors"] if n == 1 else [
            f"{self.basename}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for i, name in enumerate(names):
            os.replace(self._path(i), self.out_dir / name)
        if n > 1:
            write_index(self.out_dir / f"{self.basename}.safetensors.index.json",
                        [(s, names[i]) for i, shard in enumerate(self.shards) for s in shard],
                        self.index_metadata)
        return names


class Sink(Protocol):
    def write(self, name: str, tensor: torch.Tensor) -> None: ...
    def close(self) -> object: ...


class BackgroundWriter:
    """`sink.write` on a thread of its own, so the caller computes the next tensor while this
    one goes to disk. Tensors handed over must not change afterwards. At most `budget` bytes
    wait (one tensor always may): the memory bound, whatever the model's size. An error on the
    thread is raised by the next `write` or by `close`; `abort()` drops what still waits."""

    def __init__(self, sink: Sink, budget: int = 1 << 30):
        self.sink, self.budget = sink, budget
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._abort = False
        self._thread = threading.Thread(target=self._run, name="bai-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            name, tensor, nbytes = item
            if self._error is None and not self._abort:
                try:
                    self.sink.write(name, tensor)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc
            del tensor, item
            with self._cond:
                self._pending -= nbytes
                self._cond.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; blocks while more than `budget` bytes wait."""
        self._raise()
        nbytes = tensor.numel() * tensor.element_size()
        with self._cond:
            while self._pending and self._pending + nbytes > self.budget and not self._error:
                self._cond.wait()
            self._pending += nbytes
        self._raise()
        self._queue.put((name, tensor, nbytes))

    def _join(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def close(self) -> object:
        """Wait for every queued tensor, then close the sink (its result is returned)."""
        self._join()
        self._raise()
        return self.sink.close()

    def abort(self) -> None:
        """Stop writing (the caller removes the output); never raises."""
        self._abort = True
        self._join()
