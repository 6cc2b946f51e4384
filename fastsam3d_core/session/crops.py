"""How clicks become a segment's crop logits: the crop a click goes to, the predictor's runs, and
the crops replayed when a click is removed or moved.

Everything here returns new states (see :mod:`.state`); the session decides what to keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..geometry import CropGrid, Volume, crop_grid_around, extract_crop
from ..geometry.paste import footprint_box
from .cache import EmbeddingCache
from .composition import box_prior, mask_prompt, overlap
from .predictor import Predictor
from .state import Bound, Click, CropState, SegmentState, decoder_prompt


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

    @property
    def crops_opened(self) -> int:
        """How many crops this editor has opened (the latest crop's ``opened``)."""
        return self._last_crop_number

    def crop_for(self, segment: SegmentState, point_ras: np.ndarray) -> tuple[int | None, CropGrid]:
        """The index and grid of the newest crop of the segment that takes the point, or None and
        the grid of a new crop around it: the one crop choice of a click."""
        index = self.taking_crop(segment, point_ras)
        if index is not None:
            return index, segment.crops[index].grid
        return None, crop_grid_around(self.volume, point_ras)

    def taking_crop(self, segment: SegmentState, point_ras: np.ndarray) -> int | None:
        """Index of the most recently edited crop that takes a click at the point (see
        :meth:`takes`)."""
        for index in reversed(range(len(segment.crops))):
            if self.takes(segment.crops[index], point_ras):
                return index
        return None

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
        """The segment with a click added to the newest crop taking it, or to a new crop whose
        first mask prompt is the segment there; also the crop's grid and whether the encoder
        ran."""
        segment, grids, encoder_ran = self.with_clicks(segment, (click,))
        return segment, grids[0], encoder_ran

    def with_clicks(
        self, segment: SegmentState, clicks: tuple[Click, ...]
    ) -> tuple[SegmentState, list[CropGrid], bool]:
        """The segment with several clicks added, one decode per crop: the first click's crop
        (as :meth:`with_click` chooses it) takes every click it can, the rest go on the same
        way. Also the grids of the crops edited and whether the encoder ran."""
        grids: list[CropGrid] = []
        encoder_ran = False
        remaining = list(clicks)
        while remaining:
            index, grid = self.crop_for(segment, np.asarray(remaining[0].point_ras))
            crop = self._new_crop(segment, grid) if index is None else segment.crops[index]
            taken = [remaining[0]] + [c for c in remaining[1:] if self.takes(crop, c.point_ras)]
            remaining = [c for c in remaining if all(c is not t for t in taken)]
            updated, ran = self._predict(crop, crop.clicks + tuple(taken))
            segment = segment.with_crop_last(index, updated)
            grids.append(grid)
            encoder_ran |= ran
        return segment, grids, encoder_ran

    def with_bounded_crop(
        self, segment: SegmentState, grid: CropGrid, clicks: tuple[Click, ...], bound: Bound
    ) -> tuple[SegmentState, bool]:
        """The segment with a new crop that a positive box bounds, its clicks decoded at once;
        its first mask prompt is the segment there with the box's prior (see
        :func:`~.composition.box_prior`)."""
        crop = self._new_crop(segment, grid, bound)
        updated, encoder_ran = self._predict(crop, clicks)
        return segment.with_crop_last(None, updated), encoder_ran

    def _new_crop(
        self, segment: SegmentState, grid: CropGrid, bound: Bound | None = None
    ) -> CropState:
        """A crop the segment does not have yet; its first mask prompt is the segment there
        (with a box's prior where a box bounds it)."""
        self._last_crop_number += 1
        crop = CropState(grid, opened=self._last_crop_number, bound=bound)
        return replace(
            crop, logits=_with_prior(self.volume, crop, mask_prompt(self.volume, segment, grid))
        )

    def text_features(self, grid: CropGrid) -> tuple[Any, bool]:
        """The predictor's ``encode_features`` of the crop (the embedding also cached as the
        crop's, for clicks), through the cache; and whether the encoder ran."""
        key = grid.key() + b"+text"
        held = self.embeddings.get(key)
        if held is not None:
            return held.features, False
        features = self.predictor.encode_features(extract_crop(self.volume, grid))
        self.embeddings.put(grid.key(), features.embedding)
        self.embeddings.put(key, HeldFeatures(features))
        return features, True

    def text_crop(self, grid: CropGrid, logits: Any, text: Any = None) -> CropState:
        """A new crop a text prompt opened, its logits the text's there (its ``prior``);
        ``text``: the text's embedding, for clicks decoded with it (None: the click path)."""
        self._last_crop_number += 1
        return CropState(
            grid, logits=logits, opened=self._last_crop_number, prior=logits, text=text
        )

    def takes(self, crop: CropState, point_ras: Any) -> bool:
        """Whether a crop takes a click at a RAS point: it holds the point, and so does the box
        that bounds it, if any."""
        point = np.asarray(point_ras, dtype=np.float64)
        if not crop.grid.contains(point):
            return False
        return crop.bound is None or crop.bound.contains_index(self.volume.ras_to_index(point))

    def replace_click(
        self,
        segment: SegmentState,
        crop_index: int,
        click_index: int,
        replacement: tuple[Click, ...],
    ) -> tuple[SegmentState, list[CropGrid], bool]:
        """The segment with one click replaced (by nothing, or by a moved click); see
        :meth:`replace_clicks`."""
        edited = segment.crops[crop_index]
        remaining = edited.clicks[:click_index] + replacement + edited.clicks[click_index + 1 :]
        return self.replace_clicks(segment, {crop_index: remaining})

    def replace_clicks(
        self,
        segment: SegmentState,
        remaining: dict[int, tuple[Click, ...]],
        changed_since: Sequence[tuple[tuple[np.ndarray, np.ndarray], int]] = (),
    ) -> tuple[SegmentState, list[CropGrid], bool]:
        """The segment with the clicks of some crops replaced: ``remaining`` maps a crop's
        index to its clicks now. Each such crop is replayed (the newest now), or dropped if no
        click is left; then every crop opened after something that changed and overlapping it
        (whose first mask prompt held the old voxels) is replayed too, once, in the order the
        crops were opened. ``changed_since`` adds volume boxes ``(lo, hi)`` that changed for the
        crops opened from a number on (a drawn prompt's exact voxels, removed).

        Returns the segment, the grids of the crops that changed, whether the encoder ran.
        """
        edited = [segment.crops[index] for index in sorted(remaining)]
        crops = [c for i, c in enumerate(segment.crops) if i not in remaining]
        crops += [replace(c, clicks=remaining[i]) for i, c in zip(sorted(remaining), edited)]
        crops = [c for c in crops if c.clicks or c.prior is not None]
        changed = [(footprint_box(c.grid, self.volume), c.opened) for c in edited]
        changed += list(changed_since)
        grids, encoder_ran = [c.grid for c in edited], False
        for crop in sorted(crops, key=lambda c: c.opened):
            box = footprint_box(crop.grid, self.volume)
            if not any(crop.opened >= since and overlap(box, b) for b, since in changed):
                continue
            older = replace(segment, crops=tuple(c for c in crops if c.opened < crop.opened))
            replayed, ran = self._replay(older, crop)
            crops[crops.index(crop)] = replayed
            changed.append((box, crop.opened))
            if all(crop.grid is not grid for grid in grids):
                grids.append(crop.grid)
            encoder_ran |= ran
        return replace(segment, crops=tuple(crops)), grids, encoder_ran

    def _replay(self, older: SegmentState, crop: CropState) -> tuple[CropState, bool]:
        """The crop had its clicks been placed one step after another in the segment ``older``
        (the crops opened before it, and the base): a user's click is one step, the points of a
        drawn prompt one step together, as they were placed."""
        first = crop.prior
        if first is None:
            first = _with_prior(self.volume, crop, mask_prompt(self.volume, older, crop.grid))
        state = replace(crop, clicks=(), logits=first)
        encoder_ran = False
        for count in _step_ends(crop.clicks):
            state, ran = self._predict(state, crop.clicks[:count])
            encoder_ran |= ran
        return state, encoder_ran

    def _predict(self, crop: CropState, clicks: tuple[Click, ...]) -> tuple[CropState, bool]:
        """The crop after a decode of ``clicks`` with its logits as the mask prompt."""
        points, labels = decoder_prompt(crop.grid, clicks)
        if crop.text is not None:
            # A text crop: the clicks with the text's prompts (the click path alone, from the
            # text's logits as mask prompt, loses the text's mask).
            features, encoder_ran = self.text_features(crop.grid)
            logits = self.predictor.decode_text(features, crop.text, crop.logits, points, labels)
            return replace(crop, clicks=clicks, logits=squeezed_logits(logits)), encoder_ran
        embedding, encoder_ran = self.embedding(crop.grid)
        logits = self.predictor.decode(embedding, points, labels, crop.logits)
        return replace(crop, clicks=clicks, logits=squeezed_logits(logits)), encoder_ran


class HeldFeatures:
    """A crop's text features in the embedding cache, sized as the cache counts (``nbytes``)."""

    def __init__(self, features: Any) -> None:
        self.features = features
        tensors = [features.embedding, *features.levels]
        self.nbytes = sum(int(getattr(t, "nbytes", 0)) for t in tensors)


def _with_prior(volume: Volume, crop: CropState, prompt: np.ndarray | None) -> np.ndarray | None:
    """A crop's first mask prompt: the segment there, with its box's prior if a box bounds it."""
    return prompt if crop.bound is None else box_prior(volume, crop.bound, crop.grid, prompt)


def _step_ends(clicks: tuple[Click, ...]) -> list[int]:
    """How many of a crop's clicks each decode step had: a click its user placed is a step of
    its own, the consecutive points of one drawn prompt one step."""
    ends = []
    for index, click in enumerate(clicks):
        following = clicks[index + 1] if index + 1 < len(clicks) else None
        if following is None or click.prompt_id is None or following.prompt_id != click.prompt_id:
            ends.append(index + 1)
    return ends


def squeezed_logits(logits: Any) -> Any:
    """Drop leading singleton axes so logits are ``(n, n, n)``."""
    while logits.ndim > 3 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.ndim != 3 or len(set(logits.shape)) != 1:
        raise ValueError(
            f"a predictor must return cubic logits (n, n, n), got {tuple(logits.shape)}"
        )
    return logits
