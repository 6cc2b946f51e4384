"""A DICOM SEG wherever labels are taken: evaluation (a DICOM series per case, its SEG as the
label), fine-tuning (a segment picked by number or name), and a labelmap of its segments on the
image's grid."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA_DIR, invoke_cli

from fastsam3d_core.io import Segment, read_volume
from fastsam3d_core.io.dicom_seg import SegAlgorithm, write_dicom_seg
from fastsam3d_core.io.dicom_source import dicom_series_of
from fastsam3d_core.io.label_files import read_label_volume, read_structure

PACS_DIR = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_dicom_pacs"
pytestmark = pytest.mark.skipif(not PACS_DIR.is_dir(), reason=f"{PACS_DIR} not found")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A SEG of the shared series (512 x 512 x 20) with two segments: soft tissue (HU > 0) in a
    central box named "liver", and a box beside it named "spleen"; and their masks."""
    volume = read_volume(PACS_DIR)
    liver = np.zeros(volume.shape, bool)
    liver[180:330, 180:330, 4:15] = True
    liver &= volume.array > 0
    spleen = np.zeros(volume.shape, bool)
    spleen[340:400, 200:260, 8:12] = True
    path = tmp_path_factory.mktemp("seg") / "ct.dcm"
    segments = [
        Segment("liver", (0.8, 0.4, 0.3), liver),
        Segment("spleen", (0.6, 0.2, 0.6), spleen),
    ]
    write_dicom_seg(path, segments, volume, dicom_series_of(PACS_DIR, volume),
                    SegAlgorithm("manual", "1", ""))  # fmt: skip
    return path, liver, spleen


def test_a_seg_is_a_labelmap_of_its_segment_numbers_on_the_image_grid(labelled):
    path, liver, spleen = labelled
    image = read_volume(PACS_DIR)
    labels = read_label_volume(path, image)
    np.testing.assert_array_equal(labels.ijk_to_ras, image.ijk_to_ras)
    assert liver.any() and spleen.any() and not (liver & spleen).any()
    np.testing.assert_array_equal(labels.array == 1, liver)
    np.testing.assert_array_equal(labels.array == 2, spleen)
    np.testing.assert_array_equal(read_structure(path, image, "Spleen"), spleen)
    np.testing.assert_array_equal(read_structure(path, image, 1), liver)
    np.testing.assert_array_equal(read_structure(path, image, None), liver | spleen)


def test_evaluate_takes_a_dicom_series_per_case_and_its_seg_as_the_label(labelled, tmp_path):
    path, liver, _ = labelled
    images, labels = tmp_path / "imagesTs", tmp_path / "labelsTs"
    shutil.copytree(PACS_DIR, images / "ct")
    labels.mkdir()
    shutil.copy(path, labels / "ct.dcm")
    arguments = ["evaluate", images, "--model", "oracle", "--clicks", "2", "--label", "1"]
    result = invoke_cli([*arguments, "-o", tmp_path / "r.csv"])
    assert result.exit_code == 0, result.output
    assert "1 case(s) evaluated" in result.output, result.output
    # The oracle answers with the label itself, through the model's 1.5 mm crop: near 1.
    dice = float(re.search(r"\] ct: Dice 1: ([0-9.]+)", result.output).group(1))
    assert dice > 0.95, result.output


def test_finetune_picks_a_seg_segment_by_number_or_name(labelled):
    from fastsam3d_core.training.data import CaseFiles, DatasetError, prepare

    path, liver, spleen = labelled
    by_name = prepare(CaseFiles("ct", PACS_DIR, path), "spleen")
    by_number = prepare(CaseFiles("ct", PACS_DIR, path), 2)
    assert by_name.truth.sum() == by_number.truth.sum() > 0
    np.testing.assert_array_equal(by_name.truth, by_number.truth)
    with pytest.raises(DatasetError, match="no segment named 'kidney'.*'liver', 'spleen'"):
        prepare(CaseFiles("ct", PACS_DIR, path), "kidney")
    with pytest.raises(DatasetError, match="1 to 2"):
        prepare(CaseFiles("ct", PACS_DIR, path), 3)


def test_the_readme_gives_every_segment_code_the_seg_writes():
    from fastsam3d_core.io.dicom_seg import GENERIC_CODES, STRUCTURE_CODES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("## DICOM SEG and the PACS", 1)[1].split("\n## ", 1)[0]
    for name, (category, kind) in STRUCTURE_CODES.items():
        row = next((line for line in table.splitlines() if f"{kind.value} {kind.meaning}" in line),
                   "")  # fmt: skip
        assert name in row and f"{category.value} {category.meaning}" in row, name
    generic = f"{GENERIC_CODES[1].value} {GENERIC_CODES[1].meaning}"
    assert f"any other name | {generic} | {generic}" in table
