"""A segment's voxels composed from its crops: on the volume's grid, and inside a new crop.

A segment is its crops' latest logits, the most recently edited crop winning where crops
overlap, and its base (the voxels it had before the session) where no crop covers a voxel.
:func:`compose` reads that on a box of the volume's grid (what the session writes);
:func:`mask_prompt` reads it in a new crop's own voxels (the crop's first mask prompt), the same
way, so that a new crop continues the segment instead of overwriting it.
"""

from __future__ import annotations

import numpy as np

from ..geometry import CropGrid, Volume, box_slices, resample
from ..geometry.paste import footprint_box, logits_on_grid, logits_on_volume
from ..geometry.resample import translation
from .state import Bound, SegmentState

# A new crop starts from the segment's voxels inside it (from its other crops, or from before the
# session) as its mask prompt: the decoder's 32³ logits (spec: low_res_masks), this many crop
# voxels per cell.
MASK_PROMPT_STRIDE = 4
# Logit magnitude of a fully inside (+) or outside (-) prompt cell; partly covered cells scale
# linearly. A confident prediction's size; not tuned on the released weights.
MASK_PROMPT_LOGIT = 6.0
# A positive box's crop starts from a prior: its cells inside the box at this logit (partly
# covered cells in proportion), those outside as the segment is there: "the object", as sure as
# a segment's own voxels. Chosen by measurement (0.588 Dice against 0.565 for 0 and for no
# prior): docs/prompts.md, "What a box gives the model".
BOX_PRIOR_LOGIT = MASK_PROMPT_LOGIT


def overlap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two index boxes ``(lo, hi)`` share a voxel."""
    return bool(np.all(np.maximum(a[0], b[0]) < np.minimum(a[1], b[1])))


def compose(volume: Volume, segment: SegmentState, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The segment inside the volume box ``[lo, hi)`` (indices (i, j, k)), bool ``(hi - lo)``:
    each voxel from the most recently edited crop that covers it (a crop a box bounds covers
    the box only), from the base where none does; then its drawn prompts' exact voxels
    (:attr:`SegmentState.overrides`), the latest winning."""
    composed = _compose_crops(volume, segment, lo, hi)
    for override in segment.overrides:
        a, b = np.maximum(override.lo, lo), np.minimum(override.hi, hi)
        if np.any(a >= b):
            continue
        src, dst = box_slices(a - override.lo, b - override.lo), box_slices(a - lo, b - lo)
        if not composed.flags.writeable:
            composed = composed.copy()
        composed[dst] = np.where(override.domain[src], override.values[src], composed[dst])
    return composed


