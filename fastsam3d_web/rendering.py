"""How the page's views render and stream: one frame per change, the segment as a surface in 3-D.

The views render on the server's event loop (VTK, in software on a machine without a GPU) and
each frame is a JPEG pushed over the websocket. While a view renders, nothing else on the loop
runs: not the next mouse event, not the engine's result, not the other views' frames. So
(measured with ``benchmarks/bench_page.py``; see docs/benchmarks.md):

- The 3-D view shows the segments as smooth closed surfaces, made from the labelmap again after
  each click, and no volume rendering: ray casting the CT in software took about a second a
  frame, twice per click, and held up everything behind it.
- No multisampling and no depth peeling: each multiplies the cost of a software frame, for
  edges that the JPEG blurs anyway.
- One frame per change at one JPEG quality: trame-rca otherwise renders every change twice
  (a quick low-quality frame, then the same picture again at high quality).
- Only the view under the mouse renders for its mouse events. In place mode Slicer's markups
  widget moves a preview point with the mouse and places it on release; the point node's change
  asks every view for a frame (four renders per mouse move, four more per click, while the click
  waits for the loop and the engine for the cores). The other views' frames wait until the page
  is idle (:class:`RenderFocus`); the engine's result, written a moment later, renders them anyway.
- The click's own frame (its point placed) waits up to 150 ms for the engine's result: one
  render shows both, and the engine has the cores to itself meanwhile.
- Of the frames one change asks for (the engine's result shows in every view), the view last
  under the mouse renders and is sent first: the others wait until its frame is out, as the
  loop would otherwise render them all before the encoded frames are sent.
- At start-up, the views are made without rendering (trame-slicer renders a view synchronously
  on each of the ~60 changes that make it, until trame-rca's scheduler takes over: 1.8 s), and
  the model loads once a tab's first frame is out (:func:`after_first_frame`): its import and
  build on the worker thread took the cores and the GIL from the first frames. The frames the
  views render as the server starts, before any tab connects, do not count.
- The 3-D surface is made again only when the page is quiet (no mouse event in the views for a
  moment, the engine idle): the conversion holds the loop, and a click must not wait for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from trame_slicer.views import NoScheduleRendering, ScheduledRenderStrategy

from . import timeline

# JPEG quality of every frame (trame-rca's default pair is 50 while interacting, 90 after).
FRAME_QUALITY = 85
# The closed surface's smoothing (Slicer's default is 0.5; 0 keeps the voxels' steps).
SURFACE_SMOOTHING = "0.5"
# Surface nets smoothed inside the filter ("1", "1"), not flying edges then a windowed-sinc
# filter (Slicer's default "0", "0"): a seeded model's ragged mask in 100 ms instead of 815
# (87,007 voxels, loaded 2-core machine), the spleen's alike.
SURFACE_PARAMETERS = {"Conversion method": "1", "SurfaceNets smoothing": "1"}
CLOSED_SURFACE = "Closed surface"
SURFACES_ATTRIBUTE = "FastSAM3D.Web.Surfaces"  # set once the node's segments get surfaces
# The surfaces are made again this long after a write: once the slice views' frames are out.
SURFACE_DELAY_S = 0.15
# ... and only once no mouse event reached a view for this long, with the engine idle.
QUIET_S = 0.4
# The views' mouse events that render only their own view at once (the others' frames wait).
FOCUSED_EVENTS = ("MouseMoveEvent", "LeftButtonPressEvent", "LeftButtonReleaseEvent",
                  "EnterEvent", "LeaveEvent")  # fmt: skip
# Deferred frames are checked this often until the page is idle.
DEFERRED_CHECK_S = 0.25
# A click's own frame (the point it placed) waits this long for the engine's result, so that
# one render shows both, and no render takes a core from the engine meanwhile.
PLACED_POINT_WAIT_S = 0.15
# Work held back for the page's first image starts this long after its first frame is sent
# (the other views' first frames go out meanwhile), or this long after the server is ready if
# no tab has shown one.
AFTER_FIRST_FRAME_S = 0.5
FIRST_FRAME_FALLBACK_S = 10.0
# The other views' frames of a change wait at most this long for the focused view's frame.
FIRST_FRAME_WAIT_S = 0.25
# ... and start rendering this long after it was handed to the websocket: wslink writes it in
# a task of its own, which would otherwise wait for their renders.
AFTER_SENT_S = 0.015


def configure_views(view_manager: Any, busy: Callable[[], bool] = lambda: False) -> None:
    """Cheaper frames in every view made so far, and a view's mouse events render only that
    view (call once the layout's views exist, on the event loop). ``busy()``: the engine is
    working (deferred frames and the 3-D surface wait until it is not)."""
    ACTIVITY.busy = busy
    for view in view_manager.get_views():
        if not isinstance(view._scheduled_render, _FocusedRender):
            render = _FocusedRender(view._scheduled_render)
            view.set_scheduled_render(render)
            scheduler = render._scheduler
            if getattr(scheduler, "_push_callback", None) is not None:
                scheduler._push_callback = _FrameSent(scheduler._push_callback, render)
            for event in FOCUSED_EVENTS:
                # Ahead of the interactor style and of the page's own observers.
                view.interactor().AddObserver(event, ACTIVITY.focus_on(render), 2.0)
        window = view.render_window()
        window.SetMultiSamples(0)
        for renderer in view.renderers():
            renderer.SetUseDepthPeeling(False)
            renderer.SetUseDepthPeelingForVolumes(False)
        scheduler = getattr(getattr(view, "_scheduled_render", None), "_scheduler", None)
        if scheduler is not None and hasattr(scheduler, "update_quality"):
            scheduler.update_quality(FRAME_QUALITY, FRAME_QUALITY)


@contextmanager
def views_made_without_frames() -> Iterator[None]:
    """Views made inside render nothing until trame-rca's scheduler asks for their frames (when
    the page connects): trame-slicer's views otherwise render at once on every change that
    makes them (``DirectRendering``), before the view factory sets trame-rca's strategy."""
    from trame_slicer.views import abstract_view

    direct = abstract_view.DirectRendering
    abstract_view.DirectRendering = NoScheduleRendering
    try:
        yield
    finally:
        abstract_view.DirectRendering = direct


