"""Shared fixtures of the CEMG tests."""

from __future__ import annotations

import pytest

from tests.factories import save_tiny_llama


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 1-layer Llama + word-level tokenizer saved as a model folder (a core model setting)."""
    pytest.importorskip("transformers")
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), ["next"])
