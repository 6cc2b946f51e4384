"""``fastsam3d segment``: clicks in, a segmentation file out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..io.suffixes import LABELMAP_SUFFIXES
from .runtime import AdapterOption, PrecisionOption, ServerOption, TokenOption

if TYPE_CHECKING:
    from ..geometry import Volume

SEGMENTATION_SUFFIX = ".seg.nrrd"

Prompt = tuple[tuple[float, float, float], bool]
# Each point runs the model (a third of a second or more on a CPU): 10,000 points from a file
# exported by mistake would run for an hour. Interactive segmentation takes tens of points.
MAX_POINTS = 200


def parse_point(text: str) -> Prompt:
    """``"R,A,S"`` or ``"R,A,S:neg"`` (RAS mm) to a point and its polarity."""
    import math

    coordinates, _, flag = text.partition(":")
    if flag not in ("", "neg", "pos"):
        raise typer.BadParameter(
            f"{text!r}: the suffix must be ':neg' or ':pos'", param_hint="--point"
        )
    try:
        r, a, s = (float(value) for value in coordinates.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not R,A,S in millimetres, e.g. -20,15.5,30", param_hint="--point"
        ) from None
    if not all(math.isfinite(value) for value in (r, a, s)):
        raise typer.BadParameter(
            f"{text!r}: coordinates must be finite numbers", param_hint="--point"
        )
    return (r, a, s), flag != "neg"


def _prompts(
    points: list[str], positive_file: Optional[Path], negative_file: Optional[Path]
) -> list[tuple[str, Prompt]]:
    """Every point with where it comes from (for messages), checked for a positive one."""
    from ..io.markups import read_markups_points

    if len(points) > MAX_POINTS:
        raise typer.BadParameter(
            f"given {len(points)} times; at most {MAX_POINTS} points are taken",
            param_hint="--point",
        )
    prompts = [(f"--point {text}", parse_point(text)) for text in points]
    for path, positive in ((positive_file, True), (negative_file, False)):
        if path is not None:
            read = read_markups_points(path).tolist()
            _check_point_count(path, len(read), len(prompts))
            for k, p in enumerate(read, 1):
                prompts.append((f"{path}: point {k}", ((p[0], p[1], p[2]), positive)))
    if not prompts:
        raise typer.BadParameter("give at least one --point, --points or --negative-points")
    if not any(positive for _, (_, positive) in prompts):
        raise typer.BadParameter(
            "give at least one positive point (a --point without :neg, or --points FILE): "
            "negative points only remove voxels from an object"
        )
    return prompts


def _check_point_count(path: Path, in_file: int, before: int) -> None:
    if before + in_file > MAX_POINTS:
        in_all = f", {before + in_file} in all" if before else ""
        raise ValueError(
            f"{path}: {in_file} points{in_all}; at most {MAX_POINTS} points are taken (each one "
            "runs the model): give fewer"
        )


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


def _checked_volume(image: Path, prompts: list[tuple[str, Prompt]]) -> Volume:
    """The image, refused (with its name) if the model cannot segment it or a point is outside."""
    from ..geometry import check_segmentable
    from ..session import check_point
    from .runtime import read_image

    volume = read_image(image)
    try:
        check_segmentable(volume)
    except ValueError as error:
        raise ValueError(f"{image}: {error}") from None
    for source, (position, _) in prompts:
        try:
            check_point(volume, position)
        except ValueError as error:
            raise ValueError(f"{source}: {error} in {image.name}") from None
    return volume


def segment(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", metavar="OUT", help="OUT.seg.nrrd, or a labelmap .nrrd/.nii.gz."
        ),
    ],
    image: Annotated[
        Optional[Path],
        typer.Argument(
            metavar="IMAGE",
            show_default=False,
            help="Image: NRRD, NIfTI, MHA/MHD or a DICOM folder.",
        ),
    ] = None,
    point: Annotated[
        Optional[list[str]],
        typer.Option(
            "--point",
            "-p",
            metavar="R,A,S[:neg]",
            help="A point in RAS mm (repeatable); append :neg for a negative one.",
        ),
    ] = None,
    points: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE.mrk.json", help="Slicer markups file with positive points."),
    ] = None,
    negative_points: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE.mrk.json", help="Slicer markups file with negative points."),
    ] = None,
    model: Annotated[
        str, typer.Option(metavar="NAME", help="fastsam3d or sam-med3d-turbo.")
    ] = "fastsam3d",
    weights: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            help="Local checkpoint; default: the cached download. With --server, the "
            "decoder's weights (a checkpoint, or an .onnx export) instead of the service's.",
        ),
    ] = None,
    adapter: AdapterOption = None,
    precision: PrecisionOption = "auto",
    device: Annotated[
        str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:1 or mps.")
    ] = "auto",
    name: Annotated[str, typer.Option(metavar="NAME", help="Name of the segment.")] = "Segment_1",
    server: ServerOption = None,
    token: TokenOption = None,
    example: Annotated[
        bool,
        typer.Option(
            "--example",
            help="Segment the spleen of the example CT shipped with the package (instead of "
            "IMAGE; the point is preset).",
        ),
    ] = False,
) -> None:
    """Segment one object from point prompts and write it with the image's geometry."""
    from ..io import (
        Segment,
        check_labelmap_format,
        check_output_path,
        write_labelmap,
        write_segmentation,
    )
    from ..session import Session
    from .runtime import load_model, resolve_device

    image, point = _image_and_points(image, point or [], example, points, negative_points)
    kind = _output_kind(output)
    prompts = _prompts(point, points, negative_points)
    check_output_path(output, inputs=(image, points, negative_points, weights, adapter))
    if server is None:
        torch_device = resolve_device(device)
    elif device != "auto":
        raise typer.BadParameter(
            "the encoder runs on the --server; the decoder here runs on the CPU",
            param_hint="--device",
        )
    volume = _checked_volume(image, prompts)
    if kind == "labelmap":
        check_labelmap_format(output, volume.ijk_to_ras)
    if server is None:
        sam = load_model(model, weights, torch_device, adapter, precision)
        session = Session(volume, sam)
    else:
        from ..serving import RemotePredictor, display_url

        typer.echo(f"connecting to {display_url(server)} for {model} ...")
        decoder = weights if weights is not None else "auto"
        session = Session(
            volume, RemotePredictor(server, model=model, token=token, decoder=decoder)
        )
    for number, (_, (position, positive)) in enumerate(prompts, 1):
        start = time.perf_counter()
        result = session.add_point(position, positive)
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


def _image_and_points(
    image: Optional[Path],
    point: list[str],
    example: bool,
    points: Optional[Path],
    negative_points: Optional[Path],
) -> tuple[Path, list[str]]:
    """The image to read, and the points: with ``--example``, the example CT and its point."""
    if not example:
        if image is None:
            raise typer.BadParameter("give the IMAGE to segment (or --example)", param_hint="IMAGE")
        return image, point
    if image is not None:
        raise typer.BadParameter(f"give IMAGE ({image}) or --example, not both")
    from ..examples import SPLEEN_POINT_RAS, example_ct_path

    path = example_ct_path()
    typer.echo(f"example: {path.name} (TotalSegmentator example CT, Apache-2.0)")
    if point or points or negative_points:
        return path, point
    return path, [",".join(f"{value:g}" for value in SPLEEN_POINT_RAS)]
