"""FastSAM3D: interactive 3-D segmentation with points, boxes, scribbles and lassos.

The module, its widget, its Slicer logic and (by name) its self-test: what needs Qt and the
application. The interaction engine, ``fastsam3d_mrml.logic.InteractiveSegmentationLogic``, does
the work without Qt (the session, the worker thread, MRML in and out) and tells the widget what
happened through one observer (``FastSAM3DSlicerLib.observers``). The widget's helpers are in
``FastSAM3DSlicerLib``: ``model_panel`` (the model fields and their settings), ``session_tools``
(the session's buttons and shortcuts, the drawing tools), ``first_use`` (installing the
dependencies; ``install`` plans and runs it).

Nothing of the engine, numpy, torch or the core is imported when Slicer loads the module or sets
up its panel: from a source checkout (*Additional module paths*) the engine is not importable
until the first use installs it. It is imported when an action runs with the dependencies ready.
Every string shown to the user goes through Slicer's translation function.
"""

from __future__ import annotations

import qt
import slicer
import vtk
from FastSAM3DSlicerLib.first_use import INSTALL_POLL_INTERVAL_MS, FirstUseInstaller
from FastSAM3DSlicerLib.model_panel import ModelPanel

# The self-test class lives in FastSAM3DSlicerLib; Slicer finds it here by its name.
from FastSAM3DSlicerLib.selftest import FastSAM3DSlicerTest  # noqa: F401
from FastSAM3DSlicerLib.session_tools import SessionTools, translatedStatusLines
from FastSAM3DSlicerLib.text_field import TextField
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class FastSAM3DSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FastSAM3D")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["FastSAM3D Slicer contributors"]
        self.parent.helpText = _(
            "Click-to-segment CT and MRI with FastSAM3D or SAM-Med3D-turbo. Select a volume, "
            "press Start, then place positive (P) and negative (N) points in any view: the "
            "segment follows each point. Drag points to move them; to delete one, hover it and "
            "press Delete (or right-click it: Delete control point). Draw a box (X), a scribble "
            "(W) or a lasso (L), Shift for a negative one; drag its points to change it, delete "
            "its node to remove it. Pick an existing segment to refine it. The image encoder "
            "runs once per 128³ crop; each further point only runs the small decoder. See the "
            '<a href="https://github.com/fastsam3d/SlicerFastSAM3D#the-3d-slicer-module">'
            "module documentation</a>."
        )
        self.parent.acknowledgementText = _(
            "FastSAM3D (Shen et al., MICCAI 2024) and SAM-Med3D-turbo (Wang et al.) are the "
            "work of their authors; their weights are published under their own terms."
        )


