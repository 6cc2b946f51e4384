"""The paper's click protocol (model.md §4.1, FastSAM3D ``validation_student.py``), any predictor.

A 128³ crop centred on the ground truth (an oracle crop), the encoder once, then clicks sampled
from the previous prediction's errors, each decoded with the previous logits as mask prompt; Dice
and IoU in the crop against the cropped label.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt, find_objects

from ..geometry import (
    CROP_SIZE,
    CROP_SPACING_MM,
    Crop,
    CropGrid,
    Volume,
    check_segmentable,
    extract_crop,
    resample,
)
from ..geometry.crop import _volume_extent_in_crop, nearest_ras_axes
from ..geometry.paste import upsample_logits
from ..geometry.resample import translation
from ..session.predictor import Predictor

# The click sampler thresholds the upsampled *logits* at 0.5 (click_method.py), the Dice at
# sigmoid 0.5, i.e. logits > 0 (model.md §4.1 3a, 3e): both kept as the paper has them.
CLICK_LOGIT_THRESHOLD = 0.5
MASK_LOGIT_THRESHOLD = 0.0
LARGEST_REGION_CLICKS = 2  # clicks 1 and 2 go deep into the largest error region
# The first click gets a zero low-resolution mask prompt, not "no mask" (model.md §4.1 3c).
LOW_RES_SIZE = CROP_SIZE // 4


class CaseSkipped(ValueError):
    """A case that cannot be evaluated; the message says why."""


@dataclass(frozen=True, eq=False)
class CaseResult:
    """One case under the protocol.

    Attributes:
        case: the case's name.
        status, reason: ``"ok"`` and ``""``, or ``"skipped"`` and why.
        dice, iou: after clicks 1..n, in the 128³ crop; empty when skipped.
        points_crop: ``(C, 3)`` int64 crop voxel indices (d0, d1, d2) of the clicks made.
        point_labels: ``(C,)`` int64, 1 positive, 0 negative.
        converged_after: clicks after which no error was left (later values repeat), or None.
        crop_to_ras: ``(4, 4)`` float64 map from crop indices to RAS mm, or None when skipped.
        seconds: wall time of the case.
        first_prompt: ``"point"`` (the paper: every interaction a click), or the drawing that
            was the first interaction (``"box"``, ``"scribble"``, ``"lasso"``; then
            ``points_crop`` holds the clicks after it, one fewer than ``dice``).
    """

    case: str
    status: str
    reason: str = ""
    dice: tuple[float, ...] = ()
    iou: tuple[float, ...] = ()
    points_crop: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    converged_after: int | None = None
    crop_to_ras: np.ndarray | None = None
    seconds: float = 0.0
    first_prompt: str = "point"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def evaluate_case(
    image: Volume,
    label: Volume,
    predictor: Predictor,
    *,
    clicks: int = 10,
    accumulate: bool = False,
    label_value: int | None = None,
    seed: int | np.random.Generator = 0,
    name: str = "",
) -> CaseResult:
    """Run the click protocol on one image and its ground truth.

    Args:
        image: the image, ``array`` (I, J, K).
        label: the ground truth on any grid overlapping the image (resampled by RAS if needed).
        predictor: any :class:`Predictor`; its encoder runs once.
        clicks: number of clicks, at least 1.
        accumulate: False (the paper) sends only the new click to the decoder; True sends all
            clicks so far (newer SAM-Med3D inference).
        label_value: the object's label value; None means every non-zero voxel.
        seed: seed or generator of the click sampler's randomness.
        name: the case's name, for the result and warnings.

    Returns:
        The result; ``"skipped"`` for an empty label, or one off the image or off the crop.
    """
    if clicks < 1:
        raise ValueError(f"clicks must be at least 1, got {clicks}")
    start = time.perf_counter()
    try:
        crop, truth = prepare_case(image, label, label_value, name=name)
    except CaseSkipped as skipped:
        return CaseResult(name, "skipped", str(skipped), seconds=time.perf_counter() - start)
    result = run_clicks(predictor, crop, truth, clicks, accumulate, np.random.default_rng(seed))
    return replace(result, case=name, seconds=time.perf_counter() - start)


def prepare_case(
    image: Volume, label: Volume, label_value: int | None = None, name: str = ""
) -> tuple[Crop, np.ndarray]:
    """The oracle crop, its normalised image, and the label resampled into it.

    Returns:
        The :class:`Crop` (image ``(128, 128, 128)`` float32, axes d0, d1, d2) and the ground
        truth in it, bool ``(128, 128, 128)``, same axes.

    Raises:
        CaseSkipped: an image the models cannot segment (see :func:`check_segmentable`), an
            empty label, a label off the image, or no label voxel in the crop.
    """
    _, grid, truth = oracle_truth(image, label, label_value, name=name)
    return extract_crop(image, grid), truth


def oracle_truth(
    image: Volume, label: Volume, label_value: int | None = None, name: str = ""
) -> tuple[np.ndarray, CropGrid, np.ndarray]:
    """The object on the image's grid, bool ``(I, J, K)``; the oracle crop's grid; and the
    object in that crop, bool ``(128, 128, 128)`` (d0, d1, d2), resampled nearest.

    Raises:
        CaseSkipped: as :func:`prepare_case`.
    """
    try:
        check_segmentable(image)
    except ValueError as error:
        raise CaseSkipped(str(error)) from None
    mask = label_mask(image, label, label_value, name=name)
    grid = oracle_crop_grid(image, mask)
    truth = in_crop(mask, image, grid)
    if not truth.any():
        raise CaseSkipped("no label voxel falls in the crop")
    return mask, grid, truth


def in_crop(mask: np.ndarray, image: Volume, grid: CropGrid) -> np.ndarray:
    """A bool mask on the image's grid ``(I, J, K)`` resampled (nearest) into a crop: bool
    ``grid.shape`` (d0, d1, d2); False beyond the image."""
    values, _ = resample(mask, image.ijk_to_ras, grid.crop_to_ras, grid.shape, mode="nearest")
    return values > 0.5


def label_mask(
    image: Volume, label: Volume, label_value: int | None = None, name: str = ""
) -> np.ndarray:
    """The object as a bool mask on the image's grid, ``(I, J, K)`` like ``image.array``.

    A label on another grid (shape, or affine off by > 0.001 mm) is resampled by RAS position,
    nearest neighbour.

    Raises:
        CaseSkipped: no voxel of the object, or none of them on the image (with a warning).
    """
    mask = label.array != 0 if label_value is None else label.array == label_value
    if not mask.any():
        which = "non-zero" if label_value is None else f"value-{label_value}"
        raise CaseSkipped(f"the label is empty (no {which} voxel)")
    if label.shape == image.shape and np.allclose(label.ijk_to_ras, image.ijk_to_ras, atol=1e-3):
        return mask
    values, _ = resample(mask, label.ijk_to_ras, image.ijk_to_ras, image.shape, mode="nearest")
    on_image = values > 0.5
    if not on_image.any():
        reason = "the label does not overlap the image (different geometry)"
        warnings.warn(f"{name or 'case'}: {reason}", stacklevel=2)
        raise CaseSkipped(reason)
    return on_image


def oracle_crop_grid(image: Volume, mask: np.ndarray, size: int = CROP_SIZE) -> CropGrid:
    """The crop torchio's ``ToCanonical`` + ``CropOrPad(mask_name=...)`` cuts (model.md §4.1) around
    a bool ``(I, J, K)`` mask on the image's grid.

    Lattice u is the image resampled to 1.5 mm on its axes reoriented to the nearest RAS, edges
    kept (for a 1.5 mm image: its voxels, canonically reordered). With the mask's bounding box
    first..last (inclusive) in u, the crop starts at ``floor((first + last + 1) / 2) - size / 2``
    as in torchio, is not shifted to stay inside the image, and is zero-padded beyond it.
    """
    axes, signs = nearest_ras_axes(image.direction)
    frame_to_ras = np.eye(4)
    frame_to_ras[:3, :3] = image.direction[:, axes] * signs * CROP_SPACING_MM
    frame = CropGrid(frame_to_ras, size)
    lattice_origin = _volume_extent_in_crop(image, frame)[0] + 0.5
    boxes = find_objects(np.asarray(mask, dtype=bool).view(np.uint8))
    if not boxes:
        raise ValueError("the mask is empty")
    ends = [[s.start, s.stop - 1] for s in boxes[0]]
    corners = np.array(np.meshgrid(*ends, indexing="ij")).reshape(3, -1).T
    lattice = frame.to_crop(image.index_to_ras(corners)) - lattice_origin
    first, last = np.round(lattice.min(axis=0)), np.round(lattice.max(axis=0))
    begin = np.floor((first + last + 1) / 2) - size // 2
    return CropGrid(frame_to_ras @ translation(lattice_origin + begin), size)


def run_clicks(
    predictor: Predictor,
    crop: Crop,
    truth: np.ndarray,
    clicks: int,
    accumulate: bool,
    rng: np.random.Generator,
) -> CaseResult:
    """The interactive loop of one crop (``finetune_model_predict3D``, model.md §4.1 step 3).

    Args:
        predictor: encodes ``crop`` once, then decodes each click.
        crop: the model input.
        truth: bool ``(128, 128, 128)`` ground truth in the crop (d0, d1, d2).
        clicks, accumulate: see :func:`evaluate_case`.
        rng: the sampler's randomness.

    Returns:
        An ``"ok"`` :class:`CaseResult` without name or time.
    """
    embedding = predictor.encode(crop)
    mask_input: Any = np.zeros((LOW_RES_SIZE,) * 3, dtype=np.float32)
    logits = np.zeros(truth.shape, dtype=np.float32)
    points: list[np.ndarray] = []
    labels: list[int] = []
    scores: list[tuple[float, float]] = []
    while len(points) < clicks:
        click = next_click(truth, logits, len(points), rng)
        if click is None:
            break
        points.append(click[0])
        labels.append(click[1])
        sent = slice(0 if accumulate else -1, None)
        prompt = np.array(points[sent], np.float32), np.array(labels[sent], np.int64)
        mask_input = predictor.decode(embedding, *prompt, mask_input)
        logits = crop_logits(mask_input)
        scores.append(dice_iou(logits > MASK_LOGIT_THRESHOLD, truth))
    return clicked_case(scores, clicks, points, labels, crop.affine)


def clicked_case(
    scores: list[tuple[float, float]],
    clicks: int,
    points: list[Any],
    labels: list[int],
    crop_to_ras: np.ndarray,
) -> CaseResult:
    """A case's result from its (Dice, IoU) after each click so far: a case that converged
    before ``clicks`` keeps its last scores for the clicks it did not need."""
    missing = clicks - len(scores)
    dice, iou = zip(*(scores + scores[-1:] * missing))
    return CaseResult(
        "",
        "ok",
        dice=dice,
        iou=iou,
        points_crop=np.array(points, dtype=np.int64).reshape(-1, 3),
        point_labels=np.array(labels, dtype=np.int64),
        converged_after=len(scores) if missing else None,
        crop_to_ras=crop_to_ras.copy(),
    )


def next_click(
    truth: np.ndarray, logits: np.ndarray, index: int, rng: np.random.Generator
) -> tuple[np.ndarray, int] | None:
    """The paper's click sampler (``utils/click_method.py``).

    Clicks 0 and 1 (``get_next_click3D_torch_ritm``): of the false negatives and false positives,
    the region with the larger maximum distance to its outside (ties go to the false positives),
    then a uniformly random voxel whose distance exceeds half that maximum. Later clicks
    (``get_next_click3D_torch_2``): a uniformly random error voxel. Label 1 for a false negative.

    Args:
        truth: bool ``(128, 128, 128)``, axes (d0, d1, d2).
        logits: float ``(128, 128, 128)``, the previous upsampled logits (zeros before click 0).
        index: the click's number, from 0.
        rng: randomness.

    Returns:
        The voxel (3,) int64 (d0, d1, d2) and its label, or None when no error is left.
    """
    predicted = logits > CLICK_LOGIT_THRESHOLD
    false_negative = truth & ~predicted
    false_positive = predicted & ~truth
    if index < LARGEST_REGION_CLICKS:
        fn_distance = distance_to_outside(false_negative)
        fp_distance = distance_to_outside(false_positive)
        fn_max, fp_max = fn_distance.max(), fp_distance.max()
        chosen = fn_distance if fn_max > fp_max else fp_distance
        candidates = chosen > max(fn_max, fp_max) / 2
    else:
        candidates = false_negative | false_positive
    flat = np.flatnonzero(candidates)  # C order, as torch.argwhere lists them
    if not flat.size:
        return None
    point = np.array(np.unravel_index(flat[rng.integers(flat.size)], truth.shape))
    return point.astype(np.int64), int(false_negative[tuple(point)])


def distance_to_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (voxels, float64) from each voxel of a bool ``(D0, D1, D2)`` mask to
    the nearest voxel outside it, voxels beyond the array counting as outside (the ``edt``
    package with ``black_border=True`` on a zero-padded array, as the paper); 0 outside.

    Computed on the mask's bounding box plus a one-voxel zero margin, which is exact: an outside
    voxel farther away is no nearer than the margin voxel it clamps to.
    """
    mask = np.asarray(mask, dtype=bool)
    distance = np.zeros(mask.shape)
    for box in find_objects(mask.view(np.uint8)):  # the bounding box, if the mask has voxels
        distance[box] = distance_transform_edt(np.pad(mask[box], 1))[1:-1, 1:-1, 1:-1]
    return distance


def crop_logits(output: Any) -> np.ndarray:
    """A predictor's logits (``(n, n, n)``, n = 32 or 128, leading 1s allowed) upsampled to the
    crop: float32 ``(128, 128, 128)``, trilinear with align_corners=False (model.md §4.1 3e)."""
    logits = np.asarray(output, dtype=np.float32)
    side = logits.shape[-1] if logits.ndim >= 3 else 0
    if side == 0 or logits.shape[-3:] != (side,) * 3 or logits.size != side**3:
        raise ValueError(f"logits must be (n, n, n) with optional leading 1s, got {logits.shape}")
    return upsample_logits(logits.reshape((side,) * 3), CROP_SIZE)


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two bool masks of the same shape (NaN when both are empty)."""
    intersection = int(np.count_nonzero(predicted & truth))
    total = int(np.count_nonzero(predicted)) + int(np.count_nonzero(truth))
    if total == 0:
        return float("nan"), float("nan")
    return 2 * intersection / total, intersection / (total - intersection)
