"""The worker-thread side of the module: a core Session, and copies of what changed.

A :class:`SessionRunner` lives on the worker thread and is the only code that touches the
:class:`fastsam3d_core.Session`. Every edit returns an :class:`Update` that holds copies (never
views) of the changed mask boxes, so the main thread can write them into MRML while the worker
already runs the next edit. Nothing here imports Qt or MRML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsam3d_core import Session, Volume
from fastsam3d_core.geometry import crop_grid_around

# Two clicks closer than this (mm) are the same click when a point is found by position.
SAME_POINT_MM = 1e-3


@dataclass(frozen=True, eq=False)
class SegmentPatch:
    """A box of one session segment's mask, to be written over the same box in MRML.

    Attributes:
        session_id: the session's segment id.
        lo_ijk, hi_ijk: int (3,) volume indices (i, j, k) of the box ``[lo, hi)``.
        mask: uint8 ``(hi - lo)`` indexed (i, j, k); a copy owned by the receiver.
    """

    session_id: int
    lo_ijk: np.ndarray
    hi_ijk: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class Update:
    """What one edit changed, for the main thread.

    Attributes:
        patches: mask boxes to write; each covers everything the session has ever written to
            that segment, so writing it replaces the segment exactly.
        clicks_ras: the current segment's clicks after the edit: ((R, A, S) mm, positive).
        current: the session's current segment id.
        segments: (id, name, RGB colour) of every live session segment.
        encoder_ran: whether the image encoder ran.
    """

    patches: tuple[SegmentPatch, ...]
    clicks_ras: tuple[tuple[tuple[float, float, float], bool], ...]
    current: int
    segments: tuple[tuple[int, str, tuple[float, float, float]], ...]
    encoder_ran: bool = False


class SessionRunner:
    """Runs edits on a :class:`Session` and reports them as :class:`Update`s.

    Args:
        volume: the image, array (I, J, K) with its world ``ijk_to_ras``.
        predictor: a built model or any core predictor.
        protect_other_segments: passed to the session; False lets a segment take over others'
            voxels.
    """

    def __init__(self, volume: Volume, predictor: Any, protect_other_segments: bool = True):
        self.session = Session(volume, predictor, protect_other_segments=protect_other_segments)
        # Per segment, the box [lo, hi) of every voxel the session ever changed in it.
        self._extents: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def volume(self) -> Volume:
        return self.session.volume

    def will_encode(self, point_ras: Any) -> bool:
        """Whether a click at this RAS point would run the image encoder (slow) first."""
        point = np.asarray(point_ras, dtype=np.float64)
        segment = self.session.current_segment
        index = segment.find_crop(point)
        grid = segment.crops[index].grid if index is not None else None
        if grid is None:
            try:
                grid = crop_grid_around(self.volume, point)
            except ValueError:
                return False
        return self.session.embeddings.get(grid.key()) is None

    # -- edits ---------------------------------------------------------------------------

    def add_point(self, point_ras: Any, positive: bool = True) -> Update:
        result = self.session.add_point(point_ras, positive)
        return self._update(result, all_segments=not self.session.protect_other_segments)

    def remove_point(self, point_ras: Any, positive: bool) -> Update:
        """Remove the current segment's click at this position and polarity."""
        result = self.session.remove_point(self._find_click(point_ras, positive))
        return self._update(result, all_segments=not self.session.protect_other_segments)

    def move_point(self, old_ras: Any, new_ras: Any, positive: bool) -> Update:
        """Move a click to a new place: one undo step."""
        result = self.session.move_point(self._find_click(old_ras, positive), new_ras)
        return self._update(result, all_segments=not self.session.protect_other_segments)

    def undo(self) -> Update:
        return self._update(self.session.undo(), all_segments=True)

    def redo(self) -> Update:
        return self._update(self.session.redo(), all_segments=True)

    def reset(self) -> Update:
        """Clear the current segment's clicks and voxels (undoable)."""
        return self._update(self.session.reset(), all_segments=False)

    def new_segment(self, name: str | None = None) -> Update:
        return self._update(self.session.new_segment(name), all_segments=False)

    def select_segment(self, session_id: int) -> Update:
        return self._update(self.session.select_segment(session_id), all_segments=False)

    def uncertainty(self, samples: int = 20) -> Any:
        """The session's self-ensembling :class:`Uncertainty` for the current segment."""
        return self.session.uncertainty(samples=samples)

    def snapshot(self) -> Update:
        """The current state, with no patches."""
        return self._update(
            self.session.select_segment(self.session.current_segment.segment_id),
            all_segments=False,
        )

    # -- internals -----------------------------------------------------------------------

    def _find_click(self, point_ras: Any, positive: bool) -> int:
        point = np.asarray(point_ras, dtype=np.float64)
        for index, click in enumerate(self.session.clicks()):
            close = np.linalg.norm(np.asarray(click.point_ras) - point) <= SAME_POINT_MM
            if close and click.positive == bool(positive):
                return index
        raise KeyError(
            f"no {'positive' if positive else 'negative'} click at "
            f"{np.round(point, 2).tolist()} (RAS mm) in the current segment"
        )

    def _update(self, result: Any, all_segments: bool) -> Update:
        patches: list[SegmentPatch] = []
        if result.changed_lo is not None:
            live = [s.segment_id for s in self.session.segments]
            for session_id in live if all_segments else [result.segment_id]:
                patches.append(self._patch(session_id, result.changed_lo, result.changed_hi))
        segments = tuple((s.segment_id, s.name, tuple(s.color)) for s in self.session.segments)
        clicks = tuple(
            ((float(c.point_ras[0]), float(c.point_ras[1]), float(c.point_ras[2])), c.positive)
            for c in self.session.clicks()
        )
        return Update(
            tuple(patches),
            clicks,
            result.segment_id,
            segments,  # type: ignore[arg-type]
            encoder_ran=result.encoder_ran,
        )

    def _patch(self, session_id: int, lo: np.ndarray, hi: np.ndarray) -> SegmentPatch:
        if session_id in self._extents:
            old_lo, old_hi = self._extents[session_id]
            lo, hi = np.minimum(lo, old_lo), np.maximum(hi, old_hi)
        self._extents[session_id] = (lo, hi)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        mask = np.array(self.session.mask(session_id)[box], dtype=np.uint8, copy=True)
        return SegmentPatch(session_id, lo.astype(int), hi.astype(int), mask)
