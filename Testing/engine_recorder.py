"""The engine's logic with an observer that records what a front end would show.

Shared by the ``test_slicer_*`` and engine tests, and by conftest's ``make_logic`` fixture. Needs
slicer-core: import it only from tests that already need MRML (conftest imports it inside the
fixture, so modules without slicer-core are still collected).
"""

from __future__ import annotations

from fastsam3d_mrml.events import EngineObserver
from fastsam3d_mrml.logic import InteractiveSegmentationLogic

# How long a test waits for the engine's worker to settle (the seeded model on a slow CPU).
TIMEOUT_S = 120


class Recorder(EngineObserver):
    """What a front end would show: every event the logic sends, in order."""

    def __init__(self) -> None:
        self.logic = None
        self.errors: list[BaseException] = []
        self.statuses: list[str] = []
        self.busy: list[bool] = []
        self.suggestions: list = []
        self.segments_shown: list = []  # the current segment at each segmentsChanged

    def errorOccurred(self, error: BaseException) -> None:
        self.errors.append(error)

    def statusChanged(self, message: str) -> None:
        self.statuses.append(message)

    def busyChanged(self, busy: bool) -> None:
        self.busy.append(busy)

    def suggestionReady(self, pointRas) -> None:
        self.suggestions.append(pointRas)

    def segmentsChanged(self) -> None:
        self.segments_shown.append(self.logic.currentSegmentId)


def recorded_logic(scene, **options):
    """A logic with a :class:`Recorder`; ``logic.errors`` is the recorder's list."""
    recorder = Recorder()
    logic = InteractiveSegmentationLogic(scene, observer=recorder, **options)
    recorder.logic = logic
    logic.errors = recorder.errors
    return logic
