"""Test setup for bai_tools: repo on sys.path; the CPU flash-attn shim only when needed."""

import importlib.util
import os
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")

if importlib.util.find_spec("flash_attn") is None and SHIMS not in sys.path:
    sys.path.insert(0, SHIMS)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