def _compose_crops(
    volume: Volume, segment: SegmentState, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """:func:`compose` before the drawn prompts' exact voxels."""
    composed: np.ndarray | None = None
    covered: np.ndarray | None = None
    for crop in reversed(segment.crops):
        if crop.logits is None or not overlap(footprint_box(crop.grid, volume), (lo, hi)):
            continue  # before upsampling its logits over its whole footprint
        box = logits_on_volume(crop.logits, crop.grid, volume, threshold=0.0)
        a, b = np.maximum(box.lo, lo), np.minimum(box.hi, hi)
        if crop.bound is not None:
            a, b = np.maximum(a, crop.bound.lo), np.minimum(b, crop.bound.hi)
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


def mask_prompt(volume: Volume, segment: SegmentState, grid: CropGrid) -> np.ndarray | None:
    """The segment inside a crop it does not hold, as mask-prompt logits float32 ``(32, 32,
    32)`` (crop axes d0, d1, d2), composed in the crop's own voxels as :func:`compose` composes
    the volume's; None where the segment has no voxel there."""
    if not segment.crops and segment.base is None and not segment.overrides:
        return None
    held, covered = _crops_in_crop(volume, segment, grid)
    if segment.base is not None and not covered.all():
        held |= _base_in_crop(volume, segment.base, grid) & ~covered
    footprint = footprint_box(grid, volume)
    for override in segment.overrides:
        if not overlap((override.lo, override.hi), footprint):
            continue
        values = _box_values_in_crop(volume, override.values, override.lo, grid)
        domain = _box_values_in_crop(volume, override.domain, override.lo, grid)
        held = np.where(domain, values, held)
    held &= _volume_in_crop(volume, grid)
    if not held.any():
        return None
    return _cell_logits(held, grid)


def box_prior(
    volume: Volume, bound: Bound, grid: CropGrid, prompt: np.ndarray | None
) -> np.ndarray:
    """A positive box's crop's first mask prompt, float32 ``(32, 32, 32)``: see
    :func:`box_prior_logits`, for the crop voxels inside the box."""
    return box_prior_logits(_box_in_crop(volume, bound.lo, bound.hi, grid), prompt)


def box_prior_logits(inside: np.ndarray, prompt: np.ndarray | None = None) -> np.ndarray:
    """A box's mask prompt, float32 ``(32, 32, 32)`` (crop axes d0, d1, d2): the segment there
    (``prompt``, or nothing), raised inside the box to ``BOX_PRIOR_LOGIT`` (cells partly in
    the box in proportion, so the box's outside stays 'not the object').

    Args:
        inside: bool ``(128, 128, 128)``, the crop voxels inside the box.
        prompt: the segment's own mask prompt there, or None.
    """
    share = _cell_share(inside)
    prior = share * BOX_PRIOR_LOGIT - (1.0 - share) * MASK_PROMPT_LOGIT
    held = np.full_like(prior, -MASK_PROMPT_LOGIT) if prompt is None else prompt
    return np.maximum(held, prior).astype(np.float32)


def _cell_logits(held: np.ndarray, grid: CropGrid) -> np.ndarray:
    """Crop voxels held (bool) as mask-prompt logits: the share of each cell's voxels held, in
    0..1, from -MASK_PROMPT_LOGIT to +MASK_PROMPT_LOGIT."""
    return ((2.0 * _cell_share(held) - 1.0) * MASK_PROMPT_LOGIT).astype(np.float32)


def _cell_share(voxels: np.ndarray) -> np.ndarray:
    """The share of each mask-prompt cell's crop voxels that are set (bool cube of crop voxels,
    ``MASK_PROMPT_STRIDE``³ per cell), float64 in 0..1."""
    cells = voxels.shape[0] // MASK_PROMPT_STRIDE
    return voxels.reshape([cells, MASK_PROMPT_STRIDE] * 3).mean(axis=(1, 3, 5))


def _crops_in_crop(
    volume: Volume, segment: SegmentState, grid: CropGrid
) -> tuple[np.ndarray, np.ndarray]:
    """The segment's crops in ``grid``'s voxels: (held, covered by some crop), bool.

    Each crop's low-resolution logits are interpolated straight onto the grid: 128³ voxels,
    not the (up to 10 times larger) footprint of a fine volume.
    """
    held, covered = np.zeros(grid.shape, bool), np.zeros(grid.shape, bool)
    footprint = footprint_box(grid, volume)
    for crop in reversed(segment.crops):
        if crop.logits is None or not overlap(footprint_box(crop.grid, volume), footprint):
            continue
        values, inside = logits_on_grid(
            crop.logits, crop.grid, grid.crop_to_ras, grid.shape, threshold=0.0
        )
        if crop.bound is not None:
            inside = inside & _box_in_crop(volume, crop.bound.lo, crop.bound.hi, grid)
        new = inside & ~covered
        held |= new & values
        covered |= new
    return held, covered


def _base_in_crop(volume: Volume, base: np.ndarray, grid: CropGrid) -> np.ndarray:
    """A segment's base in ``grid``'s voxels (nearest), bool; only its footprint is read."""
    lo, hi = footprint_box(grid, volume)
    if np.any(lo >= hi):
        return np.zeros(grid.shape, bool)
    return _box_values_in_crop(volume, base[box_slices(lo, hi)], lo, grid)


def _box_values_in_crop(
    volume: Volume, values: np.ndarray, lo: np.ndarray, grid: CropGrid
) -> np.ndarray:
    """Bool values on the volume box starting at ``lo``, in ``grid``'s voxels (nearest; False
    outside the box)."""
    voxels = np.ascontiguousarray(values, dtype=np.uint8)
    box_to_ras = volume.ijk_to_ras @ translation(lo)
    fraction, _ = resample(voxels, box_to_ras, grid.crop_to_ras, grid.shape, mode="nearest")
    return fraction > 0.5


def _volume_in_crop(volume: Volume, grid: CropGrid) -> np.ndarray:
    """Which of ``grid``'s voxels lie in the volume, bool."""
    return _box_in_crop(volume, np.zeros(3), np.asarray(volume.shape, dtype=np.float64), grid)


def _box_in_crop(volume: Volume, lo: np.ndarray, hi: np.ndarray, grid: CropGrid) -> np.ndarray:
    """Which of ``grid``'s voxels lie in the volume box ``[lo, hi)``, bool: where a 2³ source
    spanning the box (edges at lo - 0.5 and hi - 0.5 of the volume's indices) is sampled."""
    lo, extent = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64) - lo
    spanning = np.diag([*(extent / 2), 1.0])
    spanning[:3, 3] = lo + extent / 4 - 0.5
    source_to_ras = volume.ijk_to_ras @ spanning
    _, inside = resample(
        np.ones((2, 2, 2), np.float32), source_to_ras, grid.crop_to_ras, grid.shape
    )
    return np.asarray(inside)
