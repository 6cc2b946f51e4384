"""The first prompt of an evaluation, simulated from the ground truth: a point (the paper's first
click), a box, a scribble or a lasso, as a user would draw them (``evaluate --first-prompt``).

Each is given in RAS millimetres on the image's grid, as :class:`~fastsam3d_core.session.Session`
takes it, and is defined so that anyone can reproduce it:

- **box**: the truth's voxel bounding box, each of its six faces then moved by a whole number of
  voxels drawn uniformly from ``-n..n`` with the case's seed (positive: outward), where ``n`` is
  the number of voxels along that axis within ``BOX_JITTER_MM``; never past the volume's edge,
  and never so far inward that the box loses its last voxel. Its corners are the centres of its
  first and last voxels.
- **scribble**: the truth's largest face-connected part, and the axis of the volume along which
  it is longest (in mm); on its first and its last slice across that axis, the voxel deepest
  inside it (largest in-plane distance to its outside, in mm); between those two, its
  centreline (:func:`~.centreline.centreline`): the cheapest path through its voxels where a
  step into a voxel costs its length over the voxel's depth squared, so that it keeps to the
  object's core (its medial axis), straightened to a few of its voxels such that the stroke
  never leaves the object. A user scribbling along a vessel or an organ draws such a line.
- **lasso**: on the scan's slice axis (the volume axis with the largest spacing; where spacings
  are equal, the last axis, k, along which slices are stored), the slice where the truth's
  cross-section is largest; the outer outline of that slice's largest face-connected part, holes
  filled, traced along the voxels' edges (:func:`~.outline.outer_outline`): a closed simple
  polygon whose fill is exactly that part. One with more corners than a session takes
  (``LASSO_MAX_POINTS``) is simplified (Douglas-Peucker, ``LASSO_SIMPLIFY_VOXELS``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..geometry import Volume
from ..session.shapes import LASSO_MAX_POINTS
from .centreline import centreline
from .outline import largest_component, outer_outline, simplified

# "text": the structure's name (RefSAM3D's text prompt over the whole image; issue 29), no drawing.
FIRST_PROMPTS = ("point", "box", "scribble", "lasso", "text")
# A hand-drawn box misses the object's edge by a little, both ways: each face moves by up to
# 3 mm, two voxels of the models' 1.5 mm grid (one at 3 mm). A positive box bounds the result,
# so a face moved inward costs the Dice what it cuts off; a jitter this small measures a careful
# user's box rather than a perfect one, without the box's own misses dominating the figure.
BOX_JITTER_MM = 3.0
# An outline with more corners than a session takes in a lasso (a large object on a fine grid)
# is simplified, first dropping no corner farther than this from it (voxels), doubled until it
# fits: under a voxel, so only boundary voxels can change side.
LASSO_SIMPLIFY_VOXELS = 0.5


def check_first_prompt(name: str) -> str:
    """The name of a first prompt, checked.

    Raises:
        ValueError: not one of ``FIRST_PROMPTS`` (one line that lists them).
    """
    if name not in FIRST_PROMPTS:
        raise ValueError(f"unknown first prompt {name!r}: choose from {', '.join(FIRST_PROMPTS)}")
    return name


def simulated_prompt(
    kind: str, volume: Volume, truth: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The simulated box, scribble or lasso (see the module's docstring) for a bool truth
    ``(I, J, K)`` on ``volume``'s grid: float64 RAS mm, ``(2, 3)`` opposite corners for a box,
    ``(N, 3)`` points for a scribble or a lasso. Only the box draws from ``rng``.

    Raises:
        ValueError: an unknown kind (a point is no drawing: the paper's click sampler places
            it), or an empty truth.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != volume.shape or not truth.any():
        raise ValueError(f"the truth must be a non-empty mask shaped {volume.shape}")
    if kind == "box":
        return simulated_box(volume, truth, rng)
    if kind == "scribble":
        return simulated_scribble(volume, truth)
    if kind == "lasso":
        return simulated_lasso(volume, truth)
    raise ValueError(f"no drawing to simulate for a first prompt {kind!r}: box, scribble, lasso")


def simulated_box(
    volume: Volume, truth: np.ndarray, rng: np.random.Generator, jitter_mm: float = BOX_JITTER_MM
) -> np.ndarray:
    """Two opposite corners, float64 ``(2, 3)`` RAS mm, of the truth's bounding box with each
    face moved by up to ``jitter_mm`` (whole voxels; see the module's docstring)."""
    lo, hi = bounding_box(truth)
    reach = np.floor(jitter_mm / volume.spacing + 1e-9).astype(int)
    outward_lo = rng.integers(-reach, reach + 1)
    outward_hi = rng.integers(-reach, reach + 1)
    shape = np.array(volume.shape)
    middle = (lo + hi - 1) // 2
    # Inward never past the middle voxel, so the box keeps at least one voxel on every axis.
    lo = np.clip(lo - outward_lo, 0, middle)
    hi = np.clip(hi + outward_hi, middle + 1, shape)
    return volume.index_to_ras(np.stack([lo, hi - 1]).astype(np.float64))


def simulated_scribble(volume: Volume, truth: np.ndarray) -> np.ndarray:
    """A stroke along the truth's core, float64 ``(N, 3)`` RAS mm (see the module's docstring);
    a single point (``N == 1``) for an object one voxel long."""
    part = largest_component(truth)
    lo, hi = bounding_box(part)
    part = part[tuple(slice(a, b) for a, b in zip(lo, hi))]  # its box: the same, but faster
    axis = int(np.argmax(np.array(part.shape) * volume.spacing))
    ends = [_deepest_in_slice(part, axis, index, volume.spacing) for index in (0, -1)]
    if np.array_equal(*ends):
        return volume.index_to_ras((lo + ends[0])[None].astype(np.float64))
    stroke = centreline(part, ends[0], ends[1], volume.spacing)
    return volume.index_to_ras((lo + stroke).astype(np.float64))


def _deepest_in_slice(part: np.ndarray, axis: int, index: int, spacing: np.ndarray) -> np.ndarray:
    """The voxel (int (3,)) of slice ``index`` (negative: from the end) across ``axis`` deepest
    inside ``part`` in that slice (largest in-plane distance in mm to its outside, beyond the
    array's edge included)."""
    in_plane = [other for other in range(3) if other != axis]
    plane = np.pad(np.take(part, index, axis=axis), 1)
    depth = ndimage.distance_transform_edt(plane, sampling=spacing[in_plane])
    voxel = np.array(np.unravel_index(np.argmax(depth), plane.shape)) - 1
    return np.insert(voxel, axis, index % part.shape[axis])


def simulated_lasso(volume: Volume, truth: np.ndarray) -> np.ndarray:
    """The truth's outline on its largest slice, float64 ``(N, 3)`` RAS mm, all on one slice
    across :func:`slice_axis` (see the module's docstring)."""
    axis = slice_axis(volume)
    in_plane = tuple(other for other in range(3) if other != axis)
    index = int(np.argmax(truth.sum(axis=in_plane)))
    outline = outer_outline(np.take(truth, index, axis=axis))
    tolerance = LASSO_SIMPLIFY_VOXELS
    exact = outline
    while len(outline) > LASSO_MAX_POINTS:
        outline = simplified(exact, tolerance)
        tolerance *= 2
    contour = np.insert(outline, axis, float(index), axis=1)
    return volume.index_to_ras(contour)


def slice_axis(volume: Volume) -> int:
    """The volume axis across the scan's slices: the one with the largest spacing; among equal
    spacings (within 0.001 mm), the last, k, along which slices are stored."""
    spacing = volume.spacing
    return int(np.flatnonzero(spacing >= spacing.max() - 1e-3)[-1])


def bounding_box(mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """The voxel bounding box ``[lo, hi)`` (int ``(3,)`` each) of a non-empty bool mask."""
    found = ndimage.find_objects(np.asarray(mask, dtype=bool).view(np.uint8))
    if not found:
        raise ValueError("the mask is empty")
    box = found[0]
    return np.array([s.start for s in box]), np.array([s.stop for s in box])
