"""A tiny deterministic fake :class:`~llmboost.llm.base.LanguageModel` for the store/job/Ray tests.

Log-probs are a hash of ``(prompt, choice)``, so every process computes the same float64 bits. With
``log_path`` each call appends one ``<run_id>\\t<prompt>`` line per request *before* computing it, so a test
can count exactly which inputs each run sent to the model.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

import numpy as np

from llmboost.llm.base import ChoiceRequest
from llmboost.llm.prompts import PromptTemplate

TEMPLATE = PromptTemplate("tmpl", 1, "Score {x}", choices=("A", "B"))
"""The template the fake jobs' outputs are stored under."""

CHOICES = (" yes", " no", " maybe")


def fake_logprob(prompt: str, choice: str) -> float:
    """A deterministic negative float from ``(prompt, choice)``."""
    h = int.from_bytes(hashlib.sha256(f"{prompt}\0{choice}".encode()).digest()[:8], "little")
    return -0.01 - 12.0 * h / 2**64


def fake_text(prompt: str, max_new_tokens: int = 32) -> str:
    return ("re:" + prompt[::-1])[:max_new_tokens]


class FakeModel:
    """Deterministic fake model; optionally slow, logging, or failing on the ``fail_on_call``-th call."""

    def __init__(
        self,
        name: str = "fake-v1",
        delay: float = 0.0,
        log_path: str | None = None,
        run_id: str = "run",
        fail_on_call: int | None = None,
    ) -> None:
        self.name = name
        self.delay = delay
        self.log_path = log_path
        self.run_id = run_id
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.seen: list[str] = []

    @property
    def fingerprint(self) -> str:
        return f"fake:{self.name}"

    def _log(self, prompts: Sequence[str]) -> None:
        self.calls += 1
        self.seen.extend(prompts)
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise ConnectionError(f"fake model failure on call {self.calls}")
        if self.log_path:
            data = "".join(f"{self.run_id}\t{p}\n" for p in prompts).encode()
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        if self.delay:
            time.sleep(self.delay)

    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        self._log([r.prompt for r in requests])
        return [np.array([fake_logprob(r.prompt, c) for c in r.choices]) for r in requests]

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        self._log(list(prompts))
        return [fake_text(p, max_new_tokens) for p in prompts]


class FailingOn:
    """Picklable factory of a fake model that raises on one prompt (for Ray workers)."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt

    def __call__(self) -> FakeModel:
        return _FailingModel(self.prompt)


class _FailingModel(FakeModel):
    def __init__(self, bad_prompt: str) -> None:
        super().__init__()
        self.bad_prompt = bad_prompt

    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        if any(r.prompt == self.bad_prompt for r in requests):
            raise ConnectionError(f"worker lost its accelerator on {self.bad_prompt!r}")
        return super().choice_logprobs(requests)


def broken_factory() -> FakeModel:
    """A factory whose model cannot be loaded."""
    raise OSError("model file not found: /nowhere/model.gguf")


def make_inputs(n: int) -> dict[str, ChoiceRequest | str]:
    """``n`` inputs keyed ``k0000``...: choice requests (1-3 choices), every 7th a prompt."""
    out: dict[str, ChoiceRequest | str] = {}
    for i in range(n):
        if i % 7 == 6:
            out[f"k{i:04d}"] = f"gen prompt {i:04d}"
        else:
            out[f"k{i:04d}"] = ChoiceRequest(prompt=f"prompt {i:04d}", choices=CHOICES[: 1 + i % 3])
    return out


def prompt_of(request: ChoiceRequest | str) -> str:
    return request if isinstance(request, str) else request.prompt
