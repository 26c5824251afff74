"""Data: the :class:`Dataset` object, its parts, the loaders and :func:`load_dataset`."""

from llmboost.data.dataset import Dataset
from llmboost.data.errors import DataFormatError, DatasetNotFoundError
from llmboost.data.fetch import load_dataset
from llmboost.data.interactions import Interactions
from llmboost.data.vocabulary import Vocabulary

__all__ = [
    "DataFormatError",
    "Dataset",
    "DatasetNotFoundError",
    "Interactions",
    "Vocabulary",
    "load_dataset",
]
