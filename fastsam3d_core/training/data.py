"""Training cases: nnU-Net/MSD folders or lists of image/label pairs, prepared as the model sees
them.

Every case is cut as the click protocol cuts it (:func:`~fastsam3d_core.evaluation.prepare_case`:
the oracle 128³ crop at 1.5 mm through :func:`~fastsam3d_core.geometry.extract_crop`, the
session's own crop pipeline), so training, evaluation and interactive use see the same inputs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.protocol import CaseSkipped, prepare_case
from ..geometry import Crop, Volume
from ..io import VolumeReadError
from ..io.suffixes import DICOM_SEG_SUFFIX, IMAGE_SUFFIXES, SEGMENTATION_SUFFIXES

# nnU-Net names a case's channels case_0000, case_0001, ...; the models take one channel.
FIRST_CHANNEL = "_0000"
# A case's label: a labelmap, a Slicer segmentation or a DICOM SEG.
LABEL_SUFFIXES = (*SEGMENTATION_SUFFIXES, *IMAGE_SUFFIXES, DICOM_SEG_SUFFIX)
OTHER_CHANNEL = re.compile(r"_(?!0000)\d{4}$")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file or folder and what to do."""


@dataclass(frozen=True)
class CaseFiles:
    """One case's files: ``label`` is a labelmap or a Slicer ``.seg.nrrd``."""

    name: str
    image: Path
    label: Path


@dataclass(frozen=True)
class TrainingCase:
    """A case as the model sees it.

    Attributes:
        name: the case's name.
        crop: the model input (float32 ``(128, 128, 128)``, crop voxels d0, d1, d2) and where
            it lies in RAS.
        truth: bool ``(128, 128, 128)``, the structure in the same crop voxels.
    """

    name: str
    crop: Crop
    truth: np.ndarray


def find_cases(data: Path) -> list[CaseFiles]:
    """The cases of an nnU-Net/MSD folder (``imagesTr/``, ``labelsTr/``) or of a text file that
    lists ``IMAGE LABEL`` pairs, one per line (paths relative to the file; ``#`` comments).

    Raises:
        DatasetError: no such folder or file, a missing partner file, or no case at all.
    """
    if data.is_dir():
        cases = _folder_cases(data)
    elif data.is_file():
        cases = _listed_cases(data)
    else:
        raise DatasetError(f"{data}: no such folder or file (give an imagesTr/labelsTr folder "
                           "or a text file of IMAGE LABEL lines)")  # fmt: skip
    if not cases:
        raise DatasetError(f"{data}: no case found")
    return cases


def _folder_cases(folder: Path) -> list[CaseFiles]:
    images, labels = folder / "imagesTr", folder / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise DatasetError(f"{folder}: expected imagesTr/ and labelsTr/ folders (nnU-Net/MSD)")
    cases = []
    for image, stem in _first_channel_images(images):
        case = stem.removesuffix(FIRST_CHANNEL)
        label = next(
            (labels / (case + s) for s in LABEL_SUFFIXES if (labels / (case + s)).is_file()), None
        )
        if label is None:
            raise DatasetError(f"{image}: no label {case}.* in {labels}")
        cases.append(CaseFiles(case, image, label))
    return cases


def _listed_cases(listing: Path, labels: bool = True) -> list[CaseFiles]:
    cases = []
    lines = listing.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if not fields:
            continue
        if len(fields) != 2 and (labels or len(fields) > 2):
            raise DatasetError(f"{listing}:{number}: expected IMAGE LABEL, got {line.strip()!r}")
        image, label = ((listing.parent / f).resolve() for f in (fields + fields)[:2])
        for path in (image, label):
            if not path.exists():
                raise DatasetError(f"{listing}:{number}: {path} does not exist")
        cases.append(CaseFiles(_stem(image) or image.name, image, label))
    return cases


def find_images(data: Path) -> list[Path]:
    """The images of a folder (its ``imagesTr/`` if it has one, first channels only) or of a text
    file listing one image per line (a second field, a label, is ignored).

    Raises:
        DatasetError: no such folder or file, or no image in it.
    """
    if data.is_file():
        return [case.image for case in _listed_cases(data, labels=False)]
    folder = data / "imagesTr" if (data / "imagesTr").is_dir() else data
    if not folder.is_dir():
        raise DatasetError(f"{data}: no such folder or file")
    images = [path for path, _ in _first_channel_images(folder)]
    if not images:
        raise DatasetError(f"{folder}: no image (NIfTI, NRRD or MetaImage) in it")
    return images