@parameterNodeWrapper
class FastSAM3DSlicerParameterNode:
    """Per-scene state: what is segmented, and where the result goes."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segmentId: str


class FastSAM3DSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: it forwards user actions to the logic and shows what the engine reports."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.modelPanel = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._firstUse = FirstUseInstaller(self)
        self.tools = SessionTools(self)
        self.textField = TextField(self)
        self._timer = qt.QTimer()

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FastSAM3DSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FastSAM3DSlicerLogic(widget=self)
        self.modelPanel = ModelPanel(self.ui)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        tools = self.tools
        # Placing that ends or moves to another node hands a drawing in progress to the engine.
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        self.addObserver(interaction, interaction.InteractionModeChangedEvent, tools.placingChanged)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        self.addObserver(selection, selection.ActivePlaceNodeIDChangedEvent, tools.placingChanged)
        tools.connectDrawingButtons()
        self.textField.connect()
        actions = {
            self.ui.positiveButton: (lambda: tools.place(True), _("Failed to place a point.")),
            self.ui.negativeButton: (lambda: tools.place(False), _("Failed to place a point.")),
            self.ui.undoButton: (tools.undo, _("Undo failed.")),
            self.ui.redoButton: (tools.redo, _("Redo failed.")),
            self.ui.clearButton: (tools.clear, _("Failed to clear the segment.")),
            self.ui.nextSegmentButton: (tools.nextSegment, _("Failed to add a segment.")),
            self.ui.uncertaintyButton: (tools.uncertainty, _("Failed to estimate uncertainty.")),
            self.ui.suggestButton: (tools.suggest, _("Failed to suggest a point.")),
            self.ui.testConnectionButton: (self.onTestConnection, _("Connection test failed.")),
        }
        for button, (slot, message) in actions.items():
            button.connect("clicked(bool)", self.guarded(slot, message))
        self.ui.overwriteCheckBox.connect(
            "toggled(bool)",
            self.guarded(self.onOverwriteToggled, _("Failed to apply the option.")),
        )
        # These open dialogs: no wait cursor over them (they set one where they wait).
        self.ui.startButton.connect(
            "clicked(bool)",
            self.guarded(self.onStart, _("Failed to start FastSAM3D."), waitCursor=False),
        )
        self.ui.exportButton.connect(
            "clicked(bool)",
            self.guarded(tools.export, _("Failed to export the segmentation."), waitCursor=False),
        )
        for signal in ("currentSegmentChanged(QString)", "currentNodeChanged(vtkMRMLNode*)"):
            self.ui.segmentSelector.connect(signal, self.guarded(self.onSegmentSelected, ""))
        # Ticks come every 10 ms: a wait cursor would flicker.
        self._pollSlot = self.guarded(self.onTimer, _("FastSAM3D update failed."), waitCursor=False)
        self._timer.connect("timeout()", self._pollSlot)
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self):
        """Release observers, shortcuts, the timer, the worker threads and the model."""
        self._timer.stop()
        self.tools.removeShortcuts()
        self.removeObservers()
        self._firstUse.shutdown()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self):
        self.initializeParameterNode()
        # Points placed while the module was hidden may have gone to a new segment.
        self.showCurrentSegment()
        self.tools.installShortcuts()

    def exit(self):
        self.tools.removeShortcuts()
        self.setParameterNode(None)

    def isShown(self):
        """The module is entered (its parameter node is set only then)."""
        return self._parameterNode is not None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        self.logic.resetEngine()
        self.updateButtons()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ------------------------------------------------------------------

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons
            )
        self._parameterNode = parameterNode
        self._parameterNodeGuiTag = None
        if parameterNode is not None:
            self._parameterNodeGuiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self._showInSelector(parameterNode.segmentation, parameterNode.segmentId)
        self.updateButtons()

    def updateButtons(self, *unused):
        engine = self.logic.engineIfStarted() if self.logic else None
        hasVolume = bool(self._parameterNode and self._parameterNode.inputVolume)
        installing = self._firstUse.installing
        self.ui.startButton.enabled = hasVolume and not installing
        self.ui.testConnectionButton.enabled = not installing
        self.ui.startButton.toolTip = (
            _("Load the model and start a session on the input volume.")
            if hasVolume
            else _("Select an input volume first.")
        )
        started = engine is not None and engine.volumeNode is not None
        for button in (
            self.ui.positiveButton,
            self.ui.negativeButton,
            self.ui.undoButton,
            self.ui.redoButton,
            self.ui.clearButton,
            self.ui.nextSegmentButton,
            self.ui.uncertaintyButton,
            self.ui.suggestButton,
            self.ui.exportButton,
        ):
            button.enabled = started
        self.tools.updatePlacingButtons(engine if started else None)
        self.textField.update(engine if started else None)

    # -- actions -------------------------------------------------------------------------

    def onStart(self):
        if not self._firstUse.dependenciesReady(self.modelPanel.remote(), then=self.onStart):
            return
        node = self._parameterNode
        if node.inputVolume is None:
            raise ValueError(_("Select an input volume."))
        self.modelPanel.fillMenus()  # the engine imports now (after a first installation too)
        if self.isShown():  # the engine's key table imports now (after a first installation)
            self.tools.installShortcuts()
        engine = self.logic.engine()
        engine.protectOtherSegments = not self.ui.overwriteCheckBox.checked
        with slicer.util.WaitCursor():
            self.logic.loadModel(*self.modelPanel.loadModelArguments())
            engine.setInputs(node.inputVolume, node.segmentation, node.segmentId)
        node.segmentation = engine.segmentationNode
        self._showInSelector(engine.segmentationNode)
        self._startTimer()
        self.updateButtons()

    def onOverwriteToggled(self):
        """Applied at once: a running session opens again with the option, placing its points
        again (a session reads it when it opens)."""
        engine = self.logic.engineIfStarted()
        protect = not self.ui.overwriteCheckBox.checked
        if engine is None or engine.volumeNode is None or engine.protectOtherSegments == protect:
            return
        engine.protectOtherSegments = protect
        engine.setInputs(engine.volumeNode, engine.segmentationNode, engine.currentSegmentId or "")

    def onTestConnection(self):
        if not self._firstUse.dependenciesReady(
            self.modelPanel.remote(), then=self.onTestConnection
        ):
            return
        from fastsam3d_mrml.models import check_server

        self.modelPanel.fillMenus()
        with slicer.util.WaitCursor():
            message = check_server(*self.modelPanel.server(), self.modelPanel.modelName())
        self.showStatus(message)
        slicer.util.infoDisplay(message, windowTitle=_("FastSAM3D"))

    def onSegmentSelected(self, *unused):
        node = self._parameterNode
        if node is None:
            return
        node.segmentation = self.ui.segmentSelector.currentNode()
        node.segmentId = self.ui.segmentSelector.currentSegmentID() or ""
        engine = self.logic.engineIfStarted()
        if (
            engine is not None
            and engine.segmentationNode is node.segmentation
            and node.segmentId
            and node.segmentId != engine.currentSegmentId
        ):
            engine.selectSegment(node.segmentId)

    # -- collecting results --------------------------------------------------------------

    def onTimer(self):
        try:
            self._deliverResults()
        finally:  # also after an error in a result's callback: the other jobs' still come
            self.updateTimer()

    def _deliverResults(self):
        self._firstUse.poll()  # lets the installer's thread read pip's output
        engine = self.logic.engineIfStarted()
        if engine is not None:
            # The selector reacts to segments the logic adds or removes by selecting another
            # one; that is not the user's choice.
            wasBlocked = self.ui.segmentSelector.blockSignals(True)
            try:
                engine.processEvents()
            finally:
                self.ui.segmentSelector.blockSignals(wasBlocked)

    def updateTimer(self):
        """Tick while the engine or the installer has work pending; stop when neither has."""
        engine = self.logic.engineIfStarted() if self.logic else None
        busy = self._firstUse.inBackground or (engine is not None and engine.busy)
        self.ui.progressBar.visible = busy
        if busy and not self._timer.isActive():
            self._startTimer()
        elif not busy:
            self._timer.stop()

    def _startTimer(self):
        """Tick at the engine's interval once it runs (its worker needs it, see
        ``fastsam3d_mrml.worker``), before that at the installer's."""
        interval = INSTALL_POLL_INTERVAL_MS
        if self.logic.engineIfStarted() is not None:
            from fastsam3d_mrml.worker import POLL_INTERVAL_S

            interval = int(POLL_INTERVAL_S * 1000)
        self._timer.setInterval(interval)
        self._timer.start()

    def collectResultsSoon(self):
        """Results are collected as soon as the event loop is back, then on the timer (the
        engine asks on the main thread, inside the call that queued the work)."""
        qt.QTimer.singleShot(0, self._pollSlot)

    # -- what the engine reports (through FastSAM3DSlicerLib.observers.WidgetObserver) ---

    def showStatus(self, message):
        self.ui.statusLabel.text = message

    def showEngineStatus(self, message):
        """The engine's status line, translated where it is one of its fixed lines (the others
        carry numbers, names or an error's text)."""
        self.showStatus(translatedStatusLines().get(message, message))

    def showEngineError(self, error):
        if isinstance(error, (ValueError, KeyError)):  # e.g. a point outside the volume
            slicer.util.showStatusMessage(str(error), 5000)
            return
        slicer.util.errorDisplay(str(error), windowTitle=_("FastSAM3D"))

    def showWarning(self, message):
        slicer.util.warningDisplay(message, windowTitle=_("FastSAM3D"))

    def showCurrentSegment(self):
        engine = self.logic.engineIfStarted()
        if engine is None or engine.currentSegmentId is None or self._parameterNode is None:
            return
        self._showInSelector(engine.segmentationNode, engine.currentSegmentId)
        self._parameterNode.segmentId = engine.currentSegmentId

    def showUncertainty(self, overlayNode):
        slicer.util.setSliceViewerLayers(foreground=overlayNode, foregroundOpacity=0.4)

    def jumpToSuggestion(self, pointRas):
        if pointRas is None:
            self.showStatus(_("The segment is certain everywhere in its crop: nothing to suggest."))
            return
        slicer.modules.markups.logic().JumpSlicesToLocation(*[float(v) for v in pointRas], True)

    # -- helpers -------------------------------------------------------------------------

    def guarded(self, slot, message, waitCursor=True):
        """Every slot runs inside one tryWithErrorDisplay, so errors reach the user once."""

        def run(*args):
            with slicer.util.tryWithErrorDisplay(
                message or _("FastSAM3D error."), waitCursor=waitCursor
            ):
                slot()

        return run

    def _showInSelector(self, segmentationNode, segmentId=None):
        """Show a segmentation (and a segment) in the selector without its signals: the
        selection is the logic's, not the user's."""
        wasBlocked = self.ui.segmentSelector.blockSignals(True)
        self.ui.segmentSelector.setCurrentNode(segmentationNode)
        if segmentId is not None:
            self.ui.segmentSelector.setCurrentSegmentID(segmentId)
        self.ui.segmentSelector.blockSignals(wasBlocked)


