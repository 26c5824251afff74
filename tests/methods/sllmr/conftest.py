"""Fixtures for the S-LLMR tests: a small real MovieLens-100K slice (150 users) and a tiny fake LLM."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from llmboost.llm.base import ChoiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "llm" / "helpers"))


class ItemLovingModel:
    """A fake LanguageModel: log P(choice) = -len(choice)/10 (likelihood), and for A/B prompts a fixed
    +2 bias towards "A" plus a preference for the item whose title sorts first."""

    def __init__(self, name: str = "fake-llm") -> None:
        self.name = name
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return self.name + ":" + hashlib.sha256(self.name.encode()).hexdigest()[:8]

    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        self.calls += len(requests)
        out = []
        for r in requests:
            if r.choices and r.choices[0].strip() == "A" and "\nA: " in r.prompt:
                a = r.prompt.split("\nA: ")[1].split("\n")[0]
                b = r.prompt.split("\nB: ")[1].split("\n")[0]
                pref = 1.0 if a < b else -1.0
                la, lb = 2.0 + pref, -pref
                z = np.logaddexp(la, lb)
                out.append(np.array([la - z, lb - z]))
            else:
                out.append(np.array([-len(c) / 10.0 - 0.01 for c in r.choices]))
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32, temperature: float = 0.0, stop=None):
        return ["" for _ in prompts]


@pytest.fixture(scope="session")
def ml_small(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory):
    """MovieLens-100K restricted to its first 150 users, saved as a dataset folder; (dataset, split, path)."""
    from llmboost.data import load_dataset
    from llmboost.splitting import leave_one_out

    full = load_dataset(shared_datasets / "movielens-100k")
    keep = full.interactions.users < 150
    small = full.with_interactions(full.interactions.select(keep), note="first 150 users (test)")
    path = tmp_path_factory.mktemp("ml") / "ml-small"
    small.save(path)
    return small, leave_one_out(small), path


@pytest.fixture()
def fake_llm() -> ItemLovingModel:
    return ItemLovingModel()
