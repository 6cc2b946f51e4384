"""Resampling one voxel grid onto another, both placed in RAS by their affines.

NumPy only, so that a client of the encoder service needs no torch. Between a volume and its
crops the grids' axes are always parallel, and the interpolation is computed separably, as three
small matrix products (BLAS); any other pair of grids goes through
:func:`scipy.ndimage.map_coordinates`.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
from scipy.ndimage import map_coordinates

from .slabs import run_slabs, slab_bounds
from .volume import apply_affine
from .voxel_kernels import signs_between

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


class _AxisTaps(NamedTuple):
    """Where each target voxel of one axis interpolates the source: between box index ``below``
    and ``below + 1`` at ``fraction`` float32 in [0, 1) (0: ``below`` alone), and whether it is
    inside the source's extent."""

    below: np.ndarray
    fraction: np.ndarray
    inside: np.ndarray


def _axis_taps(
    positions: np.ndarray, box_size: int, box_start: int, full_size: int, mode: str
) -> _AxisTaps:
    """The taps of target voxel centres ``positions`` (box indices) along one axis."""
    full = positions + box_start
    inside = (full >= -0.5) & (full < full_size - 0.5)
    clamped = np.clip(positions, 0, box_size - 1)
    if mode == "nearest":
        below = np.minimum(np.floor(clamped + 0.5).astype(int), box_size - 1)
        return _AxisTaps(below, np.zeros(len(positions), np.float32), inside)
    below = np.minimum(np.floor(clamped).astype(int), box_size - 1)
    fraction = (clamped - below).astype(np.float32)
    # A fraction that rounds up to 1 in float32 is the next voxel alone: the same weights, and
    # fractions stay below 1 (which :func:`_interpolate_planes` relies on).
    rounded_up = fraction == 1
    below[rounded_up] += 1
    fraction[rounded_up] = 0
    return _AxisTaps(below, fraction, inside)


def _axis_weights(taps: _AxisTaps, box_size: int) -> np.ndarray:
    """Interpolation matrix ``(targets, box_size)`` float32 along one axis; rows of targets
    outside are 0."""
    weights = np.zeros((len(taps.below), box_size), dtype=np.float32)
    rows = np.arange(len(taps.below))
    above = np.minimum(taps.below + 1, box_size - 1)
    # Each statement writes one entry per row; at the last voxel below == above (its fraction
    # is 0), and the second adds 0 to the first.
    weights[rows, taps.below] += 1 - taps.fraction
    weights[rows, above] += taps.fraction
    return weights * taps.inside[:, None]


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
    taps = []
    for t, axis in enumerate(source_axes):
        positions = np.arange(target_shape[t]) * box_from_target[axis, t] + box_from_target[axis, 3]
        taps.append(_axis_taps(positions, box.shape[axis], int(lo[axis]), full_shape[axis], mode))
    weights = [_axis_weights(tap, size) for tap, size in zip(taps, values.shape)]
    if target_shape[0] >= values.shape[0]:
        out = _interpolate_planes(values, taps[0], weights[1:], target_shape, threshold)
    else:
        out = _contract_rows(values, weights, target_shape, threshold)
    insides = [tap.inside for tap in taps]
    if all(inside.all() for inside in insides):
        return out, np.broadcast_to(np.True_, target_shape)
    inside = insides[0][:, None, None] & insides[1][None, :, None] & insides[2][None, None, :]
    return out, inside


