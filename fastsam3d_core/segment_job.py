"""One object segmented from prompts in an image file, written with the image's geometry: what
``fastsam3d segment`` does once its options are parsed, callable from Python::

    from fastsam3d_core.segment_job import BoxPrompt, PointPrompt, segment_file
    from fastsam3d_core.session import Click
    from fastsam3d_core.weights.recipe import ModelRecipe

    prompts = [BoxPrompt((-60.0, 90.0, 140.0), (-10.0, 140.0, 180.0)),
               PointPrompt(Click((-20.0, 115.5, 160.0)))]
    segment_file("ct.nii.gz", prompts, "spleen.seg.nrrd",
                 lambda: ModelRecipe("fastsam3d").load().model, say=print)

A prompt is a :class:`PointPrompt`, :class:`BoxPrompt`, :class:`ScribblePrompt` or
:class:`LassoPrompt` (each one interaction of the :class:`~fastsam3d_core.session.Session`).
The image is read and every prompt checked against it before the model is opened, so that a bad
input is refused before the slow part.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Union

from .io.suffixes import LABELMAP_SUFFIXES, SEGMENTATION_SUFFIX

if TYPE_CHECKING:
    from .geometry import Volume
    from .session import Click, Result, Session


@dataclass(frozen=True)
class PointPrompt:
    """One click, and where it came from.

    Attributes:
        click: the session's own click (:class:`~fastsam3d_core.session.Click`): (R, A, S) in
            millimetres, positive (adds to the object) or not, and its id (None: made up).
        source: where it came from, for messages ("--point -20,15.5,30",
            "points.mrk.json: point 2"); empty: "point N".
    """

    click: Click
    source: str = ""
    kind: ClassVar[str] = "point"

    @property
    def positive(self) -> bool:
        return bool(self.click.positive)

    def check(self, volume: Volume) -> None:
        """Raises ValueError (one line) where the point is not inside ``volume``."""
        from .session import check_point

        check_point(volume, self.click.point_ras)

    def run(self, session: Session) -> str:
        """Add it to ``session``; what ran."""
        click = self.click
        result = session.add_point(click.point_ras, click.positive, click.click_id)
        return _stage(result)

    def describe(self) -> str:
        return str(self.click.point_ras)


@dataclass(frozen=True, eq=False)
class BoxPrompt:
    """A box: the object lies inside (positive) or what lies inside is removed (negative).

    Attributes:
        corner_a_ras, corner_b_ras: two opposite corners, (R, A, S) mm each; along an axis
            where both are alike (a rectangle drawn on a slice), one slice.
        positive: True: the object lies inside, and the result never leaves the box.
        source: where it came from, for messages ("--box ..."); empty: "box N".
    """

    corner_a_ras: Sequence[float]
    corner_b_ras: Sequence[float]
    positive: bool = True
    source: str = ""
    kind: ClassVar[str] = "box"

    def check(self, volume: Volume) -> None:
        """Raises ValueError (one line) for a box with no size, or outside ``volume``."""
        from .session.shapes import box_voxels

        box_voxels(volume, self.corner_a_ras, self.corner_b_ras)

    def run(self, session: Session) -> str:
        result = session.add_box(self.corner_a_ras, self.corner_b_ras, self.positive)
        return _stage(result) if self.positive else "cleared inside, no model"

    def describe(self) -> str:
        return f"{_rounded(self.corner_a_ras)} to {_rounded(self.corner_b_ras)}"


@dataclass(frozen=True, eq=False)
class ScribblePrompt:
    """An open stroke: points sampled along it, all of its sign, as one interaction.

    Attributes:
        points_ras: ``(N, 3)`` RAS mm along the stroke, N >= 2.
        positive: True: along the object; False: along what is not the object.
        source: where it came from, for messages ("stroke.mrk.json"); empty: "scribble N".
    """

    points_ras: Any
    positive: bool = True
    source: str = ""
    kind: ClassVar[str] = "scribble"

    def check(self, volume: Volume) -> None:
        """Raises ValueError (one line) for fewer than two distinct points, or none inside."""
        from .session.shapes import scribble_samples

        scribble_samples(volume, self.points_ras)

    def run(self, session: Session) -> str:
        return _stage(session.add_scribble(self.points_ras, self.positive))

    def describe(self) -> str:
        return _curve_description(self.points_ras, self.source)


@dataclass(frozen=True, eq=False)
class LassoPrompt:
    """A closed contour on one slice: there the segment becomes exactly the filled contour
    (positive) or loses it (negative); points inside carry the change into 3-D.

    Attributes:
        contour_ras: ``(N, 3)`` RAS mm, N >= 3, on one slice of the volume, not crossing
            itself.
        positive: True: the contour encloses the object on its slice.
        source: where it came from, for messages ("outline.mrk.json"); empty: "lasso N".
    """

    contour_ras: Any
    positive: bool = True
    source: str = ""
    kind: ClassVar[str] = "lasso"

    def check(self, volume: Volume) -> None:
        """Raises ValueError (one line) for a contour that is not on one slice, crosses itself
        or encloses no voxel of ``volume``."""
        from .session.shapes import lasso_fill

        lasso_fill(volume, self.contour_ras)

    def run(self, session: Session) -> str:
        return _stage(session.add_lasso(self.contour_ras, self.positive))

    def describe(self) -> str:
        return _curve_description(self.contour_ras, self.source)


# Any of them: what segment_file takes.
SegmentPrompt = Union[PointPrompt, BoxPrompt, ScribblePrompt, LassoPrompt]


@dataclass(frozen=True)
class SegmentedFile:
    """What :func:`segment_file` wrote: the file, its kind (``"segmentation"``: a Slicer
    ``.seg.nrrd``; ``"labelmap"``) and the object's size in voxels."""

    output: Path
    kind: str
    voxels: int


