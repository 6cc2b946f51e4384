"""The scenarios of the module's Slicer self-test, run here on the slicer-core MRML classes."""

from __future__ import annotations

import pytest
import test_slicer_mrml  # noqa: F401 (skips without slicer-core; puts the module on sys.path)

checks = pytest.importorskip("fastsam3d_mrml.checks")
mrml_io = pytest.importorskip("fastsam3d_mrml.mrml_io")


def test_sphere_scenario_with_the_oracle_is_exact(scene):
    result = checks.run_sphere_scenario(scene)
    assert result.errors == []
    assert result.round_trip_mm < 1e-9
    assert result.mismatched_voxels == 0
    # The oracle passes through the 1.5 mm crop and back: only the boundary is smoothed.
    assert result.dice > 0.95, f"Dice {result.dice:.4f}: the segment is off the sphere"
    assert result.encodes == [True, False]


@pytest.mark.slow
def test_sphere_scenario_with_the_seeded_model_encodes_once(scene, fastsam3d_seeded):
    result = checks.run_sphere_scenario(scene, fastsam3d_seeded)
    assert result.errors == []
    assert result.mismatched_voxels == 0
    assert result.encodes == [True, False]
