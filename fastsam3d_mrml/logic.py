"""The module's logic: MRML nodes in, live segments out, with all model work on one worker.

:class:`InteractiveSegmentationLogic` runs without the widget and without the Slicer application:
it needs a MRML scene, a volume node, and a model (or any core predictor). Each fact has one
home:

- the clicks, crops, masks and undo history: the core ``Session``, on the worker thread
  (:mod:`.session_runner`);
- the points as the user edits them: :class:`~.markups_clicks.ClickMarkups`, whose control
  points carry their click's id;
- the MRML segments, by label value, and which session segment writes to which:
  :class:`~.segment_writer.SegmentWriter`; the voxels the session protects are read from it when
  a session opens, and again only when another tool changes those segments.

When the user adds, moves or deletes a point, :meth:`~InteractiveSegmentationLogic.
synchronizePoints` turns the difference between the points and the clicks sent so far into
edits that the worker runs in order. Results come back through :meth:`~InteractiveSegmentation
Logic.processEvents`, on the thread that owns the scene, which waits for them a bounded time with
the GIL released (Slicer's main thread otherwise starves the worker; see :mod:`.worker`).

Everything the front end shows reaches it through one observer given at construction
(:class:`~.events.EngineObserver`): status, errors of edits, busy and idle, segments, the
uncertainty overlay. Errors in direct calls are raised.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from . import mrml_io
from .events import EngineObserver
from .markups_clicks import ClickMarkups
from .models import WARNING_PREFIX, load_predictor
from .segment_writer import SegmentWriter
from .session_runner import ClickInfo, SessionOpening, SessionRunner, Update, WorkerState
from .worker import POLL_WAIT_S, Worker

# Self-ensembling passes for the uncertainty overlay (the paper's default).
UNCERTAINTY_SAMPLES = 20
UNCERTAINTY_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"


class InteractiveSegmentationLogic:
    """Click-to-segment on MRML nodes.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer).
        protectOtherSegments: True keeps every other segment's voxels out of the edited one
            (those of segments made with other tools too, also while the session runs); False
            lets the edited segment take its own session's segments' voxels and overlap others.
            Read when a session opens.
        observer: what the front end shows of the engine (status, errors, busy, segments);
            None: errors are logged, nothing else is shown.

    Attributes:
        pollWaitSeconds: the longest :meth:`processEvents` blocks the calling thread.
    """

    def __init__(
        self,
        scene: Any,
        protectOtherSegments: bool = True,
        observer: EngineObserver | None = None,
    ) -> None:
        mrml_io.ensure_segmentation_converters()
        self.scene = scene
        self.protectOtherSegments = protectOtherSegments
        self.pollWaitSeconds = POLL_WAIT_S
        self._observer = observer if observer is not None else EngineObserver()
        self._busy = False  # as the observer was last told
        self.status = "No model loaded"
        self.lastLatencySeconds: float | None = None
        self.lastEncoderRan = False
        self.volumeNode = self.segmentationNode = None
        self.uncertaintyNode = None
        self._worker = Worker(on_progress=self._onProgress, on_error=self._onJobError)
        self._state = WorkerState()
        self._markups: ClickMarkups | None = None
        self._writer: SegmentWriter | None = None
        self._fingerprint: tuple | None = None
        self._currentSessionId = 1
        self._targetSegmentId = ""
        # Clicks by id as the session will hold them once every queued edit has run ...
        self._expected: dict[str, tuple[np.ndarray, bool]] = {}
        # ... and as the session last reported them.
        self._reported: tuple[ClickInfo, ...] = ()
        self._opening = 0  # session-opening jobs queued and not yet applied
        # Counts setInputs calls (each opens a new session); see _forTheseInputs.
        self._inputs = 0
        self._protectedState: tuple = ()  # the protected segments as the session last read them
        self._applying = False  # writing a result into MRML

    @property
    def observer(self) -> EngineObserver:
        """The front end's observer, fixed at construction."""
        return self._observer

    # -- model and inputs ----------------------------------------------------------------

    def setModel(
        self,
        modelName: str,
        device: str = "auto",
        weightsFile: str | None = None,
        server: str | None = None,
        token: str | None = None,
        adapterFile: str | None = None,
        precision: str = "auto",
    ):
        """Load a model on the worker (downloading its weights if needed) with the adapters of
        ``adapterFile`` if given and its encoder in ``precision``, or with device ``"remote"``
        connect to the encoder service at ``server``. Changing the model starts a new session
        on the same volume and segment."""
        self._setStatus(f"Loading {modelName}...")
        state = self._state
        state.model_key = (modelName, device, weightsFile, server, token, adapterFile, precision)

        def change(report):
            try:
                state.predictor = load_predictor(
                    modelName, device, weightsFile, report, server, token, adapterFile, precision
                )
            except BaseException:
                state.model_key = None  # so that asking again retries
                raise

        self._submitOpen(change, "load model", background=True)

    @property
    def loadedModel(self) -> tuple | None:
        """(model, device, weights file, server, token, adapter file, precision) of
        :meth:`setModel`'s model, loaded or loading; None when none is, when its load failed, or
        when it fell back to the CPU (asking again retries the device)."""
        if getattr(self._state.predictor, "fell_back", False):
            return None
        return self._state.model_key

    def setPredictor(self, predictor: Any) -> None:
        """Use a ready core predictor or built model (tests, custom models)."""
        state = self._state
        state.model_key = None

        def change(report):
            state.predictor = predictor

        self._submitOpen(change, "set predictor")

    def setInputs(self, volumeNode: Any, segmentationNode: Any = None, segmentId: str = "") -> None:
        """Segment ``volumeNode`` into ``segmentationNode`` (created if None), into
        ``segmentId`` (a new segment if empty; an existing one is refined: its voxels stay
        where no click changes them).

        For another volume, or another segmentation, the points are cleared; for the same ones
        (e.g. their voxels changed) the current segment's points are placed again on the new
        session.

        Raises:
            mrml_io.VolumeNotSupportedError: the volume cannot be segmented.
            SegmentationNotSupportedError: the segmentation's voxels lie on another grid.
        """
        volume = mrml_io.volume_from_node(volumeNode)
        same = volumeNode is self.volumeNode and segmentationNode is self.segmentationNode
        if segmentationNode is None:
            segmentationNode = self.scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", f"{volumeNode.GetName()} FastSAM3D"
            )
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        if segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        writer = SegmentWriter(segmentationNode, volumeNode)  # may raise: nothing is set yet
        if same and self._writer is not None:
            writer.continue_from(self._writer)
        # Also for the same nodes: their grid may have changed, and the new session places
        # the points again anyway.
        self._inputs += 1
        self._writer = writer
        self.volumeNode, self.segmentationNode = volumeNode, segmentationNode
        self._fingerprint = mrml_io.volume_fingerprint(volumeNode)
        self._targetSegmentId = segmentId
        self._ensureMarkups(clear=not same)
        state = self._state

        def change(report):
            state.volume = volume

        self._submitOpen(change, "open volume")

    def _submitOpen(self, change: Callable, label: str, background: bool = False) -> None:
        """Queue a change of model or image, then a new session that places the markups'
        points again; edits queued later run after it."""
        opening = self._planOpening()
        state = self._state
        self._opening += 1

        def job(report):
            change(report)
            return opening.run(state, report)

        applyOpened = self._forTheseInputs(self._onOpened)

        def opened(update: Update | None) -> None:
            self._opening -= 1
            applyOpened(update)

        def failed(error: BaseException) -> None:
            self._opening -= 1
            self._onJobError(error)

        self._submit(job, opened, failed, label=label, urgent=not background)
        self._requestPoll()

    def _forTheseInputs(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """``callback`` for the result of a job submitted now, skipped if :meth:`setInputs`
        runs before it arrives: the result belongs to the old session, and written through the
        new writer it could land on another grid (another volume, or this one resampled)."""
        inputs = self._inputs

        def deliver(result: Any) -> None:
            if inputs == self._inputs:
                callback(result)

        return deliver

    def _planOpening(self) -> SessionOpening:
        writer = self._writer
        if writer is None:
            return SessionOpening(self.protectOtherSegments)
        target = self._targetSegmentId
        if not writer.segmentation.GetSegment(target):
            target = ""
        # Behind another opening, the segment continues as that session's first segment.
        continued = (1 if self._opening else writer.session_id(target)) if target else None
        points = self._markups.identify_points()
        self._expected = points
        protected = [s for s in writer.segment_ids() if s != target]
        self._protectedState = writer.protected_state(protected)
        return SessionOpening(
            self.protectOtherSegments,
            foreign=writer.voxels_of(protected),
            initial=writer.read(target) if target else None,
            continued=continued,
            points=tuple((i, ras, positive) for i, (ras, positive) in points.items()),
        )

    def _onOpened(self, update: Update | None) -> None:
        """A new session: its first segment writes to the wanted MRML segment."""
        if update is None:
            self._setStatus(
                "Model ready: select a volume"
                if self.segmentationNode is None
                else "Waiting for both a model and a volume"
            )
            return
        target = self._targetSegmentId
        exists = self._writer.segmentation.GetSegment(target)
        self._writer.start_session(target if exists else None, self.protectOtherSegments)
        self._currentSessionId = 1
        self._applyUpdate(update)

    # -- points --------------------------------------------------------------------------

    @property
    def positiveNode(self):
        return self._markups.positive if self._markups else None

    @property
    def negativeNode(self):
        return self._markups.negative if self._markups else None

    @property
    def suggestionNode(self):
        return self._markups.suggestion if self._markups else None

    @property
    def clicks(self) -> tuple[ClickInfo, ...]:
        """The current segment's clicks as the session last reported them."""
        return self._reported

    def synchronizePoints(self) -> None:
        """Queue the edits that turn the session's clicks into the markups' points.

        The markups nodes are observed, so this runs by itself after the user edits points;
        call it after changing points from code while observers are blocked.
        """
        if self._markups is None or self._markups.updating or self.volumeNode is None:
            return
        points = self._markups.identify_points()
        edits = []
        for clickId, (_, positive) in self._expected.items():
            if clickId not in points or points[clickId][1] != positive:
                edits.append(("remove", clickId, None, positive))
        for clickId, (ras, positive) in points.items():
            old = self._expected.get(clickId)
            if old is None or old[1] != positive:
                edits.append(("add", clickId, ras, positive))
            elif not np.array_equal(old[0], ras):
                edits.append(("move", clickId, ras, positive))
        if not edits:
            return
        if mrml_io.volume_fingerprint(self.volumeNode) != self._fingerprint:
            # The image changed: a new session, which places the points again.
            self.setInputs(self.volumeNode, self.segmentationNode, self.currentSegmentId or "")
            return
        self._refreshProtection()
        self._expected = points
        for edit in edits:
            self._submitEdit(*edit)
        self._requestPoll()

    def _onPointsEdited(self) -> None:
        """The markups' observer: an error is reported as a job's is, and the refused edit of
        the points taken back (an exception inside a VTK observer is only printed)."""
        try:
            self.synchronizePoints()
        except Exception as error:
            expected = self._expected.items()
            self._markups.show(
                ClickInfo(i, tuple(ras), positive) for i, (ras, positive) in expected
            )
            self._onJobError(error)

    def deleteLastPoint(self) -> None:
        """Delete the point of the current segment's last click (the newest click of the crop
        edited last), as if the user deleted it."""
        if self._reported:
            self.deletePoint(self._reported[-1].click_id)

    def deletePoint(self, clickId: str) -> None:
        """Delete the point of one of ``clicks``, as if the user deleted it."""
        if self._markups is not None:
            self._markups.delete(clickId)

    def _submitEdit(self, kind: str, clickId: str, ras=None, positive: bool = True) -> None:
        state, submitted = self._state, time.perf_counter()

        def job(report):
            runner = state.require_runner()
            if kind == "remove":
                return runner.remove_point(clickId)
            if runner.would_encode(ras):
                report("Preparing: encoding the image around the point...", None)
            if kind == "add":
                return runner.add_point(clickId, ras, positive)
            return runner.move_point(clickId, ras)

        def done(update: Update) -> None:
            self.lastLatencySeconds = time.perf_counter() - submitted
            self.lastEncoderRan = update.encoder_ran
            self._applyUpdate(update)

        self._setStatus("Segmenting...")
        self._submit(job, self._forTheseInputs(done), label=f"{kind} point")

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
        """Send later points to this MRML segment. One made elsewhere (e.g. painted) is
        refined: clicks change it inside their crops, starting from its voxels.

        Ignored while the logic itself adds or removes segments: a segment selector reacting
        to that must not redirect the points.
        """
        if self._applying or self._writer is None:
            return
        sessionId = self._writer.session_id(segmentId)
        if sessionId is not None:
            self._submitRunner(lambda runner: runner.select_segment(sessionId), "select")
            return
        segment = self.segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise ValueError(f"{self.segmentationNode.GetName()} has no segment {segmentId!r}")
        voxels = self._writer.read(segmentId)
        name = segment.GetName()

        def adopted(update: Update) -> None:
            self._writer.bind(update.current, segmentId)
            self._applyUpdate(update)

        self._submitRunner(lambda runner: runner.adopt_segment(name, voxels), "refine", adopted)

    def _submitRunner(
        self, action: Callable[[SessionRunner], Update], label: str, done=None
    ) -> None:
        state = self._state
        self._submit(
            lambda report: action(state.require_runner()),
            self._forTheseInputs(done or self._applyUpdate),
            label=label,
        )
        self._requestPoll()

    def toggleSegmentVisibility(self) -> None:
        """Show or hide the current segment in the views."""
        segmentId, display = self.currentSegmentId, self.segmentationNode.GetDisplayNode()
        if segmentId and display is not None:
            display.SetSegmentVisibility(segmentId, not display.GetSegmentVisibility(segmentId))

    @property
    def currentSegmentId(self) -> str | None:
        """The MRML segment that points go to."""
        return self._writer.mrml_id(self._currentSessionId) if self._writer else None

    # -- uncertainty ---------------------------------------------------------------------

    def computeUncertainty(self, suggest: bool = False) -> None:
        """Show the current segment's uncertainty (entropy, bits) as an overlay volume; with
        ``suggest``, also put the most uncertain point in the suggestion markups node."""
        state = self._state
        self._setStatus("Estimating uncertainty...")

        def job(report):
            return state.require_runner().uncertainty(UNCERTAINTY_SAMPLES)

        self._submit(
            job,
            self._forTheseInputs(lambda result: self._applyUncertainty(result, suggest)),
            label="uncertainty",
        )
        self._requestPoll()

    def suggestNextPoint(self) -> None:
        """Find the most uncertain voxel of the current segment and mark it."""
        self.computeUncertainty(suggest=True)

    def _applyUncertainty(self, uncertainty: Any, suggest: bool) -> None:
        node = self.uncertaintyNode
        if node is None or self.scene.GetNodeByID(node.GetID()) is None:
            node = self.uncertaintyNode = self.scene.AddNewNodeByClass(
                "vtkMRMLScalarVolumeNode", "FastSAM3D uncertainty"
            )
        mrml_io.update_overlay_volume(node, self.volumeNode, uncertainty.entropy.array)
        node.CreateDefaultDisplayNodes()  # a volume filled from an array has none yet
        display = node.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        if self.scene.GetNodeByID(UNCERTAINTY_COLOR_NODE_ID):
            display.SetAndObserveColorNodeID(UNCERTAINTY_COLOR_NODE_ID)
        self._observer.uncertaintyReady(node)
        point = uncertainty.most_uncertain_ras
        if suggest:
            self._markups.suggest(point)
            self._observer.suggestionReady(point)
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

    def processEvents(self, waitSeconds: float | None = None) -> int:
        """Apply finished edits to MRML; call from the thread that owns the scene.

        Waits up to ``waitSeconds`` (default :attr:`pollWaitSeconds`) for pending edits, with
        the GIL released, so the worker runs even where the caller's thread holds the GIL the
        rest of the time (Slicer's main thread). Returns how many edits finished.
        """
        finished = self._worker.poll(
            self.pollWaitSeconds if waitSeconds is None else waitSeconds
        )
        self._tellBusy()
        return finished

    def waitForIdle(self, timeout: float | None = None) -> bool:
        """Block until every queued edit is applied (tests, scripts); False on timeout."""
        idle = self._worker.wait(timeout)
        self._tellBusy()
        return idle

    def cleanup(self) -> None:
        """Stop the worker and stop observing the points; the session and model are
        released with the worker."""
        if self._markups is not None:
            self._markups.unobserve()
        self._worker.shutdown()
        self._state = WorkerState()

    def _requestPoll(self) -> None:
        self._observer.resultsPending()

    def _submit(self, job: Callable, done=None, failed=None, **options: Any) -> None:
        """Queue a job on the worker (see :meth:`.worker.Worker.submit`)."""
        self._worker.submit(job, done, failed, **options)
        self._tellBusy()

    def _tellBusy(self) -> None:
        """Tell the observer when edits were queued with none pending before, and when the
        last pending one was applied."""
        busy = self._worker.pending > 0
        if busy != self._busy:
            self._busy = busy
            self._observer.busyChanged(busy)

    def _applyUpdate(self, update: Update | None) -> None:
        if update is None:
            return
        previous = self.currentSegmentId
        self._applying = True
        try:
            self._currentSessionId = update.current
            changed, remade = self._writer.sync_segments(update.segments)
            for patch in update.patches:
                self._writer.write_patch(patch)
            self._protectedState = self._writer.protected_state()
        finally:
            self._applying = False
        for sessionId in remade:  # deleted by someone else: write all of it again
            self._submitRunner(
                lambda runner, sid=sessionId: runner.segment_from(sid, None), "rewrite segment"
            )
        self._targetSegmentId = self.currentSegmentId or ""
        if changed or self.currentSegmentId != previous:
            self._observer.segmentsChanged()
        self._reported = update.clicks
        if self._worker.pending == 0:
            self._showClicks()
            latency = self.lastLatencySeconds
            self._setStatus(
                "Ready"
                if latency is None
                else f"Ready: last click {latency * 1000:.0f} ms"
                + (" (image encoded)" if self.lastEncoderRan else "")
            )

    def _refreshProtection(self) -> None:
        """Before an edit: if another tool changed the segments the session protects (painted
        with the Segment Editor meanwhile), send the session their voxels again."""
        writer = self._writer
        current = writer.protected_state() if writer is not None else self._protectedState
        if current == self._protectedState:
            return
        foreign = writer.voxels_of(writer.protected_ids())
        self._protectedState = current
        state = self._state
        self._submit(
            lambda report: state.require_runner().set_foreign_mask(foreign), label="protect"
        )

    def _showClicks(self) -> None:
        """Once every edit has run: where the session's clicks differ from the points sent
        (undo, redo, a refused point), make the markups show the session's."""
        reported = {c.click_id: (np.array(c.ras), c.positive) for c in self._reported}
        same = reported.keys() == self._expected.keys() and all(
            reported[i][1] == self._expected[i][1]
            and np.array_equal(reported[i][0], self._expected[i][0])
            for i in reported
        )
        if not same:
            self._markups.show(self._reported)
            self._expected = reported

    def _ensureMarkups(self, clear: bool) -> None:
        if self._markups is None:
            self._markups = ClickMarkups(self.scene)
        else:
            self._markups.ensure_nodes()
        self._markups.observe(self._onPointsEdited)
        if clear:
            self._markups.clear()
        self._expected = {}

    # -- reporting -----------------------------------------------------------------------

    def _setStatus(self, message: str) -> None:
        self.status = message
        self._observer.statusChanged(message)

    def _onProgress(self, message: str, fraction: float | None) -> None:
        if message.startswith(WARNING_PREFIX):
            message = message[len(WARNING_PREFIX) :]
            logging.warning("FastSAM3D: %s", message)
            self._observer.warningRaised(message)
        self._setStatus(message if fraction is None else f"{message} ({fraction:.0%})")

    def _onJobError(self, error: BaseException) -> None:
        if self._worker.pending == 0 and self._markups is not None:
            self._showClicks()  # drop a point the session refused
        self._setStatus(f"Error: {error}")
        self._observer.errorOccurred(error)
