"""Test setup for the core tests: the repo on sys.path (OpenRLHF reward tests need the shim)."""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")

if importlib.util.find_spec("flash_attn") is None:
    sys.path.insert(0, SHIMS)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
