"""What the engine tells its front end, as one observer object given at construction.

A front end (Slicer's panel, the browser page, a script) subclasses :class:`EngineObserver` and
overrides what it shows; every method has a harmless default, so a script can pass none. The
engine calls all of them on the thread that owns the MRML scene (inside
``InteractiveSegmentationLogic.processEvents`` or the call that caused them), never from its
worker thread.

Nothing outside the engine assigns the engine's callbacks: the observer is the only channel.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: importing the events needs no numpy
    import numpy as np


class EngineObserver:
    """Receives the engine's events. Override what the front end needs."""

    def statusChanged(self, message: str) -> None:
        """A one-line status for the user ("Ready: last click 12 ms", "Encoding image (40%)")."""

    def errorOccurred(self, error: BaseException) -> None:
        """An edit failed on the worker (the engine already showed the session's points again).

        Errors of direct calls are raised to the caller instead.
        """
        logging.error("FastSAM3D: %s", error)

    def warningRaised(self, message: str) -> None:
        """Something the user must read, e.g. a fallback from the GPU to the CPU."""

    def busyChanged(self, busy: bool) -> None:
        """True when edits were queued with none pending before; False once all are applied."""

    def resultsPending(self) -> None:
        """Results should be collected soon: call ``processEvents`` on the scene's thread.

        Called on the scene's thread, by the call that queued work on the worker, so the front
        end can schedule the collection (in Slicer, a zero-delay timer) rather than run it
        inside that call.
        """

    def segmentsChanged(self) -> None:
        """Segments were added, removed, renamed, recoloured, shown or hidden, or the current
        segment changed."""

    def suggestionReady(self, pointRas: np.ndarray | None) -> None:
        """The most uncertain point (RAS mm) to click next, or None when the segment is certain."""

    def uncertaintyReady(self, node: Any) -> None:
        """The uncertainty overlay volume node was filled (entropy in [0, 1])."""


class ErrorCollector(EngineObserver):
    """Keeps the errors of edits, for a script or check that reports them after waiting.

    Attributes:
        errors: every error of an edit, oldest first.
    """

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def errorOccurred(self, error: BaseException) -> None:
        self.errors.append(error)
