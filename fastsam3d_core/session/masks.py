"""The segments' voxels on the volume's grid, and how an edit writes them without overlaps."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..geometry import box_slices
from .result import differing_box, write_patch
from .state import MaskPatch, SegmentState


class Written(NamedTuple):
    """What :meth:`SegmentMasks.write` changed: at most one patch per segment, and each
    patch's voxels after the edit (uint8 0/1 views of the arrays written, which the caller may
    hand on: :func:`changes_of`'s ``voxels``)."""

    patches: tuple[MaskPatch, ...]
    voxels: tuple[np.ndarray, ...]


class SegmentMasks:
    """One uint8 (0/1) mask ``(I, J, K)`` per segment, indexed like ``volume.array``, and the
    voxels of segments outside the session (the foreign mask).

    Masks are changed only through :meth:`write` and :meth:`apply`, so every change is a
    :class:`MaskPatch` that undo can reverse. Masks of undone new segments stay (redo needs
    them).

    Args:
        shape: the volume's shape (I, J, K).
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self._masks: dict[int, np.ndarray] = {}
        # Voxels of segments outside the session, bool (I, J, K) read-only, or None.
        self.foreign: np.ndarray | None = None

    def add(self, segment_id: int, base: np.ndarray | None) -> None:
        """A new segment's mask: its base (bool (I, J, K)), or empty."""
        if base is None:
            self._masks[segment_id] = np.zeros(self.shape, dtype=np.uint8)
        else:
            self._masks[segment_id] = base.astype(np.uint8)

    def view(self, segment_id: int) -> np.ndarray:
        """A segment's mask, uint8 ``(I, J, K)``, as a read-only view.

        Raises:
            KeyError: no such segment.
        """
        view = self._masks[segment_id].view()
        view.flags.writeable = False
        return view

    def bounding_box(self, segment_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The volume box ``[lo, hi)`` (i, j, k) of a segment's voxels; None for none."""
        mask = self._masks[segment_id]
        if not mask.any():
            return None
        nonzero = np.argwhere(mask)
        return nonzero.min(axis=0), nonzero.max(axis=0) + 1

    def write(
        self,
        segment: SegmentState,
        lo: np.ndarray,
        hi: np.ndarray,
        new: np.ndarray,
        others: list[int],
        protect: bool,
    ) -> Written:
        """Write a segment's box ``[lo, hi)`` with ``new`` (bool ``(hi - lo)``), keeping
        segments from overlapping; returns what changed.

        Args:
            segment: the segment written.
            lo, hi: int (3,) volume indices (i, j, k) of the box.
            new: the segment's voxels in the box.
            others: the ids of the session's other live segments.
            protect: True keeps the other segments' voxels, and the foreign ones, out of this
                segment (except foreign voxels of its own base); False lets this segment take
                the other segments' voxels.
        """
        segment_id = segment.segment_id
        box = box_slices(lo, hi)
        if protect and (others or self.foreign is not None):
            taken = np.zeros(new.shape, dtype=bool)
            if self.foreign is not None:
                # A segment refining a foreign one may keep that one's voxels (its base).
                foreign = self.foreign[box]
                taken |= foreign if segment.base is None else foreign & ~segment.base[box]
            for sid in others:
                taken |= self._masks[sid][box] > 0
            new = new & ~taken
        targets = [(segment_id, new)]
        if not protect:
            targets += [(sid, (self._masks[sid][box] > 0) & ~new) for sid in others]
        patches, voxels = [], []
        for sid, values in targets:
            # A bool array is stored as bytes 0/1: view it as the uint8 mask values, no copy.
            written = write_patch(sid, self._masks[sid], box, values.view(np.uint8))
            if written is not None:
                patches.append(written[0])
                voxels.append(written[1])
        return Written(tuple(patches), tuple(voxels))

    def apply(self, patches: tuple[MaskPatch, ...], forward: bool) -> None:
        """Redo (``forward``) or undo the patches of one edit."""
        for patch in patches if forward else tuple(reversed(patches)):
            self._masks[patch.segment_id][patch.slices] = patch.after if forward else patch.before

    def difference(self, segment_id: int, held: np.ndarray) -> tuple[slice, ...] | None:
        """The smallest box where a segment's mask differs from ``held`` (bool (I, J, K))."""
        mask = self._masks[segment_id]
        return differing_box(mask, box_slices(np.zeros(3, int), np.array(self.shape)), held)


def frozen_mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A bool read-only copy of a caller's mask that must be shaped like the volume.

    Raises:
        ValueError: not shaped like the volume (the message says ``name`` and both shapes).
    """
    array = np.asarray(mask)
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must be shaped like the volume {tuple(shape)}, got {array.shape}")
    frozen = array.astype(bool)  # a copy, so the caller's array may change
    frozen.flags.writeable = False
    return frozen
