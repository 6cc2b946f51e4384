"""Points and curves from 3D Slicer markups files (``.mrk.json``).

A file holds markups nodes (Slicer writes one per file), each of a markups ``type`` (``Fiducial``:
a point list, ``Curve``, ``ClosedCurve``, ``Line``, ``ROI`` ...) with control points in the
node's ``coordinateSystem``, LPS (Slicer's default on disk) or RAS; both are read as RAS.
"""

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
        _as_ras(system, position)
        for system, position in _defined_positions(_read_document(path), path)
    ]
    if not points:
        raise ValueError(f"{path}: no defined control points in any markups node")
    return np.array(points)


# Markups types as a user knows them from Slicer's Markups module, for messages.
MARKUPS_TYPE_NAMES = {
    "Fiducial": "point list",
    "Line": "line",
    "Angle": "angle",
    "Curve": "open curve",
    "ClosedCurve": "closed curve",
    "Plane": "plane",
    "ROI": "box (ROI)",
}


class MarkupsTypeError(ValueError):
    """A markups node of another type than the one asked for (its message names both).

    Attributes:
        found: the node's markups ``type`` as the file has it (None: the node has none).
    """

    def __init__(self, message: str, found: str | None) -> None:
        super().__init__(message)
        self.found = found


def read_markups_curves(path: str | Path, closed: bool) -> list[np.ndarray]:
    """The curves of a Slicer ``.mrk.json`` file: one per markups node, each its defined
    control points in order (a curve's polyline; Slicer draws a smooth curve through them).

    Args:
        path: a markups JSON file whose every node is a curve of the kind asked for.
        closed: True for closed curves (markups type ``ClosedCurve``), False for open ones
            (``Curve``).

    Returns:
        One float64 ``(N, 3)`` RAS millimetres array per node, in file order; points whose
        position status is not ``defined`` are skipped.

    Raises:
        MarkupsTypeError: a node of another markups type (a point list, an open curve where a
            closed one is asked for, ...), or of none.
        ValueError: as :func:`read_markups_points`; also a curve without a defined point. The
            message names the file (and the node).
    """
    path = Path(path)
    wanted = "ClosedCurve" if closed else "Curve"
    document = _read_document(path)
    curves = []
    for n, node in enumerate(document["markups"], 1):
        _check_node_type(node, n, wanted, path)
        points = [_as_ras(system, position) for system, position in _node_positions(node, n, path)]
        if not points:
            raise ValueError(
                f"{path}: the {MARKUPS_TYPE_NAMES[wanted]} (markups node {n}) has no defined "
                "control point; place its points in Slicer and save it"
            )
        curves.append(np.array(points))
    if not curves:
        raise ValueError(
            f"{path}: no markups node; save a {MARKUPS_TYPE_NAMES[wanted]} from Slicer"
        )
    return curves


def _check_node_type(node: object, n: int, wanted: str, path: Path) -> None:
    found = node.get("type") if isinstance(node, dict) else None
    if found == wanted:
        return
    expected = f"{_a(MARKUPS_TYPE_NAMES[wanted])} (markups type {wanted!r})"
    if found is None:
        message = f"{path}: markups node {n} has no markups type; expected {expected}"
        raise MarkupsTypeError(message, None)
    shown = _a(MARKUPS_TYPE_NAMES.get(str(found), "markup"))
    message = f"{path}: markups node {n} is {shown} (markups type {found!r}), not {expected}"
    raise MarkupsTypeError(message, str(found))


def _a(name: str) -> str:
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


def _as_ras(system: str, position: np.ndarray) -> np.ndarray:
    return apply_affine(flip_lps_ras(np.eye(4)), position) if system == "LPS" else position


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
        yield from _node_positions(node, n, path)


def _node_positions(node: object, n: int, path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(coordinate system, position) of each defined control point of markups node ``n``."""
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
