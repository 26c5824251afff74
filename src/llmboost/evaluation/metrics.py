"""Full-ranking top-K metrics from target ranks.

Every function here works on one batch of users: a score matrix ``scores`` (B x I, already masked with
``-inf`` on items the user has seen) and padded target items ``targets`` (B x P, ``-1`` = padding).
Ties are resolved pessimistically against non-target items: a target ranks behind every non-target
item with an equal score, so a model that scores everything alike gets no credit. Targets tied with
each other take consecutive ranks in the order given.

Definitions (per user; ``rank`` is 0-based, ``R`` the user's targets):

* HR@K = 1 if any target has rank < K
* Recall@K = |{r in R : rank_r < K}| / |R|
* NDCG@K = sum_{r: rank_r < K} 1/log2(rank_r + 2) / sum_{i < min(|R|, K)} 1/log2(i + 2)
* MRR = 1 / (min_r rank_r + 1)   (full ranking, no cut-off)
* AUC = mean over targets of P(target scored above a random unseen non-target item), ties count 1/2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TargetRanks:
    """Ranks and AUC terms of each padded target (B x P) and which entries are real targets."""

    rank: torch.Tensor  # 0-based rank among all unseen items, pessimistic on ties with non-targets
    auc: torch.Tensor  # per-target AUC against unseen non-target items
    valid: torch.Tensor  # bool, False on padding


def rank_targets(scores: torch.Tensor, targets: torch.Tensor, max_block_bytes: int = 1 << 27) -> TargetRanks:
    """Rank each target among the unseen items (those with finite score) of its row.

    Counts items scored above / equal to each target by direct comparison (no sort), in blocks of
    target columns so that at most ``max_block_bytes`` of comparison results exist at once."""
    scores = scores.float()
    valid = targets >= 0
    n_users, n_targets_max = targets.shape
    target_scores = scores.gather(1, targets.clamp(min=0))
    greater = torch.zeros(targets.shape, dtype=torch.long)
    equal = torch.zeros(targets.shape, dtype=torch.long)
    block = max(1, max_block_bytes // max(1, n_users * scores.shape[1]))
    for start in range(0, n_targets_max, block):
        s = target_scores[:, start : start + block].unsqueeze(2)  # (B, p, 1)
        greater[:, start : start + block] = (scores.unsqueeze(1) > s).sum(dim=2, dtype=torch.int32)
        equal[:, start : start + block] = (scores.unsqueeze(1) == s).sum(dim=2, dtype=torch.int32)
    n_candidates = scores.shape[1] - torch.isneginf(scores).sum(dim=1, keepdim=True, dtype=torch.int32).long()
    # Other targets of the same user that score lower / equal (the target itself excluded).
    diff = target_scores.unsqueeze(2) - target_scores.unsqueeze(1)  # (B, P, P): s_p - s_q
    pair_valid = valid.unsqueeze(1) & valid.unsqueeze(2)
    eye = torch.eye(n_targets_max, dtype=torch.bool).unsqueeze(0)
    targets_lower = ((diff > 0) & pair_valid).sum(dim=2)
    tied = (diff == 0) & pair_valid & ~eye
    targets_equal = tied.sum(dim=2)
    earlier_tied_targets = (tied & torch.ones_like(eye).tril(-1)).sum(dim=2)  # (p, q) with q < p
    negatives_equal = equal - 1 - targets_equal
    negatives_lower = n_candidates - greater - equal - targets_lower
    n_negatives = (n_candidates - valid.sum(dim=1, keepdim=True)).clamp(min=1)
    rank = greater + negatives_equal + earlier_tied_targets
    auc = (negatives_lower + 0.5 * negatives_equal).double() / n_negatives
    return TargetRanks(rank=rank, auc=auc, valid=valid)


def user_metrics(
    ranks: TargetRanks, ks: tuple[int, ...], relevant: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-user metrics (each a length-B tensor; NaN for users with no relevant target).

    ``relevant`` (B x P bool) restricts which targets count as relevant, e.g. long-tail targets only."""
    valid = ranks.valid if relevant is None else ranks.valid & relevant
    n_rel = valid.sum(dim=1)
    has = n_rel > 0
    nan = torch.tensor(float("nan"))
    rank = torch.where(valid, ranks.rank, torch.full_like(ranks.rank, torch.iinfo(ranks.rank.dtype).max // 2))
    out: dict[str, torch.Tensor] = {}
    discount = 1.0 / torch.log2(rank.clamp(max=1 << 30).double() + 2.0)
    for k in ks:
        hit = valid & (rank < k)
        ideal = torch.cumsum(1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0), 0)
        idcg = ideal[(n_rel.clamp(min=1, max=k) - 1)]
        out[f"HR@{k}"] = torch.where(has, hit.any(dim=1).double(), nan)
        out[f"Recall@{k}"] = torch.where(has, hit.sum(dim=1) / n_rel.clamp(min=1), nan)
        out[f"NDCG@{k}"] = torch.where(has, (discount * hit).sum(dim=1) / idcg, nan)
    out["MRR"] = torch.where(has, 1.0 / (rank.min(dim=1).values.double() + 1.0), nan)
    auc = torch.where(valid, ranks.auc.double(), torch.zeros_like(ranks.auc.double()))
    out["AUC"] = torch.where(has, auc.sum(dim=1) / n_rel.clamp(min=1), nan)
    return out
