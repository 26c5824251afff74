"""Full-ranking evaluation in user batches: every unseen item is a candidate, seen items are masked.

Never builds a dense users x items matrix for the whole catalog: scores exist for one batch of users
at a time. Every metric is also reported per slice (cold-start users, long-tail targets).

Models that only return top-K lists (``ranks_only``) and precomputed lists (:func:`evaluate_rankings`)
get the same metrics and slices from their lists: a target's rank is its position among the list's
unseen items (seen items in a list are skipped unless they are targets, as the full ranking masks
them); a target not in the list is a miss at every cut-off. So metrics at K are exact when the list
holds at least K unseen items, MRR counts 0 for a target beyond the list, and AUC is NaN (a list has
no scores for the rest of the catalog).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llmboost.data.interactions import Interactions, segment_offsets
from llmboost.evaluation.metrics import TargetRanks, rank_targets, user_metrics
from llmboost.models.base import Recommender, mask_seen
from llmboost.splitting import Slices, Split, make_slices

DEFAULT_KS = (10, 20)


@dataclass
class EvalResult:
    """Per-user metrics (one row per evaluated user) and catalog coverage of the top-K lists."""

    per_user: pd.DataFrame
    coverage: dict[str, float]
    ks: tuple[int, ...]

    @property
    def metric_names(self) -> list[str]:
        return [c for c in self.per_user.columns if "@" in c or c in ("MRR", "AUC")]

    def summary(self) -> dict[str, float]:
        """Mean of each metric overall, over cold-start users (``cold_users/``) and over users' long-tail
        targets (``long_tail/``), plus coverage and user counts."""
        frame = self.per_user
        out: dict[str, float] = {"users": float(len(frame))}
        overall = [m for m in self.metric_names if "/" not in m]
        out.update({m: float(frame[m].mean()) for m in overall})
        if "cold_user" in frame.columns:
            cold = frame[frame["cold_user"]]
            out["cold_users/users"] = float(len(cold))
            out.update({f"cold_users/{m}": float(cold[m].mean()) if len(cold) else float("nan") for m in overall})
        tail = [m for m in self.metric_names if m.startswith("long_tail/")]
        if tail:
            out["long_tail/users"] = float(frame[tail[0]].notna().sum())
            out.update({m: float(frame[m].mean()) for m in tail})
        out.update(self.coverage)
        return out


def evaluate(
    model: Recommender,
    split: Split,
    stage: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    slices: Slices | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on the ``stage`` ("valid" or "test") targets of ``split``, full ranking."""
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', not {stage!r}")
    slices = make_slices(split.train) if slices is None else slices
    return evaluate_targets(
        model,
        split.history(stage),  # type: ignore[arg-type]
        split.targets(stage),  # type: ignore[arg-type]
        ks=ks,
        slices=slices,
        batch_size=batch_size,
        progress=progress,
    )


def evaluate_targets(
    model: Recommender,
    history: Interactions,
    targets: Interactions,
    ks: Sequence[int] = DEFAULT_KS,
    slices: Slices | None = None,
    batch_size: int = 1024,
    progress: bool = False,
    coverage: bool = True,
) -> EvalResult:
    """Rank each user's ``targets`` among all items not in their ``history``; ``coverage=False`` skips
    the catalog coverage of the top-K lists (early stopping needs only the ranks)."""
    ks = tuple(sorted(set(int(k) for k in ks)))
    users = targets.active_users()
    if model.ranks_only:
        rankings, _ = model.recommend(users, k=max(ks), exclude_seen=True, history=history)
        return _evaluate_lists(np.asarray(rankings), users, history, targets, ks, slices, coverage, batch_size)
    padded = _padded_targets(targets, users)
    tail_mask = None if slices is None else torch.from_numpy(slices.long_tail_items)
    columns: dict[str, list[np.ndarray]] = {}
    top_lists: list[torch.Tensor] = []
    batches = range(0, len(users), batch_size)
    for start in tqdm(batches, desc="evaluate", disable=not progress, unit="batch"):
        batch_users = users[start : start + batch_size]
        batch_targets = padded[start : start + batch_size]
        with torch.no_grad():
            scores = model.score(batch_users, history=history).float()
        # a new tensor (the model's own is never modified); NaN scores count as worst
        scores = torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
        mask_seen(scores, batch_users, history, keep=batch_targets)
        ranks = rank_targets(scores, batch_targets)
        for name, values in _batch_metrics(ranks, ks, batch_targets, tail_mask).items():
            columns.setdefault(name, []).append(values.numpy())
        if coverage:
            top_lists.append(scores.topk(min(max(ks), scores.shape[1]), dim=1).indices)
    frame = _per_user_frame(users, padded, slices, columns)
    covered: dict[str, float] = {}
    if top_lists:
        top = torch.cat(top_lists)
        for k in ks:
            covered[f"Coverage@{k}"] = float(torch.unique(top[:, :k]).numel() / targets.n_items)
    return EvalResult(frame, covered, ks)


