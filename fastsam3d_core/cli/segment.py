"""``fastsam3d segment``: prompts in, a segmentation file out.

The command parses its prompts (:mod:`.prompt_options`: points, boxes, scribbles, lassos) and
options, and runs :func:`fastsam3d_core.segment_job.segment_file` with a model loaded here or
the encoder service's predictor.
"""

# No `from __future__ import annotations`: typer on Python 3.9 must see the options' Annotated
# metadata as objects, not strings.
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..segment_job import StartSegment, output_kind, segment_file
from .dicomweb_image import is_url, opened_image, outputs_to_write, saying, store_seg
from .dicomweb_options import (
    DicomwebPasswordOption,
    DicomwebTokenOption,
    DicomwebUserOption,
    dicomweb_auth,
)
from .prompt_options import (
    BoxOption,
    LassoOption,
    NegativeLassoOption,
    NegativeScribbleOption,
    PromptOptions,
    ScribbleOption,
    TextModelOption,
    TextOption,
    parse_point,
    read_prompts,
)
from .runtime import AdapterOption, PrecisionOption, ServerOption, TokenOption

__all__ = ["example_point", "image_or_example", "parse_point", "segment"]


def _check_outputs(outputs: list[Path]) -> None:
    try:
        for output in outputs:
            output_kind(output)
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
    decoder here (then ``--device`` is not for this machine to choose). What it opened is kept
    in its ``opened`` list (a SEG names its weights)."""
    from .runtime import resolve_device

    if server is None:
        torch_device = resolve_device(device)

        def load() -> Any:
            from ..weights.recipe import ModelRecipe
            from .runtime import load_recipe

            loaded = load_recipe(ModelRecipe(model, weights, adapter, torch_device, precision))
            load.opened.append(loaded)
            return loaded.model

        load.opened = []
        return load
    if device != "auto":
        raise typer.BadParameter(
            "the encoder runs on the --server; the decoder here runs on the CPU",
            param_hint="--device",
        )

    def connect() -> Any:
        from ..serving import RemotePredictor, display_url

        typer.echo(f"connecting to {display_url(server)} for {model} ...")
        decoder = weights if weights is not None else "auto"
        predictor = RemotePredictor(server, model=model, token=token, decoder=decoder)
        connect.opened.append(predictor)
        return predictor

    connect.opened = []
    return connect


def _algorithm(model: str, open_predictor: Any) -> Callable[[], Any]:
    """The model a SEG names: its name, this version, and its weights' SHA-256 (the checkpoint
    file's, combined with an adapter's where one is loaded; the service's with ``--server``)."""

    def named() -> Any:
        from .. import __version__
        from ..io.dicom_seg import SegAlgorithm

        opened = open_predictor.opened[-1] if open_predictor.opened else None
        # A loaded model's identity: its checkpoint's SHA-256, or with an adapter the hash of
        # both (as the encoder service announces its weights, which RemotePredictor holds).
        sha = getattr(opened, "identity", None) or getattr(opened, "weights_sha256", "")
        return SegAlgorithm(model, __version__, sha or "")

    return named


