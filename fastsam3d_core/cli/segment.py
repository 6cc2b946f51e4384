"""``fastsam3d segment``: prompts in, a segmentation file out.

The command parses its prompts (:mod:`.prompt_options`: points, boxes, scribbles, lassos) and
options, and runs :func:`fastsam3d_core.segment_job.segment_file` with a model loaded here or
the encoder service's predictor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..segment_job import output_kind, segment_file
from .prompt_options import (
    BoxOption,
    LassoOption,
    NegativeLassoOption,
    NegativeScribbleOption,
    PromptOptions,
    ScribbleOption,
    parse_point,
    read_prompts,
)
from .runtime import AdapterOption, PrecisionOption, ServerOption, TokenOption

__all__ = ["example_point", "image_or_example", "parse_point", "segment"]


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
        "IMAGE; without prompts, a point in its spleen).",
    ),
]


def segment(
    output: _OutputOption,
    image: _ImageArgument = None,
    point: _PointOption = None,
    points: _PointsOption = None,
    negative_points: _NegativePointsOption = None,
    box: BoxOption = None,
    scribble: ScribbleOption = None,
    negative_scribble: NegativeScribbleOption = None,
    lasso: LassoOption = None,
    negative_lasso: NegativeLassoOption = None,
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
    """Segment one object from prompts (points, boxes, scribbles, lassos) and write it with the
    image's geometry. Prompts run in this order: boxes, lassos, scribbles, then points."""
    given = PromptOptions(point or [], points, negative_points, box or [], scribble or [],
                          negative_scribble or [], lasso or [], negative_lasso or [])  # fmt: skip
    image = _image_or_example_prompts(image, example, given)
    _output_kind(output)
    prompts = read_prompts(given)
    open_predictor = _predictor(model, weights, adapter, precision, device, server, token)
    segment_file(image, prompts, output, open_predictor, name=name,
                 inputs=(*given.files(), weights, adapter), say=typer.echo)  # fmt: skip


def _image_or_example_prompts(image: Optional[Path], example: bool, given: PromptOptions) -> Path:
    """The image to read: with ``--example``, the example CT, and its spleen point as the
    prompt where none is given."""
    path = image_or_example(image, example, "segment")
    if example:
        typer.echo(f"example: {path.name} (TotalSegmentator example CT, Apache-2.0)")
        if not given.any_given():
            given.points = [example_point()]
    return path


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
