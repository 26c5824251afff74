"""Hallucination detectors (arXiv 2510.14330 §3.2): one logistic regression per feature block (a layer's hidden
state or one attention head's output) on standardised inputs reduced by PCA to 95% of the variance, predicting
"the answer is correct"."""

from __future__ import annotations

import numpy as np

from llmboost._optional import require


class OneClassError(ValueError):
    """The labels of a training or selection set hold one class only."""


def check_two_classes(y: np.ndarray, where: str) -> np.ndarray:
    """``y`` as 0/1 ints; :class:`OneClassError` when one class is missing."""
    y = np.asarray(y).astype(int)
    if y.ndim != 1 or not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"{where}: labels must be a 1-d array of 0/1")
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        raise OneClassError(
            f"{where}: all {len(y)} labels are {'correct' if counts[1] else 'incorrect'}; a detector needs both "
            "correct and incorrect answers (use more questions or an easier question set)"
        )
    return y


class Probe:
    """Standardise -> PCA (``pca_variance`` of the variance) -> logistic regression (``C``), sklearn style."""

    def __init__(self, pca_variance: float | None = 0.95, C: float = 1.0, max_iter: int = 500, seed: int = 0) -> None:
        self.pca_variance = pca_variance
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> Probe:
        """Fit on ``X[n, dim]`` and 0/1 labels ``y`` (1 = correct)."""
        require("sklearn", "halluc")
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be [n, dim] with n = len(y) = {len(y)}, got {X.shape}")
        y = check_two_classes(y, "Probe.fit")
        steps = [StandardScaler()]
        if self.pca_variance is not None and X.shape[1] > 1:
            n_max = min(X.shape) - 1
            steps.append(
                PCA(n_components=self.pca_variance if n_max > 1 else 1, svd_solver="full", random_state=self.seed)
            )
        steps.append(LogisticRegression(C=self.C, max_iter=self.max_iter))
        self.pipeline_ = make_pipeline(*steps)
        self.pipeline_.fit(X, y)
        self.n_features_in_ = X.shape[1]
        # the whole pipeline is affine: fold it into one weight vector for microsecond inference
        scaler, lr = self.pipeline_[0], self.pipeline_[-1]
        w = lr.coef_[0].copy()
        b = float(lr.intercept_[0])
        if len(self.pipeline_) == 3:
            pca = self.pipeline_[1]
            b -= float(pca.mean_ @ pca.components_.T @ w)
            w = pca.components_.T @ w
        w = w / scaler.scale_
        b -= float(scaler.mean_ @ w)
        self.coef_ = w.astype(np.float64)
        self.intercept_ = b
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(correct) per row."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"probe was fitted on {self.n_features_in_} features, got array of shape {X.shape}")
        if not hasattr(self, "coef_"):  # saved before the folded form existed
            return self.pipeline_.predict_proba(X)[:, 1]
        return 1.0 / (1.0 + np.exp(-(X @ self.coef_ + self.intercept_)))


def f1_correct(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of the class "answer is correct" when predicting correct at ``p >= threshold``."""
    pred = p >= threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (NaN with one class)."""
    y = np.asarray(y).astype(int)
    if y.min() == y.max():
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(p)
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
