"""Data safety and a newcomer's first run, through the installed ``fastsam3d`` console script.

The battery of bad inputs is in ``test_bad_input.py``; these tests cover what works (and must keep
working) and what only a real process shows: the console script itself, its help, the files it
writes, and the messages of ITK and Python warnings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import invoke_cli

from fastsam3d_core import Session, Volume, build_model, load_checkpoint
from fastsam3d_core.examples import SPLEEN_POINT_RAS, example_ct_path
from fastsam3d_core.io import ITKWarning, Segment, read_volume, write_labelmap, write_segmentation
from fastsam3d_core.io.errors import itk_warnings_as_python
from fastsam3d_core.weights.registry import WEIGHTS

CONSOLE_SCRIPT = Path(sys.executable).with_name("fastsam3d")


@pytest.fixture(scope="module")
def seeded_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights cache holding a seeded FastSAM3D checkpoint where the download would put it."""
    cache = tmp_path_factory.mktemp("cache")
    torch.manual_seed(0)
    state = build_model("fastsam3d").state_dict()
    torch.save({"model_state_dict": state}, cache / WEIGHTS["fastsam3d"].filename)
    return cache


def fastsam3d(*arguments: object, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    """Run the installed console script, offline, as a user would."""
    env = {**os.environ, "FASTSAM3D_CACHE_DIR": str(cache), "COLUMNS": "100"}
    env.update(https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *map(str, arguments)],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )


def test_the_readme_main_command_segments_the_example_reproducibly(seeded_cache, tmp_path):
    """``fastsam3d segment --example``: the device actually used, and byte-identical outputs."""
    runs = [fastsam3d("segment", "--example", "-o", f"spleen{n}.seg.nrrd", cwd=tmp_path,
                      cache=seeded_cache) for n in (1, 2)]  # fmt: skip
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""
        assert "on auto" not in run.stdout and "on cpu ..." in run.stdout
    first, second = (tmp_path / f"spleen{n}.seg.nrrd" for n in (1, 2))
    assert first.read_bytes() == second.read_bytes()
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(first)))
    assert mask.sum() > 0


def test_help_shows_what_to_type(seeded_cache, tmp_path):
    run = fastsam3d("segment", "--help", cwd=tmp_path, cache=seeded_cache)
    assert run.returncode == 0
    for metavar in ("R,A,S[:neg]", "FILE.mrk.json", "OUT", "DEVICE", "--example"):
        assert metavar in run.stdout
    assert "TEXT" not in run.stdout and "PATH" not in run.stdout


def test_an_output_that_is_the_input_is_refused_before_anything_runs(seeded_cache, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    shutil.copy(example_ct_path(), scan)
    (tmp_path / "link.nii.gz").symlink_to(scan)
    original = scan.read_bytes()
    point = ",".join(map(str, SPLEEN_POINT_RAS))
    run = fastsam3d("segment", scan, "-p", point, "-o", "link.nii.gz", cwd=tmp_path,
                    cache=seeded_cache)  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "would overwrite the input" in run.stderr
    assert "reading" not in run.stdout  # refused before the image was read
    assert scan.read_bytes() == original


@pytest.mark.parametrize("suffix", [".seg.nrrd", ".nrrd", ".nii.gz"])
def test_identical_writes_give_identical_files(tmp_path, suffix):
    """Each write goes through its own temporary name: none of it may reach the file."""
    volume = read_volume(example_ct_path())
    labels = (volume.array > 100).astype(np.uint8)
    for name in ("a", "b"):
        if suffix == ".seg.nrrd":
            write_segmentation(
                tmp_path / f"{name}{suffix}", [Segment("bone", (1, 1, 1), labels)], volume
            )
        else:
            write_labelmap(tmp_path / f"{name}{suffix}", labels, volume)
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()


def test_itk_warnings_become_python_warnings_naming_the_file(tmp_path, capfd):
    image = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8))
    image.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with itk_warnings_as_python(tmp_path / "sheared.nii.gz"):
            sitk.WriteImage(image, str(tmp_path / "sheared.nii.gz"))
    assert capfd.readouterr().err == ""  # nothing reached the terminal directly
    messages = [str(w.message) for w in caught if issubclass(w.category, ITKWarning)]
    assert messages == ["sheared.nii.gz: Non-orthogonal direction matrix coerced to orthogonal"]


