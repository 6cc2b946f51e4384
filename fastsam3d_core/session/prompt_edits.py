"""How a drawn prompt (box, scribble, lasso) becomes what the model knows: points, a mask prompt
prior, and, where the drawing is exact knowledge, voxels set exactly.

The released models embed positive and negative points and a dense mask prompt only (model.md
§3.2), so:

- a **positive box** opens crops that cover it, each bounded by it (a bounded crop decides the
  segment inside the box only, so the result never leaves the box) and starting from the box's
  prior (:func:`~.composition.box_prior`), with a positive point at the middle of its part of
  the box; or, for a model that learned box corners (``accepts_box_corners``), the corners;
- a **negative box** clears the voxels inside it;
- a **scribble** is points sampled along it, all of its sign, decoded together;
- a **lasso** sets its slice exactly (positive: the filled contour and nothing else on the
  slice; negative: the filled contour cleared), and points sampled inside it carry the change
  into 3-D.

Each is one interaction: its points carry its ``prompt_id``, so it is moved and removed whole,
and the session records it as one edit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ..geometry import CROP_SIZE, CROP_SPACING_MM, CropGrid, Volume, box_slices, crop_grid_around
from ..geometry.paste import footprint_box
from .crops import CropEditor
from .shapes import LassoFill, box_voxels, lasso_fill, lasso_samples, scribble_samples
from .state import Bound, Click, Override, Prompt, SegmentState

KINDS = ("box", "scribble", "lasso")
# Neighbouring crops of a box larger than one crop overlap by this much (mm), so that the
# model sees every part of the box away from a crop's edge.
BOX_TILE_OVERLAP_MM = 16.0


@dataclass(frozen=True)
class PromptEdit:
    """A segment after a prompt was added or removed, the crops that changed, whether the
    encoder ran, other volume boxes ``(lo, hi)`` whose voxels it set, and the clicks it let go
    (see :meth:`PromptEditor.without_prompt`)."""

    segment: SegmentState
    grids: list[CropGrid]
    encoder_ran: bool
    boxes: list[tuple[np.ndarray, np.ndarray]]
    orphans: tuple[Click, ...] = ()


class PromptEditor:
    """Adds and removes a segment's drawn prompts through the session's :class:`CropEditor`.

    Args:
        volume: the image.
        crops: the session's crop editor.
        box_corners: whether the predictor learned box corners (decoder labels 2 and 3).
        mask_of: a segment's mask now, by id (uint8 ``(I, J, K)``).
    """

    def __init__(
        self,
        volume: Volume,
        crops: CropEditor,
        box_corners: bool,
        mask_of: Callable[[int], np.ndarray],
    ) -> None:
        self.volume = volume
        self.crops = crops
        self.box_corners = box_corners
        self.mask_of = mask_of

    def with_prompt(
        self, segment: SegmentState, kind: str, points_ras: Any, positive: bool, prompt_id: str
    ) -> PromptEdit:
        """The segment with a new prompt (see the module's docstring).

        Raises:
            ValueError: an unknown kind, or a drawing that is not one (see :mod:`.shapes`).
        """
        crops_before = self.crops.crops_opened
        edit = self._with_kind(segment, kind, points_ras, positive, prompt_id)
        prompts = edit.segment.prompts
        stamped = replace(prompts[-1], crops_before=crops_before)
        return replace(edit, segment=replace(edit.segment, prompts=prompts[:-1] + (stamped,)))

    def _with_kind(
        self, segment: SegmentState, kind: str, points_ras: Any, positive: bool, prompt_id: str
    ) -> PromptEdit:
        if kind == "box":
            return self._with_box(segment, points_ras, positive, prompt_id)
        if kind == "scribble":
            samples = scribble_samples(self.volume, points_ras)
            return self._with_points(
                segment, samples, Prompt(kind, _ras(points_ras), positive, prompt_id)
            )
        if kind == "lasso":
            return self._with_lasso(segment, points_ras, positive, prompt_id)
        raise ValueError(f"unknown prompt kind {kind!r}: one of {', '.join(KINDS)}")

    def without_prompt(self, segment: SegmentState, prompt_id: str) -> PromptEdit:
        """The segment without a prompt: its exact voxels gone, the crops holding its points
        replayed without them (those it alone held dropped), the crops its box bounded dropped,
        and the crops opened after it that took its voxels into their first mask prompts
        replayed, each once.

        The users' clicks that lay in the crops of its box are not kept: they are returned as
        ``PromptEdit.orphans``, for :meth:`with_clicks_again`.

        Raises:
            KeyError: the segment has no prompt with this id.
        """
        prompt = segment.prompt(prompt_id)
        if prompt is None:
            raise KeyError(f"that drawing is no longer part of the session (prompt {prompt_id!r})")
        segment = replace(segment, prompts=tuple(p for p in segment.prompts if p is not prompt))
        remaining: dict[int, tuple[Click, ...]] = {}
        orphans: list[Click] = []
        for index, crop in enumerate(segment.crops):
            kept = tuple(c for c in crop.clicks if c.prompt_id != prompt_id)
            if crop.bound is not None and crop.bound.prompt_id == prompt_id:
                orphans += kept
                remaining[index] = ()
            elif len(kept) < len(crop.clicks):
                remaining[index] = kept
        override = prompt.override
        boxes = [] if override is None else [(override.lo, override.hi)]
        since = [(box, prompt.crops_before + 1) for box in boxes]
        segment, grids, encoder_ran = self.crops.replace_clicks(segment, remaining, since)
        return PromptEdit(segment, grids, encoder_ran, boxes, tuple(orphans))

    def with_clicks_again(self, edit: PromptEdit, clicks: tuple[Click, ...]) -> PromptEdit:
        """``edit`` with clicks placed again as they were placed first: a user's click alone,
        the consecutive points of one drawn prompt together."""
        segment, grids, encoder_ran = edit.segment, list(edit.grids), edit.encoder_ran
        for group in _steps(clicks):
            segment, changed, ran = self.crops.with_clicks(segment, group)
            grids += changed
            encoder_ran |= ran
        return PromptEdit(segment, grids, encoder_ran, edit.boxes)

    def _with_box(
        self, segment: SegmentState, corners: Any, positive: bool, prompt_id: str
    ) -> PromptEdit:
        corner_a, corner_b = _two_corners(corners)
        lo, hi = box_voxels(self.volume, corner_a, corner_b)
        prompt = Prompt("box", _ras([corner_a, corner_b]), positive, prompt_id)
        if not positive:
            cleared = Override(lo, hi, _filled(hi - lo, False), _filled(hi - lo, True))
            segment = _with(segment, replace(prompt, override=cleared))
            return PromptEdit(segment, [], False, [(lo, hi)])
        bound = Bound(prompt_id, lo, hi)
        segment = _with(segment, prompt)
        grids, encoder_ran = [], False
        for centre_ras in self._box_tiles(lo, hi):
            grid = crop_grid_around(self.volume, centre_ras)
            clicks = self._box_clicks(grid, bound)
            segment, ran = self.crops.with_bounded_crop(segment, grid, clicks, bound)
            grids.append(grid)
            encoder_ran |= ran
        return PromptEdit(segment, grids, encoder_ran, [])

    def _box_tiles(self, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
        """RAS centres of the crops that cover a volume box: one where the box fits in a crop,
        else a grid of crops overlapping by ``BOX_TILE_OVERLAP_MM``."""
        length_mm = (hi - lo) * self.volume.spacing
        usable_mm = CROP_SIZE * CROP_SPACING_MM - BOX_TILE_OVERLAP_MM
        counts = np.maximum(np.ceil(length_mm / usable_mm).astype(int), 1)
        edge = lo - 0.5
        centres_per_axis = [
            edge[axis] + (np.arange(n) + 0.5) * (hi[axis] - lo[axis]) / n
            for axis, n in enumerate(counts)
        ]
        mesh = np.meshgrid(*centres_per_axis, indexing="ij")
        return list(self.volume.index_to_ras(np.stack([m.ravel() for m in mesh], axis=1)))

    def _box_clicks(self, grid: CropGrid, bound: Bound) -> tuple[Click, ...]:
        """The points a positive box gives one of its crops, over the part of the box the crop
        holds: its two corners for a model that learned them, else a positive point at its
        middle."""
        footprint_lo, footprint_hi = footprint_box(grid, self.volume)
        low = np.maximum(bound.lo, footprint_lo)
        high = np.minimum(bound.hi, footprint_hi) - 1
        prompt_id = bound.prompt_id
        if self.box_corners:
            low_ras, high_ras = self.volume.index_to_ras(np.stack([low, high]).astype(float))
            return (
                Click(low_ras, True, f"{prompt_id}#low", prompt_id, "box-low"),
                Click(high_ras, True, f"{prompt_id}#high", prompt_id, "box-high"),
            )
        middle = self.volume.index_to_ras(np.round((low + high) / 2))
        return (Click(middle, True, f"{prompt_id}#middle", prompt_id),)

    def _with_points(
        self, segment: SegmentState, samples: np.ndarray, prompt: Prompt
    ) -> PromptEdit:
        clicks = tuple(
            Click(point, prompt.positive, f"{prompt.prompt_id}#{n}", prompt.prompt_id)
            for n, point in enumerate(samples)
        )
        segment, grids, encoder_ran = self.crops.with_clicks(_with(segment, prompt), clicks)
        return PromptEdit(segment, grids, encoder_ran, [])

    def _with_lasso(
        self, segment: SegmentState, contour: Any, positive: bool, prompt_id: str
    ) -> PromptEdit:
        fill = lasso_fill(self.volume, contour)
        prompt = Prompt("lasso", _ras(contour), positive, prompt_id)
        edit = self._with_points(segment, lasso_samples(self.volume, fill), prompt)
        if positive:
            override = self._lasso_slice(fill)
        else:
            override = Override(fill.lo, fill.hi, _filled(fill.hi - fill.lo, False), fill.inside)
        prompts = edit.segment.prompts[:-1] + (replace(prompt, override=override),)
        segment = replace(edit.segment, prompts=prompts)
        return PromptEdit(segment, edit.grids, edit.encoder_ran, self._lasso_boxes(segment, fill))

    def _lasso_boxes(self, segment: SegmentState, fill: LassoFill) -> list[tuple[Any, Any]]:
        """Where a lasso changes voxels beyond its crops: its fill, and on its slice the
        segment's voxels so far (not the whole slice: composing it costs as much again)."""
        boxes = [(fill.lo, fill.hi)]
        index = int(fill.lo[fill.axis])
        held = np.argwhere(np.take(self.mask_of(segment.segment_id), index, axis=fill.axis))
        if len(held):
            lo, hi = (
                np.insert(held.min(axis=0), fill.axis, index),
                np.insert(held.max(axis=0) + 1, fill.axis, index + 1),
            )
            boxes.append((lo, hi))
        return boxes

    def _lasso_slice(self, fill: LassoFill) -> Override:
        """A positive lasso's exact voxels: its whole slice, the filled contour and nothing
        else (the user's own drawing)."""
        lo, hi = np.zeros(3, int), np.array(self.volume.shape)
        lo[fill.axis], hi[fill.axis] = fill.lo[fill.axis], fill.hi[fill.axis]
        values = np.zeros(tuple(hi - lo), bool)
        values[box_slices(fill.lo - lo, fill.hi - lo)] = fill.inside
        return Override(lo, hi, _frozen(values), _filled(hi - lo, True))


def _steps(clicks: tuple[Click, ...]) -> list[tuple[Click, ...]]:
    """Clicks in the steps they were placed in: a user's click alone, the consecutive points
    of one drawn prompt together."""
    steps: list[list[Click]] = []
    for click in clicks:
        if steps and click.prompt_id is not None and steps[-1][-1].prompt_id == click.prompt_id:
            steps[-1].append(click)
        else:
            steps.append([click])
    return [tuple(step) for step in steps]


def _with(segment: SegmentState, prompt: Prompt) -> SegmentState:
    return replace(segment, prompts=segment.prompts + (prompt,))


def _two_corners(corners: Any) -> tuple[Any, Any]:
    try:
        corner_a, corner_b = corners
    except (TypeError, ValueError):
        raise ValueError(f"a box is two opposite RAS corners, got {corners!r}") from None
    return corner_a, corner_b


def _ras(points: Any) -> tuple[tuple[float, float, float], ...]:
    """Points as the tuples a :class:`Prompt` keeps (already checked by :mod:`.shapes`)."""
    return tuple(tuple(float(v) for v in point) for point in np.asarray(points, np.float64))


def _filled(shape: np.ndarray, value: bool) -> np.ndarray:
    """A read-only bool array of one value, broadcast (no memory for a large box)."""
    return np.broadcast_to(np.array(value), tuple(int(n) for n in shape))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
