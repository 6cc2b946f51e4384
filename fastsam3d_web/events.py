"""What the page shows of the engine's events (:class:`PageEvents`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastsam3d_mrml.events import EngineObserver

from .segments_panel import segment_items


class PageEvents(EngineObserver):
    """What the page shows of the engine's events: the status line, errors and warnings, busy
    or idle, the segment selector, the uncertainty overlay and the suggested point.

    ``page`` is the :class:`~fastsam3d_web.app.SegmentationPage` (its state, logic, views).
    Called on the server's event loop thread (inside ``processEvents``, or the page's action
    that caused them), as the engine calls every event on the scene's thread.
    :meth:`resultsPending` is safe from any thread all the same: ``asyncio.Event`` is not.

    Attributes:
        wake: set when results are pending, so the polling task collects them now rather than
            after its nap; None until :meth:`listen` (when the server is ready).
    """

    def __init__(self, page: Any) -> None:
        self.page = page
        self.state = page.state
        self.wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def listen(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The event that :meth:`resultsPending` sets from now on, waited for on ``loop``."""
        self._loop, self.wake = loop, asyncio.Event()
        return self.wake

    def statusChanged(self, message: str) -> None:
        self.state.status = message

    def errorOccurred(self, error: BaseException) -> None:
        self.page.show_error(error)

    def warningRaised(self, message: str) -> None:
        self.page.show_error(message)

    def busyChanged(self, busy: bool) -> None:
        self.state.busy = busy

    def resultsPending(self) -> None:
        wake, loop = self.wake, self._loop
        if wake is None or loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # no loop runs on this thread
            on_loop = False
        if on_loop:
            wake.set()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing waits any more
            loop.call_soon_threadsafe(wake.set)  # wakes the loop if it sleeps

    def jobFinishedOnWorker(self) -> None:
        """Called by the engine on its worker thread as a job ends (see EngineBase): the
        polling task wakes now (:meth:`resultsPending` is thread-safe)."""
        self.resultsPending()

    def segmentsChanged(self) -> None:
        """The segment selector's and the segment list's items (names, colours, shown)."""
        self.state.segments = segment_items(self.page.logic)
        self.state.segment_id = self.page.logic.currentSegmentId

    def suggestionReady(self, pointRas: Any) -> None:
        if pointRas is not None:
            self.page.centre_slices(tuple(float(v) for v in pointRas))

    def uncertaintyReady(self, node: Any) -> None:
        slicer_app = self.page.slicer
        slicer_app.display_manager.show_volume_in_slice_foreground(node)
        scene = slicer_app.scene
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode").SetForegroundOpacity(0.5)
