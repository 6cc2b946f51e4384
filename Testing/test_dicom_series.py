"""A DICOM series with a slice missing, duplicated or damaged is refused, not read on a wrong grid.

ITK's ImageSeriesReader spaces the slices it is given evenly between the first and the last, and
GDCM leaves a file it cannot parse out of the series without a word: a missing slice stretches
the spacing, a duplicate squeezes it, a truncated end slice just vanishes. Each case is a copy of
the real CT series in ``shared/`` with one file deleted, copied or cut; a synthetic series covers
mixed orientations.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fastsam3d_core import Volume
from fastsam3d_core.io import VolumeReadError, itk_ijk_to_ras, read_volume

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DICOM_DIR = SHARED_DATA / "totalseg_ct" / "example_ct_dicom"

needs_data = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason=f"shared example data not found at {DICOM_DIR}"
)


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    """The files of a copy of the example series, by name: the reverse of their slice order."""
    folder = tmp_path / "series"
    shutil.copytree(DICOM_DIR, folder)
    return sorted(folder.iterdir())


def refusal(path: Path) -> str:
    """The message of the error reading ``path`` raises; it must be one line."""
    with pytest.raises(VolumeReadError) as caught:
        read_volume(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


@needs_data
def test_intact_copy_reads_like_the_original(series: list[Path]) -> None:
    """The checks change nothing for a good series: as ITK reads GDCM's own file order."""
    copy = read_volume(series[0].parent)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(DICOM_DIR)))
    plain = reader.Execute()
    original = Volume(sitk.GetArrayFromImage(plain).T, itk_ijk_to_ras(plain))
    assert copy.shape == original.shape == (512, 512, 20)
    np.testing.assert_array_equal(copy.ijk_to_ras, original.ijk_to_ras)
    assert np.linalg.norm(copy.ijk_to_ras[:3, 2]) == pytest.approx(2.0)
    assert np.array_equal(copy.array, original.array)


@needs_data
def test_missing_slice_is_refused_naming_its_neighbours(series: list[Path]) -> None:
    series[10].unlink()
    for path in (series[0].parent, series[3]):  # the folder, or one of its files
        message = refusal(path)
        assert series[9].name in message and series[11].name in message
        assert "expected 2 mm" in message and "found 4 mm" in message
        assert "re-export the complete series" in message


@needs_data
def test_duplicated_slice_is_refused_naming_both_files(series: list[Path]) -> None:
    shutil.copy(series[5], series[5].parent / "copy_of_a_slice.dcm")
    message = refusal(series[0].parent)
    assert "copy_of_a_slice.dcm" in message and series[5].name in message
    assert "remove the duplicate" in message


@needs_data
@pytest.mark.parametrize("index", [0, 10], ids=["end slice", "middle slice"])
def test_truncated_file_is_refused_naming_it(series: list[Path], index: int) -> None:
    victim = series[index]
    with open(victim, "r+b") as file:
        file.truncate(victim.stat().st_size // 2)
    for path in (victim.parent, series[3]):
        message = refusal(path)
        assert victim.name in message and "truncated" in message


@needs_data
def test_command_line_refuses_a_series_with_a_gap(series: list[Path], tmp_path: Path) -> None:
    series[10].unlink()
    command = Path(sys.executable).with_name("fastsam3d")
    result = subprocess.run(
        [str(command), "segment", str(series[0].parent), "--point", "0,0,0", "-o", "out.seg.nrrd"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert series[9].name in output and series[11].name in output
    assert not (tmp_path / "out.seg.nrrd").exists()


def test_slices_of_mixed_orientation_are_refused(tmp_path: Path) -> None:
    tilted = {3: "1\\0\\0\\0\\0.8\\0.6"}
    write_axial_series(tmp_path, orientations=tilted)
    message = refusal(tmp_path)
    assert "slice_3.dcm" in message and "orientation" in message


def test_small_even_series_reads(tmp_path: Path) -> None:
    write_axial_series(tmp_path, orientations={})
    volume = read_volume(tmp_path)
    assert volume.shape == (4, 3, 5)
    assert np.linalg.norm(volume.ijk_to_ras[:3, 2]) == pytest.approx(2.5)


def write_axial_series(folder: Path, orientations: dict[int, str]) -> None:
    """Five 4×3 axial slices 2.5 mm apart; ``orientations`` overrides some slices' orientation."""
    uid = "1.2.826.0.1.3680043.2.1125.1.42"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(5):
        image = sitk.GetImageFromArray(np.full((3, 4), k, dtype=np.int16))
        tags = {
            "0008|0060": "CT",
            "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": f"{uid}.0",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{2.5 * k:g}",
            "0020|0037": orientations.get(k, "1\\0\\0\\0\\1\\0"),
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k}.dcm"))
        writer.Execute(image)
