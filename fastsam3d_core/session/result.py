"""What an edit of a session changed: which segments, which voxel boxes, their voxels after it.

Computed once, here, from the boxes the session writes (and keeps for undo), so that no caller
compares masks to find out what changed. Boxes are volume indices (i, j, k), the axis order of
``volume.array``, half-open ``[lo, hi)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import CropGrid
from ..geometry.slabs import run_slabs, slab_bounds
from ..geometry.voxel_kernels import SLAB_VOXELS, write_rows
from .state import MaskPatch


@dataclass(frozen=True, eq=False)
class SegmentChange:
    """One segment's voxels in the box an edit changed, as they are after the edit.

    Writing ``mask`` over ``[lo_ijk, hi_ijk)`` of a copy of the segment's previous mask gives
    its new mask.

    Attributes:
        segment_id: the session's segment id.
        lo_ijk, hi_ijk: int (3,) volume indices (i, j, k) of the box ``[lo, hi)``: the smallest
            box that holds every voxel of this segment that changed.
        mask: bool ``(hi - lo)`` indexed (i, j, k): the segment's voxels in the box. Read-only
            and never changed afterwards (an array of this edit alone: the one it wrote, or
            unpacked from the undo history), so it may be handed to another thread without a
            copy.
    """

    segment_id: int
    lo_ijk: np.ndarray
    hi_ijk: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class Result:
    """What an edit produced.

    Attributes:
        mask: the current segment, uint8 ``(I, J, K)`` like ``volume.array``; read-only view.
        segment_id: the current segment.
        changed_lo, changed_hi: volume indices (i, j, k) of the box ``[lo, hi)`` that holds
            every change, or None when nothing changed.
        changed_segments: ids of the segments whose masks changed, ascending.
        changes: one :class:`SegmentChange` per changed segment, in the order of
            ``changed_segments``: its own (smallest) box and its voxels there after the edit.
        crop: the crop the edit ran in, if any.
        logits: that crop's latest logits as the predictor returned them.
        encoder_ran: whether the image encoder ran for this edit.
        seconds: wall time of the edit.
    """

    mask: np.ndarray
    segment_id: int
    changed_lo: np.ndarray | None
    changed_hi: np.ndarray | None
    changed_segments: tuple[int, ...] = ()
    crop: CropGrid | None = None
    logits: Any | None = None
    encoder_ran: bool = False
    seconds: float = 0.0
    changes: tuple[SegmentChange, ...] = ()


def differing_box(
    mask: np.ndarray, box: tuple[slice, slice, slice], new: np.ndarray
) -> tuple[slice, slice, slice] | None:
    """The smallest box, in ``mask``'s indices, where ``mask[box]`` differs from ``new``
    (shaped like ``mask[box]``); None where they are equal."""
    region = mask[box]
    shape = region.shape
    if 0 in shape:
        return None
    # The differing voxels' projections onto each axis give the box without listing them. They
    # are found slab by slab along the first axis, in one buffer that stays in cache (a click's
    # box is millions of voxels); its rows are padded to whole 8-byte words, so that "any
    # voxel of a row differs" is a test of a few words instead of every byte.
    words = -(-shape[2] // 8)
    step = max(1, SLAB_VOXELS // max(1, shape[1] * words * 8))
    differs = np.zeros((min(step, shape[0]), shape[1], words * 8), dtype=bool)
    rows_differ = np.zeros(shape[0], dtype=bool)
    columns = np.zeros((shape[1], words), dtype=np.uint64)  # OR over the slabs so far
    if new.dtype == np.bool_ and region.dtype == np.uint8:
        new = new.view(np.uint8)  # bools are the bytes 0/1: compared without a cast
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        part = differs[: stop - start]
        np.not_equal(region[start:stop], new[start:stop], out=part[..., : shape[2]])
        as_words = part.view(np.uint64)  # (slab, J, words)
        slab_words = as_words.reshape(stop - start, -1)
        rows_differ[start:stop] = np.bitwise_or.reduce(slab_words, axis=1) != 0
        columns |= np.bitwise_or.reduce(as_words, axis=0)
    inner = _differing_slices(rows_differ, columns, shape[2])
    if inner is None:
        return None
    return tuple(  # type: ignore[return-value]
        slice(outer.start + part.start, outer.start + part.stop) for outer, part in zip(box, inner)
    )


def write_patch(
    segment_id: int, mask: np.ndarray, box: tuple[slice, slice, slice], new: np.ndarray
) -> tuple[MaskPatch, np.ndarray] | None:
    """Write ``new`` (uint8 0/1 shaped like ``mask[box]``) into ``mask[box]``: the patch of the
    smallest box where they differed (before and after packed, for undo and redo) and ``new``
    there (a view, not a copy); None where they were equal (nothing written).

    Slabs of the box run in threads (:mod:`..geometry.slabs`); each compares, packs and copies
    its rows while they are in cache.
    """
    region = mask[box]
    shape = region.shape
    if 0 in shape:
        return None
    packed = (*shape[:2], -(-shape[2] // 8))
    before_bits, after_bits = np.empty(packed, np.uint8), np.empty(packed, np.uint8)

    def slab(first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        return _write_slab(region, new, (first, last), before_bits, after_bits)

    parts = run_slabs(slab, slab_bounds(shape[0]))
    rows_differ = np.concatenate([rows for rows, _ in parts])
    flipped = np.bitwise_or.reduce([bits for _, bits in parts], axis=0)  # (J, bytes of k)
    k_flipped = np.unpackbits(np.bitwise_or.reduce(flipped, axis=0), count=shape[2])
    inner = _projection_slices([rows_differ, flipped.any(axis=1), k_flipped])
    if inner is None:
        return None
    slices = tuple(slice(b.start + s.start, b.start + s.stop) for s, b in zip(inner, box))
    before, after = (_cut_bits(bits, inner, shape[2]) for bits in (before_bits, after_bits))
    return MaskPatch(segment_id, slices, before, after), new[inner]  # type: ignore[arg-type]


def _write_slab(
    region: np.ndarray,
    new: np.ndarray,
    rows: tuple[int, int],
    before_bits: np.ndarray,
    after_bits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`write_patch` for the rows ``[first, last)`` of the box's first axis
    (:func:`~fastsam3d_core.geometry.voxel_kernels.write_rows`: both versions packed, compared
    packed, the new one copied where a row differs). Returns which rows differ, bool, and the
    OR over the rows of the packed differences, uint8 ``(J, bytes of k)``."""
    first, last = rows
    rows_differ = np.zeros(last - first, dtype=bool)
    flipped = write_rows(
        region[first:last], new[first:last], before_bits[first:last], after_bits[first:last],
        rows_differ,
    )  # fmt: skip
    return rows_differ, flipped


