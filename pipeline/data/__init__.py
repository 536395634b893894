"""Data: a registry of loaders and one preparation path (tokens, vocabulary, splits,
fingerprint) shared by all of them. No TensorFlow."""

from pipeline.data.loaders import LOADERS, DataError, RawData, register_loader
from pipeline.data.prepare import PreparedData, balanced_class_weights, prepare

__all__ = [
    "LOADERS",
    "DataError",
    "PreparedData",
    "RawData",
    "balanced_class_weights",
    "prepare",
    "register_loader",
]
