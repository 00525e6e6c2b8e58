"""Framework-free BAI core: merge coefficients, metrics, detectors, thresholds, scoring, replay."""