def _projection_slices(along: list[np.ndarray]) -> tuple[slice, slice, slice] | None:
    """The box whose projections onto the three axes are ``along`` (nonzero where a voxel
    differs); None where none does."""
    inner = []
    for projection in along:
        hits = np.flatnonzero(projection)
        if hits.size == 0:
            return None
        inner.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(inner)  # type: ignore[return-value]


def _differing_slices(
    rows_differ: np.ndarray, columns: np.ndarray, length: int
) -> tuple[slice, slice, slice] | None:
    """The box, in the region's indices, of the differing voxels: from the rows that differ
    (first axis), and the OR of the differing words per (j, word of k)."""
    along = [rows_differ, columns.any(axis=1)]
    along.append(np.bitwise_or.reduce(columns, axis=0).view(np.uint8)[:length] != 0)
    return _projection_slices(along)


def _cut_bits(bits: np.ndarray, inner: tuple[slice, ...], length: int) -> np.ndarray:
    """The packed rows (``np.packbits(..., axis=-1)`` of ``length`` voxels) cut to ``inner``,
    packed again from its first voxel of k where that is not the first."""
    rows = bits[inner[0], inner[1]]
    if inner[2].start == 0 and inner[2].stop == length:
        return np.ascontiguousarray(rows)  # no copy where the whole box differs
    voxels = np.unpackbits(rows, axis=-1, count=length)[..., inner[2]]
    return np.packbits(voxels, axis=-1)


def segment_change(segment_id: int, slices: tuple[slice, ...], voxels: np.ndarray) -> SegmentChange:
    """A :class:`SegmentChange` of uint8 0/1 ``voxels`` (kept, not copied) in ``slices``."""
    view = voxels.view(bool)  # bytes 0/1 are the bools False/True: no copy
    view.flags.writeable = False
    lo = np.array([s.start for s in slices], dtype=int)
    hi = np.array([s.stop for s in slices], dtype=int)
    return SegmentChange(segment_id, lo, hi, view)


def changes_of(
    patches: tuple[MaskPatch, ...],
    forward: bool = True,
    voxels: tuple[np.ndarray, ...] | None = None,
) -> dict[str, Any]:
    """The changes an edit's patches make, applied (``forward``) or undone, as :class:`Result`
    fields: the box holding them all, the changed segments, and each one's change.

    Args:
        voxels: the patches' voxels after the edit, uint8 0/1, where the caller has them (the
            arrays just written, kept as the changes' masks); None unpacks the patches'.
    """
    if not patches:
        return {"changed_lo": None, "changed_hi": None}
    if voxels is None:
        voxels = tuple(p.after if forward else p.before for p in patches)
    order = sorted(range(len(patches)), key=lambda n: patches[n].segment_id)
    changes = tuple(
        segment_change(patches[n].segment_id, patches[n].slices, voxels[n]) for n in order
    )
    return {
        "changed_lo": np.min([c.lo_ijk for c in changes], axis=0),
        "changed_hi": np.max([c.hi_ijk for c in changes], axis=0),
        "changed_segments": tuple(c.segment_id for c in changes),
        "changes": changes,
    }