class FastSAM3DSlicerLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic: the parameter node, and the interactive engine on the main scene.

    The engine (``fastsam3d_mrml.logic.InteractiveSegmentationLogic``) does the work and runs
    without a widget; :meth:`segment` is a one-call entry point for the Python console, on the
    same engine. The engine's observer is a ``FanOutObserver``: the panel's observer, and the
    observers a call adds while it runs.

    Args:
        widget: the panel (``FastSAM3DSlicerWidget``) that shows the engine's events; None (no
            panel) logs the engine's errors.
    """

    def __init__(self, widget=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self._widget = widget
        self._engine = None
        self._observers = None  # the engine's FanOutObserver, made with it

    def getParameterNode(self):
        return FastSAM3DSlicerParameterNode(super().getParameterNode())

    def engine(self, scene=None):
        """The interactive engine, created on first use. Call it once the dependencies are
        installed: it imports the engine (torch is imported when a local model loads)."""
        if self._engine is None:
            from FastSAM3DSlicerLib.observers import FanOutObserver, WidgetObserver

            from fastsam3d_mrml.logic import InteractiveSegmentationLogic

            panel = WidgetObserver(self._widget) if self._widget is not None else None
            self._observers = FanOutObserver(panel)
            self._engine = InteractiveSegmentationLogic(
                scene or slicer.mrmlScene, observer=self._observers
            )
        return self._engine

    def engineIfStarted(self):
        return self._engine

    def loadModel(
        self,
        modelName,
        device="auto",
        weightsFile=None,
        server=None,
        token=None,
        adapterFile=None,
        precision="auto",
    ):
        """Load a model (or connect to a remote server, device ``"remote"``) unless the same
        one is loaded (or loading) already."""
        key = (modelName, device, weightsFile, server, token, adapterFile, precision)
        engine = self.engine()
        if engine.loadedModel != key:
            engine.setModel(*key)

    def segment(
        self,
        volumeNode,
        positiveRas,
        negativeRas=(),
        modelName="fastsam3d",
        device="auto",
        segmentationNode=None,
        timeout=600.0,
    ):
        """Segment one object from points (RAS mm) and wait; returns (segmentation, segment ID).

        It runs on the panel's engine (one model, one worker), as a new session on
        ``volumeNode``. While it runs, the engine's errors go to this call, which raises them;
        afterwards they reach the panel again.

        Raises:
            RuntimeError: the model or an edit failed, or no result came within ``timeout``.
        """
        from fastsam3d_mrml.events import ErrorCollector

        engine = self.engine()
        errors = ErrorCollector()
        self._observers.add(errors)
        try:
            self.loadModel(modelName, device)
            engine.setInputs(volumeNode, segmentationNode)
            for node, points in (
                (engine.positiveNode, positiveRas),
                (engine.negativeNode, negativeRas),
            ):
                for point in points:
                    node.AddControlPointWorld(vtk.vtkVector3d(*[float(v) for v in point]), "")
            engine.synchronizePoints()
            idle = engine.waitForIdle(timeout)
        finally:
            self._observers.remove(errors)
        if not idle:
            raise RuntimeError(
                _("FastSAM3D gave no result within {seconds:.0f} s").format(seconds=timeout)
            )
        if errors.errors:
            raise RuntimeError(str(errors.errors[0])) from errors.errors[0]
        return engine.segmentationNode, engine.currentSegmentId

    def resetEngine(self):
        """Drop the session and the model (scene closed)."""
        if self._engine is not None:
            self._engine.cleanup()
        self._engine = self._observers = None

    def cleanup(self):
        self.resetEngine()
