"""A battery of bad inputs through the real command line or the Python API, each in its own process.

For every case: a non-zero exit, exactly one line on stderr (``error: …``, naming what the user
must look at), no traceback, no input or existing file changed, and no file left behind.

The cases are built on the fly in a temporary folder. Each runs in a child forked from one server
process (``forked_cli.py``) that imported the package once, so the battery takes seconds.
``python Testing/test_bad_input.py`` prints the totals per outcome; with
``FASTSAM3D_BATTERY_CODE=/path/to/checkout`` it measures another checkout (e.g. an older commit).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXAMPLE_CT = SHARED_DATA / "totalseg_ct" / "example_ct_3mm.nii.gz"
EXAMPLE_DICOM = SHARED_DATA / "totalseg_ct" / "example_ct_dicom"
# Every case's downloads go to a closed port on this machine: a network that refuses.
OFFLINE_PROXY = "http://127.0.0.1:9"
OUTCOMES = (
    "handled well",
    "unclear message",
    "traceback",
    "silently wrong",
    "crash",
    "file damaged",
    "hang",
)

pytestmark = pytest.mark.skipif(
    not EXAMPLE_CT.is_file(), reason=f"shared example data not found at {SHARED_DATA}"
)


@dataclass
class Case:
    """One bad input: a command line or a Python snippet, and what its message must name."""

    argv: list[str] | None = None
    code: str | None = None
    mentions: tuple[str, ...] = ()
    # Words the output as a whole must contain (notes on stdout before the error line).
    says: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    file_size_limit: int | None = None
    address_space_limit: int | None = None
    # Seconds before the case counts as a hang (shorter where the old behaviour was to block).
    timeout_s: float = 120


@dataclass
class Common:
    """Files every case may use (never changed by any case)."""

    folder: Path
    ct: Path
    inside: str  # "R,A,S" of a voxel inside the CT
    weights: Path
    state: dict


CASES: dict[str, Callable[[Path, Common], Case]] = {}


def case(function: Callable[[Path, Common], Case]) -> Callable[[Path, Common], Case]:
    CASES[function.__name__] = function
    return function


def segment(common: Common, image: Path | str, *extra: str, output: str = "out.seg.nrrd") -> list:
    """A ``segment`` command line with a point inside the CT and the seeded weights."""
    return ["segment", str(image), "-p", common.inside, "--weights", str(common.weights),
            "-o", output, *extra]  # fmt: skip


def write_image(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), direction=None) -> Path:
    """Write an (i, j, k) array with SimpleITK (its arrays are (k, j, i))."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).T))
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def cube(value: float = 100.0, dtype=np.float32, shape=(40, 40, 40)) -> np.ndarray:
    array = np.zeros(shape, dtype)
    array[10:30, 10:30, 10:30] = value
    return array


def markups(path: Path, controls: object, **node: object) -> Path:
    document = {"markups": [{"type": "Fiducial", "coordinateSystem": "LPS", **node,
                             "controlPoints": controls}]}  # fmt: skip
    path.write_text(json.dumps(document))
    return path


# --- the image --------------------------------------------------------------------------------


@case
def image_missing(d: Path, c: Common) -> Case:
    return Case(segment(c, d / "nothing.nii.gz"), mentions=("nothing.nii.gz", "not found"))


@case
def image_empty_file(d: Path, c: Common) -> Case:
    (d / "empty.nii.gz").write_bytes(b"")
    return Case(segment(c, d / "empty.nii.gz"), mentions=("empty.nii.gz",))


@case
def image_text_file(d: Path, c: Common) -> Case:
    (d / "notes.nii.gz").write_text("not an image\n")
    return Case(segment(c, d / "notes.nii.gz"), mentions=("notes.nii.gz",))


@case
def image_truncated_nifti(d: Path, c: Common) -> Case:
    data = c.ct.read_bytes()
    (d / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    return Case(segment(c, d / "cut.nii.gz"), mentions=("cut.nii.gz", "truncated"))


@case
def image_truncated_nrrd(d: Path, c: Common) -> Case:
    write_image(d / "full.nrrd", cube())
    data = (d / "full.nrrd").read_bytes()
    (d / "cut.nrrd").write_bytes(data[: len(data) - 200])
    (d / "full.nrrd").unlink()
    return Case(segment(c, d / "cut.nrrd"), mentions=("cut.nrrd",))


@case
def image_png(d: Path, c: Common) -> Case:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8)), str(d / "photo.png"))
    return Case(segment(c, d / "photo.png"), mentions=("photo.png",))


@case
def image_2d_nrrd(d: Path, c: Common) -> Case:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.int16)), str(d / "slice.nrrd"))
    return Case(segment(c, d / "slice.nrrd"), mentions=("slice.nrrd", "2-D"))


@case
def image_4d_nifti(d: Path, c: Common) -> Case:
    import nibabel

    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), d / "t.nii.gz")
    return Case(segment(c, d / "t.nii.gz"), mentions=("t.nii.gz", "4-D"))


@case
def image_6d_nifti(d: Path, c: Common) -> Case:
    import nibabel

    six = np.zeros((4, 4, 4, 2, 2, 2), np.uint8)
    nibabel.save(nibabel.Nifti1Image(six, np.eye(4)), d / "t.nii.gz")
    return Case(segment(c, d / "t.nii.gz"), mentions=("t.nii.gz", "6-D"))


