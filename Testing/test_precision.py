"""The encoder's precision switch: conversion, agreement with float32, and the choice of ``auto``.

The agreement figures are real runs of both models (seeded weights, float32 as reference); on a
CPU without bfloat16 units the bfloat16 arithmetic is emulated, same rounding, just slower.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import GOLDEN_DIR, MODEL_NAMES, SHARED_DATA_DIR, invoke_cli, seeded_model

from fastsam3d_core import build_model
from fastsam3d_core.evaluation.agreement import (
    check_crop,
    crop_agreement,
    golden_agreement,
    reduced_copy,
    scan_agreement,
)
from fastsam3d_core.models import common, precision, precision_choice
from fastsam3d_core.models.precision import (
    CpuMatrixUnits,
    PrecisionError,
    check_precision,
    matrix_units_from_cpuinfo,
)
from fastsam3d_core.models.precision_choice import AUTO_MIN_DICE
from fastsam3d_core.weights import ModelRecipe

SCANS = [  # image, label, label value (None: every non-zero voxel)
    ("totalseg_ct/aorta_ct.nii.gz", "totalseg_ct/aorta_label.nii.gz", None),
    ("brats2021_flair_edema/imagesTr/BraTS2021_01646.nii.gz",
     "brats2021_flair_edema/labelsTr/BraTS2021_01646.nii.gz", None),
    ("totalseg_ct/example_ct_3mm.nii.gz", "totalseg_ct/example_seg_3mm.nii.gz", 5),  # liver
]  # fmt: skip
AMX = CpuMatrixUnits(amx_bf16=True, avx512_bf16=True, vnni=True)


def test_matrix_units_come_from_the_cpu_flags():
    sapphire_rapids = "processor : 0\nflags : avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile\n"
    assert matrix_units_from_cpuinfo(sapphire_rapids) == AMX
    laptop = "flags\t\t: fpu avx2 avx_vnni\nflags : amx_bf16\n"  # only the first line counts
    assert matrix_units_from_cpuinfo(laptop) == CpuMatrixUnits(vnni=True)
    assert not matrix_units_from_cpuinfo("no flags here").bfloat16
    assert CpuMatrixUnits().describe() == "none"


def test_unknown_or_unsupported_precisions_are_refused():
    with pytest.raises(PrecisionError, match="choose from auto, float32"):
        ModelRecipe("fastsam3d", precision="float64").check()
    with pytest.raises(PrecisionError, match="CPU only"):
        check_precision("int8", torch.device("cuda"))  # refused without a GPU being there
    with pytest.raises(PrecisionError, match="auto is chosen when the model is loaded"):
        build_model("fastsam3d").set_precision("auto")


def test_bfloat16_casts_the_encoder_once_and_returns_a_float32_embedding(fastsam3d_seeded):
    model = reduced_copy(fastsam3d_seeded, "bfloat16")
    encoder = model.image_encoder
    assert model.precision == "bfloat16"
    assert encoder.blocks[0].mlp.lin1.weight.dtype == torch.bfloat16
    assert encoder.pos_embed.dtype == torch.bfloat16
    assert {p.dtype for p in encoder.neck[2:].parameters()} == {torch.float32}
    assert {p.dtype for p in model.mask_decoder.parameters()} == {torch.float32}
    with torch.inference_mode():
        embedding = model.encode(torch.randn(1, 1, 128, 128, 128))
    assert embedding.dtype == torch.float32 and embedding.shape == (1, 384, 8, 8, 8)
    with pytest.raises(ValueError, match="already computes in bfloat16"):
        model.set_precision("float32")


def test_a_recipe_loads_the_encoder_in_its_precision(golden_data, tmp_path):
    reference = golden_data["fastsam3d"]
    weights = tmp_path / "seeded.pth"
    torch.save(reference.state_dict(), weights)
    with torch.inference_mode():  # loading inside inference mode still converts plain tensors
        loaded = ModelRecipe("fastsam3d", weights, device="cpu", precision="bfloat16").load()
    model = loaded.model
    assert model.precision == "bfloat16" and loaded.precision.describe() == "bfloat16 (asked for)"
    assert model.image_encoder.blocks[0].mlp.lin1.weight.dtype == torch.bfloat16  # at once
    assert not any(p.is_inference() for p in model.parameters())
    with torch.inference_mode():
        embedding = model.encode(reference.image())
    expected = reduced_copy(seeded_model("fastsam3d", reference), "bfloat16")
    with torch.inference_mode():
        assert torch.equal(embedding, expected.encode(reference.image()))
    golden = torch.from_numpy(reference.arrays["embedding"])
    assert 1e-4 < (embedding - golden).abs().max() / golden.abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("reduced_precision", ["bfloat16", "int8"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reduced_precision_agrees_with_float32_on_golden_scenarios_and_scans(
    name, reduced_precision, golden_data
):
    """The gate of ``auto``: Dice >= 0.99 against float32 on every golden scenario and on clicks
    in the shared scans, at full resolution. int8 is opt-in, but held to the same bar."""
    from fastsam3d_core.io import read_volume

    model = seeded_model(name, golden_data[name])
    reduced = reduced_copy(model, reduced_precision)
    results = [golden_agreement(golden_data[name], model, reduced)]
    for image, label, value in SCANS:
        labels = read_volume(SHARED_DATA_DIR / label).array
        mask = labels > 0 if value is None else labels == value
        volume = read_volume(SHARED_DATA_DIR / image)
        results.append(scan_agreement(volume, mask, model, reduced, image))
    for result in results:
        assert result.dice >= AUTO_MIN_DICE, result.describe()
        assert result.equal_voxels > 0.99, result.describe()
        assert result.dice < 1 or result.source.startswith("golden"), "masks must differ a bit"
    assert 1e-4 < results[0].embedding_rel_error < 0.05


def test_int8_quantises_the_encoders_mlps_only(fastsam3d_seeded):
    model = reduced_copy(fastsam3d_seeded, "int8")
    for block in model.image_encoder.blocks:
        for linear in (block.mlp.lin1, block.mlp.lin2):
            assert type(linear) is not torch.nn.Linear and "quantized" in type(linear).__module__
            assert linear.weight().qscheme() == torch.per_channel_affine  # a scale per channel
        if hasattr(block, "attn"):
            assert type(block.attn.qkv) is torch.nn.Linear
    assert any(hasattr(block, "attn") for block in model.image_encoder.blocks)
    assert type(model.mask_decoder.iou_prediction_head.layers[0]) is torch.nn.Linear
    image, prompts = check_crop()
    result = crop_agreement(fastsam3d_seeded, model, image, prompts, "check crop")
    assert 0.95 < result.dice < 1 and 1e-3 < result.embedding_rel_error < 0.2


def test_auto_is_float32_without_bfloat16_units(monkeypatch, fastsam3d_seeded):
    monkeypatch.setattr(precision, "cpu_matrix_units", lambda: CpuMatrixUnits(vnni=True))
    choice = precision_choice.choose_precision(fastsam3d_seeded, "auto")
    assert choice.precision == "float32" and "VNNI" in choice.reason


def test_auto_takes_bfloat16_only_when_it_agrees(monkeypatch, golden_data):
    reference = golden_data["fastsam3d"]
    model = seeded_model("fastsam3d", reference)
    monkeypatch.setattr(precision, "cpu_matrix_units", lambda: AMX)
    choice = precision_choice.choose_precision(model, "auto")
    assert choice.precision == "bfloat16" and "AMX-BF16" in choice.reason
    assert model.precision == "float32"  # choosing checks a copy
    monkeypatch.setattr(precision_choice, "AUTO_MIN_DICE", 1.01)  # no precision agrees so well
    refused = precision_choice.choose_precision(model, "auto")
    assert refused.precision == "float32" and "agree with float32 only" in refused.reason


def test_packed_weights_compute_the_same_and_follow_new_weights():
    if common._ONEDNN_LINEAR is None:
        pytest.skip("torch has no oneDNN here")
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(64, 96), torch.randn(2, 10, 64)
    with torch.inference_mode():
        packed = common._packed_weight(layer, x)
        out = common._onednn_linear(x, packed, layer.bias, "gelu")
        torch.testing.assert_close(out, F.gelu(F.linear(x, layer.weight, layer.bias)))
        assert common._packed_weight(layer, x) is packed  # packed once
    with torch.no_grad():
        layer.weight.mul_(2)  # as loading new weights does
    with torch.inference_mode():
        repacked = common._packed_weight(layer, x)
        assert repacked is not packed
        out = common._onednn_linear(x, repacked, layer.bias, "none")
        torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias))


@pytest.mark.skipif(not GOLDEN_DIR.is_dir(), reason="golden references not available")
def test_the_check_crop_has_blobs_that_seeded_models_segment(fastsam3d_seeded):
    image, prompts = check_crop()
    assert image.shape == (1, 1, 128, 128, 128)
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-3
    with torch.inference_mode():
        embedding = fastsam3d_seeded.encode(image)
        logits = [fastsam3d_seeded.decode(embedding, *prompt, None)[0] for prompt in prompts]
    filled = [float((value > 0).float().mean()) for value in logits]
    assert all(0 < fraction < 1 for fraction in filled), filled  # masks, not empty or full


def test_segment_picks_bfloat16_on_a_cpu_with_amx(tmp_path, monkeypatch, fastsam3d_seeded):
    weights = tmp_path / "fastsam3d-seeded.pth"
    torch.save(fastsam3d_seeded.state_dict(), weights)
    monkeypatch.setenv(precision.CPU_FLAGS_VARIABLE, "avx512f amx_tile amx_bf16")
    precision.cpu_matrix_units.cache_clear()
    try:
        output = tmp_path / "spleen.seg.nrrd"
        result = invoke_cli(["segment", "--example", "--weights", str(weights), "-o", str(output)])
    finally:
        monkeypatch.undo()
        precision.cpu_matrix_units.cache_clear()
    assert result.exit_code == 0, result.output
    assert "encoder precision: bfloat16 (matrix units: AMX-BF16; Dice 0.99" in result.output


def test_segment_takes_a_precision(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "fastsam3d-random.pth"
    torch.save({"model_state_dict": build_model("fastsam3d").state_dict()}, weights)
    output = tmp_path / "spleen.nii.gz"
    base = ["segment", "--example", "--weights", str(weights), "--device", "cpu", "-o", str(output)]
    result = invoke_cli([*base, "--precision", "int8"])
    assert result.exit_code == 0, result.output
    assert "encoder precision: int8 (asked for)" in result.output
    assert output.stat().st_size > 0
    bad = invoke_cli([*base, "--precision", "fp8"])
    assert bad.exit_code == 2 and "'fp8'" in bad.output and "Traceback" not in bad.output
