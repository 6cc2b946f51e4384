"""The click protocol with another first prompt: a box, a scribble or a lasso simulated from the
ground truth (:mod:`.first_prompts`), or the structure's name (a text prompt over the whole image),
then the paper's clicks (``evaluate --first-prompt``).

A drawing is not a click the decoder takes: a session turns it into points, a mask prompt and
exact voxels (:mod:`fastsam3d_core.session.prompt_edits`). So a case with a drawn first prompt
runs through a :class:`~fastsam3d_core.session.Session` on the image, as a user's prompts land:
the drawing first, as the paper's first click, then each click the paper's sampler places on
the errors left (the next one deep in the largest error region, as the paper's second click;
later ones on any error voxel), added with
:meth:`~fastsam3d_core.session.Session.add_point`. A session opens its crops around the prompts
and decodes all of a crop's clicks with its previous logits (``--accumulate`` and
``--new-click-only`` do not apply). Dice and IoU are measured as for the paper's clicks: in the
oracle crop, against the same cropped truth, the session's mask resampled into it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from ..geometry import CropGrid, Volume
from ..session import Predictor, Session
from .first_prompts import check_first_prompt, simulated_prompt
from .protocol import (
    CaseResult,
    CaseSkipped,
    clicked_case,
    dice_iou,
    evaluate_case,
    in_crop,
    next_click,
    oracle_truth,
)


def evaluate_prompted_case(
    image: Volume,
    label: Volume,
    predictor: Predictor,
    *,
    first_prompt: str = "point",
    clicks: int = 10,
    accumulate: bool = False,
    label_value: int | None = None,
    seed: int | np.random.Generator = 0,
    name: str = "",
    text: str | None = None,
    vocabulary: Any = None,
) -> CaseResult:
    """:func:`~.protocol.evaluate_case` whose first interaction is ``first_prompt``.

    ``"point"`` is the paper's protocol itself (:func:`~.protocol.evaluate_case`, same
    results). A drawing (``"box"``, ``"scribble"``, ``"lasso"``) is simulated from the truth
    with ``seed``'s generator and added to a session on the image, then ``clicks - 1`` clicks of
    the paper's sampler follow (see the module's docstring); ``accumulate`` does not apply.
    ``"text"``: the structure's name ``text`` (looked up in ``vocabulary``, see
    :meth:`~fastsam3d_core.session.Session.add_text`) instead of a drawing.

    Returns:
        The result; ``dice[0]`` is after the drawing alone. ``"skipped"`` as for the paper's
        protocol, and where the session refuses the simulated drawing (the reason says why).

    Raises:
        ValueError: an unknown ``first_prompt``, or ``clicks`` below 1; for ``"text"``, no
            text, or one the model cannot segment (not known, no text path).
    """
    check_first_prompt(first_prompt)
    if first_prompt == "text" and not text:
        raise ValueError("a text first prompt needs the structure's name (text=...)")
    if first_prompt == "point":
        options: dict[str, Any] = {"accumulate": accumulate, "label_value": label_value}
        return evaluate_case(
            image, label, predictor, clicks=clicks, seed=seed, name=name, **options
        )
    if clicks < 1:
        raise ValueError(f"clicks must be at least 1, got {clicks}")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    try:
        mask, grid, truth = oracle_truth(image, label, label_value, name=name)
        session = Session(image, predictor)
        if first_prompt == "text":
            session.add_text(str(text), vocabulary)  # the clicks then go to its segment
        else:
            add_drawing(session, first_prompt, simulated_prompt(first_prompt, image, mask, rng))
    except CaseSkipped as skipped:
        seconds = time.perf_counter() - start
        return CaseResult(name, "skipped", str(skipped), seconds=seconds, first_prompt=first_prompt)
    result = clicks_after_drawing(session, grid, truth, clicks, rng)
    seconds = time.perf_counter() - start
    return replace(result, case=name, seconds=seconds, first_prompt=first_prompt)


def add_drawing(session: Session, kind: str, drawing: np.ndarray) -> None:
    """Add a simulated positive drawing (RAS mm, as :func:`~.first_prompts.simulated_prompt`
    gives it) to the session's current segment.

    Raises:
        CaseSkipped: the session's checks refuse it (see
            :mod:`fastsam3d_core.session.shapes`); the reason says why.
        ValueError: an unknown kind.
    """
    adders = {
        "box": lambda: session.add_box(drawing[0], drawing[1]),
        "scribble": lambda: session.add_scribble(drawing),
        "lasso": lambda: session.add_lasso(drawing),
    }
    if kind not in adders:
        raise ValueError(f"no drawing of a {kind!r}: {', '.join(adders)}")
    try:
        adders[kind]()
    except ValueError as refused:
        raise CaseSkipped(f"the session refused the simulated {kind}: {refused}") from None


def clicks_after_drawing(
    session: Session, grid: CropGrid, truth: np.ndarray, clicks: int, rng: np.random.Generator
) -> CaseResult:
    """The paper's clicks after a session's first interaction, until ``clicks`` interactions in
    all (the first included) or no error is left.

    Args:
        session: a session on the image with the drawing added.
        grid: the oracle crop, where errors are found and Dice measured.
        truth: bool ``grid.shape``, the object in the crop (d0, d1, d2).
        clicks: interactions in all, at least 1.
        rng: the click sampler's randomness.

    Returns:
        An ``"ok"`` :class:`~.protocol.CaseResult` without name, time or first prompt.
    """
    predicted = in_crop(session.mask() > 0, session.volume, grid)
    scores = [dice_iou(predicted, truth)]
    points: list[np.ndarray] = []
    labels: list[int] = []
    while len(scores) < clicks:
        # The sampler thresholds logits at 0.5; a mask as 0/1 reads the same.
        click = next_click(truth, predicted.astype(np.float32), len(scores), rng)
        if click is None:
            break
        points.append(click[0])
        labels.append(click[1])
        point_ras = grid.crop_to_ras[:3, :3] @ click[0] + grid.crop_to_ras[:3, 3]
        session.add_point(point_ras, positive=bool(click[1]))
        predicted = in_crop(session.mask() > 0, session.volume, grid)
        scores.append(dice_iou(predicted, truth))
    return clicked_case(scores, clicks, points, labels, grid.crop_to_ras)
