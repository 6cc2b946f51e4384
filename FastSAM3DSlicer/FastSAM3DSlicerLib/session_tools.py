"""The panel's actions on a running session: placing points, drawing boxes, scribbles and
lassos, undo and redo, segments, the uncertainty overlay, export, and the keyboard shortcuts for
them.

A widget helper (it uses Qt). Each action asks the engine of the module's logic; the engine
reports what changed through its observer, not through these methods' results, and its fixed
status lines are translated here (:func:`translatedStatusLines`).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import qt
import slicer
from slicer.i18n import tr as _

# How long Export waits for queued points before it refuses (it runs on the GUI thread).
EXPORT_WAIT_S = 5


def translatedStatusLines() -> dict[str, str]:
    """The engine's fixed status lines, translated; the others carry numbers, names or an
    error's text, and are shown as the engine words them."""
    return {
        "Model ready: select a volume": _("Model ready: select a volume"),
        "Waiting for both a model and a volume": _("Waiting for both a model and a volume"),
        "Preparing: encoding the image around the point...": _(
            "Preparing: encoding the image around the point..."
        ),
        "Segmenting...": _("Segmenting..."),
        "Estimating uncertainty...": _("Estimating uncertainty..."),
        "Ready": _("Ready"),
        "Ready: the segment is certain": _("Ready: the segment is certain"),
    }


