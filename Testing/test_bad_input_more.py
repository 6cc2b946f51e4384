"""More of the bad-input battery (``test_bad_input.py``), with its harness and verdicts: NIfTI
files that ITK reads silently wrong, points files too large or too deep to take, and paths that
are not regular files (a named pipe, ``/dev/zero``), which must be refused without blocking.

Besides the battery, the qform/sform warning (not an error) and the Python API's refusals.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import invoke_cli
from test_bad_input import (
    EXAMPLE_CT,
    SHARED_DATA,
    Case,
    Common,
    battery,  # noqa: F401  (the fixture, instantiated for this module)
    cube,
    markups,
    run_case,
    segment,
)

from fastsam3d_core.io import VolumeReadError, read_volume

nibabel = pytest.importorskip("nibabel")

pytestmark = pytest.mark.skipif(
    not EXAMPLE_CT.is_file(), reason=f"shared example data not found at {SHARED_DATA}"
)

MORE_CASES: dict[str, Callable[[Path, Common], Case]] = {}
NOT_REGULAR = "not a regular file"
# A case that used to block (a named pipe) fails well before this if it blocks again.
BLOCKING_TIMEOUT_S = 30


def case(function: Callable[[Path, Common], Case]) -> Callable[[Path, Common], Case]:
    MORE_CASES[function.__name__] = function
    return function


def write_nifti(path: Path, array: np.ndarray, affine=None, **header_fields) -> Path:
    """Write an (i, j, k) array as NIfTI with nibabel, header fields set as given."""
    image = nibabel.Nifti1Image(array, np.eye(4) if affine is None else affine)
    for name, value in header_fields.items():
        image.header[name] = value
    nibabel.save(image, path)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# --- NIfTI voxels and header that ITK reads silently wrong --------------------------------------


def around(c: Common, shape=(40, 40, 40)) -> np.ndarray:
    """An affine of 1 mm voxels whose grid of ``shape`` is centred on the cases' point (no file
    name says NaN or inf, which the messages must say)."""
    affine = np.eye(4)
    affine[:3, 3] = [float(v) for v in c.inside.split(",")] - (np.array(shape) - 1) / 2
    return affine


@case
def nifti_all_nan(d: Path, c: Common) -> Case:
    write_nifti(d / "scan.nii.gz", np.full((40, 40, 40), np.nan, np.float32), around(c))
    return Case(segment(c, d / "scan.nii.gz"), mentions=("scan.nii.gz", "NaN"))


@case
def nifti_infinite_float64(d: Path, c: Common) -> Case:
    array = cube(dtype=np.float64)
    array[0, 0, 0], array[39, 39, 39] = np.inf, -np.inf
    write_nifti(d / "scan.nii", array, around(c))
    return Case(segment(c, d / "scan.nii"), mentions=("scan.nii", "2 of 64000", "infinite"))


@case
def nifti_pair_with_nan(d: Path, c: Common) -> Case:
    array = cube()
    array[5, 6, 7] = np.nan
    nibabel.save(nibabel.Nifti1Pair(array, around(c)), d / "pair.img")
    return Case(segment(c, d / "pair.hdr"), mentions=("pair.hdr", "NaN"))


@case
def nifti_zero_voxel_size(d: Path, c: Common) -> Case:
    image = nibabel.Nifti1Image(cube(), None)
    image.header.set_qform(around(c), code=1)
    data = bytearray(image.header.binaryblock + b"\0" * 4 + cube().tobytes(order="F"))
    data[80:92] = np.zeros(3, "<f4").tobytes()  # pixdim[1:4], which nibabel sets from the affine
    (d / "flat.nii.gz").write_bytes(gzip.compress(bytes(data)))
    return Case(segment(c, d / "flat.nii.gz"), mentions=("flat.nii.gz", "voxel size"))


# --- points -------------------------------------------------------------------------------------


@case
def points_file_with_too_many_points(d: Path, c: Common) -> Case:
    r, a, s = (float(value) for value in c.inside.split(","))
    markups(d / "many.mrk.json", [{"position": [r, a, s]}] * 10_000, coordinateSystem="RAS")
    return Case(
        segment(c, c.ct, "--points", str(d / "many.mrk.json")),
        mentions=("many.mrk.json", "10000", "200"),
        timeout_s=60,
    )


@case
def point_given_too_often(d: Path, c: Common) -> Case:
    extra = [argument for _ in range(200) for argument in ("-p", c.inside)]
    return Case(segment(c, c.ct, *extra), mentions=("201", "--point", "200"), timeout_s=60)


@case
def points_file_nested_too_deep(d: Path, c: Common) -> Case:
    (d / "deep.mrk.json").write_text("[" * 100_000 + "]" * 100_000)
    return Case(
        segment(c, c.ct, "--points", str(d / "deep.mrk.json")),
        mentions=("deep.mrk.json", "markups"),
    )


@case
def points_file_object_nested_too_deep(d: Path, c: Common) -> Case:
    (d / "deep.mrk.json").write_text('{"markups": ' * 100_000 + "1" + "}" * 100_000)
    return Case(
        segment(c, c.ct, "--negative-points", str(d / "deep.mrk.json")),
        mentions=("deep.mrk.json", "markups"),
    )


# --- paths that are not regular files -----------------------------------------------------------


def not_regular(argv: list[str], name: str) -> Case:
    return Case(argv, mentions=(name, NOT_REGULAR), timeout_s=BLOCKING_TIMEOUT_S)


@case
def image_is_fifo(d: Path, c: Common) -> Case:
    return not_regular(segment(c, fifo(d / "scan.nii.gz")), "scan.nii.gz")


@case
def image_is_dev_zero(d: Path, c: Common) -> Case:
    return not_regular(segment(c, "/dev/zero"), "/dev/zero")


@case
def points_file_is_fifo(d: Path, c: Common) -> Case:
    pipe = fifo(d / "clicks.mrk.json")
    return not_regular(segment(c, c.ct, "--points", str(pipe)), "clicks.mrk.json")


@case
def negative_points_file_is_dev_zero(d: Path, c: Common) -> Case:
    bad = not_regular(segment(c, c.ct, "--negative-points", "/dev/zero"), "/dev/zero")
    bad.address_space_limit = 4 << 30  # reading /dev/zero whole would fill the memory
    return bad


@case
def weights_is_fifo(d: Path, c: Common) -> Case:
    argv = segment(c, c.ct)
    argv[argv.index("--weights") + 1] = str(fifo(d / "model.pth"))
    return not_regular(argv, "model.pth")


@case
def weights_is_dev_zero(d: Path, c: Common) -> Case:
    argv = segment(c, c.ct)
    argv[argv.index("--weights") + 1] = "/dev/zero"
    return not_regular(argv, "/dev/zero")


@case
def adapter_is_fifo(d: Path, c: Common) -> Case:
    return not_regular(segment(c, c.ct, "--adapter", str(fifo(d / "tuned.pt"))), "tuned.pt")


@case
def adapter_is_dev_zero(d: Path, c: Common) -> Case:
    return not_regular(segment(c, c.ct, "--adapter", "/dev/zero"), "/dev/zero")


@pytest.mark.parametrize("name", sorted(MORE_CASES))
def test_more_bad_input_gets_one_clear_line(battery, name: str):  # noqa: F811
    server, common, root = battery
    bad, outcome = run_case(server.run, common, name, root, cases=MORE_CASES)
    verdict = outcome.classify(bad.mentions, bad.says)
    assert verdict == "handled well", (
        f"{verdict}: exit {outcome.returncode}; must mention {bad.mentions}; "
        f"changed {outcome.changed}; left {outcome.left_behind}\n"
        f"stderr:\n{outcome.stderr[-3000:]}\nstdout:\n{outcome.stdout[-1500:]}"
    )


# --- the Python API, and the warning --------------------------------------------------------------


@pytest.mark.parametrize("name", ["nan.nii.gz", "nan.nii", "nan.hdr"])
def test_read_volume_refuses_nifti_with_nan_that_itk_reads_as_zero(tmp_path: Path, name: str):
    array = cube()
    array[3, 4, 5] = np.nan
    image_type = nibabel.Nifti1Pair if name.endswith(".hdr") else nibabel.Nifti1Image
    nibabel.save(image_type(array, np.eye(4)), tmp_path / name)
    with pytest.raises(VolumeReadError, match=rf"{name}: 1 of 64000 voxels are NaN or infinite"):
        read_volume(tmp_path / name)


def test_finite_float_nifti_still_reads_as_nibabel_does(tmp_path: Path):
    array = np.random.default_rng(0).normal(size=(9, 8, 7)).astype(np.float64)
    write_nifti(tmp_path / "finite.nii.gz", array)
    np.testing.assert_array_equal(read_volume(tmp_path / "finite.nii.gz").array, array)


def qform_and_sform(path: Path, shift_mm: float, sform_code: int = 1) -> Path:
    """A NIfTI whose sform is its qform moved ``shift_mm`` along R."""
    qform = np.diag([2.0, 2.0, 3.0, 1.0])
    qform[:3, 3] = (-40.0, -30.0, 10.0)
    sform = qform.copy()
    sform[0, 3] += shift_mm
    image = nibabel.Nifti1Image(cube(shape=(20, 20, 20)), None)
    image.header.set_qform(qform, code=1)
    image.header.set_sform(sform, code=sform_code)
    nibabel.save(image, path)
    return path


@pytest.mark.parametrize("sform_code, used", [(1, "sform"), (2, "qform")])
def test_qform_and_sform_far_apart_warn_naming_the_one_used(
    tmp_path: Path, sform_code: int, used: str
):
    path = qform_and_sform(tmp_path / "two-places.nii.gz", 500.0, sform_code)
    with pytest.warns(UserWarning) as caught:
        volume = read_volume(path)
    (message,) = [str(warning.message) for warning in caught]
    assert "two-places.nii.gz" in message and "500.0 mm apart" in message
    assert f"the {used} is used" in message
    reference = nibabel.load(path).header.get_best_affine() if used == "sform" else None
    if reference is not None:
        np.testing.assert_allclose(volume.ijk_to_ras, reference, atol=1e-4)


def test_qform_and_sform_close_together_do_not_warn(tmp_path: Path, recwarn):
    read_volume(qform_and_sform(tmp_path / "close.nii.gz", 0.5))
    read_volume(EXAMPLE_CT)
    assert not [str(warning.message) for warning in recwarn]


def test_the_command_line_shows_the_qform_sform_warning_as_one_line(tmp_path: Path):
    path = qform_and_sform(tmp_path / "two-places.nii.gz", 500.0)
    result = invoke_cli(["segment", path, "-p", "9999,0,0", "-o", tmp_path / "out.seg.nrrd"])
    warnings_shown = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert result.exit_code == 1, result.stderr
    assert len(warnings_shown) == 1 and "two-places.nii.gz" in warnings_shown[0]
    assert "qform and sform" in warnings_shown[0] and "the sform is used" in warnings_shown[0]


def test_a_named_pipe_in_a_dicom_folder_is_named(tmp_path: Path):
    dicom = SHARED_DATA / "totalseg_ct" / "example_ct_dicom"
    folder = tmp_path / "series"
    folder.mkdir()
    for file in sorted(dicom.iterdir())[:3]:
        (folder / file.name).write_bytes(file.read_bytes())
    assert read_volume(folder).shape[2] == 3  # a DICOM folder is still read
    fifo(folder / "pipe")
    with pytest.raises(VolumeReadError, match=r"pipe: a named pipe \(FIFO\), not a regular file"):
        read_volume(folder)
