"""LLM-I2I fusion (arXiv 2512.21595, Sec. 3.4): filtered real + filtered synthetic events train the unchanged
I2I models; synthetic events may carry a weight (``generator.weight``) that the models apply per event."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmboost.data.interactions import Interactions
from llmboost.models import Item2Vec, ItemCF, Swing
from llmboost.models.neighbors import ItemToItemRecommender


def fuse(
    real: Interactions, keep_real: np.ndarray | None, synthetic: pd.DataFrame | None, synthetic_weight: float = 1.0
) -> tuple[Interactions, np.ndarray | None]:
    """The fused training events (sorted by user and time; a synthetic event after the real ones at the same
    timestamp) and per-event weights (None when every weight is 1)."""
    frame = real.frame[["user", "item", "timestamp"]]
    if keep_real is not None:
        frame = frame[keep_real]
    frame = frame.assign(weight=np.float32(1.0))
    if synthetic is not None and len(synthetic):
        syn = synthetic[["user", "item", "timestamp"]].assign(weight=np.float32(synthetic_weight))
        frame = pd.concat([frame, syn], ignore_index=True)
    if len(frame) == 0:
        raise ValueError("fusion left no training events (the discriminator dropped everything)")
    frame = frame.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    events = Interactions.from_frame(frame[["user", "item", "timestamp"]], real.n_users, real.n_items)
    weights = frame["weight"].to_numpy(np.float32)
    return events, (None if np.all(weights == 1.0) else weights)


def build_model(name: str, k: int, last_n: int, seed: int, options: dict) -> ItemToItemRecommender:
    """One of the I2I models with the experiment's settings (no progress bars)."""
    if name == "itemcf":
        return ItemCF(k=k, last_n=last_n, iuf=options.get("itemcf_iuf", True), progress=False)
    if name == "swing":
        return Swing(
            k=k,
            last_n=last_n,
            alpha=options.get("swing_alpha", 1.0),
            max_item_users=options.get("swing_max_item_users"),
            seed=seed,
            progress=False,
        )
    if name == "item2vec":
        return Item2Vec(
            k=k,
            last_n=last_n,
            dim=options.get("item2vec_dim", 32),
            epochs=options.get("item2vec_epochs", 3),
            seed=seed,
            progress=False,
        )
    raise ValueError(f"unknown I2I model {name!r}; choose from ['itemcf', 'swing', 'item2vec']")
