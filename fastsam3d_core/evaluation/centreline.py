"""A line along an object's core: the stroke a user scribbles along a vessel or an organ.

The centreline is the cheapest path through the object's voxels between two of them, where a
step into a voxel costs its length divided by the voxel's depth squared (its distance to the
object's outside): the path keeps to the middle, as minimal-path centrelines of vessels do. It
is then straightened to some of its voxels, about every ``VERTEX_SPACING_MM``, whose segments
all stay inside the object, so that any point taken along it (as a session samples a scribble)
lies in the object.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

# A segment is checked for leaving the object at points this far apart (in voxels).
SEGMENT_CHECK_STEP = 0.25
# The straightened path keeps a voxel at least every this many millimetres, so that it stays
# near the core (a long chord may stay inside yet run along the object's surface); a session
# samples a scribble every 6 mm (session.shapes.SCRIBBLE_SPACING_MM).
VERTEX_SPACING_MM = 10.0


def centreline(
    part: np.ndarray, start: np.ndarray, end: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """The core path through a face-connected bool ``part`` ``(I, J, K)`` from voxel ``start``
    to voxel ``end`` (int (3,) indices, both in ``part``), straightened: int ``(N, 3)`` voxel
    indices, ``start`` first and ``end`` last, every segment between them inside ``part``.

    Args:
        spacing: voxel size (mm) along i, j, k, float (3,).
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    path = _cheapest_path(part, np.asarray(start), np.asarray(end), spacing)
    return straightened(part, path, spacing)


def _cheapest_path(
    part: np.ndarray, start: np.ndarray, end: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """The cheapest face-neighbour path of voxels from ``start`` to ``end``, int ``(P, 3)``."""
    depth = ndimage.distance_transform_edt(np.pad(part, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    node = np.full(part.shape, -1, dtype=np.int64)
    voxels = np.argwhere(part)
    node[tuple(voxels.T)] = np.arange(len(voxels))
    entry_cost = 1.0 / np.maximum(depth[part], 1e-6) ** 2  # C order, as argwhere lists them
    sources, targets, weights = [], [], []
    for axis in range(3):
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        a, b = node[tuple(first)], node[tuple(second)]
        joined = (a >= 0) & (b >= 0)
        a, b = a[joined], b[joined]
        sources.append(a)
        targets.append(b)
        # Symmetric (the graph is undirected): the mean of the two voxels' entry costs.
        weights.append(spacing[axis] * (entry_cost[a] + entry_cost[b]) / 2)
    count = len(voxels)
    graph = coo_matrix(
        (np.concatenate(weights), (np.concatenate(sources), np.concatenate(targets))),
        shape=(count, count),
    ).tocsr()
    first_node, last_node = node[tuple(start)], node[tuple(end)]
    _, previous = dijkstra(graph, directed=False, indices=first_node, return_predecessors=True)
    chain = [last_node]
    while chain[-1] != first_node:
        chain.append(previous[chain[-1]])
    return voxels[np.array(chain[::-1])]


def straightened(
    part: np.ndarray, path: np.ndarray, spacing: np.ndarray, most_mm: float = VERTEX_SPACING_MM
) -> np.ndarray:
    """Some of a path's voxels (int ``(P, 3)``), its ends kept: from each kept voxel, the path
    voxel as far along as the straight segments to it stay inside ``part`` and within
    ``most_mm`` of it (``spacing``: voxel size along i, j, k in mm)."""
    kept = [0]
    while kept[-1] < len(path) - 1:
        current = kept[-1]
        farthest = current + 1  # neighbouring path voxels share a face: always inside
        while farthest + 1 < len(path):
            following = path[farthest + 1]
            near = np.linalg.norm((following - path[current]) * spacing) <= most_mm
            if not (near and segment_inside(part, path[current], following)):
                break
            farthest += 1
        kept.append(farthest)
    return path[kept]


def segment_inside(part: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether every point of the segment from voxel ``a`` to voxel ``b`` falls, rounded to the
    nearest voxel, in ``part`` (checked every ``SEGMENT_CHECK_STEP`` voxels)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    count = int(np.ceil(np.abs(b - a).max() / SEGMENT_CHECK_STEP)) + 1
    points = a + np.linspace(0.0, 1.0, count)[:, None] * (b - a)
    voxels = np.clip(np.round(points).astype(int), 0, np.array(part.shape) - 1)
    return bool(part[tuple(voxels.T)].all())
