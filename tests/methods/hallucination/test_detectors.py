"""Probes, the detector ensemble (selection, abstention threshold, persistence) and bad input."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from llmboost.methods.hallucination.detectors import OneClassError, Probe, auroc
from llmboost.methods.hallucination.ensemble import DetectorEnsemble, abstain_outcomes, tune_threshold
from llmboost.methods.hallucination.features import Features, FeatureShapeError


def synthetic(n: int, seed: int, signal_layer: int = 1) -> tuple[Features, np.ndarray]:
    """3 layers x 2 heads; only layer ``signal_layer`` (hidden state and head 0) carries the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    hidden = rng.normal(size=(n, 3, 8)).astype(np.float32)
    heads = rng.normal(size=(n, 3, 2, 4)).astype(np.float32)
    hidden[:, signal_layer, 0] += 2.5 * (2 * y - 1)
    heads[:, signal_layer, 0, 1] += 2.5 * (2 * y - 1)
    return Features(hidden, heads, rng.normal(size=n), np.full(n, 3)), y


@pytest.fixture(scope="module")
def fitted():
    tr, ytr = synthetic(200, 0)
    se, yse = synthetic(100, 1)
    return DetectorEnsemble(f1_threshold=0.75).fit(tr, ytr, se, yse)


def test_ensemble_keeps_the_informative_detectors(fitted):
    assert set(fitted.kept_) == {("layer", 1), ("head", 1, 0)}
    assert len(fitted.all_keys_) == 3 + 6
    te, yte = synthetic(200, 2)
    assert auroc(yte, fitted.predict_proba(te)) > 0.95


def test_threshold_maximises_truthfulness():
    outcomes = ["hallucinated", "correct", "hallucinated", "hallucinated", "correct", "correct"]
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    t = tune_threshold(outcomes, p)
    assert t == 0.8  # answering the two most reliable gives +2, any lower threshold gives less
    assert abstain_outcomes(outcomes, p, t) == ["missing"] * 4 + ["correct", "correct"]


def test_save_load_roundtrip_and_fingerprint_check(fitted, tmp_path):
    te, _ = synthetic(20, 3)
    fitted.save(tmp_path / "ens", "fp-A", {"abstain_threshold": 0.6})
    again = DetectorEnsemble.load(tmp_path / "ens", "fp-A")
    assert np.allclose(again.predict_proba(te), fitted.predict_proba(te))
    assert again.abstain_threshold_ == 0.6
    with pytest.raises(ValueError, match="fitted on model fp-A, not on fp-B"):
        DetectorEnsemble.load(tmp_path / "ens", "fp-B")
    with pytest.raises(FileNotFoundError, match="not a saved DetectorEnsemble"):
        DetectorEnsemble.load(tmp_path)


def test_bad_input_is_a_clear_error(fitted):
    tr, y = synthetic(50, 4)
    with pytest.raises(OneClassError, match="training split: all 50 labels are correct"):
        DetectorEnsemble().fit(tr, np.ones(50), tr, y)
    with pytest.raises(OneClassError, match="selection split"):
        DetectorEnsemble().fit(tr, y, tr, np.zeros(50))
    other = Features(np.zeros((4, 3, 16), np.float32), np.zeros((4, 3, 2, 4), np.float32), np.zeros(4), np.ones(4))
    with pytest.raises(FeatureShapeError, match=r"'hidden' has per-answer shape \[3, 16\].*trained on \[3, 8\]"):
        fitted.predict_proba(other)
    te, _ = synthetic(3, 5)
    te.n_tokens[1] = 0
    with pytest.raises(ValueError, match="no generated tokens"):
        fitted.predict_proba(te)
    probe = Probe().fit(tr.block(("layer", 0)), y)
    with pytest.raises(ValueError, match="fitted on 8 features"):
        probe.predict_proba(np.zeros((2, 5)))


def test_folded_probe_equals_the_sklearn_pipeline():
    tr, y = synthetic(80, 6)
    probe = Probe().fit(tr.block(("layer", 1)), y)
    X = synthetic(10, 7)[0].block(("layer", 1)).astype(np.float64)
    assert np.allclose(probe.predict_proba(X), probe.pipeline_.predict_proba(X)[:, 1], atol=1e-9)


def _sklearn_mean(ens: DetectorEnsemble, feats: Features) -> np.ndarray:
    """The reference: scikit-learn's own pipelines (scaler -> PCA -> logistic regression), averaged."""
    return np.mean(
        [ens.probes_[k].pipeline_.predict_proba(feats.block(k).astype(np.float64))[:, 1] for k in ens.kept_], axis=0
    )


def test_stacked_inference_equals_the_sklearn_pipelines(fitted):
    te, _ = synthetic(7, 8)
    assert np.allclose(fitted.predict_proba(te), _sklearn_mean(fitted, te), rtol=0, atol=1e-6)
    assert fitted.stacked_.n_kept == len(fitted.kept_) == 2


def test_stacked_inference_matches_sklearn_on_llm_like_features():
    """More dimensions than answers (PCA limited by n), offsets in the hundreds like real hidden states, layers
    and heads both kept; single answer and batch; an ensemble saved before stacking existed."""
    rng = np.random.default_rng(9)
    n, n_layers, d, n_heads, dh = 60, 4, 48, 3, 16
    y = rng.integers(0, 2, n)
    hidden = (rng.normal(size=(n, n_layers, d)) * 3 + rng.normal(scale=300, size=d)).astype(np.float32)
    heads = rng.normal(size=(n, n_layers, n_heads, dh)).astype(np.float32)
    hidden[:, :2, 0] += 12 * y[:, None]  # layers 0, 1 and the heads of layer 2 carry the label
    heads[:, 2, :, 0] += 3 * y[:, None]
    feats = Features(hidden, heads, np.zeros(n), np.full(n, 5))
    ens = DetectorEnsemble(f1_threshold=0.75).fit(feats[:40], y[:40], feats[40:], y[40:])
    assert {k[0] for k in ens.kept_} == {"layer", "head"} and len(ens.kept_) < len(ens.all_keys_)
    for rows in (slice(0, 1), slice(0, n)):
        assert np.allclose(ens.predict_proba(feats[rows]), _sklearn_mean(ens, feats[rows]), rtol=0, atol=1e-6)
    del ens.stacked_  # as loaded from an ensemble saved before stacking: rebuilt on first use
    assert np.allclose(ens.predict_proba(feats), _sklearn_mean(ens, feats), rtol=0, atol=1e-6)
    layers_only = DetectorEnsemble(f1_threshold=0.0, heads=False).fit(feats[:40], y[:40], feats[40:], y[40:])
    assert np.allclose(layers_only.predict_proba(feats), _sklearn_mean(layers_only, feats), rtol=0, atol=1e-6)
