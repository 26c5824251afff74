"""The slices every method reports: cold-start users and long-tail items.

* Cold-start users: users whose training history is short — at most ``cold_user_max_history`` events,
  or, when that is not given, within the shortest ``cold_user_fraction`` of histories.
* Long-tail items: items outside the most popular ``head_fraction`` (20%) by training interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmboost.data.interactions import Interactions


@dataclass(frozen=True, eq=False)
class Slices:
    """Boolean masks over users (``cold_users``) and items (``long_tail_items``), with their thresholds."""

    cold_users: np.ndarray
    long_tail_items: np.ndarray
    cold_user_max_history: int
    head_min_popularity: int

    def describe(self) -> dict[str, float | int]:
        return {
            "cold_users": int(self.cold_users.sum()),
            "cold_user_max_history": self.cold_user_max_history,
            "long_tail_items": int(self.long_tail_items.sum()),
            "head_min_popularity": self.head_min_popularity,
        }


def make_slices(
    train: Interactions,
    cold_user_max_history: int | None = None,
    cold_user_fraction: float = 0.2,
    head_fraction: float = 0.2,
) -> Slices:
    """Cold-start users and long-tail items, from training interactions only."""
    history = train.user_counts()
    if cold_user_max_history is None:
        active = history[history > 0]
        cold_user_max_history = int(np.quantile(active, cold_user_fraction, method="lower")) if len(active) else 0
    popularity = train.item_counts()
    n_head = int(np.ceil(head_fraction * train.n_items))
    order = np.argsort(-popularity, kind="stable")
    long_tail = np.ones(train.n_items, dtype=bool)
    long_tail[order[:n_head]] = False
    head_min = int(popularity[order[n_head - 1]]) if n_head else 0
    return Slices(history <= cold_user_max_history, long_tail, cold_user_max_history, head_min)
