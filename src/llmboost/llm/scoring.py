"""Pairwise-preference and yes/no scoring on top of any :class:`~llmboost.llm.base.LanguageModel`.

Pairwise: each pair (history, a, b) is asked in both orders — "A: a, B: b" and "A: b, B: a". With
``l1 = log P(A) - log P(B)`` from the first order and ``l2 = log P(B) - log P(A)`` from the second (both the
log-odds that *a* is preferred), ``P(a > b) = sigmoid((l1 + l2) / 2)``. A constant position bias (the model
adding ``beta`` to whichever item is shown as A) enters ``l1`` as ``+beta`` and ``l2`` as ``-beta`` and cancels.

Yes/no: ``P(yes) = sigmoid(log P(Yes) - log P(No))`` — the two answers renormalised.

Requests are sent grouped by history (one user's prompts adjacent), so local backends reuse the shared prompt
prefix and servers with prefix caching hit their cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmboost.llm.base import ChoiceRequest, LanguageModel
from llmboost.llm.prompts import PAIRWISE, YES_NO, PromptTemplate, format_history, get_template

History = str | Sequence[str]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _history_text(history: History, max_history: int | None) -> str:
    return history if isinstance(history, str) else format_history(history, max_items=max_history)


def _template(template: PromptTemplate | str | None, default: PromptTemplate) -> PromptTemplate:
    t = default if template is None else get_template(template)
    if len(t.choices) != 2:
        raise ValueError(f"template {t.key} must have exactly two choices, has {t.choices}")
    return t


def _grouped_order(keys: Sequence[Any]) -> list[int]:
    """Indices ordered so equal keys are adjacent (first appearance order kept)."""
    first: dict[Any, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    return sorted(range(len(keys)), key=lambda i: (first[keys[i]], i))


def _two_choice_logodds(model: LanguageModel, requests: list[ChoiceRequest], keys: Sequence[Any]) -> np.ndarray:
    """``log P(choice 0) - log P(choice 1)`` for each request, sent grouped by ``keys``."""
    order = _grouped_order(keys)
    scored = model.choice_logprobs([requests[i] for i in order])
    out = np.empty(len(requests), dtype=np.float64)
    for pos, i in enumerate(order):
        lp = np.asarray(scored[pos], dtype=np.float64)
        out[i] = lp[0] - lp[1]
    return out


@dataclass(frozen=True)
class PairwiseScores:
    """Per pair: ``prob`` = P(a preferred over b), and the log-odds for *a* from each order
    (``logodds_ab``: a shown as A; ``logodds_ba``: a shown as B). ``position_bias`` = (l1 - l2) / 2 is the
    model's lean towards slot A; ``consistent`` is whether both orders pick the same item."""

    prob: np.ndarray
    logodds_ab: np.ndarray
    logodds_ba: np.ndarray

    @property
    def logodds(self) -> np.ndarray:
        """Combined log-odds that a is preferred: the mean of the two orders."""
        return 0.5 * (self.logodds_ab + self.logodds_ba)

    @property
    def position_bias(self) -> np.ndarray:
        """Half the difference of the two orders' log-odds: the part that follows the slot, not the item."""
        return 0.5 * (self.logodds_ab - self.logodds_ba)

    @property
    def consistent(self) -> np.ndarray:
        """Both orders prefer the same item."""
        return np.sign(self.logodds_ab) == np.sign(self.logodds_ba)


def pairwise_scores(
    model: LanguageModel,
    template: PromptTemplate | str | None,
    requests: Sequence[tuple[History, str, str]],
    *,
    max_history: int | None = 20,
    both_orders: bool = True,
    **fields: str,
) -> PairwiseScores:
    """Score ``(history, item_a, item_b)`` triples with a two-choice template (default :data:`PAIRWISE`).

    ``history`` is a list of titles (oldest first; the last ``max_history`` are shown) or preformatted text;
    extra ``fields`` (e.g. ``item_kind="movies"``) go to the template. With ``both_orders=False`` only the
    a-as-A order is asked and ``logodds_ba`` repeats it (no position-bias correction).
    """
    t = _template(template, PAIRWISE)
    texts = [_history_text(h, max_history) for h, _, _ in requests]
    reqs: list[ChoiceRequest] = []
    keys: list[str] = []
    for text, (_, a, b) in zip(texts, requests, strict=True):
        reqs.append(t.request(model, history=text, item_a=a, item_b=b, **fields))
        keys.append(text)
        if both_orders:
            reqs.append(t.request(model, history=text, item_a=b, item_b=a, **fields))
            keys.append(text)
    lo = _two_choice_logodds(model, reqs, keys)
    if both_orders:
        l_ab, l_ba = lo[0::2], -lo[1::2]
    else:
        l_ab = l_ba = lo
    return PairwiseScores(prob=_sigmoid(0.5 * (l_ab + l_ba)), logodds_ab=l_ab, logodds_ba=l_ba)


