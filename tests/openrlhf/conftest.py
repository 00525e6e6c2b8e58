"""Test setup: the CPU-mode flash-attn stand-in goes on sys.path when flash_attn is missing."""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")

if importlib.util.find_spec("flash_attn") is None:
    sys.path.insert(0, SHIMS)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