@case
def image_truncated_nifti_pair(d: Path, c: Common) -> Case:
    sitk.WriteImage(sitk.ReadImage(str(c.ct)), str(d / "pair.hdr"))
    data = (d / "pair.img").read_bytes()
    (d / "pair.img").write_bytes(data[: len(data) // 2])
    return Case(segment(c, d / "pair.hdr"), mentions=("pair", "truncated"))


@case
def image_rgb(d: Path, c: Common) -> Case:
    image = sitk.GetImageFromArray(np.zeros((4, 4, 4, 3), np.uint8), isVector=True)
    sitk.WriteImage(image, str(d / "colour.nrrd"))
    return Case(segment(c, d / "colour.nrrd"), mentions=("colour.nrrd",))


@case
def image_empty_folder(d: Path, c: Common) -> Case:
    (d / "series").mkdir()
    return Case(segment(c, d / "series"), mentions=("series", "DICOM"))


@case
def image_folder_without_dicom(d: Path, c: Common) -> Case:
    (d / "series").mkdir()
    (d / "series" / "readme.txt").write_text("hello")
    return Case(segment(c, d / "series"), mentions=("series", "DICOM"))


def dicom_copy(d: Path) -> tuple[Path, list[Path]]:
    folder = d / "dicom"
    shutil.copytree(EXAMPLE_DICOM, folder)
    return folder, sorted(folder.iterdir())


@case
def dicom_missing_slice(d: Path, c: Common) -> Case:
    folder, files = dicom_copy(d)
    files[len(files) // 2].unlink()
    return Case(segment(c, folder), mentions=("dicom",))


@case
def dicom_duplicated_slice(d: Path, c: Common) -> Case:
    folder, files = dicom_copy(d)
    shutil.copy(files[5], folder / "copy-of-slice")
    return Case(segment(c, folder), mentions=("dicom",))


@case
def dicom_gantry_tilt(d: Path, c: Common) -> Case:
    folder, files = dicom_copy(d)
    old = b"\\-437.51171875\\"  # each slice's y position, rewritten in place, same length
    for index, file in enumerate(files):
        new = f"\\{-437.51171875 + 0.5 * index:.8f}\\".encode()
        data = file.read_bytes()
        assert len(new) == len(old) and data.count(old) == 1
        file.write_bytes(data.replace(old, new))
    return Case(segment(c, folder), mentions=("dicom", "gantry tilt"))


@case
def dicom_truncated_slice(d: Path, c: Common) -> Case:
    folder, files = dicom_copy(d)
    data = files[7].read_bytes()
    files[7].write_bytes(data[: len(data) // 2])
    return Case(segment(c, folder), mentions=(files[7].name,))


@case
def image_all_nan(d: Path, c: Common) -> Case:
    write_image(d / "nan.nrrd", np.full((40, 40, 40), np.nan, np.float32))
    return Case(segment(c, d / "nan.nrrd", output="out.nrrd"), mentions=("nan.nrrd", "NaN"))


@case
def image_some_nan(d: Path, c: Common) -> Case:
    array = cube()
    array[0, 0, 0] = np.nan
    write_image(d / "hole.nrrd", array)
    return Case(segment(c, d / "hole.nrrd"), mentions=("hole.nrrd", "NaN"))


@case
def image_infinite(d: Path, c: Common) -> Case:
    write_image(d / "inf.nrrd", cube(np.inf))
    return Case(segment(c, d / "inf.nrrd"), mentions=("inf.nrrd", "infinite"))


@case
def image_huge_spacing(d: Path, c: Common) -> Case:
    write_image(d / "far.nrrd", cube(), spacing=(1e9, 1e9, 1e9))
    return Case(
        ["segment", str(d / "far.nrrd"), "-p", "2e10,2e10,2e10", "--weights", str(c.weights),
         "-o", "out.seg.nrrd"],
        mentions=("far.nrrd", "spacing"),
    )  # fmt: skip


@case
def image_tiny_spacing(d: Path, c: Common) -> Case:
    write_image(d / "tiny.nrrd", cube(), spacing=(1e-6, 1e-6, 1e-6))
    return Case(
        ["segment", str(d / "tiny.nrrd"), "-p", "-2e-5,-2e-5,2e-5", "--weights", str(c.weights),
         "-o", "out.seg.nrrd"],
        mentions=("tiny.nrrd", "spacing"),
    )  # fmt: skip


@case
def image_complex(d: Path, c: Common) -> Case:
    write_image(d / "k-space.nii.gz", cube().astype(np.complex64))
    return Case(segment(c, d / "k-space.nii.gz"), mentions=("k-space.nii.gz", "complex"))


@case
def image_header_larger_than_memory(d: Path, c: Common) -> Case:
    # A small .nii.gz whose header announces more voxels than this machine could hold: the zero
    # data is one gzip member repeated (concatenated members are one valid gzip stream).
    available = _available_memory()
    side = int(round((2 * available / 4) ** (1 / 3)))
    header = _nifti_header((side, side, side), datatype=16, bitpix=32)
    chunk = gzip.compress(b"\0" * (1 << 24), compresslevel=9)
    with open(d / "huge.nii.gz", "wb") as file:
        file.write(gzip.compress(header))
        for _ in range(64):
            file.write(chunk)
    return Case(segment(c, d / "huge.nii.gz"), mentions=("huge.nii.gz", "memory"),
                address_space_limit=available // 2)  # fmt: skip


@case
def image_sheared_to_nifti(d: Path, c: Common) -> Case:
    shear = (1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    write_image(d / "sheared.nrrd", cube(), direction=shear)
    return Case(
        ["segment", str(d / "sheared.nrrd"), "-p", "-20,-20,20", "--weights", str(c.weights),
         "-o", "out.nii.gz"],
        mentions=("out.nii.gz", "shear"),
    )  # fmt: skip


@case
def image_broken_link(d: Path, c: Common) -> Case:
    (d / "link.nii.gz").symlink_to(d / "gone.nii.gz")
    return Case(segment(c, d / "link.nii.gz"), mentions=("link.nii.gz",))


@case
def image_is_segmentation_layers(d: Path, c: Common) -> Case:
    image = sitk.GetImageFromArray(np.zeros((4, 4, 4, 2), np.uint8), isVector=True)
    sitk.WriteImage(image, str(d / "layers.seg.nrrd"))
    return Case(segment(c, d / "layers.seg.nrrd"), mentions=("layers.seg.nrrd",))


# --- the points -------------------------------------------------------------------------------


@case
def no_points(d: Path, c: Common) -> Case:
    argv = ["segment", str(c.ct), "--weights", str(c.weights), "-o", "out.seg.nrrd"]
    return Case(argv, mentions=("--point",))


def point_case(c: Common, text: str, *mentions: str) -> Case:
    argv = ["segment", str(c.ct), "-p", text, "--weights", str(c.weights), "-o", "out.seg.nrrd"]
    return Case(argv, mentions=(text, *mentions))


@case
def point_two_numbers(d: Path, c: Common) -> Case:
    return point_case(c, "1,2")


@case
def point_words(d: Path, c: Common) -> Case:
    return point_case(c, "a,b,c")


@case
def point_bad_suffix(d: Path, c: Common) -> Case:
    return point_case(c, "1,2,3:maybe", ":neg")


@case
def point_overflow(d: Path, c: Common) -> Case:
    return point_case(c, "1e308,0,0")


@case
def point_nan(d: Path, c: Common) -> Case:
    return point_case(c, "nan,0,0")


@case
def point_infinite(d: Path, c: Common) -> Case:
    return point_case(c, "inf,0,0")


@case
def point_outside_volume(d: Path, c: Common) -> Case:
    return point_case(c, "5000,5000,5000", "outside")


@case
def point_too_large_float(d: Path, c: Common) -> Case:
    return point_case(c, "1e400,0,0")


@case
def only_negative_points(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct)[:3] + [c.inside + ":neg"] + segment(c, c.ct)[4:],
                mentions=("positive",))  # fmt: skip


def points_file_case(c: Common, path: Path, *mentions: str) -> Case:
    argv = ["segment", str(c.ct), "--points", str(path), "--weights", str(c.weights),
            "-o", "out.seg.nrrd"]  # fmt: skip
    return Case(argv, mentions=(path.name, *mentions))


@case
def points_file_missing(d: Path, c: Common) -> Case:
    return points_file_case(c, d / "clicks.mrk.json", "not found")


@case
def points_file_empty(d: Path, c: Common) -> Case:
    (d / "clicks.mrk.json").write_text("")
    return points_file_case(c, d / "clicks.mrk.json")


@case
def points_file_bad_json(d: Path, c: Common) -> Case:
    (d / "clicks.mrk.json").write_text('{"markups": [')
    return points_file_case(c, d / "clicks.mrk.json")


@case
def points_file_not_utf8(d: Path, c: Common) -> Case:
    (d / "clicks.mrk.json").write_bytes(b'{"markups": [{"label": "\xff\xfe"}]}')
    return points_file_case(c, d / "clicks.mrk.json")


@case
def points_file_json_list(d: Path, c: Common) -> Case:
    (d / "clicks.mrk.json").write_text("[]")
    return points_file_case(c, d / "clicks.mrk.json")


@case
def points_without_position(d: Path, c: Common) -> Case:
    path = markups(d / "clicks.mrk.json", [{"label": "F-1", "positionStatus": "defined"}])
    return points_file_case(c, path, "position")


@case
def points_with_two_numbers(d: Path, c: Common) -> Case:
    path = markups(d / "clicks.mrk.json", [{"position": [1.0, 2.0]}])
    return points_file_case(c, path, "position")


@case
def points_with_strings(d: Path, c: Common) -> Case:
    path = markups(d / "clicks.mrk.json", [{"position": ["a", "b", "c"]}])
    return points_file_case(c, path, "position")


@case
def points_markups_object(d: Path, c: Common) -> Case:
    (d / "clicks.mrk.json").write_text(json.dumps({"markups": {"controlPoints": []}}))
    return points_file_case(c, d / "clicks.mrk.json", "markups")


@case
def points_unknown_system(d: Path, c: Common) -> Case:
    path = markups(d / "clicks.mrk.json", [{"position": [1, 2, 3]}], coordinateSystem="XYZ")
    return points_file_case(c, path, "XYZ")


@case
def points_all_undefined(d: Path, c: Common) -> Case:
    path = markups(d / "clicks.mrk.json", [{"position": [1, 2, 3], "positionStatus": "missing"}])
    return points_file_case(c, path)


@case
def points_file_is_folder(d: Path, c: Common) -> Case:
    (d / "clicks.mrk.json").mkdir()
    return points_file_case(c, d / "clicks.mrk.json")


@case
def points_nan_position(d: Path, c: Common) -> Case:
    (d / "clicks.mrk.json").write_text(
        '{"markups": [{"coordinateSystem": "RAS", "controlPoints": [{"position": [NaN, 0, 0]}]}]}'
    )
    return points_file_case(c, d / "clicks.mrk.json")


@case
def points_controls_not_list(d: Path, c: Common) -> Case:
    path = markups(d / "clicks.mrk.json", {"position": [1, 2, 3]})
    return points_file_case(c, path, "controlPoints")


# --- the output -------------------------------------------------------------------------------


@case
def output_is_input(d: Path, c: Common) -> Case:
    shutil.copy(c.ct, d / "scan.nii.gz")
    return Case(segment(c, d / "scan.nii.gz", output=str(d / "scan.nii.gz")),
                mentions=("scan.nii.gz", "input"))  # fmt: skip


@case
def output_is_input_by_other_name(d: Path, c: Common) -> Case:
    shutil.copy(c.ct, d / "scan.nii.gz")
    (d / "sub").mkdir()
    return Case(segment(c, d / "scan.nii.gz", output=str(d / "sub" / ".." / "scan.nii.gz")),
                mentions=("scan.nii.gz", "input"))  # fmt: skip


@case
def output_is_link_to_input(d: Path, c: Common) -> Case:
    shutil.copy(c.ct, d / "scan.nii.gz")
    (d / "alias.nii.gz").symlink_to(d / "scan.nii.gz")
    return Case(segment(c, d / "scan.nii.gz", output=str(d / "alias.nii.gz")),
                mentions=("alias.nii.gz", "input"))  # fmt: skip


@case
def output_is_hard_link_to_input(d: Path, c: Common) -> Case:
    shutil.copy(c.ct, d / "scan.nii.gz")
    os.link(d / "scan.nii.gz", d / "same.nii.gz")
    return Case(segment(c, d / "scan.nii.gz", output=str(d / "same.nii.gz")),
                mentions=("same.nii.gz", "input"))  # fmt: skip


@case
def output_is_points_file(d: Path, c: Common) -> Case:
    path = markups(d / "clicks.nrrd", [{"position": [-5.0, -161.0, 139.0]}])
    argv = ["segment", str(c.ct), "--points", str(path), "--weights", str(c.weights),
            "-o", str(path)]  # fmt: skip
    return Case(argv, mentions=("clicks.nrrd", "input"))


@case
def output_is_weights(d: Path, c: Common) -> Case:
    shutil.copy(c.weights, d / "weights.nrrd")
    argv = ["segment", str(c.ct), "-p", c.inside, "--weights", str(d / "weights.nrrd"),
            "-o", str(d / "weights.nrrd")]  # fmt: skip
    return Case(argv, mentions=("weights.nrrd", "input"))


@case
def output_folder_missing(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, output=str(d / "nowhere" / "out.seg.nrrd")),
                mentions=("nowhere", "does not exist"))  # fmt: skip


@case
def output_folder_read_only(d: Path, c: Common) -> Case:
    folder = read_only_folder(d / "locked")
    return Case(segment(c, c.ct, output=str(folder / "out.seg.nrrd")), mentions=("locked",))


@case
def output_disk_full(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, output=str(d / "out.seg.nrrd")), mentions=("out.seg.nrrd",),
                file_size_limit=4096)  # fmt: skip


@case
def output_is_folder(d: Path, c: Common) -> Case:
    (d / "out.seg.nrrd").mkdir()
    return Case(segment(c, c.ct, output=str(d / "out.seg.nrrd")), mentions=("out.seg.nrrd",))


@case
def output_wrong_extension(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, output="out.png"), mentions=("out.png", ".seg.nrrd"))


@case
def output_no_extension(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, output="out"), mentions=("out", ".seg.nrrd"))


@case
def output_parent_is_file(d: Path, c: Common) -> Case:
    (d / "plain").write_text("a file")
    return Case(segment(c, c.ct, output=str(d / "plain" / "out.seg.nrrd")), mentions=("plain",))


# --- model, weights and device ----------------------------------------------------------------


def weights_case(c: Common, path: Path, *mentions: str, model: str = "fastsam3d") -> Case:
    argv = ["segment", str(c.ct), "-p", c.inside, "--model", model, "--weights", str(path),
            "-o", "out.seg.nrrd"]  # fmt: skip
    return Case(argv, mentions=(path.name, *mentions))


@case
def model_unknown(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, "--model", "bogus"), mentions=("bogus", "--model"))


@case
def device_bogus(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, "--device", "bogus"), mentions=("bogus", "device"))


