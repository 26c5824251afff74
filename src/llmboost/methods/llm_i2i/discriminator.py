"""LLM-I2I discriminator (arXiv 2512.21595, Sec. 3.3): judge user-item compatibility, drop what scores low.

Two judges, both trained on **real positives vs popularity-matched negatives** (a negative for the event
(u, i) is an item from i's popularity bucket, log2 of its training count, that u never consumed — so the judge
cannot win by popularity alone):

* :class:`HeadDiscriminator` (the CPU variant, scores *every* real and synthetic event): logistic regression on
  frozen sentence-embedding features of (user profile, item): ``[p ∘ e, |p - e|, cos(p, e), has_profile]`` with
  ``p`` the mean embedding of the user's ``profile_items`` items *before* the event (causal) and ``e`` the item's
  embedding. Real training events are scored cross-fitted (users split in two folds; each fold is scored by the
  head trained on the other), so no event is judged by a model that saw it.
* :func:`llm_judge_scores` (the LLM judge): the yes/no prompt (:data:`~llmboost.llm.prompts.YES_NO`), LoRA-tuned
  on yes/no examples from the same positives and negatives; ``P(yes)`` through the score store. On 2 CPU cores
  it scores the held-out pairs (its AUC) and the synthetic events, not the ~10^5 real events (hours).

**Filtering** (:func:`choose_threshold`): events below a score threshold are dropped. The threshold is the
``f``-quantile of the real events' scores, with ``f`` from ``drop_grid`` chosen by validation Recall of an
ItemCF model trained on the filtered data (the test split is never read). A user's first event has no profile
and is never dropped. A fixed ``threshold`` that would reject every real event is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmboost.data.interactions import Interactions, segment_offsets
from llmboost.llm.prompts import YES_NO as _YES_NO


def popularity_buckets(train: Interactions) -> np.ndarray:
    """Each item's bucket: ``floor(log2(1 + training count))``."""
    return np.floor(np.log2(1.0 + train.item_counts())).astype(np.int64)


