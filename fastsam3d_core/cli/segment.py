"""``fastsam3d segment``: clicks in, a segmentation file out.

The command parses its points and options, and runs :func:`fastsam3d_core.segment_job.segment_file`
with a model loaded here or the encoder service's predictor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..segment_job import PointPrompt, output_kind, segment_file
from .runtime import AdapterOption, PrecisionOption, ServerOption, TokenOption

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
) -> list[PointPrompt]:
    """Every point with where it comes from (for messages), checked for a positive one."""
    from ..io.markups import read_markups_points
    from ..session import Click

    if len(points) > MAX_POINTS:
        raise typer.BadParameter(
            f"given {len(points)} times; at most {MAX_POINTS} points are taken",
            param_hint="--point",
        )
    prompts = [PointPrompt(Click(*parse_point(text)), f"--point {text}") for text in points]
    for path, positive in ((positive_file, True), (negative_file, False)):
        if path is not None:
            read = read_markups_points(path).tolist()
            _check_point_count(path, len(read), len(prompts))
            for k, p in enumerate(read, 1):
                prompts.append(PointPrompt(Click(p, positive), f"{path}: point {k}"))
    if not prompts:
        raise typer.BadParameter("give at least one --point, --points or --negative-points")
    if not any(prompt.click.positive for prompt in prompts):
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
    try:
        return output_kind(output)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--output") from None


def _predictor(
    model: str,
    weights: Optional[Path],
    adapter: Optional[Path],
    precision: str,
    device: str,
    server: Optional[str],
    token: Optional[str],
) -> Callable[[], Any]:
    """What opens the model: loaded here on ``--device``, or the ``--server``'s encoder with a
    decoder here (then ``--device`` is not for this machine to choose)."""
    from .runtime import load_model, resolve_device

    if server is None:
        torch_device = resolve_device(device)
        return lambda: load_model(model, weights, torch_device, adapter, precision)
    if device != "auto":
        raise typer.BadParameter(
            "the encoder runs on the --server; the decoder here runs on the CPU",
            param_hint="--device",
        )

    def connect() -> Any:
        from ..serving import RemotePredictor, display_url

        typer.echo(f"connecting to {display_url(server)} for {model} ...")
        decoder = weights if weights is not None else "auto"
        return RemotePredictor(server, model=model, token=token, decoder=decoder)

    return connect


# The options whose declarations are long, named here to keep segment() short.
_OutputOption = Annotated[
    Path,
    typer.Option(
        "--output", "-o", metavar="OUT", help="OUT.seg.nrrd, or a labelmap .nrrd/.nii.gz."
    ),
]
_ImageArgument = Annotated[
    Optional[Path],
    typer.Argument(
        metavar="IMAGE",
        show_default=False,
        help="Image: NRRD, NIfTI, MHA/MHD or a DICOM folder.",
    ),
]
_PointOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--point",
        "-p",
        metavar="R,A,S[:neg]",
        help="A point in RAS mm (repeatable); append :neg for a negative one.",
    ),
]
_PointsOption = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE.mrk.json", help="Slicer markups file with positive points."),
]
_NegativePointsOption = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE.mrk.json", help="Slicer markups file with negative points."),
]
_ModelOption = Annotated[str, typer.Option(metavar="NAME", help="fastsam3d or sam-med3d-turbo.")]
_WeightsOption = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FILE",
        help="Local checkpoint; default: the cached download. With --server, the "
        "decoder's weights (a checkpoint, or an .onnx export) instead of the service's.",
    ),
]
_DeviceOption = Annotated[
    str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:1 or mps.")
]
_NameOption = Annotated[str, typer.Option(metavar="NAME", help="Name of the segment.")]
_ExampleOption = Annotated[
    bool,
    typer.Option(
        "--example",
        help="Segment the spleen of the example CT shipped with the package (instead of "
        "IMAGE; the point is preset).",
    ),
]


def segment(
    output: _OutputOption,
    image: _ImageArgument = None,
    point: _PointOption = None,
    points: _PointsOption = None,
    negative_points: _NegativePointsOption = None,
    model: _ModelOption = "fastsam3d",
    weights: _WeightsOption = None,
    adapter: AdapterOption = None,
    precision: PrecisionOption = "auto",
    device: _DeviceOption = "auto",
    name: _NameOption = "Segment_1",
    server: ServerOption = None,
    token: TokenOption = None,
    example: _ExampleOption = False,
) -> None:
    """Segment one object from point prompts and write it with the image's geometry."""
    image, point = _image_and_points(image, point or [], example, points, negative_points)
    _output_kind(output)
    prompts = _prompts(point, points, negative_points)
    open_predictor = _predictor(model, weights, adapter, precision, device, server, token)
    segment_file(image, prompts, output, open_predictor, name=name,
                 inputs=(points, negative_points, weights, adapter), say=typer.echo)  # fmt: skip


def _image_and_points(
    image: Optional[Path],
    point: list[str],
    example: bool,
    points: Optional[Path],
    negative_points: Optional[Path],
) -> tuple[Path, list[str]]:
    """The image to read, and the points: with ``--example``, the example CT and its point."""
    path = image_or_example(image, example, "segment")
    if not example:
        return path, point
    typer.echo(f"example: {path.name} (TotalSegmentator example CT, Apache-2.0)")
    if point or points or negative_points:
        return path, point
    return path, [example_point()]


def image_or_example(image: Optional[Path], example: bool, verb: str) -> Path:
    """IMAGE, or with ``--example`` the example CT shipped with the package; one line when the
    command got neither or both (``verb``: what the command does with the image)."""
    if not example:
        if image is None:
            raise typer.BadParameter(f"give the IMAGE to {verb} (or --example)", param_hint="IMAGE")
        return image
    if image is not None:
        raise typer.BadParameter(f"give IMAGE ({image}) or --example, not both")
    from ..examples import example_ct_path

    return example_ct_path()


def example_point() -> str:
    """The example CT's point inside the spleen, as ``--point`` and ``--focus`` take it."""
    from ..examples import SPLEEN_POINT_RAS

    return ",".join(f"{value:g}" for value in SPLEEN_POINT_RAS)
