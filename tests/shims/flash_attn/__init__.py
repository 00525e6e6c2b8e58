"""TEST-ONLY CPU stand-in for flash-attn: just enough for `import openrlhf.models` on CPU."""

__version__ = "0.0.0+bai-test-shim"
