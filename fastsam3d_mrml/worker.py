"""One persistent thread for all model work, with results handed back to the main thread.

Everything that runs a model (loading weights, the image encoder, the decoder) goes through one
:class:`Worker`, for two reasons: the GUI thread must stay responsive while the encoder runs, and
CUDA/cuDNN state (autotuned kernels, the caching allocator's streams) is per thread, so moving
model work between threads costs time on every switch.

The worker knows nothing of Qt or MRML. Jobs are plain callables that receive arrays and numbers,
never MRML nodes; the thread that owns the scene calls :meth:`Worker.poll` (from a timer in
Slicer, in a loop in tests), which runs the completion callbacks there, in submission order.
Jobs submitted while another runs wait in the queue: nothing submitted is dropped.

Inside Slicer the worker only runs while the main thread lets go of the GIL: Qt's event loop
idles in C++ holding it (PythonQt never releases it), so a thread left alone there is starved and
a 40 ms click takes seconds. :meth:`Worker.poll` therefore waits for results with the GIL
released, for a bounded time that keeps the GUI responsive, and the main thread polls right
after it submits and on a short timer while jobs are pending.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

Reporter = Callable[[str, Optional[float]], None]
"""Called from a job with (message, fraction done in 0..1 or None)."""

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
        name: the thread's name (shown in debuggers and thread dumps).
    """

    _STOP = object()

    def __init__(
        self,
        on_progress: Reporter | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "FastSAM3D worker",
    ) -> None:
        self.on_progress = on_progress
        self.on_error = on_error
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._events: queue.Queue[_Finished | _Progress] = queue.Queue()
        self._pending = 0  # submitted and not yet handed back by poll()
        self._urgent_pending = 0  # of those, the urgent ones
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
        if not self._thread.is_alive():
            raise RuntimeError("the FastSAM3D worker thread has been shut down")
        self._pending += 1
        self._urgent_pending += urgent
        self._jobs.put(_Job(function, on_done, on_error, label or function.__name__, urgent))

    def poll(self, wait_s: float = 0.0) -> int:
        """Deliver finished jobs' results and progress messages; returns how many finished.

        Args:
            wait_s: while jobs are pending, wait up to this many seconds for them, with the GIL
                released so the worker runs (see the module's docstring); results are
                delivered as they arrive. 0 only delivers what is there. While only
                background jobs are pending, at most :data:`BACKGROUND_WAIT_S`.
        """
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
        """Stop the thread after the job it is running; queued jobs are dropped.

        Returns:
            Whether the thread ended within ``timeout`` seconds (a job in a long native call
            may outlive it; the thread is a daemon and does not keep the process alive).
        """
        while True:
            try:
                dropped = self._jobs.get_nowait()
            except queue.Empty:
                break
            self._pending -= 1
            self._urgent_pending -= dropped.urgent
        self._jobs.put(self._STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

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