def _first_channel_images(folder: Path) -> list[tuple[Path, str]]:
    """A folder's image files and their names without suffix, sorted; hidden files and
    nnU-Net's channels after the first (``_0001``, ...) left out."""
    found = []
    for path in sorted(folder.iterdir()):
        stem = _stem(path)
        if stem and not stem.startswith(".") and not OTHER_CHANNEL.search(stem):
            found.append((path, stem))
    return found


def _stem(path: Path) -> str | None:
    name = path.name
    suffix = next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)
    return name[: -len(suffix)] if suffix else None


def label_names(data: Path) -> dict[str, int]:
    """Structure names to label values from a folder's ``dataset.json`` (nnU-Net v2
    ``{"spleen": 1}`` or MSD ``{"1": "spleen"}``); empty without one."""
    path = data / "dataset.json"
    if not data.is_dir() or not path.is_file():
        return {}
    try:
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise DatasetError(f"{path}: not a readable dataset.json ({error})") from None
    names: dict[str, int] = {}
    for key, value in labels.items():
        if str(key).isdigit():  # MSD: value -> name
            names[str(value).lower()] = int(key)
        elif isinstance(value, int):  # nnU-Net v2: name -> value
            names[str(key).lower()] = value
    return names


def resolve_label(label: str | None, names: dict[str, int]) -> int | str | None:
    """``--label`` as a label value (int), a structure name to find in ``.seg.nrrd`` files
    (str), or None for every non-zero voxel.

    Raises:
        DatasetError: a name that ``dataset.json`` does not list, when it lists names.
    """
    if label is None or label.isdigit():
        return None if label is None else int(label)
    if names:
        if label.lower() not in names:
            raise DatasetError(f"label {label!r} is not in dataset.json; it lists "
                               f"{', '.join(sorted(names))}")  # fmt: skip
        return names[label.lower()]
    return label


def prepare(case: CaseFiles, label: int | str | None) -> TrainingCase:
    """Read a case and cut its crop.

    Raises:
        DatasetError: an unreadable file, or no voxel of the structure (the message says which).
    """
    from ..io import read_volume  # SimpleITK, on first use

    try:
        image = read_volume(case.image)
        truth, value = _label_volume(case.label, label, image)
        crop, mask = prepare_case(image, truth, value, name=case.name)
    except DatasetError:
        raise
    except (VolumeReadError, CaseSkipped, ValueError) as error:  # ValueError: a SEG off the grid
        raise DatasetError(f"{case.name}: {error}") from None
    return TrainingCase(case.name, crop, mask)


def _label_volume(
    path: Path, label: int | str | None, image: Volume
) -> tuple[Volume, int | None]:
    """The label as a volume and the value that marks the structure in it: a labelmap as it
    is; a ``.seg.nrrd`` or DICOM SEG's chosen segments (by number or name; all when None) as 1
    (a SEG on ``image``'s grid, placed by its frames' positions)."""
    from ..io import read_segmentation, read_volume
    from ..io.label_files import choose_segments, read_segments

    name = path.name.lower()
    if not name.endswith((*SEGMENTATION_SUFFIXES, DICOM_SEG_SUFFIX)):
        if isinstance(label, str):
            raise DatasetError(f"{path}: a labelmap has no names; give --label as a number "
                               "or add a dataset.json")  # fmt: skip
        return read_volume(path), label
    if name.endswith(DICOM_SEG_SUFFIX):
        segments, ijk_to_ras = read_segments(path, image), image.ijk_to_ras
    else:
        segments, geometry = read_segmentation(path)
        ijk_to_ras = geometry.ijk_to_ras
    try:
        chosen = choose_segments(segments, label, path)
    except ValueError as error:
        raise DatasetError(str(error)) from None
    mask = np.any([s.mask for s in chosen], axis=0)
    return Volume(mask.astype(np.uint8), ijk_to_ras), None
