"""The engine's main-thread side: MRML nodes in, live segments out, all model work on one worker.

:class:`InteractiveSegmentationLogic` runs without the widget and without the Slicer application:
it needs a MRML scene, a volume node, and a model (or any core predictor). Each fact has one
home:

- the clicks, crops, masks and undo history: the core ``Session``, on the worker thread
  (:mod:`.worker`, whose jobs call the session directly);
- the points and drawings as the user edits them: :class:`~.session_markups.SessionMarkups`:
  control points that carry their click's id, read as the core's ``Click``s, and a markups node
  per box, scribble or lasso that carries its prompt's id, read as the core's ``Prompt``;
- the MRML segments, by label value, and which session segment writes to which:
  :class:`~.segment_writer.SegmentWriter`; the voxels the session protects are read from it when
  a session opens, and again only when another tool changes those segments.

When the user adds, moves or deletes a point or a drawing, :meth:`~InteractiveSegmentationLogic.
synchronizePoints` turns the difference between the nodes and what was sent so far into edits
that the worker runs in order. Results come back through :meth:`~InteractiveSegmentation
Logic.processEvents`, on the thread that owns the scene, which waits for them a bounded time with
the GIL released (Slicer's main thread otherwise starves the worker; see :mod:`.worker`).

Everything the front end shows reaches it through one observer given at construction
(:class:`~.events.EngineObserver`): status, errors of edits, busy and idle, segments, the
uncertainty overlay. Errors in direct calls are raised.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from fastsam3d_core.session import Click, Prompt

from . import mrml_io
from .dicom_export import DicomSegExport, is_dicom_seg_path
from .engine_base import EngineBase
from .events import EngineObserver
from .overlay import UNCERTAINTY_SAMPLES, show_entropy
from .segment_edits import SegmentEdits
from .segment_writer import SegmentWriter, segmentation_for
from .session_markups import SessionMarkups
from .text_segments import TextSegments
from .worker import SessionOpening, Update, WorkerState


class InteractiveSegmentationLogic(TextSegments, SegmentEdits, DicomSegExport, EngineBase):
    """Click-to-segment on MRML nodes.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer).
        protectOtherSegments: True keeps every other segment's voxels out of the edited one
            (those of segments made with other tools too, also while the session runs); False
            lets the edited segment take its own session's segments' voxels and overlap others.
            Read when a session opens.
        observer: what the front end shows of the engine (status, errors, busy, segments);
            None: errors are logged, nothing else is shown.

    The observer, the status line, the worker and the collection of its results
    (:meth:`processEvents`, :meth:`waitForIdle`) are :class:`~.engine_base.EngineBase`'s; the
    edits of segments themselves (rename, recolour, show or hide, delete) are
    :class:`~.segment_edits.SegmentEdits`'.
    """

    def __init__(
        self,
        scene: Any,
        protectOtherSegments: bool = True,
        observer: EngineObserver | None = None,
    ) -> None:
        mrml_io.ensure_segmentation_converters()
        super().__init__(observer)
        self.scene = scene
        self.protectOtherSegments = protectOtherSegments
        self.lastLatencySeconds: float | None = None
        self.lastEncoderRan = False
        self.volumeNode = self.segmentationNode = None
        self.uncertaintyNode = None
        self._state = WorkerState()
        self._markups: SessionMarkups | None = None
        self._writer: SegmentWriter | None = None
        self._fingerprint: tuple | None = None
        self._targetSegmentId = ""
        # The current segment's clicks and drawn prompts as the session last reported them.
        self._reported: tuple[Click, ...] = ()
        self._reportedPrompts: tuple[Prompt, ...] = ()
        self._opening = 0  # session-opening jobs queued and not yet applied
        # Counts setInputs calls (each opens a new session); see _forTheseInputs.
        self._inputs = 0

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
        key = (modelName, device, weightsFile, server, token, adapterFile, precision)
        state.model_key = key
        self._submitOpen(lambda report: state.load_model(key, report), "load model", True)

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
            state.predictor, state.made_by = predictor, (None, predictor)

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
        segmentationNode = segmentation_for(self.scene, volumeNode, segmentationNode)
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

        self._worker.submit(job, opened, failed, label=label, urgent=not background)
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
        points, prompts = self._markups.send_all()
        foreign, initial = writer.read_for_session(target)
        opening = (self.protectOtherSegments, foreign, initial, continued, points, prompts)
        return SessionOpening(*opening)

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
        self._applyUpdate(update)

    # -- points --------------------------------------------------------------------------

    @property
    def positiveNode(self):
        return self._markups.clicks.positive if self._markups else None

    @property
    def negativeNode(self):
        return self._markups.clicks.negative if self._markups else None

    @property
    def suggestionNode(self):
        return self._markups.clicks.suggestion if self._markups else None

    @property
    def clicks(self) -> tuple[Click, ...]:
        """The current segment's clicks as the session last reported them (core ``Click``s)."""
        return self._reported

    def synchronizePoints(self) -> None:
        """Queue the edits that turn the session's clicks and drawn prompts into the markups'
        points and finished prompt nodes.

        The markups nodes are observed, so this runs by itself after the user edits them; call
        it after changing points from code while observers are blocked.
        """
        if self._markups is None or self._markups.updating or self.volumeNode is None:
            return
        unsent = self._markups.unsent()
        if not unsent.edits:
            return
        if mrml_io.volume_fingerprint(self.volumeNode) != self._fingerprint:
            # The image changed: a new session, which places the points and drawings again.
            self.setInputs(self.volumeNode, self.segmentationNode, self.currentSegmentId or "")
            return
        self._refreshProtection()
        self._markups.mark_sent(unsent)
        for kind, edited in unsent.edits:
            self._submitEdit(kind, edited)
        self._requestPoll()

    def _onPointsEdited(self) -> None:
        """The markups' observer: an error is reported as a job's is, and the refused edit of
        the nodes taken back (an exception inside a VTK observer is only printed)."""
        try:
            self.synchronizePoints()
        except Exception as error:
            self._markups.take_back()
            self._onJobError(error)

    def deleteLastPoint(self) -> None:
        """Delete the point of the current segment's last click (the newest click of the crop
        edited last), as if the user deleted it."""
        if self._reported:
            self.deletePoint(self._reported[-1].click_id)

    def deletePoint(self, clickId: str) -> None:
        """Delete the point of one of ``clicks``, as if the user deleted it."""
        if self._markups is not None:
            self._markups.clicks.delete(clickId)

    def _submitEdit(self, kind: str, edited: Click | Prompt) -> None:
        """Queue one edit of a point or a drawing (see :class:`.session_markups.Unsent`)."""
        state, submitted = self._state, time.perf_counter()
        if isinstance(edited, Click):
            job, label = (lambda report: state.edit_point(kind, edited, report)), "point"
        else:
            job, label = (lambda report: state.edit_prompt(kind, edited, report)), edited.kind

        def done(update: Update) -> None:
            self.lastLatencySeconds = time.perf_counter() - submitted
            self.lastEncoderRan = update.encoder_ran
            self._applyUpdate(update)

        self._setStatus("Segmenting...")
        self._worker.submit(job, self._forTheseInputs(done), label=f"{kind} {label}")

    # -- drawn prompts: boxes, scribbles, lassos (see markups_prompts) -------------------

    def newPromptNode(self, kind: str, positive: bool = True) -> Any:
        """A new empty markups node, observed, for a prompt of this kind and sign ("box": an
        ROI, "scribble": a curve, "lasso": a closed curve): place its points, then
        :meth:`finishPrompt` (a box finishes by itself once its placement completes)."""
        return self._promptMarkups().new_node(kind, positive)

    def finishPrompt(self, node: Any) -> None:
        """The drawing in ``node`` is complete: queue its prompt, one edit. A refused drawing
        is reported through the observer and its node removed; a node with nothing drawn is
        removed quietly; a node finished before is synchronized."""
        if self._promptMarkups().finish(node):
            self.synchronizePoints()

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        """The current segment's drawn prompts as the session last reported them (the core's
        ``Prompt``s), the oldest first."""
        return self._reportedPrompts

    def promptNodes(self) -> list:
        """The current segment's prompt nodes, and those being drawn, oldest first."""
        return self._markups.prompts.nodes() if self._markups is not None else []

    def _promptMarkups(self):
        if self._markups is None:
            raise RuntimeError("no input volume is selected")
        return self._markups.prompts

    # -- history and segments ------------------------------------------------------------

    def undo(self) -> None:
        self._submitSession(lambda session: session.undo(), "undo")

    def redo(self) -> None:
        self._submitSession(lambda session: session.redo(), "redo")

    def clearSegment(self) -> None:
        """Remove the current segment's points and voxels (undoable)."""
        self._submitSession(lambda session: session.reset(), "clear")

    def nextSegment(self) -> None:
        """Start a new segment; later points go to it."""
        self._submitSession(lambda session: session.new_segment(), "new segment")

    def selectSegment(self, segmentId: str) -> None:
        """Send later points to this MRML segment. One made elsewhere (e.g. painted) is
        refined: clicks change it inside their crops, starting from its voxels.

        Ignored while the logic itself adds or removes segments: a segment selector reacting
        to that must not redirect the points.
        """
        if self._writer is None or self._writer.applying:
            return
        sessionId = self._writer.session_id(segmentId)
        if sessionId is not None:
            self._submitSession(lambda session: session.select_segment(sessionId), "select")
            return
        segment = self.segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise ValueError(f"{self.segmentationNode.GetName()} has no segment {segmentId!r}")
        voxels = self._writer.read(segmentId)
        name = segment.GetName()

        def adopted(update: Update) -> None:
            self._writer.bind(update.current, segmentId)
            self._applyUpdate(update)

        self._submitSession(
            lambda session: session.new_segment(name, initial_mask=voxels), "refine", adopted
        )

    def _submitSession(self, edit: Callable[[Any], Any], label: str, done=None) -> None:
        """Queue ``edit(session)`` (a core ``Session`` edit that returns its ``Result``)."""
        state = self._state
        self._worker.submit(
            lambda report: state.edit(edit),
            self._forTheseInputs(done or self._applyUpdate),
            label=label,
        )
        self._requestPoll()

    @property
    def currentSegmentId(self) -> str | None:
        """The MRML segment that points go to."""
        return self._writer.current_mrml_id() if self._writer else None

    # -- uncertainty and export ----------------------------------------------------------

    def computeUncertainty(self, suggest: bool = False) -> None:
        """Show the current segment's uncertainty (entropy, bits) as an overlay volume; with
        ``suggest``, also put the most uncertain point in the suggestion markups node."""
        state = self._state
        self._setStatus("Estimating uncertainty...")

        def show(uncertainty: Any) -> None:
            entropy = uncertainty.entropy.array
            node = show_entropy(self.scene, self.uncertaintyNode, self.volumeNode, entropy)
            self.uncertaintyNode = node
            self._observer.uncertaintyReady(node)
            point = uncertainty.most_uncertain_ras
            if suggest:
                self._markups.clicks.suggest(point)
                self._observer.suggestionReady(point)
            self._setStatus("Ready" if point is not None else "Ready: the segment is certain")

        self._worker.submit(
            lambda report: state.require_session().uncertainty(samples=UNCERTAINTY_SAMPLES),
            self._forTheseInputs(show),
            label="uncertainty",
        )
        self._requestPoll()

    def suggestNextPoint(self) -> None:
        """Find the most uncertain voxel of the current segment and mark it."""
        self.computeUncertainty(suggest=True)

    def exportSegmentation(self, path: str) -> Any:
        """Save the segmentation (``.seg.nrrd``), a labelmap on the volume's grid, or (``.dcm``,
        the volume from DICOM: see :meth:`setDicomSource`) a DICOM SEG."""
        if self.segmentationNode is None:
            raise RuntimeError("there is no segmentation to export yet")
        if is_dicom_seg_path(path):
            return self._writeDicomSeg(path)
        return mrml_io.export_segmentation(self.segmentationNode, path, self.volumeNode)

    # -- main-thread event handling (see EngineBase for the collection of results) --------

    def cleanup(self) -> None:
        """Stop the worker and stop observing the points; the session and model are
        released with the worker."""
        if self._markups is not None:
            self._markups.unobserve()
        self._worker.shutdown()
        self._state, self._dicomSource = WorkerState(), (None, None)

    def _applyUpdate(self, update: Update | None) -> None:
        if update is None:
            return
        previous = self.currentSegmentId
        changed, remade = self._writer.apply(update)
        for sessionId in remade:  # deleted by someone else: write all of it again
            self._worker.submit(
                lambda report, state=self._state, sid=sessionId: state.rewrite(sid),
                self._forTheseInputs(self._applyUpdate),
                label="rewrite segment",
            )
            self._requestPoll()
        self._targetSegmentId = self.currentSegmentId or ""
        if changed or self.currentSegmentId != previous:
            self._observer.segmentsChanged()
        self._reported, self._reportedPrompts = update.clicks, update.prompts
        if self._worker.pending == 0:
            self._markups.show_session(self._reported, self._reportedPrompts)
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
        foreign = self._writer.foreign_if_changed() if self._writer is not None else None
        if foreign is not None:
            state = self._state
            self._worker.submit(
                lambda report: state.require_session().set_foreign_mask(foreign), label="protect"
            )

    def _ensureMarkups(self, clear: bool) -> None:
        if self._markups is None:
            self._markups = SessionMarkups(self.scene)
        self._markups.attach(self._onPointsEdited, clear)

    def _onJobError(self, error: BaseException) -> None:
        if self._worker.pending == 0 and self._markups is not None:
            # Drop a point or a drawing the session refused.
            self._markups.show_session(self._reported, self._reportedPrompts)
        super()._onJobError(error)
