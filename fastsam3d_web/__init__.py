"""The browser front end: trame-slicer's MRML views driving the Slicer module's headless logic.

One interaction logic (``FastSAM3DSlicerLib.logic.InteractiveSegmentationLogic``: markups in,
segments out) and two front ends, Slicer's Qt panel and this page. Needs the ``web`` extra.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

# The Slicer module's folder in a source checkout: its FastSAM3DSlicerLib is the logic.
MODULE_DIR = Path(__file__).resolve().parents[1] / "FastSAM3DSlicer"


def module_logic() -> ModuleType:
    """``FastSAM3DSlicerLib.logic``, the Slicer module's headless logic, from this checkout."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    return importlib.import_module("FastSAM3DSlicerLib.logic")
