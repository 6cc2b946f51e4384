"""The command line, through Typer's runner."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import typer
from conftest import GOLDEN_DIR, invoke_cli
from typer.testing import CliRunner

from fastsam3d_core.cli import app

runner = CliRunner()


def words(output: str) -> str:
    """The output with rich's panel borders and line wrapping removed."""
    return " ".join(output.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def test_info_lists_models():
    result = invoke_cli(["info"])
    assert result.exit_code == 0, result.output
    assert "fastsam3d: 53.22 M parameters" in result.output
    assert "sam-med3d-turbo: 100.51 M parameters" in result.output


def test_every_command_has_help():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert command.help, f"command {name} has no help"
        assert invoke_cli([name, "--help"]).exit_code == 0


@pytest.mark.skipif(not GOLDEN_DIR.is_dir(), reason="golden references not available")
def test_check_golden_passes_and_fails(tmp_path):
    result = invoke_cli(["check-golden", str(GOLDEN_DIR), "--model", "fastsam3d"])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output

    shutil.copy(GOLDEN_DIR / "fastsam3d.manifest.json", tmp_path)
    with np.load(GOLDEN_DIR / "fastsam3d.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["s2_negative_with_prev_mask_iou"] = arrays["s2_negative_with_prev_mask_iou"] * 1.001
    np.savez(tmp_path / "fastsam3d.npz", **arrays)
    result = invoke_cli(["check-golden", str(tmp_path)])
    assert result.exit_code == 1
    assert "worst s2_negative_with_prev_mask_iou" in result.output and "FAILED" in result.output


def test_check_golden_without_references(tmp_path):
    result = invoke_cli(["check-golden", str(tmp_path)])
    assert result.exit_code == 2
    assert "no golden manifests" in words(result.output)


DATA = GOLDEN_DIR.parent / "data"
BRATS_IMAGE = DATA / "brats2021_flair_edema/imagesTr/BraTS2021_01646.nii.gz"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A full FastSAM3D checkpoint file with random weights (the real one cannot be fetched)."""
    import torch

    from fastsam3d_core import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "fastsam3d-random.pth"
    torch.save({"model_state_dict": build_model("fastsam3d").state_dict()}, path)
    return path


def write_markups(path, points_ras):
    """A Slicer markups file in LPS, as Slicer writes them."""
    import json

    controls = [
        {"id": str(i), "position": [-r, -a, s], "positionStatus": "defined"}
        for i, (r, a, s) in enumerate(points_ras)
    ]
    path.write_text(
        json.dumps(
            {
                "markups": [
                    {"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": controls}
                ]
            }
        )
    )
    return path


@pytest.mark.skipif(not BRATS_IMAGE.is_file(), reason="test scans not available")
def test_segment_writes_a_segmentation_with_the_input_geometry(tmp_path, random_weights):
    from fastsam3d_core.io import read_segmentation, read_volume

    image = read_volume(BRATS_IMAGE)
    centre = image.index_to_ras(np.array([80.0, 80.0, 52.0]))
    negative = write_markups(tmp_path / "exclude.mrk.json", [centre + [10.0, 0.0, 0.0]])
    output = tmp_path / "out.seg.nrrd"
    result = invoke_cli(
        [
            "segment",
            str(BRATS_IMAGE),
            "--point",
            ",".join(map(str, centre)),
            "--negative-points",
            str(negative),
            "--weights",
            str(random_weights),
            "--device",
            "cpu",
            "--name",
            "Oedema",
            "-o",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "point 1/2 +" in result.output and "encoder + decoder" in result.output
    assert "point 2/2 -" in result.output and "2/2 - " in result.output
    segments, geometry = read_segmentation(output)
    assert [s.name for s in segments] == ["Oedema"]
    assert segments[0].mask.shape == image.shape
    assert geometry.shape == image.shape
    np.testing.assert_allclose(geometry.ijk_to_ras, image.ijk_to_ras, atol=1e-6)


@pytest.mark.skipif(not BRATS_IMAGE.is_file(), reason="test scans not available")
def test_segment_reports_bad_input(tmp_path, random_weights):
    base = ["segment", str(BRATS_IMAGE), "--weights", str(random_weights), "--device", "cpu"]
    outside = invoke_cli([*base, "--point", "5000,0,0", "-o", str(tmp_path / "a.seg.nrrd")])
    assert outside.exit_code == 1 and "outside the volume" in words(outside.output)
    assert not (tmp_path / "a.seg.nrrd").exists()
    wrong_suffix = invoke_cli([*base, "--point", "0,0,0", "-o", str(tmp_path / "a.png")])
    assert wrong_suffix.exit_code == 2 and ".seg.nrrd" in words(wrong_suffix.output)
    malformed = invoke_cli([*base, "--point", "1,2", "-o", str(tmp_path / "b.seg.nrrd")])
    assert malformed.exit_code == 2 and "R,A,S" in words(malformed.output)
    missing = invoke_cli(
        [
            "segment",
            str(tmp_path / "none.nii.gz"),
            "--point",
            "0,0,0",
            "-o",
            str(tmp_path / "c.nrrd"),
        ],
    )
    assert missing.exit_code == 1


@pytest.mark.skipif(not BRATS_IMAGE.is_file(), reason="test scans not available")
def test_segment_file_from_python_writes_the_labelmap_the_command_writes(tmp_path, random_weights):
    import re

    from fastsam3d_core.io import read_volume
    from fastsam3d_core.segment_job import PointPrompt, segment_file
    from fastsam3d_core.session import Click
    from fastsam3d_core.weights.recipe import ModelRecipe

    image = read_volume(BRATS_IMAGE)
    centre = image.index_to_ras(np.array([80.0, 80.0, 52.0]))
    point = ",".join(map(str, centre))
    by_command = tmp_path / "command.nrrd"
    result = invoke_cli(["segment", BRATS_IMAGE, "--point", point, "--weights", random_weights,
                         "--device", "cpu", "-o", by_command])  # fmt: skip
    assert result.exit_code == 0, result.output
    by_python = tmp_path / "python.nrrd"
    messages: list[str] = []
    written = segment_file(
        BRATS_IMAGE,
        [PointPrompt(Click(tuple(float(v) for v in point.split(","))), f"--point {point}")],
        by_python,
        lambda: ModelRecipe("fastsam3d", random_weights, device="cpu").load().model,
        say=messages.append,
    )
    expected = read_volume(by_command).array
    assert written.kind == "labelmap" and written.voxels == int(expected.sum()) > 0
    np.testing.assert_array_equal(read_volume(by_python).array, expected)

    def comparable(lines: list[str], output) -> list[str]:
        # The command also says which weights it loads; the times differ.
        kept = [line for line in lines if not line.startswith(("loading ", "encoder precision"))]
        return [re.sub(r"[0-9.]+ s$", "T s", line).replace(str(output), "OUT") for line in kept]

    assert comparable(messages, by_python) == comparable(result.stdout.splitlines(), by_command)


def test_web_takes_an_image_or_the_example_and_says_so_in_one_line(tmp_path):
    pytest.importorskip("trame_slicer")
    neither = invoke_cli(["web"])
    assert neither.exit_code == 2 and "--example" in words(neither.output)
    image = tmp_path / "scan.nii.gz"
    both = invoke_cli(["web", str(image), "--example"])
    assert both.exit_code == 2 and "not both" in words(both.output)
    assert "Traceback" not in neither.output + both.output
