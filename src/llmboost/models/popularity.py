"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import torch

from llmboost.data.interactions import Interactions
from llmboost.models.base import Recommender


class MostPopular(Recommender):
    """Scores each item by its number of training interactions (the same for every user)."""

    name = "popular"

    def __init__(self) -> None:
        pass

    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        self.train_ = train
        self.popularity_ = torch.from_numpy(train.item_counts().astype(np.float32))
        return self

    def score(
        self, users: np.ndarray, items: np.ndarray | None = None, history: Interactions | None = None
    ) -> torch.Tensor:
        row = self.popularity_ if items is None else self.popularity_[torch.as_tensor(items)]
        return row.expand(len(users), -1).clone()

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.popularity_ = torch.from_numpy(self.train_.item_counts().astype(np.float32))
