"""Resampling one voxel grid onto another, both placed in RAS by their affines.

NumPy only, so that a client of the encoder service needs no torch. Between a volume and its
crops the grids' axes are always parallel, and the interpolation is computed separably, as three
small matrix products (BLAS); any other pair of grids goes through
:func:`scipy.ndimage.map_coordinates`.
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.ndimage import map_coordinates

from .volume import apply_affine

# The BLAS behind NumPy, run single-threaded here: OpenBLAS threads keep spinning after each
# call and take the cores from the model's own threads (torch, onnxruntime), which doubled a
# click's time on 2 cores; one thread costs crop extraction about a fifth. Without threadpoolctl
# (a declared dependency, missing on bare benchmark machines) results are the same, clicks slower.
try:
    from threadpoolctl import ThreadpoolController

    _BLAS: ThreadpoolController | None = ThreadpoolController()
except ImportError:
    _BLAS = None


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else contextlib.nullcontext()


# Target voxels resampled per map_coordinates call: bounds its (3, N) float64 positions to 100 MB.
_CHUNK_VOXELS = 1 << 22
# Spline orders of map_coordinates for the two modes.
_ORDERS = {"linear": 1, "nearest": 0}


def translation(offset: np.ndarray) -> np.ndarray:
    """4×4 affine that adds ``offset`` (3,)."""
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def source_box(
    source_shape: tuple[int, ...], target_to_source: np.ndarray, target_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The source voxels needed to interpolate every target voxel: ``[lo, hi)`` per axis, clipped.

    Args:
        source_shape: (I, J, K) of the source.
        target_to_source: 4×4 map from target indices to source indices.
        target_shape: shape of the target grid.

    Returns:
        lo, hi: int arrays (3,); empty (lo >= hi on some axis) when the grids do not overlap.
    """
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in target_shape], indexing="ij"))
    mapped = apply_affine(target_to_source, corners.reshape(3, -1).T)
    lo = np.floor(mapped.min(axis=0)).astype(int)
    hi = np.ceil(mapped.max(axis=0)).astype(int) + 1
    return np.clip(lo, 0, source_shape), np.clip(hi, 0, source_shape)


