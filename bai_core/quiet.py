"""Narrow filters for library log lines a user cannot act on; each one says why it is dropped."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

# bitsandbytes 0.50 (imported by peft, which mergekit, OpenRLHF and TRL import) tries, on CPUs
# with AVX512-BF16, to fetch a 4-bit CPU kernel from the Hugging Face hub through the optional
# `kernels` package, and logs a warning when it cannot. bai never runs 4-bit kernels.
BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNEL = "Failed to load CPU gemm_4bit_forward from kernels-community"
# mergekit 0.1.5 sets `config.torch_dtype` on the merged model's config (mergekit/merge.py,
# _model_out_config); transformers 5 warns that the attribute is deprecated. The user's recipe
# says `dtype:`, which is right; the warning is about mergekit's code.
CONFIG_LOGGER = "transformers.configuration_utils"
TORCH_DTYPE = "`torch_dtype` is deprecated! Use `dtype` instead!"


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of `prefixes`; keeps everything else."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_bitsandbytes(_module: Any = None) -> None:
    """Drop bitsandbytes' hub-kernel warning (idempotent; called before its CPU ops load)."""
    logger = logging.getLogger(BNB_LOGGER)
    if not any(isinstance(f, DropMessages) for f in logger.filters):
        logger.addFilter(DropMessages(BNB_KERNEL))


@contextlib.contextmanager
def quiet_torch_dtype() -> Iterator[None]:
    """Inside: transformers' `torch_dtype` deprecation line is dropped, nothing else."""
    logger, drop = logging.getLogger(CONFIG_LOGGER), DropMessages(TORCH_DTYPE)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
