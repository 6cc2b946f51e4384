"""Removing a segment from a session for good (a front end's "delete segment")."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from .masks import Written
from .result import Result, changes_of
from .state import SessionState


class SegmentRemoval:
    """:meth:`remove_segment` for :class:`~fastsam3d_core.session.Session` (a mixin: it uses
    the session's state, masks and history)."""

    def remove_segment(self: Any, segment_id: int) -> Result:
        """Remove a segment for good: every click, drawn prompt and voxel of it (also those it
        had before the session) goes, and nothing brings them back.

        Not undoable, and it clears the undo history, redo included, of every segment: each
        recorded edit keeps the session's whole state before and after it, so undoing any
        earlier edit would bring the removed segment's clicks back, and its voxels, unseen by
        a front end that dropped the segment, would keep the other segments out.

        The segment leaves :attr:`segments` (its id is never reused); if it was the current
        one, the next segment in order becomes current (the previous one for the last). The
        session's only segment stays, empty and current: a session always has a segment (a
        front end that wants a fresh one calls :meth:`new_segment` first).

        Raises:
            KeyError: no segment has this id.
        """
        start = time.perf_counter()
        cleared = replace(self._state.segment(segment_id), crops=(), base=None, prompts=())
        held = self._masks.bounding_box(segment_id)
        written = Written((), ())
        if held is not None:
            lo, hi = held
            nothing = np.zeros(tuple(hi - lo), dtype=bool)
            written = self._masks.write(cleared, lo, hi, nothing, [], False)
        ids = [segment.segment_id for segment in self._state.segments]
        if len(ids) == 1:
            self._state = self._state.with_segment(cleared)
        else:
            place = ids.index(segment_id)
            self._state = SessionState(
                self._state.segments[:place] + self._state.segments[place + 1 :]
            )
            if self._current == segment_id:
                self._current = ids[place + 1] if place + 1 < len(ids) else ids[place - 1]
        self._history.clear()
        return self._result(
            **changes_of(written.patches, voxels=written.voxels),
            seconds=time.perf_counter() - start,
        )
