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
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import timeline

# JPEG quality of every frame (trame-rca's default pair is 50 while interacting, 90 after).
FRAME_QUALITY = 85
# The closed surface's smoothing (Slicer's default is 0.5; 0 keeps the voxels' steps).
SURFACE_SMOOTHING = "0.5"
CLOSED_SURFACE = "Closed surface"
SURFACES_ATTRIBUTE = "FastSAM3D.Web.Surfaces"  # set once the node's segments get surfaces
# The surfaces are made again this long after a write: once the slice views' frames are out.
SURFACE_DELAY_S = 0.15


def configure_views(view_manager: Any) -> None:
    """Cheaper frames in every view made so far (call once the layout's views exist)."""
    for view in view_manager.get_views():
        window = view.render_window()
        window.SetMultiSamples(0)
        for renderer in view.renderers():
            renderer.SetUseDepthPeeling(False)
            renderer.SetUseDepthPeelingForVolumes(False)
        scheduler = getattr(getattr(view, "_scheduled_render", None), "_scheduler", None)
        if scheduler is not None and hasattr(scheduler, "update_quality"):
            scheduler.update_quality(FRAME_QUALITY, FRAME_QUALITY)


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
