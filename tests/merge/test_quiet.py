"""Quiet tools: a bai merge prints our lines and the libraries' real warnings only."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from conftest import BIN, bai_config

from bai_core.quiet import BNB_KERNEL, BNB_LOGGER, TORCH_DTYPE

NOISE = ("gemm_4bit_forward", "kernels-community", "torch_dtype", "requires_grad=True")


def test_mergekit_yaml_prints_none_of_the_library_noise(family, tmp_path):
    """As a user runs it: no PYTHONWARNINGS or TRANSFORMERS_VERBOSITY to hide anything."""
    config = tmp_path / "bai.yaml"
    config.write_text(yaml.safe_dump(bai_config(family, dtype="bfloat16")))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY")}
    proc = subprocess.run([str(BIN / "mergekit-yaml"), str(config), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not [n for n in NOISE if n in output], output[-3000:]


def test_the_filters_drop_those_lines_only():
    """In a fresh process (bai.pth active): after the real bitsandbytes import, its hub-kernel
    line is dropped on every CPU (it is only logged on CPUs with AVX512-BF16), while another
    warning of the same logger still shows; transformers' torch_dtype line is dropped only
    inside quiet_torch_dtype."""
    code = f"""
import logging, bitsandbytes
from bai_core.quiet import quiet_torch_dtype
logging.getLogger({BNB_LOGGER!r}).warning({BNB_KERNEL!r} + ": no kernels")
logging.getLogger({BNB_LOGGER!r}).warning("a real bitsandbytes warning")
from transformers.utils import logging as tlog
log = tlog.get_logger("transformers.configuration_utils")
with quiet_torch_dtype():
    log.warning({TORCH_DTYPE!r})
log.warning("after: " + {TORCH_DTYPE!r})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert "a real bitsandbytes warning" in lines, proc.stderr
    assert not any(BNB_KERNEL in line for line in lines), proc.stderr
    assert [line.endswith("after: " + TORCH_DTYPE) for line in lines if TORCH_DTYPE in line] == [
        True], lines
