"""The dataset object every method consumes: interactions, id vocabularies and side information.

A :class:`Dataset` holds

* ``interactions`` — (user, item, timestamp[, rating]) events with dense integer ids,
* ``users`` / ``items`` — :class:`Vocabulary` objects mapping those ids to the source's ids,
* ``item_meta`` — one row per item id (``title`` and other text fields; ``image_path`` optional),
* ``user_meta`` — one row per user id (any columns),
* ``log`` — what was dropped or repaired while building it, with counts.

On disk it is a folder of Parquet files plus ``dataset.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llmboost.data.interactions import Interactions
from llmboost.data.vocabulary import Vocabulary

if TYPE_CHECKING:
    from llmboost.data.text import ItemText

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(eq=False)
class Dataset:
    """Interactions with explicit id vocabularies and item/user side information."""

    name: str
    interactions: Interactions
    users: Vocabulary
    items: Vocabulary
    item_meta: pd.DataFrame
    user_meta: pd.DataFrame
    log: list[str] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def has_ratings(self) -> bool:
        return "rating" in self.interactions.frame.columns

    # ------------------------------------------------------------------ building
    @classmethod
    def from_events(
        cls,
        name: str,
        events: pd.DataFrame,
        item_meta: pd.DataFrame | None = None,
        user_meta: pd.DataFrame | None = None,
    ) -> Dataset:
        """Build a dataset from events keyed by the source's own ids.

        ``events`` has columns ``user``, ``item`` (any hashable ids), ``timestamp`` and optionally
        ``rating``; rows are in source order. ``item_meta`` / ``user_meta`` are indexed by the
        source's ids. Documented treatments, each logged with a count:

        * exact duplicate events (same user, item and timestamp) are dropped, keeping the first;
        * items and users that occur only in metadata (no interaction) are dropped;
        * items with interactions but no metadata get empty metadata (title ``""``).
        """
        log: list[str] = []
        events = events.reset_index(drop=True)
        events["user"] = events["user"].astype(str)
        events["item"] = events["item"].astype(str)
        dup = events.duplicated(["user", "item", "timestamp"], keep="first")
        if dup.any():
            log.append(f"dropped {int(dup.sum())} duplicate events (same user, item and timestamp)")
            events = events[~dup].reset_index(drop=True)
        users, user_codes = Vocabulary.from_values(events["user"], "user")
        items, item_codes = Vocabulary.from_values(events["item"], "item")
        frame = pd.DataFrame({"user": user_codes, "item": item_codes, "timestamp": events["timestamp"]})
        if "rating" in events.columns:
            frame["rating"] = events["rating"]
        interactions = Interactions.from_frame(frame, len(users), len(items))
        item_meta = _align_meta(item_meta, items, "item", log)
        if "title" not in item_meta.columns:
            item_meta["title"] = ""
        item_meta["title"] = item_meta["title"].fillna("").astype(str)
        user_meta = _align_meta(user_meta, users, "user", log)
        for line in log:
            logger.info("%s: %s", name, line)
        return cls(name, interactions, users, items, item_meta, user_meta, log)

    def with_interactions(self, events: Interactions, note: str | None = None) -> Dataset:
        """A copy restricted to ``events`` (same id spaces), with unused users and items removed."""
        keep_users = np.flatnonzero(np.bincount(events.users, minlength=self.n_users) > 0)
        keep_items = np.flatnonzero(np.bincount(events.items, minlength=self.n_items) > 0)
        user_map = np.full(self.n_users, -1, dtype=np.int64)
        user_map[keep_users] = np.arange(len(keep_users))
        item_map = np.full(self.n_items, -1, dtype=np.int64)
        item_map[keep_items] = np.arange(len(keep_items))
        frame = events.frame.copy()
        frame["user"] = user_map[frame["user"].to_numpy()]
        frame["item"] = item_map[frame["item"].to_numpy()]
        log = [*self.log, note] if note else list(self.log)
        return Dataset(
            self.name,
            Interactions.from_frame(frame, len(keep_users), len(keep_items)),
            Vocabulary(self.users.ids[keep_users], "user"),
            Vocabulary(self.items.ids[keep_items], "item"),
            self.item_meta.iloc[keep_items].reset_index(drop=True),
            self.user_meta.iloc[keep_users].reset_index(drop=True),
            log,
        )

    def item_text(self, fields: Sequence[str] = ("title",), max_chars: int | None = None, **options: Any) -> ItemText:
        """The items' text (titles with the year for MovieLens, other fields appended); see
        :meth:`llmboost.data.text.ItemText.from_dataset`."""
        from llmboost.data.text import ItemText

        return ItemText.from_dataset(self, fields, max_chars, **options)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """A content hash of the interactions and vocabularies (hex, 16 chars): equal data, equal hash."""
        h = hashlib.sha256()
        frame = self.interactions.frame
        for col in frame.columns:
            h.update(col.encode())
            h.update(np.ascontiguousarray(frame[col].to_numpy()).tobytes())
        for vocab in (self.users, self.items):
            h.update("\x1f".join(vocab.ids).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Summary statistics: sizes, density, history lengths, item popularity."""
        ev = self.interactions
        user_counts = ev.user_counts()
        item_counts = ev.item_counts()
        ts = ev.timestamps
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": len(ev),
            "density": len(ev) / max(1, self.n_users * self.n_items),
            "has_ratings": self.has_ratings,
            "history_length": _quantiles(user_counts),
            "item_popularity": _quantiles(item_counts),
            "timestamp_range": [int(ts.min()), int(ts.max())] if len(ts) else None,
            "item_meta_columns": list(self.item_meta.columns),
            "user_meta_columns": list(self.user_meta.columns),
            "fingerprint": self.fingerprint(),
            "log": list(self.log),
        }

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, interactions={len(self.interactions)})"
        )

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write the dataset as Parquet files plus ``dataset.json`` into folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.interactions.frame.to_parquet(path / "interactions.parquet", index=False)
        items = self.item_meta.copy()
        items.insert(0, "item_id", self.items.ids.to_numpy())
        items.to_parquet(path / "items.parquet", index=False)
        users = self.user_meta.copy()
        users.insert(0, "user_id", self.users.ids.to_numpy())
        users.to_parquet(path / "users.parquet", index=False)
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "fingerprint": self.fingerprint(),
            "log": self.log,
        }
        (path / "dataset.json").write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Read a dataset written by :meth:`save`."""
        path = Path(path)
        meta_file = path / "dataset.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{path} is not a saved llmboost dataset (no dataset.json)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: unsupported format_version {meta.get('format_version')}")
        items = pd.read_parquet(path / "items.parquet")
        users = pd.read_parquet(path / "users.parquet")
        item_vocab = Vocabulary(items.pop("item_id"), "item")
        user_vocab = Vocabulary(users.pop("user_id"), "user")
        frame = pd.read_parquet(path / "interactions.parquet")
        interactions = Interactions.from_frame(frame, len(user_vocab), len(item_vocab))
        ds = cls(meta["name"], interactions, user_vocab, item_vocab, items, users, list(meta["log"]))
        if ds.fingerprint() != meta["fingerprint"]:
            raise ValueError(f"{path}: content does not match its recorded fingerprint (corrupt copy?)")
        return ds


def _align_meta(meta: pd.DataFrame | None, vocab: Vocabulary, kind: str, log: list[str]) -> pd.DataFrame:
    """Reorder ``meta`` (indexed by external id) to the vocabulary; log ids without interactions."""
    if meta is None or meta.empty:
        return pd.DataFrame(index=pd.RangeIndex(len(vocab)))
    meta = meta.copy()
    meta.index = meta.index.astype(str)
    if not meta.index.is_unique:
        dup = meta.index.duplicated(keep="first")
        log.append(f"dropped {int(dup.sum())} duplicate {kind} metadata rows (kept the first)")
        meta = meta[~dup]
    unused = int((~meta.index.isin(vocab.ids)).sum())
    if unused:
        log.append(f"dropped {unused} {kind}s that have metadata but no interactions")
    missing = int((~vocab.ids.isin(meta.index)).sum())
    if missing:
        log.append(f"{missing} {kind}s have interactions but no metadata (left empty)")
    return meta.reindex(vocab.ids).reset_index(drop=True)


def _quantiles(counts: np.ndarray) -> dict[str, float]:
    if len(counts) == 0:
        return {}
    q = np.quantile(counts, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        "min": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "max": float(q[4]),
        "mean": float(counts.mean()),
    }
