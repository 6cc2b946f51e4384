"""What the engine's main-thread side needs whatever the user edits: its one observer, the status
line, and the worker whose results are collected on the thread that owns the scene.

:class:`~.logic.InteractiveSegmentationLogic` builds on :class:`EngineBase`; the front end sees
both through the observer only (:class:`~.events.EngineObserver`).
"""

from __future__ import annotations

import logging

from .events import EngineObserver
from .models import WARNING_PREFIX
from .worker import POLL_WAIT_S, Worker


class EngineBase:
    """An engine's observer, status line and worker thread.

    Args:
        observer: what the front end shows of the engine (status, errors, busy, segments);
            None: errors are logged, nothing else is shown.

    Attributes:
        status: the latest status line, as the observer was told it.
        pollWaitSeconds: the longest :meth:`processEvents` blocks the calling thread.
    """

    def __init__(self, observer: EngineObserver | None = None) -> None:
        self.pollWaitSeconds = POLL_WAIT_S
        self._observer = observer if observer is not None else EngineObserver()
        self.status = "No model loaded"
        # Optional, and not one of EngineObserver's events (those run on the scene's thread):
        # an observer's ``jobFinishedOnWorker()`` is called on the WORKER thread as each job
        # ends, so a front end that can be woken from any thread (the page's event loop)
        # collects the result at once. Slicer's panel has none: its timer collects.
        finished = getattr(self._observer, "jobFinishedOnWorker", None)
        self._worker = Worker(self._onProgress, self._onJobError, self._observer.busyChanged,
                              on_finished=finished)  # fmt: skip

    @property
    def observer(self) -> EngineObserver:
        """The front end's observer, fixed at construction."""
        return self._observer

    @property
    def busy(self) -> bool:
        return self._worker.pending > 0

    def processEvents(self, waitSeconds: float | None = None) -> int:
        """Apply finished edits to MRML; call from the thread that owns the scene.

        Waits up to ``waitSeconds`` (default :attr:`pollWaitSeconds`) for pending edits, with
        the GIL released, so the worker runs even where the caller's thread holds the GIL the
        rest of the time (Slicer's main thread). Returns how many edits finished.
        """
        return self._worker.poll(self.pollWaitSeconds if waitSeconds is None else waitSeconds)

    def waitForIdle(self, timeout: float | None = None) -> bool:
        """Block until every queued edit is applied (tests, scripts); False on timeout."""
        return self._worker.wait(timeout)

    def _requestPoll(self) -> None:
        self._observer.resultsPending()

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
        """A job failed: the status line and the observer say so (an engine that showed the
        failed edit first takes it back, then calls this)."""
        self._setStatus(f"Error: {error}")
        self._observer.errorOccurred(error)
