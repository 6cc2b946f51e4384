"""Clicks run at their free-running speed although Slicer's main thread holds the GIL.

Slicer's main thread holds the GIL while Qt's event loop idles in C++ (PythonQt never releases
it), so the module's worker thread runs only while the main thread is in Python and lets go of
it. This test reproduces that: between timer ticks the main thread sleeps in a C call made
through ``ctypes.PyDLL``, which keeps the GIL, exactly as Qt's idle loop does. The real logic,
worker and seeded FastSAM3D model run on a real MRML scene.
"""

from __future__ import annotations

import ctypes
import sys
import time

import numpy as np
import pytest
from test_slicer_logic import TIMEOUT_S, deepest_ras, place
from test_slicer_mrml import CT_IMAGE, CT_LABEL, DATA, read_volume_node

from fastsam3d_core.io import read_volume
from fastsam3d_mrml.events import EngineObserver

mrml_io = pytest.importorskip("fastsam3d_mrml.mrml_io")
logic_module = pytest.importorskip("fastsam3d_mrml.logic")
worker_module = pytest.importorskip("fastsam3d_mrml.worker")

pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}"),
    pytest.mark.skipif(sys.platform == "win32", reason="needs usleep from the C library"),
]
ROUNDS = 3
# What the issue asks: within 1.5x of free-running, and the GUI never blocked over 100 ms.
MAX_SLOWDOWN = 1.5
MAX_BLOCKED_S = 0.100


class SlicerMainLoop(EngineObserver):
    """The main thread as Slicer runs it, for one logic, and the widget's observer of it.

    Zero-delay timers (``QTimer.singleShot(0, ...)``, which the widget starts when results are
    pending) run at the next turn of the loop; between turns the thread idles for one poll
    interval inside C with the GIL held. Every Python call the loop makes on the GUI thread is
    timed. Until :attr:`running`, the thread is not a loop (results are waited for instead).
    """

    def __init__(self) -> None:
        self.logic = None
        self.running = False
        self.errors: list[BaseException] = []
        self.soon: list = []
        self.blocked: list[float] = []
        self._usleep = ctypes.PyDLL(None).usleep  # PyDLL: the call keeps the GIL

    def errorOccurred(self, error: BaseException) -> None:
        self.errors.append(error)

    def resultsPending(self) -> None:
        if self.running:
            self.soon.append(self.logic.processEvents)

    def call(self, function, *args) -> None:
        start = time.perf_counter()
        function(*args)
        self.blocked.append(time.perf_counter() - start)

    def run_until_idle(self, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while self.logic.busy or self.soon:
            assert time.monotonic() < deadline, "the worker did not finish"
            while self.soon:
                self.call(self.soon.pop(0))
            self._usleep(int(worker_module.POLL_INTERVAL_S * 1e6))  # Qt idles in C++
            if self.logic.busy:
                self.call(self.logic.processEvents)  # the widget's timer slot


def click_latencies(scene, model, node, points, slicer_loop: bool) -> tuple[float, ...]:
    """(encode + decode, decode only) latency of a session's first two clicks, and the longest
    the GUI thread was blocked (0 when free-running), seconds."""
    loop = SlicerMainLoop()
    logic = loop.logic = logic_module.InteractiveSegmentationLogic(scene, observer=loop)
    try:
        logic.setPredictor(model)
        logic.setInputs(node)
        assert logic.waitForIdle(TIMEOUT_S)
        latencies = []
        loop.running = slicer_loop
        for point in points:
            if not loop.running:
                place(logic, point)
                assert logic.waitForIdle(TIMEOUT_S)  # blocks in Python, the GIL released
            else:
                loop.call(place, logic, point)  # the markups observer runs on the GUI thread
                loop.run_until_idle()
            latencies.append(logic.lastLatencySeconds)
        assert not loop.errors, loop.errors
        assert logic.lastEncoderRan is False and len(logic.clicks) == 2
        blocked = max(loop.blocked) if loop.running else 0.0
        assert blocked < MAX_BLOCKED_S, f"the GUI thread was blocked for {blocked:.3f} s"
        return latencies[0], latencies[1], blocked
    finally:
        logic.cleanup()


def test_gil_held_by_slicers_main_thread_does_not_slow_clicks(fastsam3d_seeded, scene, capsys):
    node = read_volume_node(scene, CT_IMAGE)
    liver = deepest_ras(read_volume(CT_LABEL), 5)
    points = [liver, liver + [6.0, -3.0, -3.0]]  # a new crop, then a click inside it
    measured = {True: [], False: []}
    for _ in range(ROUNDS):  # alternate, so that load on the machine hits both alike
        for slicer_loop in (False, True):
            measured[slicer_loop].append(
                click_latencies(scene, fastsam3d_seeded, node, points, slicer_loop)
            )
    free = np.median(measured[False], axis=0)
    held = np.median(measured[True], axis=0)
    with capsys.disabled():
        for name, index in (("encode + decode", 0), ("decode only", 1)):
            print(
                f"\nclick ({name}): free-running {free[index] * 1000:.0f} ms, "
                f"main thread holding the GIL between ticks {held[index] * 1000:.0f} ms "
                f"({held[index] / free[index]:.2f}x, medians of {ROUNDS})"
            )
        longest = max(m[2] for m in measured[True])
        print(f"longest the GUI thread was blocked: {longest * 1000:.0f} ms")
    assert held[0] <= MAX_SLOWDOWN * free[0], (held, free)
    assert held[1] <= MAX_SLOWDOWN * free[1], (held, free)
