"""One object segmented from prompts in an image file, written with the image's geometry: what
``fastsam3d segment`` does once its options are parsed, callable from Python::

    from fastsam3d_core.segment_job import BoxPrompt, PointPrompt, segment_file
    from fastsam3d_core.session import Click
    from fastsam3d_core.weights.recipe import ModelRecipe

    prompts = [BoxPrompt((-60.0, 90.0, 140.0), (-10.0, 140.0, 180.0)),
               PointPrompt(Click((-20.0, 115.5, 160.0)))]
    segment_file("ct.nii.gz", prompts, "spleen.seg.nrrd",
                 lambda: ModelRecipe("fastsam3d").load().model, say=print)

A prompt is a :class:`PointPrompt`, :class:`BoxPrompt`, :class:`ScribblePrompt`,
:class:`LassoPrompt` or :class:`TextPrompt` (each one interaction of the
:class:`~fastsam3d_core.session.Session`).
The image is read and every prompt checked against it before the model is opened, so that a bad
input is refused before the slow part.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Union

from .segment_outputs import SegmentedFile, check_outputs, output_kind, write_outputs

if TYPE_CHECKING:
    from .geometry import Volume
    from .io.dicom_seg import SegAlgorithm
    from .io.dicom_source import DicomSeries
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


@dataclass(frozen=True)
class TextPrompt:
    """A structure's name: a new segment, named by it, over the whole image (RefSAM3D's text
    prompt; needs a model with a text path, i.e. its adapter file from ``fastsam3d finetune
    --text``). The prompts after it refine that segment.

    Attributes:
        text: the name, e.g. ``"liver"``.
        source: where it came from, for messages ("--text liver"); empty: "text N".
    """

    text: str
    source: str = ""
    kind: ClassVar[str] = "text"
    positive: ClassVar[bool] = True

    def check(self, volume: Volume) -> None:
        """Raises ValueError (one line) for empty text."""
        from .session.text_prompt import checked_text

        checked_text(self.text)

    def run(self, session: Session, vocabulary: Any = None) -> str:
        result = session.add_text(self.text, vocabulary)
        return f"{_stage(result)}, whole image"

    def describe(self) -> str:
        return repr(self.text)


# Any of them: what segment_file takes.
SegmentPrompt = Union[PointPrompt, BoxPrompt, ScribblePrompt, LassoPrompt, TextPrompt]


@dataclass(frozen=True)
class StartSegment:
    """A segment made before, for the session to refine: a DICOM SEG, a ``.seg.nrrd`` or a
    labelmap on the image's grid, and which of its structures (a segment's number, or its name
    in a SEG or ``.seg.nrrd``; a labelmap's value); None: all of them together."""

    path: Path
    choice: int | str | None = None


