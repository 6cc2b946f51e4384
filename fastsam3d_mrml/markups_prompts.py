"""The drawn prompts as the user sees and edits them: one markups node per box, scribble or lasso.

A box is a markups ROI node, a scribble an open curve node, a lasso a closed curve node (both
curves linear: the polyline through the control points is exactly what the session gets, and
what it gives back on undo draws the same line). Each node is tagged as the engine's by its
attributes: its kind, its sign, and, once the drawing is finished, its prompt's id
(:data:`ID_ATTRIBUTE`), the id the core :class:`~fastsam3d_core.Session` keeps for the prompt.
So, as for the points (:mod:`.markups_clicks`), a node and its prompt are matched by id alone, and
a node is read as the core's own :class:`~fastsam3d_core.session.Prompt`.

A node is drawn first (no id: the session does not know it), then finished: a box when its
placement completes (two clicks in a view, or a centre and a size set), on its own; a curve when
the front end says so (``InteractiveSegmentationLogic.finishPrompt``), as Slicer ends a curve's
placement on the user's action. After that, an edit that ends (a drag released, a position typed,
a point deleted) or the node's deletion is an edit of the prompt, and undo, redo or another
segment bring the nodes back to the session's prompts: nodes are removed and made again.

Only MRML is used (no Qt), so this runs with the ``slicer-core`` wheel too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Callable

import numpy as np
import vtk

from fastsam3d_core.session import Prompt

from .markups_clicks import MOVING_ATTRIBUTE, NEGATIVE_COLOR, POSITIVE_COLOR

# The markups class of each kind of prompt.
NODE_CLASSES = {
    "box": "vtkMRMLMarkupsROINode",
    "scribble": "vtkMRMLMarkupsCurveNode",
    "lasso": "vtkMRMLMarkupsClosedCurveNode",
}
KIND_ATTRIBUTE = "FastSAM3D.PromptKind"
POSITIVE_ATTRIBUTE = "FastSAM3D.PromptPositive"
ID_ATTRIBUTE = "FastSAM3D.PromptId"
# A node's points and the points sent for it are the same drawing when no coordinate differs by
# more than this (mm): an ROI's bounds are computed from its centre and size, which may round
# otherwise than the corners it was made from.
SAME_POINTS_MM = 1e-4
# The node's own events that may end an edit of its drawing; an ROI resized with its handles
# changes its size, not its control points, so for a box the node's ModifiedEvent counts too.
_POINT_EVENTS = (
    "PointPositionDefinedEvent",
    "PointModifiedEvent",
    "PointStartInteractionEvent",
    "PointEndInteractionEvent",
    "PointRemovedEvent",
)


def prompt_kind(node: Any) -> str | None:
    """The kind of prompt an engine's prompt node holds, or None for any other node."""
    return node.GetAttribute(KIND_ATTRIBUTE) if node is not None else None


def prompt_id(node: Any) -> str | None:
    """The id of a finished prompt node's prompt; None while it is drawn."""
    return node.GetAttribute(ID_ATTRIBUTE) or None


def node_name(kind: str, positive: bool) -> str:
    return f"FastSAM3D {'positive' if positive else 'negative'} {kind}"


