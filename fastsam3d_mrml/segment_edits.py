"""The user's edits of the segments themselves: rename, recolour, show or hide, delete.

Part of :class:`~.logic.InteractiveSegmentationLogic` (a mixin), so that every front end (the
Slicer module, the browser page, a script) edits segments the same way and the engine stays
consistent: a deleted segment of the session is not made again by the next update, and its
voxels no longer keep the other segments out.
"""

from __future__ import annotations

from typing import Any


class SegmentEdits:
    """Segment edits of :class:`~.logic.InteractiveSegmentationLogic` (``self``: the logic,
    with its segmentation node, writer, worker and observer).

    Each edit tells the observer (``segmentsChanged``). Segment ids are the MRML segment IDs
    of :attr:`segmentationNode`.
    """

    def segmentIds(self) -> list[str]:
        """The segmentation's segment IDs in its order (empty without a segmentation)."""
        segmentation = self._segmentationOrNone()
        if segmentation is None:
            return []
        return [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]

    def renameSegment(self, segmentId: str, name: str) -> None:
        """Give a segment another name (not empty)."""
        name = str(name).strip()
        if not name:
            raise ValueError("a segment's name cannot be empty")
        self._segmentNamed(segmentId).SetName(name)
        self._observer.segmentsChanged()

    def setSegmentColor(self, segmentId: str, color: Any) -> None:
        """Colour a segment: ``color`` is (r, g, b), each in [0, 1]."""
        rgb = [float(value) for value in color]
        if len(rgb) != 3 or not all(0.0 <= value <= 1.0 for value in rgb):
            raise ValueError(f"{color!r}: a colour is three values from 0 to 1 (r, g, b)")
        self._segmentNamed(segmentId).SetColor(*rgb)
        self._observer.segmentsChanged()

    def setSegmentVisibility(self, segmentId: str, visible: bool) -> None:
        """Show or hide a segment in the views (its voxels stay)."""
        self._segmentNamed(segmentId)
        display = self.segmentationNode.GetDisplayNode()
        if display is not None:
            display.SetSegmentVisibility(segmentId, bool(visible))
            self._observer.segmentsChanged()

    def segmentVisible(self, segmentId: str) -> bool:
        """Whether the views show this segment."""
        display = self.segmentationNode.GetDisplayNode() if self.segmentationNode else None
        return bool(display is None or display.GetSegmentVisibility(segmentId))

    def toggleSegmentVisibility(self) -> None:
        """Show or hide the current segment in the views."""
        segmentId = self.currentSegmentId
        if segmentId and self.segmentationNode.GetDisplayNode() is not None:
            self.setSegmentVisibility(segmentId, not self.segmentVisible(segmentId))

    def deleteSegment(self, segmentId: str) -> None:
        """Remove a segment from the segmentation.

        A segment of the session is also removed from the session (``Session.remove_segment``),
        so that its voxels no longer keep the other segments out. Deleting cannot be undone,
        and it clears the undo history: the edits before it can no longer be undone or redone.
        If it was the current segment, later points go to the next segment in the list (the
        previous one for the last), or to a new segment where none is left: the logic always
        has a current segment.
        """
        self._segmentNamed(segmentId)
        writer, ids = self._writer, self.segmentIds()
        sessionId = writer.session_id(segmentId)
        wasCurrent = segmentId == self.currentSegmentId
        others = [other for other in ids if other != segmentId]
        successor = others[min(ids.index(segmentId), len(others) - 1)] if others else None
        if sessionId is not None:
            writer.drop(sessionId)
        self.segmentationNode.GetSegmentation().RemoveSegment(segmentId)
        if sessionId is not None:
            # Where a new segment follows, it comes first, inside the same edit: Undo then has
            # nothing to take back to the deleted one.
            startNew = wasCurrent and successor is None
            self._submitSession(_removing(sessionId, startNew), "delete segment")
        if wasCurrent and successor is not None:
            self.selectSegment(successor)
        elif wasCurrent and sessionId is None:
            self.nextSegment()
        self._observer.segmentsChanged()

    def _segmentationOrNone(self):
        node = self.segmentationNode
        return node.GetSegmentation() if node is not None else None

    def _segmentNamed(self, segmentId: str):
        """The MRML segment with this ID; raises ValueError where there is none."""
        segmentation = self._segmentationOrNone()
        if segmentation is None or self._writer is None:
            raise RuntimeError("there are no segments yet: open an image first")
        segment = segmentation.GetSegment(str(segmentId))
        if segment is None:
            raise ValueError(f"{self.segmentationNode.GetName()} has no segment {segmentId!r}")
        return segment


def _removing(sessionId: int, startNew: bool):
    """A session edit that removes one of its segments for good (``Session.remove_segment``:
    every click and voxel of it, and the undo history, so that Undo cannot bring it back
    unseen), after starting a new current segment where ``startNew``."""

    def remove(session):
        if startNew:
            session.new_segment()
        return session.remove_segment(sessionId)

    return remove