@case
def device_cuda_missing(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, "--device", "cuda:7"), mentions=("cuda:7",))


@case
def device_mps_missing(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, "--device", "mps"), mentions=("mps",))


@case
def weights_missing(d: Path, c: Common) -> Case:
    return weights_case(c, d / "absent.pth", "not found")


@case
def weights_text_file(d: Path, c: Common) -> Case:
    (d / "notes.pth").write_text("these are not weights\n")
    return weights_case(c, d / "notes.pth")


@case
def weights_empty_file(d: Path, c: Common) -> Case:
    (d / "empty.pth").write_bytes(b"")
    return weights_case(c, d / "empty.pth")


@case
def weights_truncated(d: Path, c: Common) -> Case:
    with open(c.weights, "rb") as source:
        (d / "cut.pth").write_bytes(source.read(1 << 20))
    return weights_case(c, d / "cut.pth")


@case
def weights_html_page(d: Path, c: Common) -> Case:
    (d / "FastSAM3D.pth").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    return weights_case(c, d / "FastSAM3D.pth")


@case
def weights_folder(d: Path, c: Common) -> Case:
    (d / "weights.pth").mkdir()
    return weights_case(c, d / "weights.pth", "folder")


@case
def weights_encoder_only(d: Path, c: Common) -> Case:
    import torch

    prefix = "image_encoder."
    encoder = {k[len(prefix) :]: v for k, v in c.state.items() if k.startswith(prefix)}
    torch.save(encoder, d / "encoder.pth")
    return weights_case(c, d / "encoder.pth", "encoder")


