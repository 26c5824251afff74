"""LLM-I2I generator (arXiv 2512.21595, Sec. 3.2): synthesize user-item interactions for long-tail items.

1. **Long-tail targets**: items outside the top 20 % by training popularity (``make_slices``) that have at
   least one training event (an item nobody consumed has no collaborative signal to extend and, in
   leave-one-out splits, never appears as a target). A pool of ``tail_pool`` such items is drawn once (so the
   LLM scores are shared by all seeds); each seed boosts a seeded sample of ``tail_items`` of them.
2. **Cheap pre-selection** (scoring all user x tail-item pairs is ~1.2 M LLM calls on MovieLens-100K): for each
   target item, every user who has not consumed it gets ``text_weight * rank(text) + (1 - text_weight) *
   rank(co-occurrence)``, with *text* = cosine between the item's sentence embedding and the mean embedding of
   the user's last items, and *co-occurrence* = the user's ItemCF score for the item (neighbours of their last
   items); ranks are percentiles over users. The top ``candidates_per_item`` users go to the LLM.
3. **LLM ranking**: the generator LLM — fine-tuned with LoRA on "history -> next item" text of a recorded user
   subset (``mode="finetune"``), or the base model (``"zero_shot"``) — gives ``log P(title | user's history)``
   (the :data:`~llmboost.llm.prompts.NEXT_ITEM` prompt). For a fixed item the title's prior cancels, so the
   users are ranked by this likelihood; the best ``per_item`` become synthetic events, at most ``budget``.
   Every score goes through the score store (resumable, keyed by model, template fingerprint and prompt).
4. **Placement**: a synthetic event is appended at the end of the user's training sequence (timestamp = their
   last training timestamp; ties keep it after the real events). The LLM judged it as the *next* item after
   exactly that history, so the end is the one position consistent with how it was produced; for item2vec it
   means the item's context is the user's most recent items. Synthetic events only train the I2I models:
   serving still reads the user's real history.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmboost.data.interactions import Interactions, segment_offsets
from llmboost.data.text import ItemText
from llmboost.llm.base import ChoiceRequest
from llmboost.llm.prompts import NEXT_ITEM, format_history

logger = logging.getLogger(__name__)

LIKELIHOOD_JOB = f"llm_i2i-generator:{NEXT_ITEM.fingerprint}"  # the template's wording is part of the key


def last_items(train: Interactions, users: np.ndarray, n: int) -> list[np.ndarray]:
    """Each user's last ``n`` training items (oldest first)."""
    ptr = train.user_ptr
    return [train.items[max(ptr[u], ptr[u + 1] - n) : ptr[u + 1]] for u in users]


