"""Backbone recommenders behind one protocol: ``fit``, ``score``, ``recommend``, ``save`` / ``load``."""

from llmboost.models.base import REGISTRY, Recommender, build
from llmboost.models.mf import BPRMF
from llmboost.models.popularity import MostPopular
from llmboost.models.sasrec import SASRec
from llmboost.models.training import LossTerm, TorchRecommender, TrainBatch

__all__ = [
    "BPRMF",
    "REGISTRY",
    "LossTerm",
    "MostPopular",
    "Recommender",
    "SASRec",
    "TorchRecommender",
    "TrainBatch",
    "build",
]
