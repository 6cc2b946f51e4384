"""Reading volumes, writing labelmaps and Slicer segmentations: geometry, round trips, errors.

Geometry is checked against independent computations: nibabel's affine, SimpleITK's own
index-to-point mapping with LPS turned into RAS by hand, and DICOM tags read file by file.
"""

from __future__ import annotations

import gzip
import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fastsam3d_core.geometry import Volume
from fastsam3d_core.io import (
    ImageGeometry,
    Segment,
    VolumeReadError,
    read_segmentation,
    read_volume,
    write_labelmap,
    write_segmentation,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TOTALSEG = DATA / "totalseg_ct"
BRATS = DATA / "brats2021_flair_edema"
NIFTI_FILES = [
    TOTALSEG / "aorta_ct.nii.gz",
    TOTALSEG / "aorta_label.nii.gz",
    TOTALSEG / "example_ct_3mm.nii.gz",
    TOTALSEG / "example_seg_3mm.nii.gz",
    BRATS / "imagesTr" / "BraTS2021_01646.nii.gz",
    BRATS / "labelsTr" / "BraTS2021_01646.nii.gz",
]
DICOM_DIR = TOTALSEG / "example_ct_dicom"
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data not found: {path}")
    return path


def oblique_reference(shape: tuple[int, int, int] = (6, 7, 5)) -> Volume:
    """A grid whose axes are permuted, one flipped, rotated off every axis, spacing anisotropic."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(0.3) * cross + (1 - np.cos(0.3)) * cross @ cross
    permutation = np.array([[0.0, 0, -1], [1, 0, 0], [0, 1, 0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ permutation @ np.diag([0.7, 1.3, 2.9])
    affine[:3, 3] = [-12.3, 45.6, 7.89]
    return Volume(np.zeros(shape, dtype=np.int16), affine)


def write_dicom_series(folder: Path, slices: np.ndarray, uid: str, prefix: str = "") -> np.ndarray:
    """Write ``slices`` (k, j, i) as an oblique DICOM series, files named in reverse order.

    Returns the ijk-to-RAS affine the series describes, computed from the tags written.
    """
    row, col, spacing = np.array([0.6, 0.8, 0.0]), np.array([-0.8, 0.6, 0.0]), (0.5, 0.75, 2.5)
    normal, origin = np.cross(row, col), np.array([10.5, -20.25, 30.0])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, plane in enumerate(slices):
        image = sitk.GetImageFromArray(plane)
        image.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": "CT",
            "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.99",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:g}" for v in origin + k * spacing[2] * normal),
            "0020|0037": "\\".join(f"{v:g}" for v in [*row, *col]),
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{len(slices) - k:03d}.dcm"))
        writer.Execute(image)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.column_stack([row, col, normal]) * spacing
    ijk_to_lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps


# --- reading real scans -------------------------------------------------------------------------


@pytest.mark.parametrize("path", NIFTI_FILES, ids=lambda p: p.parent.name + "/" + p.name)
def test_nifti_matches_nibabel(path: Path) -> None:
    nibabel = pytest.importorskip("nibabel")
    volume = read_volume(need(path))
    reference = nibabel.load(path)
    voxels = np.asanyarray(reference.dataobj)
    assert volume.shape == reference.shape
    assert volume.array.dtype == voxels.dtype
    assert np.array_equal(volume.array, voxels)  # the (i, j, k) order, not SimpleITK's (k, j, i)
    np.testing.assert_allclose(volume.ijk_to_ras, reference.affine, rtol=0, atol=1e-5)


@pytest.mark.parametrize("path", [*NIFTI_FILES, DICOM_DIR], ids=lambda p: p.name)
def test_geometry_matches_itk_points(path: Path) -> None:
    volume = read_volume(need(path))
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    corners = itertools.product(*[(0, n - 1) for n in volume.shape])
    for index in [*corners, (1.25, 2.5, 0.75)]:
        lps = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
        ras = np.array(lps) * LPS_TO_RAS
        np.testing.assert_allclose(volume.index_to_ras(np.array(index)), ras, atol=1e-9)
    for index in [(0, 0, 0), (3, 5, 1), tuple(n - 1 for n in volume.shape)]:
        assert volume.array[index] == image[index]  # SimpleITK images index (i, j, k) too


def test_aorta_volume_has_lps_flipped_axes() -> None:
    volume = read_volume(need(TOTALSEG / "aorta_ct.nii.gz"))
    assert volume.shape == (120, 126, 164)
    np.testing.assert_array_equal(np.diag(volume.ijk_to_ras)[:3], [-1.5, -1.5, 1.5])
    # Voxel (0, 0, 0) lies at the file's sform offset, to the left and anterior of the others.
    np.testing.assert_allclose(volume.origin_ras, [71.658203125, 255.658203125, 540.2000122])
    assert volume.index_to_ras(np.array([10, 10, 0]))[0] < volume.origin_ras[0]


def test_dicom_series_is_sorted_by_position_with_tag_geometry() -> None:
    files = sorted(need(DICOM_DIR).iterdir())
    volume = read_volume(DICOM_DIR)
    assert volume.shape == (512, 512, 20)
    assert volume.array.dtype == np.int16
    slices = [sitk.ReadImage(str(file)) for file in files]
    orientation = np.array(slices[0].GetMetaData("0020|0037").split("\\"), dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [np.array(s.GetMetaData("0020|0032").split("\\"), dtype=float) for s in slices]
    order = np.argsort([position @ normal for position in positions])
    row_spacing, column_spacing = map(float, slices[0].GetMetaData("0028|0030").split("\\"))
    gaps = np.diff([positions[n] @ normal for n in order])
    np.testing.assert_allclose(volume.spacing, [column_spacing, row_spacing, gaps.mean()])
    assert 0.3 < volume.spacing.min() and volume.spacing.max() < 5.0
    for k, n in enumerate(order):
        np.testing.assert_allclose(
            volume.index_to_ras(np.array([0, 0, k])), positions[n] * LPS_TO_RAS
        )
        assert np.array_equal(volume.array[:, :, k], sitk.GetArrayFromImage(slices[n])[0].T)


def test_one_dicom_file_reads_its_whole_series() -> None:
    middle = sorted(need(DICOM_DIR).iterdir())[7]
    from_file, from_folder = read_volume(middle), read_volume(DICOM_DIR)
    assert np.array_equal(from_file.array, from_folder.array)
    assert np.array_equal(from_file.ijk_to_ras, from_folder.ijk_to_ras)


# --- DICOM written here --------------------------------------------------------------------------


def test_oblique_dicom_series_geometry(tmp_path: Path) -> None:
    slices = np.random.default_rng(0).integers(-1000, 1000, (4, 6, 5)).astype(np.int16)
    expected = write_dicom_series(tmp_path, slices, "1.2.826.0.1.3680043.2.1125.1.1")
    volume = read_volume(tmp_path)
    np.testing.assert_allclose(volume.ijk_to_ras, expected, atol=1e-9)
    assert np.array_equal(volume.array, slices.transpose(2, 1, 0))


def test_folder_with_two_series_reads_the_largest_and_says_so(tmp_path: Path) -> None:
    big, small = "1.2.826.0.1.3680043.2.1125.1.2", "1.2.826.0.1.3680043.2.1125.1.3"
    write_dicom_series(tmp_path, np.zeros((5, 4, 4), np.int16), big, prefix="a")
    write_dicom_series(tmp_path, np.ones((3, 4, 4), np.int16), small, prefix="b")
    with pytest.warns(UserWarning, match=rf"2 DICOM series; reading the largest, {big}"):
        assert read_volume(tmp_path).shape == (4, 4, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = read_volume(tmp_path / "b001.dcm")
    assert volume.shape == (4, 4, 3) and np.all(volume.array == 1)


def test_single_slice_is_a_volume(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, np.full((1, 4, 3), 7, np.int16), "1.2.826.0.1.3680043.2.1125.1.4")
    assert read_volume(tmp_path / "001.dcm").shape == (3, 4, 1)
    sitk.WriteImage(sitk.Image([4, 5, 1], sitk.sitkUInt8), str(tmp_path / "slice.nrrd"))
    assert read_volume(tmp_path / "slice.nrrd").shape == (4, 5, 1)


# --- errors on reading ---------------------------------------------------------------------------


def expect_read_error(path: Path, match: str) -> None:
    with pytest.raises(VolumeReadError, match=match) as caught:
        read_volume(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_missing_path(tmp_path: Path) -> None:
    expect_read_error(tmp_path / "nothing.nii.gz", "not found")


def test_folders_without_dicom(tmp_path: Path) -> None:
    expect_read_error(tmp_path, "no DICOM series")
    sitk.WriteImage(sitk.Image([3, 3, 3], sitk.sitkUInt8), str(tmp_path / "image.nii.gz"))
    expect_read_error(tmp_path, "no DICOM series")


def test_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    expect_read_error(tmp_path / "notes.txt", "not a readable image")
    (tmp_path / "noise.nii.gz").write_bytes(np.random.default_rng(1).bytes(2000))
    expect_read_error(tmp_path / "noise.nii.gz", "not a readable image")
    sitk.WriteImage(sitk.Image([5, 5], sitk.sitkUInt8), str(tmp_path / "photo.png"))
    expect_read_error(tmp_path / "photo.png", "a PNG image, a format not read here")


@pytest.mark.parametrize("name", ["cut.nii", "cut.nii.gz", "cut.nrrd", "cut.mha"])
def test_truncated_files(tmp_path: Path, name: str) -> None:
    # ITK reads truncated NIfTI data without complaint; read_volume must not.
    image = sitk.GetImageFromArray(np.random.default_rng(2).integers(0, 999, (30, 40, 50)))
    sitk.WriteImage(image, str(tmp_path / f"whole{name[3:]}"), useCompression=True)
    whole = (tmp_path / f"whole{name[3:]}").read_bytes()
    (tmp_path / name).write_bytes(whole[: len(whole) * 2 // 3])
    expect_read_error(tmp_path / name, "truncated|could not read")


def test_images_that_are_not_3d_scalar_volumes(tmp_path: Path) -> None:
    images = {
        "flat.nrrd": (sitk.Image([5, 6], sitk.sitkInt16), "a 2-D image"),
        "series.nrrd": (sitk.Image([4, 4, 4, 2], sitk.sitkInt16), "not a 3-D scalar volume"),
        "field.nrrd": (sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), "3 value"),
    }
    for name, (image, match) in images.items():
        sitk.WriteImage(image, str(tmp_path / name))
        expect_read_error(tmp_path / name, match)
    masks = [np.ones((4, 4, 4), bool), np.ones((4, 4, 4), bool)]
    segments = [Segment(f"s{n}", (1, 0, 0), mask) for n, mask in enumerate(masks)]
    write_segmentation(tmp_path / "layers.seg.nrrd", segments, oblique_reference((4, 4, 4)))
    expect_read_error(tmp_path / "layers.seg.nrrd", "use read_segmentation|read_segmentation")


def test_empty_volume(tmp_path: Path) -> None:
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4 4 0\nElementType = MET_UCHAR\n"
    (tmp_path / "empty.mha").write_text(header + "ElementDataFile = LOCAL\n")
    expect_read_error(tmp_path / "empty.mha", "empty")


# --- labelmaps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".nii.gz"])
def test_labelmap_round_trip_on_real_scan(tmp_path: Path, suffix: str) -> None:
    reference = read_volume(need(TOTALSEG / "aorta_ct.nii.gz"))
    labels = read_volume(TOTALSEG / "aorta_label.nii.gz").array
    write_labelmap(tmp_path / f"aorta{suffix}", labels, reference)
    back = read_volume(tmp_path / f"aorta{suffix}")
    assert back.array.dtype == labels.dtype and np.array_equal(back.array, labels)
    assert np.array_equal(back.ijk_to_ras, reference.ijk_to_ras)


@pytest.mark.parametrize(("suffix", "atol"), [(".nrrd", 1e-12), (".nii", 2e-5), (".nii.gz", 2e-5)])
def test_labelmap_round_trip_oblique(tmp_path: Path, suffix: str, atol: float) -> None:
    reference = oblique_reference()
    labels = np.random.default_rng(3).integers(-3, 40, reference.shape).astype(np.int16)
    write_labelmap(tmp_path / f"labels{suffix}", labels, reference)
    back = read_volume(tmp_path / f"labels{suffix}")  # NIfTI stores geometry in float32
    assert back.array.dtype == np.int16 and np.array_equal(back.array, labels)
    np.testing.assert_allclose(back.ijk_to_ras, reference.ijk_to_ras, rtol=0, atol=atol)
    write_labelmap(tmp_path / f"labels{suffix}", labels > 5, reference)  # replaces the file
    assert read_volume(tmp_path / f"labels{suffix}").array.dtype == np.uint8


@pytest.mark.parametrize("stem", ["a" * 240, "患者" * 40], ids=["ascii", "utf-8"])
def test_an_output_name_near_the_file_systems_limit_is_written(tmp_path: Path, stem: str) -> None:
    # The temporary name beside it must fit too (255 bytes on Linux and macOS file systems).
    from fastsam3d_core.io import check_output_path

    path = tmp_path / (stem + ".seg.nrrd")
    reference = oblique_reference()
    write_segmentation(
        check_output_path(path),
        [Segment("a", (1, 0, 0), np.ones(reference.shape, bool))],
        reference,
    )
    assert os.listdir(tmp_path) == [path.name]


def test_labelmap_rejects_bad_requests(tmp_path: Path) -> None:
    reference = oblique_reference()
    labels = np.zeros(reference.shape, np.uint8)
    (tmp_path / "keep.nrrd").write_bytes(b"old")
    with pytest.raises(ValueError, match="extension '.mha'"):
        write_labelmap(tmp_path / "labels.mha", labels, reference)
    with pytest.raises(ValueError, match="integers or booleans, not float32"):
        write_labelmap(tmp_path / "keep.nrrd", labels.astype(np.float32), reference)
    with pytest.raises(ValueError, match=r"shape \(6, 7, 4\)"):
        write_labelmap(tmp_path / "keep.nrrd", labels[..., :4], reference)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_labelmap(tmp_path / "no" / "labels.nrrd", labels, reference)
    assert sorted(os.listdir(tmp_path)) == ["keep.nrrd"]
    assert (tmp_path / "keep.nrrd").read_bytes() == b"old"


# --- segmentations -------------------------------------------------------------------------------


def three_segments(shape: tuple[int, int, int]) -> list[Segment]:
    """Liver and tumour overlap; a vessel, with a name to escape, touches neither."""
    liver, tumour, vessel = (np.zeros(shape, bool) for _ in range(3))
    liver[1:4, 1:5, 0:3] = True
    tumour[3:5, 4:6, 2:4] = True
    vessel[5, 0, 4] = True
    return [
        Segment("Liver", (0.8666, 0.4, 0.2156), liver),
        Segment("Läsion 1", (1 / 3, 0.123456789012345, 1.0), tumour, {"Source": "FastSAM3D"}),
        Segment("vessel\\new\nbranch", (0.0, 0.5, 0.0), vessel.astype(np.uint8), segment_id="v"),
    ]


def bounding_extent(mask: np.ndarray) -> str:
    hits = np.argwhere(mask)
    return " ".join(f"{lo} {hi}" for lo, hi in zip(hits.min(axis=0), hits.max(axis=0)))


def test_segmentation_round_trip_with_overlap(tmp_path: Path) -> None:
    reference = oblique_reference()
    segments = three_segments(reference.shape)
    write_segmentation(tmp_path / "s.seg.nrrd", segments, reference)
    back, grid = read_segmentation(tmp_path / "s.seg.nrrd")
    assert np.array_equal(grid.ijk_to_ras, reference.ijk_to_ras) and grid.shape == reference.shape
    assert [s.name for s in back] == [s.name for s in segments]
    assert [s.color for s in back] == [s.color for s in segments]
    assert [s.segment_id for s in back] == ["Segment_1", "Segment_2", "v"]
    assert back[1].tags == {"Source": "FastSAM3D"}
    assert back[0].tags == {"Segmentation.Status": "inprogress"}
    for written, read in zip(segments, back):
        assert read.mask.dtype == bool and np.array_equal(read.mask, written.mask)
    # Checked by ITK's NRRD reader (teem, as in Slicer), independently of read_segmentation:
    image = sitk.ReadImage(str(tmp_path / "s.seg.nrrd"))
    assert image.GetNumberOfComponentsPerPixel() == 2  # two layers
    assert [image.GetMetaData(f"Segment{n}_Layer") for n in range(3)] == ["0", "1", "0"]
    for n, segment in enumerate(segments):
        assert image.GetMetaData(f"Segment{n}_Extent") == bounding_extent(segment.mask)
        assert image.GetMetaData(f"Segment{n}_LabelValue") == str(n + 1)
    assert image.GetMetaData("Segment2_Name") == "vessel\\new\nbranch"


def test_segmentation_file_layout_with_pynrrd(tmp_path: Path) -> None:
    nrrd = pytest.importorskip("nrrd")
    reference = oblique_reference()
    segments = three_segments(reference.shape)
    write_segmentation(tmp_path / "s.seg.nrrd", segments, reference)
    data, header = nrrd.read(str(tmp_path / "s.seg.nrrd"))
    assert header["kinds"] == ["list", "domain", "domain", "domain"]
    assert header["space"] == "left-posterior-superior"
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ reference.ijk_to_ras
    assert np.array_equal(header["space directions"][1:], ijk_to_lps[:3, :3].T)
    assert np.array_equal(header["space origin"], ijk_to_lps[:3, 3])
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert header["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    assert header["Segment1_Color"] == f"{1 / 3!r} 0.123456789012345 1.0"
    assert np.array_equal(data[0] == 1, segments[0].mask) and np.array_equal(
        data[1] == 2, segments[1].mask
    )


def test_segmentation_without_overlap_is_one_labelmap(tmp_path: Path) -> None:
    reference = read_volume(need(TOTALSEG / "example_ct_3mm.nii.gz"))
    organs = read_volume(TOTALSEG / "example_seg_3mm.nii.gz").array
    values = [v for v in np.unique(organs) if v][:3]
    segments = [
        Segment(f"organ {v}", (0.1 * n, 0.2, 0.3), organs == v) for n, v in enumerate(values)
    ]
    write_segmentation(tmp_path / "organs.seg.nrrd", segments, reference)
    assert b"kinds: domain domain domain\n" in (tmp_path / "organs.seg.nrrd").read_bytes()[:2000]
    as_labelmap = read_volume(tmp_path / "organs.seg.nrrd")  # segment n is label n + 1
    expected = np.zeros_like(organs)
    for n, value in enumerate(values):
        expected[organs == value] = n + 1
    assert np.array_equal(as_labelmap.array, expected)
    back, grid = read_segmentation(tmp_path / "organs.seg.nrrd")
    assert np.array_equal(grid.ijk_to_ras, reference.ijk_to_ras)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(back, segments))


def test_empty_segments_and_rewriting_from_the_read_grid(tmp_path: Path) -> None:
    shape = (5, 4, 3)
    empty = Segment("nothing yet", (0.5, 0.5, 0.5), np.zeros(shape, bool))
    write_segmentation(tmp_path / "a.seg.nrrd", [empty], oblique_reference(shape))
    assert sitk.ReadImage(str(tmp_path / "a.seg.nrrd")).GetMetaData("Segment0_Extent") == (
        "0 -1 0 -1 0 -1"
    )
    back, grid = read_segmentation(tmp_path / "a.seg.nrrd")
    assert isinstance(grid, ImageGeometry) and not back[0].mask.any()
    write_segmentation(tmp_path / "b.seg.nrrd", [], grid)
    assert read_segmentation(tmp_path / "b.seg.nrrd")[0] == []


# A segmentation as Slicer writes it: cropped grid (origin shifted), raw data, per-layer labels.
TERMINOLOGY = "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123^Liver"
SLICER_FIELDS = {
    "Segment0_Color": "0.501961 0.682353 0.501961",
    "Segment0_Extent": "0 1 0 1 0 0",
    "Segment0_ID": "Segment_1",
    "Segment0_LabelValue": "1",
    "Segment0_Layer": "0",
    "Segment0_Name": "Leber",
    "Segment0_Tags": f"Segmentation.Status:completed|TerminologyEntry:{TERMINOLOGY}|",
    "Segment1_Color": "0 0 1",
    "Segment1_Extent": "2 2 2 2 1 1",
    "Segment1_ID": "Segment_2",
    "Segment1_LabelValue": "2",
    "Segment1_Layer": "0",
    "Segment1_Name": "Gefäß",
    "Segment1_Tags": "",
    "Segment2_Color": "1 0 0",
    "Segment2_Extent": "1 2 1 1 0 1",
    "Segment2_ID": "Segment_3",
    "Segment2_LabelValue": "1",
    "Segment2_Layer": "1",
    "Segment2_Name": "Tumor",
    "Segment2_Tags": "",
    "Segmentation_ContainedRepresentationNames": "Binary labelmap|Closed surface|",
    "Segmentation_ConversionParameters": "Collapse labelmaps|1|Merge labelmaps.&",
    "Segmentation_MasterRepresentation": "Binary labelmap",
    "Segmentation_ReferenceImageExtentOffset": "5 6 7",
}
SLICER_HEADER = (
    "NRRD0004\n# Complete NRRD file format specification at:\n"
    "# http://teem.sourceforge.net/nrrd/format.html\ntype: unsigned char\ndimension: 4\n"
    "space: left-posterior-superior\nsizes: 2 4 3 2\n"
    "space directions: none (0,-2,0) (1.5,0,0) (0,0,3)\nkinds: list domain domain domain\n"
    "encoding: raw\nspace origin: (10,20,-30)\n"
    "measurement frame: (1,0,0) (0,1,0) (0,0,1)\n"
    + "".join(f"{key}:={value}\n" for key, value in SLICER_FIELDS.items())
    + "\n"
)


def test_reads_a_segmentation_in_slicers_own_layout(tmp_path: Path) -> None:
    """A file as Slicer writes it: cropped grid (origin shifted), raw data, per-layer labels."""
    layers = np.zeros((2, 4, 3, 2), np.uint8)  # (layer, i, j, k)
    layers[0, 0:2, 0:2, 0] = 1  # liver
    layers[0, 3, 2, 1] = 1  # outside the liver's extent: Slicer ignores it
    layers[0, 2, 2, 1] = 2  # vessel
    layers[1, 1:3, 1, 0:2] = 1  # tumour, overlapping the liver
    path = tmp_path / "slicer.seg.nrrd"
    path.write_bytes(SLICER_HEADER.encode("utf-8") + layers.tobytes(order="F"))
    segments, grid = read_segmentation(path)
    expected_affine = np.array([[0, -1.5, 0, -10], [2, 0, 0, -20], [0, 0, 3, -30], [0, 0, 0, 1]])
    assert np.array_equal(grid.ijk_to_ras, expected_affine) and grid.shape == (4, 3, 2)
    assert [s.name for s in segments] == ["Leber", "Gefäß", "Tumor"]
    assert segments[0].color == (0.501961, 0.682353, 0.501961)
    assert segments[0].tags == {"Segmentation.Status": "completed", "TerminologyEntry": TERMINOLOGY}
    liver = np.zeros((4, 3, 2), bool)
    liver[0:2, 0:2, 0] = True
    assert np.array_equal(segments[0].mask, liver)
    assert np.argwhere(segments[1].mask).tolist() == [[2, 2, 1]]
    assert np.array_equal(segments[2].mask, layers[1] == 1)


def test_segmentation_rejects_bad_requests(tmp_path: Path) -> None:
    reference = oblique_reference()
    mask = np.zeros(reference.shape, bool)
    with pytest.raises(ValueError, match="colour"):
        Segment("a", (1.5, 0, 0), mask)
    with pytest.raises(ValueError, match="boolean or 0/1"):
        Segment("a", (1, 0, 0), mask.astype(np.uint8) + 2)
    with pytest.raises(ValueError, match="boolean or 0/1"):
        Segment("a", (1, 0, 0), mask.astype(np.float32))
    with pytest.raises(ValueError, match="tag"):
        Segment("a", (1, 0, 0), mask, {"a|b": "c"})
    good = Segment("a", (1, 0, 0), mask, segment_id="x")
    with pytest.raises(ValueError, match="unique; repeated: x"):
        write_segmentation(tmp_path / "s.seg.nrrd", [good, good], reference)
    with pytest.raises(ValueError, match="ending in .seg.nrrd"):
        write_segmentation(tmp_path / "s.nrrd", [good], reference)
    with pytest.raises(ValueError, match=r"shape \(6, 7, 5\), the reference \(6, 7, 4\)"):
        write_segmentation(tmp_path / "s.seg.nrrd", [good], oblique_reference((6, 7, 4)))
    assert os.listdir(tmp_path) == []


def test_read_segmentation_errors(tmp_path: Path) -> None:
    with pytest.raises(VolumeReadError, match="not found"):
        read_segmentation(tmp_path / "none.seg.nrrd")
    write_labelmap(
        tmp_path / "plain.nrrd", np.ones((2, 2, 2), np.uint8), oblique_reference((2, 2, 2))
    )
    with pytest.raises(VolumeReadError, match="plain.nrrd: not a Slicer segmentation"):
        read_segmentation(tmp_path / "plain.nrrd")
    (tmp_path / "x.seg.nrrd").write_bytes(gzip.compress(b"nonsense"))
    with pytest.raises(VolumeReadError, match="x.seg.nrrd: not a readable NRRD file"):
        read_segmentation(tmp_path / "x.seg.nrrd")


# --- failed writes -------------------------------------------------------------------------------

WRITE_UNDER_SIZE_LIMIT = """
import resource, signal, sys
import numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
from fastsam3d_core.geometry import Volume
from fastsam3d_core.io import Segment, write_labelmap, write_segmentation
reference = Volume(np.zeros((100, 100, 50), np.int16), np.eye(4))
noise = np.random.default_rng(0).integers(0, 2**31 - 1, reference.shape, dtype=np.int32)
try:
    if sys.argv[1].endswith(".seg.nrrd"):
        write_segmentation(sys.argv[1], [Segment("noise", (1, 0, 0), noise % 2)], reference)
    else:
        write_labelmap(sys.argv[1], noise, reference)
except OSError as error:
    print("OSError:", error)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX resource limits")
@pytest.mark.parametrize("name", ["big.nrrd", "big.nii", "big.nii.gz", "big.seg.nrrd"])
def test_write_failing_midway_leaves_the_old_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"old")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_SIZE_LIMIT, str(tmp_path / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert result.stdout.startswith("OSError:"), result.stdout
    assert f"could not write {tmp_path / name}" in result.stdout
    assert os.listdir(tmp_path) == [name] and (tmp_path / name).read_bytes() == b"old"


def test_write_onto_a_folder_fails_cleanly(tmp_path: Path) -> None:
    reference = oblique_reference()
    (tmp_path / "out.nrrd").mkdir()
    (tmp_path / "out.seg.nrrd").mkdir()
    with pytest.raises(OSError, match="out.nrrd"):
        write_labelmap(tmp_path / "out.nrrd", np.zeros(reference.shape, np.uint8), reference)
    with pytest.raises(OSError, match="out.seg.nrrd"):
        segment = Segment("a", (1, 0, 0), np.ones(reference.shape, bool))
        write_segmentation(tmp_path / "out.seg.nrrd", [segment], reference)
    assert sorted(os.listdir(tmp_path)) == ["out.nrrd", "out.seg.nrrd"]
