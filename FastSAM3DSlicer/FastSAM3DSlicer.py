"""FastSAM3D: interactive 3-D segmentation with positive and negative points.

The module, its (thin) widget, its Slicer logic and its self-test. Everything that computes lives
in FastSAM3DSlicerLib (no Qt there): ``logic.InteractiveSegmentationLogic`` holds the session and
the worker thread, ``mrml_io`` converts between MRML and the core, ``install`` sets up PyTorch and
the engine's dependencies on first use. Nothing heavy (torch, the core) is imported here at
module import time.
"""

from __future__ import annotations

import os

import qt
import slicer
import vtk
from FastSAM3DSlicerLib import install

# The self-test class lives in FastSAM3DSlicerLib; Slicer finds it here by its name.
from FastSAM3DSlicerLib.selftest import FastSAM3DSlicerTest  # noqa: F401
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from fastsam3d_mrml.models import DEVICE_CHOICES, MODEL_CHOICES, PRECISION_CHOICES, REMOTE
from fastsam3d_mrml.worker import POLL_INTERVAL_S, Worker

# Application preferences (QSettings); per-scene choices live in the parameter node.
SETTINGS_MODEL = "FastSAM3D/Model"
SETTINGS_DEVICE = "FastSAM3D/Device"
SETTINGS_PRECISION = "FastSAM3D/Precision"
SETTINGS_WEIGHTS_FILE = "FastSAM3D/WeightsFile"
SETTINGS_ADAPTER_FILE = "FastSAM3D/AdapterFile"
SETTINGS_SERVER = "FastSAM3D/Server"
# The token is not saved with the settings (a plain file); this variable can hold it.
TOKEN_VARIABLE = "FASTSAM3D_TOKEN"
SETTINGS_OVERWRITE = "FastSAM3D/AllowOverwrite"
# How long Export waits for queued points before it refuses (it runs on the GUI thread).
EXPORT_WAIT_S = 5


