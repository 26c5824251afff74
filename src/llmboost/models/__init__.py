"""Backbone recommenders behind one protocol: ``fit``, ``score``, ``recommend``, ``save`` / ``load``."""

from llmboost.models.base import REGISTRY, Recommender, build
from llmboost.models.item2vec import Item2Vec
from llmboost.models.itemcf import ItemCF
from llmboost.models.mf import BPRMF
from llmboost.models.neighbors import ItemToItemRecommender
from llmboost.models.popularity import MostPopular
from llmboost.models.sasrec import SASRec
from llmboost.models.swing import Swing
from llmboost.models.training import LossTerm, TorchRecommender, TrainBatch

__all__ = [
    "BPRMF",
    "REGISTRY",
    "Item2Vec",
    "ItemCF",
    "ItemToItemRecommender",
    "LossTerm",
    "MostPopular",
    "Recommender",
    "SASRec",
    "Swing",
    "TorchRecommender",
    "TrainBatch",
    "build",
]
