"""Interactive segmentation of one volume: clicks in, masks on the volume's own grid out."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geometry import CropGrid, Volume, as_point, check_segmentable
from ..geometry.paste import footprint_box
from .cache import EmbeddingCache
from .composition import compose
from .crops import CropEditor
from .history import History
from .masks import SegmentMasks, frozen_mask
from .predictor import Predictor, as_predictor
from .result import Result, SegmentChange, changes_of, segment_change
from .state import SEGMENT_COLORS, Click, Edit, MaskPatch, SegmentState, SessionState
from .uncertainty import Uncertainty, ensemble_probability, on_volume

if TYPE_CHECKING:
    from ..models.sam3d import Sam3D


class Session:
    """Click-to-segment on one volume with any predictor.

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
    ) -> None:
        check_segmentable(volume)
        self.volume = volume
        self.predictor = as_predictor(predictor)
        self.protect_other_segments = protect_other_segments
        self.embeddings = EmbeddingCache(cache_bytes)
        self._crops = CropEditor(volume, self.predictor, self.embeddings)
        self._masks = SegmentMasks(volume.shape)
        self._history = History()
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
        updated, grids, encoder_ran = self._crops.replace_click(
            segment, crop_index, click_index, ()
        )
        return self._apply(updated, grids, encoder_ran, start)

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
        grid = segment.crops[crop_index].grid
        old = segment.crops[crop_index].clicks[click_index]
        moved = Click(point, old.positive, old.click_id)
        if grid.contains(point):
            edit = self._crops.replace_click(segment, crop_index, click_index, (moved,))
            return self._apply(*edit, start)
        without, grids, removal_ran = self._crops.replace_click(
            segment, crop_index, click_index, ()
        )
        new_segment, new_grid, adding_ran = self._crops.with_click(without, moved)
        return self._apply(new_segment, [*grids, new_grid], removal_ran or adding_ran, start)

    def reset(self) -> Result:
        """Remove every click and voxel of the current segment, also those it had before the
        session (undoable)."""
        start = time.perf_counter()
        segment = self.current_segment
        grids = [crop.grid for crop in segment.crops]
        cleared = replace(segment, crops=(), base=None)
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
        """Self-ensembling probability and entropy of the current segment's latest crop.

        Runs ``samples`` decoder passes on the cached embedding; the encoder runs only if the
        crop's embedding was evicted from the cache.
        """
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
        """The segment holding a click, and the click's (crop index, click index) in it: an int
        counts the current segment's clicks (see :meth:`clicks`), a str is a click id that any
        segment may hold."""
        if not isinstance(index, str):
            segment = self.current_segment
            return (segment, *_locate_click(segment, index))
        for segment in self._state.segments:
            for crop_index, crop in enumerate(segment.crops):
                for click_index, click in enumerate(crop.clicks):
                    if click.click_id == index:
                        return segment, crop_index, click_index
        raise KeyError(f"that point is no longer part of the session (click {index!r})")

    def _base(self, initial_mask: np.ndarray | None) -> np.ndarray | None:
        """A new segment's base: its caller's ``initial_mask``, checked and frozen; or None."""
        if initial_mask is None:
            return None
        return frozen_mask(initial_mask, self.volume.shape, "initial_mask")

    def _new_click_id(self, click_id: str | None) -> str:
        taken = {click.click_id for click in self.clicks()}
        if click_id is None:
            # Skips numbers that a caller's own ids took.
            while click_id is None or click_id in taken:
                self._last_click_number += 1
                click_id = f"click-{self._last_click_number}"
            return click_id
        if click_id in taken:
            raise ValueError(f"the current segment already has a click {click_id!r}")
        return str(click_id)

    def _apply(
        self,
        segment: SegmentState,
        grids: list[CropGrid],
        encoder_ran: bool,
        start: float,
        clear_all: bool = False,
    ) -> Result:
        state = self._state.with_segment(segment)
        lo, hi = self._edit_box(segment.segment_id, grids, clear_all)
        patches: tuple[MaskPatch, ...] = ()
        if np.all(hi > lo):
            new = compose(self.volume, segment, lo, hi)
            others = [s.segment_id for s in self.segments if s.segment_id != segment.segment_id]
            patches = self._masks.write(segment, lo, hi, new, others, self.protect_other_segments)
        self._record(Edit(self._state, state, patches))
        crop = segment.crops[-1] if segment.crops else None
        return self._result(
            **changes_of(patches),
            crop=crop.grid if crop else None,
            logits=crop.logits if crop else None,
            encoder_ran=encoder_ran,
            seconds=time.perf_counter() - start,
        )

    def _edit_box(
        self, segment_id: int, grids: list[CropGrid], clear_all: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        boxes = [footprint_box(grid, self.volume) for grid in grids]
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
        """A :class:`Result` for the current segment; ``details`` are its other fields (no
        change where they name none)."""
        fields: dict[str, Any] = {"changed_lo": None, "changed_hi": None, **details}
        return Result(self.mask(), self._current, **fields)


def _locate_click(segment: SegmentState, index: int) -> tuple[int, int]:
    """(crop index, click index) of the segment's click ``index`` (see :meth:`Session.clicks`)."""
    pairs = segment.clicks()
    if not -len(pairs) <= index < len(pairs):
        raise IndexError(f"no click {index}: the segment has {len(pairs)}")
    return pairs[index]


def check_point(volume: Volume, point_ras: Any) -> np.ndarray:
    """A click position as float64 (3,) RAS mm, checked to lie in a voxel of the volume.

    Raises:
        ValueError: not three finite numbers, or outside the volume (the message gives its
            extent).
    """
    point = as_point(point_ras)
    if point is None:
        raise ValueError(f"a point must be three finite RAS coordinates, got {point_ras!r}")
    if not volume.contains_ras(point):
        shown = [float(f"{value:.6g}") for value in point]
        raise ValueError(
            f"point {shown} (RAS mm) is outside the volume, which spans {_ras_extent(volume)}"
        )
    return point


def _ras_extent(volume: Volume) -> str:
    """The RAS bounding box of the volume's voxel centres, e.g. 'R -10..20, A 5..40, S 0..30'."""
    corners_ijk = np.array(np.meshgrid(*[(0, n - 1) for n in volume.shape])).reshape(3, -1).T
    corners_ras = volume.index_to_ras(corners_ijk)
    low, high = corners_ras.min(axis=0), corners_ras.max(axis=0)
    return ", ".join(f"{axis} {a:.1f}..{b:.1f} mm" for axis, a, b in zip("RAS", low, high))