def after_first_frame(server: Any, action: Callable[[], Any]) -> None:
    """``action()`` on the event loop once a view's first frame has been sent to a connected tab
    (the page shows its image), or :data:`FIRST_FRAME_FALLBACK_S` after ``server`` is ready if
    none was. The views render a frame as the server starts, before any tab is there to see it:
    that one does not count (the model's load then took the cores from the tab's first frames)."""
    ACTIVITY.after_first_frame.append(action)
    server.controller.on_client_connected.add(ACTIVITY.tab_connected)

    def fallback(**_: Any) -> None:
        asyncio.get_event_loop().call_later(FIRST_FRAME_FALLBACK_S, ACTIVITY.first_frame_out)

    server.controller.on_server_ready.add(fallback)


def _running_loop() -> Any:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no event loop on this thread (a script): nothing waits
        return None


class _Activity:
    """The views' mouse events as the server handles them, and whether the page is quiet.

    Attributes:
        focused: the view whose mouse event is being handled now (None between events).
        last: the render strategy of the view that had the last mouse event.
        last_event: when the last mouse event reached a view (``time.monotonic()`` s).
        busy: whether the engine is working (set by :func:`configure_views`).
    """

    def __init__(self) -> None:
        self.focused: Any = None
        self.clicking = False  # the focused event is a button's (placing a point)
        self.last: _FocusedRender | None = None
        self.last_event = 0.0
        self.busy: Callable[[], bool] = lambda: False
        self._deferred: set = set()
        self._checking = False
        self._after_last: set = set()  # frames waiting for the last view's frame
        self._turn_pending = False
        self.after_first_frame: list = []  # actions held back until the first frame is out
        self.tab_seen = False  # a tab has connected (frames before it reach nobody)

    def tab_connected(self, **_: Any) -> None:
        self.tab_seen = True

    def first_frame_out(self) -> None:
        actions, self.after_first_frame = self.after_first_frame, []
        for action in actions:
            action()

    def focus_on(self, render: _FocusedRender) -> Callable[..., None]:
        """An interactor observer: while its event is handled, only ``render``'s view renders."""

        def observer(_interactor: Any, event: str) -> None:
            loop = _running_loop()
            if loop is None:
                return
            self.last_event = time.monotonic()
            self.focused, self.last = render.abstract_view, render
            self.clicking = event in ("LeftButtonPressEvent", "LeftButtonReleaseEvent")
            loop.call_soon(self._unfocus)  # the event is handled synchronously, before this

        return observer

    def _unfocus(self) -> None:
        self.focused = None

    def quiet(self, seconds: float = QUIET_S) -> bool:
        return not self.busy() and time.monotonic() - self.last_event >= seconds

    def defers(self, render: _FocusedRender) -> bool:
        """Whether a frame asked of ``render``'s view now waits (another view's mouse event is
        being handled); if so, it is asked again once the page is idle."""
        if self.focused is None or self.focused is render.abstract_view:
            return False
        self._deferred.add(render)
        loop = _running_loop()
        if loop is not None and not self._checking:
            self._checking = True
            loop.call_later(DEFERRED_CHECK_S, self._render_deferred)
        return True

    def rendered(self, render: _FocusedRender) -> None:
        self._deferred.discard(render)  # a frame asked now shows the deferred change too

    def in_turn(self, render: _FocusedRender) -> None:
        """Ask for ``render``'s frame: at once for the view last under the mouse; another
        view's waits until that view's frame is out, if one was asked in the same change."""
        loop = _running_loop()
        if loop is None or self.last is None or render is self.last:
            render.awaited = True  # until _FrameSent sees the frame go
            render.inner.schedule_render()
            return
        self._after_last.add(render)
        if not self._turn_pending:  # once the change's requests are all in
            self._turn_pending = True
            loop.call_soon(self._release_unless_awaited)

    def _release_unless_awaited(self) -> None:
        if self.last is not None and self.last.awaited:
            _running_loop().call_later(FIRST_FRAME_WAIT_S, self.release)
        else:
            self.release()

    def release(self) -> None:
        """The frames that waited for the last view's are asked for now."""
        self._turn_pending = False
        waiting, self._after_last = self._after_last, set()
        for render in waiting:
            render.inner.schedule_render()

    def sent(self, render: _FocusedRender) -> None:
        render.awaited = False
        if render is self.last and self._after_last:
            _running_loop().call_later(AFTER_SENT_S, self.release)

    def _render_deferred(self) -> None:
        if not self.quiet(DEFERRED_CHECK_S):
            asyncio.get_running_loop().call_later(DEFERRED_CHECK_S, self._render_deferred)
            return
        self._checking = False
        deferred, self._deferred = self._deferred, set()
        for render in deferred:
            render.inner.schedule_render()


