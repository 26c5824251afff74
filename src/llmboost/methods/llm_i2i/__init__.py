"""LLM-I2I (arXiv 2512.21595): an LLM generator and an LLM discriminator refine the training data of
unchanged item-to-item models."""
