"""Where drawn prompts lie on a volume's grid: a point, a box's voxels, a scribble's samples, a
lasso's slice and the voxels its contour encloses.

Everything is in volume indices (i, j, k) or RAS millimetres, as named; pure NumPy and SciPy, so
that a client without torch draws the same. Every check raises ``ValueError`` with one line that
says what is wrong and what the volume spans, before anything is changed.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..geometry import Volume, as_point

# A scribble becomes points every this many millimetres along it (4 crop voxels at 1.5 mm: one
# cell of the decoder's 32³ mask prompt), at most SCRIBBLE_MAX_POINTS of them, spread evenly over
# its length. Measured (docs/prompts.md, "Scribble sampling"): Dice is flat from 6 points on and
# falls below 4; 12 keeps 6 in each crop of a stroke that crosses two; decoding 12 costs as 1.
SCRIBBLE_SPACING_MM = 6.0
SCRIBBLE_MAX_POINTS = 12
# Points sampled inside a lasso to carry it into 3-D: the deepest voxel first, then the ones
# farthest from those chosen.
LASSO_POINTS = 4
# A lasso's contour may have this many points (its self-crossing check grows with their square).
LASSO_MAX_POINTS = 2000
# A lasso's points may stray this far (in slices) from the slice they round to.
LASSO_PLANE_TOLERANCE = 0.5


def check_point(volume: Volume, point_ras: Any) -> np.ndarray:
    """A click position as float64 (3,) RAS mm, checked to lie in a voxel of the volume.

    Raises:
        ValueError: not three finite numbers, or outside the volume (the message gives its
            extent).
    """
    point = as_point(point_ras)
    if point is None:
        raise ValueError(f"a point must be three finite RAS coordinates, got {point_ras!r}")
    if not volume.contains_ras(point):
        raise ValueError(
            f"point {_shown(point)} (RAS mm) is outside the volume, which spans "
            f"{ras_extent(volume)}"
        )
    return point


def ras_extent(volume: Volume) -> str:
    """The RAS bounding box of the volume's voxel centres, e.g. 'R -10..20, A 5..40, S 0..30'."""
    corners_ijk = np.array(np.meshgrid(*[(0, n - 1) for n in volume.shape])).reshape(3, -1).T
    corners_ras = volume.index_to_ras(corners_ijk)
    low, high = corners_ras.min(axis=0), corners_ras.max(axis=0)
    return ", ".join(f"{axis} {a:.1f}..{b:.1f} mm" for axis, a, b in zip("RAS", low, high))


def box_voxels(volume: Volume, corner_a_ras: Any, corner_b_ras: Any) -> tuple[np.ndarray, ...]:
    """The voxels of a box given by two opposite RAS corners, as a volume box ``[lo, hi)`` of
    int (3,) indices (i, j, k): the voxels whose centres lie inside it, clipped to the volume.

    Along an axis where the box holds no voxel centre (a rectangle drawn on a slice has no
    depth), it is the one slice nearest its middle: a 2-D box is a box one slice thick.

    Raises:
        ValueError: a corner is not three finite numbers; the box has no size along two axes
            or more; it lies outside the volume.
    """
    a, b = as_point(corner_a_ras), as_point(corner_b_ras)
    if a is None or b is None:
        bad = corner_a_ras if a is None else corner_b_ras
        raise ValueError(f"a box corner must be three finite RAS coordinates, got {bad!r}")
    corners = np.array(np.meshgrid(*zip(a, b), indexing="ij")).reshape(3, -1).T
    index = volume.ras_to_index(corners)
    low, high = index.min(axis=0), index.max(axis=0)
    lo = np.ceil(low - 1e-6).astype(int)
    hi = np.floor(high + 1e-6).astype(int) + 1
    # Under half a voxel deep: drawn without depth (on a slice, or two corners alike).
    flat = (high - low < 0.5) | (hi <= lo)
    if flat.sum() >= 2:
        raise ValueError(
            f"the box from {_shown(a)} to {_shown(b)} (RAS mm) has no size along "
            f"{flat.sum()} axes: draw it with a width and a height"
        )
    middle = np.round((low + high) / 2).astype(int)
    lo, hi = np.where(flat, middle, lo), np.where(flat, middle + 1, hi)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, volume.shape)
    if np.any(hi <= lo):
        raise ValueError(
            f"the box from {_shown(a)} to {_shown(b)} (RAS mm) is outside the volume, which "
            f"spans {ras_extent(volume)}"
        )
    return lo, hi