def matched_negatives(
    users: np.ndarray, items: np.ndarray, train: Interactions, rng: np.random.Generator, tries: int = 20
) -> np.ndarray:
    """For each (user, item), an item of the same popularity bucket the user never consumed in ``train``
    (``-1`` when none found in ``tries`` draws)."""
    bucket = popularity_buckets(train)
    order = np.argsort(bucket, kind="stable")
    starts = np.searchsorted(bucket[order], bucket, side="left")
    ends = np.searchsorted(bucket[order], bucket, side="right")
    seen = np.unique(train.users.astype(np.int64) * train.n_items + train.items)
    out = np.full(len(users), -1, np.int64)
    todo = np.arange(len(users))
    for _ in range(tries):
        if not len(todo):
            break
        it = items[todo]
        width = ends[it] - starts[it]
        draw = order[starts[it] + (rng.random(len(todo)) * width).astype(np.int64)]
        key = users[todo].astype(np.int64) * train.n_items + draw
        at = np.searchsorted(seen, key).clip(max=max(len(seen) - 1, 0))
        clash = (seen[at] == key) if len(seen) else np.zeros(len(key), bool)
        ok = ~clash & (draw != it)
        out[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return out


def event_profiles(events: Interactions, item_vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each event, the mean vector of the same user's previous ``n`` items (causal) and whether it has any."""
    d = item_vectors.shape[1]
    vec = item_vectors[events.items].astype(np.float64)
    cs = np.vstack([np.zeros((1, d)), np.cumsum(vec, axis=0)])
    ptr = events.user_ptr
    lengths = np.diff(ptr)
    pos = segment_offsets(lengths)  # position within the user's sequence
    idx = np.arange(len(events))
    count = np.minimum(pos, n)
    total = cs[idx] - cs[idx - count]
    prof = (total / np.maximum(count, 1)[:, None]).astype(np.float32)
    return prof, count > 0


def features(profiles: np.ndarray, has_profile: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
    """``[p ∘ e, |p - e|, cos(p, e), has_profile]`` per row."""
    pn = profiles / np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
    en = item_vecs / np.maximum(np.linalg.norm(item_vecs, axis=1, keepdims=True), 1e-12)
    cos = (pn * en).sum(1, keepdims=True)
    return np.hstack([pn * en, np.abs(pn - en), cos, has_profile[:, None].astype(np.float32)]).astype(np.float32)


@dataclass
class HeadDiscriminator:
    """Logistic-regression head on frozen sentence-embedding features (the CPU discriminator)."""

    item_vectors: np.ndarray
    profile_items: int = 10
    train_events: int = 20000
    c: float = 1.0
    seed: int = 0

    def fit_score(self, train: Interactions) -> np.ndarray:
        """Train two heads on user folds and return cross-fitted P(compatible) for every training event
        (NaN for a user's first event, which has no profile: never dropped)."""
        rng = np.random.default_rng(self.seed)
        prof, has = event_profiles(train, self.item_vectors, self.profile_items)
        fold = (train.users % 2).astype(np.int64)
        self.heads_: list[Any] = []
        scores = np.full(len(train), np.nan)
        for f in (0, 1):
            head = self._fit(train, prof, has, np.flatnonzero((fold == f) & has), rng)
            self.heads_.append(head)
            other = np.flatnonzero((fold != f) & has)
            if len(other):
                x = features(prof[other], has[other], self.item_vectors[train.items[other]])
                scores[other] = head.predict_proba(x)[:, 1]
        return scores

    def _fit(self, train: Interactions, prof: np.ndarray, has: np.ndarray, rows: np.ndarray, rng: Any) -> Any:
        from sklearn.linear_model import LogisticRegression

        if len(rows) == 0:
            raise ValueError("the discriminator has no training events with a history (every user has one event?)")
        rows = rng.choice(rows, min(len(rows), self.train_events // 2 or 1), replace=False)
        neg = matched_negatives(train.users[rows], train.items[rows], train, rng)
        keep = neg >= 0
        x_pos = features(prof[rows], has[rows], self.item_vectors[train.items[rows]])
        x_neg = features(prof[rows][keep], has[rows][keep], self.item_vectors[neg[keep]])
        x = np.vstack([x_pos, x_neg])
        y = np.concatenate([np.ones(len(x_pos)), np.zeros(len(x_neg))])
        return LogisticRegression(C=self.c, max_iter=300).fit(x, y)

    def score_pairs(self, profiles: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(compatible) for (profile, item) rows, averaged over both heads."""
        has = np.linalg.norm(profiles, axis=1) > 0
        x = features(profiles, has, self.item_vectors[items])
        return np.mean([h.predict_proba(x)[:, 1] for h in self.heads_], axis=0)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability a positive outscores a negative (ties count half)."""
    from scipy.stats import mannwhitneyu

    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def apply_threshold(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Keep mask: score >= threshold; NaN scores (no profile) are kept."""
    return np.isnan(scores) | (scores >= threshold)


def threshold_for(real_scores: np.ndarray, fraction: float) -> float:
    """The ``fraction``-quantile of the scored real events (``-inf`` for 0: keep everything)."""
    scored = real_scores[~np.isnan(real_scores)]
    if fraction <= 0 or not len(scored):
        return float("-inf")
    return float(np.quantile(scored, fraction))


def check_fixed_threshold(real_scores: np.ndarray, threshold: float) -> None:
    """A fixed threshold that rejects every scored real event is an error (nothing would be left to learn from)."""
    scored = real_scores[~np.isnan(real_scores)]
    if len(scored) and not (scored >= threshold).any():
        raise ValueError(
            f"discriminator.threshold={threshold} rejects all {len(scored)} scored real events (max score "
            f"{scored.max():.4f}); lower it, or set discriminator.threshold=null to choose it on validation data"
        )


def choose_threshold(
    real_scores: np.ndarray, grid: list[float], evaluate_fraction: Any
) -> tuple[float, float, dict[float, float]]:
    """Try each drop fraction of ``grid`` (``evaluate_fraction(threshold) -> validation metric``); return the
    best fraction, its threshold and every fraction's metric (ties: the smaller fraction)."""
    results: dict[float, float] = {}
    for f in sorted(set(grid) | {0.0}):
        results[f] = float(evaluate_fraction(threshold_for(real_scores, f)))
    best = max(results, key=lambda f: (results[f], -f))
    return best, threshold_for(real_scores, best), results


JUDGE_JOB = f"llm_i2i-judge:{_YES_NO.fingerprint}"  # the template's wording is part of the key


def judge_examples(
    text: Any, train: Interactions, users: np.ndarray, max_history: int, item_kind: str, rng: np.random.Generator
) -> list[Any]:
    """Yes/no examples: each chosen user's last training item ("Yes") and a popularity-matched negative ("No"),
    after the items before it."""
    from llmboost.llm.finetune import TextExample
    from llmboost.llm.prompts import YES_NO, format_history

    out: list[Any] = []
    last = train.user_ptr[users + 1] - 1
    neg = matched_negatives(users, train.items[last], train, rng)
    yes, no = YES_NO.choices
    for u, pos_event, n in zip(users.tolist(), last.tolist(), neg.tolist(), strict=True):
        start = max(int(train.user_ptr[u]), pos_event - max_history)
        hist = format_history([text[int(i)] for i in train.items[start:pos_event]], max_items=None)
        if not hist:
            continue
        fields = {"history": hist, "item_kind": item_kind}
        out.append(TextExample(YES_NO, {**fields, "item": text[int(train.items[pos_event])]}, yes, "yes_no"))
        if n >= 0:
            out.append(TextExample(YES_NO, {**fields, "item": text[n]}, no, "yes_no"))
    return out


def judge_requests(model: Any, text: Any, histories: list[np.ndarray], items: np.ndarray, item_kind: str) -> dict:
    """Store key -> yes/no request for each (history, item)."""
    import hashlib

    from llmboost.llm.prompts import YES_NO, format_history

    out = {}
    for hist, item in zip(histories, items.tolist(), strict=True):
        fields = {"history": format_history([text[int(i)] for i in hist], max_items=None), "item_kind": item_kind}
        req = YES_NO.request(model, item=text[item], **fields)
        out[hashlib.sha256(f"{req.prompt}\x00{req.choices}".encode()).hexdigest()[:24]] = req
    return out
