"""DICOM Segmentation (SEG) objects: written with highdicom, read onto a volume's grid.

A SEG written here is of the BINARY type (one bit per voxel; the newer LABELMAP type is poorly
supported by viewers and archives), one frame per source slice that holds voxels of a segment
(empty frames are omitted), each frame referencing its source instance. Frame ``k`` of a segment
is ``mask[:, :, k].T``: rows are ``j``, columns ``i``, as the source slice's pixels are, since the
volume's i and j axes are the series' row and column directions (checked).

Each segment carries its name (SegmentLabel), its colour (RecommendedDisplayCIELabValue), SNOMED
CT codes for its property category and type (:func:`segment_codes`), the algorithm type
(SEMIAUTOMATIC for clicks, else AUTOMATIC) and the algorithm's identification: the model's name,
the product version, the family "Artificial Intelligence" and, when known, the weights' SHA-256.

Reading rasterises each frame at its own position (PlanePositionSequence) on the volume's grid,
so a SEG is read onto any image on the same grid as its source, the source series included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..geometry.volume import Volume
from ._atomic import write_atomically
from ._cielab import dicom_lab_to_rgb, rgb_to_dicom_lab
from .dicom_source import DicomSeries
from .segmentation import Segment
from .suffixes import DICOM_SEG_SUFFIX

MANUFACTURER = "FastSAM3D"
MANUFACTURER_MODEL_NAME = "FastSAM3D Slicer"
SERIES_DESCRIPTION = "FastSAM3D segmentation"
#: A SEG is a series of its own; viewers list series by number, and the source is usually low.
_SERIES_NUMBER = 300
#: Software has no serial number; the attribute is required (Enhanced General Equipment).
_DEVICE_SERIAL_NUMBER = "0"
#: The colour of a segment read from a SEG that recommends none (Slicer's default grey).
DEFAULT_COLOR = (0.5, 0.5, 0.5)
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
_GRID_TOLERANCE = 1e-2  # voxels, for positions written as decimal strings
_ORIENTATION_TOLERANCE = 1e-4

#: Spelt out: pydicom 2.4 (what Python 3.9 gets) has two SCT "AnatomicalStructure" keywords
#: (123037004 and 91723000) and raises RuntimeError on the attribute; DICOM's CID 7150 uses
#: 91723000.
_ORGAN = Code("91723000", "SCT", "Anatomical Structure")
_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure  # 49755003
_TISSUE = codes.SCT.Tissue  # 85756007 "Tissue"
#: Segment names (lower case, words separated by single spaces) and their SNOMED CT property
#: category and type, as DICOM's CID 7150 (categories) and CID 7151/7159 (types) use them.
#: "left"/"right" in a name are not coded (the label keeps them): "kidney_left" is a Kidney.
STRUCTURE_CODES: dict[str, tuple[Code, Code]] = {
    **{
        name: (_ORGAN, code)
        for name, code in (
            ("liver", codes.SCT.Liver),  # 10200004
            ("spleen", codes.SCT.Spleen),  # 78961009
            ("kidney", codes.SCT.Kidney),  # 64033007
            ("aorta", codes.SCT.Aorta),  # 15825003
            ("pancreas", codes.SCT.Pancreas),  # 15776009
            ("lung", codes.SCT.Lung),  # 39607008
            ("heart", codes.SCT.Heart),  # 80891009
            ("brain", codes.SCT.Brain),  # 12738006
            ("gallbladder", codes.SCT.Gallbladder),  # 28231008
            ("stomach", codes.SCT.Stomach),  # 69695003
            ("esophagus", codes.SCT.Esophagus),  # 32849002
            ("oesophagus", codes.SCT.Esophagus),
            ("urinary bladder", codes.SCT.Bladder),  # 89837001
            ("bladder", codes.SCT.Bladder),
            ("prostate", codes.SCT.Prostate),  # 41216001
        )
    },
    **{
        name: (_ABNORMAL, code)
        for name, code in (
            ("edema", codes.SCT.Edema),  # 79654002
            ("oedema", codes.SCT.Edema),
            ("tumor", codes.SCT.Neoplasm),  # 108369006 "Neoplasm"
            ("tumour", codes.SCT.Neoplasm),
            ("neoplasm", codes.SCT.Neoplasm),
            ("lesion", codes.SCT.Lesion),  # 52988006
            ("cyst", codes.SCT.Cyst),  # 367643001
            ("necrosis", codes.SCT.Necrosis),  # 6574001
        )
    },
}
#: The codes of a name not in the table: a segment of tissue, as Slicer's generic terminology.
GENERIC_CODES = (_TISSUE, _TISSUE)


def segment_codes(name: str) -> tuple[Code, Code]:
    """The SNOMED CT (property category, property type) of a segment named ``name``.

    Case, underscores, hyphens and the words "left" and "right" do not matter ("Kidney_Left"
    is a Kidney); a name not in :data:`STRUCTURE_CODES` gets :data:`GENERIC_CODES` (Tissue).
    """
    words = re.sub(r"[\s_\-]+", " ", name.lower()).strip()
    if words in STRUCTURE_CODES:
        return STRUCTURE_CODES[words]
    sideless = " ".join(word for word in words.split() if word not in ("left", "right"))
    return STRUCTURE_CODES.get(sideless, GENERIC_CODES)


@dataclass(frozen=True)
class SegAlgorithm:
    """What made the segments, for the SEG's algorithm identification.

    Attributes:
        name: the model's name, e.g. "fastsam3d".
        version: the product version (``fastsam3d_core.__version__``).
        weights_sha256: the weights file's SHA-256 in hex, or ``""`` if unknown.
        semiautomatic: True for segments made with clicks (SEMIAUTOMATIC), False for AUTOMATIC.
    """

    name: str
    version: str
    weights_sha256: str = ""
    semiautomatic: bool = True

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ValueError(f"a SEG's algorithm needs a name and a version, not {self!r}")


def dicom_seg_dataset(
    segments: Sequence[Segment], volume: Volume, series: DicomSeries, algorithm: SegAlgorithm
) -> pydicom.Dataset:
    """The SEG of ``segments`` (masks ``(I, J, K)`` on ``volume``'s grid) referencing ``series``.

    Segment ``n`` (from 0) is segment number ``n + 1``. Segments without voxels are kept (no
    frames), like a ``.seg.nrrd`` keeps them; a segmentation with no voxel at all is refused.

    Raises:
        ValueError: one line: no voxel in any segment; the series cannot be referenced (no
            UIDs) or is not the volume's (``series.files`` not one per slice); a mask of another
            shape.
    """
    segments = list(segments)
    for segment in segments:
        if segment.mask.shape != volume.shape:
            raise ValueError(
                f"segment {segment.name!r} has shape {segment.mask.shape}, the volume "
                f"{volume.shape}"
            )
    if not any(segment.mask.any() for segment in segments):
        raise ValueError(
            "nothing to write: the segmentation is empty (no segment has a voxel); "
            "segment something first"
        )
    series.check_referencable("a DICOM SEG")
    if len(series.files) != volume.shape[2]:
        raise ValueError(
            f"{series.files[0].parent}: {len(series.files)} DICOM files for a volume of "
            f"{volume.shape[2]} slices; give the series the volume was read from"
        )
    # (K, rows = J, columns = I, segments): frame k of segment n is mask_n[:, :, k].T.
    frames = np.stack([segment.mask for segment in segments], axis=-1).transpose(2, 1, 0, 3)
    return hd.seg.Segmentation(
        source_images=series.headers(),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(segments, algorithm),
        series_instance_uid=hd.UID(),
        series_number=_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER_MODEL_NAME,
        software_versions=algorithm.version,
        device_serial_number=_DEVICE_SERIAL_NUMBER,
        content_label="FASTSAM3D",
        content_description=SERIES_DESCRIPTION,
        omit_empty_frames=True,
        series_description=SERIES_DESCRIPTION,
    )


def _descriptions(
    segments: list[Segment], algorithm: SegAlgorithm
) -> list[hd.seg.SegmentDescription]:
    parameters = {"weights_sha256": algorithm.weights_sha256} if algorithm.weights_sha256 else None
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.DCM.ArtificialIntelligence,  # CID 7162
        version=algorithm.version,
        parameters=parameters,
    )
    kind = (
        hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
        if algorithm.semiautomatic
        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    )
    descriptions = []
    for number, segment in enumerate(segments, start=1):
        category, property_type = segment_codes(segment.name)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.name,
            segmented_property_category=category,
            segmented_property_type=property_type,
            algorithm_type=kind,
            algorithm_identification=identification,
        )
        # Set directly: highdicom takes a colour only from 0.24, which needs Python 3.10.
        description.RecommendedDisplayCIELabValue = list(rgb_to_dicom_lab(segment.color))
        descriptions.append(description)
    return descriptions


def write_dicom_seg(
    path: str | os.PathLike[str],
    segments: Sequence[Segment],
    volume: Volume,
    series: DicomSeries,
    algorithm: SegAlgorithm,
) -> Path:
    """Write the SEG of :func:`dicom_seg_dataset` to ``path``, atomically.

    Args:
        path: a file ending in ``.dcm`` (replaced if it exists).
        segments, volume, series, algorithm: as :func:`dicom_seg_dataset` takes them.

    Returns:
        ``path``.

    Raises:
        ValueError: another extension, or what :func:`dicom_seg_dataset` refuses; nothing is
            written then.
        OSError: the folder does not exist, or writing failed.
    """
    path = Path(path)
    if not path.name.lower().endswith(DICOM_SEG_SUFFIX):
        raise ValueError(f"{path}: a DICOM SEG is written to a file ending in {DICOM_SEG_SUFFIX}")
    dataset = dicom_seg_dataset(segments, volume, series, algorithm)
    write_atomically(path, DICOM_SEG_SUFFIX, lambda temporary: dataset.save_as(temporary))
    return path


def is_dicom_seg(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a DICOM file whose Modality is SEG (only its header is read)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return False
    return header.get("Modality") == "SEG"


def read_dicom_seg(
    path: str | os.PathLike[str], volume: Volume, series: DicomSeries | None = None
) -> list[Segment]:
    """Read a DICOM SEG's segments onto ``volume``'s grid.

    Each frame is placed by its own position (PlanePositionSequence), so the SEG is read onto
    any image on its source's grid. BINARY, FRACTIONAL (a voxel is in where its value is over
    half the maximum) and LABELMAP SEGs are read.

    Args:
        path: the SEG file.
        volume: the image whose grid the masks are wanted on, ``(I, J, K)``.
        series: the image's DICOM series, if it has one: a SEG that does not reference it is
            refused.

    Returns:
        One :class:`Segment` per segment of the SEG, in its order: name = SegmentLabel, colour
        = RecommendedDisplayCIELabValue (else :data:`DEFAULT_COLOR`), mask bool ``(I, J, K)``.

    Raises:
        ValueError: one line naming the file: not DICOM, not a SEG, a SEG of another series than
            ``series``, or frames that are not slices of the volume's grid.
    """
    path = Path(path)
    dataset = _read_seg(path)
    if series is not None:
        _check_references(path, dataset, series)
    masks = _rasterised(path, dataset, volume)
    segments = []
    for item in dataset.SegmentSequence:
        number = int(item.SegmentNumber)
        if number == 0:  # a LABELMAP's background (pixel value 0), not a segment
            continue
        name = str(item.get("SegmentLabel", "") or f"Segment_{number}")
        empty = np.zeros(volume.shape, dtype=bool)
        segments.append(Segment(name, _color(item), masks.get(number, empty)))
    return segments


def _read_seg(path: Path) -> pydicom.Dataset:
    if not path.is_file():
        raise ValueError(f"{path}: DICOM SEG file not found")
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError) as error:
        raise ValueError(f"{path}: not a DICOM file, so not a DICOM SEG") from error
    modality = dataset.get("Modality", "")
    if modality != "SEG" or "SegmentSequence" not in dataset:
        raise ValueError(
            f"{path}: a DICOM {modality or 'file without Modality'}, not a segmentation (SEG)"
        )
    return dataset


def _check_references(path: Path, dataset: pydicom.Dataset, series: DicomSeries) -> None:
    referenced = [
        str(item.get("SeriesInstanceUID", ""))
        for item in dataset.get("ReferencedSeriesSequence", ())
    ]
    if series.series_uid not in referenced:
        named = ", ".join(uid for uid in referenced if uid) or "no series"
        own = series.series_uid or "(none: its files have no SeriesInstanceUID)"
        raise ValueError(
            f"{path.name} references series {named}, not the image's {own}; give the image "
            "the SEG was made on"
        )


def _color(item: pydicom.Dataset) -> tuple[float, float, float]:
    value = item.get("RecommendedDisplayCIELabValue")
    if not value or len(value) != 3:
        return DEFAULT_COLOR
    return dicom_lab_to_rgb((int(value[0]), int(value[1]), int(value[2])))


def _rasterised(path: Path, dataset: pydicom.Dataset, volume: Volume) -> dict[int, np.ndarray]:
    """Segment number -> its mask bool ``(I, J, K)``, each frame put where its position says."""
    kind = str(dataset.get("SegmentationType", "BINARY"))
    frames_count = int(dataset.get("NumberOfFrames", 1))
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence", ())
    if len(per_frame) != frames_count:
        raise ValueError(
            f"{path}: {frames_count} frames but {len(per_frame)} per-frame positions; only SEGs "
            "that give each frame its position are read"
        )
    pixels = dataset.pixel_array.reshape(frames_count, int(dataset.Rows), int(dataset.Columns))
    shared = dataset.get("SharedFunctionalGroupsSequence", [pydicom.Dataset()])[0]
    numbers = [int(item.SegmentNumber) for item in dataset.SegmentSequence]
    numbers = [number for number in numbers if number != 0]
    masks: dict[int, np.ndarray] = {}
    for frame, groups in zip(pixels, per_frame):
        i, j, k = _frame_origin(path, groups, shared, volume, frame.shape)
        box = (slice(i, i + frame.shape[1]), slice(j, j + frame.shape[0]), k)
        for number, voxels in _frame_masks(dataset, kind, groups, frame, numbers):
            mask = masks.setdefault(number, np.zeros(volume.shape, dtype=bool))
            mask[box] |= voxels.T
    return masks


def _frame_masks(
    dataset: pydicom.Dataset,
    kind: str,
    groups: pydicom.Dataset,
    frame: np.ndarray,
    numbers: list[int],
) -> list[tuple[int, np.ndarray]]:
    """(segment number, its voxels (rows, columns)) of one frame."""
    if kind == "LABELMAP":
        return [(number, frame == number) for number in numbers]
    # One segment: highdicom (as the standard allows) names it once, in the shared groups.
    if "SegmentIdentificationSequence" not in groups:
        groups = dataset.SharedFunctionalGroupsSequence[0]
    number = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    if kind == "FRACTIONAL":
        return [(number, 2 * frame.astype(np.int64) > int(dataset.MaximumFractionalValue))]
    return [(number, frame > 0)]


def _frame_origin(
    path: Path,
    groups: pydicom.Dataset,
    shared: pydicom.Dataset,
    volume: Volume,
    size: tuple[int, int],
) -> tuple[int, int, int]:
    """The voxel (i, j, k) of a frame's first pixel, once its plane is checked to be a slice
    of the volume's grid: rows along i, columns along j, the same pixel spacing, in the grid."""

    def attribute(sequence: str, keyword: str) -> list[float]:
        for source in (groups, shared):
            if sequence in source and keyword in source[sequence].value[0]:
                return [float(value) for value in source[sequence].value[0].get(keyword)]
        raise ValueError(f"{path}: a frame without {keyword} ({sequence})")

    orientation = np.array(attribute("PlaneOrientationSequence", "ImageOrientationPatient"))
    axes = volume.direction
    if (
        np.abs(orientation[:3] * _LPS_TO_RAS - axes[:, 0]).max() > _ORIENTATION_TOLERANCE
        or np.abs(orientation[3:] * _LPS_TO_RAS - axes[:, 1]).max() > _ORIENTATION_TOLERANCE
    ):
        raise ValueError(
            f"{path}: the SEG's frames are not oriented as the image's slices (rows along i, "
            "columns along j); give the image the SEG was made on"
        )
    row_spacing, column_spacing = attribute("PixelMeasuresSequence", "PixelSpacing")
    if not np.allclose([column_spacing, row_spacing], volume.spacing[:2], rtol=1e-4):
        raise ValueError(
            f"{path}: the SEG's pixels are {column_spacing:g} × {row_spacing:g} mm, the image's "
            f"{volume.spacing[0]:g} × {volume.spacing[1]:g} mm; give the image the SEG was made on"
        )
    position = np.array(attribute("PlanePositionSequence", "ImagePositionPatient"))
    index = volume.ras_to_index(position * _LPS_TO_RAS)
    origin = np.rint(index).astype(int)
    rows, columns = size
    if (
        np.abs(index - origin).max() > _GRID_TOLERANCE
        or origin.min() < 0
        or origin[0] + columns > volume.shape[0]
        or origin[1] + rows > volume.shape[1]
        or origin[2] >= volume.shape[2]
    ):
        where = ", ".join(f"{value:.3f}" for value in index)
        raise ValueError(
            f"{path}: a frame starts at voxel ({where}) of the image, not on its grid or not "
            "inside it; give the image the SEG was made on"
        )
    return int(origin[0]), int(origin[1]), int(origin[2])
