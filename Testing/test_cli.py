"""The command line, through Typer's runner."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import typer
from conftest import GOLDEN_DIR
from typer.testing import CliRunner

from fastsam3d_core.cli import app

runner = CliRunner()


def test_info_lists_models():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "fastsam3d: 53.22 M parameters" in result.output
    assert "sam-med3d-turbo: 100.51 M parameters" in result.output


def test_every_command_has_help():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert command.help, f"command {name} has no help"
        assert runner.invoke(app, [name, "--help"]).exit_code == 0


@pytest.mark.skipif(not GOLDEN_DIR.is_dir(), reason="golden references not available")
def test_check_golden_passes_and_fails(tmp_path):
    result = runner.invoke(app, ["check-golden", str(GOLDEN_DIR), "--model", "fastsam3d"])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output

    shutil.copy(GOLDEN_DIR / "fastsam3d.manifest.json", tmp_path)
    with np.load(GOLDEN_DIR / "fastsam3d.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["s2_negative_with_prev_mask_iou"] = arrays["s2_negative_with_prev_mask_iou"] * 1.001
    np.savez(tmp_path / "fastsam3d.npz", **arrays)
    result = runner.invoke(app, ["check-golden", str(tmp_path)])
    assert result.exit_code == 1
    assert "worst s2_negative_with_prev_mask_iou" in result.output and "FAILED" in result.output


def test_check_golden_without_references(tmp_path):
    result = runner.invoke(app, ["check-golden", str(tmp_path)])
    assert result.exit_code == 2
    assert "no golden manifests" in result.output
