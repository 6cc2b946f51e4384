"""The benchmark suite behind ``fastsam3d bench``: speed, memory and FLOPs of each model, always
next to the reference path.

For every model × backend × device × precision it measures, with medians over repeats after warm-up:

* the image encoder on one 128³ crop;
* prompt encoder + mask decoder on a cached embedding (one click, single mask);
* an end-to-end click: click to updated full-resolution labelmap in a :class:`Session` on a
  CT-sized volume (default 512×512×300 voxels of 0.7×0.7×1 mm), embedding cached;
* peak memory (process RSS on the CPU, ``max_memory_allocated`` on CUDA) and FLOPs
  (``torch.utils.flop_counter``: 2 × multiply-accumulate of matrix products and convolutions).

The plain ``reference`` backend (textbook attention, padded windows, module-by-module layers) is
timed in the same run on the same weights and inputs, and every other row reports its speed-up
against it, so that no number stands alone. Weights are random: speed does not depend on them.
Rows in another precision than float32 (:mod:`..models.precision`) also report their speed-up
against the float32 row and their agreement with it (:mod:`..evaluation.agreement`): on the
benchmark's own crop, and on golden references and scans when given.

Its parts: :mod:`.settings` (what to measure), :mod:`.measures` (time, memory and FLOPs of one
call), :mod:`.machine` (what the numbers were measured on), :mod:`.suite` (every configuration
and the report), :mod:`.table` (the report as text).
"""

from __future__ import annotations

from .machine import cpu_name, machine_description
from .measures import count_gflops, matmul_gflops, median_seconds, peak_memory_mb
from .settings import BENCH_PRECISIONS, PARTS, BenchSettings
from .suite import Row, ct_sized_volume, measure, run_benchmark, run_suite
from .table import format_table

__all__ = [
    "BENCH_PRECISIONS",
    "PARTS",
    "BenchSettings",
    "Row",
    "count_gflops",
    "cpu_name",
    "ct_sized_volume",
    "format_table",
    "machine_description",
    "matmul_gflops",
    "measure",
    "median_seconds",
    "peak_memory_mb",
    "run_benchmark",
    "run_suite",
]