def evaluate_rankings(
    rankings: np.ndarray,
    users: np.ndarray,
    split: Split,
    stage: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    slices: Slices | None = None,
) -> EvalResult:
    """Evaluate top-K lists (``rankings[r]``: item ids for ``users[r]``, best first, -1 padding) on the
    ``stage`` targets of ``split`` with the metrics and slices of :func:`evaluate` (AUC is NaN).
    Users with targets but no row count as empty lists (all misses)."""
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', not {stage!r}")
    rankings = np.asarray(rankings, dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    if rankings.ndim != 2 or len(rankings) != len(users):
        raise ValueError(f"rankings must be (len(users), K) = ({len(users)}, K), not {rankings.shape}")
    targets: Interactions = split.targets(stage)  # type: ignore[assignment]
    n_items = targets.n_items
    if ((rankings < -1) | (rankings >= n_items)).any():
        raise ValueError(f"rankings hold item ids outside [-1, {n_items}) (the catalog has {n_items} items)")
    slices = make_slices(split.train) if slices is None else slices
    evaluated = targets.active_users()
    row = np.full(targets.n_users, -1, dtype=np.int64)
    row[users] = np.arange(len(users))
    aligned = np.full((len(evaluated), max(1, rankings.shape[1])), -1, dtype=np.int64)
    present = row[evaluated] >= 0
    aligned[present, : rankings.shape[1]] = rankings[row[evaluated][present]]
    history: Interactions = split.history(stage)  # type: ignore[assignment]
    ks = tuple(sorted(set(int(k) for k in ks)))
    return _evaluate_lists(aligned, evaluated, history, targets, ks, slices, coverage=True)


def _evaluate_lists(
    rankings: np.ndarray,
    users: np.ndarray,
    history: Interactions,
    targets: Interactions,
    ks: tuple[int, ...],
    slices: Slices | None,
    coverage: bool,
    batch_size: int = 1024,
) -> EvalResult:
    """Metrics of top-K lists aligned with ``users`` (the active users of ``targets``), in user batches."""
    padded = _padded_targets(targets, users)
    lists = torch.from_numpy(np.asarray(rankings, dtype=np.int64)).reshape(len(users), -1)
    tail_mask = None if slices is None else torch.from_numpy(slices.long_tail_items)
    columns: dict[str, list[np.ndarray]] = {}
    shown: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for start in range(0, len(users), batch_size):
        batch_lists, batch_targets = lists[start : start + batch_size], padded[start : start + batch_size]
        ranks, usable, position = _list_ranks(batch_lists, batch_targets, users[start : start + batch_size], history)
        for name, values in _batch_metrics(ranks, ks, batch_targets, tail_mask).items():
            columns.setdefault(name, []).append(values.numpy())
        for k in ks:
            shown[k].append(batch_lists[usable & (position < k)])
    frame = _per_user_frame(users, padded, slices, columns)
    covered: dict[str, float] = {}
    if coverage and len(users):
        covered = {f"Coverage@{k}": float(torch.unique(torch.cat(shown[k])).numel() / targets.n_items) for k in ks}
    return EvalResult(frame, covered, ks)


def _list_ranks(
    lists: torch.Tensor, targets: torch.Tensor, users: np.ndarray, history: Interactions
) -> tuple[TargetRanks, torch.Tensor, torch.Tensor]:
    """Each target's rank among the list's usable entries (not padding, not seen unless a target, not
    a repeat); a target not in the list gets a rank beyond every cut-off. Also returns which entries
    are usable and their positions."""
    n_items = history.n_items
    masked = torch.zeros(len(users), n_items)
    mask_seen(masked, users, history, keep=targets)
    skip = torch.ones(len(users), n_items + 1, dtype=torch.bool)  # column n_items: padding
    skip[:, :n_items] = torch.isneginf(masked)
    index = torch.where(lists >= 0, lists, torch.full_like(lists, n_items))
    usable = ~skip.gather(1, index)
    for j in range(1, lists.shape[1]):
        usable[:, j] &= ~(lists[:, :j] == lists[:, j : j + 1]).any(1)
    position = torch.cumsum(usable.long(), 1) - 1
    rank = torch.full(targets.shape, torch.iinfo(torch.long).max // 4, dtype=torch.long)
    match = (targets.unsqueeze(2) == lists.unsqueeze(1)) & usable.unsqueeze(1) & (targets >= 0).unsqueeze(2)
    found = match.any(2)
    rank[found] = position.gather(1, match.long().argmax(2))[found]
    auc = torch.full(targets.shape, float("nan"), dtype=torch.float64)
    return TargetRanks(rank=rank, auc=auc, valid=targets >= 0), usable, position


def _batch_metrics(
    ranks: TargetRanks, ks: tuple[int, ...], targets: torch.Tensor, tail_mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Per-user metrics of one batch, overall and over long-tail targets (``long_tail/``)."""
    metrics = user_metrics(ranks, ks)
    if tail_mask is not None:
        relevant = tail_mask[targets.clamp(min=0)]
        metrics |= {f"long_tail/{k}": v for k, v in user_metrics(ranks, ks, relevant).items()}
    return metrics


def _per_user_frame(
    users: np.ndarray, padded: torch.Tensor, slices: Slices | None, columns: dict[str, list[np.ndarray]]
) -> pd.DataFrame:
    """One row per user: target count, cold-start flag and each metric."""
    frame = pd.DataFrame({"user": users, "n_targets": (padded >= 0).sum(1).numpy()})
    if slices is not None:
        frame["cold_user"] = slices.cold_users[users]
    for name, parts in columns.items():
        frame[name] = np.concatenate(parts) if parts else np.array([], dtype=np.float64)
    return frame


def _padded_targets(targets: Interactions, users: np.ndarray) -> torch.Tensor:
    """Each user's distinct target items as a (len(users), P) tensor padded with -1."""
    pairs = targets.frame[["user", "item"]].drop_duplicates()
    pairs = pairs[pairs["user"].isin(users)]
    counts = pairs.groupby("user").size().reindex(users, fill_value=0).to_numpy()
    out = np.full((len(users), max(1, counts.max(initial=1))), -1, dtype=np.int64)
    row_of_user = np.full(targets.n_users, -1, dtype=np.int64)
    row_of_user[users] = np.arange(len(users))
    rows = row_of_user[pairs["user"].to_numpy()]
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    cols = segment_offsets(counts)
    out[rows, cols] = pairs["item"].to_numpy()[order]
    return torch.from_numpy(out)


def aggregate(summaries: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (ddof=1 when n > 1) and count of each metric over seeds."""
    out = {}
    for key in summaries[0]:
        values = np.array([s[key] for s in summaries], dtype=np.float64)
        out[key] = {
            "mean": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
            "std": float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else 0.0,
            "n": int(np.isfinite(values).sum()),
        }
    return out
