"""Interactive segmentation of one volume: clicks in, masks on the volume's own grid out."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geometry import (
    CropGrid,
    Volume,
    as_point,
    box_slices,
    check_segmentable,
    crop_grid_around,
    extract_crop,
    resample,
)
from ..geometry.paste import footprint_box, logits_on_grid, logits_on_volume
from ..geometry.resample import translation
from .cache import EmbeddingCache
from .predictor import Predictor, as_predictor
from .result import Result, SegmentChange, changes_of, differing_box, mask_patch, segment_change
from .state import (
    SEGMENT_COLORS,
    Click,
    CropState,
    Edit,
    MaskPatch,
    SegmentState,
    SessionState,
    decoder_prompt,
)
from .uncertainty import Uncertainty, binary_entropy, ensemble_probability

if TYPE_CHECKING:
    from ..models.sam3d import Sam3D

# Undo steps kept; older ones are dropped.
MAX_UNDO = 100
# A new crop starts from the segment's voxels inside it (from its other crops, or from before the
# session) as its mask prompt: the decoder's 32³ logits (spec: low_res_masks), this many crop
# voxels per cell.
MASK_PROMPT_STRIDE = 4
# Logit magnitude of a fully inside (+) or outside (-) prompt cell; partly covered cells scale
# linearly. A confident prediction's size; not tuned on the released weights.
MASK_PROMPT_LOGIT = 6.0


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
        base = None if initial_mask is None else self._volume_mask(initial_mask, "initial_mask")
        first = SegmentState(1, "Segment_1", SEGMENT_COLORS[0], base=base)
        self._state = SessionState((first,))
        self._masks: dict[int, np.ndarray] = {1: _mask_from(base, volume.shape)}
        self._current = 1
        # Ids are never reused, also after an undone new segment or a removed click.
        self._last_segment_id = 1
        self._last_click_number = 0
        self._last_crop_number = 0
        self._foreign: np.ndarray | None = None
        self.set_foreign_mask(foreign_mask)
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []

    # -- reading ---------------------------------------------------------------------------

    @property
    def segments(self) -> tuple[SegmentState, ...]:
        return self._state.segments

    @property
    def current_segment(self) -> SegmentState:
        return self._state.segment(self._current)

    def mask(self, segment_id: int | None = None) -> np.ndarray:
        """A segment's mask, uint8 ``(I, J, K)``, read-only view (default: the current one)."""
        view = self._masks[self._current if segment_id is None else segment_id].view()
        view.flags.writeable = False
        return view

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
        _, grid = self._crop_for(self.current_segment, point)
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
        segment, grid, encoder_ran = self._with_click(
            self.current_segment, point, positive, click_id
        )
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
        updated, grids, encoder_ran = self._replace_click(segment, crop_index, click_index, ())
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
        if grid.contains(point):
            moved = (Click(point, old.positive, old.click_id),)
            edit = self._replace_click(segment, crop_index, click_index, moved)
            return self._apply(*edit, start)
        without, grids, removal_ran = self._replace_click(segment, crop_index, click_index, ())
        new_segment, new_grid, adding_ran = self._with_click(
            without, point, old.positive, old.click_id
        )
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
        base = None if initial_mask is None else self._volume_mask(initial_mask, "initial_mask")
        segment = SegmentState(
            segment_id,
            name or f"Segment_{segment_id}",
            color or SEGMENT_COLORS[(segment_id - 1) % len(SEGMENT_COLORS)],
            base=base,
        )
        self._masks[segment_id] = _mask_from(base, self.volume.shape)
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
        self._foreign = None if mask is None else self._volume_mask(mask, "foreign_mask")

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
        mask = self._masks[segment_id]
        reference = np.zeros(mask.shape, bool) if held is None else self._volume_mask(held, "held")
        whole = box_slices(np.zeros(3, int), np.array(mask.shape))
        slices = differing_box(mask, whole, reference)
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
        embedding, _ = self._embedding(crop.grid)
        rng = np.random.default_rng(seed)
        probability_crop = ensemble_probability(
            self.predictor, embedding, crop, samples, jitter_voxels, rng
        )
        box = logits_on_volume(probability_crop, crop.grid, self.volume)
        probability = self._masks[segment.segment_id].astype(np.float32)
        probability[box.slices] = np.where(box.inside, box.values, probability[box.slices])
        entropy = np.zeros_like(probability)
        entropy[box.slices] = np.where(box.inside, binary_entropy(box.values), 0)
        peak = np.unravel_index(np.argmax(entropy), entropy.shape)
        most_uncertain = self.volume.index_to_ras(np.array(peak)) if entropy[peak] > 0.01 else None
        return Uncertainty(
            self.volume.with_array(probability), self.volume.with_array(entropy), most_uncertain
        )

    # -- history ---------------------------------------------------------------------------

    def undo(self) -> Result:
        """Revert the latest edit; nothing happens when there is none."""
        return self._step(self._undo, self._redo, forward=False)

    def redo(self) -> Result:
        """Re-apply the latest undone edit; nothing happens when there is none."""
        return self._step(self._redo, self._undo, forward=True)

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

    def _volume_mask(self, mask: np.ndarray, name: str) -> np.ndarray:
        array = np.asarray(mask)
        if array.shape != self.volume.shape:
            raise ValueError(
                f"{name} must be shaped like the volume {self.volume.shape}, got {array.shape}"
            )
        frozen = array.astype(bool)  # a copy, so the caller's array may change
        frozen.flags.writeable = False
        return frozen

    def _embedding(self, grid: CropGrid) -> tuple[Any, bool]:
        embedding = self.embeddings.get(grid.key())
        if embedding is not None:
            return embedding, False
        embedding = self.predictor.encode(extract_crop(self.volume, grid))
        self.embeddings.put(grid.key(), embedding)
        return embedding, True

    def _predict(self, crop: CropState, clicks: tuple[Click, ...]) -> tuple[CropState, bool]:
        """The crop after a decode of ``clicks`` with its logits as the mask prompt."""
        embedding, encoder_ran = self._embedding(crop.grid)
        points, labels = decoder_prompt(crop.grid, clicks)
        logits = self.predictor.decode(embedding, points, labels, crop.logits)
        return replace(crop, clicks=clicks, logits=_squeeze(logits)), encoder_ran

    def _crop_for(
        self, segment: SegmentState, point_ras: np.ndarray
    ) -> tuple[int | None, CropGrid]:
        """The index and grid of the newest crop of the segment holding the point, or None and
        the grid of a new crop around it: the one crop choice of a click."""
        index = segment.find_crop(point_ras)
        if index is not None:
            return index, segment.crops[index].grid
        return None, crop_grid_around(self.volume, point_ras)

    def _mask_prompt(self, segment: SegmentState, grid: CropGrid) -> np.ndarray | None:
        """The segment inside a crop it does not hold, as mask-prompt logits (32³), so that a
        new crop continues the segment instead of overwriting it where crops overlap. Composed
        in the crop's own voxels as :meth:`_compose` composes the volume's (the most recently
        edited crop first, then the base); None where the segment has no voxel there."""
        if not segment.crops and segment.base is None:
            return None
        held, covered = self._crops_in_crop(segment, grid)
        if segment.base is not None and not covered.all():
            held |= self._base_in_crop(segment.base, grid) & ~covered
        held &= self._volume_in_crop(grid)
        if not held.any():
            return None
        cells = grid.size // MASK_PROMPT_STRIDE
        # The share of each cell's crop voxels that the segment holds, in 0..1.
        share = held.reshape([cells, MASK_PROMPT_STRIDE] * 3).mean(axis=(1, 3, 5))
        return ((2.0 * share - 1.0) * MASK_PROMPT_LOGIT).astype(np.float32)

    def _crops_in_crop(
        self, segment: SegmentState, grid: CropGrid
    ) -> tuple[np.ndarray, np.ndarray]:
        """The segment's crops in ``grid``'s voxels: (held, covered by some crop), bool.

        Each crop's low-resolution logits are interpolated straight onto the grid: 128³ voxels,
        not the (up to 10 times larger) footprint of a fine volume.
        """
        held, covered = np.zeros(grid.shape, bool), np.zeros(grid.shape, bool)
        footprint = footprint_box(grid, self.volume)
        for crop in reversed(segment.crops):
            if crop.logits is None or not _overlap(
                footprint_box(crop.grid, self.volume), footprint
            ):
                continue
            values, inside = logits_on_grid(
                crop.logits, crop.grid, grid.crop_to_ras, grid.shape, threshold=0.0
            )
            new = inside & ~covered
            held |= new & values
            covered |= new
        return held, covered

    def _base_in_crop(self, base: np.ndarray, grid: CropGrid) -> np.ndarray:
        """A segment's base in ``grid``'s voxels (nearest), bool; only its footprint is read."""
        lo, hi = footprint_box(grid, self.volume)
        if np.any(lo >= hi):
            return np.zeros(grid.shape, bool)
        voxels = base[box_slices(lo, hi)].astype(np.uint8)
        box_to_ras = self.volume.ijk_to_ras @ translation(lo)
        fraction, _ = resample(voxels, box_to_ras, grid.crop_to_ras, grid.shape, mode="nearest")
        return fraction > 0.5

    def _volume_in_crop(self, grid: CropGrid) -> np.ndarray:
        """Which of ``grid``'s voxels lie in the volume, bool: where a 2³ source spanning the
        volume's extent (edges at -0.5 and n - 0.5 of its indices) is sampled."""
        extent = np.asarray(self.volume.shape, dtype=np.float64)
        spanning = np.diag([*(extent / 2), 1.0])
        spanning[:3, 3] = extent / 4 - 0.5
        source_to_ras = self.volume.ijk_to_ras @ spanning
        _, inside = resample(
            np.ones((2, 2, 2), np.float32), source_to_ras, grid.crop_to_ras, grid.shape
        )
        return np.asarray(inside)

    def _with_click(
        self, segment: SegmentState, point_ras: np.ndarray, positive: bool, click_id: str
    ) -> tuple[SegmentState, CropGrid, bool]:
        """The segment with a click added to the newest crop holding it, or to a new crop."""
        index, grid = self._crop_for(segment, point_ras)
        if index is None:
            self._last_crop_number += 1
            prompt = self._mask_prompt(segment, grid)
            crop = CropState(grid, logits=prompt, opened=self._last_crop_number)
        else:
            crop = segment.crops[index]
        click = Click(point_ras, positive, click_id)
        updated, encoder_ran = self._predict(crop, crop.clicks + (click,))
        return segment.with_crop_last(index, updated), crop.grid, encoder_ran

    def _replace_click(
        self,
        segment: SegmentState,
        crop_index: int,
        click_index: int,
        replacement: tuple[Click, ...],
    ) -> tuple[SegmentState, list[CropGrid], bool]:
        """The segment with one click replaced (by nothing, or by a moved click): its crop
        replayed (the newest now), or dropped if no click is left; then the crops opened after
        it that overlap what changed, whose first mask prompts held its old voxels, replayed
        too. Also returns the grids of the crops that changed."""
        edited = segment.crops[crop_index]
        remaining = edited.clicks[:click_index] + replacement + edited.clicks[click_index + 1 :]
        crops = [c for i, c in enumerate(segment.crops) if i != crop_index]
        if remaining:
            crops.append(replace(edited, clicks=remaining))
        grids, encoder_ran = [edited.grid], False
        changed = [footprint_box(edited.grid, self.volume)]
        for crop in sorted(crops, key=lambda c: c.opened):
            box = footprint_box(crop.grid, self.volume)
            if crop.opened < edited.opened or not any(_overlap(box, b) for b in changed):
                continue
            older = replace(segment, crops=tuple(c for c in crops if c.opened < crop.opened))
            replayed, ran = self._replay(older, crop)
            crops[crops.index(crop)] = replayed
            changed.append(box)
            grids.append(crop.grid)
            encoder_ran |= ran
        return replace(segment, crops=tuple(crops)), grids, encoder_ran

    def _replay(self, older: SegmentState, crop: CropState) -> tuple[CropState, bool]:
        """The crop had its clicks been placed one after another in the segment ``older`` (the
        crops opened before it, and the base)."""
        state = replace(crop, clicks=(), logits=self._mask_prompt(older, crop.grid))
        encoder_ran = False
        for count in range(1, len(crop.clicks) + 1):
            state, ran = self._predict(state, crop.clicks[:count])
            encoder_ran |= ran
        return state, encoder_ran

    def _compose(self, segment: SegmentState, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The segment inside box [lo, hi) from its crops' logits: each voxel from the most
        recently edited crop that covers it, and from the segment's base where none does."""
        composed: np.ndarray | None = None
        covered: np.ndarray | None = None
        for crop in reversed(segment.crops):
            if crop.logits is None or not _overlap(footprint_box(crop.grid, self.volume), (lo, hi)):
                continue  # before upsampling its logits over its whole footprint
            box = logits_on_volume(crop.logits, crop.grid, self.volume, threshold=0.0)
            a, b = np.maximum(box.lo, lo), np.minimum(box.hi, hi)
            if np.any(a >= b):
                continue
            src = box_slices(a - box.lo, b - box.lo)
            if composed is None and box.whole and np.array_equal(a, lo) and np.array_equal(b, hi):
                # The newest crop covers the whole box (a click's usual case): it alone decides.
                return box.values[src]
            if composed is None or covered is None:
                composed = np.zeros(tuple(hi - lo), dtype=bool)
                covered = np.zeros_like(composed)
            dst = box_slices(a - lo, b - lo)
            new = box.inside[src] & ~covered[dst]
            composed[dst] |= new & box.values[src]
            covered[dst] |= new
            if covered.all():
                return composed
        region = box_slices(lo, hi)
        base = segment.base[region] if segment.base is not None else None
        if composed is None or covered is None:
            return base.copy() if base is not None else np.zeros(tuple(hi - lo), dtype=bool)
        if base is not None:
            composed |= base & ~covered
        return composed

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
            patches = self._write(segment, lo, hi, self._compose(segment, lo, hi))
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
        if clear_all and self._masks[segment_id].any():
            nonzero = np.argwhere(self._masks[segment_id])
            boxes.append((nonzero.min(axis=0), nonzero.max(axis=0) + 1))
        if not boxes:
            return np.zeros(3, int), np.zeros(3, int)
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

    def _write(
        self, segment: SegmentState, lo: np.ndarray, hi: np.ndarray, new: np.ndarray
    ) -> tuple[MaskPatch, ...]:
        """Write the segment's box, keeping segments from overlapping; returns what changed."""
        segment_id = segment.segment_id
        box = box_slices(lo, hi)
        others = [sid for sid in self._live_segment_ids() if sid != segment_id]
        if self.protect_other_segments:
            taken = np.zeros(new.shape, dtype=bool)
            if self._foreign is not None:
                # A segment refining a foreign one may keep that one's voxels (its base).
                foreign = self._foreign[box]
                taken |= foreign if segment.base is None else foreign & ~segment.base[box]
            for sid in others:
                taken |= self._masks[sid][box] > 0
            new = new & ~taken
        targets = [(segment_id, new)]
        if not self.protect_other_segments:
            targets += [(sid, (self._masks[sid][box] > 0) & ~new) for sid in others]
        patches = []
        for sid, values in targets:
            # A bool array is stored as bytes 0/1: view it as the uint8 mask values, no copy.
            patch = mask_patch(sid, self._masks[sid], box, values.view(np.uint8))
            if patch is not None:
                self._masks[sid][patch.slices] = patch.after
                patches.append(patch)
        return tuple(patches)

    def _live_segment_ids(self) -> list[int]:
        return [s.segment_id for s in self._state.segments]

    def _record(self, edit: Edit) -> None:
        self._state = edit.after
        self._undo.append(edit)
        del self._undo[:-MAX_UNDO]
        self._redo.clear()

    def _step(self, source: list[Edit], target: list[Edit], forward: bool) -> Result:
        if not source:
            return self._result()
        edit = source.pop()
        patches = edit.patches if forward else tuple(reversed(edit.patches))
        for patch in patches:
            self._masks[patch.segment_id][patch.slices] = patch.after if forward else patch.before
        self._state = edit.after if forward else edit.before
        target.append(edit)
        if self._current not in self._live_segment_ids():
            self._current = self._live_segment_ids()[-1]
        return self._result(**changes_of(edit.patches, forward))

    def _result(self, **details: Any) -> Result:
        """A :class:`Result` for the current segment; ``details`` are its other fields (no
        change where they name none)."""
        fields: dict[str, Any] = {"changed_lo": None, "changed_hi": None, **details}
        return Result(self.mask(), self._current, **fields)


def _overlap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two index boxes ``(lo, hi)`` share a voxel."""
    return bool(np.all(np.maximum(a[0], b[0]) < np.minimum(a[1], b[1])))


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


def _squeeze(logits: Any) -> Any:
    """Drop leading singleton axes so logits are ``(n, n, n)``."""
    while logits.ndim > 3 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.ndim != 3 or len(set(logits.shape)) != 1:
        raise ValueError(
            f"a predictor must return cubic logits (n, n, n), got {tuple(logits.shape)}"
        )
    return logits


def _mask_from(base: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """A segment's starting mask, uint8: its base, or empty."""
    return np.zeros(shape, dtype=np.uint8) if base is None else base.astype(np.uint8)
