"""The worker thread: one persistent thread for all model work, the core session that lives on
it, and the updates it hands back to the main thread.

Everything that runs a model (loading weights, the image encoder, the decoder) goes through one
:class:`Worker`, for two reasons: the GUI thread must stay responsive while the encoder runs, and
CUDA/cuDNN state (autotuned kernels, the caching allocator's streams) is per thread, so moving
model work between threads costs time on every switch.

The worker knows nothing of Qt or MRML. Jobs are plain callables that receive arrays and numbers,
never MRML nodes; the thread that owns the scene calls :meth:`Worker.poll` (from a timer in
Slicer, in a loop in tests), which runs the completion callbacks there, in submission order.
Jobs submitted while another runs wait in the queue: nothing submitted is dropped.

The engine's jobs call the core :class:`~fastsam3d_core.Session` (held by :class:`WorkerState`)
directly and hand back an :class:`Update`: the core result's changes (read-only boxes of voxels
that later edits never change) and the session's clicks and segments, so the main thread writes
them into MRML while the worker already runs the next edit.

Inside Slicer the worker only runs while the main thread lets go of the GIL: Qt's event loop
idles in C++ holding it (PythonQt never releases it), so a thread left alone there is starved and
a 40 ms click takes seconds. :meth:`Worker.poll` therefore waits for results with the GIL
released, for a bounded time that keeps the GUI responsive, and the main thread polls right
after it submits and on a short timer while jobs are pending.

Importing this module loads neither numpy nor torch nor ``fastsam3d_core`` (the Slicer module
starts its worker before they are installed): the core is imported when a session opens.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .models import Reporter

if TYPE_CHECKING:
    from fastsam3d_core import Session
    from fastsam3d_core.session import Click, Prompt, Result, SegmentChange

# Seconds to wait for the thread to finish its current job when shutting down.
SHUTDOWN_TIMEOUT_S = 5.0
# While jobs are pending the main thread polls this often (a Qt timer in Slicer) ... Between
# ticks Qt idles holding the GIL, so a short interval is what lets the worker run: at 30 ms a
# click took 1.22x its free-running time in the GIL test, at 10 ms 0.97-1.11x.
POLL_INTERVAL_S = 0.010
# ... and waits at most this long for results per poll, with the GIL released: long enough for
# a decoder-only click to finish within one wait, short enough that the GUI (which runs in
# between) never stalls for more than 100 ms, the writing of results included.
POLL_WAIT_S = 0.080
# For a long background job (loading a model), a shorter wait keeps the GUI fluid for the
# minutes it may take, while the job still gets more than half of the time.
BACKGROUND_WAIT_S = 0.015


@dataclass
class _Job:
    function: Callable[[Reporter], Any]
    on_done: Callable[[Any], None] | None
    on_error: Callable[[BaseException], None] | None
    label: str
    urgent: bool = True
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Finished:
    job: _Job
    value: Any = None
    error: BaseException | None = None


@dataclass
class _Progress:
    label: str
    message: str
    fraction: float | None


class Worker:
    """Runs submitted jobs one after another on a single background thread.

    Args:
        on_progress: called on the polling thread with (message, fraction) that jobs report.
        on_error: called on the polling thread with a job's exception when the job was
            submitted without its own ``on_error``.
        on_busy: called with True when a job is submitted while none is pending, and with
            False at the end of the :meth:`poll` that delivered the last pending one (its
            callbacks included, which may submit more).
        name: the thread's name (shown in debuggers and thread dumps).
    """

    _STOP = object()

    def __init__(
        self,
        on_progress: Reporter | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_busy: Callable[[bool], None] | None = None,
        name: str = "FastSAM3D worker",
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        self.on_progress = on_progress
        self.on_error = on_error
        self.on_busy = on_busy
        # Called on the worker thread as each job ends (its result queued for poll()).
        self.on_finished = on_finished
        self._busy = False  # as on_busy was last told
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._events: queue.Queue[_Finished | _Progress] = queue.Queue()
        self._pending = 0  # submitted and not yet handed back by poll()
        self._urgent_pending = 0  # of those, the urgent ones
        self._shut_down = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- main thread ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs submitted whose results :meth:`poll` has not delivered yet."""
        return self._pending

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(
        self,
        function: Callable[[Reporter], Any],
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        label: str = "",
        urgent: bool = True,
    ) -> None:
        """Queue ``function(report)`` to run after every job submitted before it.

        Args:
            urgent: someone waits for it (a click); False for a long background job, which
                :meth:`poll` waits for only briefly.

        Raises:
            RuntimeError: the worker was shut down.
        """
        if self._shut_down or not self._thread.is_alive():
            raise RuntimeError("the FastSAM3D worker thread has been shut down")
        self._pending += 1
        self._urgent_pending += urgent
        self._jobs.put(_Job(function, on_done, on_error, label or function.__name__, urgent))
        self._tell_busy()

    def poll(self, wait_s: float = 0.0) -> int:
        """Deliver finished jobs' results and progress messages; returns how many finished.

        Args:
            wait_s: while jobs are pending, wait up to this many seconds for them, with the GIL
                released so the worker runs (see the module's docstring); results are
                delivered as they arrive. 0 only delivers what is there. While only
                background jobs are pending, at most :data:`BACKGROUND_WAIT_S`.

        A callback that raises ends the poll with its exception; busy or idle is told all the
        same, and the jobs after it are delivered by the next poll. After :meth:`shutdown`
        nothing is delivered.
        """
        if self._shut_down:
            return 0
        try:
            return self._deliver_finished(wait_s)
        finally:
            self._tell_busy()

    def _deliver_finished(self, wait_s: float) -> int:
        start = time.monotonic()
        finished = 0
        while True:
            limit = wait_s if self._urgent_pending else min(wait_s, BACKGROUND_WAIT_S)
            remaining = start + limit - time.monotonic()
            try:
                if self._pending > 0 and remaining > 0:
                    event = self._events.get(timeout=remaining)  # releases the GIL
                else:
                    event = self._events.get_nowait()
            except queue.Empty:
                return finished
            if isinstance(event, _Progress):
                if self.on_progress is not None:
                    self.on_progress(event.message, event.fraction)
                continue
            finished += 1
            self._pending -= 1
            self._urgent_pending -= event.job.urgent
            self._deliver(event)

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> bool:
        """Poll until every submitted job is delivered; False if ``timeout`` seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = interval if deadline is None else min(interval, deadline - time.monotonic())
            self.poll(max(remaining, 0.0))
            if self._pending == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop the thread after the job it is running; queued jobs are dropped, nothing is
        delivered any more (not even the running job's result), and ``on_busy`` is told idle.

        Returns:
            Whether the thread ended within ``timeout`` seconds (a job in a long native call
            may outlive it; the thread is a daemon and does not keep the process alive).
        """
        self._shut_down = True
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        self._jobs.put(self._STOP)
        self._thread.join(timeout)
        self._pending = self._urgent_pending = 0
        self._tell_busy()
        return not self._thread.is_alive()

    def _tell_busy(self) -> None:
        busy = self._pending > 0
        if busy != self._busy:
            self._busy = busy
            if self.on_busy is not None:
                self.on_busy(busy)

    def _deliver(self, event: _Finished) -> None:
        if event.error is None:
            if event.job.on_done is not None:
                event.job.on_done(event.value)
            return
        handler = event.job.on_error or self.on_error
        if handler is None:
            raise event.error
        handler(event.error)

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is self._STOP:
                return

            def report(message: str, fraction: float | None = None, _label: str = job.label):
                self._events.put(_Progress(_label, message, fraction))

            try:
                self._events.put(_Finished(job, value=job.function(report)))
            except BaseException as error:  # handed to the main thread, never swallowed
                self._events.put(_Finished(job, error=error))  # keeps its __traceback__
            if self.on_finished is not None:
                try:
                    self.on_finished()
                except Exception:  # a front end's hook must never stop the worker thread
                    logging.exception("FastSAM3D: the job-finished hook failed")


