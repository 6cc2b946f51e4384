"""The worker-thread side of the module: a core Session, and copies of what changed.

A :class:`SessionRunner` lives on the worker thread and is the only code that touches the
:class:`fastsam3d_core.Session`, which owns the clicks, the crops and the masks. Every edit
returns an :class:`Update` that holds copies (never views) of the boxes that changed, so the main
thread can write them into MRML while the worker already runs the next edit. Nothing here
imports Qt or MRML.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsam3d_core import Session, Volume
from fastsam3d_core.geometry import box_slices

from .worker import Reporter


@dataclass(frozen=True, eq=False)
class SegmentPatch:
    """A box of one session segment's mask, to be written over the same box in MRML.

    Attributes:
        session_id: the session's segment id.
        lo_ijk, hi_ijk: int (3,) volume indices (i, j, k) of the box ``[lo, hi)``.
        mask: bool ``(hi - lo)`` indexed (i, j, k); a copy owned by the receiver.
    """

    session_id: int
    lo_ijk: np.ndarray
    hi_ijk: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class ClickInfo:
    """A click of the current segment as a front end shows it.

    Attributes:
        click_id: the click's identity, the same as its markups control point's.
        ras: (R, A, S) mm.
        positive: True for an object point, False for a background point.
    """

    click_id: str
    ras: tuple[float, float, float]
    positive: bool


@dataclass(frozen=True, eq=False)
class Update:
    """What one edit changed, for the main thread.

    Attributes:
        patches: the boxes that changed, per segment; writing them brings MRML to the session.
        clicks: the current segment's clicks after the edit.
        current: the session's current segment id.
        segments: (id, name, RGB colour) of every live session segment.
        encoder_ran: whether the image encoder ran.
    """

    patches: tuple[SegmentPatch, ...]
    clicks: tuple[ClickInfo, ...]
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
        foreign_mask: voxels of segments outside the session, bool (I, J, K), or None.
        initial_mask: the first segment's voxels before the session (a segment to refine),
            bool (I, J, K), or None to start it empty.
    """

    def __init__(
        self,
        volume: Volume,
        predictor: Any,
        protect_other_segments: bool = True,
        foreign_mask: np.ndarray | None = None,
        initial_mask: np.ndarray | None = None,
    ):
        self.session = Session(
            volume,
            predictor,
            protect_other_segments=protect_other_segments,
            foreign_mask=foreign_mask,
            initial_mask=initial_mask,
        )

    def would_encode(self, point_ras: Any) -> bool:
        """Whether a click at this RAS point would run the image encoder (slow) first."""
        return self.session.would_encode(point_ras)

    def base(self, session_id: int) -> np.ndarray | None:
        """The voxels a segment had before the session, or None if it started empty."""
        return self._segment(session_id).base

    def click_ids(self, session_id: int) -> list[str]:
        """A segment's click ids in the session's order (crop by crop, oldest crop first)."""
        return [click.click_id for crop in self._segment(session_id).crops for click in crop.clicks]

    def _segment(self, session_id: int):
        return next(s for s in self.session.segments if s.segment_id == session_id)

    # -- edits ---------------------------------------------------------------------------

    def add_point(self, click_id: str, point_ras: Any, positive: bool) -> Update:
        return self._update(self.session.add_point(point_ras, positive, click_id))

    def remove_point(self, click_id: str) -> Update:
        """Remove the click with this id, from whichever segment holds it (the user may
        delete a point while a switch to another segment is still queued)."""
        with self._in_segment_of(click_id):
            result = self.session.remove_point(self.session.click_index(click_id))
        return self._update(result)

    def move_point(self, click_id: str, point_ras: Any) -> Update:
        """Move the click with this id to a new place (one undo step), in whichever segment
        holds it."""
        with self._in_segment_of(click_id):
            result = self.session.move_point(self.session.click_index(click_id), point_ras)
        return self._update(result)

    def undo(self) -> Update:
        return self._update(self.session.undo())

    def redo(self) -> Update:
        return self._update(self.session.redo())

    def reset(self) -> Update:
        """Clear the current segment's clicks and voxels (undoable)."""
        return self._update(self.session.reset())

    def new_segment(self, name: str | None = None) -> Update:
        return self._update(self.session.new_segment(name))

    def adopt_segment(self, name: str, voxels: np.ndarray) -> Update:
        """Refine a segment made outside the session: a new session segment that starts from
        its ``voxels``, bool (I, J, K)."""
        return self._update(self.session.new_segment(name, initial_mask=voxels))

    def set_foreign_mask(self, mask: np.ndarray) -> None:
        """The voxels of the segments outside the session changed (another tool edited them)."""
        self.session.set_foreign_mask(mask)

    def select_segment(self, session_id: int) -> Update:
        return self._update(self.session.select_segment(session_id))

    def uncertainty(self, samples: int = 20) -> Any:
        """The session's self-ensembling :class:`Uncertainty` for the current segment."""
        return self.session.uncertainty(samples=samples)

    def segment_from(self, session_id: int, held: np.ndarray | None) -> Update:
        """The current state, and the patch that turns ``held`` (what MRML holds of a
        segment, bool (I, J, K); None for nothing) into the session's mask of it."""
        mask = self.session.mask(session_id).astype(bool)
        differs = np.argwhere(mask if held is None else mask != held)
        patches: tuple[SegmentPatch, ...] = ()
        if len(differs):
            patches = (self._patch(session_id, differs.min(axis=0), differs.max(axis=0) + 1),)
        return self._update(
            self.session.select_segment(self.session.current_segment.segment_id), patches
        )

    # -- internals -----------------------------------------------------------------------

    @contextmanager
    def _in_segment_of(self, click_id: str) -> Iterator[None]:
        """Make the segment that holds the click current for the edit, then restore."""
        holder = next(
            (
                segment.segment_id
                for segment in self.session.segments
                for crop in segment.crops
                if any(click.click_id == click_id for click in crop.clicks)
            ),
            None,
        )
        if holder is None:
            raise KeyError(f"that point is no longer part of the session (click {click_id!r})")
        current = self.session.current_segment.segment_id
        self.session.select_segment(holder)
        try:
            yield
        finally:
            self.session.select_segment(current)

    def _update(self, result: Any, patches: tuple[SegmentPatch, ...] = ()) -> Update:
        if result.changed_lo is not None:
            patches = tuple(
                self._patch(session_id, result.changed_lo, result.changed_hi)
                for session_id in result.changed_segments
            )
        segments = tuple((s.segment_id, s.name, tuple(s.color)) for s in self.session.segments)
        clicks = tuple(
            ClickInfo(c.click_id, tuple(float(v) for v in c.point_ras), c.positive)  # type: ignore[arg-type]
            for c in self.session.clicks()
        )
        return Update(
            patches,
            clicks,
            self.session.current_segment.segment_id,
            segments,  # type: ignore[arg-type]
            encoder_ran=result.encoder_ran,
        )

    def _patch(self, session_id: int, lo: np.ndarray, hi: np.ndarray) -> SegmentPatch:
        mask = self.session.mask(session_id)[box_slices(lo, hi)].astype(bool)  # astype copies
        return SegmentPatch(session_id, np.asarray(lo, int), np.asarray(hi, int), mask)


