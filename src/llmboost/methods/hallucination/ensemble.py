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


class StackedProbes:
    """The kept detectors of an ensemble as stacked weights, evaluated together (arXiv 2510.14330 §3.3).

    Each detector is standardise -> PCA -> logistic regression, affine up to the sigmoid, so it is folded into one
    weight vector ``w`` and bias ``b`` over its feature block (:class:`~.detectors.Probe`); its logit is
    ``x_block @ w + b``. Every layer's hidden state is one block of the feature vector and every head's output
    another, so the weights of all detectors stack into a block-diagonal matrix: ``w_layer[L, d]`` and
    ``w_head[L*H, dh]`` (rows of detectors not kept are zero and skipped). The logits of the whole ensemble are
    one batched matrix product per feature type (``[L, n, d] @ [L, d, 1]``), then sigmoid and the mean over the
    kept detectors: about ``L*d + L*H*dh`` multiply-adds per answer, microseconds for a small LM.
    """

    def __init__(
        self,
        w_layer: np.ndarray,
        b_layer: np.ndarray,
        layer_rows: np.ndarray,
        w_head: np.ndarray | None,
        b_head: np.ndarray | None,
        head_rows: np.ndarray,
    ) -> None:
        self.w_layer = np.ascontiguousarray(w_layer[:, :, None])  # [L, d, 1] for np.matmul
        self.b_layer = b_layer
        self.layer_rows = layer_rows
        self.w_head = None if w_head is None else np.ascontiguousarray(w_head[:, :, None])  # [L*H, dh, 1]
        self.b_head = b_head
        self.head_rows = head_rows
        self.n_kept = len(layer_rows) + len(head_rows)

    def logits(self, hidden: np.ndarray, heads: np.ndarray | None, chunk: int = 4) -> np.ndarray:
        """``[n, K]`` logits of the kept detectors (layers first, then heads, each in feature order); rows go
        ``chunk`` at a time so the float64 copies stay in cache (4 rows of SmolLM2-135M features: 1.1 MB; measured
        fastest per answer among 1-16)."""
        n = hidden.shape[0]
        if n > chunk:
            return np.concatenate(
                [
                    self.logits(hidden[i : i + chunk], None if heads is None else heads[i : i + chunk])
                    for i in range(0, n, chunk)
                ]
            )
        parts = []
        if len(self.layer_rows):
            # [L, n, d] @ [L, d, 1] -> [L, n], in float64 like scikit-learn (hidden states reach the hundreds:
            # float32 products moved logits by 7e-6 on real SmolLM2 features); one cast, then a same-dtype matmul
            x = np.asarray(hidden, dtype=np.float64).transpose(1, 0, 2)
            z = np.matmul(x, self.w_layer)[:, :, 0]
            parts.append((z + self.b_layer[:, None])[self.layer_rows].T)
        if len(self.head_rows):
            assert heads is not None and self.w_head is not None and self.b_head is not None
            flat = np.asarray(heads, dtype=np.float64).reshape(n, -1, heads.shape[-1]).transpose(1, 0, 2)
            z = np.matmul(flat, self.w_head)[:, :, 0]  # [L*H, n, dh] @ [L*H, dh, 1]
            parts.append((z + self.b_head[:, None])[self.head_rows].T)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def predict_proba(self, hidden: np.ndarray, heads: np.ndarray | None) -> np.ndarray:
        """Mean sigmoid of the kept detectors' logits: the reliability score P(correct) per answer."""
        z = self.logits(hidden, heads)
        return np.mean(1.0 / (1.0 + np.exp(-z)), axis=1)


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
        self.stacked_ = self._stack()
        return self

    def detector_proba(self, features: Features, keys: Sequence[Key] | None = None) -> dict[Key, np.ndarray]:
        """P(correct) of each fitted detector (default: every one fitted in this session, else the kept ones)."""
        probes = getattr(self, "_all_probes", None) or self.probes_
        keys = list(keys) if keys is not None else list(probes)
        return {k: probes[k].predict_proba(features.block(k)) for k in keys}

    def predict_proba(self, features: Features) -> np.ndarray:
        """The reliability score (§3.3): mean P(correct) of the kept detectors, all evaluated at once."""
        if not hasattr(self, "probes_"):
            raise RuntimeError("DetectorEnsemble is not fitted")
        features.check_like(self.signature_)
        if len(features) == 0:
            raise ValueError("no answers to score")
        if np.any(features.n_tokens < 1):
            raise ValueError("an answer has no generated tokens: nothing was averaged")
        stacked = getattr(self, "stacked_", None)
        if stacked is None:  # saved before stacking existed
            if not all(hasattr(p, "coef_") for p in self.probes_.values()):  # ... or before folding existed
                return np.mean([p.predict_proba(features.block(k)) for k, p in self.probes_.items()], axis=0)
            stacked = self.stacked_ = self._stack()
        return stacked.predict_proba(features.hidden, features.heads)

    def _stack(self) -> StackedProbes:
        """Stack the folded weights of the kept probes (one affine map each) into block weight matrices."""
        sig = self.signature_
        layers = {int(k[1]): self.probes_[k] for k in self.kept_ if k[0] == "layer"}
        heads = {(int(k[1]), int(k[2])): self.probes_[k] for k in self.kept_ if k[0] == "head"}
        n_layers, dim = sig["hidden"]
        w_layer = np.zeros((n_layers, dim))
        b_layer = np.zeros(n_layers)
        for layer, probe in layers.items():
            w_layer[layer], b_layer[layer] = probe.coef_, probe.intercept_
        w_head = b_head = None
        if "heads" in sig:
            hl, hh, hd = sig["heads"]
            w_head, b_head = np.zeros((hl * hh, hd)), np.zeros(hl * hh)
            for (layer, h), probe in heads.items():
                w_head[layer * hh + h], b_head[layer * hh + h] = probe.coef_, probe.intercept_
        head_rows = sorted(layer * sig["heads"][1] + h for layer, h in heads) if heads else []
        return StackedProbes(
            w_layer,
            b_layer,
            np.asarray(sorted(layers), dtype=np.intp),
            w_head,
            b_head,
            np.asarray(head_rows, dtype=np.intp),
        )

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


__all__ = [
    "DetectorEnsemble",
    "FeatureShapeError",
    "OneClassError",
    "StackedProbes",
    "abstain_outcomes",
    "tune_threshold",
]
