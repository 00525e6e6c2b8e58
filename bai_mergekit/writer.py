"""mergekit's TensorWriter for bai merges: each tensor streamed to disk on a writer thread as it
is merged, not a whole shard held in memory and written while the merge waits."""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mergekit.io import tasks
from mergekit.io.tensor_writer import TensorWriter

from bai_mergekit.safetensors_stream import BackgroundWriter, TensorStream

WRITE_BUDGET = 1 << 30  # bytes of merged tensors waiting for the writer thread
NO_LIMIT = 1 << 62


class StreamingTensorWriter(TensorWriter):
    """Same files and index as mergekit's writer (`model-0000i-of-0000N.safetensors`, shards
    of at most `max_shard_size` bytes in the order tensors come); `.bin` output (no
    safetensors) and a custom basename stay with mergekit's own writer."""

    header_reserve = 1 << 20  # bytes before each shard's data; set per merge by `streaming`
    opened: list[StreamingTensorWriter] | None = None

    def __init__(self, out_path: str, max_shard_size: int = 5 * 1000**3,
                 safe_serialization: bool = True, override_basename: str | None = None,
                 use_async: bool = False, max_write_threads: int = 1) -> None:
        streaming = safe_serialization and override_basename is None
        super().__init__(out_path, max_shard_size, safe_serialization, override_basename,
                         use_async and not streaming, max_write_threads)
        self.stream: BackgroundWriter | None = None
        if streaming:
            sink = TensorStream(Path(out_path), max_shard_size if max_shard_size > 0 else
                                NO_LIMIT, self.header_reserve, index_metadata={
                                    "mergekit_version": importlib.metadata.version("mergekit")})
            self.stream = BackgroundWriter(sink, WRITE_BUDGET)
            if self.opened is not None:
                self.opened.append(self)

    def save_tensor(self, name: str, tensor: Any, clone: bool = False) -> None:
        if self.stream is None:
            return super().save_tensor(name, tensor, clone)
        self.stream.write(name, tensor.contiguous())  # nothing changes it afterwards

    def finalize(self) -> None:
        if self.stream is None:
            return super().finalize()
        self.stream.close()


@contextlib.contextmanager
def streaming(header_reserve: int) -> Iterator[None]:
    """Within, mergekit's tasks build StreamingTensorWriter; a merge that fails stops its
    writer thread before the caller removes the output."""
    cls = type("StreamingTensorWriter", (StreamingTensorWriter,),
               {"header_reserve": header_reserve, "opened": []})
    previous, tasks.TensorWriter = tasks.TensorWriter, cls
    try:
        yield
    finally:
        tasks.TensorWriter = previous
        for writer in cls.opened:
            writer.stream.abort()
