"""The clicks of a MONAI Label request: ``foreground`` and ``background`` voxel indices.

MONAI Label's clients (OHIF, Slicer's MONAILabel module) send every point placed so far, each
time, as indices ``[i, j, k]`` of the image the server gave them: (i, j, k) is ITK's and NIfTI's
voxel-index order, the order of :class:`fastsam3d_core.geometry.Volume`'s array, and an integer
index is a voxel's centre.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsam3d_core.geometry import Volume

#: Points a request may hold. Each new point is one decoder run; a restart runs them all, so the
#: bound keeps one request's work to seconds (the red team's 10,000-point file ran for an hour).
MAX_POINTS = 200

Index = tuple[float, float, float]


@dataclass(frozen=True)
class RequestPoints:
    """The clicks of one request, in the order the client placed them within each kind.

    Attributes:
        foreground: object points, voxel indices (i, j, k).
        background: background points, voxel indices (i, j, k).
    """

    foreground: tuple[Index, ...]
    background: tuple[Index, ...]

    def __len__(self) -> int:
        return len(self.foreground) + len(self.background)

    def continues(self, earlier: RequestPoints) -> bool:
        """Whether these points are ``earlier``'s with points added after them (or the same)."""
        return (
            self.foreground[: len(earlier.foreground)] == earlier.foreground
            and self.background[: len(earlier.background)] == earlier.background
        )

    def added_to(self, earlier: RequestPoints) -> list[tuple[Index, bool]]:
        """The points added since ``earlier`` (which :meth:`continues`), as (index, positive):
        object points first, then background points."""
        new_foreground = self.foreground[len(earlier.foreground):]
        new_background = self.background[len(earlier.background):]
        return [(p, True) for p in new_foreground] + [(p, False) for p in new_background]

    def check_inside(self, volume: Volume) -> None:
        """Refuse a point outside ``volume``'s voxels.

        Raises:
            ValueError: one line naming the point and the image's index range.
        """
        for point in self.foreground + self.background:
            if not volume.contains_index(np.asarray(point, np.float64)):
                ranges = ", ".join(f"0..{n - 1}" for n in volume.shape)
                raise ValueError(
                    f"point {_shown(point)} is outside the image, whose voxel indices (i, j, k) "
                    f"run {ranges}"
                )


NO_POINTS = RequestPoints((), ())


def request_points(params: Mapping[str, Any]) -> RequestPoints:
    """The ``foreground`` and ``background`` points of a request's parameters.

    Raises:
        ValueError: one line: no point at all, a list that is not of ``[i, j, k]`` numbers, or
            more than :data:`MAX_POINTS` points.
    """
    points = RequestPoints(
        _indices(params.get("foreground"), "foreground"),
        _indices(params.get("background"), "background"),
    )
    if not len(points):
        raise ValueError(
            "no points: send 'foreground' (and 'background') as lists of voxel indices "
            "[i, j, k] of the image"
        )
    if len(points) > MAX_POINTS:
        raise ValueError(
            f"{len(points)} points in one request; at most {MAX_POINTS} are taken"
        )
    return points


def request_label(params: Mapping[str, Any]) -> str:
    """The request's ``label``: its name (OHIF sends none: ``"segment"``).

    Raises:
        ValueError: a label that is not text.
    """
    label = params.get("label")
    if label is None or label == "":
        return "segment"
    if not isinstance(label, str):
        raise ValueError(f"'label' must be a structure's name, not {_kind(label)}")
    return label


def _indices(value: Any, name: str) -> tuple[Index, ...]:
    if value is None or value == "":
        return ()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"'{name}' must be a list of voxel indices [i, j, k], not {_kind(value)}")
    return tuple(_index(item, name) for item in value)


def _index(item: Any, name: str) -> Index:
    numbers = (
        item
        if isinstance(item, (list, tuple)) and len(item) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
        else None
    )
    if numbers is None or not all(math.isfinite(v) for v in numbers):
        raise ValueError(
            f"each '{name}' point must be a voxel index [i, j, k] of three finite numbers, "
            f"not {_shown(item)}"
        )
    return (float(numbers[0]), float(numbers[1]), float(numbers[2]))


def _kind(value: Any) -> str:
    return f"a {type(value).__name__}"


def _shown(value: Any) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 60 else text[:57] + "..."
