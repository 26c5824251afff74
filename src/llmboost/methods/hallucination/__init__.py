"""Hallucination-detector ensemble on internal representations (arXiv 2510.14330)."""
