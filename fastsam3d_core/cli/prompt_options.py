"""The prompts of ``fastsam3d segment``: texts, points, boxes, scribbles and lassos, as given.

Typer gives each option's values apart, not in the order they stood on the command line, so the
prompts run in a fixed order, coarse to fine: texts (each a new segment over the whole image,
which the prompts after it refine), boxes (in the order given), lassos (``--lasso``
then ``--negative-lasso``), scribbles (``--scribble`` then ``--negative-scribble``), then points
(``--point`` in the order given, then ``--points``, then ``--negative-points``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..segment_job import (
    BoxPrompt,
    LassoPrompt,
    PointPrompt,
    ScribblePrompt,
    SegmentPrompt,
    TextPrompt,
)

# Each prompt runs the model (a third of a second or more on a CPU): 10,000 points from a file
# exported by mistake would run for an hour. Interactive segmentation takes tens of points.
MAX_POINTS = 200
# A drawn curve's control points: a lasso's self-crossing check compares every pair of its
# edges (2,000 points: about a second). A curve drawn in Slicer has tens to hundreds.
MAX_CURVE_POINTS = 2000


def parse_point(text: str) -> tuple[tuple[float, float, float], bool]:
    """``"R,A,S"`` or ``"R,A,S:neg"`` (RAS mm) to a point and its polarity."""
    coordinates, _, flag = text.partition(":")
    if flag not in ("", "neg", "pos"):
        raise typer.BadParameter(
            f"{text!r}: the suffix must be ':neg' or ':pos'", param_hint="--point"
        )
    return _coordinates(coordinates, text, "--point"), flag != "neg"


def parse_box(text: str) -> BoxPrompt:
    """``"R,A,S:R,A,S"`` or ``"R,A,S:R,A,S:neg"`` (two opposite corners, RAS mm) to a box."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise typer.BadParameter(
            f"{text!r} is not two corners R,A,S:R,A,S in millimetres (and :neg for a negative "
            "box), e.g. -60,90,140:-10,140,180",
            param_hint="--box",
        )
    if len(parts) == 3 and parts[2] not in ("neg", "pos"):
        raise typer.BadParameter(
            f"{text!r}: the suffix must be ':neg' or ':pos'", param_hint="--box"
        )
    corner_a = _coordinates(parts[0], text, "--box")
    corner_b = _coordinates(parts[1], text, "--box")
    positive = len(parts) == 2 or parts[2] == "pos"
    return BoxPrompt(corner_a, corner_b, positive, f"--box {text}")


def _coordinates(coordinates: str, text: str, option: str) -> tuple[float, float, float]:
    try:
        r, a, s = (float(value) for value in coordinates.split(","))
    except ValueError:
        example = "-60,90,140:-10,140,180" if option == "--box" else "-20,15.5,30"
        raise typer.BadParameter(
            f"{text!r} is not R,A,S in millimetres, e.g. {example}", param_hint=option
        ) from None
    if not all(math.isfinite(value) for value in (r, a, s)):
        raise typer.BadParameter(f"{text!r}: coordinates must be finite numbers", param_hint=option)
    return r, a, s


@dataclass
class PromptOptions:
    """What the command line gave as prompts, as typed (files unread)."""

    points: list[str] = field(default_factory=list)
    points_file: Optional[Path] = None
    negative_points_file: Optional[Path] = None
    boxes: list[str] = field(default_factory=list)
    scribbles: list[Path] = field(default_factory=list)
    negative_scribbles: list[Path] = field(default_factory=list)
    lassos: list[Path] = field(default_factory=list)
    negative_lassos: list[Path] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def any_given(self) -> bool:
        return bool(
            self.texts or self.points or self.points_file or self.negative_points_file or self.boxes
            or self.scribbles or self.negative_scribbles or self.lassos or self.negative_lassos
        )  # fmt: skip

    def files(self) -> list[Path]:
        """Every file read for prompts (an output must not replace one)."""
        named = [self.points_file, self.negative_points_file]
        curves = self.scribbles + self.negative_scribbles + self.lassos + self.negative_lassos
        return [path for path in named if path is not None] + curves


def read_prompts(options: PromptOptions) -> list[SegmentPrompt]:
    """Every prompt, in the module's fixed order, with where it comes from (for messages),
    checked for a positive one. Their fit to the image is checked once it is read.

    Raises:
        typer.BadParameter: a malformed value; no prompt, or no positive one.
        ValueError: a file that cannot be read, of the wrong markups type, or too many points.
    """
    prompts: list[SegmentPrompt] = [TextPrompt(text, f"--text {text!r}") for text in options.texts]
    prompts += [parse_box(text) for text in options.boxes]
    for paths, closed, positive in (
        (options.lassos, True, True),
        (options.negative_lassos, True, False),
        (options.scribbles, False, True),
        (options.negative_scribbles, False, False),
    ):
        for path in paths:
            prompts += _curve_prompts(path, closed, positive)
    prompts += _point_prompts(options, before=len(prompts))
    if not prompts:
        raise typer.BadParameter(
            "give at least one prompt: --text, --point, --points, --box, --scribble or --lasso"
        )
    if not any(prompt.positive for prompt in prompts):
        raise typer.BadParameter(
            "give at least one positive prompt (a --point or --box without :neg, --points, "
            "--scribble or --lasso): negative prompts only remove voxels from an object"
        )
    return prompts


