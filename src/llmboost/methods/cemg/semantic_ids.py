"""Semantic IDs: each item's RQ-VAE codes plus a final de-duplication level, as a versioned artifact.

Items whose ``levels`` codes coincide get a last code ``0, 1, 2, ...`` (TIGER Sec. 3.1, "handling
collisions"), so every item has a unique ID of ``levels + 1`` codes. :func:`codebook_stats` reports per
level utilisation and entropy and the collision rate before de-duplication, and flags a collapsed
codebook. The table is saved as Parquet (one row per item) plus JSON (format version, fingerprint,
codebook sizes, statistics); loading checks the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class CodebookCollapseError(RuntimeError):
    """The codebooks map too many items to the same codes to give usable IDs."""


def codebook_stats(codes: np.ndarray, codebook_size: int) -> dict[str, Any]:
    """Utilisation (share of codes used) and entropy (bits; and normalised by log2 K) per level, the
    collision rate (share of items whose full code tuple another item shares) and unique-prefix counts.

    ``collapsed`` is true when some level uses a single code, or fewer than 1% of items have a unique
    code tuple while the catalog has over 100 items; ``collapse_reasons`` says which."""
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    per_level = []
    for level in range(levels):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / n
        entropy = float(-(p * np.log2(p)).sum())
        per_level.append(
            {
                "level": level,
                "used": int((counts > 0).sum()),
                "utilisation": float((counts > 0).mean()),
                "entropy_bits": entropy,
                "normalised_entropy": entropy / np.log2(codebook_size),
                "largest_share": float(counts.max() / n),
            }
        )
    _, inverse, group_sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    shared = group_sizes[inverse.reshape(-1)] > 1
    reasons = [f"level {s['level']} uses one code" for s in per_level if s["used"] <= 1 and n > 1]
    unique_share = float((~shared).mean())
    if n > 100 and unique_share < 0.01:
        reasons.append(f"only {unique_share:.2%} of items have a unique code tuple")
    return {
        "items": n,
        "levels": per_level,
        "collision_rate": float(shared.mean()),
        "unique_tuples": len(group_sizes),
        "max_items_per_tuple": int(group_sizes.max()),
        "collapsed": bool(reasons),
        "collapse_reasons": reasons,
    }


def deduplicate(codes: np.ndarray, max_dedup: int = 256) -> tuple[np.ndarray, int]:
    """Append the de-duplication level; returns (n, levels + 1) codes and that level's size.

    Raises :class:`CodebookCollapseError` if more than ``max_dedup`` items share one code tuple."""
    codes = np.asarray(codes, dtype=np.int64)
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    sorted_groups = inverse[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    lengths = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, lengths)
    last = np.empty(len(codes), dtype=np.int64)
    last[order] = rank
    size = int(lengths.max()) if len(lengths) else 1
    if size > max_dedup:
        raise CodebookCollapseError(
            f"collapsed codebook: {size} items share one code tuple (the de-duplication level would need {size} "
            f"codes, more than max_dedup={max_dedup}). Train the RQ-VAE longer, use more codes per level, "
            f"or check that item features are not constant"
        )
    return np.concatenate([codes, last[:, None]], 1), size


@dataclass
class SemanticIDs:
    """The ID table: ``codes[i]`` is item ``i``'s unique ID (``levels + 1`` codes)."""

    codes: np.ndarray  # (n_items, L) int64, unique rows
    sizes: list[int]  # vocabulary size of each level (the last is the de-duplication level)
    item_ids: list[str] | None = None  # the dataset's external item ids, for the artifact
    stats: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        raw_codes: np.ndarray,
        codebook_size: int,
        max_dedup: int = 256,
        item_ids: list[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> SemanticIDs:
        """Statistics on the raw codes, then de-duplication; warns when the codebook is collapsed."""
        stats = codebook_stats(raw_codes, codebook_size)
        if stats["collapsed"]:
            logger.warning("collapsed codebook: %s", "; ".join(stats["collapse_reasons"]))
        codes, dedup = deduplicate(raw_codes, max_dedup)
        stats["dedup_size"] = dedup
        sizes = [codebook_size] * raw_codes.shape[1] + [dedup]
        return cls(codes, sizes, item_ids, stats, dict(meta or {}))

    @property
    def n_items(self) -> int:
        return len(self.codes)

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    def fingerprint(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.codes, dtype=np.int64).tobytes())
        h.update(json.dumps(self.sizes).encode())
        return h.hexdigest()[:16]

    def item_of(self, codes: np.ndarray) -> np.ndarray:
        """Item id of each code row (B, L); -1 where the row is no item's ID."""
        lookup = {tuple(row): i for i, row in enumerate(self.codes.tolist())}
        return np.array([lookup.get(tuple(row), -1) for row in np.asarray(codes).tolist()], dtype=np.int64)

    def save(self, folder: str | Path) -> Path:
        """Write ``semantic_ids.parquet`` and ``semantic_ids.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(self.codes, columns=[f"c{i}" for i in range(self.levels)])
        frame.insert(0, "item", np.arange(self.n_items))
        if self.item_ids is not None:
            frame.insert(1, "item_id", [str(i) for i in self.item_ids])
        frame.to_parquet(folder / "semantic_ids.parquet", index=False)
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint(),
            "sizes": self.sizes,
            "n_items": self.n_items,
            "stats": self.stats,
            "meta": self.meta,
        }
        (folder / "semantic_ids.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SemanticIDs:
        folder = Path(folder)
        meta_path = folder / "semantic_ids.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{folder} holds no semantic ID table (no semantic_ids.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format_version {meta.get('format_version')}")
        frame = pd.read_parquet(folder / "semantic_ids.parquet")
        columns = [c for c in frame.columns if c.startswith("c") and c[1:].isdigit()]
        item_ids = frame["item_id"].tolist() if "item_id" in frame.columns else None
        table = cls(frame[columns].to_numpy(np.int64), list(meta["sizes"]), item_ids, meta["stats"], meta["meta"])
        if table.fingerprint() != meta["fingerprint"]:
            raise ValueError(f"{folder}: ID table does not match its recorded fingerprint (edited or corrupt)")
        return table
