"""How clicks become a segment's crop logits: the crop a click goes to, the predictor's runs, and
the crops replayed when a click is removed or moved.

Everything here returns new states (see :mod:`.state`); the session decides what to keep.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..geometry import CropGrid, Volume, crop_grid_around, extract_crop
from ..geometry.paste import footprint_box
from .cache import EmbeddingCache
from .composition import mask_prompt, overlap
from .predictor import Predictor
from .state import Click, CropState, SegmentState, decoder_prompt


class CropEditor:
    """Runs a predictor on the crops of a session's segments.

    Args:
        volume: the image.
        predictor: the session's predictor.
        embeddings: the session's cache of image embeddings, by crop grid.
    """

    def __init__(self, volume: Volume, predictor: Predictor, embeddings: EmbeddingCache) -> None:
        self.volume = volume
        self.predictor = predictor
        self.embeddings = embeddings
        # Numbers the crops in the order they were opened (CropState.opened); never reused.
        self._last_crop_number = 0

    def crop_for(self, segment: SegmentState, point_ras: np.ndarray) -> tuple[int | None, CropGrid]:
        """The index and grid of the newest crop of the segment holding the point, or None and
        the grid of a new crop around it: the one crop choice of a click."""
        index = segment.find_crop(point_ras)
        if index is not None:
            return index, segment.crops[index].grid
        return None, crop_grid_around(self.volume, point_ras)

    def embedding(self, grid: CropGrid) -> tuple[Any, bool]:
        """The crop's image embedding, and whether the encoder ran for it (not cached)."""
        embedding = self.embeddings.get(grid.key())
        if embedding is not None:
            return embedding, False
        embedding = self.predictor.encode(extract_crop(self.volume, grid))
        self.embeddings.put(grid.key(), embedding)
        return embedding, True

    def with_click(
        self, segment: SegmentState, click: Click
    ) -> tuple[SegmentState, CropGrid, bool]:
        """The segment with a click added to the newest crop holding it, or to a new crop whose
        first mask prompt is the segment there; also the crop's grid and whether the encoder
        ran."""
        point = np.asarray(click.point_ras)
        index, grid = self.crop_for(segment, point)
        if index is None:
            self._last_crop_number += 1
            prompt = mask_prompt(self.volume, segment, grid)
            crop = CropState(grid, logits=prompt, opened=self._last_crop_number)
        else:
            crop = segment.crops[index]
        updated, encoder_ran = self._predict(crop, crop.clicks + (click,))
        return segment.with_crop_last(index, updated), crop.grid, encoder_ran

    def replace_click(
        self,
        segment: SegmentState,
        crop_index: int,
        click_index: int,
        replacement: tuple[Click, ...],
    ) -> tuple[SegmentState, list[CropGrid], bool]:
        """The segment with one click replaced (by nothing, or by a moved click): its crop
        replayed (the newest now), or dropped if no click is left; then the crops opened after
        it that overlap what changed, whose first mask prompts held its old voxels, replayed
        too. Also returns the grids of the crops that changed and whether the encoder ran."""
        edited = segment.crops[crop_index]
        remaining = edited.clicks[:click_index] + replacement + edited.clicks[click_index + 1 :]
        crops = [c for i, c in enumerate(segment.crops) if i != crop_index]
        if remaining:
            crops.append(replace(edited, clicks=remaining))
        grids, encoder_ran = [edited.grid], False
        changed = [footprint_box(edited.grid, self.volume)]
        for crop in sorted(crops, key=lambda c: c.opened):
            box = footprint_box(crop.grid, self.volume)
            if crop.opened < edited.opened or not any(overlap(box, b) for b in changed):
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
        state = replace(crop, clicks=(), logits=mask_prompt(self.volume, older, crop.grid))
        encoder_ran = False
        for count in range(1, len(crop.clicks) + 1):
            state, ran = self._predict(state, crop.clicks[:count])
            encoder_ran |= ran
        return state, encoder_ran

    def _predict(self, crop: CropState, clicks: tuple[Click, ...]) -> tuple[CropState, bool]:
        """The crop after a decode of ``clicks`` with its logits as the mask prompt."""
        embedding, encoder_ran = self.embedding(crop.grid)
        points, labels = decoder_prompt(crop.grid, clicks)
        logits = self.predictor.decode(embedding, points, labels, crop.logits)
        return replace(crop, clicks=clicks, logits=_squeeze(logits)), encoder_ran


def _squeeze(logits: Any) -> Any:
    """Drop leading singleton axes so logits are ``(n, n, n)``."""
    while logits.ndim > 3 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.ndim != 3 or len(set(logits.shape)) != 1:
        raise ValueError(
            f"a predictor must return cubic logits (n, n, n), got {tuple(logits.shape)}"
        )
    return logits