# -- what lives on the worker thread -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Update:
    """What one edit changed, for the main thread; no later edit changes any of it.

    Attributes:
        changes: the core's ``SegmentChange`` per changed segment (its box and its voxels
            there after the edit, read-only); writing them brings MRML to the session.
        clicks: the current segment's clicks after the edit, the core's ``Click``s.
        current: the session's current segment id.
        segments: (id, name, RGB colour) of every live session segment.
        encoder_ran: whether the image encoder ran.
        prompts: the current segment's drawn prompts after the edit, the core's ``Prompt``s.
    """

    changes: tuple[SegmentChange, ...]
    clicks: tuple[Click, ...]
    current: int
    segments: tuple[tuple[int, str, tuple[float, float, float]], ...]
    encoder_ran: bool = False
    prompts: tuple[Prompt, ...] = ()


def update_of(
    session: Session, result: Result | None = None, changes: tuple[SegmentChange, ...] = ()
) -> Update:
    """The :class:`Update` of an edit's core ``result`` (or of ``changes`` made otherwise)."""
    return Update(
        result.changes if result is not None else changes,
        tuple(session.clicks()),
        session.current_segment.segment_id,
        tuple((s.segment_id, s.name, tuple(s.color)) for s in session.segments),
        encoder_ran=result is not None and result.encoder_ran,
        prompts=tuple(session.prompts()),
    )


