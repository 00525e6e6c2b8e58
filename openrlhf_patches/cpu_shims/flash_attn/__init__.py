"""Stand-in for flash-attn, for `bai-train --bai.cpu` and the tests only (never loaded on GPU)."""

__version__ = "0.0.0+bai-test-shim"
