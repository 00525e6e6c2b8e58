"""BAI for TRL: the core metrics and detectors as a transformers TrainerCallback."""