def add_prompt(session: Session, prompt: Prompt) -> Result:
    """Add a drawn prompt (the core's ``Prompt``: a box's two corners, a scribble's stroke, a
    lasso's contour) to the session's current segment under its id.

    Raises:
        ValueError: a drawing the session refuses (the message says why, in one line).
    """
    if prompt.kind == "box":
        corner_a, corner_b = prompt.points_ras
        return session.add_box(corner_a, corner_b, prompt.positive, prompt.prompt_id)
    if prompt.kind == "scribble":
        return session.add_scribble(prompt.points_ras, prompt.positive, prompt.prompt_id)
    return session.add_lasso(prompt.points_ras, prompt.positive, prompt.prompt_id)


class WorkerState:
    """What lives on the worker thread: the predictor, the image and the core session."""

    def __init__(self) -> None:
        self.predictor: Any = None
        self.volume: Any = None
        self.session: Session | None = None
        # setModel's (model, device, weights file, ...) in use or loading; None after its load
        # failed. Set on the main thread when the load is queued, so it may already name a
        # later model while an earlier one still loads.
        self.model_key: tuple | None = None
        # (model name, predictor) of the predictor in use, set with it: what a DICOM SEG names
        # (model_key may name a model still loading); the name None: a predictor given directly.
        self.made_by: tuple = (None, None)

    def require_session(self) -> Session:
        if self.session is None:
            if self.predictor is None:
                raise RuntimeError("no model is loaded yet: choose a model and wait for it")
            raise RuntimeError("no input volume is selected")
        return self.session

    def load_model(self, key: tuple, report: Reporter) -> None:
        """Load the model of ``InteractiveSegmentationLogic.setModel``, whose arguments
        ``key`` holds (see ``models.load_predictor``); a failure forgets the key, so that
        asking again retries, unless a later ``setModel`` already replaced it: that model
        (queued behind this one) is the one in use once it loads.

        Keys are compared by identity: each ``setModel`` makes its own, so asking again for
        the failed model while it loads keeps the new request's key."""
        from .models import load_predictor

        name, device, weights_file, server, token, adapter_file, precision = key
        try:
            predictor = load_predictor(
                name, device, weights_file, report, server, token, adapter_file, precision
            )
        except BaseException:
            if self.model_key is key:
                self.model_key = None
            raise
        self.predictor, self.made_by = predictor, (name, predictor)

    # The engine's jobs: each runs one edit of the session and returns its Update.

    def edit_point(self, kind: str, click: Click, report: Reporter) -> Update:
        """Add, move or remove (``kind``) a click, by its id; see ``edits_between``."""
        session = self.require_session()
        if kind == "remove":
            return update_of(session, session.remove_point(click.click_id))
        if session.would_encode(click.point_ras):
            report("Preparing: encoding the image around the point...", None)
        if kind == "add":
            result = session.add_point(click.point_ras, click.positive, click.click_id)
        else:
            result = session.move_point(click.click_id, click.point_ras)
        return update_of(session, result)

    def edit_prompt(self, kind: str, prompt: Prompt, report: Reporter) -> Update:
        """Add, move or remove (``kind``) a drawn prompt, by its id; see
        ``PromptMarkups.unsent_edits``."""
        session = self.require_session()
        if kind == "remove":
            return update_of(session, session.remove_prompt(prompt.prompt_id))
        middle = [sum(axis) / len(prompt.points_ras) for axis in zip(*prompt.points_ras)]
        if session.would_encode(middle):
            report("Preparing: encoding the image around the point...", None)
        if kind == "add":
            return update_of(session, add_prompt(session, prompt))
        return update_of(session, session.move_prompt(prompt.prompt_id, prompt.points_ras))

    def edit(self, edit: Callable[[Session], Result]) -> Update:
        """Run ``edit(session)``, a core ``Session`` edit that returns its ``Result``."""
        session = self.require_session()
        return update_of(session, edit(session))

    def rewrite(self, segment_id: int) -> Update:
        """All of a segment, as a change from nothing (its MRML segment was made again)."""
        session = self.require_session()
        change = session.change_from(segment_id, None)
        return update_of(session, changes=() if change is None else (change,))


