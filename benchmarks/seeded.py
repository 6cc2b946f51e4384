"""What the benchmark scripts share: the shared data folders and the seeded models.

Run the scripts as ``python benchmarks/<script>.py``: Python puts this folder first on the
import path, so they import this file (and each other) without editing ``sys.path``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastsam3d_core.golden import GoldenReference
from fastsam3d_core.models.sam3d import Sam3D

# ../shared beside the checkout, or FASTSAM3D_SHARED_DIR, as in Testing/conftest.py.
SHARED = Path(
    os.environ.get("FASTSAM3D_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared"
)
GOLDEN_DIR = SHARED / "golden"
SHARED_DATA_DIR = SHARED / "data"


def seeded_model(name: str) -> Sam3D:
    """A model built afresh and loaded with the golden references' seeded weights."""
    return GoldenReference.load(GOLDEN_DIR, name).seeded_model()
