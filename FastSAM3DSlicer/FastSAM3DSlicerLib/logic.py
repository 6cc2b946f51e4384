"""The module's logic: MRML nodes in, live segments out, with all model work on one worker.

:class:`InteractiveSegmentationLogic` runs without the widget and without the Slicer application:
it needs a MRML scene, a volume node, and a model (or any core predictor). Points live in two
markups fiducial nodes, positive and negative; after the user adds, moves or deletes points,
:meth:`~InteractiveSegmentationLogic.synchronizePoints` turns the difference into edits that the
worker runs in order. Results come back through :meth:`~InteractiveSegmentationLogic.processEvents`
(a timer in Slicer), which writes them into the segmentation node on the calling thread and,
once no edit is pending, makes the markups show the session's clicks (after undo, redo, a new
segment, or a point the session refused).

Errors in edits reach ``errorCallback``; errors in direct calls are raised.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from . import mrml_io
from .models import WARNING_PREFIX, load_predictor
from .session_runner import SAME_POINT_MM, SessionRunner, Update
from .worker import Worker

POSITIVE_COLOR = (0.2, 0.8, 0.2)
NEGATIVE_COLOR = (0.9, 0.2, 0.2)
SUGGESTION_COLOR = (1.0, 0.85, 0.1)
# Self-ensembling passes for the uncertainty overlay (the paper's default).
UNCERTAINTY_SAMPLES = 20


class _WorkerState:
    """What lives on the worker thread: the predictor, the image and the session runner."""

    def __init__(self) -> None:
        self.predictor: Any = None
        self.volume: Any = None
        self.runner: SessionRunner | None = None
        self.protect = True
        # (model, device, weights file) in use or being loaded; None after a failed load.
        self.model_key: tuple | None = None

    def require_runner(self) -> SessionRunner:
        if self.runner is None:
            if self.predictor is None:
                raise RuntimeError("no model is loaded yet: choose a model and wait for it")
            raise RuntimeError("no input volume is selected")
        return self.runner


def _open(state: _WorkerState) -> Update | None:
    """On the worker: a new session when both a model and an image are there."""
    if state.predictor is None or state.volume is None:
        state.runner = None
        return None
    state.runner = SessionRunner(state.volume, state.predictor, state.protect)
    return state.runner.snapshot()


class InteractiveSegmentationLogic:
    """Click-to-segment on MRML nodes.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer).
        protectOtherSegments: True keeps every other segment's voxels out of the edited one.
    """

    def __init__(self, scene: Any, protectOtherSegments: bool = True) -> None:
        mrml_io.ensure_segmentation_converters()
        self.scene = scene
        self.protectOtherSegments = protectOtherSegments
        self.statusCallback: Callable[[str], None] | None = None
        self.errorCallback: Callable[[BaseException], None] | None = None
        # Called when segments are added or removed, or points go to another segment.
        self.segmentsChangedCallback: Callable[[], None] | None = None
        self.suggestionCallback: Callable[[np.ndarray | None], None] | None = None
        self.uncertaintyCallback: Callable[[Any], None] | None = None
        # Called with messages the user must see, e.g. a fallback from the GPU to the CPU.
        self.warningCallback: Callable[[str], None] | None = None
        self.status = "No model loaded"
        self.lastLatencySeconds: float | None = None
        self.lastEncoderRan = False
        self.volumeNode = self.segmentationNode = None
        self.positiveNode = self.negativeNode = self.suggestionNode = None
        self.uncertaintyNode = None
        self._worker = Worker(on_progress=self._onProgress, on_error=self._onJobError)
        self._state = _WorkerState()
        self._fingerprint: tuple | None = None
        self._segmentIds: dict[int, str] = {}  # session segment id -> MRML segment ID
        self._created: set[str] = set()  # MRML segments this logic added
        self._base: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._adopt: deque[str] = deque()  # MRML segments for the next new session segments
        self._currentSessionId = 1
        self._synced: dict[tuple[str, str], tuple[np.ndarray, bool]] = {}
        self._clicks: tuple = ()
        self._updatingMarkups = False
        self._targetSegmentId = ""
        self._opening = 0  # session-opening jobs queued and not yet applied

    # -- model and inputs ----------------------------------------------------------------

    def setModel(self, modelName: str, device: str = "auto", weightsFile: str | None = None):
        """Load a model on the worker (downloading its weights if needed). Changing the model
        starts a new session on the same volume and segment."""
        self._setStatus(f"Loading {modelName}...")
        state = self._state
        state.model_key = (modelName, device, weightsFile)

        def job(report):
            try:
                state.predictor = load_predictor(modelName, device, weightsFile, report)
            except BaseException:
                state.model_key = None  # so that asking again retries
                raise
            return _open(state)

        self._submitOpen(job, "load model")

    @property
    def loadedModel(self) -> tuple | None:
        """(model, device, weights file) of :meth:`setModel`'s model, loaded or loading; None
        when none is, when its load failed, or when it fell back to the CPU (asking again
        retries the device)."""
        if getattr(self._state.predictor, "fell_back", False):
            return None
        return self._state.model_key

    def setPredictor(self, predictor: Any) -> None:
        """Use a ready core predictor or built model (tests, custom models)."""
        state = self._state

        state.model_key = None

        def job(report):
            state.predictor = predictor
            return _open(state)

        self._submitOpen(job, "set predictor")

    def setInputs(self, volumeNode: Any, segmentationNode: Any = None, segmentId: str = "") -> None:
        """Segment ``volumeNode`` into ``segmentationNode`` (created if None), into
        ``segmentId`` (a new segment if empty).

        For another volume, or another segmentation, the points are cleared; for the same ones
        (e.g. their voxels changed) the current segment's points are placed again on the new
        session.

        Raises:
            mrml_io.VolumeNotSupportedError: the volume cannot be segmented.
        """
        volume = mrml_io.volume_from_node(volumeNode)
        same = volumeNode is self.volumeNode and segmentationNode is self.segmentationNode
        self.volumeNode = volumeNode
        if segmentationNode is None:
            segmentationNode = self.scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", f"{volumeNode.GetName()} FastSAM3D"
            )
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        if segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        self.segmentationNode = segmentationNode
        self._targetSegmentId = segmentId
        self._ensureMarkupsNodes(clear=not same)
        if not same:
            self._base = {}
        self._fingerprint = mrml_io.volume_fingerprint(volumeNode)
        state = self._state
        state.protect = self.protectOtherSegments

        def job(report):
            state.volume = volume
            return _open(state)

        self._submitOpen(job, "open volume")

    def _submitOpen(self, job: Callable, label: str) -> None:
        """Queue a job that starts a new session; points wait for it, then are replayed."""
        self._opening += 1

        def failed(error: BaseException) -> None:
            self._opening -= 1
            self._onJobError(error)

        self._worker.submit(job, self._onOpened, failed, label=label)

    def _onOpened(self, update: Update | None) -> None:
        """A new session: map its first segment to the wanted MRML segment."""
        self._opening -= 1
        if self.segmentationNode is None:
            self._setStatus("Model ready: select a volume")
            return
        self._segmentIds, self._adopt = {}, deque()
        self._currentSessionId = 1
        target = self._targetSegmentId
        if target and self.segmentationNode.GetSegmentation().GetSegment(target):
            self._adopt.append(target)
        self._synced = {}  # the new session has no clicks: the markups' points are replayed
        self._applyUpdate(update)
        if update is None:
            self._setStatus("Waiting for both a model and a volume")
        else:
            self.synchronizePoints()

    # -- points --------------------------------------------------------------------------

    def synchronizePoints(self) -> None:
        """Queue the edits that turn the session's clicks into the markups' points."""
        if self._updatingMarkups or self.volumeNode is None or self._opening:
            return  # while a session opens, points wait: they are replayed when it is open
        if mrml_io.volume_fingerprint(self.volumeNode) != self._fingerprint:
            # The image changed: a new session, where the points are replayed once it opens.
            self.setInputs(self.volumeNode, self.segmentationNode, self.currentSegmentId or "")
            return
        current = self._markupsPoints()
        for key in [k for k in self._synced if k not in current]:
            self._submitEdit("remove", *self._synced[key])
        for key, (ras, positive) in current.items():
            old = self._synced.get(key)
            if old is not None and np.linalg.norm(old[0] - ras) > SAME_POINT_MM:
                self._submitEdit("move", old[0], positive, ras)
        for key, (ras, positive) in current.items():
            if key not in self._synced:
                self._submitEdit("add", ras, positive)
        self._synced = current

    def _markupsPoints(self) -> dict[tuple[str, str], tuple[np.ndarray, bool]]:
        points = {}
        for node, positive in ((self.positiveNode, True), (self.negativeNode, False)):
            for pointId, ras in mrml_io.control_points_world(node):
                points[(node.GetID(), pointId)] = (ras, positive)
        return points

    def _submitEdit(self, kind: str, ras: np.ndarray, positive: bool, newRas=None) -> None:
        state, submitted = self._state, time.perf_counter()

        def job(report):
            runner = state.require_runner()
            if kind == "remove":
                return runner.remove_point(ras, positive)
            target = ras if kind == "add" else newRas
            if runner.will_encode(target):
                report("Preparing: encoding the image around the point...", None)
            if kind == "add":
                return runner.add_point(ras, positive)
            return runner.move_point(ras, newRas, positive)

        def done(update: Update) -> None:
            self.lastLatencySeconds = time.perf_counter() - submitted
            self.lastEncoderRan = update.encoder_ran
            self._applyUpdate(update)

        self._setStatus("Segmenting...")
        self._worker.submit(job, done, label=f"{kind} point")

    # -- history and segments ------------------------------------------------------------

    def undo(self) -> None:
        self._submitRunner(lambda runner: runner.undo(), "undo")

    def redo(self) -> None:
        self._submitRunner(lambda runner: runner.redo(), "redo")

    def clearSegment(self) -> None:
        """Remove the current segment's points and voxels (undoable)."""
        self._submitRunner(lambda runner: runner.reset(), "clear")

    def nextSegment(self) -> None:
        """Start a new segment; later points go to it."""
        self._submitRunner(lambda runner: runner.new_segment(), "new segment")

    def selectSegment(self, segmentId: str) -> None:
        """Send later points to this MRML segment (one made elsewhere is adopted, its voxels
        kept)."""
        for sessionId, mapped in self._segmentIds.items():
            if mapped == segmentId and self.segmentationNode.GetSegmentation().GetSegment(mapped):
                self._submitRunner(
                    lambda runner, sid=sessionId: runner.select_segment(sid), "select"
                )
                return
        segment = self.segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise ValueError(f"{self.segmentationNode.GetName()} has no segment {segmentId!r}")
        self._adopt.append(segmentId)
        name = segment.GetName()
        self._submitRunner(lambda runner: runner.new_segment(name), "adopt segment")

    def _submitRunner(self, action: Callable[[SessionRunner], Update], label: str) -> None:
        state = self._state
        self._worker.submit(
            lambda report: action(state.require_runner()), self._applyUpdate, label=label
        )

    @property
    def currentSegmentId(self) -> str | None:
        """The MRML segment that points go to."""
        return self._segmentIds.get(self._currentSessionId)

    # -- uncertainty ---------------------------------------------------------------------

    def computeUncertainty(self, suggest: bool = False) -> None:
        """Show the current segment's uncertainty (entropy, bits) as an overlay volume; with
        ``suggest``, also put the most uncertain point in the suggestion markups node."""
        state = self._state
        self._setStatus("Estimating uncertainty...")

        def job(report):
            return state.require_runner().uncertainty(UNCERTAINTY_SAMPLES)

        self._worker.submit(
            job, lambda result: self._applyUncertainty(result, suggest), label="uncertainty"
        )

    def suggestNextPoint(self) -> None:
        """Find the most uncertain voxel of the current segment and mark it."""
        self.computeUncertainty(suggest=True)

    def _applyUncertainty(self, uncertainty: Any, suggest: bool) -> None:
        if (
            self.uncertaintyNode is None
            or self.scene.GetNodeByID(self.uncertaintyNode.GetID()) is None
        ):
            self.uncertaintyNode = self.scene.AddNewNodeByClass(
                "vtkMRMLScalarVolumeNode", "FastSAM3D uncertainty"
            )
        node = self.uncertaintyNode
        mrml_io.update_overlay_volume(node, self.volumeNode, uncertainty.entropy.array)
        display = node.GetDisplayNode()
        if display is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(0.0, 1.0)
            if self.scene.GetNodeByID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt"):
                display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
        if self.uncertaintyCallback is not None:
            self.uncertaintyCallback(node)
        point = uncertainty.most_uncertain_ras
        if suggest:
            mrml_io.set_control_points_world(self.suggestionNode, [] if point is None else [point])
            if self.suggestionCallback is not None:
                self.suggestionCallback(point)
        self._setStatus("Ready" if point is not None else "Ready: the segment is certain")

    # -- export --------------------------------------------------------------------------

    def exportSegmentation(self, path: str) -> Any:
        """Save the segmentation (``.seg.nrrd``) or a labelmap on the volume's grid."""
        if self.segmentationNode is None:
            raise RuntimeError("there is no segmentation to export yet")
        return mrml_io.export_segmentation(self.segmentationNode, path, self.volumeNode)

    # -- main-thread event handling ------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._worker.pending > 0

    def processEvents(self) -> int:
        """Apply finished edits to MRML (call from the main thread, e.g. a timer)."""
        return self._worker.poll()

    def waitForIdle(self, timeout: float | None = None) -> bool:
        """Block until every queued edit is applied (tests, scripts); False on timeout."""
        return self._worker.wait(timeout)

    def cleanup(self) -> None:
        """Stop the worker; the session and model are released with it."""
        self._worker.shutdown()
        self._state = _WorkerState()

    def _applyUpdate(self, update: Update | None) -> None:
        if update is None:
            return
        previous = self.currentSegmentId
        self._currentSessionId = update.current
        changed = self._syncSegments(update)
        self._targetSegmentId = self.currentSegmentId or ""
        if (changed or self.currentSegmentId != previous) and self.segmentsChangedCallback:
            self.segmentsChangedCallback()
        for patch in update.patches:
            segmentId = self._segmentIds.get(patch.session_id)
            if segmentId is not None:
                self._writePatch(segmentId, patch.lo_ijk, patch.hi_ijk, patch.mask)
        self._clicks = update.clicks_ras
        if self._worker.pending == 0:
            self._showClicks()
            latency = self.lastLatencySeconds
            self._setStatus(
                "Ready"
                if latency is None
                else f"Ready: last click {latency * 1000:.0f} ms"
                + (" (image encoded)" if self.lastEncoderRan else "")
            )

    def _writePatch(self, segmentId: str, lo, hi, mask) -> None:
        mask = mask.astype(bool)
        if segmentId in self._base:
            baseLo, baseHi, base = self._base[segmentId]
            newLo, newHi = np.minimum(lo, baseLo), np.maximum(hi, baseHi)
            merged = np.zeros(tuple(newHi - newLo), dtype=bool)
            merged[tuple(slice(a - b, c - b) for a, c, b in zip(lo, hi, newLo))] = mask
            merged[tuple(slice(a - b, c - b) for a, c, b in zip(baseLo, baseHi, newLo))] |= base
            lo, hi, mask = newLo, newHi, merged
        if self.protectOtherSegments and mask.any():
            owned = set(self._segmentIds.values())
            segmentation = self.segmentationNode.GetSegmentation()
            for n in range(segmentation.GetNumberOfSegments()):
                other = segmentation.GetNthSegmentID(n)
                if other != segmentId and other not in owned:
                    mask &= ~mrml_io.segment_box(
                        self.segmentationNode, other, self.volumeNode, lo, hi
                    )
        mrml_io.write_segment_box(self.segmentationNode, segmentId, self.volumeNode, lo, hi, mask)

    def _syncSegments(self, update: Update) -> bool:
        """Give every live session segment an MRML segment; True if segments were added or
        removed."""
        segmentation = self.segmentationNode.GetSegmentation()
        live = {sessionId for sessionId, _, _ in update.segments}
        changed = False
        for sessionId, name, color in update.segments:
            mapped = self._segmentIds.get(sessionId)
            if mapped is None and self._adopt:
                mapped = self._segmentIds[sessionId] = self._adopt.popleft()
                if mapped not in self._created and mapped not in self._base:
                    self._rememberBase(mapped)
            if mapped is None or segmentation.GetSegment(mapped) is None:
                newId = segmentation.AddEmptySegment(mapped or "", name, list(color))
                self._segmentIds[sessionId] = newId
                self._created.add(newId)
                changed = True
        for sessionId, mapped in self._segmentIds.items():
            if (
                sessionId not in live
                and mapped in self._created
                and segmentation.GetSegment(mapped)
            ):
                segmentation.RemoveSegment(mapped)  # an undone "next segment"
                changed = True
        return changed

    def _rememberBase(self, segmentId: str) -> None:
        """Keep the voxels a segment had before the session adopted it."""
        shape = np.array(self.volumeNode.GetImageData().GetDimensions())
        base = mrml_io.segment_box(
            self.segmentationNode, segmentId, self.volumeNode, [0, 0, 0], shape
        )
        if base.any():
            nonzero = np.argwhere(base)
            lo, hi = nonzero.min(axis=0), nonzero.max(axis=0) + 1
            self._base[segmentId] = (lo, hi, base[tuple(slice(a, b) for a, b in zip(lo, hi))])

    def _showClicks(self) -> None:
        """Make the markups show the session's clicks if they differ (undo, refused point)."""
        wanted = sorted((tuple(np.round(ras, 3)), positive) for ras, positive in self._clicks)
        shown = sorted(
            (tuple(np.round(ras, 3)), positive) for ras, positive in self._synced.values()
        )
        if wanted == shown:
            return
        self._updatingMarkups = True
        try:
            for node, positive in ((self.positiveNode, True), (self.negativeNode, False)):
                mrml_io.set_control_points_world(
                    node, [ras for ras, p in self._clicks if p == positive]
                )
        finally:
            self._updatingMarkups = False
        self._synced = self._markupsPoints()

    def _ensureMarkupsNodes(self, clear: bool) -> None:
        specs = (
            ("positiveNode", "FastSAM3D positive", POSITIVE_COLOR),
            ("negativeNode", "FastSAM3D negative", NEGATIVE_COLOR),
            ("suggestionNode", "FastSAM3D suggestion", SUGGESTION_COLOR),
        )
        for attribute, name, color in specs:
            node = getattr(self, attribute)
            if node is None or self.scene.GetNodeByID(node.GetID()) is None:
                node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
                node.CreateDefaultDisplayNodes()
                display = node.GetDisplayNode()
                if display is not None:
                    display.SetSelectedColor(*color)
                    display.SetColor(*color)
                node.SetMarkupLabelFormat("" if attribute == "suggestionNode" else name[10])
                setattr(self, attribute, node)
        self.suggestionNode.SetLocked(True)
        if clear:
            self._updatingMarkups = True
            try:
                for node in (self.positiveNode, self.negativeNode, self.suggestionNode):
                    node.RemoveAllControlPoints()
            finally:
                self._updatingMarkups = False
        self._synced = {}

    # -- reporting -----------------------------------------------------------------------

    def _setStatus(self, message: str) -> None:
        self.status = message
        if self.statusCallback is not None:
            self.statusCallback(message)

    def _onProgress(self, message: str, fraction: float | None) -> None:
        if message.startswith(WARNING_PREFIX):
            message = message[len(WARNING_PREFIX) :]
            logging.warning("FastSAM3D: %s", message)
            if self.warningCallback is not None:
                self.warningCallback(message)
        self._setStatus(message if fraction is None else f"{message} ({fraction:.0%})")

    def _onJobError(self, error: BaseException) -> None:
        if self._worker.pending == 0:
            self._showClicks()  # drop a point the session refused
        self._setStatus(f"Error: {error}")
        if self.errorCallback is not None:
            self.errorCallback(error)
        else:
            logging.error("FastSAM3D: %s", error)