class WorkerState:
    """What lives on the worker thread: the predictor, the image and the session runner."""

    def __init__(self) -> None:
        self.predictor: Any = None
        self.volume: Any = None
        self.runner: SessionRunner | None = None
        # (model, device, weights file) in use or being loaded; None after a failed load.
        self.model_key: tuple | None = None

    def require_runner(self) -> SessionRunner:
        if self.runner is None:
            if self.predictor is None:
                raise RuntimeError("no model is loaded yet: choose a model and wait for it")
            raise RuntimeError("no input volume is selected")
        return self.runner


@dataclass(frozen=True, eq=False)
class SessionOpening:
    """How a new session starts: what the main thread read of MRML and the markups.

    Attributes:
        protect: keep other segments' voxels out of the session's segments.
        foreign: voxels of the MRML segments that the session protects, bool (I, J, K); None
            when there is no segmentation yet.
        initial: what the MRML segment that the first session segment writes to holds now,
            bool (I, J, K), or None for a new segment: the first segment refines it.
        continued: the previous session's segment that the first one continues (same volume
            and segmentation), or None. Where the worker's previous session holds it, the
            first segment restarts from what that segment held before the previous session
            (its base), and MRML is brought back to that from the previous session's mask
            (what MRML holds once every edit queued before the opening is written).
        points: the clicks to place again, (click id, RAS (3,), positive); those the
            continued segment held go in its order (the order decides the crops and the
            decoder's mask feedback), the others after them.
    """

    protect: bool
    foreign: np.ndarray | None = None
    initial: np.ndarray | None = None
    continued: int | None = None
    points: tuple = ()

    def run(self, state: WorkerState, report: Reporter) -> Update | None:
        """On the worker: a new session, when both a model and an image are there, with the
        points placed again; None otherwise. The previous session stays if this one fails."""
        if state.predictor is None or state.volume is None or self.foreign is None:
            state.runner = None
            return None
        previous = state.runner
        initial, held, order = self.initial, self.initial, []
        if previous is not None and self._continues(previous, state.volume.shape):
            initial = previous.base(self.continued)  # type: ignore[arg-type]
            held = previous.session.mask(self.continued).astype(bool)
            order = previous.click_ids(self.continued)  # type: ignore[arg-type]
        runner = SessionRunner(state.volume, state.predictor, self.protect, self.foreign, initial)
        rank = {click_id: n for n, click_id in enumerate(order)}
        dropped = []
        for click_id, ras, positive in sorted(self.points, key=lambda p: rank.get(p[0], len(rank))):
            try:
                runner.session.add_point(ras, positive, click_id)
            except ValueError as error:  # e.g. outside a new volume
                dropped.append(str(error))
        state.runner = runner
        if dropped:
            report(f"{len(dropped)} point(s) could not be placed again: {dropped[0]}", None)
        return runner.segment_from(1, held)

    def _continues(self, previous: SessionRunner, shape: tuple) -> bool:
        live = {segment.segment_id for segment in previous.session.segments}
        return self.continued in live and previous.session.volume.shape == shape
