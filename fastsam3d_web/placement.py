"""What a left click in a slice view places: a point, or a point of a drawn prompt.

The tools are Slicer's own markups widgets, which trame-slicer shows in its views: points go
into the engine's positive or negative points node (persistent place mode, as in Slicer); a box
is a Markups ROI (two clicks: opposite corners on the slice), a scribble a Markups Curve and a
lasso a Markups Closed Curve (a click per point). Each drawing is a new node from the engine
(``logic.newPromptNode``), placed with Slicer's interaction node in place mode.

A drawing is complete when place mode ends: Slicer ends it after a box's second corner, and on
a right click for a curve; the page's **Done** button ends it too. Then the engine runs it
(``logic.finishPrompt``) and the next drawing of the same tool starts on the page's next poll
(not inside the widget's own event, which is still being handled).
"""

from __future__ import annotations

from typing import Any

# The tools, in the toolbar's order: (state value, label, icon, how to draw it).
TOOLS = (
    ("point", "Points", "mdi-circle-medium", "click: a point; Shift-click: the other sign"),
    ("box", "Box", "mdi-selection", "click two opposite corners"),
    ("scribble", "Scribble", "mdi-draw", "click along a stroke, then Done or right click"),
    ("lasso", "Lasso", "mdi-lasso", "click around a contour, then Done or right click"),
)
DRAWN = tuple(tool for tool, *_ in TOOLS if tool != "point")


class Placement:
    """The page's tool (``state.tool``), sign (``state.negative``) and mode
    (``state.moving``), kept in Slicer's interaction node.

    Args:
        state: the trame state the toolbar binds.
        logic: the engine (``InteractiveSegmentationLogic``).
        markups_logic: trame-slicer's markups logic (place mode, active node).
        slice_views: trame-slicer's slice views, whose left clicks this watches.
        used: called on each action (the page's idle clock).
        guarded: runs an engine call, showing its error on the page instead of raising.

    Attributes:
        drawing: the markups node being drawn, None between drawings and for points.
    """

    def __init__(
        self, state: Any, logic: Any, markups_logic: Any, slice_views, used, guarded
    ) -> None:
        self.state, self.logic, self.markups_logic = state, logic, markups_logic
        self._used, self._guarded = used, guarded
        self.drawing: Any = None
        self._placing_positive = True
        state.tool = self._tool = "point"
        state.negative = False
        state.moving = False
        state.drawn = state.drawing_points = 0
        state.change("tool")(self._tool_changed)
        self._place_points(positive=True)
        interaction = markups_logic.interaction_node
        interaction.AddObserver(interaction.InteractionModeChangedEvent, self._mode_changed)
        for view in slice_views:
            for event in ("LeftButtonPressEvent", "LeftButtonReleaseEvent"):
                # Ahead of the view's interactor style (priority 0), which passes the event on.
                view.interactor().AddObserver(event, self._on_button, 1.0)

    # -- the toolbar's actions -----------------------------------------------------------

    def select_tool(self, tool: str) -> None:
        """Place with this tool (one of :data:`TOOLS`) from now on, in place mode."""
        self._used()
        if tool not in (name for name, *_ in TOOLS):
            raise ValueError(f"unknown tool {tool!r}")
        self.state.tool = self._tool = tool
        self.state.moving = False
        self.restart()

    def toggle_polarity(self) -> None:
        """The other sign for the next point or drawing (an unfinished drawing is dropped)."""
        self._used()
        self.state.negative = not self.state.negative
        self.state.moving = False
        self.restart()

    def toggle_moving(self) -> None:
        """Moving mode (drag points and drawings) or back to placing with the current tool."""
        self._used()
        self.state.moving = not self.state.moving
        if self.state.moving:
            self._drop_drawing()
            self.markups_logic.disable_place_mode()
        else:
            self.restart()

    def finish_drawing(self) -> None:
        """The Done button: the drawing is complete (as a right click in the view)."""
        self._used()
        if self.drawing is not None:
            self.markups_logic.disable_place_mode()  # -> _mode_changed finishes it

    def restart(self) -> None:
        """Place with the current tool and sign from now on: an unfinished drawing is
        dropped; a drawn tool gets a new node from the engine."""
        self._drop_drawing()
        positive = not self.state.negative
        if self.logic.volumeNode is None:
            return  # no image yet: nothing to place on (the page starts empty with a PACS)
        if self._tool not in DRAWN:
            self._place_points(positive)
            return
        node = self._guarded(lambda: self.logic.newPromptNode(self._tool, positive))
        if node is None:
            return
        # A box ends by itself after its second corner; a curve takes points until finished.
        self.markups_logic.place_node(node, persistent=self._tool != "box")
        self.drawing = node

    def keep_placing(self) -> None:
        """Back in place mode with the current tool after a drawing ended (or a right click
        ended placing points); called by the page's polling task."""
        interaction = self.markups_logic.interaction_node
        if not self.state.moving and interaction.GetCurrentInteractionMode() != interaction.Place:
            self.restart()

    def show_counts(self) -> None:
        """``state.drawn``: the current segment's finished drawings (the engine runs them);
        ``state.drawing_points``: the points placed in the drawing in progress."""
        from fastsam3d_mrml.markups_prompts import prompt_id

        self.state.drawn = sum(prompt_id(node) is not None for node in self.logic.promptNodes())
        drawing = self.drawing
        self.state.drawing_points = (
            drawing.GetNumberOfDefinedControlPoints() if drawing is not None else 0
        )

    # -- helpers -------------------------------------------------------------------------

    def _tool_changed(self, tool: str, **_: Any) -> None:
        if tool != self._tool:
            self.select_tool(tool)

    def _place_points(self, positive: bool) -> None:
        node = self.logic.positiveNode if positive else self.logic.negativeNode
        if node is None:
            return  # no image yet
        self.markups_logic.place_node(node, persistent=True)
        self._placing_positive = positive

    def _drop_drawing(self) -> None:
        """Forget the drawing in progress: it leaves the scene unless the engine finished it
        already (a box, once its second corner is placed: removing it would undo it)."""
        from fastsam3d_mrml.markups_prompts import prompt_id

        drawing, self.drawing = self.drawing, None
        if drawing in self.logic.promptNodes() and prompt_id(drawing) is None:
            drawing.GetScene().RemoveNode(drawing)

    def _mode_changed(self, interaction: Any, _event: str) -> None:
        """Place mode ended while drawing: the drawing is complete, the engine runs it (a
        box was finished by the engine itself; once more is harmless)."""
        if self.drawing is None or interaction.GetCurrentInteractionMode() == interaction.Place:
            return
        drawing, self.drawing = self.drawing, None
        if drawing in self.logic.promptNodes():  # not a box the engine refused and removed
            # A drawing's errors come back through the engine's observer, as a click's do;
            # nothing drawn: the engine removes the node.
            self._guarded(lambda: self.logic.finishPrompt(drawing))

    def _on_button(self, interactor: Any, event: str) -> None:
        if self.state.moving:
            return
        shift = bool(interactor.GetShiftKey())
        # Slicer's markups widgets place points on unmodified clicks only.
        interactor.SetShiftKey(0)
        if self._tool in DRAWN:
            return
        positive = self.state.negative == shift  # Shift-click: a point of the other sign
        if event == "LeftButtonPressEvent" and positive != self._placing_positive:
            self._place_points(positive)
