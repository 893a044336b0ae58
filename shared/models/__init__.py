"""Pure recommender modules (BPR, NeuMF and its GMF / MLP branches) behind one scorer contract, and the sizing
helper for students."""

from shared.models.base import PairBatch, Recommender, seeded_module
from shared.models.bpr import BPR
from shared.models.neumf import GMF, MLP, NeuMF
from shared.models.sizing import MODEL_FAMILIES, SizedConfig, build_at_fraction, build_model, config_at_fraction

__all__ = [
    "BPR",
    "GMF",
    "MLP",
    "MODEL_FAMILIES",
    "NeuMF",
    "PairBatch",
    "Recommender",
    "SizedConfig",
    "build_at_fraction",
    "build_model",
    "config_at_fraction",
    "seeded_module",
]