def user_profiles(train: Interactions, item_vectors: np.ndarray, n: int) -> np.ndarray:
    """(n_users x d): the unit-normalised mean vector of each user's last ``n`` training items (0 for none)."""
    ptr = train.user_ptr
    lengths = np.minimum(np.diff(ptr), n)
    users = np.repeat(np.arange(train.n_users), lengths)
    idx = np.repeat(ptr[1:] - lengths, lengths) + segment_offsets(lengths)
    out = np.zeros((train.n_users, item_vectors.shape[1]), np.float32)
    np.add.at(out, users, item_vectors[train.items[idx]])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def tail_pool(tail_mask: np.ndarray, train: Interactions, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` long-tail items with at least one training event, a seeded sample (sorted ids)."""
    counts = train.item_counts()
    eligible = np.flatnonzero(tail_mask & (counts > 0))
    if len(eligible) <= size:
        return eligible
    return np.sort(np.random.default_rng(seed).choice(eligible, size, replace=False))


def _percentile_ranks(x: np.ndarray) -> np.ndarray:
    """Column-wise ranks scaled to [0, 1] (ties share order by position)."""
    order = np.argsort(x, axis=0, kind="stable")
    ranks = np.empty_like(order, dtype=np.float32)
    np.put_along_axis(ranks, order, np.arange(len(x), dtype=np.float32)[:, None], axis=0)
    return ranks / max(1, len(x) - 1)


def preselect(
    train: Interactions,
    items: np.ndarray,
    profiles: np.ndarray,
    item_vectors: np.ndarray,
    cooc: Any,
    per_item: int,
    text_weight: float,
    batch_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """(len(items) x per_item) candidate users (``-1`` pad) and their pre-selection scores; never a user who
    already consumed the item, never a user without training events."""
    users = train.active_users()
    if len(items) == 0 or len(users) == 0 or per_item == 0:
        return np.full((len(items), per_item), -1, np.int64), np.zeros((len(items), per_item), np.float32)
    text = profiles[users] @ item_vectors[items].T
    co = np.concatenate(
        [cooc.neighbor_scores(users[s : s + batch_size])[:, items] for s in range(0, len(users), batch_size)]
    )
    score = text_weight * _percentile_ranks(text) + (1 - text_weight) * _percentile_ranks(co)
    seen = train.csr()[users][:, items].toarray() > 0
    score[seen] = -np.inf
    k = min(per_item, len(users))
    top = np.argsort(-score, axis=0, kind="stable")[:k].T  # items x k
    vals = np.take_along_axis(score.T, top, axis=1)
    cand = np.where(np.isfinite(vals), users[top], -1)
    if k < per_item:
        cand = np.pad(cand, ((0, 0), (0, per_item - k)), constant_values=-1)
        vals = np.pad(vals, ((0, 0), (0, per_item - k)), constant_values=-np.inf)
    return cand.astype(np.int64), vals.astype(np.float32)


def history_prompt_fields(text: ItemText, history: np.ndarray, item_kind: str) -> dict[str, str]:
    return {"history": format_history([text[int(i)] for i in history], max_items=None), "item_kind": item_kind}


def likelihood_requests(
    model: Any, text: ItemText, train: Interactions, pairs: np.ndarray, max_history: int, item_kind: str
) -> dict[str, ChoiceRequest]:
    """Store key -> request scoring ``log P(title | history)`` for each (user, item) row of ``pairs``; the key
    holds the user, item and a hash of the prompt, so a changed history or text is a new key."""
    out: dict[str, ChoiceRequest] = {}
    histories = last_items(train, pairs[:, 0], max_history)
    for (u, i), hist in zip(pairs.tolist(), histories, strict=True):
        prompt = NEXT_ITEM.prompt(model, **history_prompt_fields(text, hist, item_kind))
        answer = NEXT_ITEM.answer_text(text[i], model)
        digest = hashlib.sha256(f"{prompt}\x00{answer}".encode()).hexdigest()[:16]
        out[f"u{u}:i{i}:{digest}"] = ChoiceRequest(prompt, (answer,))
    return out


def finetune_examples(
    text: ItemText, train: Interactions, users: int, last_n: int, max_history: int, item_kind: str, seed: int
) -> tuple[list[Any], np.ndarray]:
    """ "history -> next item" examples from a seeded subset of users with >= 4 training events; returns the
    examples and the users used (recorded in the results)."""
    from llmboost.llm.finetune import next_item_examples

    eligible = np.flatnonzero(train.user_counts() >= 4)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, min(users, len(eligible)), replace=False)) if len(eligible) else eligible
    examples: list[Any] = []
    for u in chosen:
        titles = [text[int(i)] for i in train.history(int(u))]
        examples += next_item_examples(
            titles, max_history=max_history, min_history=3, last_n=last_n, item_kind=item_kind
        )
    return examples, chosen


@dataclass
class Synthesis:
    """Synthetic events of one seed and what produced them."""

    events: pd.DataFrame  # user, item, timestamp, llm_score, preselect_score
    targets: np.ndarray  # the long-tail items boosted
    notes: list[str] = field(default_factory=list)

    def interactions(self, n_users: int, n_items: int) -> Interactions:
        return Interactions.from_frame(self.events[["user", "item", "timestamp"]], n_users, n_items)


def select_synthetic(
    train: Interactions,
    targets: np.ndarray,
    candidates: np.ndarray,
    pre_scores: np.ndarray,
    llm_scores: np.ndarray,
    per_item: int,
    budget: int,
) -> Synthesis:
    """The best ``per_item`` candidates per target by LLM score, then at most ``budget`` events overall (the
    most confident first: highest LLM log-likelihood minus the item's mean over its candidates)."""
    notes: list[str] = []
    if len(targets) == 0:
        notes.append("no long-tail targets: nothing synthesized")
    rows = []
    for t_idx, item in enumerate(targets):
        valid = candidates[t_idx] >= 0
        if not valid.any():
            continue
        users, llm, pre = candidates[t_idx][valid], llm_scores[t_idx][valid], pre_scores[t_idx][valid]
        centred = llm - llm.mean()
        order = np.argsort(-llm, kind="stable")[:per_item]
        for j in order:
            rows.append((int(users[j]), int(item), float(llm[j]), float(pre[j]), float(centred[j])))
    possible = len(rows)
    if budget > possible:
        notes.append(f"budget {budget} larger than possible: {possible} synthetic events ({len(targets)} targets)")
    frame = pd.DataFrame(rows, columns=["user", "item", "llm_score", "preselect_score", "confidence"])
    frame = frame.sort_values("confidence", ascending=False, kind="stable").head(budget)
    last_ts = np.zeros(train.n_users, np.int64)
    ptr = train.user_ptr
    has = np.diff(ptr) > 0
    last_ts[has] = train.timestamps[ptr[1:][has] - 1]
    frame["timestamp"] = last_ts[frame["user"].to_numpy()] if len(frame) else np.zeros(0, np.int64)
    frame = frame.sort_values(["user", "item"], kind="stable").reset_index(drop=True)
    return Synthesis(frame[["user", "item", "timestamp", "llm_score", "preselect_score"]], targets, notes)


def hit_rate(events: pd.DataFrame, future: Interactions) -> dict[str, float]:
    """Share of synthetic (user, item) pairs that really happen later (in ``future``: validation + test)."""
    if len(events) == 0:
        return {"events": 0.0, "hits": 0.0, "hit_rate": float("nan")}
    key_future = set((future.users.astype(np.int64) * future.n_items + future.items).tolist())
    keys = events["user"].to_numpy(np.int64) * future.n_items + events["item"].to_numpy(np.int64)
    hits = float(sum(k in key_future for k in keys.tolist()))
    return {"events": float(len(events)), "hits": hits, "hit_rate": hits / len(events)}


def model_dir_done(path: Path) -> bool:
    from llmboost.llm.models import TRAINING_LOG

    return (path / TRAINING_LOG).is_file()
