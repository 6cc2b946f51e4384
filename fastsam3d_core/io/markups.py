"""Point lists from 3D Slicer markups files (``.mrk.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..geometry import apply_affine
from .images import flip_lps_ras


def read_markups_points(path: str | Path) -> np.ndarray:
    """The defined control points of every markups node in a Slicer ``.mrk.json`` file.

    Args:
        path: a markups JSON file (Slicer ≥ 4.11 format, any markups type with control points).

    Returns:
        ``(N, 3)`` float64 RAS millimetres, in file order. Points whose position is undefined
        or missing are skipped.

    Raises:
        ValueError: unreadable JSON, no markups, an unknown coordinate system, or no points.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read markups file {path}: {error}") from None
    points = []
    for node in document.get("markups", []) if isinstance(document, dict) else []:
        system = node.get("coordinateSystem", "LPS")
        if system not in ("LPS", "RAS"):
            raise ValueError(f"{path}: unknown coordinate system {system!r}")
        for control in node.get("controlPoints", []):
            if control.get("positionStatus", "defined") != "defined":
                continue
            position = np.asarray(control["position"], dtype=np.float64)
            # Slicer writes markups in LPS unless told otherwise.
            points.append(
                apply_affine(flip_lps_ras(np.eye(4)), position) if system == "LPS" else position
            )
    if not points:
        raise ValueError(f"{path}: no defined control points in any markups node")
    return np.array(points)
