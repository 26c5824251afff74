"""The one interface every language-model backend implements.

All four methods talk to a language model through :class:`LanguageModel`:

* :meth:`LanguageModel.choice_logprobs` — log-probabilities of given continuations after a prompt
  (" A" vs " B", " yes" vs " no"); the basis of pairwise preferences and yes/no judgements;
* :meth:`LanguageModel.generate` — text generation;
* tracing (hidden states and per-head attention outputs) is offered by local backends only.

``fingerprint`` identifies the weights (and adapter) so stored outputs are keyed by the model that made them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ChoiceRequest:
    """Score each of ``choices`` as a continuation of ``prompt``."""

    prompt: str
    choices: tuple[str, ...]


def per_request(requests: Sequence[ChoiceRequest], flat: Sequence[float]) -> list[np.ndarray]:
    """Cut the values of every choice of every request (in order, one flat sequence) into one array per request."""
    out, i = [], 0
    for req in requests:
        n = len(req.choices)
        out.append(np.array(flat[i : i + n], dtype=np.float64))
        i += n
    if i != len(flat):
        raise ValueError(f"{len(flat)} values for {i} choices")
    return out


@runtime_checkable
class LanguageModel(Protocol):
    """A local or served language model."""

    @property
    def fingerprint(self) -> str:
        """A stable identifier of the model weights and adapter (used as a store key)."""
        ...

    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        """For each request, the summed log-probability of every choice's tokens given the prompt."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """Greedy (``temperature=0``) or sampled continuations of each prompt."""
        ...
