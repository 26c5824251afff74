"""The protocol every recommender follows: ``fit``, ``score``, ``recommend``, ``save`` / ``load``.

Users x items is the only orientation. ``history`` is what a model may condition on at prediction
time (sequential models read it; embedding models ignore it) and what ``recommend`` excludes.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from llmboost.data.interactions import Interactions, segment_offsets

REGISTRY: dict[str, type[Recommender]] = {}


class Recommender(ABC):
    """Base class: hyperparameters in the constructor, ``fit`` returns self, learned state ends in ``_``."""

    name: ClassVar[str]
    ranks_only: ClassVar[bool] = False
    """True for models that return top-K lists but cannot score the whole catalog (e.g. generative
    recommenders): they implement :meth:`recommend` only, and evaluation ranks their lists."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    # ------------------------------------------------------------------ API
    @abstractmethod
    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        """Learn from ``train``; ``valid`` (if given) drives early stopping."""

    def score(
        self, users: np.ndarray, items: np.ndarray | None = None, history: Interactions | None = None
    ) -> torch.Tensor:
        """Scores (len(users) x len(items), or x n_items when ``items`` is None); higher is better.
        Every model implements this except ``ranks_only`` ones."""
        raise NotImplementedError(f"{type(self).__name__} ranks only (ranks_only=True): use recommend()")

    def recommend(
        self,
        users: np.ndarray,
        k: int = 10,
        exclude_seen: bool = True,
        history: Interactions | None = None,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top-``k`` items and their scores for each user, never an item in ``history`` when
        ``exclude_seen`` (default: the training interactions)."""
        history = self.train_ if history is None else history
        users = np.asarray(users, dtype=np.int64)
        top_items, top_scores = [], []
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            scores = self.score(batch, history=history).float()
            if exclude_seen:
                mask_seen(scores, batch, history)
            values, items = scores.topk(min(k, scores.shape[1]), dim=1)
            top_items.append(items.numpy())
            top_scores.append(values.numpy())
        return np.concatenate(top_items), np.concatenate(top_scores)

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """The constructor's hyperparameters (scikit-learn convention)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write hyperparameters and learned state to ``path`` (a torch file of tensors and primitives)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.name, "params": self.get_params(), "state": self._state()}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Read a model written by :meth:`save` (safely: ``weights_only=True``)."""
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or "model" not in blob:
            raise ValueError(f"{path} is not a model file written by Recommender.save (no 'model' entry)")
        if blob["model"] not in REGISTRY:
            raise ValueError(
                f"{path} holds a model named {blob['model']!r}, which is not registered; known models: "
                f"{sorted(REGISTRY)} (import the module that defines it before loading)"
            )
        model_cls = REGISTRY[blob["model"]]
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise TypeError(f"{path} holds a {blob['model']} model, not {cls.__name__}")
        model = model_cls(**blob["params"])
        model._load_state(blob["state"])
        return model

    def _state(self) -> dict[str, Any]:
        """Learned state as tensors and primitives (for ``weights_only`` loading)."""
        train = self.train_.frame
        return {
            "train_users": torch.tensor(train["user"].to_numpy()),
            "train_items": torch.tensor(train["item"].to_numpy()),
            "train_timestamps": torch.tensor(train["timestamp"].to_numpy()),
            "n_users": self.train_.n_users,
            "n_items": self.train_.n_items,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        import pandas as pd

        frame = pd.DataFrame(
            {
                "user": state["train_users"].numpy(),
                "item": state["train_items"].numpy(),
                "timestamp": state["train_timestamps"].numpy(),
            }
        )
        self.train_ = Interactions.from_frame(frame, state["n_users"], state["n_items"])

    train_: Interactions


def mask_seen(scores: torch.Tensor, users: np.ndarray, history: Interactions, keep: torch.Tensor | None = None) -> None:
    """Set ``scores[b, i] = -inf`` in place for each item ``i`` that ``users[b]`` has in ``history``.

    ``keep`` (B x P item ids, -1 padding) names items to leave unmasked (held-out targets that
    were also consumed before)."""
    ptr = history.user_ptr
    lengths = ptr[users + 1] - ptr[users]
    rows = np.repeat(np.arange(len(users)), lengths)
    event_index = np.repeat(ptr[users], lengths) + segment_offsets(lengths)
    cols = history.items[event_index].astype(np.int64)
    if keep is not None:
        keep_rows, keep_cols = (keep >= 0).nonzero(as_tuple=True)
        keep_items = keep[keep_rows, keep_cols]
        saved = scores[keep_rows, keep_items]
    scores[torch.from_numpy(rows), torch.from_numpy(cols)] = float("-inf")
    if keep is not None:
        scores[keep_rows, keep_items] = saved


def build(name: str, **params: Any) -> Recommender:
    """A recommender by registry name with the given hyperparameters; unknown names or parameters
    give an error listing what exists."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r} has no parameter(s) {unknown}; it accepts {accepted}")
    return cls(**params)
