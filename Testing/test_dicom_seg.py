"""DICOM SEG out and in, on the shared CT series as an archive (PACS) holds it.

The SEG is written from the real series (``example_ct_dicom_pacs``: JPEG 2000 lossless pixels,
never decoded for the SEG), checked by DICOM's own validator (``dciodvfy``, Debian's dicom3tools),
read back by highdicom, by :func:`read_dicom_seg` and against the ``.seg.nrrd`` of the same
segments. The anonymised copy ``example_ct_dicom`` (its UIDs blanked) cannot be referenced.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import REQUIRE_SHARED_DATA, SHARED_DATA_DIR

from fastsam3d_core import Volume
from fastsam3d_core.io import (
    SegAlgorithm,
    Segment,
    dicom_seg_dataset,
    dicom_series_of,
    is_dicom_seg,
    read_dicom_seg,
    read_segmentation,
    read_volume,
    segment_codes,
    write_dicom_seg,
    write_segmentation,
)
from fastsam3d_core.io._cielab import dicom_lab_to_rgb, rgb_to_dicom_lab
from fastsam3d_core.io.dicom_seg import GENERIC_CODES

CT_DIR = SHARED_DATA_DIR / "totalseg_ct"
PACS_SERIES = CT_DIR / "example_ct_dicom_pacs"
ANONYMISED_SERIES = CT_DIR / "example_ct_dicom"
NIFTI_CT = CT_DIR / "example_ct_3mm.nii.gz"
SHA256 = "0123456789abcdef" * 4
ALGORITHM = SegAlgorithm("fastsam3d", "9.8.7", SHA256, semiautomatic=True)
#: A voxel of the liver box's own, away from the box, whose frame position is checked.
MARKED_VOXEL = (7, 9, 3)

pytestmark = pytest.mark.skipif(
    not PACS_SERIES.is_dir(), reason=f"shared example series not found at {PACS_SERIES}"
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The SEG of two segments (a box with one marked voxel, a threshold) and an empty one."""
    volume = read_volume(PACS_SERIES)
    series = dicom_series_of(PACS_SERIES, volume)
    box = np.zeros(volume.shape, dtype=bool)
    box[100:200, 150:300, 5:12] = True
    box[MARKED_VOXEL] = True
    bone = volume.array > 300
    bone[:, :, ::4] = False  # some empty frames in this segment too
    segments = [
        Segment("Liver", (0.8, 0.3, 0.2), box),
        Segment("bone_threshold", (0.9, 0.9, 0.7), bone),
        Segment("nothing yet", (0.1, 0.2, 0.9), np.zeros(volume.shape, dtype=bool)),
    ]
    path = tmp_path_factory.mktemp("seg") / "SEG.dcm"
    assert write_dicom_seg(path, segments, volume, series, ALGORITHM) == path
    return {"volume": volume, "series": series, "segments": segments, "path": path}


def test_series_files_are_the_volumes_slices_in_order(written: dict) -> None:
    """files[k] is slice k: the file's own pixels (read alone by ITK) are the volume's slice."""
    volume, series = written["volume"], written["series"]
    assert len(series.files) == volume.shape[2] == 20
    first = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert series.study_uid == first.StudyInstanceUID
    assert series.series_uid == first.SeriesInstanceUID
    assert series.frame_of_reference_uid == first.FrameOfReferenceUID
    for k in (0, MARKED_VOXEL[2], volume.shape[2] - 1):
        pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(series.files[k])))[0]  # (rows, cols)
        np.testing.assert_array_equal(pixels.T, volume.array[:, :, k])
    one_file = dicom_series_of(series.files[5], volume)  # a file of the series: the same series
    assert one_file == series


def test_passes_dciodvfy(written: dict) -> None:
    """DICOM's own validator finds no error (warnings are printed: see the report below)."""
    if shutil.which("dciodvfy") is None:
        if os.environ.get(REQUIRE_SHARED_DATA):
            pytest.fail("dciodvfy (Debian package dicom3tools) is not installed")
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    run = subprocess.run(
        ["dciodvfy", str(written["path"])], capture_output=True, text=True, timeout=120
    )
    lines = (run.stdout + run.stderr).splitlines()
    print("\n".join(lines))
    assert lines and lines[0].strip() == "Segmentation", lines  # the IOD it recognised
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, errors
    assert run.returncode == 0, lines


