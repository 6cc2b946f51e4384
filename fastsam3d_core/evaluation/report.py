"""Evaluating a folder of cases: pairing files, running the protocol, CSV and plot."""

from __future__ import annotations

import csv
import math
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..geometry import Volume
from ..io._atomic import write_atomically
from ..io.suffixes import DICOM_SEG_SUFFIX, IMAGE_SUFFIXES
from ..session.predictor import Predictor
from .first_prompts import check_first_prompt
from .prompted import evaluate_prompted_case
from .protocol import CaseResult

# nnU-Net names an image's channels CASE_0000, CASE_0001, ...; its label is CASE.
NNUNET_CHANNEL = "_0000"
# Click counts reported by the paper (1, 3, 5 and 10 points).
PAPER_CLICKS = (1, 3, 5, 10)
MAX_PLOTTED_CASES = 100

PredictorFactory = Callable[[Volume], Predictor]
"""Called with each case's label volume; returns the predictor for that case."""
ProgressCallback = Callable[[int, int, CaseResult], None]
"""Called after each case with (cases done, cases in all, the case's result)."""


@dataclass(frozen=True)
class CasePair:
    """An image and its label file, and the case's name (the file name without suffix)."""

    name: str
    image: Path
    label: Path


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Results of every case of a run.

    Attributes:
        results: one per case, in the order evaluated.
        clicks: clicks per case (interactions, the first prompt included).
        first_prompt: the first interaction of every case: ``"point"`` (the paper's click) or
            a drawing simulated from the truth (see :mod:`.first_prompts`).
    """

    results: tuple[CaseResult, ...]
    clicks: int
    first_prompt: str = "point"

    @property
    def evaluated(self) -> list[CaseResult]:
        return [result for result in self.results if result.ok]

    @property
    def skipped(self) -> list[CaseResult]:
        return [result for result in self.results if not result.ok]

    @property
    def summary_clicks(self) -> tuple[int, ...]:
        """The paper's 1, 3, 5, 10 clicks where run, and the last click."""
        return tuple(sorted({c for c in PAPER_CLICKS if c <= self.clicks} | {self.clicks}))

    def mean_dice(self, clicks: Sequence[int] | None = None) -> dict[int, float]:
        """Mean Dice over evaluated cases after each number of clicks (NaN without cases)."""
        counts = self.summary_clicks if clicks is None else tuple(clicks)
        if any(not 1 <= c <= self.clicks for c in counts):
            raise ValueError(f"click counts must be in 1..{self.clicks}, got {counts}")
        table = np.array([result.dice for result in self.evaluated]).reshape(-1, self.clicks)
        return {c: float(table[:, c - 1].mean()) if len(table) else math.nan for c in counts}

    def mean_best_dice(self) -> float:
        """Mean over cases of the best Dice over clicks: the paper's printed "Mean Dice"."""
        best = [max(result.dice) for result in self.evaluated]
        return float(np.mean(best)) if best else math.nan


def find_cases(images: Path, labels: Path | None = None) -> list[CasePair]:
    """Pair images with labels of the same file name.

    Layouts: ``images`` is a folder of images (``imagesTr``, ``imagesTs``, ...) whose labels are
    in the sibling ``labelsTr``, ``labelsTs``, ... (nnU-Net / SAM-Med3D), or in ``labels``
    when given; or ``images`` is a dataset folder holding ``imagesTr`` and ``labelsTr``. An
    nnU-Net image ``CASE_0000.nii.gz`` also pairs with the label ``CASE.nii.gz``. Images without
    a label are left out with a warning.

    Raises:
        ValueError: a folder is missing, or no image has a label.
    """
    images, labels = _folders(Path(images), None if labels is None else Path(labels))
    pairs, unpaired = [], []
    for image in sorted(p for p in images.iterdir() if _is_image(p)):
        stem = image.name[: -len(_suffix(image))] if image.is_file() else image.name
        names = [stem] + ([stem[: -len(NNUNET_CHANNEL)]] if stem.endswith(NNUNET_CHANNEL) else [])
        # A label in the image's own format, or a DICOM SEG (the label of a DICOM series).
        endings = ([_suffix(image)] if image.is_file() else []) + [DICOM_SEG_SUFFIX]
        found = [labels / (name + ending) for name in names for ending in endings]
        label = next((path for path in found if path.is_file()), None)
        if label is None:
            unpaired.append(image.name)
        else:
            pairs.append(CasePair(names[-1], image, label))
    if not pairs:
        raise ValueError(f"no image in {images} has a label of the same name in {labels}")
    if unpaired:
        warnings.warn(
            f"{len(unpaired)} image(s) without a label left out: {unpaired}", stacklevel=2
        )
    return pairs


def _folders(images: Path, labels: Path | None) -> tuple[Path, Path]:
    _check_folder(images, "images")
    if labels is not None:
        _check_folder(labels, "labels")
        return images, labels
    if (images / "imagesTr").is_dir():
        images = images / "imagesTr"
    derived = images.parent / images.name.replace("images", "labels", 1)
    if derived == images or not derived.is_dir():
        raise ValueError(
            f"no labels folder beside {images} (like labelsTr): give the labels folder"
        )
    return images, derived


def _check_folder(path: Path, what: str) -> None:
    if path.is_file():
        raise ValueError(
            f"{path} is a file; give the folder of {what} (e.g. {what}Tr) or the dataset folder "
            "that holds imagesTr and labelsTr"
        )
    if not path.is_dir():
        raise ValueError(f"{what} folder not found: {path}")


def _suffix(path: Path) -> str:
    return next(s for s in IMAGE_SUFFIXES if path.name.lower().endswith(s))


def _is_image(path: Path) -> bool:
    """An image file, or a folder (a DICOM series: one per case, named like its label)."""
    if path.is_dir():
        return not path.name.startswith(".")
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def evaluate_cases(
    cases: Sequence[CasePair],
    predictor_factory: PredictorFactory,
    *,
    clicks: int = 10,
    accumulate: bool = False,
    label_value: int | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    first_prompt: str = "point",
    text: str | None = None,
    vocabulary: Any = None,
) -> EvaluationReport:
    """Run :func:`~.prompted.evaluate_prompted_case` (for ``"point"``: the paper's
    :func:`~.protocol.evaluate_case`) on every case.

    Each case's clicks are drawn from a generator seeded with (``seed``, the case's name), so a
    case's clicks do not depend on which other cases are run. Unreadable files skip the case.

    Args:
        cases: from :func:`find_cases`.
        predictor_factory: returns the predictor for a case, given its label volume.
        clicks, accumulate, label_value: see :func:`~.protocol.evaluate_case`.
        seed: base seed, non-negative.
        progress: called after each case.
        first_prompt: ``point`` (the paper), ``box``, ``scribble``, ``lasso`` or ``text``.
        text, vocabulary: with ``text``, the structure's name and the names the model knows
            (see :func:`~.prompted.evaluate_prompted_case`).

    Raises:
        ValueError: an unknown ``first_prompt`` (before any case is read).
    """
    check_first_prompt(first_prompt)
    from ..io import VolumeReadError, read_volume  # here: SimpleITK only when reading
    from ..io.label_files import read_label_volume

    results = []
    for number, case in enumerate(cases, 1):
        try:
            image = read_volume(case.image)
            label = read_label_volume(case.label, image)
        except (VolumeReadError, ValueError) as error:
            reason = f"cannot read: {error}"
            result = CaseResult(case.name, "skipped", reason, first_prompt=first_prompt)
        else:
            result = evaluate_prompted_case(
                image,
                label,
                predictor_factory(label),
                first_prompt=first_prompt,
                clicks=clicks,
                accumulate=accumulate,
                label_value=label_value,
                seed=np.random.default_rng([seed, zlib.crc32(case.name.encode())]),
                name=case.name,
                text=text,
                vocabulary=vocabulary,
            )
        results.append(result)
        if progress is not None:
            progress(number, len(cases), result)
    return EvaluationReport(tuple(results), clicks, first_prompt)


def evaluate_folder(
    images: Path, labels: Path | None, predictor_factory: PredictorFactory, **options: Any
) -> EvaluationReport:
    """:func:`find_cases` then :func:`evaluate_cases` with the same keyword ``options``."""
    return evaluate_cases(find_cases(images, labels), predictor_factory, **options)


def write_csv(report: EvaluationReport, path: Path) -> None:
    """One row per case: ``case, status, reason, first_prompt, dice_<c>`` for the summary click
    counts, ``best_dice, converged_after, seconds``, then every click's ``dice@<k>`` and
    ``iou@<k>`` (click 1 is the first prompt). Values of skipped cases are empty."""
    per_click = range(1, report.clicks + 1)
    header = ["case", "status", "reason", "first_prompt"]
    header += [f"dice_{c}" for c in report.summary_clicks]
    header += ["best_dice", "converged_after", "seconds"]
    header += [f"dice@{k}" for k in per_click] + [f"iou@{k}" for k in per_click]
    rows: list[list[object]] = [list(header)]
    for result in report.results:
        values: list[object] = [result.case, result.status, result.reason, result.first_prompt]
        if result.ok:
            values += [_number(result.dice[c - 1]) for c in report.summary_clicks]
            values += [_number(max(result.dice)), result.converged_after or ""]
            values += [f"{result.seconds:.2f}"]
            values += [_number(v) for v in result.dice + result.iou]
        rows.append(values + [""] * (len(header) - len(values)))

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as stream:
            csv.writer(stream).writerows(rows)

    write_atomically(Path(path), ".csv", write)


def _number(value: float) -> str:
    return f"{value:.6f}"


def write_plot(report: EvaluationReport, path: Path, title: str | None = None) -> bool:
    """Mean Dice against the number of clicks (each case as a thin line), as a PNG.

    Uses matplotlib's Agg canvas directly, leaving pyplot's global backend alone.

    Returns:
        False, with a warning, when matplotlib is not installed; True once written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        warnings.warn(
            f"matplotlib is not installed, so the plot {path} was not written "
            "(pip install matplotlib)",
            stacklevel=2,
        )
        return False
    figure = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    counts = list(range(1, report.clicks + 1))
    for result in report.evaluated[:MAX_PLOTTED_CASES]:
        axes.plot(counts, result.dice, color="0.7", linewidth=0.8)
    mean = report.mean_dice(counts)
    axes.plot(counts, list(mean.values()), "o-", color="C0", linewidth=2, label="mean")
    axes.set(xlabel="clicks", ylabel="Dice (128³ crop)", ylim=(0, 1.02))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title or f"Mean Dice against clicks ({len(report.evaluated)} cases)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    write_atomically(Path(path), ".png", lambda temporary: figure.savefig(temporary, dpi=100))
    return True
