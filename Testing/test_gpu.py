"""On a CUDA GPU: exactness, reduced precision and sessions, as the CPU tests check them there.

CI has no GPU: these tests are skipped there and run on a lent GPU machine (``pytest -m gpu``),
after ``benchmarks/gpu.sh``. ``FASTSAM3D_GPU_TEST_DEVICE=cpu`` runs them on the CPU instead, to
check the tests themselves where no GPU is.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import MODEL_NAMES

from fastsam3d_core.evaluation.agreement import golden_agreement, reduced_copy
from fastsam3d_core.golden import GOLDEN_RTOL

DEVICE = torch.device(os.environ.get("FASTSAM3D_GPU_TEST_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]
# fp16 and bf16 hold the bar that auto holds bf16 to on the CPU.
MIN_DICE = 0.99


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_both_models_reproduce_the_golden_references_on_the_gpu(name, golden_data):
    reference = golden_data[name]
    outputs = reference.run(reference.seeded_model(DEVICE))
    errors = reference.relative_errors(outputs)
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= GOLDEN_RTOL, (worst, errors[worst])
    assert reference.full_mask_disagreement(outputs) < 1e-4


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_half_precisions_agree_with_float32_on_the_gpu(name, precision, golden_data):
    reference = golden_data[name]
    model = reference.seeded_model(DEVICE)
    result = golden_agreement(reference, model, reduced_copy(model, precision))
    assert result.dice >= MIN_DICE, result.describe()
    assert result.embedding_rel_error is not None and result.embedding_rel_error < 0.05


def test_int8_is_refused_on_the_gpu_with_what_to_use(golden_data):
    if DEVICE.type == "cpu":
        pytest.skip("int8 runs on the CPU")
    with pytest.raises(ValueError, match="CPU only.*float16"):
        golden_data["fastsam3d"].seeded_model(DEVICE).set_precision("int8")


def test_a_session_on_the_gpu_gives_the_cpus_masks(fastsam3d_seeded, golden_data):
    """Crop, encode, decode and paste back on the GPU: after each of three clicks the mask
    equals the CPU's but for a few voxels on the boundary. A synthetic scan: the GPU machines
    have no SimpleITK to read the shared ones."""
    from fastsam3d_core import Volume
    from fastsam3d_core.evaluation.agreement import scan_agreement

    shape = (96, 96, 64)
    sphere = np.linalg.norm(np.moveaxis(np.indices(shape), 0, -1) - (30, 40, 48), axis=-1) < 14
    noise = np.random.default_rng(0).normal(40, 30, shape)
    volume = Volume((noise + 300 * sphere).astype(np.int16), np.diag([0.8, 0.8, 1.2, 1.0]))
    on_gpu = golden_data["fastsam3d"].seeded_model(DEVICE)
    result = scan_agreement(volume, sphere, fastsam3d_seeded, on_gpu, "sphere")
    assert result.dice > 0.999 and result.equal_voxels > 0.9999, result.describe()
