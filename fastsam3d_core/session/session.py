"""Interactive segmentation of one volume: clicks in, masks on the volume's own grid out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geometry import CropGrid, Volume, check_segmentable
from ..geometry.paste import footprint_box
from .cache import EmbeddingCache
from .composition import compose
from .crops import CropEditor
from .history import MAX_UNDO, History
from .masks import SegmentMasks, Written, frozen_mask
from .predictor import Predictor, as_predictor
from .prompt_edits import PromptEditor
from .result import Result, SegmentChange, changes_of, segment_change
from .segment_removal import SegmentRemoval
from .shapes import check_point
from .state import SEGMENT_COLORS, Click, Edit, Prompt, SegmentState, SessionState
from .text_prompt import TextPrompts
from .uncertainty import Uncertainty, ensemble_probability, on_volume

if TYPE_CHECKING:
    from ..models.sam3d import Sam3D


class Session(TextPrompts, SegmentRemoval):
    """Click-to-segment on one volume with any predictor (and by name: :meth:`add_text`);
    :meth:`remove_segment` deletes a segment for good.

    The image encoder runs once per crop and its embedding is cached; a click inside a crop of
    the current segment re-runs only the decoder, with all of that crop's clicks and its previous
    logits as mask prompt. A click elsewhere opens a new 128³ crop centred on it, whose first
    mask prompt is the segment as it already is there. Each crop's prediction is written only
    inside the crop's footprint; where crops of a segment overlap, the most recently edited one
    wins.

    Args:
        volume: the image.
        predictor: a built model or any :class:`Predictor`.
        protect_other_segments: True (default) keeps other segments' voxels, and the voxels of
            ``foreign_mask``, out of the current one; False lets the current segment take over
            other segments' voxels.
        foreign_mask: voxels that belong to segments outside this session (e.g. drawn with
            other tools), bool ``(I, J, K)`` like ``volume.array``; see :meth:`set_foreign_mask`.
        initial_mask: the first segment's voxels before the session, to refine (see
            :meth:`new_segment`); None starts it empty.
        cache_bytes: memory bound of the embedding cache.
        embeddings: a cache shared with other sessions of this volume and predictor (a server's
            one session per label), instead of one of ``cache_bytes`` of its own.
        undo_steps: edits kept for undo (0 for a client that never undoes, e.g. a server's).
    """

    def __init__(
        self,
        volume: Volume,
        predictor: Sam3D | Predictor,
        *,
        protect_other_segments: bool = True,
        foreign_mask: np.ndarray | None = None,
        initial_mask: np.ndarray | None = None,
        cache_bytes: int = 512 << 20,
        embeddings: EmbeddingCache | None = None,
        undo_steps: int = MAX_UNDO,
    ) -> None:
        check_segmentable(volume)
        self.volume = volume
        self.predictor = as_predictor(predictor)
        self.protect_other_segments = protect_other_segments
        self.embeddings = EmbeddingCache(cache_bytes) if embeddings is None else embeddings
        self._crops = CropEditor(volume, self.predictor, self.embeddings)
        box_corners = bool(getattr(self.predictor, "accepts_box_corners", False))
        self._masks = SegmentMasks(volume.shape)
        self._prompts = PromptEditor(volume, self._crops, box_corners, self._masks.view)
        self._history = History(undo_steps)
        base = self._base(initial_mask)
        first = SegmentState(1, "Segment_1", SEGMENT_COLORS[0], base=base)
        self._state = SessionState((first,))
        self._masks.add(1, base)
        self._current = 1
        # Ids are never reused, also after an undone new segment or a removed click.
        self._last_segment_id = 1
        self._last_click_number = 0
        self.set_foreign_mask(foreign_mask)

    # -- reading ---------------------------------------------------------------------------

    @property
    def segments(self) -> tuple[SegmentState, ...]:
        return self._state.segments

    @property
    def current_segment(self) -> SegmentState:
        return self._state.segment(self._current)

    def mask(self, segment_id: int | None = None) -> np.ndarray:
        """A segment's mask, uint8 ``(I, J, K)``, read-only view (default: the current one)."""
        return self._masks.view(self._current if segment_id is None else segment_id)

    def clicks(self, segment_id: int | None = None) -> list[Click]:
        """A segment's clicks (default: the current one's), in the order :meth:`remove_point`
        indexes them: crop by crop, the least recently edited crop first.

        Raises:
            KeyError: no segment has this id.
        """
        segment = self.current_segment if segment_id is None else self._state.segment(segment_id)
        return [segment.crops[c].clicks[k] for c, k in segment.clicks()]

    def click_index(self, click_id: str) -> int:
        """The index in :meth:`clicks` of the current segment's click with this id.

        Raises:
            KeyError: the current segment has no such click.
        """
        for index, click in enumerate(self.clicks()):
            if click.click_id == click_id:
                return index
        raise KeyError(f"the current segment has no click {click_id!r}")

    def would_encode(self, point_ras: Any) -> bool:
        """Whether a click at this RAS point (3,) would run the image encoder first (slow).

        False for a point outside the volume (such a click is refused).
        """
        point = np.asarray(point_ras, dtype=np.float64)
        if point.shape != (3,) or not self.volume.contains_ras(point):
            return False
        _, grid = self._crops.crop_for(self.current_segment, point)
        return self.embeddings.get(grid.key()) is None

    # -- clicks ----------------------------------------------------------------------------

    def add_point(
        self, point_ras: Any, positive: bool = True, click_id: str | None = None
    ) -> Result:
        """Add a point given in RAS millimetres (3,) to the current segment.

        Args:
            point_ras: the point, (R, A, S) mm.
            positive: True for an object point, False for a background point.
            click_id: the click's identity (see :class:`Click`); a new one if None.

        Raises:
            ValueError: the point is not three finite numbers inside the volume, or the
                current segment already has a click with this id.
        """
        start = time.perf_counter()
        point = check_point(self.volume, point_ras)
        click_id = self._new_click_id(click_id)
        click = Click(point, positive, click_id)
        segment, grid, encoder_ran = self._crops.with_click(self.current_segment, click)
        return self._apply(segment, [grid], encoder_ran, start)

    def add_point_ijk(
        self, point_ijk: Any, positive: bool = True, click_id: str | None = None
    ) -> Result:
        """Add a point given as a continuous volume index (i, j, k); see :meth:`add_point`."""
        point_ras = self.volume.index_to_ras(np.asarray(point_ijk, float))
        return self.add_point(point_ras, positive, click_id)

    def remove_point(self, index: int | str) -> Result:
        """Remove a click and redo its crop.

        Args:
            index: the current segment's click ``index`` (see :meth:`clicks`), or a click id
                (str): the click with that id, in whichever segment holds it; the current
                segment stays current.

        Raises:
            IndexError: no such index; KeyError: no segment holds a click with that id.
        """
        start = time.perf_counter()
        segment, crop_index, click_index = self._locate(index)
        edit = self._crops.replace_click(segment, crop_index, click_index, ())
        return self._apply(*edit, start)

    def move_point(self, index: int | str, point_ras: Any) -> Result:
        """Move a click to a RAS point (3,), keeping its id: one undoable edit.

        ``index`` is as in :meth:`remove_point`: an index into the current segment's clicks, or
        a click id in any segment. Within its crop the click keeps its place in the crop's click
        order and the crop is replayed (decoder only). Moved out of its crop, it leaves that
        crop and is placed as a new click where it now lies, as :meth:`add_point` would.
        """
        start = time.perf_counter()
        point = check_point(self.volume, point_ras)
        segment, crop_index, click_index = self._locate(index)
        old = segment.crops[crop_index].clicks[click_index]
        moved = Click(point, old.positive, old.click_id)
        if self._crops.takes(segment.crops[crop_index], point):
            edit = self._crops.replace_click(segment, crop_index, click_index, (moved,))
            return self._apply(*edit, start)
        without, grids, removal_ran = self._crops.replace_click(
            segment, crop_index, click_index, ()
        )
        new_segment, new_grid, adding_ran = self._crops.with_click(without, moved)
        return self._apply(new_segment, [*grids, new_grid], removal_ran or adding_ran, start)

    # -- drawn prompts ---------------------------------------------------------------------

    def add_box(
        self,
        corner_a_ras: Any,
        corner_b_ras: Any,
        positive: bool = True,
        prompt_id: str | None = None,
    ) -> Result:
        """Add a box, two opposite RAS corners (3,) each, to the current segment: one edit.

        Positive: the object lies inside; the result never leaves the box. Negative: what lies
        inside is removed. A rectangle on a slice (no depth) is a box one slice thick. See
        :mod:`.prompt_edits` for what the model is given.

        Raises:
            ValueError: a corner is not three finite numbers; the box has no size along two
                axes; it lies outside the volume; ``prompt_id`` is taken.
        """
        return self._add_prompt("box", (corner_a_ras, corner_b_ras), positive, prompt_id)

    def add_scribble(
        self, points_ras: Any, positive: bool = True, prompt_id: str | None = None
    ) -> Result:
        """Add a scribble, an open stroke of RAS points ``(N, 3)``, to the current segment: one
        edit, points sampled along it, all of its sign.

        Raises:
            ValueError: fewer than two distinct points; outside the volume; ``prompt_id`` is
                taken.
        """
        return self._add_prompt("scribble", points_ras, positive, prompt_id)

    def add_lasso(
        self, contour_ras: Any, positive: bool = True, prompt_id: str | None = None
    ) -> Result:
        """Add a lasso, a closed contour of RAS points ``(N, 3)`` on one slice, to the current
        segment: one edit. On that slice the segment becomes exactly the filled contour
        (positive) or loses it (negative); points inside carry the change into 3-D.

        Raises:
            ValueError: fewer than three points; not on one slice; crossing itself; enclosing
                no voxel; ``prompt_id`` is taken.
        """
        return self._add_prompt("lasso", contour_ras, positive, prompt_id)

    def prompts(self, segment_id: int | None = None) -> list[Prompt]:
        """A segment's drawn prompts (default: the current one's), the oldest first."""
        return list(self._state.segment(segment_id or self._current).prompts)

    def remove_prompt(self, prompt_id: str) -> Result:
        """Remove a drawn prompt, in whichever segment holds it: one edit. Clicks placed inside
        a box's crops are placed again without it.

        Raises:
            KeyError: no segment holds a prompt with that id.
        """
        start = time.perf_counter()
        removed = self._prompts.without_prompt(self._state.prompt_segment(prompt_id), prompt_id)
        edit = self._prompts.with_clicks_again(removed, removed.orphans)
        return self._apply(edit.segment, edit.grids, edit.encoder_ran, start, boxes=edit.boxes)

    def move_prompt(self, prompt_id: str, points_ras: Any) -> Result:
        """Redraw a prompt with new points (a box: its two corners), keeping its id, kind, sign
        and place among the segment's prompts: one edit. Clicks placed inside a box's crops
        are placed again after it, in the new box's crops where they lie in it.

        Raises:
            KeyError: no segment holds a prompt with that id; ValueError: as for adding it.
        """
        start = time.perf_counter()
        segment = self._state.prompt_segment(prompt_id)
        old = [p.prompt_id for p in segment.prompts].index(prompt_id)
        kind, positive = segment.prompts[old].kind, segment.prompts[old].positive
        removed = self._prompts.without_prompt(segment, prompt_id)
        added = self._prompts.with_prompt(removed.segment, kind, points_ras, positive, prompt_id)
        edit = self._prompts.with_clicks_again(added, removed.orphans)
        prompts = edit.segment.prompts  # the moved one back at its place: the same one wins
        segment = replace(edit.segment, prompts=prompts[:old] + prompts[-1:] + prompts[old:-1])
        grids, ran = removed.grids + edit.grids, removed.encoder_ran or edit.encoder_ran
        return self._apply(segment, grids, ran, start, boxes=removed.boxes + edit.boxes)

    def reset(self) -> Result:
        """Remove every click, drawn prompt and voxel of the current segment, also those it had
        before the session (undoable)."""
        start = time.perf_counter()
        segment = self.current_segment
        grids = [crop.grid for crop in segment.crops]
        cleared = replace(segment, crops=(), base=None, prompts=())
        return self._apply(cleared, grids, False, start, clear_all=True)

    # -- segments --------------------------------------------------------------------------

    def new_segment(
        self,
        name: str | None = None,
        color: tuple[float, float, float] | None = None,
        initial_mask: np.ndarray | None = None,
    ) -> Result:
        """Add a segment and make it current (undoable).

        Args:
            name, color: shown by front ends; defaults ``Segment_<id>`` and a palette colour.
            initial_mask: the voxels of a segment made before (e.g. painted by hand), bool
                ``(I, J, K)`` like ``volume.array``, to refine: clicks then change it inside
                their crops, starting from it as the mask prompt, and it stays as it is
                elsewhere. Where it is part of the foreign mask (see :meth:`set_foreign_mask`),
                this segment, and only this one, may still hold those voxels. None starts
                empty.

        Raises:
            ValueError: ``initial_mask`` is not shaped like the volume.
        """
        self._last_segment_id += 1
        segment_id = self._last_segment_id
        base = self._base(initial_mask)
        segment = SegmentState(
            segment_id,
            name or f"Segment_{segment_id}",
            color or SEGMENT_COLORS[(segment_id - 1) % len(SEGMENT_COLORS)],
            base=base,
        )
        self._masks.add(segment_id, base)
        state = SessionState(self._state.segments + (segment,))
        self._record(Edit(self._state, state, ()))
        self._current = segment_id
        return self._result()

    def set_foreign_mask(self, mask: np.ndarray | None) -> None:
        """Voxels of segments outside this session, kept out of every segment while
        ``protect_other_segments``: bool ``(I, J, K)`` like ``volume.array``, or None.

        It applies to later edits; what segments hold already is left as it is.

        Raises:
            ValueError: the mask is not shaped like the volume.
        """
        self._masks.foreign = (
            None if mask is None else frozen_mask(mask, self.volume.shape, "foreign_mask")
        )

    def change_from(self, segment_id: int, held: np.ndarray | None) -> SegmentChange | None:
        """The change that turns ``held`` into the segment's mask, or None where they are equal.

        For a caller that keeps its own copy of a segment (e.g. a front end's segmentation,
        which may hold what an earlier session left there) and brings it to the session's.

        Args:
            segment_id: the session's segment.
            held: the caller's copy, bool ``(I, J, K)`` like ``volume.array``; None for no voxels.

        Raises:
            KeyError: no such segment; ValueError: ``held`` is not shaped like the volume.
        """
        mask = self._masks.view(segment_id)
        shape = self.volume.shape
        reference = np.zeros(shape, bool) if held is None else frozen_mask(held, shape, "held")
        slices = self._masks.difference(segment_id, reference)
        if slices is None:
            return None
        return segment_change(segment_id, slices, mask[slices].copy())

    def select_segment(self, segment_id: int) -> Result:
        """Make another segment current; later clicks go to it."""
        self._state.segment(segment_id)  # raises KeyError for an unknown id
        self._current = segment_id
        return self._result()

    # -- uncertainty -----------------------------------------------------------------------

    def uncertainty(
        self, samples: int = 20, jitter_voxels: float = 2.0, seed: int = 0
    ) -> Uncertainty:
        """Self-ensembling probability and entropy of the current segment's latest crop:
        ``samples`` decoder passes on the cached embedding (encoded again only if evicted)."""
        segment = self.current_segment
        if not segment.crops:
            raise ValueError("the current segment has no clicks yet")
        crop = segment.crops[-1]
        embedding, _ = self._crops.embedding(crop.grid)
        rng = np.random.default_rng(seed)
        probability = ensemble_probability(
            self.predictor, embedding, crop, samples, jitter_voxels, rng
        )
        return on_volume(self.volume, self.mask(), crop.grid, probability)

    # -- history ---------------------------------------------------------------------------

    def undo(self) -> Result:
        """Revert the latest edit; nothing happens when there is none."""
        return self._step(forward=False)

    def redo(self) -> Result:
        """Re-apply the latest undone edit; nothing happens when there is none."""
        return self._step(forward=True)

    # -- internals -------------------------------------------------------------------------

    def _locate(self, index: int | str) -> tuple[SegmentState, int, int]:
        """The segment holding a click, and its (crop index, click index) there: an int counts
        the current segment's clicks (see :meth:`clicks`), a str is any segment's click id."""
        if not isinstance(index, str):
            segment = self.current_segment
            return (segment, *segment.click_at(index))
        return self._state.locate_click(index)

    def _base(self, initial_mask: np.ndarray | None) -> np.ndarray | None:
        """A new segment's base: its caller's ``initial_mask``, checked and frozen; or None."""
        if initial_mask is None:
            return None
        return frozen_mask(initial_mask, self.volume.shape, "initial_mask")

    def _new_click_id(self, click_id: str | None, prefix: str = "click") -> str:
        """A new id for a click or a drawn prompt of the current segment: the caller's, checked
        to be free, or ``<prefix>-<n>``."""
        segment = self.current_segment
        taken = {click.click_id for crop in segment.crops for click in crop.clicks}
        taken |= {prompt.prompt_id for prompt in segment.prompts}
        if click_id is None:
            # Skips numbers that a caller's own ids took.
            while click_id is None or click_id in taken:
                self._last_click_number += 1
                click_id = f"{prefix}-{self._last_click_number}"
            return click_id
        if click_id in taken:
            what = "click" if prefix == "click" else "prompt"
            raise ValueError(f"the current segment already has a {what} {click_id!r}")
        return str(click_id)

    def _add_prompt(self, kind: str, points: Any, positive: bool, prompt_id: str | None) -> Result:
        start = time.perf_counter()
        prompt_id = self._new_click_id(prompt_id, kind)
        edit = self._prompts.with_prompt(self.current_segment, kind, points, positive, prompt_id)
        return self._apply(edit.segment, edit.grids, edit.encoder_ran, start, boxes=edit.boxes)

    def _apply(
        self,
        segment: SegmentState,
        grids: list[CropGrid],
        encoder_ran: bool,
        start: float,
        clear_all: bool = False,
        boxes: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    ) -> Result:
        state = self._state.with_segment(segment)
        lo, hi = self._edit_box(segment.segment_id, grids, clear_all, boxes)
        written = Written((), ())
        if np.all(hi > lo):
            new = compose(self.volume, segment, lo, hi)
            others = [s.segment_id for s in self.segments if s.segment_id != segment.segment_id]
            written = self._masks.write(segment, lo, hi, new, others, self.protect_other_segments)
        self._record(Edit(self._state, state, written.patches))
        crop = segment.crops[-1] if segment.crops else None
        return self._result(
            **changes_of(written.patches, voxels=written.voxels),
            crop=crop.grid if crop else None,
            logits=crop.logits if crop else None,
            encoder_ran=encoder_ran,
            seconds=time.perf_counter() - start,
        )

    def _edit_box(
        self,
        segment_id: int,
        grids: list[CropGrid],
        clear_all: bool,
        others: Sequence[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]:
        boxes = [footprint_box(grid, self.volume) for grid in grids] + list(others)
        held = self._masks.bounding_box(segment_id) if clear_all else None
        if held is not None:
            boxes.append(held)
        if not boxes:
            return np.zeros(3, int), np.zeros(3, int)
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

    def _record(self, edit: Edit) -> None:
        self._state = edit.after
        self._history.record(edit)

    def _step(self, forward: bool) -> Result:
        """Redo (``forward``) or undo the latest edit, if any."""
        edit = self._history.step(forward)
        if edit is None:
            return self._result()
        self._masks.apply(edit.patches, forward)
        self._state = edit.after if forward else edit.before
        live = [segment.segment_id for segment in self.segments]
        if self._current not in live:
            self._current = live[-1]
        return self._result(**changes_of(edit.patches, forward))

    def _result(self, **details: Any) -> Result:
        """A :class:`Result` for the current segment; ``details``: its other fields (or none)."""
        fields: dict[str, Any] = {"changed_lo": None, "changed_hi": None, **details}
        return Result(self.mask(), self._current, **fields)
