"""Interactive sessions: clicks, crops, cached embeddings, undo, several segments.

:class:`ModelPredictor` is imported on first use (PEP 562): it needs torch, which a client of the
encoder service does not have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cache import EmbeddingCache
from .predictor import OraclePredictor, Predictor, as_predictor
from .result import Result, SegmentChange
from .session import Session, check_point

if TYPE_CHECKING:
    from .model_predictor import ModelPredictor

__all__ = [
    "EmbeddingCache",
    "ModelPredictor",
    "OraclePredictor",
    "Predictor",
    "Result",
    "SegmentChange",
    "Session",
    "as_predictor",
    "check_point",
]


def __getattr__(name: str) -> Any:
    if name != "ModelPredictor":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .model_predictor import ModelPredictor

    return ModelPredictor