ACTIVITY = _Activity()


class _FocusedRender(ScheduledRenderStrategy):
    """A view's render strategy (trame-rca's) that lets its frame wait while another view's
    mouse event is handled (:class:`_Activity`)."""

    def __init__(self, inner: ScheduledRenderStrategy) -> None:
        super().__init__()
        self.inner = inner
        self._scheduler = getattr(inner, "_scheduler", None)  # trame-rca's frame scheduler
        self.awaited = False  # a frame was asked for and is not sent yet
        self.held: asyncio.TimerHandle | None = None  # a click's frame, waiting

    def set_abstract_view(self, abstract_view: Any) -> None:
        super().set_abstract_view(abstract_view)
        self.inner.set_abstract_view(abstract_view)

    def schedule_render(self) -> None:
        if ACTIVITY.defers(self):
            return
        ACTIVITY.rendered(self)
        loop = _running_loop()
        if ACTIVITY.clicking and ACTIVITY.focused is self.abstract_view and loop is not None:
            if self.held is None:  # the click's own frame waits for the engine's result
                self.held = loop.call_later(PLACED_POINT_WAIT_S, self._release_held)
            return
        if self.held is not None:  # this frame shows the click's point too
            self.held.cancel()
            self.held = None
        ACTIVITY.in_turn(self)

    def _release_held(self) -> None:
        self.held = None
        ACTIVITY.in_turn(self)

    def did_render(self) -> None:
        self.inner.did_render()


