"""Full-ranking evaluation in user batches: every unseen item is a candidate, seen items are masked.

Never builds a dense users x items matrix for the whole catalog: scores exist for one batch of users
at a time. Every metric is also reported per slice (cold-start users, long-tail targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llmboost.data.interactions import Interactions, segment_offsets
from llmboost.evaluation.metrics import rank_targets, user_metrics
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
        metrics = user_metrics(ranks, ks)
        if tail_mask is not None:
            relevant = tail_mask[batch_targets.clamp(min=0)]
            metrics |= {f"long_tail/{k}": v for k, v in user_metrics(ranks, ks, relevant).items()}
        for name, values in metrics.items():
            columns.setdefault(name, []).append(values.numpy())
        if coverage:
            top_lists.append(scores.topk(min(max(ks), scores.shape[1]), dim=1).indices)
    frame = pd.DataFrame({"user": users, "n_targets": (padded >= 0).sum(1).numpy()})
    if slices is not None:
        frame["cold_user"] = slices.cold_users[users]
    for name, parts in columns.items():
        frame[name] = np.concatenate(parts) if parts else np.array([], dtype=np.float64)
    covered: dict[str, float] = {}
    if top_lists:
        top = torch.cat(top_lists)
        for k in ks:
            covered[f"Coverage@{k}"] = float(torch.unique(top[:, :k]).numel() / targets.n_items)
    return EvalResult(frame, covered, ks)


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