@dataclass(frozen=True, eq=False)
class SessionOpening:
    """How a new session starts: what the main thread read of MRML and the markups.

    Attributes:
        protect: keep other segments' voxels out of the session's segments.
        foreign: voxels of the MRML segments that the session protects, bool (I, J, K); None
            when there is no segmentation yet.
        initial: what the MRML segment that the first session segment writes to holds now,
            bool (I, J, K), or None for a new segment: the first segment refines it.
        continued: the previous session's segment that the first one continues (same volume
            and segmentation), or None. Where the worker's previous session holds it, the
            first segment restarts from what that segment held before the previous session
            (its base), and MRML is brought back to that from the previous session's mask
            (what MRML holds once every edit queued before the opening is written).
        points: the core ``Click``s to place again; those the continued segment held go in
            its order (the order decides the crops and the decoder's mask feedback), the others
            after them.
        prompts: the core ``Prompt``s to draw again after the points, in the same way.
    """

    protect: bool
    foreign: Any = None
    initial: Any = None
    continued: int | None = None
    points: tuple[Click, ...] = ()
    prompts: tuple[Prompt, ...] = ()

    def run(self, state: WorkerState, report: Reporter) -> Update | None:
        """On the worker: a new session, when both a model and an image are there, with the
        points placed again; None otherwise. The previous session stays if this one fails."""
        if state.predictor is None or state.volume is None or self.foreign is None:
            state.session = None
            return None
        from fastsam3d_core import Session

        previous = state.session
        initial, held, order = self.initial, self.initial, []
        if previous is not None and self._continues(previous, state.volume.shape):
            continued = next(s for s in previous.segments if s.segment_id == self.continued)
            initial = continued.base
            held = previous.mask(self.continued).astype(bool)
            order = [click.click_id for click in previous.clicks(self.continued)]
            order += [prompt.prompt_id for prompt in previous.prompts(self.continued)]
        session = Session(
            state.volume,
            state.predictor,
            protect_other_segments=self.protect,
            foreign_mask=self.foreign,
            initial_mask=initial,
        )
        rank = {identity: n for n, identity in enumerate(order)}
        dropped = []
        # Drawings first, then points (coarse to fine, as the command line runs them): a point
        # placed inside a box goes to the box's crop again and stays inside the box.
        for prompt in sorted(self.prompts, key=lambda p: rank.get(p.prompt_id, len(rank))):
            try:
                add_prompt(session, prompt)
            except ValueError as error:
                dropped.append(str(error))
        for click in sorted(self.points, key=lambda c: rank.get(c.click_id, len(rank))):
            try:
                session.add_point(click.point_ras, click.positive, click.click_id)
            except ValueError as error:  # e.g. outside a new volume
                dropped.append(str(error))
        state.session = session
        if dropped:
            report(
                f"{len(dropped)} point(s) or drawing(s) could not be placed again: {dropped[0]}",
                None,
            )
        change = session.change_from(1, held)
        return update_of(session, changes=() if change is None else (change,))

    def _continues(self, previous: Session, shape: tuple) -> bool:
        live = {segment.segment_id for segment in previous.segments}
        return self.continued in live and previous.volume.shape == shape
