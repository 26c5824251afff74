"""Backbone recommenders behind one protocol: ``fit``, ``score``, ``recommend``, ``save`` / ``load``."""

from llmboost.models.base import REGISTRY, Recommender, build
from llmboost.models.mf import BPRMF
from llmboost.models.popularity import MostPopular
from llmboost.models.sasrec import SASRec
from llmboost.models.training import TorchRecommender
from llmboost.models.neighbors import ItemToItemRecommender  # noqa: I001  (item-to-item models, issue 8)
from llmboost.models.itemcf import ItemCF
from llmboost.models.item2vec import Item2Vec
from llmboost.models.swing import Swing

__all__ = ["BPRMF", "REGISTRY", "MostPopular", "Recommender", "SASRec", "TorchRecommender", "build"]
__all__ += ["ItemCF", "Item2Vec", "ItemToItemRecommender", "Swing"]
