"""The module's self-test (ScriptedLoadableModuleTest), run inside Slicer.

It drives the logic, not the widget, through the scenarios of :mod:`.checks`, which the pytest
suite also runs on the slicer-core MRML classes; here they run in the application, with the
sample data and (when downloaded) the released weights.
"""

from __future__ import annotations

import logging

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from . import install


class FastSAM3DSlicerTest(ScriptedLoadableModuleTest):
    """Self-test: drives the logic (not the widget) on real nodes, as the pytest suite does."""

    # Dice the released FastSAM3D weights must reach on the synthetic sphere (two clicks).
    REAL_WEIGHTS_MIN_DICE = 0.8

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_OracleGeometry()
        self.setUp()
        self.test_SampleDataClicks()
        self.setUp()
        self.test_RealWeights()

    def _checks(self):
        missing = install.missing_packages()
        if "torch" in missing:
            install.check_torch_can_be_installed()
            install.install_torch()
        if missing:
            steps = install.plan_installation(install.slicer_python(), source=install.source_tree())
            install.run_steps(steps, logging.info)
        from fastsam3d_mrml import checks

        return checks

    def test_OracleGeometry(self):
        """Oblique synthetic volume under a transform: the segment lands on the right voxels."""
        self.delayDisplay("FastSAM3D: geometry with the oracle predictor")
        result = self._checks().run_sphere_scenario(slicer.mrmlScene)
        self.assertEqual(result.errors, [])
        self.assertLess(result.round_trip_mm, 1e-6)
        self.assertEqual(result.mismatched_voxels, 0)
        self.assertGreater(result.dice, 0.95)
        self.assertEqual(result.encodes, [True, False])

    def test_SampleDataClicks(self):
        """Sample data, a random-weights model: two clicks, one encoder run, a segment."""
        self.delayDisplay("FastSAM3D: sample data with a random-weights model")
        import SampleData
        import torch

        checks = self._checks()
        from fastsam3d_core import build_model

        volumeNode = SampleData.downloadSample("MRHead")
        torch.manual_seed(0)
        from fastsam3d_mrml.events import ErrorCollector
        from fastsam3d_mrml.logic import InteractiveSegmentationLogic

        observer = ErrorCollector()
        engine = InteractiveSegmentationLogic(slicer.mrmlScene, observer=observer)
        try:
            engine.setPredictor(build_model("fastsam3d").allow_random_weights())
            engine.setInputs(volumeNode)
            bounds = [0.0] * 6
            volumeNode.GetRASBounds(bounds)
            centre = [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)]
            first = checks.click(engine, centre)
            second = checks.click(engine, [centre[0] + 5, centre[1], centre[2]], False)
            self.assertEqual((first, second), (True, False))
            self.assertEqual(observer.errors, [])
            segmentation = engine.segmentationNode.GetSegmentation()
            self.assertIsNotNone(segmentation.GetSegment(engine.currentSegmentId))
        finally:
            engine.cleanup()

    def test_RealWeights(self):
        """The released weights on the sphere (only where they are already downloaded)."""
        from fastsam3d_core.weights import cached_weights_path, get_weights_entry

        path = cached_weights_path(get_weights_entry("fastsam3d"))
        if not path.is_file():
            self.delayDisplay(f"FastSAM3D: real-weights check skipped (no {path})")
            return
        checks = self._checks()
        from fastsam3d_mrml.models import load_predictor

        result = checks.run_sphere_scenario(slicer.mrmlScene, load_predictor("fastsam3d"))
        self.assertEqual(result.errors, [])
        self.assertGreaterEqual(result.dice, self.REAL_WEIGHTS_MIN_DICE)
