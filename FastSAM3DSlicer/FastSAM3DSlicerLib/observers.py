"""The module's observers of the interaction engine: the panel's, and the one the engine is
given, which passes each event on to the panel's and to the observers a script adds for a call.

The engine (``fastsam3d_mrml.logic.InteractiveSegmentationLogic``) takes one observer when it is
made and tells it everything the panel shows; nothing assigns the engine's callbacks. No Qt here:
the widget's methods do what needs it. This file imports the engine (``fastsam3d_mrml.events``),
so the module imports it when it makes the engine, once the dependencies are installed, never
when Slicer loads the module.
"""

from __future__ import annotations

from typing import Any

from fastsam3d_mrml.events import EngineObserver


class WidgetObserver(EngineObserver):
    """Forwards the engine's events to ``FastSAM3DSlicerWidget``.

    ``resultsPending`` only schedules the widget's timer: results are collected on it, outside
    the engine's call that queued the work.
    """

    def __init__(self, widget: Any) -> None:
        self._widget = widget

    def statusChanged(self, message: str) -> None:
        self._widget.showEngineStatus(message)

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


class FanOutObserver(EngineObserver):
    """The engine's one observer: every event goes to ``main`` (the panel's observer, or the
    default one that logs errors) and to each observer added with :meth:`add`.

    Errors are the exception: while observers are added (a script's call waiting for its result,
    ``FastSAM3DSlicerLogic.segment``), they go to those only. The call raises them to its caller,
    and the panel showing each again in a dialog would report it twice; once the call removes
    its observer, errors reach ``main`` again.
    """

    def __init__(self, main: EngineObserver | None = None) -> None:
        self.main = main if main is not None else EngineObserver()
        self._added: list[EngineObserver] = []

    def add(self, observer: EngineObserver) -> None:
        self._added.append(observer)

    def remove(self, observer: EngineObserver) -> None:
        self._added.remove(observer)

    def _everyone(self) -> list[EngineObserver]:
        """A copy: an observer may be removed while it hears an event."""
        return [self.main, *self._added]

    def statusChanged(self, message: str) -> None:
        for observer in self._everyone():
            observer.statusChanged(message)

    def errorOccurred(self, error: BaseException) -> None:
        for observer in list(self._added) or [self.main]:
            observer.errorOccurred(error)

    def warningRaised(self, message: str) -> None:
        for observer in self._everyone():
            observer.warningRaised(message)

    def busyChanged(self, busy: bool) -> None:
        for observer in self._everyone():
            observer.busyChanged(busy)

    def resultsPending(self) -> None:
        for observer in self._everyone():
            observer.resultsPending()

    def segmentsChanged(self) -> None:
        for observer in self._everyone():
            observer.segmentsChanged()

    def suggestionReady(self, pointRas: Any) -> None:
        for observer in self._everyone():
            observer.suggestionReady(pointRas)

    def uncertaintyReady(self, node: Any) -> None:
        for observer in self._everyone():
            observer.uncertaintyReady(node)
