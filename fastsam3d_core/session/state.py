"""Click state of a session: immutable dataclasses, replaced on every edit, never patched."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..geometry import CropGrid

# Colours for new segments (RGB, 0-1), cycled in order.
SEGMENT_COLORS = (
    (0.95, 0.55, 0.15),
    (0.20, 0.70, 0.30),
    (0.20, 0.50, 0.90),
    (0.90, 0.25, 0.30),
    (0.65, 0.40, 0.85),
    (0.95, 0.85, 0.20),
)


@dataclass(frozen=True)
class Click:
    """One point prompt, in the one form every layer passes on: where, which polarity, which click.

    Attributes:
        point_ras: (R, A, S) mm, stored as three floats whatever sequence or array is given, so
            that clicks compare and hash by value.
        positive: True for an object point, False for a background point.
        click_id: the click's identity, given by the caller (e.g. the id a front end keeps on
            its own point, such as a markups control point) or None. Every click a session holds
            has one (the session makes one up for a click given without) and keeps it while the
            click exists, also when it is moved or its edit is undone and redone, so a front end
            ties a click to its point by id alone, never by position.
        prompt_id: for a point the session derived from a drawn prompt (see :class:`Prompt`),
            that prompt's id; None for a point the user placed.
        role: ``"point"``; or ``"box-low"``/``"box-high"`` for the corners of a box given to a
            model that learned box corners (decoder labels 2 and 3, as in SAM).
    """

    point_ras: tuple[float, float, float]
    positive: bool = True
    click_id: str | None = None
    prompt_id: str | None = None
    role: str = "point"

    def __post_init__(self) -> None:
        point = np.asarray(self.point_ras, dtype=np.float64).reshape(-1)
        if point.shape != (3,):
            raise ValueError(f"a click's point must be (R, A, S), got {self.point_ras!r}")
        object.__setattr__(self, "point_ras", (float(point[0]), float(point[1]), float(point[2])))
        object.__setattr__(self, "positive", bool(self.positive))


# Decoder labels of box corners: after 0 (negative) and 1 (positive), SAM's numbering.
BOX_CORNER_LABELS = {"box-low": 2, "box-high": 3}


def _label(click: Click) -> int:
    return BOX_CORNER_LABELS.get(click.role, int(click.positive))


def decoder_prompt(grid: CropGrid, clicks: tuple[Click, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Clicks as a decoder takes them in a crop: points float32 ``(N, 3)``, continuous crop voxel
    indices (d0, d1, d2); labels int64 ``(N,)``, 1 positive and 0 negative."""
    points = np.array(
        [grid.to_crop(np.asarray(click.point_ras)) for click in clicks], dtype=np.float32
    ).reshape(-1, 3)
    labels = np.array([_label(click) for click in clicks], dtype=np.int64)
    low, high = labels == BOX_CORNER_LABELS["box-low"], labels == BOX_CORNER_LABELS["box-high"]
    if low.sum() == 1 and high.sum() == 1:
        # The crop's axes may run against the volume's (a crop follows RAS): its low corner is
        # the smaller crop index along each axis, whichever volume corner gave it.
        corners = points[low | high]
        points[low], points[high] = corners.min(axis=0), corners.max(axis=0)
    return points, labels


@dataclass(frozen=True, eq=False)
class CropState:
    """The clicks placed in one crop and the crop's latest logits (fed back as mask prompt).

    ``opened`` numbers the crops of a session in the order they were opened: a crop's first mask
    prompt was the segment as the crops opened before it made it.

    ``bound`` is set on a crop a positive box opened: the box (see :class:`Bound`). The crop
    then decides the segment's voxels inside the box only, and takes only clicks that lie in it.

    ``prior`` is set on a crop a text prompt opened: the text's logits there (as ``logits``).
    Its clicks start from them instead of the segment's mask prompt, and the crop stays when
    its last click is removed. ``text`` is then the text's embedding where the predictor decodes
    clicks with it (``decode_text`` with points: a model's text path), else None.
    """

    grid: CropGrid
    clicks: tuple[Click, ...] = ()
    logits: Any | None = None
    opened: int = 0
    bound: Bound | None = None
    prior: Any | None = None
    text: Any | None = None


@dataclass(frozen=True, eq=False)
class Bound:
    """The volume box ``[lo, hi)`` (int (3,) indices (i, j, k)) of a positive box, the prompt
    ``prompt_id``, that bounds the crops it opened."""

    prompt_id: str
    lo: np.ndarray
    hi: np.ndarray

    def contains_index(self, index: np.ndarray) -> bool:
        """Whether a continuous volume index lies in one of the box's voxels (edges at ±0.5)."""
        return bool(np.all(index >= self.lo - 0.5) and np.all(index < self.hi - 0.5))


@dataclass(frozen=True, eq=False)
class Override:
    """Voxels a drawn prompt sets exactly, whatever the model says: inside the volume box
    ``[lo, hi)`` (int (3,) indices (i, j, k)), where ``domain`` holds the segment is ``values``
    (both bool ``(hi - lo)``, read-only, possibly broadcast)."""

    lo: np.ndarray
    hi: np.ndarray
    values: np.ndarray
    domain: np.ndarray


