"""Item features (visual feature files, missing modalities, CF embeddings) and the guided fusion layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmboost.methods.cemg.features import FeatureFileError, ItemFeatures, Modality, load_feature_file
from llmboost.methods.cemg.fusion import CollaborativeGuidedFusion, concat_features

IDS = pd.Index([f"B{i:03d}" for i in range(6)])


def test_visual_feature_file_formats_align_to_item_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 4)).astype(np.float32)
    order = [4, 0, 2, 1, 3]  # file rows in another order; item B005 has no row
    frame = pd.DataFrame(values, columns=[f"f{j}" for j in range(4)])
    frame.insert(0, "item_id", [IDS[i] for i in order])
    frame.to_csv(tmp_path / "v.csv", index=False)
    pd.DataFrame({"item_id": frame["item_id"], "embedding": list(values)}).to_parquet(tmp_path / "v.parquet")
    np.savez(tmp_path / "v.npz", ids=np.array(frame["item_id"].tolist(), dtype=str), features=values)
    for name in ("v.csv", "v.parquet", "v.npz"):
        m = load_feature_file(tmp_path / name, IDS)
        assert m.present.tolist() == [True, True, True, True, True, False]  # missing row: modality missing
        np.testing.assert_allclose(m.values[order], values, rtol=1e-6)
        assert not m.values[5].any()
    full = rng.normal(size=(6, 3)).astype(np.float32)
    np.save(tmp_path / "v.npy", full)
    assert load_feature_file(tmp_path / "v.npy", IDS).present.all()


def test_feature_file_errors_name_file_row_and_field(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["B000", "B001", "B000"], "f0": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(FeatureFileError, match=r"dup.csv: duplicate item ids, e.g. 'B000' at data rows \[0, 2\]"):
        load_feature_file(tmp_path / "dup.csv", IDS)
    pd.DataFrame({"item_id": ["X1", "X2"], "f0": [1.0, 2.0]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(FeatureFileError, match="none of its 2 ids"):
        load_feature_file(tmp_path / "other.csv", IDS)
    pd.DataFrame({"item_id": ["B000", "ZZZ"], "f0": [1.0, 2.0]}).to_csv(tmp_path / "some.csv", index=False)
    with pytest.raises(FeatureFileError, match="1 ids are not items of the dataset, first 'ZZZ' at data row 1"):
        load_feature_file(tmp_path / "some.csv", IDS)
    pd.DataFrame({"item_id": ["B000", "B001"], "f0": ["1.0", "oops"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(FeatureFileError, match=r"bad.csv, line 3: field 'f0' = 'oops' is not a number"):
        load_feature_file(tmp_path / "bad.csv", IDS)
    np.save(tmp_path / "short.npy", np.zeros((3, 2)))
    with pytest.raises(FeatureFileError, match="one row per dataset item"):
        load_feature_file(tmp_path / "short.npy", IDS)
    pd.DataFrame({"asin": ["B000"], "f0": [1.0]}).to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(FeatureFileError, match="no id column 'item_id'"):
        load_feature_file(tmp_path / "noid.csv", IDS)


def synthetic_features(n: int = 300, seed: int = 0) -> ItemFeatures:
    """Text, a visual modality missing for a third of the items, and CF embeddings sharing a latent factor."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    features = ItemFeatures(n)
    features.add(Modality("text", latent @ rng.normal(size=(6, 24)) + 0.3 * rng.normal(size=(n, 24)), np.ones(n)))
    visual_present = np.arange(n) % 3 != 0
    features.add(Modality("visual", latent @ rng.normal(size=(6, 12)), visual_present))
    features.collaborative = (latent[:, :3] @ rng.normal(size=(3, 8))).astype(np.float32)
    return features


def test_guided_fusion_keeps_content_aligns_with_cf_and_handles_missing_modality() -> None:
    features = synthetic_features()
    assert features.describe()["visual"]["coverage"] == pytest.approx(2 / 3)
    fusion = CollaborativeGuidedFusion(dim=16, epochs=12, batch_size=64, seed=0).fit(features)
    first, last = fusion.history_[0], fusion.history_[-1]
    assert last["reconstruction"] < first["reconstruction"]
    assert last["alignment"] < first["alignment"]
    z = fusion.transform(features)
    assert z.shape == (300, 16) and np.isfinite(z).all()
    assert set(fusion.modality_weights_) == {"text", "visual"}
    # the attention never puts weight on a modality an item lacks
    import torch

    content, present, collab = fusion._tensors(features)
    _, weights = fusion.network_(content, present, collab)
    assert torch.all(weights[~present["visual"], 1] == 0)
    # unguided ablation uses no CF embedding at all
    unguided = CollaborativeGuidedFusion(dim=16, epochs=2, guided=False).fit(features)
    features.collaborative = None
    assert unguided.transform(features).shape == (300, 16)
    with pytest.raises(ValueError, match="collaborative"):
        CollaborativeGuidedFusion(epochs=1).fit(features)


def test_items_with_no_content_and_no_fusion_concat() -> None:
    features = synthetic_features(60)
    features.content["text"].present[:5] = False
    features.content["visual"].present[:5] = False
    assert features.items_without_content()[:5].all()
    z = CollaborativeGuidedFusion(dim=8, epochs=2).fit(features).transform(features)
    assert np.isfinite(z).all() and np.abs(z[:5]).sum() > 0  # from the collaborative embedding alone
    x = concat_features(features)
    assert x.shape == (60, 24 + 12 + 8)
    empty = ItemFeatures(3)
    with pytest.raises(ValueError, match="at least one content modality"):
        CollaborativeGuidedFusion(epochs=1).fit(empty)
