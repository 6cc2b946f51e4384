"""Point lists from 3D Slicer markups files (``.mrk.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..geometry import apply_affine, as_point
from .errors import special_file_kind
from .images import flip_lps_ras


def read_markups_points(path: str | Path) -> np.ndarray:
    """The defined control points of every markups node in a Slicer ``.mrk.json`` file.

    Args:
        path: a markups JSON file (Slicer >= 4.11 format, any markups type with control points).

    Returns:
        ``(N, 3)`` float64 RAS millimetres, in file order. Points whose position status is not
        ``defined`` are skipped.

    Raises:
        ValueError: the file is not a regular file (a named pipe, a device), cannot be read as
            UTF-8 JSON, is not a markups file, has an unknown coordinate system, a control point
            without three finite numbers as position, or no defined point. The message names the
            file (and the point).
    """
    path = Path(path)
    points = [
        apply_affine(flip_lps_ras(np.eye(4)), position) if system == "LPS" else position
        for system, position in _defined_positions(_read_document(path), path)
    ]
    if not points:
        raise ValueError(f"{path}: no defined control points in any markups node")
    return np.array(points)


def _read_document(path: Path) -> dict:
    kind = special_file_kind(path)
    if kind is not None:  # reading a named pipe would block, /dev/zero fill the memory
        raise ValueError(f"{path}: not a regular file but {kind}; give a markups file")
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))  # with or without a BOM
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    except RecursionError:  # Python's parser recurses per level; markups are four levels deep
        raise ValueError(
            f"{path}: not a Slicer markups file (JSON nested thousands of levels deep)"
        ) from None
    except FileNotFoundError:
        raise ValueError(f"{path}: markups file not found") from None
    except OSError as error:
        raise ValueError(f"cannot read markups file {path}: {error.strerror or error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("markups"), list):
        raise ValueError(
            f'{path}: not a Slicer markups file (expected an object whose "markups" is a list '
            "of nodes; save the points from Slicer as .mrk.json)"
        )
    return document


def _defined_positions(document: dict, path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(coordinate system, position) of each defined control point, in file order."""
    for n, node in enumerate(document["markups"], 1):
        if not isinstance(node, dict) or not isinstance(node.get("controlPoints", []), list):
            raise ValueError(f"{path}: markups node {n} is not an object with a controlPoints list")
        # Slicer writes markups in LPS unless told otherwise.
        system = node.get("coordinateSystem", "LPS")
        if system not in ("LPS", "RAS"):
            raise ValueError(f"{path}: unknown coordinate system {system!r} (LPS or RAS)")
        for k, control in enumerate(node.get("controlPoints", []), 1):
            if not isinstance(control, dict):
                raise ValueError(f"{path}: control point {k} of node {n} is not an object")
            if control.get("positionStatus", "defined") == "defined":
                yield system, _position(control, f"{path}: control point {k} of node {n}")


def _position(control: dict, where: str) -> np.ndarray:
    value = control.get("position")
    position = as_point(value)
    if position is None:
        raise ValueError(f"{where} has position {value!r}; expected three finite numbers")
    return position