@dataclass(frozen=True)
class Prompt:
    """A drawn prompt, as its user drew it: one interaction (one undo step, moved or removed as
    one).

    Attributes:
        kind: ``"box"``, ``"scribble"`` or ``"lasso"``.
        points_ras: RAS mm: a box's two opposite corners, a scribble's stroke, a lasso's
            contour.
        positive: True adds to the segment, False takes away.
        prompt_id: its identity, as :attr:`Click.click_id` (ids of clicks and prompts of a
            segment never coincide).
        override: the voxels it sets exactly (a lasso's slice, a negative box), or None.
        crops_before: how many crops the session had opened before it: the crops opened after
            it took its exact voxels into their first mask prompts.
    """

    kind: str
    points_ras: tuple[tuple[float, float, float], ...]
    positive: bool
    prompt_id: str
    override: Override | None = field(default=None, compare=False, repr=False)
    crops_before: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class SegmentState:
    """One segment: its crops, least recently edited first (the latest wins where crops overlap).

    Attributes:
        base: for a segment that existed before the session (e.g. painted by hand), its voxels
            then, bool ``(I, J, K)`` on the volume's grid; read-only, shared between states.
            Voxels that no crop covers keep it, and new crops start from it (with the
            segment's other crops) as their mask prompt.
            None for a segment the session started empty.
    """

    segment_id: int
    name: str
    color: tuple[float, float, float]
    crops: tuple[CropState, ...] = ()
    base: np.ndarray | None = field(default=None, compare=False, repr=False)
    prompts: tuple[Prompt, ...] = ()

    @property
    def overrides(self) -> list[Override]:
        """The voxels its prompts set exactly, the oldest first (a later one wins)."""
        return [prompt.override for prompt in self.prompts if prompt.override is not None]

    def with_crop_last(self, index: int | None, crop: CropState) -> SegmentState:
        """Replace crop ``index`` (or add a new one) and make it the most recent."""
        others = tuple(c for i, c in enumerate(self.crops) if i != index)
        return replace(self, crops=others + (crop,))

    def clicks(self) -> list[tuple[int, int]]:
        """(crop index, click index) of every click its user placed (not those derived from a
        drawn prompt), in crop order."""
        return [
            (c, k)
            for c, crop in enumerate(self.crops)
            for k, click in enumerate(crop.clicks)
            if click.prompt_id is None
        ]

    def click_at(self, index: int) -> tuple[int, int]:
        """(crop index, click index) of its user's click ``index`` (see :meth:`clicks`).

        Raises:
            IndexError: no such click.
        """
        pairs = self.clicks()
        if not -len(pairs) <= index < len(pairs):
            raise IndexError(f"no click {index}: the segment has {len(pairs)}")
        return pairs[index]

    def prompt(self, prompt_id: str) -> Prompt | None:
        """The drawn prompt with this id, or None."""
        return next((p for p in self.prompts if p.prompt_id == prompt_id), None)


@dataclass(frozen=True)
class SessionState:
    """All segments, by id order."""

    segments: tuple[SegmentState, ...] = field(default_factory=tuple)

    def segment(self, segment_id: int) -> SegmentState:
        for segment in self.segments:
            if segment.segment_id == segment_id:
                return segment
        raise KeyError(f"no segment with id {segment_id}")

    def locate_click(self, click_id: str) -> tuple[SegmentState, int, int]:
        """The segment holding the user's click with this id, and its (crop index, click index).

        Raises:
            KeyError: no segment holds it.
        """
        for segment in self.segments:
            for crop_index, click_index in segment.clicks():
                if segment.crops[crop_index].clicks[click_index].click_id == click_id:
                    return segment, crop_index, click_index
        raise KeyError(f"that point is no longer part of the session (click {click_id!r})")

    def prompt_segment(self, prompt_id: str) -> SegmentState:
        """The segment holding a drawn prompt.

        Raises:
            KeyError: none does.
        """
        for segment in self.segments:
            if segment.prompt(prompt_id) is not None:
                return segment
        raise KeyError(f"that drawing is no longer part of the session (prompt {prompt_id!r})")

    def with_segment(self, new: SegmentState) -> SessionState:
        return SessionState(
            tuple(new if s.segment_id == new.segment_id else s for s in self.segments)
        )


@dataclass(frozen=True, eq=False)
class MaskPatch:
    """A box of one segment's mask before and after an edit, for undo and redo.

    Both versions are kept packed (``np.packbits(..., axis=-1)``): an eighth of the memory of
    the voxels (a click's box is millions of voxels; a hundred undo steps are kept), and the
    click's own voxels need no fresh memory kept beyond the click (a fresh page costs a page
    fault).

    Attributes:
        segment_id: the segment.
        slices: the box, volume indices (i, j, k).
        before_bits, after_bits: the box before and after the edit, packed; see
            :attr:`before` and :attr:`after`.
    """

    segment_id: int
    slices: tuple[slice, slice, slice]
    before_bits: np.ndarray
    after_bits: np.ndarray

    @property
    def before(self) -> np.ndarray:
        """The box before the edit, uint8 0/1 ``(hi - lo)``: a new array."""
        return np.unpackbits(self.before_bits, axis=-1, count=self._length)

    @property
    def after(self) -> np.ndarray:
        """The box after the edit, uint8 0/1 ``(hi - lo)``: a new array."""
        return np.unpackbits(self.after_bits, axis=-1, count=self._length)

    @property
    def _length(self) -> int:
        return self.slices[2].stop - self.slices[2].start


@dataclass(frozen=True, eq=False)
class Edit:
    """One undoable step: the states around it and the mask boxes it changed."""

    before: SessionState
    after: SessionState
    patches: tuple[MaskPatch, ...]
