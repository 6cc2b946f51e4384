"""Training data for the text path: every named structure of every case, over crops that tile
the whole volume (as a text prompt is looked for at inference: there is no click to say where).

Names come from ``dataset.json`` (nnU-Net v2 ``{"liver": 5}`` or MSD ``{"5": "liver"}``) for
labelmaps, or from the segment names of ``.seg.nrrd`` / DICOM SEG labels. Background (0) and
names without a voxel in a case are left out of that case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.protocol import CaseSkipped, in_crop, label_mask
from ..geometry import Crop, Volume, check_segmentable, extract_crop
from ..geometry.tiles import text_tiles
from ..io import VolumeReadError
from ..io.label_files import is_segment_file, read_segments
from ..weights.text_bank import text_key
from .data import CaseFiles, DatasetError, label_names


@dataclass(frozen=True)
class TextCase:
    """One case as the text path is trained on it.

    Attributes:
        name: the case's name.
        image: the image volume (for the whole-volume Dice of validation).
        tiles: its crops (:func:`~fastsam3d_core.geometry.tiles.text_tiles`), normalised.
        structures: name (:func:`text_key` form) -> the structure on the image's grid, bool
            ``(I, J, K)``.
        truths: name -> per tile, the structure in that crop, bool ``(128, 128, 128)`` (d0, d1,
            d2); empty in tiles it does not reach.
    """

    name: str
    image: Volume
    tiles: tuple[Crop, ...]
    structures: dict[str, np.ndarray]
    truths: dict[str, tuple[np.ndarray, ...]]


def parse_synonyms(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``("liver=hepatic", ...)`` -> ``{"hepatic": "liver"}`` (synonym -> name, text_key form).

    Raises:
        ValueError: a pair without ``=`` or with an empty side (one line).
    """
    synonyms = {}
    for pair in pairs:
        name, _, synonym = pair.partition("=")
        if not name.strip() or not synonym.strip():
            raise ValueError(f"--synonym {pair!r}: expected NAME=SYNONYM, e.g. liver=hepatic")
        synonyms[text_key(synonym)] = text_key(name)
    return synonyms


def text_cases(files: list[CaseFiles], data: Path, say=print) -> list[TextCase]:
    """Read every case, its named structures and its tiles.

    Raises:
        DatasetError: labelmaps without a ``dataset.json`` that names them, or no named
            structure in any case.
    """
    names = {text_key(n): v for n, v in label_names(data).items() if v != 0}
    cases = []
    for files_of_case in files:
        try:
            case = _text_case(files_of_case, names)
        except (VolumeReadError, ValueError) as error:
            say(f"note: skipped {files_of_case.name}: {error}")
            continue
        if case.structures:
            cases.append(case)
    if not cases:
        raise DatasetError(f"{data}: no case has a named structure (--text needs names: a "
                           "dataset.json 'labels' entry, or segment names in .seg.nrrd "
                           "labels)")  # fmt: skip
    return cases


def _text_case(files: CaseFiles, names: dict[str, int]) -> TextCase:
    from ..io import read_volume

    image = read_volume(files.image)
    check_segmentable(image)
    structures = _structures(files.label, image, names)
    tiles = tuple(extract_crop(image, grid) for grid in text_tiles(image))
    truths = {
        name: tuple(in_crop(mask, image, tile.grid) for tile in tiles)
        for name, mask in structures.items()
    }
    return TextCase(files.name, image, tiles, structures, truths)


def _structures(path: Path, image: Volume, names: dict[str, int]) -> dict[str, np.ndarray]:
    """Name -> bool mask on the image's grid, for the names with a voxel in this case."""
    if is_segment_file(path):
        found: dict[str, np.ndarray] = {}
        for segment in read_segments(path, image):
            key = text_key(segment.name)
            found[key] = found[key] | segment.mask if key in found else segment.mask
        return {name: mask for name, mask in found.items() if mask.any()}
    if not names:
        raise DatasetError(f"{path}: a labelmap has no names; --text needs a dataset.json "
                           "naming its labels")  # fmt: skip
    from ..io import read_volume

    label = read_volume(path)
    masks = {}
    for name, value in names.items():
        try:
            masks[name] = label_mask(image, label, value)
        except CaseSkipped:  # not in this case
            continue
    return masks
