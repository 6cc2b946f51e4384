"""The benchmark suite as a script: the same as ``fastsam3d bench`` (see its ``--help``).

Usage: python benchmarks/bench.py [--model fastsam3d] [--repeats 5] [--threads 2] [--json out.json]
       python benchmarks/bench.py --quick

For each model, backend, device and precision: encoder time, prompt encoder + decoder time,
end-to-end click time (click to full-resolution labelmap on a 512×512×300 volume, cached
embedding), peak memory and FLOPs, with medians after warm-up, next to the plain reference path
measured in the same run. Results on the development machine are in docs/benchmarks.md.
"""

from __future__ import annotations

import sys

from fastsam3d_core.cli import app

if __name__ == "__main__":
    sys.exit(app(["bench", *sys.argv[1:]]))