def output_kind(output: Path) -> str:
    """``"segmentation"`` for a ``.seg.nrrd`` name, ``"labelmap"`` for a labelmap's.

    Raises:
        ValueError: another suffix (the message lists those written).
    """
    name = output.name.lower()
    if name.endswith(SEGMENTATION_SUFFIX):
        return "segmentation"
    if name.endswith(LABELMAP_SUFFIXES):
        return "labelmap"
    raise ValueError(
        f"{output.name}: write {SEGMENTATION_SUFFIX} (Slicer segmentation) or a labelmap "
        f"({', '.join(LABELMAP_SUFFIXES)})"
    )


def segment_file(
    image: str | Path,
    prompts: Sequence[SegmentPrompt],
    output: str | Path,
    open_predictor: Callable[[], Any],
    *,
    name: str = "Segment_1",
    inputs: Iterable[str | Path | None] = (),
    say: Callable[[str], None] | None = None,
) -> SegmentedFile:
    """Segment one object of ``image`` (NRRD, NIfTI, MHA/MHD or a DICOM folder) from
    ``prompts``, in order, and write it to ``output`` (:func:`output_kind`).

    Args:
        open_predictor: returns the model (a :class:`~fastsam3d_core.models.Sam3D`) or a
            predictor (e.g. :class:`~fastsam3d_core.serving.RemotePredictor`); called once the
            image and prompts are checked.
        name: the segment's name in a ``.seg.nrrd``.
        inputs: other files the caller read (markups, weights): the output must not be one.
        say: told what happens: reading, each prompt's time, the file written.

    Raises:
        ValueError: the output's kind, an image the model cannot segment, a prompt that does
            not fit it (see each prompt's ``check``), or an output that would replace an input.
        OSError: the output's folder cannot be written.
    """
    from .io import (
        Segment,
        check_labelmap_format,
        check_output_path,
        write_labelmap,
        write_segmentation,
    )
    from .session import Session

    say = say or _quiet
    image, output = Path(image), Path(output)
    kind = output_kind(output)
    check_output_path(output, inputs=(image, *inputs))
    volume = read_checked_volume(image, prompts, say)
    if kind == "labelmap":
        check_labelmap_format(output, volume.ijk_to_ras)
    session = Session(volume, open_predictor())
    for number, prompt in enumerate(prompts, 1):
        start = time.perf_counter()
        stage = prompt.run(session)
        say(f"{prompt.kind} {number}/{len(prompts)} {'+' if prompt.positive else '-'} "
            f"{prompt.describe()}: {stage}, {time.perf_counter() - start:.2f} s")  # fmt: skip
    mask = session.mask()
    if kind == "segmentation":
        color = session.current_segment.color
        write_segmentation(output, [Segment(name, color, mask)], volume)
    else:
        write_labelmap(output, mask, volume)
    voxels = int(mask.sum())
    say(f"wrote {output} ({voxels} voxels)")
    return SegmentedFile(output, kind, voxels)


def read_checked_volume(
    image: Path, prompts: Sequence[SegmentPrompt], say: Callable[[str], None] | None = None
) -> Volume:
    """The image, refused (with its name) if the model cannot segment it or a prompt does not
    fit it (a point outside, a box of no size, a lasso crossing itself ...).

    Raises:
        VolumeReadError, ValueError: in one line each.
    """
    from .geometry import check_segmentable
    from .io import read_volume

    (say or _quiet)(f"reading {image} ...")
    volume = read_volume(image)
    try:
        check_segmentable(volume)
    except ValueError as error:
        raise ValueError(f"{image}: {error}") from None
    for number, prompt in enumerate(prompts, 1):
        try:
            prompt.check(volume)
        except ValueError as error:
            source = prompt.source or f"{prompt.kind} {number}"
            raise ValueError(f"{source} (on {image.name}): {error}") from None
    return volume


def _stage(result: Result) -> str:
    return "encoder + decoder" if result.encoder_ran else "decoder"


def _curve_description(points: Any, source: str) -> str:
    return f"({len(points)} points{', ' + source if source else ''})"


def _rounded(point: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(value):g}" for value in point) + ")"


def _quiet(message: str) -> None:
    pass
