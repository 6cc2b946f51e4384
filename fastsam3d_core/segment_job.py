"""One object segmented from point prompts in an image file, written with the image's geometry:
what ``fastsam3d segment`` does once its options are parsed, callable from Python::

    from fastsam3d_core.segment_job import PointPrompt, segment_file
    from fastsam3d_core.session import Click
    from fastsam3d_core.weights.recipe import ModelRecipe

    segment_file("ct.nii.gz", [PointPrompt(Click((-20.0, 15.5, 30.0)))], "spleen.seg.nrrd",
                 lambda: ModelRecipe("fastsam3d").load().model, say=print)

The image is read and every point checked before the model is opened, so that a bad input is
refused before the slow part.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .io.suffixes import LABELMAP_SUFFIXES, SEGMENTATION_SUFFIX

if TYPE_CHECKING:
    from .geometry import Volume
    from .session import Click


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
    prompts: Sequence[PointPrompt],
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
            image and points are checked.
        name: the segment's name in a ``.seg.nrrd``.
        inputs: other files the caller read (markups, weights): the output must not be one.
        say: told what happens: reading, each point's time, the file written.

    Raises:
        ValueError: the output's kind, an image the model cannot segment, a point outside it,
            or an output that would replace an input.
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
        click = prompt.click
        result = session.add_point(click.point_ras, click.positive, click.click_id)
        stage = "encoder + decoder" if result.encoder_ran else "decoder"
        say(f"point {number}/{len(prompts)} {'+' if click.positive else '-'} "
            f"{click.point_ras}: {stage}, {time.perf_counter() - start:.2f} s")  # fmt: skip
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
    image: Path, prompts: Sequence[PointPrompt], say: Callable[[str], None] | None = None
) -> Volume:
    """The image, refused (with its name) if the model cannot segment it or a point is outside.

    Raises:
        VolumeReadError, ValueError: in one line each.
    """
    from .geometry import check_segmentable
    from .io import read_volume
    from .session import check_point

    (say or _quiet)(f"reading {image} ...")
    volume = read_volume(image)
    try:
        check_segmentable(volume)
    except ValueError as error:
        raise ValueError(f"{image}: {error}") from None
    for number, prompt in enumerate(prompts, 1):
        try:
            check_point(volume, prompt.click.point_ras)
        except ValueError as error:
            source = prompt.source or f"point {number}"
            raise ValueError(f"{source}: {error} in {image.name}") from None
    return volume


def _quiet(message: str) -> None:
    pass
