"""Timestamps of one click's way through the page, for ``benchmarks/bench_page.py``.

With ``$FASTSAM3D_TIMELINE`` naming a file, the session process appends one JSON line per step
to it: ``{"t": epoch ms, "step": ..., "view": ..., ...}``. The steps: ``receive`` (a view's
mouse event reaches the server), ``engine`` (the worker's job: start and end), ``mrml`` (the
result written into the segmentation node), ``render`` (a view rendered and read back),
``encode`` (its image compressed: bytes, quality), ``send`` (the image handed to the websocket).
``start-up`` lines (:func:`mark`) time the way to the first image, from the launcher's request.
The browser's side (the click, the paint) is the benchmark's own. Unset: nothing is installed
and nothing costs anything.

The hooks wrap trame-rca's classes and the engine's worker in this process only; they are
installed once, before the page's views exist.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

TIMELINE_ENV = "FASTSAM3D_TIMELINE"

_lock = threading.Lock()
_file: Any = None


def enabled() -> bool:
    return bool(os.environ.get(TIMELINE_ENV))


def record(step: str, start_ms: float, end_ms: float | None = None, **details: Any) -> None:
    """One step's line (times in epoch ms, comparable with the browser's ``Date.now()``)."""
    global _file
    line = {"t": round(start_ms, 2), "step": step, **details}
    if end_ms is not None:
        line["end"] = round(end_ms, 2)
    with _lock:
        if _file is None:
            _file = open(os.environ[TIMELINE_ENV], "a", encoding="utf-8", buffering=1)
        _file.write(json.dumps(line) + "\n")


def now_ms() -> float:
    return time.time() * 1000.0


def mark(what: str, **details: Any) -> None:
    """A start-up step reached now (``{"step": "start-up", "what": what, "cpu_ms": ...}``, the
    process's CPU time so far): the launcher's request and spawn, the session's imports, page,
    server and first connection."""
    if enabled():
        cpu_ms = round(time.process_time() * 1000.0, 1)
        record("start-up", now_ms(), what=what, cpu_ms=cpu_ms, **details)


def install_stream_hooks() -> None:
    """Time trame-rca's render, encode and send steps and the views' mouse events (before the
    views are made: the page calls this first)."""
    if not enabled():
        return
    from trame_rca.protocol import StreamManager
    from trame_rca.schedulers import RcaImageRenderScheduler

    if getattr(RcaImageRenderScheduler, "_timeline_installed", False):
        return
    RcaImageRenderScheduler._timeline_installed = True
    RcaImageRenderScheduler._render_frame = _timed_render_frame
    receive = StreamManager.on_interaction.__wrapped__ if hasattr(
        StreamManager.on_interaction, "__wrapped__") else StreamManager.on_interaction  # fmt: skip
    push = StreamManager.push_content

    def on_interaction(self, area_name, origin, event):
        if "Press" in str(event.get("type", "")):
            record("receive", now_ms(), view=area_name, event=event.get("type"))
        return receive(self, area_name, origin, event)

    def push_content(self, area_name, metadata, content):
        start = now_ms()
        push(self, area_name, metadata, content)
        record("send", start, now_ms(), view=area_name, bytes=len(content or b""))

    # The RPC names stay: wslink registered them from the class's functions' attributes.
    for name, wrapper, original in (("on_interaction", on_interaction, receive),
                                    ("push_content", push_content, push)):  # fmt: skip
        wrapper.__dict__.update(original.__dict__)
        setattr(StreamManager, name, wrapper)


# The event loop counts as blocked when a 10 ms nap ends this much later than asked.
LOOP_LAG_MS = 40.0
_watching = False


async def _watch_loop() -> None:
    """Log each stretch of time the event loop was held by something (a render, a write...)."""
    import asyncio

    while True:
        start = now_ms()
        await asyncio.sleep(0.01)
        lag = now_ms() - start - 10.0
        if lag > LOOP_LAG_MS:
            record("loop blocked", start + 10.0, now_ms())


def _timed_render_frame(self: Any, quality: int) -> None:
    """trame-rca's ``RcaImageRenderScheduler._render_frame``, timed: render + read back on the
    event loop, then the encode on its thread pool."""
    import asyncio

    global _watching
    if not _watching:  # the first frame: the loop runs
        _watching = True
        asyncio.get_running_loop().create_task(_watch_loop())
    view = getattr(getattr(self._push_callback, "__self__", None), "area_name", "?")
    start = now_ms()
    image, cols, rows = self._rca.img_cols_rows
    record("render", start, now_ms(), view=view, w=cols, h=rows, quality=quality)
    encoder = self._rca_encoder

    def encode(*args: Any) -> Any:
        began = now_ms()
        result = encoder.encode(*args)
        record("encode", began, now_ms(), view=view, bytes=len(result[0]), quality=quality)
        return result

    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(self._encode_pool, encode, image, cols, rows, quality)
    self._push_queue.put_nowait(future)


def install_engine_hooks(logic: Any) -> None:
    """Time the engine's jobs on its worker thread and the writes into MRML."""
    if not enabled():
        return
    worker = logic._worker
    submit = worker.submit

    def timed_submit(function: Callable, *args: Any, label: str = "", **kwargs: Any) -> Any:
        def timed(report: Any) -> Any:
            start = now_ms()
            try:
                return function(report)
            finally:
                record("engine", start, now_ms(), label=label)

        return submit(timed, *args, label=label, **kwargs)

    worker.submit = timed_submit
    apply_update = logic._applyUpdate

    def timed_apply(update: Any) -> None:
        start = now_ms()
        apply_update(update)
        record("mrml", start, now_ms())

    logic._applyUpdate = timed_apply
