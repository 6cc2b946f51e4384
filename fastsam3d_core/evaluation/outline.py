"""The outline of a region of pixels as a simple polygon: what a user tracing it with a lasso
would draw, exactly.

The outline runs along the pixels' edges (between a pixel of the region and one outside) and
turns only at pixel corners, so the polygon encloses exactly the region's pixel centres: a lasso
of it fills back the region, by the even-odd rule on voxel centres
(:func:`~fastsam3d_core.session.shapes.lasso_fill`), and no centre lies on it. It is traced
round the region's largest face-connected part with its holes filled (every outside pixel that
the outside cannot reach through pixel faces), and that is what keeps it simple: two pixels of
the part touching only at a corner would enclose one of the two pixels beside that corner, a
hole, so the path never passes a corner twice.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Edge directions on the lattice of pixel corners, counter-clockwise: east, north, west, south.
# Turning left is the next one.
_STEPS = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)])
# The pixels to the left and to the right of the edge from corner (x, y) in each direction, as
# offsets from (x, y). Corner (x, y) is the lower-left corner of pixel (x, y).
_LEFT = np.array([(0, 0), (-1, 0), (-1, -1), (0, -1)])
_RIGHT = np.array([(0, -1), (0, 0), (-1, 0), (-1, -1)])
# At each corner the path keeps the region on its left; the first edge of these turns that does
# is the next one (only one can, round a part without holes).
_TURNS = (1, 0, 3)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected part of a bool mask (2-D or 3-D), same shape; ties go to the
    first found. An empty mask stays empty."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def outer_outline(region: np.ndarray) -> np.ndarray:
    """The outer outline of the largest face-connected part of a 2-D bool ``region``
    ``(X, Y)``, holes filled: a closed simple polygon, counter-clockwise in (x, y), as float64
    ``(N, 2)`` pixel coordinates (pixel (x, y)'s centre is at (x, y)); the first point is not
    repeated at the end.

    Raises:
        ValueError: the region has no pixel, or is not 2-D.
    """
    region = np.asarray(region, dtype=bool)
    if region.ndim != 2 or not region.any():
        raise ValueError(f"an outline needs a non-empty 2-D region, got shape {region.shape}")
    # The default structure fills what the outside cannot reach through faces (see above).
    filled = ndimage.binary_fill_holes(largest_component(region))
    corners, directions = _edge_path(np.pad(filled, 1))
    turning = directions != np.roll(directions, 1)  # the corners where the path turns
    # Corner (x, y) of the padded lattice is at pixel coordinates (x - 1.5, y - 1.5).
    return corners[turning].astype(np.float64) - 1.5


def _edge_path(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closed path of pixel edges round the outside of a region (bool, with a margin of
    one pixel outside it): the corner each edge leaves, int ``(E, 2)``, and its direction
    (an index into ``_STEPS``), ``(E,)``. It keeps the region on its left."""
    pixels = np.argwhere(padded)
    # The lowest pixel (then the leftmost of those): its lower edge, eastward, is on the outside.
    first = pixels[np.lexsort((pixels[:, 0], pixels[:, 1]))[0]]
    corner, direction = first.copy(), 0
    corners, directions = [], []
    for _ in range(4 * len(pixels)):  # a region's outline has at most four edges per pixel
        corners.append(corner)
        directions.append(direction)
        corner = corner + _STEPS[direction]
        direction = next(
            turned
            for turned in ((direction + turn) % 4 for turn in _TURNS)
            if padded[tuple(corner + _LEFT[turned])] and not padded[tuple(corner + _RIGHT[turned])]
        )
        if direction == 0 and np.array_equal(corner, first):
            return np.array(corners), np.array(directions)
    raise RuntimeError("the outline did not close")  # a defect: every edge path closes


def simplified(polygon: np.ndarray, tolerance: float) -> np.ndarray:
    """A closed polygon ``(N, 2)`` with fewer vertices, none of those dropped farther than
    ``tolerance`` from the simplified outline (Douglas-Peucker, on the two chains between the
    first vertex and the one farthest from it). It may touch or cross itself where the polygon
    has parts closer than ``tolerance``: check it."""
    polygon = np.asarray(polygon, dtype=np.float64)
    far = int(np.argmax(np.linalg.norm(polygon - polygon[0], axis=1)))
    keep = np.zeros(len(polygon) + 1, dtype=bool)
    keep[[0, far, len(polygon)]] = True
    closed = np.vstack([polygon, polygon[:1]])
    chains = [(0, far), (far, len(polygon))]
    while chains:
        first, last = chains.pop()
        if last - first < 2:
            continue
        a, b = closed[first], closed[last]
        inner = closed[first + 1 : last]
        direction = b - a
        cross = direction[0] * (inner[:, 1] - a[1]) - direction[1] * (inner[:, 0] - a[0])
        distance = np.abs(cross) / max(float(np.linalg.norm(direction)), 1e-12)
        farthest = int(np.argmax(distance))
        if distance[farthest] > tolerance:
            middle = first + 1 + farthest
            keep[middle] = True
            chains += [(first, middle), (middle, last)]
    return closed[keep][:-1]
