"""Train/validation/test splits and the evaluation slices every method reports."""

from llmboost.splitting.slices import Slices, make_slices
from llmboost.splitting.splits import Split, leave_one_out, random_split, split_dataset, temporal_split

__all__ = [
    "Slices",
    "Split",
    "leave_one_out",
    "make_slices",
    "random_split",
    "split_dataset",
    "temporal_split",
]