def test_highdicom_reads_the_frames_back(written: dict) -> None:
    series, segments = written["series"], written["segments"]
    seg = hd.seg.segread(written["path"])
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == series.study_uid
    assert seg.FrameOfReferenceUID == series.frame_of_reference_uid
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(series.sop_instance_uids), segment_numbers=[1, 2, 3]
    )  # (slice k, rows, columns, segment)
    for number, segment in enumerate(segments):
        np.testing.assert_array_equal(pixels[..., number].transpose(2, 1, 0), segment.mask)


def test_a_voxel_lands_in_its_source_slice_at_row_j_column_i(written: dict) -> None:
    """Checked with pydicom alone: the frame referencing the k-th file by position holds the
    voxel (i, j, k) at row j, column i, and nothing at the transposed place."""
    volume, series = written["volume"], written["series"]
    assert volume.ijk_to_ras[2, 2] > 0  # k runs up the patient (S), as ImagePositionPatient z
    by_height = sorted(
        series.files,
        key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    i, j, k = MARKED_VOXEL
    source_uid = pydicom.dcmread(by_height[k], stop_before_pixels=True).SOPInstanceUID
    seg = pydicom.dcmread(written["path"])
    hits = []
    for frame, groups in enumerate(seg.PerFrameFunctionalGroupsSequence):
        reference = groups.DerivationImageSequence[0].SourceImageSequence[0]
        number = groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        if reference.ReferencedSOPInstanceUID == source_uid and number == 1:
            hits.append(frame)
    assert len(hits) == 1
    pixels = seg.pixel_array[hits[0]]
    assert pixels[j, i] == 1 and pixels[i, j] == 0
    assert pixels.sum() == 1  # slice 3 holds only the marked voxel


def test_reads_back_equal_to_the_seg_nrrd_of_the_same_segments(
    written: dict, tmp_path: Path
) -> None:
    volume, series, segments = written["volume"], written["series"], written["segments"]
    read = read_dicom_seg(written["path"], volume, series)
    nrrd = tmp_path / "same.seg.nrrd"
    write_segmentation(nrrd, segments, volume)
    from_nrrd, grid = read_segmentation(nrrd)
    np.testing.assert_array_equal(grid.ijk_to_ras, volume.ijk_to_ras)
    assert [s.name for s in read] == [s.name for s in segments] == [s.name for s in from_nrrd]
    for mine, original, other in zip(read, segments, from_nrrd):
        np.testing.assert_array_equal(mine.mask, original.mask)
        np.testing.assert_array_equal(mine.mask, other.mask)
        np.testing.assert_allclose(mine.color, original.color, atol=1 / 255)
    assert read_dicom_seg(written["path"], volume)[0].mask.sum() == segments[0].mask.sum()


def test_empty_frames_are_omitted(written: dict) -> None:
    seg = pydicom.dcmread(written["path"], stop_before_pixels=True)
    slices_with_voxels = [int(s.mask.any(axis=(0, 1)).sum()) for s in written["segments"]]
    assert slices_with_voxels[0] == 8 and slices_with_voxels[2] == 0
    assert seg.NumberOfFrames == sum(slices_with_voxels)
    assert len(seg.SegmentSequence) == 3  # the empty segment is kept, as in a .seg.nrrd


def test_segments_carry_codes_colour_and_algorithm(written: dict) -> None:
    seg = pydicom.dcmread(written["path"], stop_before_pixels=True)
    liver, bone, _ = seg.SegmentSequence
    assert liver.SegmentLabel == "Liver"
    kind = liver.SegmentedPropertyTypeCodeSequence[0]
    category = liver.SegmentedPropertyCategoryCodeSequence[0]
    assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == (
        "10200004", "SCT", "Liver"
    )
    assert (category.CodeValue, category.CodeMeaning) == ("91723000", "Anatomical Structure")
    assert bone.SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # Tissue: generic
    assert len(liver.RecommendedDisplayCIELabValue) == 3
    assert liver.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert liver.SegmentAlgorithmName == "fastsam3d"
    algorithm = liver.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "fastsam3d" and algorithm.AlgorithmVersion == "9.8.7"
    family = algorithm.AlgorithmFamilyCodeSequence[0]
    assert (family.CodeValue, family.CodingSchemeDesignator) == ("123110", "DCM")
    assert SHA256 in algorithm.AlgorithmParameters
    assert seg.Manufacturer == "FastSAM3D" and seg.SoftwareVersions == "9.8.7"
    assert seg.SeriesDescription == "FastSAM3D segmentation"
    assert seg.SeriesInstanceUID != written["series"].series_uid


def test_automatic_segments_say_so(written: dict) -> None:
    automatic = dataclasses.replace(ALGORITHM, semiautomatic=False, weights_sha256="")
    dataset = dicom_seg_dataset(
        written["segments"][:1], written["volume"], written["series"], automatic
    )
    item = dataset.SegmentSequence[0]
    assert item.SegmentAlgorithmType == "AUTOMATIC"
    assert "AlgorithmParameters" not in item.SegmentationAlgorithmIdentificationSequence[0]


def test_segment_codes_table() -> None:
    assert segment_codes("liver")[1].value == "10200004"
    assert segment_codes("Kidney_Left")[1].value == "64033007"
    oedema = segment_codes("Oedema")
    assert (oedema[0].value, oedema[1].value) == ("49755003", "79654002")
    assert oedema[1].meaning == "Edema"
    assert segment_codes("tumour")[1].value == segment_codes("Neoplasm")[1].value == "108369006"
    assert segment_codes("spleen")[1].meaning == "Spleen"
    assert segment_codes("Segment_1") == GENERIC_CODES
    assert GENERIC_CODES[0].value == "85756007"


@pytest.mark.parametrize("rgb", [(1.0, 0.0, 0.0), (0.8, 0.3, 0.2), (0.0, 0.0, 0.0), (1, 1, 1)])
def test_colours_are_dicom_cielab_as_highdicom_converts_them(rgb: tuple) -> None:
    """Our conversion (written for highdicom versions without one) agrees with highdicom's own
    to 0.01 % of the range and comes back as it went in."""
    theirs = hd.color.CIELabColor.from_rgb(*[255 * value for value in rgb]).value
    mine = rgb_to_dicom_lab(rgb)
    assert max(abs(a - b) for a, b in zip(mine, theirs)) <= 8, (mine, theirs)
    np.testing.assert_allclose(dicom_lab_to_rgb(mine), rgb, atol=1e-3)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_seg_of_another_series_is_refused(written: dict) -> None:
    other = dataclasses.replace(written["series"], series_uid="1.2.826.0.1.3680043.8.498.1")
    with pytest.raises(ValueError) as refused:
        read_dicom_seg(written["path"], written["volume"], other)
    message = one_line(refused)
    assert message.startswith("SEG.dcm references series " + written["series"].series_uid)
    assert "not the image's 1.2.826.0.1.3680043.8.498.1" in message


def test_series_without_uids_is_refused_and_nothing_written(
    written: dict, tmp_path: Path
) -> None:
    volume = read_volume(ANONYMISED_SERIES)
    series = dicom_series_of(ANONYMISED_SERIES, volume)
    assert series.series_uid == "" and series.frame_of_reference_uid
    path = tmp_path / "out.dcm"
    with pytest.raises(ValueError) as refused:
        write_dicom_seg(path, written["segments"], volume, series, ALGORITHM)
    message = one_line(refused)
    assert "cannot reference this DICOM series" in message and "SeriesInstanceUID" in message
    assert list(tmp_path.iterdir()) == []


def test_empty_segmentation_is_refused_and_nothing_written(
    written: dict, tmp_path: Path
) -> None:
    volume = written["volume"]
    empty = [Segment("Liver", (1, 0, 0), np.zeros(volume.shape, dtype=bool))]
    with pytest.raises(ValueError) as refused:
        write_dicom_seg(tmp_path / "out.dcm", empty, volume, written["series"], ALGORITHM)
    assert one_line(refused).startswith("nothing to write: the segmentation is empty")
    assert list(tmp_path.iterdir()) == []


def test_nifti_image_has_no_dicom_series(written: dict) -> None:
    assert dicom_series_of(NIFTI_CT, read_volume(NIFTI_CT)) is None


def test_series_is_refused_for_a_volume_on_another_grid(written: dict) -> None:
    volume = written["volume"]
    affine = volume.ijk_to_ras.copy()
    affine[:3, 0] *= -1  # i runs the other way: rows would land mirrored
    with pytest.raises(ValueError) as refused:
        dicom_series_of(PACS_SERIES, Volume(volume.array, affine))
    assert "are not the volume's i and j axes" in one_line(refused)
    shifted = volume.ijk_to_ras.copy()
    shifted[2, 3] += 1.0  # half a slice along k
    with pytest.raises(ValueError) as refused:
        dicom_series_of(PACS_SERIES, Volume(volume.array, shifted))
    assert "not at the start of one of its slices" in one_line(refused)
    with pytest.raises(ValueError) as refused:
        read_dicom_seg(written["path"], Volume(volume.array, shifted))
    assert "not on its grid" in one_line(refused)


def test_seg_read_onto_a_larger_grid_lands_in_place(written: dict) -> None:
    """Frames are placed by position: on a grid padded by 2 slices below, the masks shift."""
    volume = written["volume"]
    affine = volume.ijk_to_ras.copy()
    affine[:3, 3] -= 2 * affine[:3, 2]
    padded = Volume(np.zeros((512, 512, 24), dtype=np.int16), affine)
    read = read_dicom_seg(written["path"], padded)
    np.testing.assert_array_equal(read[0].mask[:, :, 2:22], written["segments"][0].mask)
    assert not read[0].mask[:, :, :2].any() and not read[0].mask[:, :, 22:].any()


@pytest.mark.parametrize("kind", ["FRACTIONAL", "LABELMAP"])
def test_fractional_and_labelmap_segs_are_read(written: dict, kind: str, tmp_path: Path) -> None:
    """SEGs of the other types (made by other tools) are read too."""
    volume, series = written["volume"], written["series"]
    first = written["segments"][0].mask
    second = np.zeros(volume.shape, dtype=bool)
    second[300:320, 300:310, 2:4] = True
    descriptions = [
        hd.seg.SegmentDescription(n, name, *segment_codes(name), "MANUAL")
        for n, name in ((1, "liver"), (2, "spleen"))
    ]
    labels = (first + 2 * second).transpose(2, 1, 0).astype(np.uint8)
    pixels = labels if kind == "LABELMAP" else np.stack([labels == 1, labels == 2], -1)
    dataset = hd.seg.Segmentation(
        series.headers(), pixels.astype(np.uint8 if kind == "LABELMAP" else np.float32), kind,
        descriptions, hd.UID(), 5, hd.UID(), 1, "other", "tool", "1", "0",
    )
    path = tmp_path / f"{kind}.dcm"
    dataset.save_as(path)
    assert is_dicom_seg(path)
    read = read_dicom_seg(path, volume, series)
    assert [s.name for s in read] == ["liver", "spleen"]
    np.testing.assert_array_equal(read[0].mask, first)
    np.testing.assert_array_equal(read[1].mask, second)


def test_what_is_not_a_seg_is_refused(written: dict) -> None:
    volume, series = written["volume"], written["series"]
    assert is_dicom_seg(written["path"])
    assert not is_dicom_seg(series.files[0]) and not is_dicom_seg(NIFTI_CT)
    assert not is_dicom_seg(PACS_SERIES)
    with pytest.raises(ValueError) as refused:
        read_dicom_seg(series.files[0], volume)
    assert "a DICOM CT, not a segmentation (SEG)" in one_line(refused)
    with pytest.raises(ValueError) as refused:
        read_dicom_seg(NIFTI_CT, volume)
    assert "not a DICOM file" in one_line(refused)
