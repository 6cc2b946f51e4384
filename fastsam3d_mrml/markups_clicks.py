"""The clicks as the user sees and edits them: control points of two markups nodes.

Positive points live in one markups fiducial node, negative points in another. Each control
point carries its click's identity in its description (``fastsam3d:<id>``), the same id the core
:class:`~fastsam3d_core.Session` keeps for the click, so a point and its click are matched by id
alone: moving, deleting or restoring a point (undo) never matches by position. A point is read
as the core's own :class:`~fastsam3d_core.session.Click` (RAS, polarity, id), the one form a
click has from the markups to the session and back. Markups' own
control point IDs cannot serve: they cannot be set from Python, so an undone deletion could not
bring its point back under the same ID, and Slicer reuses them.

Only MRML is used (no Qt), so this runs with the ``slicer-core`` wheel too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Callable

import numpy as np
import vtk

from fastsam3d_core.session import Click

POSITIVE_COLOR = (0.2, 0.8, 0.2)
NEGATIVE_COLOR = (0.9, 0.2, 0.2)
SUGGESTION_COLOR = (1.0, 0.85, 0.1)
ID_PREFIX = "fastsam3d:"
# Slicer sets this attribute on a markups node while a point of it is dragged or previewed in a
# view (vtkSlicerMarkupsWidget); its position is final at PointEndInteractionEvent.
MOVING_ATTRIBUTE = "Markups.MovingInSliceView"


class ClickMarkups:
    """The positive, negative and suggestion markups nodes of one scene.

    Args:
        scene: the MRML scene.

    Attributes:
        sent: the clicks by id as the session will hold them once every edit sent to it has
            run; the points differ from them until the user's latest edits are sent.
    """

    def __init__(self, scene) -> None:
        self.scene = scene
        self.positive = self.negative = self.suggestion = None
        self.sent: dict[str, Click] = {}
        self._observations: list[tuple[object, int]] = []
        self._updating = False
        self.ensure_nodes()

    @property
    def updating(self) -> bool:
        """True while this object changes the points itself (its events are not the user's)."""
        return self._updating

    @contextmanager
    def changing(self) -> Iterator[None]:
        was, self._updating = self._updating, True
        try:
            yield
        finally:
            self._updating = was

    def ensure_nodes(self) -> None:
        """Create the nodes that are missing (first use, or the user deleted one)."""
        specs = (
            ("positive", "FastSAM3D positive", POSITIVE_COLOR, "P"),
            ("negative", "FastSAM3D negative", NEGATIVE_COLOR, "N"),
            ("suggestion", "FastSAM3D suggestion", SUGGESTION_COLOR, ""),
        )
        for attribute, name, color, label in specs:
            node = getattr(self, attribute)
            if node is not None and self.scene.GetNodeByID(node.GetID()) is node:
                continue
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            if display is not None:
                display.SetSelectedColor(*color)
                display.SetColor(*color)
            node.SetMarkupLabelFormat(label)
            setattr(self, attribute, node)
        self.suggestion.SetLocked(True)

    def node_for(self, positive: bool):
        return self.positive if positive else self.negative

    # -- reading -------------------------------------------------------------------------

    def identify_points(self) -> dict[str, Click]:
        """Every placed point as a click (world RAS), by click id. A point without one (just
        placed by the user) gets a new id, written into its description."""
        points: dict[str, Click] = {}
        for positive in (True, False):
            node = self.node_for(positive)
            for n in range(node.GetNumberOfControlPoints()):
                if node.GetNthControlPointPositionStatus(n) != node.PositionDefined:
                    continue  # a preview following the mouse, or a point being placed
                click_id = _click_id(node, n)
                if click_id is None or click_id in points:
                    click_id = f"{'P' if positive else 'N'}-{uuid.uuid4().hex[:12]}"
                    with self.changing():
                        node.SetNthControlPointDescription(n, ID_PREFIX + click_id)
                position = [0.0, 0.0, 0.0]
                node.GetNthControlPointPositionWorld(n, position)
                points[click_id] = Click(position, positive, click_id)
        return points

    def send_all(self) -> tuple[Click, ...]:
        """Every placed point, as the clicks a new session places again; all count as sent."""
        self.sent = self.identify_points()
        return tuple(self.sent.values())

    def unsent_edits(self) -> tuple[dict[str, Click], list[tuple[str, Click]]]:
        """The placed points and the edits that turn :attr:`sent` into them (see
        :func:`edits_between`); once the edits are sent, the points are the new :attr:`sent`."""
        points = self.identify_points()
        return points, edits_between(self.sent, points)

    @staticmethod
    def is_moving(node) -> bool:
        """Whether the user is dragging (or previewing) a point of this node in a view."""
        return bool(node.GetAttribute(MOVING_ATTRIBUTE))

    # -- writing -------------------------------------------------------------------------

    def show(self, clicks: Iterable[Click]) -> None:
        """Make the nodes show exactly these clicks, changing only the points that differ
        (undo, redo, a refused point)."""
        wanted = {click.click_id: click for click in clicks}
        with self.changing():
            for positive in (True, False):
                node = self.node_for(positive)
                was = node.StartModify()
                try:
                    self._show_in(node, positive, wanted)
                finally:
                    node.EndModify(was)

    def _show_in(self, node, positive: bool, wanted: dict) -> None:
        shown = set()
        for n in reversed(range(node.GetNumberOfControlPoints())):
            if node.GetNthControlPointPositionStatus(n) != node.PositionDefined:
                continue
            click = wanted.get(_click_id(node, n))
            if click is None or click.positive != positive or click.click_id in shown:
                node.RemoveNthControlPoint(n)
                continue
            shown.add(click.click_id)
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(n, position)
            if not np.array_equal(position, click.point_ras):
                node.SetNthControlPointPositionWorld(n, *click.point_ras)
        for click in wanted.values():
            if click.positive == positive and click.click_id not in shown:
                n = node.AddControlPointWorld(vtk.vtkVector3d(*click.point_ras), "")
                node.SetNthControlPointDescription(n, ID_PREFIX + click.click_id)

    def show_session(self, clicks: tuple[Click, ...]) -> None:
        """Once every edit sent has run: where the session's clicks differ from the clicks
        sent (undo, redo, a refused point), show the session's, which count as sent now."""
        reported = {click.click_id: click for click in clicks}
        if reported != self.sent:
            self.show(clicks)
            self.sent = reported

    def delete(self, click_id: str) -> None:
        """Delete the point of a click, as the user would (its removal is observed)."""
        for node in (self.positive, self.negative):
            for n in range(node.GetNumberOfControlPoints()):
                if _click_id(node, n) == click_id:
                    node.RemoveNthControlPoint(n)
                    return

    def clear(self) -> None:
        with self.changing():
            for node in (self.positive, self.negative, self.suggestion):
                node.RemoveAllControlPoints()

    def suggest(self, point_ras) -> None:
        """Mark a suggested point (or none)."""
        with self.changing():
            self.suggestion.RemoveAllControlPoints()
            if point_ras is not None:
                self.suggestion.AddControlPointWorld(
                    vtk.vtkVector3d(*[float(v) for v in point_ras]), ""
                )

    # -- observing -----------------------------------------------------------------------

    def observe(self, on_points_changed: Callable[[], None]) -> None:
        """Call ``on_points_changed`` after the user adds, moves (once the drag ends, or at
        once for a typed position), or deletes a point."""
        self.unobserve()

        def changed(node, event: str) -> None:
            if self._updating:
                return
            if event == "PointModifiedEvent" and self.is_moving(node):
                return  # a drag or a placement preview: wait for its end
            on_points_changed()

        for node in (self.positive, self.negative):
            for event in (
                "PointPositionDefinedEvent",
                "PointModifiedEvent",
                "PointEndInteractionEvent",
                "PointRemovedEvent",
            ):
                tag = node.AddObserver(
                    getattr(node, event), lambda caller, _, e=event: changed(caller, e)
                )
                self._observations.append((node, tag))

    def unobserve(self) -> None:
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations = []


def edits_between(sent: dict[str, Click], points: dict[str, Click]) -> list[tuple[str, Click]]:
    """The edits that turn the clicks ``sent`` (by id) into the ``points`` placed now:
    ("remove", click) for a point deleted or whose polarity changed (it moved to the other
    node), then ("add", click) for a new point or that re-typed one, and ("move", click) for a
    point placed elsewhere; in this order, which the worker keeps."""
    edits = [
        ("remove", click)
        for click_id, click in sent.items()
        if click_id not in points or points[click_id].positive != click.positive
    ]
    for click_id, click in points.items():
        old = sent.get(click_id)
        if old is None or old.positive != click.positive:
            edits.append(("add", click))
        elif old.point_ras != click.point_ras:
            edits.append(("move", click))
    return edits


def _click_id(node, n: int) -> str | None:
    description = node.GetNthControlPointDescription(n) or ""
    return description[len(ID_PREFIX) :] if description.startswith(ID_PREFIX) else None
