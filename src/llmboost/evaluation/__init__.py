"""Full-ranking evaluation: metrics, per-slice reports, aggregation over seeds."""

from llmboost.evaluation.evaluate import EvalResult, aggregate, evaluate, evaluate_rankings, evaluate_targets
from llmboost.evaluation.metrics import TargetRanks, rank_targets, user_metrics

__all__ = [
    "EvalResult",
    "TargetRanks",
    "aggregate",
    "evaluate",
    "evaluate_rankings",
    "evaluate_targets",
    "rank_targets",
    "user_metrics",
]
