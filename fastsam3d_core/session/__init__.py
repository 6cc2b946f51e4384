"""Interactive sessions: clicks, crops, cached embeddings, undo, several segments.

A click's way through the package: ``session`` (:class:`Session`, the one public entry) checks
it and makes it a :class:`~.state.Click`; ``crops`` picks its crop and runs the predictor (with
``composition`` giving a new crop's first mask prompt); ``composition`` turns the crops' logits
into the segment's voxels; ``masks`` writes them, keeping segments apart; ``history`` keeps the
edit for undo; ``result`` says what changed. A drawn prompt (box, scribble, lasso) is checked and
placed on the grid by ``shapes`` and turned into points, priors and exact voxels by
``prompt_edits``. ``state`` holds the immutable states all of them
pass around; ``predictor``, ``cache`` and ``uncertainty`` are the model's side.

:class:`ModelPredictor` is imported on first use (PEP 562): it needs torch, which a client of the
encoder service does not have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cache import EmbeddingCache
from .predictor import OraclePredictor, Predictor, as_predictor
from .result import Result, SegmentChange
from .session import Session
from .shapes import check_point
from .state import Click, Prompt

if TYPE_CHECKING:
    from .model_predictor import ModelPredictor

__all__ = [
    "Click",
    "EmbeddingCache",
    "ModelPredictor",
    "OraclePredictor",
    "Predictor",
    "Prompt",
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