def segment_file(
    image: str | Path,
    prompts: Sequence[SegmentPrompt],
    output: str | Path | Sequence[str | Path],
    open_predictor: Callable[[], Any],
    *,
    name: str = "Segment_1",
    inputs: Iterable[str | Path | None] = (),
    say: Callable[[str], None] | None = None,
    start: StartSegment | None = None,
    algorithm: Callable[[], SegAlgorithm] | None = None,
    shown: str = "",
    open_vocabulary: Callable[[], Any] | None = None,
) -> SegmentedFile:
    """Segment one object of ``image`` (NRRD, NIfTI, MHA/MHD or a DICOM folder) from
    ``prompts``, in order, and write it to each ``output`` (:func:`output_kind`; a DICOM SEG for
    an image read from DICOM).

    Args:
        open_predictor: returns the model (a :class:`~fastsam3d_core.models.Sam3D`) or a
            predictor (e.g. :class:`~fastsam3d_core.serving.RemotePredictor`); called once the
            image, the prompts and the outputs are checked.
        name: the segment's name in a ``.seg.nrrd`` or SEG.
        inputs: other files the caller read (markups, weights): the output must not be one.
        say: told what happens: reading, each prompt's time, the files written.
        start: the segment to refine (the prompts change it inside their crops).
        algorithm: the model a SEG names (name, version, weights' SHA-256), asked once the
            model has run (its weights are known by then).
        shown: how the image is named in messages (e.g. the DICOMweb URL it was read from).
        open_vocabulary: for the text prompts, returns the names the model knows (a
            :class:`~fastsam3d_core.session.text_prompt.TextVocabulary`); each text is looked
            up before the model opens. None: the predictor embeds text itself.

    Returns:
        The first output written (the others are written the same way). With text prompts,
        each text's segment is written (and the first segment where it holds voxels).

    Raises:
        ValueError: an output's kind, an image the model cannot segment, a prompt that does
            not fit it (see each prompt's ``check``), an output that would replace an input, a
            SEG for an image not read from DICOM or of an empty segmentation.
        OSError: the output's folder cannot be written.
    """
    from .io import Segment, check_output_path
    from .session import Session

    say = say or _quiet
    image = Path(image)
    outputs = [Path(output)] if isinstance(output, (str, Path)) else [Path(o) for o in output]
    for path in outputs:
        output_kind(path)
        check_output_path(path, inputs=(image, *inputs, start and start.path))
    volume = read_checked_volume(image, prompts, say, shown)
    series = check_outputs(outputs, image, volume, shown)
    initial = None if start is None else _start_mask(start, volume, image, series, say)
    texts = [prompt for prompt in prompts if isinstance(prompt, TextPrompt)]
    vocabulary = _checked_vocabulary(texts, open_vocabulary, shown or image.name)
    session = Session(volume, open_predictor(), initial_mask=initial)
    for number, prompt in enumerate(prompts, 1):
        began = time.perf_counter()
        stage = (
            prompt.run(session, vocabulary)
            if isinstance(prompt, TextPrompt)
            else prompt.run(session)
        )
        say(f"{prompt.kind} {number}/{len(prompts)} {'+' if prompt.positive else '-'} "
            f"{prompt.describe()}: {stage}, {time.perf_counter() - began:.2f} s")  # fmt: skip
    if not texts:
        segments = [Segment(name, session.current_segment.color, session.mask())]
    else:  # the first segment only where it holds voxels (--start), then one per text
        kept = [s for s in session.segments if s.segment_id != 1 or session.mask(1).any()]
        segments = [Segment(s.name, s.color, session.mask(s.segment_id)) for s in kept]
    return write_outputs(outputs, segments, volume, series, algorithm, say)[0]


def _checked_vocabulary(texts: list[TextPrompt], open_vocabulary: Any, shown: str) -> Any:
    """The vocabulary of the text prompts, each text looked up in it (one line for the first
    that is not known, naming its source)."""
    if not texts or open_vocabulary is None:
        return None
    vocabulary = open_vocabulary()
    for number, prompt in enumerate(texts, 1):
        try:
            vocabulary.embedding(prompt.text)
        except ValueError as error:
            raise ValueError(f"{prompt.source or f'text {number}'}: {error}") from None
    return vocabulary


def _start_mask(
    start: StartSegment, volume: Volume, image: Path, series: DicomSeries | None, say: Any
) -> Any:
    """The starting segment's voxels on the image's grid (a SEG must reference its series)."""
    from .io.dicom_source import dicom_series_of
    from .io.label_files import read_structure

    if series is None and start.path.name.lower().endswith(".dcm"):
        series = dicom_series_of(image, volume)
    mask = read_structure(start.path, volume, start.choice, series)
    say(f"refining {start.path.name} ({int(mask.sum())} voxels)")
    return mask


def read_checked_volume(
    image: Path,
    prompts: Sequence[SegmentPrompt],
    say: Callable[[str], None] | None = None,
    shown: str = "",
) -> Volume:
    """The image, refused (with its name) if the model cannot segment it or a prompt does not
    fit it (a point outside, a box of no size, a lasso crossing itself ...).

    Raises:
        VolumeReadError, ValueError: in one line each.
    """
    from .geometry import check_segmentable
    from .io import VolumeReadError, read_volume

    (say or _quiet)(f"reading {shown or image} ...")
    try:
        volume = read_volume(image)
    except VolumeReadError as error:
        if not shown:
            raise
        # The folder a DICOMweb series was downloaded to means nothing to the user: its URL does.
        raise VolumeReadError(str(error).replace(str(image), shown)) from None
    try:
        check_segmentable(volume)
    except ValueError as error:
        raise ValueError(f"{shown or image}: {error}") from None
    for number, prompt in enumerate(prompts, 1):
        try:
            prompt.check(volume)
        except ValueError as error:
            source = prompt.source or f"{prompt.kind} {number}"
            raise ValueError(f"{source} (on {shown or image.name}): {error}") from None
    return volume


def _stage(result: Result) -> str:
    return "encoder + decoder" if result.encoder_ran else "decoder"


def _curve_description(points: Any, source: str) -> str:
    return f"({len(points)} points{', ' + source if source else ''})"


def _rounded(point: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(value):g}" for value in point) + ")"


def _quiet(message: str) -> None:
    pass
