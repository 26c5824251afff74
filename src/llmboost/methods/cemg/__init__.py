"""CEMG: collaborative-guided multimodal fusion, RQ-VAE semantic IDs and generative recommendation."""