class FastSAM3DSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "FastSAM3D"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["FastSAM3D Slicer contributors"]
        self.parent.helpText = (
            "Click-to-segment CT and MRI with FastSAM3D or SAM-Med3D-turbo. Select a volume, "
            "press Start, then place positive (P) and negative (N) points in any view: the "
            "segment follows each point. Drag points to move them; to delete one, hover it and "
            "press Delete (or right-click it: Delete control point). Pick an existing segment "
            "to refine it. The image encoder runs once per 128³ crop; each further point only "
            "runs the small decoder. See the "
            '<a href="https://github.com/fastsam3d/SlicerFastSAM3D#the-3d-slicer-module">'
            "module documentation</a>."
        )
        self.parent.acknowledgementText = (
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
    """The panel: it forwards user actions to the logic and shows what the logic reports."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._shortcuts = []
        self._installer = None
        self._installingTorch = False
        self._afterInstall = None
        self._timer = qt.QTimer()

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FastSAM3DSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FastSAM3DSlicerLogic()
        for name, label in MODEL_CHOICES:
            self.ui.modelComboBox.addItem(label, name)
        for name, label in DEVICE_CHOICES:
            self.ui.deviceComboBox.addItem(label, name)
        for name, label in PRECISION_CHOICES:
            self.ui.precisionComboBox.addItem(label, name)
        self._restoreSettings()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        self.addObserver(interaction, interaction.InteractionModeChangedEvent, self.updateButtons)
        actions = {
            self.ui.positiveButton: (lambda: self.onPlace(True), "Failed to place a point."),
            self.ui.negativeButton: (lambda: self.onPlace(False), "Failed to place a point."),
            self.ui.undoButton: (self.onUndo, "Undo failed."),
            self.ui.redoButton: (self.onRedo, "Redo failed."),
            self.ui.clearButton: (self.onClear, "Failed to clear the segment."),
            self.ui.nextSegmentButton: (self.onNextSegment, "Failed to add a segment."),
            self.ui.uncertaintyButton: (self.onUncertainty, "Failed to estimate uncertainty."),
            self.ui.suggestButton: (self.onSuggest, "Failed to suggest a point."),
            self.ui.testConnectionButton: (self.onTestConnection, "Connection test failed."),
        }
        for button, (slot, message) in actions.items():
            button.connect("clicked(bool)", self._guarded(slot, message))
        # These open dialogs: no wait cursor over them (they set one where they wait).
        self.ui.startButton.connect(
            "clicked(bool)",
            self._guarded(self.onStart, "Failed to start FastSAM3D.", waitCursor=False),
        )
        self.ui.exportButton.connect(
            "clicked(bool)",
            self._guarded(self.onExport, "Failed to export the segmentation.", waitCursor=False),
        )
        self.ui.segmentSelector.connect(
            "currentSegmentChanged(QString)", self._guarded(self.onSegmentSelected, "")
        )
        self.ui.segmentSelector.connect(
            "currentNodeChanged(vtkMRMLNode*)", self._guarded(self.onSegmentSelected, "")
        )
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._saveSettings)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self._saveSettings)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self._showRemoteFields)
        self.ui.precisionComboBox.connect("currentIndexChanged(int)", self._saveSettings)
        self.ui.serverLineEdit.connect("editingFinished()", self._saveSettings)
        self.ui.overwriteCheckBox.connect("toggled(bool)", self._saveSettings)
        self.ui.overwriteCheckBox.connect(
            "toggled(bool)", self._guarded(self.onOverwriteToggled, "Failed to apply the option.")
        )
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self._saveSettings)
        self.ui.adapterPathLineEdit.connect("currentPathChanged(QString)", self._saveSettings)
        self._timer.setInterval(int(POLL_INTERVAL_S * 1000))
        # Ticks come every 10 ms: a wait cursor would flicker.
        self._pollSlot = self._guarded(self.onTimer, "FastSAM3D update failed.", waitCursor=False)
        self._timer.connect("timeout()", self._pollSlot)
        self.initializeParameterNode()
        self._showRemoteFields()
        self.updateButtons()

    def cleanup(self):
        """Release observers, shortcuts, the timer, the worker thread and the model."""
        self._timer.stop()
        self._removeShortcuts()
        self.removeObservers()
        if self._installer is not None:
            self._installer.shutdown()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self):
        self.initializeParameterNode()
        # Points placed while the module was hidden may have gone to a new segment.
        self._showCurrentSegment()
        self._installShortcuts()

    def exit(self):
        self._removeShortcuts()
        self.setParameterNode(None)

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
            wasBlocked = self.ui.segmentSelector.blockSignals(True)
            self.ui.segmentSelector.setCurrentNode(parameterNode.segmentation)
            self.ui.segmentSelector.setCurrentSegmentID(parameterNode.segmentId)
            self.ui.segmentSelector.blockSignals(wasBlocked)
        self.updateButtons()

    def updateButtons(self, *unused):
        engine = self.logic.engineIfStarted() if self.logic else None
        hasVolume = bool(self._parameterNode and self._parameterNode.inputVolume)
        installing = self._installer is not None or self._installingTorch
        self.ui.startButton.enabled = hasVolume and not installing
        self.ui.testConnectionButton.enabled = not installing
        self.ui.startButton.toolTip = (
            "Load the model and start a session on the input volume."
            if hasVolume
            else "Select an input volume first."
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
        placing = self._placingNode()
        for button, node in (
            (self.ui.positiveButton, engine.positiveNode if started else None),
            (self.ui.negativeButton, engine.negativeNode if started else None),
        ):
            wasBlocked = button.blockSignals(True)
            button.checked = node is not None and placing is node
            button.blockSignals(wasBlocked)

    # -- actions -------------------------------------------------------------------------

    def onStart(self):
        if not self._dependenciesReady(then=self.onStart):
            return
        node = self._parameterNode
        if node.inputVolume is None:
            raise ValueError("Select an input volume.")
        engine = self.logic.engine()
        engine.statusCallback = self._showStatus
        engine.errorCallback = self._onEngineError
        engine.segmentsChangedCallback = self._showCurrentSegment
        engine.suggestionCallback = self._onSuggestion
        engine.uncertaintyCallback = self._onUncertainty
        engine.warningCallback = lambda message: slicer.util.warningDisplay(
            message, windowTitle="FastSAM3D"
        )
        # Results are collected as soon as the event loop is back, then on the timer.
        engine.pollRequestedCallback = lambda: qt.QTimer.singleShot(0, self._pollSlot)
        engine.protectOtherSegments = not self.ui.overwriteCheckBox.checked
        with slicer.util.WaitCursor():
            self.logic.loadModel(
                self.ui.modelComboBox.currentData,
                self.ui.deviceComboBox.currentData,
                self.ui.weightsPathLineEdit.currentPath or None,
                *self._server(),
                self.ui.adapterPathLineEdit.currentPath or None,
                "auto" if self._remote() else self.ui.precisionComboBox.currentData,
            )
            engine.setInputs(node.inputVolume, node.segmentation, node.segmentId)
        node.segmentation = engine.segmentationNode
        wasBlocked = self.ui.segmentSelector.blockSignals(True)
        self.ui.segmentSelector.setCurrentNode(engine.segmentationNode)
        self.ui.segmentSelector.blockSignals(wasBlocked)
        self._timer.start()
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
        if not self._dependenciesReady(then=self.onTestConnection):
            return
        from fastsam3d_mrml.models import check_server

        with slicer.util.WaitCursor():
            message = check_server(*self._server(), self.ui.modelComboBox.currentData)
        self._showStatus(message)
        slicer.util.infoDisplay(message, windowTitle="FastSAM3D")

    def onPlace(self, positive):
        """Place points of this polarity; asked again while placing them, stop."""
        engine = self._engine()
        node = engine.positiveNode if positive else engine.negativeNode
        if self._placingNode() is node:
            slicer.app.applicationLogic().GetInteractionNode().SwitchToViewTransformMode()
        else:
            markupsLogic = slicer.modules.markups.logic()
            markupsLogic.SetActiveList(node)
            markupsLogic.StartPlaceMode(True)
        self.updateButtons()

    def onTogglePolarity(self):
        """Switch placing between positive and negative points."""
        engine = self._engine()
        self.onPlace(self._placingNode() is not engine.positiveNode)

    def onToggleVisibility(self):
        self._engine().toggleSegmentVisibility()

    def onDeleteLastPoint(self):
        self._engine().deleteLastPoint()

    def onUndo(self):
        self._engine().undo()

    def onRedo(self):
        self._engine().redo()

    def onClear(self):
        self._engine().clearSegment()

    def onNextSegment(self):
        self._engine().nextSegment()

    def onUncertainty(self):
        self._engine().computeUncertainty()

    def onSuggest(self):
        self._engine().suggestNextPoint()

    def onExport(self):
        engine = self._engine()
        # A click finishes in well under a second; a model download or encoding may not.
        with slicer.util.WaitCursor():
            idle = engine.waitForIdle(EXPORT_WAIT_S)
        if not idle:
            raise RuntimeError(
                "FastSAM3D is still working on the last points; export once the status says Ready."
            )
        default = os.path.join(qt.QDir.homePath(), f"{engine.segmentationNode.GetName()}.seg.nrrd")
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(),
            "Export segmentation",
            default,
            "Segmentation (*.seg.nrrd);;Labelmap (*.nrrd *.nii.gz)",
        )
        if path:
            engine.exportSegmentation(path)
            self._showStatus(f"Saved {path}")

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

    def onTimer(self):
        try:
            self._deliverResults()
        finally:  # also after an error in a result's callback: the other jobs' still come
            self._updateTimer()

    def _deliverResults(self):
        if self._installer is not None:
            self._installer.poll(POLL_INTERVAL_S)  # lets the installer's thread read pip's output
        engine = self.logic.engineIfStarted()
        if engine is not None:
            # The selector reacts to segments the logic adds or removes by selecting another
            # one; that is not the user's choice.
            wasBlocked = self.ui.segmentSelector.blockSignals(True)
            try:
                engine.processEvents()
            finally:
                self.ui.segmentSelector.blockSignals(wasBlocked)

    def _updateTimer(self):
        engine = self.logic.engineIfStarted()
        busy = self._installer is not None or (engine is not None and engine.busy)
        self.ui.progressBar.visible = busy
        if busy and not self._timer.isActive():
            self._timer.start()
        elif not busy:
            self._timer.stop()

    # -- engine callbacks ------------------------------------------------------------------

    def _showStatus(self, message):
        self.ui.statusLabel.text = message
        if engine := self.logic.engineIfStarted():
            if engine.busy and not self._timer.isActive():
                self._timer.start()

    def _onEngineError(self, error):
        if isinstance(error, (ValueError, KeyError)):  # e.g. a point outside the volume
            slicer.util.showStatusMessage(str(error), 5000)
            return
        slicer.util.errorDisplay(str(error), windowTitle="FastSAM3D")

    def _showCurrentSegment(self):
        engine = self.logic.engineIfStarted()
        if engine is None or engine.currentSegmentId is None or self._parameterNode is None:
            return
        wasBlocked = self.ui.segmentSelector.blockSignals(True)
        self.ui.segmentSelector.setCurrentNode(engine.segmentationNode)
        self.ui.segmentSelector.setCurrentSegmentID(engine.currentSegmentId)
        self.ui.segmentSelector.blockSignals(wasBlocked)
        self._parameterNode.segmentId = engine.currentSegmentId

    def _onUncertainty(self, overlayNode):
        slicer.util.setSliceViewerLayers(foreground=overlayNode, foregroundOpacity=0.4)

    def _onSuggestion(self, pointRas):
        if pointRas is None:
            self._showStatus("The segment is certain everywhere in its crop: nothing to suggest.")
            return
        slicer.modules.markups.logic().JumpSlicesToLocation(*[float(v) for v in pointRas], True)

    # -- helpers -------------------------------------------------------------------------

    def _guarded(self, slot, message, waitCursor=True):
        """Every slot runs inside one tryWithErrorDisplay, so errors reach the user once."""

        def run(*args):
            with slicer.util.tryWithErrorDisplay(
                message or "FastSAM3D error.", waitCursor=waitCursor
            ):
                slot()

        return run

    def _engine(self):
        engine = self.logic.engineIfStarted()
        if engine is None or engine.volumeNode is None:
            raise RuntimeError("Press Start first.")
        return engine

    def _placingNode(self):
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        if interaction.GetCurrentInteractionMode() != interaction.Place:
            return None
        selection = slicer.app.applicationLogic().GetSelectionNode()
        return slicer.mrmlScene.GetNodeByID(selection.GetActivePlaceNodeID())

    def _installShortcuts(self):
        self._removeShortcuts()
        keys = {
            "P": lambda: self.onPlace(True),
            "N": lambda: self.onPlace(False),
            # SlicerNNInteractive's T and V are Slicer's own keys in slice views (foreground
            # opacity, slice visibility): the same actions here take Shift+T and H.
            "Shift+T": self.onTogglePolarity,
            "H": self.onToggleVisibility,
            "D": self.onDeleteLastPoint,
            "S": self.onSuggest,
            "Ctrl+Z": self.onUndo,
            "Ctrl+Y": self.onRedo,
            "Ctrl+N": self.onNextSegment,
        }
        for key, slot in keys.items():
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.connect("activated()", self._guarded(slot, f"{key} failed."))
            self._shortcuts.append(shortcut)

    def _removeShortcuts(self):
        for shortcut in self._shortcuts:
            shortcut.disconnect("activated()")
            shortcut.setParent(None)
        self._shortcuts = []

    def _server(self):
        """(address, token) of the remote server, or (None, None) for a local device."""
        if not self._remote():
            return None, None
        return self.ui.serverLineEdit.text.strip(), self.ui.tokenLineEdit.text.strip() or None

    def _remote(self):
        return self.ui.deviceComboBox.currentData == REMOTE

    def _showRemoteFields(self, *unused):
        remote = self._remote()
        self.ui.remoteServerWidget.visible = remote
        # The server chooses its own precision.
        self.ui.precisionLabel.visible = self.ui.precisionComboBox.visible = not remote

    def _restoreSettings(self):
        settings = qt.QSettings()
        for combo, key, default in (
            (self.ui.modelComboBox, SETTINGS_MODEL, "fastsam3d"),
            (self.ui.deviceComboBox, SETTINGS_DEVICE, "auto"),
            (self.ui.precisionComboBox, SETTINGS_PRECISION, "auto"),
        ):
            index = combo.findData(settings.value(key, default))
            combo.currentIndex = max(index, 0)
        self.ui.overwriteCheckBox.checked = slicer.util.toBool(
            settings.value(SETTINGS_OVERWRITE, False)
        )
        self.ui.weightsPathLineEdit.currentPath = settings.value(SETTINGS_WEIGHTS_FILE, "")
        self.ui.adapterPathLineEdit.currentPath = settings.value(SETTINGS_ADAPTER_FILE, "")
        self.ui.serverLineEdit.text = settings.value(SETTINGS_SERVER, "")
        self.ui.tokenLineEdit.text = os.environ.get(TOKEN_VARIABLE, "")

    def _saveSettings(self, *unused):
        settings = qt.QSettings()
        settings.setValue(SETTINGS_MODEL, self.ui.modelComboBox.currentData)
        settings.setValue(SETTINGS_DEVICE, self.ui.deviceComboBox.currentData)
        settings.setValue(SETTINGS_PRECISION, self.ui.precisionComboBox.currentData)
        settings.setValue(SETTINGS_OVERWRITE, self.ui.overwriteCheckBox.checked)
        settings.setValue(SETTINGS_WEIGHTS_FILE, self.ui.weightsPathLineEdit.currentPath)
        settings.setValue(SETTINGS_ADAPTER_FILE, self.ui.adapterPathLineEdit.currentPath)
        settings.setValue(SETTINGS_SERVER, self.ui.serverLineEdit.text.strip())

    def _dependenciesReady(self, then):
        """True if PyTorch (onnxruntime for a remote server) and the engine's dependencies are
        there; else asks once, installs PyTorch through the PyTorch extension, and the rest in
        the background, then calls ``then`` (the action that asked) if the module is still
        shown."""
        if self._installer is not None or self._installingTorch:
            return False
        remote = self._remote()
        missing = install.missing_packages(remote=remote)
        if not missing:
            return True
        needsTorch = "torch" in missing
        if needsTorch:
            try:
                install.check_torch_can_be_installed()
            except install.RestartRequired as error:
                if slicer.util.confirmOkCancelDisplay(
                    f"{error}\n\nRestart Slicer now?", windowTitle="FastSAM3D: restart needed"
                ):
                    slicer.util.restart()
                return False
        steps = install.plan_installation(
            install.slicer_python(), source=install.source_tree(), remote=remote
        )
        listing = [step.description for step in steps]
        if needsTorch:
            listing.insert(0, f"PyTorch {install.TORCH_REQUIREMENT}, through the PyTorch extension")
        if not slicer.util.confirmOkCancelDisplay(
            "FastSAM3D needs these Python packages, which will be downloaded and installed "
            f"into Slicer now ({'about 30 MB' if remote else 'a few minutes, up to a few GB'}):\n\n"
            + "\n".join(f"• {line}" for line in listing),
            windowTitle="FastSAM3D: first use",
        ):
            return False
        if needsTorch:
            self._showStatus("Installing PyTorch...")
            # The extension's installer processes GUI events while it downloads: no second
            # install may start meanwhile.
            self._installingTorch = True
            self.updateButtons()
            try:
                with slicer.util.WaitCursor():
                    install.install_torch()
            finally:
                self._installingTorch = False
                self.updateButtons()
        if not steps:
            return True
        self._afterInstall = then
        self._installer = Worker(
            on_progress=lambda line, fraction: self._showStatus(line),
            on_error=self._onInstallFailed,
        )
        self._installer.submit(
            lambda report: install.run_steps(steps, lambda line: report(line, None)),
            on_done=self._onInstalled,
            label="install",
        )
        self._timer.start()
        self.updateButtons()
        return False

    def _onInstalled(self, _value):
        self._finishInstall()
        self._showStatus("Installed.")
        if self._parameterNode is None:  # the user left the module meanwhile: nothing to run
            return
        # Outside this timer slot, so that a failure is reported once, by its own guard.
        qt.QTimer.singleShot(
            0,
            self._guarded(
                self._afterInstall, "FastSAM3D failed after installing.", waitCursor=False
            ),
        )

    def _onInstallFailed(self, error):
        self._finishInstall()
        self._showStatus("Installation failed.")
        slicer.util.errorDisplay(str(error), windowTitle="FastSAM3D: installation failed")

    def _finishInstall(self):
        installer, self._installer = self._installer, None
        if installer is not None:
            installer.shutdown()
        self.updateButtons()


class FastSAM3DSlicerLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic: the parameter node, and the interactive engine on the main scene.

    The engine (``fastsam3d_mrml.logic.InteractiveSegmentationLogic``) does the work and runs
    without a widget; :meth:`segment` is a one-call entry point for the Python console.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._engine = None

    def getParameterNode(self):
        return FastSAM3DSlicerParameterNode(super().getParameterNode())

    def engine(self, scene=None):
        """The interactive engine, created on first use (this imports the core; torch is
        imported when a local model loads)."""
        if self._engine is None:
            from fastsam3d_mrml.logic import InteractiveSegmentationLogic

            self._engine = InteractiveSegmentationLogic(scene or slicer.mrmlScene)
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
        engine = self.engine()
        key = (modelName, device, weightsFile, server, token, adapterFile, precision)
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

        Raises:
            RuntimeError: the model or an edit failed, or no result came within ``timeout``.
        """
        engine = self.engine()
        errors = []
        engine.errorCallback = errors.append
        self.loadModel(modelName, device)
        engine.setInputs(volumeNode, segmentationNode)
        for node, points in (
            (engine.positiveNode, positiveRas),
            (engine.negativeNode, negativeRas),
        ):
            for point in points:
                node.AddControlPointWorld(vtk.vtkVector3d(*[float(v) for v in point]), "")
        engine.synchronizePoints()
        if not engine.waitForIdle(timeout):
            raise RuntimeError(f"FastSAM3D gave no result within {timeout:.0f} s")
        if errors:
            raise RuntimeError(str(errors[0])) from errors[0]
        return engine.segmentationNode, engine.currentSegmentId

    def resetEngine(self):
        """Drop the session and the model (scene closed)."""
        if self._engine is not None:
            self._engine.cleanup()
        self._engine = None

    def cleanup(self):
        self.resetEngine()
