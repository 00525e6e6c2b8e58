"""vLLM worker extension for `bai-train --bai.cpu`: OpenRLHF's weight sync on vLLM's CPU backend.

vLLM spawns its engine core in a fresh process; importing this class there (by the qualified name
`cpu_mode` puts into `worker_extension_cls`) is what applies the CPU weight-sync patch in it.
"""

from __future__ import annotations

import logging
from typing import Any

from .activate import ensure_log_handler
from .cpu_mode import ensure_shim_path, tcp_init_process_group

ensure_shim_path()

import openrlhf.utils.distributed_util as _distributed_util  # noqa: E402
import torch  # noqa: E402
from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap  # noqa: E402

logger = logging.getLogger("bai")
# vLLM's engine-core process configures only vLLM's logger: without a handler of its own the
# reload line below (INFO) would be dropped
ensure_log_handler()

__all__ = ["CpuWorkerWrap"]

# WorkerWrap.init_process_group imports this name at call time: the TCP group, not PyNccl
_distributed_util.stateless_init_process_group = tcp_init_process_group


class CpuWorkerWrap(WorkerWrap):
    """WorkerWrap whose `update_weight` receives on CPU and reloads through vLLM's API: the CPU
    backend repacks linear weights after loading, so a `load_weights` of one tensor fails; one
    sync's tensors go to `model_runner.reload_weights` (layer-wise) at the last (`empty_cache`)."""

    def update_weight(self, name: str, dtype: Any, shape: Any, empty_cache: bool = False) -> None:
        if dtype != self.model_config.dtype:
            raise ValueError(f"weight sync dtype {dtype} != vLLM model dtype "
                             f"{self.model_config.dtype} for {name}")
        weight = torch.empty(shape, dtype=dtype)
        self._model_update_group.broadcast(weight, src=0)
        pending = self.__dict__.setdefault("_bai_pending", [])
        pending.append((name, weight))
        if empty_cache:
            self.__dict__["_bai_pending"] = []
            self.model_runner.reload_weights(weights_iterator=pending)
            logger.info("bai: vLLM CPU engine reloaded %d tensors", len(pending))
