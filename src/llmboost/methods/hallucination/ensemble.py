"""The ensemble of hallucination detectors and the abstention rule (arXiv 2510.14330 §3.3-3.4).

:class:`DetectorEnsemble` fits one :class:`~.detectors.Probe` per feature block on a training split, keeps those
whose F1 for "the answer is correct" on a separate *selection* split exceeds ``f1_threshold`` (paper: 0.5), and
averages the kept detectors' probabilities: the **reliability score** P(correct) of any new generation of the same
model. :func:`tune_threshold` picks the abstention threshold (paper: 0.65) that maximises CRAG-MM truthfulness
on a *calibration* split; below it the system answers "I don't know". Saved with joblib plus a JSON manifest
holding the model fingerprint and feature shapes, both checked on load / at inference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from llmboost.methods.hallucination.detectors import OneClassError, Probe, auroc, check_two_classes, f1_correct
from llmboost.methods.hallucination.features import Features, FeatureShapeError, Key
from llmboost.methods.hallucination.labels import SCORE

FORMAT = "llmboost-halluc-ensemble/1"


class DetectorEnsemble:
    """Per-layer and per-head probes, kept by selection F1, averaged (sklearn style: learned state ends in ``_``)."""

    def __init__(
        self,
        f1_threshold: float = 0.5,
        pca_variance: float | None = 0.95,
        C: float = 1.0,
        layers: bool = True,
        heads: bool = True,
        min_kept: int = 1,
        seed: int = 0,
    ) -> None:
        self.f1_threshold = f1_threshold
        self.pca_variance = pca_variance
        self.C = C
        self.layers = layers
        self.heads = heads
        self.min_kept = min_kept
        self.seed = seed

    def fit(
        self, train: Features, y_train: np.ndarray, select: Features, y_select: np.ndarray, progress: bool = False
    ) -> DetectorEnsemble:
        """Fit every probe on ``train``, score it on ``select``, keep those with F1 > ``f1_threshold``
        (at least ``min_kept``: the best ones by F1 when fewer pass)."""
        y_train = check_two_classes(y_train, "training split")
        y_select = check_two_classes(y_select, "selection split")
        self.signature_ = train.shape_signature
        select.check_like(self.signature_)
        keys = train.keys(self.layers, self.heads)
        if not keys:
            raise ValueError("no feature blocks to fit (layers=False and heads=False, or no head outputs)")
        probes: dict[Key, Probe] = {}
        f1: dict[Key, float] = {}
        sel_auc: dict[Key, float] = {}
        for key in tqdm(keys, desc="detectors", disable=not progress, leave=False):
            probe = Probe(self.pca_variance, self.C, seed=self.seed).fit(train.block(key), y_train)
            p = probe.predict_proba(select.block(key))
            probes[key] = probe
            f1[key] = f1_correct(y_select, p)
            sel_auc[key] = auroc(y_select, p)
        self.all_keys_ = keys
        self.selection_f1_ = f1
        self.selection_auroc_ = sel_auc
        kept = [k for k in keys if f1[k] > self.f1_threshold]
        if len(kept) < self.min_kept:
            kept = sorted(keys, key=lambda k: -f1[k])[: self.min_kept]
        self.kept_ = kept
        self.probes_ = {k: probes[k] for k in kept}
        self.best_key_ = max(keys, key=lambda k: (f1[k], sel_auc[k]))
        self.best_probe_ = probes[self.best_key_]
        self._all_probes = probes  # for per-detector evaluation; not saved
        return self

    def detector_proba(self, features: Features, keys: Sequence[Key] | None = None) -> dict[Key, np.ndarray]:
        """P(correct) of each fitted detector (default: every one fitted in this session, else the kept ones)."""
        probes = getattr(self, "_all_probes", None) or self.probes_
        keys = list(keys) if keys is not None else list(probes)
        return {k: probes[k].predict_proba(features.block(k)) for k in keys}

    def predict_proba(self, features: Features) -> np.ndarray:
        """The reliability score: mean P(correct) of the kept detectors."""
        if not hasattr(self, "probes_"):
            raise RuntimeError("DetectorEnsemble is not fitted")
        features.check_like(self.signature_)
        if len(features) == 0:
            raise ValueError("no answers to score")
        if np.any(features.n_tokens < 1):
            raise ValueError("an answer has no generated tokens: nothing was averaged")
        if all(hasattr(p, "coef_") for p in self.probes_.values()):
            return self._stacked_proba(features)
        return np.mean([p.predict_proba(features.block(k)) for k, p in self.probes_.items()], axis=0)

    def _stacked_proba(self, features: Features) -> np.ndarray:
        """All kept probes at once: one gather + one batched dot per feature type (the probes are affine)."""
        logits = []
        layer_keys = [k for k in self.probes_ if k[0] == "layer"]
        head_keys = [k for k in self.probes_ if k[0] == "head"]
        if layer_keys:
            W = np.stack([self.probes_[k].coef_ for k in layer_keys])  # [K, d]
            b = np.asarray([self.probes_[k].intercept_ for k in layer_keys])
            X = features.hidden[:, [int(k[1]) for k in layer_keys]].astype(np.float64)  # [n, K, d]
            logits.append(np.einsum("nkd,kd->nk", X, W) + b)
        if head_keys:
            W = np.stack([self.probes_[k].coef_ for k in head_keys])
            b = np.asarray([self.probes_[k].intercept_ for k in head_keys])
            assert features.heads is not None
            X = features.heads[:, [int(k[1]) for k in head_keys], [int(k[2]) for k in head_keys]].astype(np.float64)
            logits.append(np.einsum("nkd,kd->nk", X, W) + b)
        z = np.concatenate(logits, axis=1)
        return np.mean(1.0 / (1.0 + np.exp(-z)), axis=1)

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | Path, model_fingerprint: str, extra: dict[str, Any] | None = None) -> Path:
        """Write ``<path>/ensemble.joblib`` and ``<path>/ensemble.json`` (format, model fingerprint, shapes)."""
        import joblib

        if not hasattr(self, "probes_"):
            raise RuntimeError("DetectorEnsemble is not fitted")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in self.__dict__.items() if k != "_all_probes"}
        joblib.dump(state, path / "ensemble.joblib")
        manifest = {
            "format": FORMAT,
            "model_fingerprint": model_fingerprint,
            "signature": self.signature_,
            "kept": [list(k) for k in self.kept_],
            "params": {k: getattr(self, k) for k in ("f1_threshold", "pca_variance", "C", "layers", "heads")},
            **(extra or {}),
        }
        (path / "ensemble.json").write_text(json.dumps(manifest, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, model_fingerprint: str | None = None) -> DetectorEnsemble:
        """Read what :meth:`save` wrote; with ``model_fingerprint``, refuse an ensemble fitted on another model."""
        import joblib

        path = Path(path)
        manifest_path = path / "ensemble.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path}: no ensemble.json (not a saved DetectorEnsemble)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        if model_fingerprint is not None and manifest["model_fingerprint"] != model_fingerprint:
            raise ValueError(
                f"{path}: fitted on model {manifest['model_fingerprint']}, not on {model_fingerprint}; detectors only "
                "apply to the model whose activations they were trained on"
            )
        obj = cls.__new__(cls)
        obj.__dict__.update(joblib.load(path / "ensemble.joblib"))
        obj.model_fingerprint_ = manifest["model_fingerprint"]
        obj.abstain_threshold_ = manifest.get("abstain_threshold")
        return obj


def abstain_outcomes(outcomes: Sequence[str], p: np.ndarray, threshold: float) -> list[str]:
    """Outcomes after answering "I don't know" wherever ``p < threshold``."""
    return [o if pi >= threshold else "missing" for o, pi in zip(outcomes, p, strict=True)]


def tune_threshold(outcomes: Sequence[str], p: np.ndarray) -> float:
    """The threshold maximising truthfulness of :func:`abstain_outcomes` on a calibration split (ties: the
    lowest threshold, i.e. answer more). Candidates: every distinct score, and "always answer"."""
    if len(outcomes) != len(p):
        raise ValueError("outcomes and scores differ in length")
    if not len(p):
        raise ValueError("empty calibration split")
    score = np.asarray([SCORE[o] for o in outcomes], dtype=float)
    order = np.argsort(p)
    ps = np.asarray(p)[order]
    s = score[order]
    # threshold at ps[i] answers items i..n-1: gain = suffix sum of scores
    suffix = np.concatenate([np.cumsum(s[::-1])[::-1], [0.0]])
    candidates = np.concatenate([ps, [np.inf]])
    best = int(np.argmax(suffix))  # first maximum = lowest threshold
    return float(candidates[best]) if best < len(ps) else float(ps[-1] + 1e-9)


__all__ = ["DetectorEnsemble", "FeatureShapeError", "OneClassError", "abstain_outcomes", "tune_threshold"]
