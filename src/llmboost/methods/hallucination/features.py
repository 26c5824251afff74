"""Features from one generation pass (arXiv 2510.14330 §3.1): per-layer hidden states and per-head attention
outputs, each averaged over the generated tokens (:func:`llmboost.llm.tracing.trace_generation`).

A detector reads one *feature block*: ``("layer", l)`` is ``hidden[:, l, :]``, ``("head", l, h)`` is
``head_outputs[:, l, h, :]``. :class:`Features` holds the arrays, saves to / loads from ``.npz``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Key = tuple[Any, ...]


class FeatureShapeError(ValueError):
    """Features do not have the shape a fitted detector was trained on."""


@dataclass
class Features:
    """``hidden[n, L, d]``, ``heads[n, L, H, dh]`` (or ``None``), ``mean_logprob[n]``, ``n_tokens[n]``."""

    hidden: np.ndarray
    heads: np.ndarray | None
    mean_logprob: np.ndarray
    n_tokens: np.ndarray

    @classmethod
    def from_trace(cls, trace: Any) -> Features:
        """From a :class:`~llmboost.llm.tracing.GenerationTrace`."""
        return cls(
            hidden=np.asarray(trace.hidden, dtype=np.float32),
            heads=None if trace.head_outputs is None else np.asarray(trace.head_outputs, dtype=np.float32),
            mean_logprob=trace.mean_logprob(),
            n_tokens=trace.n_generated,
        )

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    def __getitem__(self, rows: Any) -> Features:
        rows = rows if isinstance(rows, slice) else np.asarray(rows)
        return Features(
            self.hidden[rows],
            None if self.heads is None else self.heads[rows],
            self.mean_logprob[rows],
            self.n_tokens[rows],
        )

    @property
    def shape_signature(self) -> dict[str, list[int]]:
        """Per-row shapes of the feature arrays (checked at inference)."""
        sig = {"hidden": list(self.hidden.shape[1:])}
        if self.heads is not None:
            sig["heads"] = list(self.heads.shape[1:])
        return sig

    def keys(self, layers: bool = True, heads: bool = True) -> list[Key]:
        """Every detector's feature block: one per layer, one per (layer, head)."""
        out: list[Key] = []
        if layers:
            out += [("layer", layer) for layer in range(self.hidden.shape[1])]
        if heads and self.heads is not None:
            n_layers, n_heads = self.heads.shape[1:3]
            out += [("head", layer, h) for layer in range(n_layers) for h in range(n_heads)]
        return out

    def block(self, key: Sequence[Any]) -> np.ndarray:
        """The ``[n, dim]`` matrix of one feature block."""
        if key[0] == "layer":
            return self.hidden[:, int(key[1])]
        if key[0] == "head":
            if self.heads is None:
                raise FeatureShapeError("these features have no per-head outputs (traced with heads=False)")
            return self.heads[:, int(key[1]), int(key[2])]
        if key[0] == "all":
            return self.concat()
        raise KeyError(f"unknown feature block {key!r}")

    def concat(self) -> np.ndarray:
        """All features in one row: every layer's hidden state and every head's output."""
        parts = [self.hidden.reshape(len(self), -1)]
        if self.heads is not None:
            parts.append(self.heads.reshape(len(self), -1))
        return np.concatenate(parts, axis=1)

    def check_like(self, signature: dict[str, list[int]]) -> None:
        """Raise :class:`FeatureShapeError` when these features differ in shape from ``signature``."""
        mine = self.shape_signature
        for name, shape in signature.items():
            if name not in mine:
                raise FeatureShapeError(f"detectors were trained with '{name}' features {shape}; these have none")
            if list(mine[name]) != list(shape):
                raise FeatureShapeError(
                    f"feature '{name}' has per-answer shape {mine[name]}, the detectors were trained on {shape} "
                    "(a different model or layer selection?)"
                )

    def save(self, path: str | Path) -> None:
        """Write to ``.npz``."""
        arrays = {"hidden": self.hidden, "mean_logprob": self.mean_logprob, "n_tokens": self.n_tokens}
        if self.heads is not None:
            arrays["heads"] = self.heads
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Features:
        """Read what :meth:`save` wrote."""
        with np.load(path) as z:
            heads = z["heads"] if "heads" in z.files else None
            return cls(z["hidden"], heads, z["mean_logprob"], z["n_tokens"])
