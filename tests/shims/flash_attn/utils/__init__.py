"""TEST-ONLY flash_attn.utils package stand-in."""
