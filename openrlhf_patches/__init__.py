"""BAI add-ons for OpenRLHF 0.11.2: length/reward metrics, collapse detectors, math reward."""

__all__ = ["SUPPORTED_OPENRLHF"]

SUPPORTED_OPENRLHF = "0.11.2"
