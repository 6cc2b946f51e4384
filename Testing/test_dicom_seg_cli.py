"""``fastsam3d segment`` with DICOM: a SEG written beside the ``.seg.nrrd`` of the same run, a
SEG as the segment to refine, and the series read from and the SEG stored on a real DICOMweb
server (Orthanc, started by the tests on a loopback port)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA_DIR, invoke_cli

from fastsam3d_core.io import read_segmentation, read_volume
from fastsam3d_core.io.dicom_seg import read_dicom_seg
from fastsam3d_core.io.dicom_source import dicom_series_of

CT = SHARED_DATA_DIR / "totalseg_ct"
PACS_DIR = CT / "example_ct_dicom_pacs"
PLAIN_DIR = CT / "example_ct_dicom"
pytestmark = pytest.mark.skipif(not PACS_DIR.is_dir(), reason=f"{PACS_DIR} not found")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A FastSAM3D checkpoint with seeded weights (the real one cannot be fetched here)."""
    import torch

    from fastsam3d_core import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "fastsam3d-seeded.pth"
    torch.save({"model_state_dict": build_model("fastsam3d").state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def centre() -> str:
    volume = read_volume(PACS_DIR)
    return ",".join(f"{v:.3f}" for v in volume.index_to_ras(np.array(volume.shape) / 2 - 0.5))


def segment(image, weights: Path, centre: str, *outputs: Path, more=()) -> object:
    arguments = ["segment", image, "--point", centre, "--weights", weights, "--device", "cpu"]
    for output in outputs:
        arguments += ["-o", output]
    return invoke_cli([*arguments, *more])


def seg_mask(path: Path) -> np.ndarray:
    volume = read_volume(PACS_DIR)
    (segment_,) = read_dicom_seg(path, volume, dicom_series_of(PACS_DIR, volume))
    return segment_.mask


def test_the_seg_equals_the_seg_nrrd_of_the_same_run_and_passes_dciodvfy(tmp_path, weights, centre):
    nrrd, seg = tmp_path / "out.seg.nrrd", tmp_path / "out.dcm"
    result = segment(PACS_DIR, weights, centre, nrrd, seg, more=["--name", "liver"])
    assert result.exit_code == 0, result.output
    (expected,) = read_segmentation(nrrd)[0]
    assert expected.mask.any(), "the seeded model segmented nothing: no SEG to compare"
    np.testing.assert_array_equal(seg_mask(seg), expected.mask)
    dataset = pydicom.dcmread(seg)
    assert dataset.Modality == "SEG" and dataset.SegmentationType == "BINARY"
    description = dataset.SegmentSequence[0]
    assert description.SegmentLabel == "liver"
    assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert description.SegmentAlgorithmType == "SEMIAUTOMATIC"
    algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "fastsam3d"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert sha in str(algorithm.get("AlgorithmParameters", ""))
    source = pydicom.dcmread(next(PACS_DIR.iterdir()), stop_before_pixels=True)
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert dataset.FrameOfReferenceUID == source.FrameOfReferenceUID
    validator = shutil.which("dciodvfy")
    if validator is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    report = subprocess.run([validator, str(seg)], capture_output=True, text=True, timeout=60)
    errors = [line for line in report.stderr.splitlines() if line.startswith("Error")]
    assert report.returncode == 0 and not errors, report.stderr


def test_a_seg_is_refused_in_one_line_for_an_image_not_read_from_dicom(tmp_path, weights):
    image = CT / "example_ct_3mm.nii.gz"
    volume = read_volume(image)
    point = ",".join(f"{v:.3f}" for v in volume.index_to_ras(np.array(volume.shape) / 2))
    result = segment(image, weights, point, tmp_path / "out.dcm")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "is not DICOM" in line and "out.dcm" in line
    assert "loading" not in result.output.lower(), "refused before the model is loaded"
    assert not list(tmp_path.iterdir())


def test_a_series_without_identifiers_is_refused_in_one_line(tmp_path, weights, centre):
    result = segment(PLAIN_DIR, weights, centre, tmp_path / "a.seg.nrrd", tmp_path / "a.dcm")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "UID" in line
    assert not list(tmp_path.iterdir()), "nothing written, not even the .seg.nrrd"


def test_a_seg_is_the_segment_a_session_refines(tmp_path, weights, centre):
    first = tmp_path / "first.dcm"
    assert segment(PACS_DIR, weights, centre, first).exit_code == 0
    before = seg_mask(first)
    refined = tmp_path / "refined.seg.nrrd"
    volume = read_volume(PACS_DIR)
    # A point far from the first one: its crop leaves part of the first segment as it was.
    far = ",".join(f"{v:.3f}" for v in volume.index_to_ras(np.array([2.0, 2.0, 1.0])))
    result = segment(PACS_DIR, weights, far, refined, more=["--start", first,
                                                             "--start-segment", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"refining first.dcm ({int(before.sum())} voxels)" in result.output
    other = segment(PACS_DIR, weights, far, tmp_path / "other.seg.nrrd")
    assert other.exit_code == 0
    (after,) = read_segmentation(refined)[0]
    (alone,) = read_segmentation(tmp_path / "other.seg.nrrd")[0]
    assert not np.array_equal(after.mask, alone.mask), "the SEG changed nothing"
    wrong = segment(PACS_DIR, weights, far, tmp_path / "x.seg.nrrd",
                    more=["--start", first, "--start-segment", "spleen"])  # fmt: skip
    assert wrong.exit_code == 1 and "no segment named 'spleen'" in wrong.stderr


def orthanc_segs(orthanc, study_uid: str) -> list[pydicom.Dataset]:
    """The SEG instances Orthanc holds in the study, found by QIDO-RS and read by WADO-RS."""
    from fastsam3d_core.io.dicomweb import DicomwebAuth, open_client

    client = open_client(orthanc.dicomweb, DicomwebAuth(), timeout_s=30)
    found = client.search_for_series(study_uid, search_filters={"Modality": "SEG"})
    segs = []
    for series in found:
        series_uid = series["0020000E"]["Value"][0]
        segs += client.retrieve_series(study_uid, series_uid)
    return segs


def test_a_series_from_dicomweb_is_segmented_and_its_seg_stored_there(
    orthanc, tmp_path, weights, centre
):
    orthanc.upload(PACS_DIR)
    source = pydicom.dcmread(next(PACS_DIR.iterdir()), stop_before_pixels=True)
    study, series = source.StudyInstanceUID, source.SeriesInstanceUID
    url = f"{orthanc.dicomweb}/studies/{study}/series/{series}"
    local = tmp_path / "local.seg.nrrd"
    result = segment(url, weights, centre, local, more=["--store"])
    assert result.exit_code == 0, result.output
    assert "stored the SEG on" in result.output
    # The SEG made only to be stored is a temporary file: not said to be written.
    assert "made the SEG for --store (" in result.output and "wrote /" not in result.output.replace(
        f"wrote {local}", "")
    (stored,) = orthanc_segs(orthanc, study)
    assert stored.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    seg_file = tmp_path / "stored.dcm"
    stored.save_as(seg_file)
    (expected,) = read_segmentation(local)[0]
    np.testing.assert_array_equal(seg_mask(seg_file), expected.mask)
    assert not list(tmp_path.glob("*.dcm"))[1:], "no SEG left beside the output"


def test_a_missing_series_is_one_line_naming_the_server_and_nothing_is_stored(
    orthanc, tmp_path, weights, centre
):
    orthanc.upload(PACS_DIR)
    source = pydicom.dcmread(next(PACS_DIR.iterdir()), stop_before_pixels=True)
    before = len(orthanc_segs(orthanc, source.StudyInstanceUID))
    url = f"{orthanc.dicomweb}/studies/{source.StudyInstanceUID}/series/1.2.3.4.5"
    result = segment(url, weights, centre, tmp_path / "x.dcm", more=["--store"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert orthanc.dicomweb.split("//")[1].split("/")[0] in line
    assert len(orthanc_segs(orthanc, source.StudyInstanceUID)) == before
    store_alone = segment(PACS_DIR, weights, centre, tmp_path / "y.dcm", more=["--store"])
    assert store_alone.exit_code == 2 and "not a DICOMweb series URL" in store_alone.output


def test_a_seg_of_another_series_is_refused_as_the_segment_to_refine(tmp_path, weights, centre):
    first = tmp_path / "first.dcm"
    assert segment(PACS_DIR, weights, centre, first).exit_code == 0
    # The same slices without identifiers: the SEG references a series that this image is not.
    result = segment(PLAIN_DIR, weights, centre, tmp_path / "x.seg.nrrd", more=["--start", first])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "first.dcm" in line and "series" in line
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_outputs_and_start_options_are_checked_before_the_model_runs(tmp_path, weights, centre):
    twice = segment(PACS_DIR, weights, centre, tmp_path / "a.dcm", tmp_path / "a.dcm")
    assert twice.exit_code == 1 and "given twice" in twice.stderr
    alone = segment(PACS_DIR, weights, centre, tmp_path / "b.dcm", more=["--start-segment", "1"])
    assert alone.exit_code == 2 and "--start" in alone.output
    labels = tmp_path / "labels.nii.gz"
    from fastsam3d_core.io import write_labelmap

    volume = read_volume(PACS_DIR)
    write_labelmap(labels, (volume.array > 0).astype(np.uint8), volume)
    background = segment(PACS_DIR, weights, centre, tmp_path / "c.dcm",
                         more=["--start", labels, "--start-segment", "0"])  # fmt: skip
    assert background.exit_code == 1 and "background" in background.stderr
    assert "loading" not in (twice.output + background.output).lower()
    assert not list(tmp_path.glob("*.dcm"))


def test_a_series_without_identifiers_over_the_folder_names_it_once(tmp_path, weights, centre):
    result = segment(PLAIN_DIR, weights, centre, tmp_path / "a.dcm")
    (line,) = result.stderr.strip().splitlines()
    assert line.count(str(PLAIN_DIR)) == 1, line
    assert "a DICOM SEG cannot reference" in line