class SessionTools:
    """Actions of the buttons and shortcuts of ``widget`` (the module's
    ``FastSAM3DSlicerWidget``), on the engine its logic started."""

    def __init__(self, widget: Any) -> None:
        self._widget = widget
        self._shortcuts: list = []
        self._drawing = None  # the prompt node being drawn
        self._drawingTool = None  # its (kind, positive)

    def engine(self):
        """The started engine; raises if Start was not pressed (or the scene was closed)."""
        engine = self._widget.logic.engineIfStarted()
        if engine is None or engine.volumeNode is None:
            raise RuntimeError(_("Press Start first."))
        return engine

    # -- points ----------------------------------------------------------------------------

    def place(self, positive: bool) -> None:
        """Place points of this polarity; asked again while placing them, stop."""
        engine = self.engine()
        node = engine.positiveNode if positive else engine.negativeNode
        if self.placingNode() is node:
            slicer.app.applicationLogic().GetInteractionNode().SwitchToViewTransformMode()
        else:
            markupsLogic = slicer.modules.markups.logic()
            markupsLogic.SetActiveList(node)
            markupsLogic.StartPlaceMode(True)
        self._widget.updateButtons()

    def togglePolarity(self) -> None:
        """Switch placing between positive and negative points."""
        engine = self.engine()
        self.place(self.placingNode() is not engine.positiveNode)

    def placingNode(self):
        """The point list that clicks in the views go to now, or None when not placing."""
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        if interaction.GetCurrentInteractionMode() != interaction.Place:
            return None
        selection = slicer.app.applicationLogic().GetSelectionNode()
        return slicer.mrmlScene.GetNodeByID(selection.GetActivePlaceNodeID())

    def deleteLastPoint(self) -> None:
        self.engine().deleteLastPoint()

    # -- drawn prompts ---------------------------------------------------------------------

    def draw(self, kind: str, positive: bool) -> None:
        """Draw a prompt of this kind and sign: clicks in the views place the points of a new
        prompt node (one drawing: Slicer ends a box after its two corners, a curve on a
        right-click or a double-click). Asked again while drawing it, finish it."""
        engine = self.engine()
        if self._drawingTool == (kind, positive) and self.placingNode() is self._drawing:
            # Placing stops, and placingChanged hands the drawing to the engine.
            slicer.app.applicationLogic().GetInteractionNode().SwitchToViewTransformMode()
            return
        previous, self._drawing, self._drawingTool = self._drawing, None, None
        self._handOver(previous)  # another tool: the drawing so far is done
        node = engine.newPromptNode(kind, positive)
        slicer.modules.markups.logic().SetActiveList(node)
        # Not markupsLogic.StartPlaceMode: it sets the place class back to point lists, and the
        # click would start a new point list instead of this ROI or curve. As Slicer's own place
        # widget does: one drawing (a box ends at its second corner), then place mode.
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetPlaceModePersistence(0)
        interaction.SetCurrentInteractionMode(interaction.Place)
        self._drawing, self._drawingTool = node, (kind, positive)
        self._widget.updateButtons()

    def placingChanged(self, *unused) -> None:
        """Placing ended (Slicer ends a box after its two corners, a curve on a right-click or
        a double-click) or went to another node: the drawing is done."""
        if self._drawing is not None and self.placingNode() is not self._drawing:
            node, self._drawing, self._drawingTool = self._drawing, None, None
            self._handOver(node)
        self._widget.updateButtons()

    def _handOver(self, node) -> None:
        """Give the engine a finished drawing (it reports one it refuses, and removes it)."""
        engine = self._widget.logic.engineIfStarted()
        if node is not None and engine is not None and node in engine.promptNodes():
            engine.finishPrompt(node)

    def drawingButtons(self) -> list:
        """(kind, sign, button) of each drawing tool."""
        ui = self._widget.ui
        return [
            ("box", True, ui.boxButton),
            ("box", False, ui.negativeBoxButton),
            ("scribble", True, ui.scribbleButton),
            ("scribble", False, ui.negativeScribbleButton),
            ("lasso", True, ui.lassoButton),
            ("lasso", False, ui.negativeLassoButton),
        ]

    def connectDrawingButtons(self) -> None:
        for kind, positive, button in self.drawingButtons():
            slot = self._widget.guarded(partial(self.draw, kind, positive), _("Drawing failed."))
            button.connect("clicked(bool)", slot)

    def updatePlacingButtons(self, engine) -> None:
        """Check the button of what clicks in the views place now (a point list, or a drawing
        of the tool's kind and sign); the drawing buttons are enabled with a started
        ``engine`` (None: not started)."""
        placing = self.placingNode()
        started = engine is not None and placing is not None
        drawing = self._drawingTool if started and placing is self._drawing else None
        checked = [
            (self._widget.ui.positiveButton, started and placing is engine.positiveNode),
            (self._widget.ui.negativeButton, started and placing is engine.negativeNode),
        ]
        for kind, positive, button in self.drawingButtons():
            button.enabled = engine is not None
            checked.append((button, drawing == (kind, positive)))
        for button, isChecked in checked:
            wasBlocked = button.blockSignals(True)
            button.checked = isChecked
            button.blockSignals(wasBlocked)

    # -- history and segments --------------------------------------------------------------

    def undo(self) -> None:
        self.engine().undo()

    def redo(self) -> None:
        self.engine().redo()

    def clear(self) -> None:
        self.engine().clearSegment()

    def nextSegment(self) -> None:
        self.engine().nextSegment()

    def toggleVisibility(self) -> None:
        self.engine().toggleSegmentVisibility()

    def uncertainty(self) -> None:
        self.engine().computeUncertainty()

    def suggest(self) -> None:
        self.engine().suggestNextPoint()

    def export(self) -> None:
        """Ask for a file and save the segmentation there, once the queued points are done."""
        engine = self.engine()
        # A click finishes in well under a second; a model download or encoding may not.
        with slicer.util.WaitCursor():
            idle = engine.waitForIdle(EXPORT_WAIT_S)
        if not idle:
            raise RuntimeError(
                _(
                    "FastSAM3D is still working on the last points; export once the status "
                    "says Ready."
                )
            )
        default = os.path.join(qt.QDir.homePath(), f"{engine.segmentationNode.GetName()}.seg.nrrd")
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(),
            _("Export segmentation"),
            default,
            _("Segmentation (*.seg.nrrd);;Labelmap (*.nrrd *.nii.gz)"),
        )
        if path.lower().endswith(".dcm"):  # the engine's SEG serves the browser page
            raise RuntimeError(
                _(
                    "In Slicer, a DICOM SEG is exported by Slicer's DICOM module: in the Data "
                    "module, right-click the segmentation and choose 'Export to DICOM...' (with "
                    "the QuantitativeReporting extension installed)."
                )
            )
        if path:
            engine.exportSegmentation(path)
            self._widget.showStatus(_("Saved {path}").format(path=path))

    # -- keyboard shortcuts ----------------------------------------------------------------

    def installShortcuts(self) -> None:
        """Main-window shortcuts for these actions, while the module is shown: the engine's key
        table (``fastsam3d_mrml.shortcuts``, which the browser page reads too)."""
        self.removeShortcuts()
        try:
            from fastsam3d_mrml.shortcuts import DRAWING_ACTIONS, SHORTCUTS
        except ImportError:  # a source checkout before its first installation: at Start
            return
        actions = {
            "positive-points": lambda: self.place(True),
            "negative-points": lambda: self.place(False),
            "toggle-polarity": self.togglePolarity,
            "toggle-visibility": self.toggleVisibility,
            "delete-last-point": self.deleteLastPoint,
            "suggest": self.suggest,
            "undo": self.undo,
            "redo": self.redo,
            "next-segment": self.nextSegment,
        }
        for action, (kind, positive) in DRAWING_ACTIONS.items():
            actions[action] = partial(self.draw, kind, positive)
        for key, action, _description in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            message = _("{key} failed.").format(key=key)
            shortcut.connect("activated()", self._widget.guarded(actions[action], message))
            self._shortcuts.append(shortcut)

    def removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.disconnect("activated()")
            shortcut.setParent(None)
        self._shortcuts = []