def _curve_prompts(path: Path, closed: bool, positive: bool) -> list[SegmentPrompt]:
    """The scribbles (open curves) or lassos (closed curves) of one markups file."""
    from ..io.markups import MarkupsTypeError, read_markups_curves

    option = ("--" if positive else "--negative-") + ("lasso" if closed else "scribble")
    try:
        curves = read_markups_curves(path, closed)
    except MarkupsTypeError as error:
        raise ValueError(f"{option} {error}; {_type_hint(error.found, closed)}") from None
    except ValueError as error:
        raise ValueError(f"{option} {error}") from None
    prompts: list[SegmentPrompt] = []
    for number, curve in enumerate(curves, 1):
        what = "closed curve" if closed else "curve"
        source = f"{option} {path}" + (f": {what} {number}" if len(curves) > 1 else "")
        if len(curve) > MAX_CURVE_POINTS:
            raise ValueError(
                f"{source}: {len(curve)} control points; at most {MAX_CURVE_POINTS} are taken: "
                "resample the curve in Slicer's Markups module to fewer points"
            )
        kind = LassoPrompt if closed else ScribblePrompt
        prompts.append(kind(curve, positive, source))
    return prompts


def _type_hint(found: Optional[str], closed: bool) -> str:
    """What to do with a markups file of the wrong type for the option it was given to."""
    if found == "Fiducial":
        return "give point lists to --points or --negative-points"
    if found == "Curve" and closed:
        return "give open curves to --scribble or --negative-scribble"
    if found == "ClosedCurve" and not closed:
        return "give closed curves to --lasso or --negative-lasso"
    if found == "ROI":
        return "give a box as --box R,A,S:R,A,S (two opposite corners)"
    what = "closed curve" if closed else "open curve"
    return f"draw {'a' if closed else 'an'} {what} in Slicer's Markups module and save it"


def _point_prompts(options: PromptOptions, before: int) -> list[SegmentPrompt]:
    """The points, after ``before`` other prompts (all count towards ``MAX_POINTS``)."""
    from ..io.markups import read_markups_points
    from ..session import Click

    if before + len(options.points) > MAX_POINTS:
        raise typer.BadParameter(
            f"given {len(options.points)} times; at most {MAX_POINTS} prompts are taken",
            param_hint="--point",
        )
    prompts: list[SegmentPrompt] = [
        PointPrompt(Click(*parse_point(text)), f"--point {text}") for text in options.points
    ]
    for path, positive in ((options.points_file, True), (options.negative_points_file, False)):
        if path is not None:
            read = read_markups_points(path).tolist()
            _check_point_count(path, len(read), before + len(prompts))
            for k, p in enumerate(read, 1):
                prompts.append(PointPrompt(Click(p, positive), f"{path}: point {k}"))
    return prompts


def _check_point_count(path: Path, in_file: int, before: int) -> None:
    if before + in_file > MAX_POINTS:
        in_all = f", {before + in_file} prompts in all" if before else ""
        raise ValueError(
            f"{path}: {in_file} points{in_all}; at most {MAX_POINTS} prompts are taken (each one "
            "runs the model): give fewer"
        )


# The options' declarations, named here to keep segment() short.
TextOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--text",
        metavar="NAME",
        help="Segment a structure by name, e.g. liver (repeatable: one segment each, over the "
        "whole image; the other prompts then refine the last one). Needs --adapter from "
        "`fastsam3d finetune --text`.",
    ),
]
TextModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--text-model",
        metavar="NAME|FILE",
        help="The text model the adapter was trained with, for --text names not in the "
        "adapter's vocabulary.",
    ),
]
BoxOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--box",
        metavar="R,A,S:R,A,S[:neg]",
        help="A box by two opposite corners in RAS mm (repeatable): the object lies inside, "
        "and the result never leaves it; append :neg to remove what lies inside. Corners "
        "alike along one axis: a rectangle on that slice.",
    ),
]
ScribbleOption = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--scribble",
        metavar="FILE.mrk.json",
        help="Slicer open curve (markups Curve) drawn along the object (repeatable).",
    ),
]
NegativeScribbleOption = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--negative-scribble",
        metavar="FILE.mrk.json",
        help="Slicer open curve drawn along what is not the object (repeatable).",
    ),
]
LassoOption = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--lasso",
        metavar="FILE.mrk.json",
        help="Slicer closed curve (markups ClosedCurve) on one slice (repeatable): there the "
        "object is exactly what it encloses.",
    ),
]
NegativeLassoOption = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--negative-lasso",
        metavar="FILE.mrk.json",
        help="Slicer closed curve on one slice (repeatable): what it encloses is removed.",
    ),
]
