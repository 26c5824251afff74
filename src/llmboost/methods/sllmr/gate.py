"""The reliability gate (Sec. 3.3): a small network that predicts whether the teacher is right on a pair.

Features come from :data:`FEATURES`, a registry of ``name -> function(FeatureContext) -> array``: register a
new one with :func:`register_feature` (e.g. an LLM internal-state reliability score) and name it in
``gate.features``; the gate itself never changes.

Training signal: labelled pairs (the user's validation item against the other candidates; never test),
label = the teacher preferred the true item. The gate has **its own objective** (binary cross-entropy on
those labels) and is fitted before the backbone trains; during backbone training its outputs are constants
(computed under ``no_grad``), so the recommendation loss cannot lower itself by closing the gate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from llmboost.data.interactions import Interactions
from llmboost.methods.sllmr.candidates import Pairs
from llmboost.methods.sllmr.teachers import Judgements


@dataclass
class FeatureContext:
    """What features may read: the pairs, the teacher's judgements, training data and the reference
    backbone's score difference ``s_i - s_j`` (``margin``) and its MC-dropout standard deviation."""

    pairs: Pairs
    judgements: Judgements
    train: Interactions
    margin: np.ndarray
    mc_std: np.ndarray


FeatureFn = Callable[[FeatureContext], np.ndarray]
FEATURES: dict[str, FeatureFn] = {}
"""The feature registry: name -> function of a :class:`FeatureContext` returning one value per pair."""


def register_feature(name: str) -> Callable[[FeatureFn], FeatureFn]:
    """Decorator adding a gate feature under ``name``."""

    def wrap(fn: FeatureFn) -> FeatureFn:
        FEATURES[name] = fn
        return fn

    return wrap


@register_feature("history_length")
def _history_length(ctx: FeatureContext) -> np.ndarray:
    """log(1 + number of the user's training events)."""
    return np.log1p(ctx.train.user_counts()[ctx.pairs.user]).astype(np.float64)


@register_feature("popularity_i")
def _popularity_i(ctx: FeatureContext) -> np.ndarray:
    """log(1 + training interactions of item i)."""
    return np.log1p(ctx.train.item_counts()[ctx.pairs.item_i]).astype(np.float64)


@register_feature("popularity_j")
def _popularity_j(ctx: FeatureContext) -> np.ndarray:
    """log(1 + training interactions of item j)."""
    return np.log1p(ctx.train.item_counts()[ctx.pairs.item_j]).astype(np.float64)


@register_feature("margin_uncertainty")
def _margin_uncertainty(ctx: FeatureContext) -> np.ndarray:
    """Backbone margin uncertainty ``1 - |2 sigmoid(s_i - s_j) - 1|``: 1 when the backbone cannot tell the
    items apart, 0 when it is sure."""
    return 1.0 - np.abs(np.tanh(0.5 * ctx.margin))


@register_feature("mc_dropout_uncertainty")
def _mc_dropout(ctx: FeatureContext) -> np.ndarray:
    """Std of ``s_i - s_j`` over stochastic passes with dropout on the user representation (MC dropout)."""
    return ctx.mc_std


@register_feature("llm_confidence")
def _llm_confidence(ctx: FeatureContext) -> np.ndarray:
    """The teacher's confidence ``|p_ij - 0.5|``."""
    return np.abs(ctx.judgements.prob - 0.5)


@register_feature("order_agreement")
def _order_agreement(ctx: FeatureContext) -> np.ndarray:
    """1 when both prompt orders pick the same item (pointwise teachers: 1)."""
    return ctx.judgements.agreement


@register_feature("backbone_agreement")
def _backbone_agreement(ctx: FeatureContext) -> np.ndarray:
    """1 when the teacher and the reference backbone prefer the same item (not in the default set)."""
    return ((ctx.judgements.prob > 0.5) == (ctx.margin > 0)).astype(np.float64)


def feature_matrix(ctx: FeatureContext, names: Sequence[str]) -> np.ndarray:
    """Pairs x features, in the order of ``names``; unknown names raise listing the registry."""
    cols = []
    for name in names:
        if name not in FEATURES:
            raise KeyError(f"gate feature {name!r} is not registered; registered: {sorted(FEATURES)}")
        col = np.asarray(FEATURES[name](ctx), dtype=np.float64)
        if col.shape != (len(ctx.pairs),):
            raise ValueError(f"gate feature {name!r} returned shape {col.shape}, expected ({len(ctx.pairs)},)")
        if not np.isfinite(col).all():
            raise ValueError(f"gate feature {name!r} has NaN/inf values")
        cols.append(col)
    return np.stack(cols, axis=1) if cols else np.zeros((len(ctx.pairs), 0))


class Gate(nn.Module):
    """``g(x) = sigmoid(MLP(standardized x))``: one hidden layer."""

    def __init__(self, n_features: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((x - self.mean) / self.std).squeeze(-1))


class GateModel:
    """Fits a :class:`Gate` to predict teacher correctness (its own BCE objective); scikit-learn style."""

    def __init__(
        self, hidden: int = 16, epochs: int = 300, lr: float = 0.01, weight_decay: float = 1e-4, seed: int = 0
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> Self:
        """Full-batch Adam on BCE(gate(x), y); classes are re-weighted to balance."""
        if len(x) == 0:
            raise ValueError("no labelled pairs to train the gate on")
        torch.manual_seed(self.seed)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        self.gate_ = Gate(x.shape[1], self.hidden)
        self.gate_.mean.copy_(xt.mean(0))
        self.gate_.std.copy_(xt.std(0).clamp(min=1e-6) if len(xt) > 1 else torch.ones(x.shape[1]))
        pos = float(yt.mean())
        w = torch.where(yt > 0.5, 0.5 / max(pos, 1e-3), 0.5 / max(1 - pos, 1e-3))
        opt = torch.optim.Adam(self.gate_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.epochs):
            g = self.gate_(xt).clamp(1e-6, 1 - 1e-6)
            loss = -(w * (yt * g.log() + (1 - yt) * (1 - g).log())).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.gate_.eval()
        self.train_loss_ = float(loss.detach())
        return self

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Gate activation in [0, 1] per row (no gradient: a constant for the backbone's loss)."""
        return self.gate_(torch.as_tensor(x, dtype=torch.float32)).numpy().astype(np.float64)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (ties count 1/2); NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