def _contract_rows(
    values: np.ndarray,
    weights: list[np.ndarray],
    target_shape: tuple[int, int, int],
    threshold: float | None,
) -> np.ndarray:
    """Separable interpolation as three matrix products, for a target smaller than the source
    along its first axis (a crop cut from a finer volume)."""
    # Contract the first two axes as matrix products that need no transposed copies:
    # (s0, s1·s2) -> (I', s1, s2), then one (J', s1) product per i' -> (I', J', s2).
    first = weights[0] @ values.reshape(values.shape[0], -1)
    rows = (weights[1] @ first.reshape(target_shape[0], *values.shape[1:])).reshape(
        -1, values.shape[2]
    )
    # Then the last axis in slabs of rows, so that with a threshold the float result is never
    # stored whole.
    last = weights[2].T  # (s2, K')
    out = np.empty(target_shape, dtype=bool if threshold is not None else np.float32)
    out_rows = out.reshape(-1, target_shape[2])
    step = max(1, (1 << 20) // max(1, target_shape[2]))
    for start in range(0, len(rows), step):
        part = rows[start : start + step] @ last
        if threshold is not None:
            np.greater(part, threshold, out=out_rows[start : start + step])
        else:
            out_rows[start : start + step] = part
    return out


def _interpolate_planes(
    values: np.ndarray,
    first_axis: _AxisTaps,
    weights: list[np.ndarray],
    target_shape: tuple[int, int, int],
    threshold: float | None,
) -> np.ndarray:
    """Separable interpolation for a target at least as large as the source along its first
    axis (low-resolution logits onto a volume's box: a click's paste-back).

    The last two axes are contracted as matrix products, ``(s0, s1, s2) -> (s0, J', K')``: the
    source's planes on the target's (J', K') grid. Each target plane i' then lies between two
    of them, ``P[b] + f·(P[b+1] - P[b])`` in float32: two operations per target voxel, plane by
    plane in cache, where a matrix product over the first axis would take 2·s0. With threshold
    0 (a labelmap) see :func:`_positive_planes`, which gives the same voxels.

    Args:
        values: ``(s0, s1, s2)`` source, axes ordered as the target's.
        first_axis: the taps of the first axis.
        weights: the interpolation matrices of the second and third axes.
    """
    s0, s1, s2 = values.shape
    along_last = np.ascontiguousarray(values).reshape(s0 * s1, s2) @ weights[1].T
    along_last = along_last.reshape(s0, s1, target_shape[2])
    planes = np.empty((s0, *target_shape[1:]), dtype=np.float32)  # (s0, J', K')

    def contract(start: int, stop: int) -> None:
        # One (J', s1) @ (s1, K') product per source plane, whichever thread computes it.
        np.matmul(weights[0], along_last[start:stop], out=planes[start:stop])

    run_slabs(contract, slab_bounds(s0))
    if threshold is not None and threshold == 0:
        return _positive_planes(planes, first_axis, target_shape)
    steps = planes[1:] - planes[:-1]
    out = np.empty(target_shape, dtype=bool if threshold is not None else np.float32)
    scratch = np.empty(target_shape[1:], dtype=np.float32)
    for target in range(target_shape[0]):
        below, fraction = first_axis.below[target], first_axis.fraction[target]
        if not first_axis.inside[target]:
            out[target] = 0
        elif fraction == 0:
            out[target] = planes[below] if threshold is None else planes[below] > threshold
        else:
            np.multiply(steps[below], fraction, out=scratch)
            if threshold is None:
                np.add(scratch, planes[below], out=out[target])
            else:
                np.add(scratch, planes[below], out=scratch)
                np.greater(scratch, threshold, out=out[target])
    return out


# A target plane at a fraction up to this from the source plane below it keeps the sign that
# both source planes around it share (see _positive_planes); float32's only larger fraction
# below 1 is 1 - 2**-24, whose planes are always computed.
_SIGN_KEEPING_FRACTION = np.float32(1 - 2**-23)
# Where more than this share of a plane's (j, k) changes sign between two source planes, the
# whole plane is computed, without looking for the box of those that do (noise-like logits).
_DENSE_SHARE = 0.25


def _positive_planes(
    planes: np.ndarray, first_axis: _AxisTaps, target_shape: tuple[int, int, int]
) -> np.ndarray:
    """``P[b] + f·(P[b+1] - P[b]) > 0`` of :func:`_interpolate_planes`, bool ``target_shape``,
    the same voxels computed with less work.

    ``x + P[b] > 0`` is computed as ``x > -P[b]`` (``x = f·(P[b+1] - P[b])`` rounded): a float
    sum is positive exactly when its exact sum is. Where the two source planes around a run of
    target planes have the same sign at (j, k), every target voxel there has it too, so those
    voxels are copied from the sign of ``P[b]`` and only the box of (j, k) where the signs
    differ is computed (a smooth mask's surface; every voxel for noise). In float32: if
    ``P[b], P[b+1] <= 0`` then ``d = P[b+1] - P[b] <= -P[b]`` and ``f·d <= -P[b]`` after
    rounding (f <= 1); if both are positive and ``P[b]`` is a normal float, ``d >= -P[b]`` and,
    for ``f <= 1 - 2**-23``, ``f·d`` rounds to more than ``-P[b]``. Without those conditions
    (a positive subnormal value, a fraction of 1 - 2**-24) every voxel is computed.

    Args:
        planes: ``(s0, J', K')`` float32, the source planes on the target's (J', K') grid.
        first_axis: the taps of the first axis.
    """
    out = np.empty(target_shape, dtype=bool)
    positive = planes > 0
    runs = _runs(first_axis)

    def target_slab(first: int, last: int) -> None:
        # Runs cut at the slab's edges: a part of a run is computed as the whole run is.
        clipped = [(max(a, first), min(b, last)) for a, b in runs if a < last and b > first]
        _positive_runs(planes, positive, first_axis, clipped, out)

    run_slabs(target_slab, slab_bounds(target_shape[0]))
    return out


def _positive_runs(
    planes: np.ndarray,
    positive: np.ndarray,
    first_axis: _AxisTaps,
    runs: list[tuple[int, int]],
    out: np.ndarray,
) -> None:
    """:func:`_positive_planes` for the target planes of ``runs`` (of :func:`_runs`), into
    ``out``; ``positive``: ``planes > 0``."""
    everywhere = (slice(None), slice(None))
    may_copy = None  # known once a run could copy (noise never does)
    for start, stop in runs:
        below, fractions = first_axis.below[start], first_axis.fraction[start:stop]
        if not first_axis.inside[start]:
            out[start:stop] = False
        elif fractions[0] == 0:
            out[start:stop] = positive[below]
        elif fractions.max() <= _SIGN_KEEPING_FRACTION:
            region = _sign_change_box(positive[below], positive[below + 1])
            if region != everywhere and may_copy is None:
                # The first axis may be flipped: the source planes of the runs, either way.
                ends = first_axis.below[runs[0][0]], first_axis.below[runs[-1][0]]
                sources = slice(min(ends), max(ends) + 2)
                may_copy = _normal_positives(planes[sources], positive[sources])
            if region != everywhere and not may_copy:
                region = everywhere
            if region != everywhere:
                out[start:stop] = positive[below]
            if region is not None:
                _compute_signs(planes, below, fractions, region, out[start:stop])
        else:
            _compute_signs(planes, below, fractions, everywhere, out[start:stop])


def _normal_positives(planes: np.ndarray, positive: np.ndarray) -> bool:
    """Whether no value of ``planes`` is a positive subnormal float (none in real logits),
    which would break :func:`_positive_planes`' argument."""
    return np.count_nonzero(positive) == np.count_nonzero(planes >= np.finfo(np.float32).tiny)


def _sign_change_box(below: np.ndarray, above: np.ndarray) -> tuple[slice, slice] | None:
    """The box of (j, k) where two source planes' signs (bool (J', K')) differ: None where
    nowhere, the whole plane where they differ at many."""
    differs = below != above
    changes = np.count_nonzero(differs)
    if changes == 0:
        return None
    if changes > _DENSE_SHARE * differs.size:
        return (slice(None), slice(None))
    rows, columns = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if rows.size == differs.shape[0] and columns.size == differs.shape[1]:
        return (slice(None), slice(None))
    return (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))


def _runs(taps: _AxisTaps) -> list[tuple[int, int]]:
    """Runs ``[start, stop)`` of consecutive target planes computed alike: between the same two
    source planes (fraction > 0), on one source plane (fraction 0), or outside."""
    between = 2 * taps.below + (taps.fraction > 0)
    kind = np.where(taps.inside, between, -1)
    edges = np.flatnonzero(np.diff(kind)) + 1
    bounds = [0, *edges.tolist(), len(kind)]
    return list(zip(bounds[:-1], bounds[1:]))


def _compute_signs(
    planes: np.ndarray,
    below: int,
    fractions: np.ndarray,
    region: tuple[slice, slice],
    out: np.ndarray,
) -> None:
    """``f·(P[b+1] - P[b]) > -P[b]`` over ``region`` of (J', K') for each fraction f, into
    ``out`` ``(len(fractions), J', K')`` (:func:`.voxel_kernels.signs_between`)."""
    signs_between(
        planes[below][region], planes[below + 1][region], fractions, out[(slice(None), *region)]
    )


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