def scribble_samples(volume: Volume, points_ras: Any) -> np.ndarray:
    """Points along an open stroke, float64 ``(N, 3)`` RAS mm: every ``SCRIBBLE_SPACING_MM``
    (at most ``SCRIBBLE_MAX_POINTS``, spread evenly, both ends included), those in the volume.

    Raises:
        ValueError: not a list of RAS points; fewer than two distinct points; no sample in the
            volume.
    """
    points = _as_points(points_ras, "scribble")
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    length = float(steps.sum())
    if len(points) < 2 or length == 0.0:
        raise ValueError(
            f"a scribble needs at least two distinct points, got {len(points)} "
            f"(spanning {length:.1f} mm): draw a stroke, or place a point instead"
        )
    count = int(np.clip(np.ceil(length / SCRIBBLE_SPACING_MM) + 1, 2, SCRIBBLE_MAX_POINTS))
    along = np.concatenate([[0.0], np.cumsum(steps)])
    wanted = np.linspace(0.0, length, count)
    samples = np.stack([np.interp(wanted, along, points[:, axis]) for axis in range(3)], axis=1)
    inside = np.array([volume.contains_ras(sample) for sample in samples])
    if not inside.any():
        raise ValueError(
            f"the scribble ({len(points)} points) is outside the volume, which spans "
            f"{ras_extent(volume)}"
        )
    return samples[inside]


@dataclass(frozen=True, eq=False)
class LassoFill:
    """The voxels a lasso encloses on its slice.

    Attributes:
        axis: the volume axis (0, 1, 2 for i, j, k) across the slice.
        lo, hi: int (3,) the volume box ``[lo, hi)`` of the filled voxels, one slice thick
            along ``axis``.
        inside: bool ``(hi - lo)``: the voxels whose centres the contour encloses (even-odd).
    """

    axis: int
    lo: np.ndarray
    hi: np.ndarray
    inside: np.ndarray


def lasso_fill(volume: Volume, contour_ras: Any) -> LassoFill:
    """The voxels of one slice that a closed contour (RAS mm, ``(N, 3)``) encloses.

    Raises:
        ValueError: fewer than three points; not on one slice of the volume; the contour
            crosses itself; it encloses no voxel centre of the volume.
    """
    points = _as_points(contour_ras, "lasso")
    if len(points) > 3 and np.allclose(points[0], points[-1]):
        points = points[:-1]  # a contour closed by repeating its first point
    if not 3 <= len(points) <= LASSO_MAX_POINTS:
        raise ValueError(
            f"a lasso needs 3 to {LASSO_MAX_POINTS} points, got {len(points)}"
            + ("; draw it with fewer points" if len(points) > 3 else "")
        )
    index = volume.ras_to_index(points)
    axis = _slice_axis(index)
    if axis is None:
        raise ValueError(
            "the lasso is not drawn on one slice of the volume: its points span "
            f"{np.ptp(index, axis=0).min():.1f} slices or more along every axis of the volume; "
            "draw it in one slice view (one whose plane is the volume's: in Slicer, 'Rotate to "
            "volume plane' where the scan is oblique)"
        )
    slice_index = int(np.round(index[:, axis].mean()))
    plane = [other for other in range(3) if other != axis]
    polygon = index[:, plane]
    if _crosses_itself(polygon):
        raise ValueError("the lasso crosses itself: draw a contour that does not")
    fill = _enclosed_voxels(volume, axis, slice_index, polygon)
    if fill is None:
        raise ValueError(
            "the lasso encloses no voxel centre of the volume (it is too small, or outside "
            f"the volume, which spans {ras_extent(volume)})"
        )
    return fill


def _slice_axis(index: np.ndarray) -> int | None:
    """The volume axis across a contour's slice (points as continuous indices ``(N, 3)``): of
    the axes along which every point rounds to one slice within ``LASSO_PLANE_TOLERANCE``, the
    one whose plane the contour spans most widely; None where there is none."""
    candidates = []
    for axis in range(3):
        slice_index = np.round(index[:, axis].mean())
        if np.abs(index[:, axis] - slice_index).max() <= LASSO_PLANE_TOLERANCE:
            plane = [other for other in range(3) if other != axis]
            candidates.append((float(np.prod(np.ptp(index[:, plane], axis=0))), axis))
    return max(candidates)[1] if candidates else None


def lasso_samples(volume: Volume, fill: LassoFill) -> np.ndarray:
    """Up to ``LASSO_POINTS`` voxel centres inside a lasso, float64 ``(N, 3)`` RAS mm: the one
    deepest inside first (largest distance to the contour), then each the farthest from those
    chosen."""
    plane = np.squeeze(fill.inside, axis=fill.axis)
    depth = ndimage.distance_transform_edt(np.pad(plane, 1))[1:-1, 1:-1]
    cells = np.argwhere(plane)
    chosen = [int(np.argmax(depth[plane]))]
    distance = np.linalg.norm(cells - cells[chosen[0]], axis=1)
    while len(chosen) < min(LASSO_POINTS, len(cells)):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(cells - cells[chosen[-1]], axis=1))
    index = np.insert(cells[chosen].astype(np.float64), fill.axis, 0.0, axis=1) + fill.lo
    return volume.index_to_ras(index)


