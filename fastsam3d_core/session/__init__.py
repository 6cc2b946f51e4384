"""Interactive sessions: clicks, crops, cached embeddings, undo, several segments."""

from .cache import EmbeddingCache
from .predictor import ModelPredictor, OraclePredictor, Predictor, as_predictor
from .session import Result, Session, check_point

__all__ = [
    "EmbeddingCache",
    "ModelPredictor",
    "OraclePredictor",
    "Predictor",
    "Result",
    "Session",
    "as_predictor",
    "check_point",
]
