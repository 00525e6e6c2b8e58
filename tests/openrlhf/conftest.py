"""Test setup: the CPU flash-attn shim goes on sys.path only when flash_attn is not importable."""

import importlib.util
import os
import sys

SHIMS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shims")
REPO = os.path.dirname(os.path.dirname(SHIMS))

if importlib.util.find_spec("flash_attn") is None:
    sys.path.insert(0, SHIMS)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
