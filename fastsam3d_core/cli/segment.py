"""``fastsam3d segment``: clicks in, a segmentation file out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

SEGMENTATION_SUFFIX = ".seg.nrrd"
LABELMAP_SUFFIXES = (".nrrd", ".nii", ".nii.gz")


def parse_point(text: str) -> tuple[tuple[float, float, float], bool]:
    """``"R,A,S"`` or ``"R,A,S:neg"`` (RAS mm) to a point and its polarity."""
    coordinates, _, flag = text.partition(":")
    if flag not in ("", "neg", "pos"):
        raise typer.BadParameter(f"{text!r}: the suffix must be ':neg' or ':pos'")
    try:
        r, a, s = (float(value) for value in coordinates.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not R,A,S in millimetres") from None
    return (r, a, s), flag != "neg"


def _prompts(
    points: list[str], positive_file: Optional[Path], negative_file: Optional[Path]
) -> list[tuple[tuple[float, float, float], bool]]:
    from ..io.markups import read_markups_points

    prompts = [parse_point(text) for text in points]
    for path, positive in ((positive_file, True), (negative_file, False)):
        if path is not None:
            try:
                prompts += [
                    ((p[0], p[1], p[2]), positive) for p in read_markups_points(path).tolist()
                ]
            except ValueError as error:
                raise typer.BadParameter(str(error)) from None
    if not prompts:
        raise typer.BadParameter("give at least one --point, --points or --negative-points")
    return prompts


def _output_kind(output: Path) -> str:
    name = output.name.lower()
    if name.endswith(SEGMENTATION_SUFFIX):
        return "segmentation"
    if name.endswith(LABELMAP_SUFFIXES):
        return "labelmap"
    raise typer.BadParameter(
        f"{output.name}: write {SEGMENTATION_SUFFIX} (Slicer segmentation) or a labelmap "
        f"({', '.join(LABELMAP_SUFFIXES)})",
        param_hint="--output",
    )


def segment(
    image: Annotated[Path, typer.Argument(help="Image: NRRD, NIfTI, MHA/MHD or a DICOM folder.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="OUT.seg.nrrd, or a labelmap .nrrd/.nii.gz.")
    ],
    point: Annotated[
        Optional[list[str]],
        typer.Option("--point", "-p", help="R,A,S in mm (repeatable); append :neg for negative."),
    ] = None,
    points: Annotated[
        Optional[Path], typer.Option(help="Slicer .mrk.json with positive points.")
    ] = None,
    negative_points: Annotated[
        Optional[Path], typer.Option(help="Slicer .mrk.json with negative points.")
    ] = None,
    model: Annotated[str, typer.Option(help="fastsam3d or sam-med3d-turbo.")] = "fastsam3d",
    weights: Annotated[
        Optional[Path], typer.Option(help="Local checkpoint; default: the cached download.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 or mps.")] = "auto",
    name: Annotated[str, typer.Option(help="Name of the segment.")] = "Segment_1",
) -> None:
    """Segment one object from point prompts and write it with the image's geometry."""
    kind = _output_kind(output)
    prompts = _prompts(point or [], points, negative_points)

    from ..io import Segment, write_labelmap, write_segmentation
    from ..session import Session
    from .runtime import load_model, read_image

    volume = read_image(image)
    sam = load_model(model, weights, device)
    session = Session(volume, sam)
    result = None
    for number, (position, positive) in enumerate(prompts, 1):
        start = time.perf_counter()
        try:
            result = session.add_point(position, positive)
        except ValueError as error:
            raise typer.BadParameter(f"point {number}: {error}") from None
        stage = "encoder + decoder" if result.encoder_ran else "decoder"
        typer.echo(
            f"point {number}/{len(prompts)} {'+' if positive else '-'} {position}: "
            f"{stage}, {time.perf_counter() - start:.2f} s"
        )
    mask = session.mask()
    if kind == "segmentation":
        color = session.current_segment.color
        write_segmentation(output, [Segment(name, color, mask)], volume)
    else:
        write_labelmap(output, mask, volume)
    typer.echo(f"wrote {output} ({int(mask.sum())} voxels)")
