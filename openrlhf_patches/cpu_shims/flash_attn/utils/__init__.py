"""CPU-mode stand-in for the flash_attn.utils package (never loaded on GPU)."""
