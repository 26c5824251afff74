"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every test runs its models in float32, whatever this CPU runs natively (``precision="auto"`` would pick
# bfloat16 on an AMX / AVX512-BF16 machine and float32 on an AVX2 one); tests of bf16 ask for it explicitly.
os.environ.setdefault("LLMBOOST_PRECISION", "fp32")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real datasets in ``../shared/datasets``; missing: fail under CI, skip elsewhere."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    if not path.is_dir():
        message = f"real datasets not found at {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
