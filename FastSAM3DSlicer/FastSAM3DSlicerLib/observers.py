"""The panel's observer of the interaction engine: each event, forwarded to the widget.

The engine (``fastsam3d_mrml.logic.InteractiveSegmentationLogic``) takes one observer when it is
made and tells it everything the panel shows; nothing assigns the engine's callbacks. No Qt here:
the widget's methods do what needs it. ``fastsam3d_mrml.events`` imports numpy, so the module
imports this file when its panel is set up, not when Slicer loads it.
"""

from __future__ import annotations

from typing import Any

from fastsam3d_mrml.events import EngineObserver


class WidgetObserver(EngineObserver):
    """Forwards the engine's events to ``FastSAM3DSlicerWidget``.

    Every method but :meth:`resultsPending` is called on Slicer's main thread;
    ``resultsPending`` may come from the worker, so the widget only schedules a timer there.
    """

    def __init__(self, widget: Any) -> None:
        self._widget = widget

    def statusChanged(self, message: str) -> None:
        self._widget.showStatus(message)

    def errorOccurred(self, error: BaseException) -> None:
        self._widget.showEngineError(error)

    def warningRaised(self, message: str) -> None:
        self._widget.showWarning(message)

    def busyChanged(self, busy: bool) -> None:
        self._widget.updateTimer()

    def resultsPending(self) -> None:
        self._widget.collectResultsSoon()

    def segmentsChanged(self) -> None:
        self._widget.showCurrentSegment()

    def suggestionReady(self, pointRas: Any) -> None:
        self._widget.jumpToSuggestion(pointRas)

    def uncertaintyReady(self, node: Any) -> None:
        self._widget.showUncertainty(node)
