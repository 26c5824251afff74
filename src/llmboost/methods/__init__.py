"""The four methods built on the core."""