def _enclosed_voxels(
    volume: Volume, axis: int, slice_index: int, polygon: np.ndarray
) -> LassoFill | None:
    """The voxel centres of slice ``slice_index`` inside ``polygon`` (``(N, 2)`` indices of the
    slice's two axes), by the even-odd rule; None where there is none."""
    plane = [other for other in range(3) if other != axis]
    size = np.array(volume.shape)[plane]
    low = np.maximum(np.ceil(polygon.min(axis=0)).astype(int), 0)
    high = np.minimum(np.floor(polygon.max(axis=0)).astype(int) + 1, size)
    if not 0 <= slice_index < volume.shape[axis] or np.any(high <= low):
        return None
    inside = _even_odd(polygon, low, high)
    if not inside.any():
        return None
    lo, hi = np.zeros(3, int), np.zeros(3, int)
    lo[axis], hi[axis] = slice_index, slice_index + 1
    lo[plane], hi[plane] = low, high
    return LassoFill(axis, lo, hi, np.expand_dims(inside, axis))


def _even_odd(polygon: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Which integer points (u, v), ``low <= (u, v) < high``, a polygon (``(N, 2)``) encloses,
    bool ``(high - low)``, by the even-odd rule: a ray along +u from the point crosses an odd
    number of edges. A few lines over a library (no dependency here fills polygons; the tests
    check it against matplotlib's).

    Each edge is met only on the rows v it straddles (v1 <= v < v2), where it toggles every
    point before its crossing: a running count per row, so the cost grows with the rows the
    edges span, not with edges × points.
    """
    start, end = polygon, np.roll(polygon, -1, axis=0)
    v_low, v_high = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
    first = np.maximum(np.ceil(v_low).astype(int), low[1])
    last = np.minimum(np.ceil(v_high).astype(int), high[1])  # exclusive
    spans = np.maximum(last - first, 0)
    edge = np.repeat(np.arange(len(polygon)), spans)
    row = np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans) + first[edge]
    (u1, v1), (u2, v2) = start[edge].T, end[edge].T
    crossing = u1 + (row - v1) * (u2 - u1) / (v2 - v1)  # v1 != v2 where an edge straddles
    before = np.clip(np.ceil(crossing).astype(int) - low[0], 0, high[0] - low[0])
    toggles = np.zeros((high[1] - low[1], high[0] - low[0] + 1), int)
    np.add.at(toggles, (row - low[1], 0), 1)
    np.add.at(toggles, (row - low[1], before), -1)
    return (np.cumsum(toggles, axis=1)[:, :-1] % 2 == 1).T


def _crosses_itself(polygon: np.ndarray) -> bool:
    """Whether two non-adjacent edges of a closed polygon (``(N, 2)``) intersect.

    Edge pairs are tested in blocks of rows, so memory stays ~N·block whatever N.
    """
    start, end = polygon, np.roll(polygon, -1, axis=0)
    count = len(polygon)
    for first_row in range(0, count, 256):
        first, second = np.meshgrid(
            np.arange(first_row, min(first_row + 256, count)), np.arange(count), indexing="ij"
        )
        # Pairs once each, not neighbours; the first and the last edge share a vertex too.
        keep = (second >= first + 2) & ~((first == 0) & (second == count - 1))
        first, second = first[keep], second[keep]
        p, p2, q, q2 = start[first], end[first], start[second], end[second]
        side_q, side_q2 = _turn(p, p2, q), _turn(p, p2, q2)
        side_p, side_p2 = _turn(q, q2, p), _turn(q, q2, p2)
        if np.any((side_q * side_q2 < 0) & (side_p * side_p2 < 0)):
            return True
    return False


def _turn(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The sign of the turn a → b → c (cross product), per row."""
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    return np.sign(cross)


def _as_points(points_ras: Any, what: str) -> np.ndarray:
    """RAS points as float64 ``(N, 3)``, checked to be finite."""
    try:
        points = np.asarray(points_ras, dtype=np.float64)
    except (TypeError, ValueError):
        points = np.empty(0)
    if points.ndim != 2 or points.shape[1:] != (3,) or not np.all(np.isfinite(points)):
        shown = reprlib.repr(points_ras)
        raise ValueError(f"a {what} must be a list of RAS points (R, A, S), got {shown}")
    return points


def _shown(point: np.ndarray) -> list[float]:
    return [float(f"{value:.6g}") for value in point]