def pairwise_preferences(
    model: LanguageModel,
    template: PromptTemplate | str | None,
    requests: Sequence[tuple[History, str, str]],
    **kwargs: Any,
) -> np.ndarray:
    """P(item_a preferred over item_b) for each ``(history, item_a, item_b)``, asking both orders and
    averaging their log-odds (see the module docstring). Keyword arguments as :func:`pairwise_scores`."""
    return pairwise_scores(model, template, requests, **kwargs).prob


def yes_logodds(
    model: LanguageModel,
    template: PromptTemplate | str | None,
    requests: Sequence[tuple[History, str]],
    *,
    max_history: int | None = 20,
    **fields: str,
) -> np.ndarray:
    """``log P(yes) - log P(no)`` for each ``(history, item)`` with a two-choice template (default
    :data:`YES_NO`; its first choice is "yes")."""
    t = _template(template, YES_NO)
    texts = [_history_text(h, max_history) for h, _ in requests]
    reqs = [
        t.request(model, history=text, item=item, **fields) for text, (_, item) in zip(texts, requests, strict=True)
    ]
    return _two_choice_logodds(model, reqs, texts)


def yes_probabilities(
    model: LanguageModel,
    template: PromptTemplate | str | None,
    requests: Sequence[tuple[History, str]],
    **kwargs: Any,
) -> np.ndarray:
    """P(yes) for each ``(history, item)``, the two answers renormalised (see :func:`yes_logodds`)."""
    return _sigmoid(yes_logodds(model, template, requests, **kwargs))


def run_pairwise_job(
    model: LanguageModel,
    store: Any,
    pairs: Mapping[str, tuple[History, str, str]],
    template: PromptTemplate | str | None = None,
    *,
    batch_size: int = 16,
    max_history: int | None = 20,
    progress: bool = True,
    **fields: str,
) -> PairwiseScores:
    """A durable, resumable pairwise job: for each ``key -> (history, a, b)`` the store gets both orders
    (``key|ab``: a shown as A, ``key|ba``: a shown as B; the choices' log-probs) and the combined,
    position-debiased result ``key|p`` = ``[P(a > b), logodds_ab, logodds_ba]``, all under the template's
    fingerprint. Returns the :class:`PairwiseScores` in the order of ``pairs``."""
    from llmboost.llm.jobs import run_job

    t = _template(template, PAIRWISE)
    inputs: dict[str, ChoiceRequest] = {}
    for key, (history, a, b) in pairs.items():
        text = _history_text(history, max_history)
        inputs[f"{key}|ab"] = t.request(model, history=text, item_a=a, item_b=b, **fields)
        inputs[f"{key}|ba"] = t.request(model, history=text, item_a=b, item_b=a, **fields)
    run_job(model, store, t, inputs, batch_size=batch_size, progress=progress)
    got = store.get_many(model.fingerprint, t, list(inputs))
    keys = list(pairs)
    lp_ab = np.array([got[f"{k}|ab"].vector for k in keys]).reshape(len(keys), 2)
    lp_ba = np.array([got[f"{k}|ba"].vector for k in keys]).reshape(len(keys), 2)
    l_ab = lp_ab[:, 0] - lp_ab[:, 1]
    l_ba = lp_ba[:, 1] - lp_ba[:, 0]
    scores = PairwiseScores(prob=_sigmoid(0.5 * (l_ab + l_ba)), logodds_ab=l_ab, logodds_ba=l_ba)
    combined = {f"{k}|p": [scores.prob[i], l_ab[i], l_ba[i]] for i, k in enumerate(keys)}
    store.put_many(model.fingerprint, t, combined, on_conflict="ignore")
    return scores
