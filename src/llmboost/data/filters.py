"""Filters on a dataset's interactions: k-core, minimum rating, repeat events."""

from __future__ import annotations

import logging

import numpy as np

from llmboost.data.dataset import Dataset

logger = logging.getLogger(__name__)


def kcore(dataset: Dataset, user_k: int = 5, item_k: int = 5, max_rounds: int = 100) -> Dataset:
    """Keep the largest subset where every user has >= ``user_k`` and every item >= ``item_k`` events.

    Removing sparse items can make users sparse and vice versa, so this iterates to a fixed point.
    """
    events = dataset.interactions
    mask = np.ones(len(events), dtype=bool)
    users, items = events.users, events.items
    for _ in range(max_rounds):
        user_counts = np.bincount(users[mask], minlength=events.n_users)
        item_counts = np.bincount(items[mask], minlength=events.n_items)
        keep = mask & (user_counts[users] >= user_k) & (item_counts[items] >= item_k)
        if keep.sum() == mask.sum():
            break
        mask = keep
    else:
        raise RuntimeError(f"k-core filtering did not converge in {max_rounds} rounds")
    dropped = int(len(events) - mask.sum())
    note = f"{user_k}/{item_k}-core filter dropped {dropped} of {len(events)} events"
    logger.info("%s: %s", dataset.name, note)
    return dataset.with_interactions(events.select(mask), note)


def min_rating(dataset: Dataset, threshold: float) -> Dataset:
    """Keep events rated at least ``threshold`` (treat them as positive feedback)."""
    if not dataset.has_ratings:
        raise ValueError(f"{dataset.name} has no ratings to filter on")
    events = dataset.interactions
    mask = events.frame["rating"].to_numpy() >= threshold
    note = f"rating >= {threshold} kept {int(mask.sum())} of {len(events)} events"
    return dataset.with_interactions(events.select(mask), note)