def resample(
    source: np.ndarray,
    source_to_ras: np.ndarray,
    target_to_ras: np.ndarray,
    target_shape: tuple[int, int, int],
    *,
    mode: str = "linear",
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``source`` at the voxel centres of a target grid.

    Voxel edges are at ±0.5 of an index; a target voxel whose centre falls outside the source's
    extent gets 0 and is reported outside. Inside, interpolation clamps at the last voxel centre.

    Args:
        source: array ``(I, J, K)`` in index order (i, j, k) of ``source_to_ras``.
        source_to_ras: 4×4 map from source indices to RAS mm.
        target_to_ras: 4×4 map from target indices to RAS mm.
        target_shape: (I', J', K') of the target grid.
        mode: ``"linear"`` (trilinear) or ``"nearest"``.
        threshold: if given, return ``values > threshold`` (bool) instead of the values; on the
            separable path this is computed slab by slab, without the float32 result in memory.

    Returns:
        values ``(I', J', K')`` float32 (bool with ``threshold``) and inside ``(I', J', K')``
        bool, both in target indices. Where every target voxel is inside, ``inside`` is a
        read-only broadcast (zero strides) of one True.
    """
    if mode not in _ORDERS:
        raise ValueError(f"unknown interpolation mode {mode!r}; use one of {sorted(_ORDERS)}")
    with _single_threaded_blas():
        return _resample(source, source_to_ras, target_to_ras, target_shape, mode, threshold)


def _resample(
    source: np.ndarray,
    source_to_ras: np.ndarray,
    target_to_ras: np.ndarray,
    target_shape: tuple[int, int, int],
    mode: str,
    threshold: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    source = np.asarray(source)
    target_to_source = np.linalg.inv(source_to_ras) @ target_to_ras
    lo, hi = source_box(source.shape, target_to_source, target_shape)
    if np.any(lo >= hi):
        outside = np.zeros(target_shape, dtype=bool)
        return (outside if threshold is not None else outside.astype(np.float32)), outside
    box = source[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32, copy=False)
    box_from_target = translation(-lo) @ target_to_source
    source_axes = _parallel_axes(box_from_target[:3, :3])
    if source_axes is not None:
        shapes = (source.shape, target_shape)
        return _resample_separable(box, box_from_target, source_axes, lo, *shapes, mode, threshold)
    values, inside = _resample_general(box, box_from_target, lo, source.shape, target_shape, mode)
    return (values > threshold if threshold is not None else values), inside


def _parallel_axes(linear: np.ndarray) -> list[int] | None:
    """Source axis of each target axis if the map only permutes, flips and scales axes."""
    significant = np.abs(linear) > 1e-9 * np.abs(linear).max()
    if not np.all(significant.sum(axis=0) == 1) or not np.all(significant.sum(axis=1) == 1):
        return None
    return [int(np.flatnonzero(significant[:, t])[0]) for t in range(3)]


def _axis_weights(
    positions: np.ndarray, box_size: int, box_start: int, full_size: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation matrix ``(targets, box_size)`` float32 along one axis, and which targets
    are inside. ``positions`` are target voxel centres in box indices."""
    full = positions + box_start
    inside = (full >= -0.5) & (full < full_size - 0.5)
    clamped = np.clip(positions, 0, box_size - 1)
    weights = np.zeros((len(positions), box_size), dtype=np.float32)
    rows = np.arange(len(positions))
    if mode == "nearest":
        weights[rows, np.minimum(np.floor(clamped + 0.5).astype(int), box_size - 1)] = 1.0
    else:
        below = np.minimum(np.floor(clamped).astype(int), box_size - 1)
        above = np.minimum(below + 1, box_size - 1)
        fraction = (clamped - below).astype(np.float32)
        # Each statement writes one entry per row; at the last voxel below == above, and the
        # second adds to the first.
        weights[rows, below] += 1 - fraction
        weights[rows, above] += fraction
    return weights * inside[:, None], inside


def _resample_separable(
    box: np.ndarray,
    box_from_target: np.ndarray,
    source_axes: list[int],
    lo: np.ndarray,
    full_shape: tuple[int, ...],
    target_shape: tuple[int, int, int],
    mode: str,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    # Reorder the box so that its axis t is the source axis of target axis t.
    values = box.transpose(source_axes)
    weights, insides = [], []
    for t, axis in enumerate(source_axes):
        positions = np.arange(target_shape[t]) * box_from_target[axis, t] + box_from_target[axis, 3]
        axis_weights, inside = _axis_weights(
            positions, box.shape[axis], int(lo[axis]), full_shape[axis], mode
        )
        weights.append(axis_weights)
        insides.append(inside)
    # Contract the first two axes as matrix products that need no transposed copies:
    # (s0, s1·s2) -> (I', s1, s2), then one (J', s1) product per i' -> (I', J', s2).
    first = weights[0] @ values.reshape(values.shape[0], -1)
    rows = (weights[1] @ first.reshape(target_shape[0], *values.shape[1:])).reshape(
        -1, values.shape[2]
    )
    # The last axis expands the array most: contract it in slabs of rows, so that each slab's
    # result stays in cache and, with a threshold, the float result is never stored whole.
    last = weights[2].T  # (s2, K')
    out = np.empty(target_shape, dtype=bool if threshold is not None else np.float32)
    out_rows = out.reshape(-1, target_shape[2])
    if (
        threshold is None
        or not insides[2].all()
        or not _threshold_sparsely(rows, last, threshold, out_rows, values, weights)
    ):
        step = max(1, (1 << 20) // max(1, target_shape[2]))
        for start in range(0, len(rows), step):
            part = rows[start : start + step] @ last
            if threshold is not None:
                np.greater(part, threshold, out=out_rows[start : start + step])
            else:
                out_rows[start : start + step] = part
    if all(inside.all() for inside in insides):
        return out, np.broadcast_to(np.True_, target_shape)
    inside = insides[0][:, None, None] & insides[1][None, :, None] & insides[2][None, None, :]
    return out, inside


def _threshold_sparsely(
    rows: np.ndarray,
    last: np.ndarray,
    threshold: float,
    out: np.ndarray,
    box: np.ndarray,
    weights: list[np.ndarray],
) -> bool:
    """``out = (rows @ last) > threshold``, computing the product only where it is needed.

    Every column of ``last`` (source, targets) holds non-negative weights summing to 1 (all
    targets inside), so each result is a convex combination of one of ``rows``, itself one of
    the box's rows under its interpolation taps (see :func:`_row_bounds`): a row whose bounds
    lie above the threshold gives only True, one below it only False, and only the rows whose
    bounds straddle it (those near a smooth mask's surface) need the product.

    Args:
        rows: ``(I'·J', s2)``, the box contracted along its first two axes.
        box: ``(s0, s1, s2)``, axes ordered as the targets'.
        weights: the interpolation matrices of the three axes.

    Returns:
        False, leaving ``out`` alone, when too many rows straddle it for this to pay off.
    """
    low, high = _row_bounds(box, weights[0], weights[1])
    crossing = np.flatnonzero((low <= threshold) & (high > threshold))
    if len(crossing) > len(rows) // 8:
        return False
    out[...] = (low > threshold)[:, None]
    if len(crossing):
        out[crossing] = (rows[crossing] @ last) > threshold
    return True


def _row_bounds(
    box: np.ndarray, first: np.ndarray, second: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds ``(I'·J',)`` of the values in each row of ``rows``.

    Row (i', j') mixes the box's rows (a, b, :) for the (at most two) taps a of ``first[i']``
    and b of ``second[j']`` with non-negative weights summing to 1, so it lies between their
    smallest minimum and largest maximum; a target outside the box has no taps and is all 0.
    Much cheaper than the rows' own minima: the box is small, the rows are many.
    """
    box_low, box_high = box.min(axis=2), box.max(axis=2)
    (low_a, high_a, any_a), (low_b, high_b, any_b) = _taps(first), _taps(second)
    pairs = [np.ix_(a, b) for a in (low_a, high_a) for b in (low_b, high_b)]
    low = np.minimum.reduce([box_low[pair] for pair in pairs])
    high = np.maximum.reduce([box_high[pair] for pair in pairs])
    outside = ~(any_a[:, None] & any_b[None, :])
    low[outside] = high[outside] = 0.0
    return low.ravel(), high.ravel()


def _taps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and last source index with a non-zero weight in each row of ``weights``
    ``(targets, sources)``, and whether the row has any."""
    nonzero = weights > 0
    first = nonzero.argmax(axis=1)
    last = weights.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)
    return first, last, nonzero.any(axis=1)


def _resample_general(
    box: np.ndarray,
    box_from_target: np.ndarray,
    lo: np.ndarray,
    full_shape: tuple[int, ...],
    target_shape: tuple[int, int, int],
    mode: str,
) -> tuple[np.ndarray, np.ndarray]:
    values = np.zeros(target_shape, dtype=np.float32)
    inside = np.zeros(target_shape, dtype=bool)
    slab = max(1, _CHUNK_VOXELS // (target_shape[1] * target_shape[2]))
    for start in range(0, target_shape[0], slab):
        stop = min(start + slab, target_shape[0])
        index = np.indices((stop - start, *target_shape[1:]), dtype=np.float64).reshape(3, -1)
        index[0] += start
        in_box = box_from_target[:3, :3] @ index + box_from_target[:3, 3:]
        in_source = in_box + lo[:, None]
        limit = np.asarray(full_shape, dtype=np.float64)[:, None] - 0.5
        inside[start:stop] = (
            ((in_source >= -0.5) & (in_source < limit))
            .all(axis=0)
            .reshape(stop - start, *target_shape[1:])
        )
        # mode="nearest" extends the box by its edge voxels: interpolation clamps there.
        sampled = map_coordinates(box, in_box, order=_ORDERS[mode], mode="nearest")
        values[start:stop] = sampled.reshape(stop - start, *target_shape[1:])
    return values * inside, inside
