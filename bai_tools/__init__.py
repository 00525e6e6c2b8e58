"""Training tools around BAI: pre-flight probe of candidate actors and run reports."""