# The options whose declarations are long, named here to keep segment() short.
_OutputOption = Annotated[
    list[Path],
    typer.Option(
        "--output",
        "-o",
        metavar="OUT",
        help="OUT.seg.nrrd, a labelmap .nrrd/.nii.gz, or OUT.dcm (DICOM SEG, for a DICOM "
        "image); repeat to write several.",
    ),
]
_ImageArgument = Annotated[
    Optional[str],
    typer.Argument(
        metavar="IMAGE",
        show_default=False,
        help="Image: NRRD, NIfTI, MHA/MHD, a DICOM folder, or a DICOMweb series URL "
        "(http(s)://HOST/.../studies/UID/series/UID).",
    ),
]
_StoreOption = Annotated[
    bool,
    typer.Option(
        "--store",
        help="Send the DICOM SEG to the DICOMweb server IMAGE came from (STOW-RS).",
    ),
]
_StartOption = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FILE",
        help="Refine a segment made before: a DICOM SEG (.dcm), .seg.nrrd or labelmap on IMAGE's "
        "grid.",
    ),
]
_StartSegmentOption = Annotated[
    Optional[str],
    typer.Option(
        metavar="N|NAME",
        help="With --start: its segment by number or name (a labelmap: its value); default: all.",
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
    text: TextOption = None,
    text_model: TextModelOption = None,
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
    store: _StoreOption = False,
    start: _StartOption = None,
    start_segment: _StartSegmentOption = None,
    dicomweb_token: DicomwebTokenOption = None,
    dicomweb_user: DicomwebUserOption = None,
    dicomweb_password: DicomwebPasswordOption = None,
) -> None:
    """Segment one object from prompts (points, boxes, scribbles, lassos), or structures by name
    (--text), and write it with the image's geometry. Prompts run in this order: texts, boxes,
    lassos, scribbles, then points."""
    given = PromptOptions(point or [], points, negative_points, box or [], scribble or [],
                          negative_scribble or [], lasso or [], negative_lasso or [],
                          text or [])  # fmt: skip
    image_text = _image_or_example_prompts(image, example, given)
    _check_outputs(output)
    prompts = read_prompts(given)
    open_predictor = _predictor(model, weights, adapter, precision, device, server, token)
    open_vocabulary = _vocabulary(given.texts, text_model, adapter, server)
    if start_segment is not None and start is None:
        raise typer.BadParameter("picks a segment of --start FILE; give --start too",
                                 param_hint="--start-segment")  # fmt: skip
    begin = None if start is None else StartSegment(start, _segment_choice(start_segment))

    def auth() -> Any:
        return dicomweb_auth(dicomweb_token, dicomweb_user, dicomweb_password)

    with opened_image(image_text, auth) as opened, outputs_to_write(store, opened, output) as outs:
        segment_file(opened.path, prompts, outs, open_predictor, name=name,
                     inputs=(*given.files(), weights, adapter), say=saying(outs), start=begin,
                     algorithm=_algorithm(model, open_predictor), shown=opened.shown,
                     open_vocabulary=open_vocabulary)  # fmt: skip
        if store:
            store_seg(outs, opened, auth)


def _vocabulary(
    texts: list[str], text_model: Optional[str], adapter: Optional[Path], server: Optional[str]
) -> Optional[Callable[[], Any]]:
    """What opens the names the model knows, for ``--text`` (the adapter file's bank, and
    ``--text-model`` for other names); one line where ``--text`` cannot run."""
    if not texts:
        if text_model is not None:
            raise typer.BadParameter("is for --text; give --text NAME too",
                                     param_hint="--text-model")  # fmt: skip
        return None
    if server is not None:
        raise typer.BadParameter(
            "the encoder service has no text path yet: run --text here, without --server",
            param_hint="--text",
        )
    if adapter is None:
        raise typer.BadParameter(
            "segmenting by name needs a model with a text path: give --adapter FILE, an "
            "adapter file from 'fastsam3d finetune DATA --text'",
            param_hint="--text",
        )

    def open_vocabulary() -> Any:
        from ..session.text_prompt import TextVocabulary

        return TextVocabulary.from_adapter(adapter, text_model)

    return open_vocabulary


def _segment_choice(text: Optional[str]) -> Any:
    """``--start-segment``: a number, a name, or None (all)."""
    return int(text) if text is not None and text.isdigit() else text


def _image_or_example_prompts(image: Optional[str], example: bool, given: PromptOptions) -> str:
    """The image to read (a path or a DICOMweb URL): with ``--example``, the example CT, and
    its spleen point as the prompt where none is given."""
    if image is not None and not example and is_url(image):
        return image
    path = image_or_example(None if image is None else Path(image), example, "segment")
    if example:
        typer.echo(f"example: {path.name} (TotalSegmentator example CT, Apache-2.0)")
        if not given.any_given():
            given.points = [example_point()]
    return str(path)


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