class PromptMarkups:
    """The prompt nodes of one scene: those drawn, and those of the current segment's prompts.

    Args:
        scene: the MRML scene.

    Attributes:
        sent: the current segment's prompts by id as the session will hold them once every
            edit sent to it has run; the nodes differ from them until the user's latest edits
            are sent.
    """

    def __init__(self, scene: Any) -> None:
        self.scene = scene
        self.sent: dict[str, Prompt] = {}
        self._nodes: list[Any] = []  # the engine's live prompt nodes, oldest first
        self._observations: list[tuple[Any, int]] = []
        self._interacting: set[str] = set()  # IDs of nodes being dragged
        self._on_edited: Callable[[], None] | None = None
        self._scene_tag: int | None = None
        self._updating = False

    @contextmanager
    def changing(self) -> Iterator[None]:
        """While this object changes nodes itself (their events are not the user's)."""
        was, self._updating = self._updating, True
        try:
            yield
        finally:
            self._updating = was

    # -- nodes -----------------------------------------------------------------------------

    def new_node(self, kind: str, positive: bool) -> Any:
        """A new empty prompt node of this kind and sign, added to the scene and observed.

        Raises:
            ValueError: an unknown kind.
        """
        if kind not in NODE_CLASSES:
            raise ValueError(f"unknown prompt kind {kind!r}: one of {', '.join(NODE_CLASSES)}")
        with self.changing():
            node = self.scene.AddNewNodeByClass(NODE_CLASSES[kind], node_name(kind, positive))
            node.SetAttribute(KIND_ATTRIBUTE, kind)
            node.SetAttribute(POSITIVE_ATTRIBUTE, "1" if positive else "0")
            if kind != "box":
                node.SetCurveTypeToLinear()
            _style(node, kind, positive)
        self._nodes.append(node)
        self._observe_node(node)
        return node

    def nodes(self) -> list[Any]:
        """The live prompt nodes: the current segment's prompts, and those being drawn."""
        self._forget_removed()
        return list(self._nodes)

    def finish(self, node: Any) -> bool:
        """Give a drawn node its prompt's id, so that the next synchronization sends it; True
        when it holds a drawing, False when nothing was drawn (the node is removed). A node
        finished already stays as it is.

        Raises:
            ValueError: not one of the engine's live prompt nodes.
        """
        if node not in self.nodes():
            raise ValueError(f"{node.GetName() if node else node} is not a FastSAM3D prompt node")
        if prompt_id(node) is not None:
            return True
        if drawn_points(node) is None:
            self._remove(node)
            return False
        with self.changing():
            node.SetAttribute(ID_ATTRIBUTE, f"{prompt_kind(node)}-{uuid.uuid4().hex[:12]}")
        return True

    # -- reading ---------------------------------------------------------------------------

    def drawings(self) -> dict[str, Prompt]:
        """Every finished node's drawing as a prompt (world RAS), by prompt id; a node being
        dragged counts as it was sent, a node with nothing drawn (its points deleted) not at
        all."""
        drawings: dict[str, Prompt] = {}
        for node in self.nodes():
            identity = prompt_id(node)
            if identity is None:
                continue
            if node.GetID() in self._interacting and identity in self.sent:
                drawings[identity] = self.sent[identity]
                continue
            points = drawn_points(node)
            if points is not None:
                positive = node.GetAttribute(POSITIVE_ATTRIBUTE) == "1"
                drawings[identity] = Prompt(prompt_kind(node), points, positive, identity)
        return drawings

    def send_all(self) -> tuple[Prompt, ...]:
        """Every finished drawing, as the prompts a new session places again; all count as
        sent."""
        self.sent = self.drawings()
        return tuple(self.sent.values())

    def unsent_edits(self) -> tuple[dict[str, Prompt], list[tuple[str, Prompt]]]:
        """The finished drawings and the edits that turn :attr:`sent` into them: ("remove",
        prompt) for a node deleted, ("add", prompt) for a node finished, ("move", prompt) for
        one drawn again; once the edits are sent, the drawings are the new :attr:`sent`."""
        drawings = self.drawings()
        edits = [("remove", prompt) for key, prompt in self.sent.items() if key not in drawings]
        for key, prompt in drawings.items():
            old = self.sent.get(key)
            if old is None:
                edits.append(("add", prompt))
            elif _same_points(old.points_ras, prompt.points_ras):
                drawings[key] = old  # what the session holds, exactly
            else:
                edits.append(("move", prompt))
        return drawings, edits

    # -- writing ---------------------------------------------------------------------------

    def show(self, prompts: Iterable[Prompt]) -> None:
        """Make the finished nodes show exactly these prompts: remove the others, draw again
        those whose points differ, make nodes for those that have none (undo, redo, another
        segment, a refused drawing). Nodes being drawn stay."""
        wanted = {prompt.prompt_id: prompt for prompt in prompts}
        with self.changing():
            for node in self.nodes():
                identity = prompt_id(node)
                if identity is None:
                    continue
                prompt = wanted.pop(identity, None)
                if prompt is None:
                    self._remove(node)
                elif not _same_points(drawn_points(node) or (), prompt.points_ras):
                    _draw(node, prompt)
            for prompt in wanted.values():
                node = self.new_node(prompt.kind, prompt.positive)
                node.SetAttribute(ID_ATTRIBUTE, prompt.prompt_id)
                _draw(node, prompt)

    def show_session(self, prompts: tuple[Prompt, ...]) -> None:
        """Once every edit sent has run: where the session's prompts differ from those sent,
        show the session's, which count as sent now."""
        reported = {prompt.prompt_id: _as_sent(prompt) for prompt in prompts}
        if reported != self.sent:
            self.show(reported.values())
            self.sent = reported

    def clear(self) -> None:
        """Remove every prompt node, drawn or being drawn."""
        for node in self.nodes():
            self._remove(node)
        self.sent = {}

    def _remove(self, node: Any) -> None:
        with self.changing():
            if self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)
        self._forget_removed()

    def _forget_removed(self) -> None:
        """Stop observing nodes no longer in the scene (removed by the user or by this)."""
        gone = [node for node in self._nodes if not self.scene.IsNodePresent(node)]
        if not gone:
            return
        self._nodes = [node for node in self._nodes if node not in gone]
        self._interacting -= {node.GetID() for node in gone}
        kept = []
        for node, tag in self._observations:
            if node in gone:
                node.RemoveObserver(tag)
            else:
                kept.append((node, tag))
        self._observations = kept

    # -- observing -------------------------------------------------------------------------

    def observe(self, on_edited: Callable[[], None]) -> None:
        """Call ``on_edited`` after a box's placement completes (it is finished then), and after
        the user ends an edit of a finished node's drawing or deletes it."""
        self._on_edited = on_edited
        if self._scene_tag is None:
            self._scene_tag = self.scene.AddObserver(self.scene.NodeRemovedEvent, self._on_removal)

    def unobserve(self) -> None:
        self._on_edited = None
        if self._scene_tag is not None:
            self.scene.RemoveObserver(self._scene_tag)
            self._scene_tag = None
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations = []
        self._nodes = []

    def _observe_node(self, node: Any) -> None:
        events = [getattr(node, name) for name in _POINT_EVENTS]
        if prompt_kind(node) == "box":
            events.append(vtk.vtkCommand.ModifiedEvent)
        for event in events:
            tag = node.AddObserver(event, lambda caller, _, e=event: self._on_node_event(caller, e))
            self._observations.append((node, tag))

    def _on_node_event(self, node: Any, event: int) -> None:
        if self._updating or self._on_edited is None:
            return
        if event == node.PointStartInteractionEvent:
            self._interacting.add(node.GetID())
            return
        if event == node.PointEndInteractionEvent:
            self._interacting.discard(node.GetID())
        elif node.GetID() in self._interacting or node.GetAttribute(MOVING_ATTRIBUTE):
            return  # a drag or a placement preview: wait for its end
        if prompt_id(node) is None:
            # A box is finished once its placement completes; a curve when the front end says.
            complete = event == node.PointPositionDefinedEvent and prompt_kind(node) == "box"
            if not (complete and node.GetControlPointPlacementComplete() and self.finish(node)):
                return
        self._on_edited()

    def _on_removal(self, scene: Any, event: int) -> None:
        if self._updating:
            return
        finished = [node for node in self._nodes if prompt_id(node) is not None]
        self._forget_removed()
        if self._on_edited is not None and any(node not in self._nodes for node in finished):
            self._on_edited()