class _FrameSent:
    """trame-rca's push callback (the frame to the websocket), telling :data:`ACTIVITY`."""

    def __init__(self, push: Callable[[bytes, dict], None], render: _FocusedRender) -> None:
        self.push, self.render = push, render
        self.__self__ = getattr(push, "__self__", None)  # the view's adapter (timeline.py)

    def __call__(self, content: bytes, meta: dict) -> None:
        self.push(content, meta)
        ACTIVITY.sent(self.render)
        if ACTIVITY.after_first_frame and ACTIVITY.tab_seen:
            asyncio.get_running_loop().call_later(AFTER_FIRST_FRAME_S, ACTIVITY.first_frame_out)


def show_segments_as_surfaces(volume_node: Any, segmentation_node: Any) -> None:
    """The 3-D view without the volume's rendering, with the segmentation's smooth closed
    surfaces, which the segmentation remakes from its labelmap whenever a click changes it."""
    volume_display = _volume_rendering_display(volume_node)
    if volume_display is not None:
        volume_display.SetVisibility(False)
    if segmentation_node is None:
        return
    segmentation = segmentation_node.GetSegmentation()
    segmentation.SetConversionParameter("Smoothing factor", SURFACE_SMOOTHING)
    for name, value in SURFACE_PARAMETERS.items():
        segmentation.SetConversionParameter(name, value)
    segmentation_node.CreateClosedSurfaceRepresentation()
    if segmentation_node.GetAttribute(SURFACES_ATTRIBUTE) is None:
        # A write into a labelmap drops the surfaces made from it (the segmentation would make
        # them again only when asked), and a new segment gets only the representations the
        # first segment has: the surfaces are made again after each.
        segmentation_node.SetAttribute(SURFACES_ATTRIBUTE, "1")
        remake = _SurfaceRemaker(segmentation_node)
        for event in (segmentation.SourceRepresentationModified, segmentation.SegmentAdded):
            segmentation.AddObserver(event, remake.soon)
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    display = segmentation_node.GetDisplayNode()
    display.SetVisibility3D(True)
    display.SetPreferredDisplayRepresentationName3D(CLOSED_SURFACE)


class _SurfaceRemaker:
    """Makes a segmentation's closed surfaces again once the change that dropped them is
    complete (in the middle of a write the labelmap may be half made), on the server's event
    loop, a moment later: the slice views' frames with the new overlay go out first, as the
    conversion holds the loop (a few ms for a smooth organ, hundreds for a ragged mask)."""

    def __init__(self, segmentation_node: Any) -> None:
        self.node = segmentation_node
        self.pending = False

    def soon(self, *_: Any) -> None:
        if self.pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop on this thread (a script): the views ask later
            return
        self.pending = True
        loop.call_later(SURFACE_DELAY_S, self.remake)

    def remake(self) -> None:
        if not ACTIVITY.quiet():  # a click is on its way: it goes first
            asyncio.get_running_loop().call_later(SURFACE_DELAY_S, self.remake)
            return
        self.pending = False
        if self.node.GetScene() is not None:  # not removed with its image meanwhile
            start = timeline.now_ms()
            self.node.CreateClosedSurfaceRepresentation()
            if timeline.enabled():
                timeline.record("surface", start, timeline.now_ms())


def _volume_rendering_display(volume_node: Any) -> Any:
    """The volume's volume-rendering display node, if it has one."""
    if volume_node is None:
        return None
    for index in range(volume_node.GetNumberOfDisplayNodes()):
        display = volume_node.GetNthDisplayNode(index)
        if display is not None and display.IsA("vtkMRMLVolumeRenderingDisplayNode"):
            return display
    return None
