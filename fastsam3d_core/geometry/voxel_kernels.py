"""The voxel loops of a click's paste-back, compiled where built, else NumPy: the same bytes.

A click on a large CT rewrites millions of voxels (14 million on a 512×512×300 CT): the
interpolated logits' sign at each, then the write into the segment's labelmap with its undo
record. In NumPy each is several whole-array passes, and ``np.packbits`` holds the GIL, so the
slab threads (:mod:`.slabs`) wait on each other; the compiled loops (``_voxels.c``, built by
``setup.py``, optional) do each in one pass over memory with the GIL released. Where the
module is missing (no compiler at install time) or turned off (:func:`set_compiled`, or the
environment variable ``FASTSAM3D_NO_COMPILED_LOOPS=1``) NumPy computes the same values.
"""

from __future__ import annotations

import os

import numpy as np

try:  # built by setup.py where a C compiler was found
    from . import _voxels  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the installation
    _voxels = None

# "0" or empty leaves them on, as for most switches of this kind.
_TURNED_OFF = os.environ.get("FASTSAM3D_NO_COMPILED_LOOPS", "") not in ("", "0")
_use_compiled = _voxels is not None and not _TURNED_OFF
# Voxels handled at a time by a NumPy loop over a box (here, and the session's comparison of
# masks): a slab that stays in cache.
SLAB_VOXELS = 1 << 19


def compiled_loops() -> str | None:
    """The instruction set of the compiled loops in use ("avx2", "scalar"), or None where
    NumPy computes them."""
    return _voxels.instruction_set() if _use_compiled and _voxels is not None else None


def set_compiled(enabled: bool) -> bool:
    """Use the compiled loops (where built) or NumPy; returns the previous setting. For tests
    and benchmarks that compare the two."""
    global _use_compiled
    previous = _use_compiled
    _use_compiled = bool(enabled) and _voxels is not None
    return previous


def _rows_contiguous(*arrays: np.ndarray) -> bool:
    """Whether each array's last axis is contiguous and its items aligned (the compiled loops'
    requirements on layout: C reads them as floats; the other axes may be strided)."""
    return all(
        a.flags.aligned and (a.shape[-1] <= 1 or a.strides[-1] == a.itemsize) for a in arrays
    )


def signs_between(
    below: np.ndarray, above: np.ndarray, fractions: np.ndarray, out: np.ndarray
) -> None:
    """``out[t] = fractions[t] · (above − below) > −below`` for each t: the float32 difference
    and product each rounded, then compared (no fused multiply-add): the sign of the float32
    interpolation between two planes at each fraction (see ``resample._positive_planes``).

    Args:
        below, above: float32 ``(J, K)``, the two planes.
        fractions: float32 ``(T,)``.
        out: bool ``(T, J, K)``, written.
    """
    fractions = np.ascontiguousarray(fractions, dtype=np.float32)
    if (
        _use_compiled
        and below.dtype == above.dtype == np.float32
        and out.dtype == np.bool_
        and _rows_contiguous(below, above, out)
    ):
        _voxels.signs_between(below, above, fractions, out)
        return
    step, negated = np.subtract(above, below), np.negative(below)
    scratch = np.empty_like(step)
    for target, fraction in enumerate(fractions):
        np.greater(np.multiply(step, fraction, out=scratch), negated, out=out[target])


def write_rows(
    region: np.ndarray,
    new: np.ndarray,
    before_bits: np.ndarray,
    after_bits: np.ndarray,
    rows_differ: np.ndarray,
) -> np.ndarray:
    """Write ``new`` into ``region`` (uint8 0/1 ``(I, J, K)``, indexed alike), keeping both
    versions packed (``np.packbits(..., axis=-1)``) in ``before_bits`` and ``after_bits``
    (uint8 ``(I, J, ceil(K / 8))``); ``rows_differ`` (bool ``(I,)``) is set where a row of the
    first axis changed. Packing takes any nonzero byte as 1; but a row whose packed bits do
    not change may be left as it was (the compiled loops copy row by row, NumPy slab by slab),
    so bytes other than 0 and 1 may stay in ``region`` differently (never in a segment's mask).

    Returns:
        The OR over the rows of the packed differences, uint8 ``(J, ceil(K / 8))``: where along
        the last two axes anything changed.
    """
    flipped = np.zeros(before_bits.shape[1:], dtype=np.uint8)
    if (
        _use_compiled
        and region.dtype == new.dtype == np.uint8
        and _rows_contiguous(region, new, before_bits, after_bits)
    ):
        _voxels.write_rows(region, new, before_bits, after_bits, rows_differ, flipped)
        return flipped
    depth, rows, length = region.shape
    step = max(1, SLAB_VOXELS // max(1, rows * length))
    scratch = np.empty((min(step, depth), *before_bits.shape[1:]), dtype=np.uint8)
    for start in range(0, depth, step):
        stop = min(start + step, depth)
        before_bits[start:stop] = np.packbits(region[start:stop], axis=-1)
        after_bits[start:stop] = np.packbits(new[start:stop], axis=-1)
        flips = np.bitwise_xor(
            before_bits[start:stop], after_bits[start:stop], out=scratch[: stop - start]
        )
        slab_rows = flips.reshape(stop - start, -1).any(axis=1)
        rows_differ[start:stop] = slab_rows
        if slab_rows.any():
            flipped |= np.bitwise_or.reduce(flips, axis=0)
            region[start:stop] = new[start:stop]  # after the before is packed
    return flipped
