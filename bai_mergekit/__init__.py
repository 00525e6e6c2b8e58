"""Balanced Actor Initialization (arXiv 2509.00309) as a mergekit merge method."""
