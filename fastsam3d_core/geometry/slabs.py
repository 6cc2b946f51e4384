"""Array work split into slabs along a first axis and run on several CPU cores at once.

A click's paste-back and mask write are NumPy operations on millions of voxels, one after the
other on one core. NumPy releases the GIL inside each operation on a large array, so slabs of
the same work run in threads in parallel: the caller's thread takes the first slab, a small
pool the others. Each slab writes only its own part of the output, so the result is the one
computed in one piece, bit for bit.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

Result = TypeVar("Result")

# At most this many threads (the caller's included): memory-bound work stops gaining beyond.
MAX_THREADS = 4
# Slabs thinner than this many rows are not split further (the thread hand-off costs more).
_MIN_ROWS = 8

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_threads: int | None = None


def thread_count() -> int:
    """Threads for slab work: :func:`set_thread_count`'s, or the cores this process may use,
    at most :data:`MAX_THREADS`."""
    if _threads is not None:
        return _threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


def set_thread_count(threads: int | None) -> None:
    """Use ``threads`` threads for slab work (1: the caller's alone); None: the default."""
    global _threads, _pool
    if threads is not None and threads < 1:
        raise ValueError(f"slab threads must be 1 or more, not {threads}")
    with _lock:
        _threads = threads
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None


def slab_bounds(length: int, parts: int | None = None) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``parts`` (default :func:`thread_count`) slabs of about equal size
    covering ``range(length)``; fewer for a short axis."""
    parts = min(parts or thread_count(), max(1, length // _MIN_ROWS))
    edges = [length * part // parts for part in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a] or [(0, length)]


def run_slabs(work: Callable[[int, int], Result], bounds: list[tuple[int, int]]) -> list[Result]:
    """``work(start, stop)`` for each slab of ``bounds``, the first on the caller's thread and
    the others at the same time on the pool; the results in the order of ``bounds``. The first
    exception raised by a slab is raised here, after every slab has finished."""
    if len(bounds) <= 1:
        return [work(*bound) for bound in bounds]
    futures = _submitted(work, bounds[1:])
    try:
        first = work(*bounds[0])
    finally:
        rest = [future.exception() for future in futures]  # waits for each slab
    for error in rest:
        if error is not None:
            raise error
    return [first, *(future.result() for future in futures)]


def _submitted(work: Callable[[int, int], Result], bounds: list[tuple[int, int]]) -> list:
    """``work`` for each of ``bounds`` submitted to the pool, under the lock: another thread may
    replace the pool (a larger one, a new thread count), and a replaced pool still runs what was
    submitted to it but refuses new work."""
    global _pool, _pool_workers
    with _lock:
        if _pool is None or _pool_workers < len(bounds):
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(
                max_workers=len(bounds), thread_name_prefix="fastsam3d-slab"
            )
            _pool_workers = len(bounds)
        return [_pool.submit(work, *bound) for bound in bounds]


def _forget_pool_in_child() -> None:
    """A forked child has none of the parent's pool threads: it starts its own when needed."""
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