def drawn_points(node: Any) -> tuple[tuple[float, float, float], ...] | None:
    """A prompt node's drawing in world RAS mm, as the session takes it: a box's two opposite
    corners (the ROI's bounds along R, A and S), a curve's placed control points; None when
    nothing is drawn."""
    if prompt_kind(node) == "box":
        if node.GetNumberOfDefinedControlPoints() == 0:
            return None
        bounds = [0.0] * 6
        node.GetRASBounds(bounds)
        return (tuple(bounds[0::2]), tuple(bounds[1::2]))
    points = []
    for n in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(n) == node.PositionDefined:
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(n, position)
            points.append(tuple(float(v) for v in position))
    return tuple(points) or None


def _draw(node: Any, prompt: Prompt) -> None:
    """Make a node show a prompt's points (a box: the ROI spanning its corners)."""
    points = np.asarray(prompt.points_ras, dtype=np.float64)
    if prompt.kind == "box":
        node.SetCenterWorld(*((points[0] + points[1]) / 2))
        node.SetSizeWorld(*np.abs(points[1] - points[0]))
        return
    positions = vtk.vtkPoints()
    for point in points:
        positions.InsertNextPoint(*point)
    node.SetControlPointPositionsWorld(positions)


def _style(node: Any, kind: str, positive: bool) -> None:
    """The sign's colour (as the point nodes'), and a box's handles without rotation: the
    session's box is aligned with R, A and S."""
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is None:
        return
    color = POSITIVE_COLOR if positive else NEGATIVE_COLOR
    display.SetSelectedColor(*color)
    display.SetColor(*color)
    if kind == "box":
        display.SetRotationHandleVisibility(False)


def _as_sent(prompt: Prompt) -> Prompt:
    """A session's prompt as this module keeps it (without the voxels it sets)."""
    return Prompt(prompt.kind, prompt.points_ras, prompt.positive, prompt.prompt_id)


def _same_points(a: Any, b: Any) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= SAME_POINTS_MM))
