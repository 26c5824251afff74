"""RQ-VAE, semantic-ID table, collapse detection and the trie."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmboost.methods.cemg.rqvae import RQVAE
from llmboost.methods.cemg.semantic_ids import CodebookCollapseError, SemanticIDs, codebook_stats, deduplicate
from llmboost.methods.cemg.trie import SemanticIDTrie


def clustered(n: int = 400, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, d)) * 3
    return (centers[rng.integers(0, 20, n)] + rng.normal(size=(n, d)) * 0.5).astype(np.float32)


def test_rqvae_learns_codes_uses_codebooks_and_ids_are_unique(tmp_path: Path) -> None:
    x = clustered()
    model = RQVAE(levels=3, codebook_size=16, latent_dim=8, hidden=[32], epochs=15, batch_size=128, seed=0).fit(x)
    losses = [h["loss"] for h in model.history_]
    assert losses[-1] < losses[0]
    raw = model.encode(x)
    assert raw.shape == (400, 3) and raw.min() >= 0 and raw.max() < 16
    ids = SemanticIDs.build(raw, 16, max_dedup=64, item_ids=[f"i{i}" for i in range(400)])
    stats = ids.stats
    assert not stats["collapsed"]
    assert all(level["utilisation"] > 0.5 for level in stats["levels"])  # k-means init + restarts use the codes
    assert 0 < stats["levels"][0]["entropy_bits"] <= 4.0
    assert len(np.unique(ids.codes, axis=0)) == 400  # the de-dup level makes every ID unique
    assert ids.codes.shape[1] == 4 and ids.sizes[:3] == [16, 16, 16]
    # versioned artifact round trip; editing the table is detected
    ids.save(tmp_path)
    meta = json.loads((tmp_path / "semantic_ids.json").read_text())
    assert meta["format_version"] == 1 and meta["fingerprint"] == ids.fingerprint()
    again = SemanticIDs.load(tmp_path)
    np.testing.assert_array_equal(again.codes, ids.codes)
    assert again.item_ids[:2] == ["i0", "i1"]
    meta["fingerprint"] = "0" * 16
    (tmp_path / "semantic_ids.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="fingerprint"):
        SemanticIDs.load(tmp_path)


def test_collision_rate_and_dedup_on_duplicate_items() -> None:
    codes = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2], [3, 1, 0]])
    stats = codebook_stats(codes, 4)
    assert stats["collision_rate"] == pytest.approx(0.75)
    deduped, size = deduplicate(codes)
    assert size == 3 and sorted(deduped[:3, 3].tolist()) == [0, 1, 2] and deduped[3, 3] == 0


def test_collapsed_codebook_is_detected_and_refused() -> None:
    x = np.ones((300, 8), dtype=np.float32)  # identical items: nothing to tell apart
    model = RQVAE(levels=2, codebook_size=8, latent_dim=4, hidden=[16], epochs=2, seed=0).fit(x)
    raw = model.encode(x)
    stats = codebook_stats(raw, 8)
    assert stats["collapsed"] and stats["collapse_reasons"]
    with pytest.raises(CodebookCollapseError, match="collapsed codebook"):
        SemanticIDs.build(raw, 8, max_dedup=32)


def test_rqvae_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        RQVAE(epochs=1).fit(np.full((4, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        RQVAE(epochs=1).fit(np.zeros((0, 3), dtype=np.float32))


def test_trie_allows_exactly_the_valid_prefixes() -> None:
    codes = np.array([[0, 1, 0], [0, 2, 0], [1, 1, 0], [0, 1, 1]])
    trie = SemanticIDTrie(codes)
    assert trie.prefix_allowed([]) == [0, 1]
    assert trie.prefix_allowed([0]) == [1, 2]
    assert trie.prefix_allowed([0, 1]) == [0, 1]
    assert trie.prefix_allowed([1, 2]) == []
    node = torch.tensor([0])
    for code in codes[3]:
        node = trie.step(node, torch.tensor([int(code)]))
    assert int(trie.items(node)[0]) == 3
    with pytest.raises(ValueError, match="not unique"):
        SemanticIDTrie(np.array([[0, 1], [0, 1]]))
