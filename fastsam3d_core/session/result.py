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
            and never changed afterwards (the session's undo history holds it), so it may be
            handed to another thread without a copy.
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


# Voxels compared at a time by :func:`differing_box`: a slab that stays in cache.
_SLAB_VOXELS = 1 << 19


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
    step = max(1, _SLAB_VOXELS // max(1, shape[1] * words * 8))
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
    along = [rows_differ, columns.any(axis=1)]
    along.append(np.bitwise_or.reduce(columns, axis=0).view(np.uint8)[: shape[2]] != 0)
    inner = []
    for projection in along:
        hits = np.flatnonzero(projection)
        if hits.size == 0:
            return None
        inner.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(  # type: ignore[return-value]
        slice(outer.start + part.start, outer.start + part.stop) for outer, part in zip(box, inner)
    )


def mask_patch(
    segment_id: int, mask: np.ndarray, box: tuple[slice, slice, slice], new: np.ndarray
) -> MaskPatch | None:
    """The smallest box where ``mask[box]`` differs from ``new``, with both versions (before
    packed, after uint8)."""
    slices = differing_box(mask, box, new)
    if slices is None:
        return None
    inner = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(slices, box))
    # ``new`` is the caller's fresh array: where the whole of it changed it is kept, not copied.
    after = np.ascontiguousarray(new[inner])
    return MaskPatch(segment_id, slices, np.packbits(mask[slices], axis=-1), after)


def segment_change(segment_id: int, slices: tuple[slice, ...], voxels: np.ndarray) -> SegmentChange:
    """A :class:`SegmentChange` of uint8 0/1 ``voxels`` (kept, not copied) in ``slices``."""
    view = voxels.view(bool)  # bytes 0/1 are the bools False/True: no copy
    view.flags.writeable = False
    lo = np.array([s.start for s in slices], dtype=int)
    hi = np.array([s.stop for s in slices], dtype=int)
    return SegmentChange(segment_id, lo, hi, view)


def changes_of(patches: tuple[MaskPatch, ...], forward: bool = True) -> dict[str, Any]:
    """The changes an edit's patches make, applied (``forward``) or undone, as :class:`Result`
    fields: the box holding them all, the changed segments, and each one's change."""
    if not patches:
        return {"changed_lo": None, "changed_hi": None}
    ordered = sorted(patches, key=lambda p: p.segment_id)
    changes = tuple(
        segment_change(p.segment_id, p.slices, p.after if forward else p.before) for p in ordered
    )
    return {
        "changed_lo": np.min([c.lo_ijk for c in changes], axis=0),
        "changed_hi": np.max([c.hi_ijk for c in changes], axis=0),
        "changed_segments": tuple(c.segment_id for c in changes),
        "changes": changes,
    }
