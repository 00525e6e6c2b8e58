"""BAI for TRL: the core metrics and detectors as a transformers TrainerCallback."""

from bai_trl.callback import STATE_FILE, BaiCallback

__all__ = ["BaiCallback", "STATE_FILE"]