def test_stderr_is_restored_after_captures_in_threads_and_errors(tmp_path):
    """Descriptor 2 is the process's: concurrent and failing captures must leave it as it was."""
    image = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8))
    image.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    before = os.fstat(2)

    def write(n: int) -> None:
        for _ in range(10):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with itk_warnings_as_python(tmp_path / f"{n}.nii.gz"):
                    sitk.WriteImage(image, str(tmp_path / f"{n}.nii.gz"))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(KeyError):
        warnings.simplefilter("always")
        with itk_warnings_as_python(tmp_path / "failed.nii.gz") as messages:
            sitk.WriteImage(image, str(tmp_path / "failed.nii.gz"))
            raise KeyError("the block failed")
    after = os.fstat(2)
    assert (after.st_ino, after.st_dev) == (before.st_ino, before.st_dev)
    # A failed block's messages are kept for its error, not warned.
    assert messages == ["Non-orthogonal direction matrix coerced to orthogonal"] and not caught


def test_warnings_are_one_line_without_source_code(tmp_path):
    """An image without a label is left out with a warning: one line, no Python source echoed."""
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        shutil.copy(example_ct_path(), tmp_path / "imagesTr" / name)
    shutil.copy(example_ct_path(), tmp_path / "labelsTr" / "a.nii.gz")
    result = invoke_cli(["evaluate", tmp_path, "--model", "oracle", "--clicks", "1",
                         "-o", tmp_path / "r.csv"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: 1 image(s) without a label left out: ['b.nii.gz']\n"


def test_a_model_with_random_parts_does_not_segment(tmp_path, fastsam3d_seeded):
    """An encoder-only file fills the encoder; the session refuses the random decoder."""
    torch.save(fastsam3d_seeded.image_encoder.state_dict(), tmp_path / "encoder.pth")
    model = build_model("fastsam3d")
    load_checkpoint(model, tmp_path / "encoder.pth")
    volume = read_volume(example_ct_path())
    with pytest.raises(ValueError, match="prompt encoder and mask decoder have no trained"):
        Session(volume, model)
    # The other parts loaded on their own (as from the teacher in FastSAM3D's evaluation).
    model.prompt_encoder.load_state_dict(fastsam3d_seeded.prompt_encoder.state_dict())
    with pytest.raises(ValueError, match="mask decoder has no trained"):
        Session(volume, model)
    model.mask_decoder.load_state_dict(fastsam3d_seeded.mask_decoder.state_dict())
    Session(volume, model)  # fully loaded now


def test_values_near_the_float_limits_segment_like_the_scaled_image(fastsam3d_seeded):
    """z-normalisation is scale-free: scaling to ±3e38 must not change the mask (no overflow)."""
    volume = read_volume(example_ct_path())
    values = volume.array.astype(np.float32)
    huge = Volume(values * np.float32(3e38 / np.abs(values).max()), volume.ijk_to_ras)
    masks = []
    for image in (Volume(values, volume.ijk_to_ras), huge):
        masks.append(Session(image, fastsam3d_seeded).add_point(SPLEEN_POINT_RAS).mask)
    assert masks[0].sum() > 0
    assert np.array_equal(masks[0], masks[1])


def test_a_flipped_array_view_segments_like_its_copy(fastsam3d_seeded):
    volume = read_volume(example_ct_path())
    flipped = np.flip(volume.array, axis=0)  # negative strides, as from array[::-1]
    masks = [
        Session(Volume(array, volume.ijk_to_ras), fastsam3d_seeded).add_point(SPLEEN_POINT_RAS).mask
        for array in (flipped, flipped.copy())
    ]
    assert np.array_equal(masks[0], masks[1])