@case
def weights_with_nan(d: Path, c: Common) -> Case:
    import torch

    state = dict(c.state)
    key = next(k for k in state if k.startswith("mask_decoder.") and k.endswith("weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save({"model_state_dict": state}, d / "nan.pth")
    return weights_case(c, d / "nan.pth", "NaN")


@case
def weights_unsafe_pickle(d: Path, c: Common) -> Case:
    (d / "evil.pth").write_bytes(pickle.dumps(Exploit(), protocol=2))
    return weights_case(c, d / "evil.pth")


@case
def weights_wrong_shape(d: Path, c: Common) -> Case:
    import torch

    state = dict(c.state)
    key = next(k for k in state if k.startswith("mask_decoder.") and k.endswith("weight"))
    state[key] = state[key][..., :1].clone()
    torch.save(state, d / "other.pth")
    return weights_case(c, d / "other.pth")


@case
def weights_only_decoder(d: Path, c: Common) -> Case:
    import torch

    state = {k: v for k, v in c.state.items() if not k.startswith("image_encoder.")}
    torch.save(state, d / "decoder.pth")
    return weights_case(c, d / "decoder.pth")


@case
def weights_not_a_dict(d: Path, c: Common) -> Case:
    import torch

    torch.save([1, 2, 3], d / "list.pth")
    return weights_case(c, d / "list.pth")


@case
def weights_offline_not_cached(d: Path, c: Common) -> Case:
    argv = ["segment", str(c.ct), "-p", c.inside, "-o", "out.seg.nrrd"]
    return Case(argv, mentions=("--weights",))


@case
def weights_cache_read_only(d: Path, c: Common) -> Case:
    folder = read_only_folder(d / "cache")
    argv = ["segment", str(c.ct), "-p", c.inside, "-o", "out.seg.nrrd"]
    return Case(argv, mentions=("cache",), env={"FASTSAM3D_CACHE_DIR": str(folder)})


@case
def weights_cache_is_file(d: Path, c: Common) -> Case:
    (d / "cache").write_text("a file, not a folder")
    argv = ["segment", str(c.ct), "-p", c.inside, "-o", "out.seg.nrrd"]
    return Case(argv, mentions=("cache",), env={"FASTSAM3D_CACHE_DIR": str(d / "cache")})


@case
def weights_wrong_file_in_cache(d: Path, c: Common) -> Case:
    (d / "cache").mkdir()
    (d / "cache" / "sam_med3d_turbo.pth").write_text("<html>an error page</html>")
    argv = ["segment", str(c.ct), "-p", c.inside, "--model", "sam-med3d-turbo",
            "-o", "out.seg.nrrd"]  # fmt: skip
    return Case(
        argv,
        mentions=("--weights",),
        says=("SHA-256",),
        env={"FASTSAM3D_CACHE_DIR": str(d / "cache")},
    )


@case
def weights_download_unknown(d: Path, c: Common) -> Case:
    return Case(["weights", "download", "bogus"], mentions=("bogus",))


@case
def weights_download_offline(d: Path, c: Common) -> Case:
    return Case(["weights", "download", "fastsam3d"], mentions=("--weights",))


@case
def weights_verify_not_cached(d: Path, c: Common) -> Case:
    return Case(["weights", "verify", "fastsam3d"], mentions=("FastSAM3D.pth",))


# --- the other commands -----------------------------------------------------------------------


@case
def evaluate_given_a_file(d: Path, c: Common) -> Case:
    return Case(["evaluate", str(c.ct), "--model", "oracle", "-o", "r.csv"],
                mentions=(c.ct.name, "folder"))  # fmt: skip


@case
def evaluate_missing_folder(d: Path, c: Common) -> Case:
    return Case(["evaluate", str(d / "cases"), "--model", "oracle", "-o", "r.csv"],
                mentions=("cases",))  # fmt: skip


@case
def evaluate_empty_folder(d: Path, c: Common) -> Case:
    (d / "imagesTr").mkdir()
    (d / "labelsTr").mkdir()
    return Case(["evaluate", str(d / "imagesTr"), "--model", "oracle", "-o", "r.csv"],
                mentions=("imagesTr",))  # fmt: skip


@case
def evaluate_output_folder_missing(d: Path, c: Common) -> Case:
    (d / "imagesTr").mkdir()
    (d / "labelsTr").mkdir()
    shutil.copy(c.ct, d / "imagesTr" / "a.nii.gz")
    shutil.copy(c.ct, d / "labelsTr" / "a.nii.gz")
    return Case(["evaluate", str(d / "imagesTr"), "--model", "oracle",
                 "-o", str(d / "nowhere" / "r.csv")], mentions=("nowhere",))  # fmt: skip


@case
def evaluate_output_is_label(d: Path, c: Common) -> Case:
    (d / "imagesTr").mkdir()
    (d / "labelsTr").mkdir()
    shutil.copy(c.ct, d / "imagesTr" / "a.nii.gz")
    shutil.copy(c.ct, d / "labelsTr" / "a.nii.gz")
    return Case(["evaluate", str(d / "imagesTr"), "--model", "oracle",
                 "-o", str(d / "labelsTr" / "a.nii.gz")], mentions=("a.nii.gz",))  # fmt: skip


@case
def evaluate_plot_is_the_output(d: Path, c: Common) -> Case:
    dataset = training_folder(d, c)
    return Case(["evaluate", str(dataset / "imagesTr"), "--model", "oracle",
                 "-o", str(d / "r.png"), "--plot", str(d / "r.png")],
                mentions=("r.png", "another name"))  # fmt: skip


def training_folder(d: Path, c: Common) -> Path:
    """An imagesTr/labelsTr folder with one case: the CT, labelled where it is bright."""
    (d / "data" / "imagesTr").mkdir(parents=True)
    (d / "data" / "labelsTr").mkdir()
    shutil.copy(c.ct, d / "data" / "imagesTr" / "a_0000.nii.gz")
    image = sitk.ReadImage(str(c.ct))
    label = sitk.Cast(image > 200, sitk.sitkUInt8)
    sitk.WriteImage(label, str(d / "data" / "labelsTr" / "a.nii.gz"))
    return d / "data"


@case
def finetune_output_is_a_label(d: Path, c: Common) -> Case:
    data = training_folder(d, c)
    return Case(["finetune", str(data), "--weights", str(c.weights), "--device", "cpu",
                 "-o", str(data / "labelsTr" / "a.nii.gz")],
                mentions=("a.nii.gz", "input"))  # fmt: skip


@case
def finetune_checkpoint_every_zero(d: Path, c: Common) -> Case:
    data = training_folder(d, c)
    return Case(["finetune", str(data), "--weights", str(c.weights), "--device", "cpu",
                 "--checkpoint-every", "0", "-o", "a.pt"],
                mentions=("--checkpoint-every",))  # fmt: skip


@case
def distill_output_is_an_image(d: Path, c: Common) -> Case:
    data = training_folder(d, c)
    return Case(["distill", str(data), "--teacher-weights", str(c.weights), "--teacher",
                 "fastsam3d", "-o", str(data / "imagesTr" / "a_0000.nii.gz")],
                mentions=("a_0000.nii.gz", "input"))  # fmt: skip


@case
def distill_batch_size_zero(d: Path, c: Common) -> Case:
    data = training_folder(d, c)
    return Case(["distill", str(data), "--batch-size", "0", "-o", "s.pt"],
                mentions=("--batch-size",))  # fmt: skip


@case
def evaluate_unknown_model(d: Path, c: Common) -> Case:
    return Case(["evaluate", str(d), "--model", "bogus", "-o", "r.csv"], mentions=("bogus",))


@case
def evaluate_zero_clicks(d: Path, c: Common) -> Case:
    return Case(["evaluate", str(d), "--clicks", "0", "-o", "r.csv"], mentions=("--clicks",))


@case
def bench_json_folder_missing(d: Path, c: Common) -> Case:
    return Case(["bench", "--quick", "--json", str(d / "nowhere" / "b.json")],
                mentions=("nowhere",))  # fmt: skip


@case
def bench_json_is_a_scan(d: Path, c: Common) -> Case:
    golden = d / "golden"
    golden.mkdir()
    (golden / "fastsam3d.manifest.json").write_text("{}")
    return Case(["bench", "--quick", "--golden", str(golden), "--scan", f"{c.ct},{c.ct}",
                 "--json", str(c.ct)], mentions=(c.ct.name, "input"))  # fmt: skip


@case
def bench_unknown_device(d: Path, c: Common) -> Case:
    return Case(["bench", "--quick", "--device", "bogus"], mentions=("bogus",))


@case
def bench_bad_volume(d: Path, c: Common) -> Case:
    return Case(["bench", "--quick", "--volume", "12x"], mentions=("12x",))


@case
def check_golden_missing_folder(d: Path, c: Common) -> Case:
    return Case(["check-golden", str(d / "golden")], mentions=("golden",))


@case
def unknown_command(d: Path, c: Common) -> Case:
    return Case(["segmnet", str(c.ct)], mentions=("segmnet",))


@case
def unknown_option(d: Path, c: Common) -> Case:
    return Case(segment(c, c.ct, "--colour", "red"), mentions=("--colour",))


@case
def missing_output_option(d: Path, c: Common) -> Case:
    return Case(["segment", str(c.ct), "-p", c.inside], mentions=("--output",))


# --- the Python API ---------------------------------------------------------------------------

API_SETUP = """
import numpy as np
from fastsam3d_core import Session, Volume, build_model, load_checkpoint
"""


def api(code: str, *mentions: str) -> Case:
    return Case(code=API_SETUP + code, mentions=mentions)


@case
def api_session_without_volume(d: Path, c: Common) -> Case:
    return api(
        f"""
model = build_model("fastsam3d"); load_checkpoint(model, {str(c.weights)!r})
Session(None, model)
""",
        "Volume",
    )


@case
def api_session_without_weights(d: Path, c: Common) -> Case:
    return api(
        f"""
from fastsam3d_core.io import read_volume
Session(read_volume({str(c.ct)!r}), build_model("fastsam3d")).add_point(({c.inside}))
""",
        "weights",
    )


@case
def api_volume_4d(d: Path, c: Common) -> Case:
    return api("Volume(np.zeros((2, 3, 4, 5)), np.eye(4))", "3-D")


@case
def api_volume_strings(d: Path, c: Common) -> Case:
    return api("Volume(np.full((2, 3, 4), 'a'), np.eye(4))", "numbers")


@case
def api_volume_nan_session(d: Path, c: Common) -> Case:
    return api(
        f"""
model = build_model("fastsam3d"); load_checkpoint(model, {str(c.weights)!r})
Session(Volume(np.full((8, 8, 8), np.nan, np.float32), np.eye(4)), model)
""",
        "NaN",
    )


@case
def api_point_nan(d: Path, c: Common) -> Case:
    return api(
        f"""
from fastsam3d_core.io import read_volume
model = build_model("fastsam3d"); load_checkpoint(model, {str(c.weights)!r})
Session(read_volume({str(c.ct)!r}), model).add_point((float("nan"), 0.0, 0.0))
""",
        "nan",
    )


@case
def api_point_two_numbers(d: Path, c: Common) -> Case:
    return api(
        f"""
from fastsam3d_core.io import read_volume
model = build_model("fastsam3d"); load_checkpoint(model, {str(c.weights)!r})
Session(read_volume({str(c.ct)!r}), model).add_point((1.0, 2.0))
""",
        "three",
    )


@case
def api_checkpoint_text_file(d: Path, c: Common) -> Case:
    (d / "notes.pth").write_text("not weights")
    return api(f"load_checkpoint(build_model('fastsam3d'), {str(d / 'notes.pth')!r})", "notes.pth")


@case
def api_write_labelmap_wrong_shape(d: Path, c: Common) -> Case:
    return api(
        f"""
from fastsam3d_core.io import read_volume, write_labelmap
write_labelmap({str(d / "out.nrrd")!r}, np.zeros((2, 2, 2), np.uint8), read_volume({str(c.ct)!r}))
""",
        "out.nrrd",
        "shape",
    )


@case
def api_read_markups_not_utf8(d: Path, c: Common) -> Case:
    (d / "clicks.mrk.json").write_bytes(b'{"markups": "\xff"}')
    return api(
        f"""
from fastsam3d_core.io.markups import read_markups_points
read_markups_points({str(d / "clicks.mrk.json")!r})
""",
        "clicks.mrk.json",
    )


@case
def api_build_unknown_model(d: Path, c: Common) -> Case:
    return api("build_model('bogus')", "bogus")


@case
def api_build_bogus_device(d: Path, c: Common) -> Case:
    return api("build_model('fastsam3d', device='bogus')", "bogus")


# --- running a case ---------------------------------------------------------------------------


class Exploit:
    """Unpickling this would run a shell command (never run: the loader must refuse it)."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def read_only_folder(path: Path) -> Path:
    """A folder nobody can create files in, the superuser included (immutable attribute)."""
    path.mkdir()
    path.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    return path


def release_read_only(root: Path) -> None:
    if os.geteuid() == 0:
        for folder in root.rglob("*"):
            if folder.is_dir() and not folder.is_symlink():
                subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    for folder in root.rglob("*"):
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(0o755)


def _available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 16 << 30


def _nifti_header(shape: tuple[int, int, int], datatype: int, bitpix: int) -> bytes:
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header["datatype"], header["bitpix"] = datatype, bitpix
    header["vox_offset"] = 352
    header.set_sform(np.eye(4), code=1)
    return header.binaryblock + b"\0" * 4


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    changed: list[str]
    left_behind: list[str]

    def classify(self, mentions: tuple[str, ...], says: tuple[str, ...] = ()) -> str:
        """The outcome's class; "handled well" is the only acceptable one."""
        if self.changed:
            return "file damaged"
        if self.returncode is None:
            return "hang"
        if self.returncode < 0 or self.returncode >= 128:
            return "crash"
        if "Traceback" in self.stdout + self.stderr:
            return "traceback"
        if self.returncode == 0:
            return "silently wrong"
        said = all(word.lower() in (self.stdout + self.stderr).lower() for word in says)
        if not self.clear(mentions) or not said or self.left_behind:
            return "unclear message"
        return "handled well"

    def clear(self, mentions: tuple[str, ...]) -> bool:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        if len(lines) != 1 or not lines[0].startswith("error: "):
            return False
        return all(mention.lower() in lines[0].lower() for mention in mentions)


def _snapshot(folders: list[Path]) -> dict[str, object]:
    """Each file's identity: any write changes its ctime (which no program can set back), a
    replacement its inode; small files are hashed as well."""
    state: dict[str, object] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                status = path.stat()
                digest = (
                    hashlib.sha256(path.read_bytes()).hexdigest()
                    if status.st_size < 1 << 20
                    else ""
                )
                state[str(path)] = (status.st_ino, status.st_size, status.st_ctime_ns, digest)
            elif path.is_dir():
                state[str(path)] = "folder"
    return state


class Server:
    """The forked command-line server (``forked_cli.py``) on pipes."""

    def __init__(self, code: str | None) -> None:
        env = dict(os.environ)
        if code:
            env["PYTHONPATH"] = code + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("forked_cli.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.package = json.loads(self._read())["ready"]

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the command-line server stopped")
        return line

    def run(self, request: dict) -> int | None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self._read())["returncode"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def run_console_script(request: dict) -> int | None:
    """Run a command-line request as the installed ``fastsam3d`` script in a new process."""
    env = {key: value for key, value in os.environ.items() if key not in request["unset"]}
    env.update(request["env"])
    with open(request["stdout"], "w") as stdout, open(request["stderr"], "w") as stderr:
        try:
            return subprocess.run(
                [str(Path(sys.executable).with_name("fastsam3d")), *request["argv"]],
                cwd=request["cwd"], env=env, stdout=stdout, stderr=stderr,
                timeout=request["timeout_s"],
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            return None


def run_case(
    run: Callable[[dict], int | None],
    common: Common,
    name: str,
    root: Path,
    tag: str = "",
    cases: dict[str, Callable[[Path, Common], Case]] | None = None,
) -> tuple[Case, Outcome]:
    """Build a case (of ``cases``, default this module's) in its own folder, run it with
    ``run`` (a server's or a new process)."""
    cases = CASES if cases is None else cases
    # Not named after the case, so that words of its name in a path cannot pass for a mention.
    folder = root / f"case-{sorted(cases).index(name):03d}{tag}"
    folder.mkdir()
    bad = cases[name](folder, common)
    watched = [folder, common.folder]
    before = _snapshot(watched)
    logs = root / f"{folder.name}.log"
    logs.mkdir()
    env = {"FASTSAM3D_CACHE_DIR": str(root / f"{folder.name}.cache"), "COLUMNS": "100",
           "http_proxy": OFFLINE_PROXY, "https_proxy": OFFLINE_PROXY, **bad.env}  # fmt: skip
    request = {"cwd": str(folder), "env": env, "unset": ["no_proxy", "NO_PROXY"],
               "stdout": str(logs / "stdout"), "stderr": str(logs / "stderr"),
               "timeout_s": bad.timeout_s,
               "file_size_limit": bad.file_size_limit,
               "address_space_limit": bad.address_space_limit}  # fmt: skip
    request.update({"argv": bad.argv} if bad.argv is not None else {"code": bad.code})
    returncode = run(request)
    after = _snapshot(watched)
    changed = [path for path, digest in before.items() if after.get(path) != digest]
    left = [path for path in after if path not in before]
    outcome = Outcome(
        returncode,
        (logs / "stdout").read_text(errors="replace"),
        (logs / "stderr").read_text(errors="replace"),
        changed,
        left,
    )
    return bad, outcome


def make_common(folder: Path) -> Common:
    import torch

    from fastsam3d_core import build_model
    from fastsam3d_core.io import read_volume

    folder.mkdir()
    ct = folder / "ct.nii.gz"
    shutil.copy(EXAMPLE_CT, ct)
    volume = read_volume(ct)
    centre = volume.index_to_ras((np.array(volume.shape) - 1) / 2)
    torch.manual_seed(0)
    state = build_model("fastsam3d").state_dict()
    weights = folder / "fastsam3d-seeded.pth"
    torch.save({"model_state_dict": state}, weights)
    inside = ",".join(f"{value:.1f}" for value in centre)
    return Common(folder, ct, inside, weights, state)


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Common, Path]]:
    root = tmp_path_factory.mktemp("battery")
    server = Server(os.environ.get("FASTSAM3D_BATTERY_CODE"))
    try:
        yield server, make_common(root / "common"), root
    finally:
        server.close()
        release_read_only(root)


def test_battery_has_enough_cases():
    assert len(CASES) >= 76


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_one_clear_line(battery: tuple[Server, Common, Path], name: str):
    server, common, root = battery
    bad, outcome = run_case(server.run, common, name, root)
    verdict = outcome.classify(bad.mentions, bad.says)
    assert verdict == "handled well", (
        f"{verdict}: exit {outcome.returncode}; must mention {bad.mentions}; "
        f"changed {outcome.changed}; left {outcome.left_behind}\n"
        f"stderr:\n{outcome.stderr[-3000:]}\nstdout:\n{outcome.stdout[-1500:]}"
    )


# One case of each kind of failure: usage, IO, DICOM geometry, checkpoint, model state.
SAME_IN_A_NEW_PROCESS = (
    "point_words",
    "output_is_link_to_input",
    "dicom_missing_slice",
    "weights_html_page",
    "weights_encoder_only",
)


@pytest.mark.parametrize("name", SAME_IN_A_NEW_PROCESS)
def test_the_console_script_answers_as_the_forked_children(battery, name: str):
    """The battery's forked children behave as the installed script started anew."""
    server, common, root = battery
    _, forked = run_case(server.run, common, name, root, tag="-forked")
    _, script = run_case(run_console_script, common, name, root, tag="-script")
    assert script.returncode == forked.returncode
    assert script.stderr.replace("-script", "-forked") == forked.stderr
    assert not script.changed and not script.left_behind


def main() -> None:
    """Print each case's outcome and the totals (``python Testing/test_bad_input.py``)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1].parent) as tmp:
        root = Path(tmp)
        server = Server(os.environ.get("FASTSAM3D_BATTERY_CODE"))
        print(f"package: {server.package}")
        try:
            common = make_common(root / "common")
            totals: Counter[str] = Counter()
            for name in sorted(CASES):
                bad, outcome = run_case(server.run, common, name, root)
                verdict = outcome.classify(bad.mentions, bad.says)
                totals[verdict] += 1
                last = (outcome.stderr.strip().splitlines() or [""])[-1][:150]
                print(f"{verdict:>15}  {name}: exit {outcome.returncode}: {last}", flush=True)
        finally:
            server.close()
            release_read_only(root)
        print(f"{sum(totals.values())} cases: " + ", ".join(f"{totals[o]} {o}" for o in OUTCOMES))


if __name__ == "__main__":
    main()
