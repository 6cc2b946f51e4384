"""The model recipe: one way to load a model, with the precision chosen at load and the identity
that the encoder service serves; each step's failure has its own type."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import save_random_adapter, seeded_model

from fastsam3d_core.models import precision, precision_choice
from fastsam3d_core.models.build import DeviceError
from fastsam3d_core.models.precision import PrecisionError
from fastsam3d_core.weights import ModelRecipe, WeightsError
from fastsam3d_core.weights.adapter_file import AdapterFileError, AdapterMismatchError
from fastsam3d_core.weights.checkpoint import CheckpointError, IncompleteCheckpointError
from fastsam3d_core.weights.download import sha256_of_file

CROP = torch.randn(1, 1, 128, 128, 128, generator=torch.Generator().manual_seed(0))


def test_auto_decides_while_loading_and_the_first_encode_only_encodes(
    monkeypatch, seeded_checkpoint, fastsam3d_seeded
):
    """``auto`` decides while the model loads (here as on a CPU with AMX, by the CPU flags'
    override): the encoder is bfloat16 before any encode, and a user's first click encodes as
    a bfloat16 copy does."""
    monkeypatch.setenv(precision.CPU_FLAGS_VARIABLE, "avx512f amx_tile amx_bf16 avx512_bf16")
    precision.cpu_matrix_units.cache_clear()  # read once per process: read the override
    try:
        loaded = ModelRecipe("fastsam3d", seeded_checkpoint, device="cpu", precision="auto").load()
    finally:
        monkeypatch.undo()
        precision.cpu_matrix_units.cache_clear()
    assert loaded.model.precision == "bfloat16" and "Dice" in loaded.precision.reason
    assert loaded.model.image_encoder.pos_embed.dtype == torch.bfloat16  # converted already
    assert {p.dtype for p in loaded.model.image_encoder.blocks.parameters()} == {torch.bfloat16}
    with torch.inference_mode():
        first = loaded.model.encode(CROP)
    expected = precision_choice.reduced_copy(fastsam3d_seeded, "bfloat16")
    with torch.inference_mode():
        assert torch.equal(first, expected.encode(CROP))


def test_the_identity_is_the_checkpoint_and_its_adapters(seeded_checkpoint, tmp_path):
    adapter = tmp_path / "liver.adapter.pt"
    adapted = save_random_adapter(seeded_model("fastsam3d"), adapter)
    plain = ModelRecipe("fastsam3d", seeded_checkpoint, device="cpu").load()
    assert plain.identity == plain.checkpoint_sha256 == sha256_of_file(seeded_checkpoint)
    assert plain.adapter is None and plain.precision.describe() == "float32 (asked for)"
    assert plain.weights == seeded_checkpoint and plain.recipe.device == torch.device("cpu")
    loaded = ModelRecipe("fastsam3d", seeded_checkpoint, adapter, "cpu").load()
    both = f"{sha256_of_file(seeded_checkpoint)}+{sha256_of_file(adapter)}"
    assert loaded.identity == hashlib.sha256(both.encode()).hexdigest()
    assert loaded.checkpoint_sha256 == plain.checkpoint_sha256
    assert set(loaded.adapter) == {"base", "config", "summary"}
    with torch.inference_mode():
        assert torch.equal(loaded.model.encode(CROP), adapted.encode(CROP))
        assert not torch.equal(loaded.model.encode(CROP), plain.model.encode(CROP))


def test_each_step_fails_with_its_own_error(tmp_path, seeded_checkpoint, fastsam3d_seeded):
    missing = tmp_path / "missing.pth"
    with pytest.raises(ValueError, match="unknown model 'sam3'"):
        ModelRecipe("sam3", missing).load()
    # Device and precision are refused before the weights are looked for.
    with pytest.raises(DeviceError, match="cuda:99"):
        ModelRecipe("fastsam3d", missing, device="cuda:99").load()
    with pytest.raises(PrecisionError, match="unknown precision 'fp8'"):
        ModelRecipe("fastsam3d", missing, device="cpu", precision="fp8").load()
    with pytest.raises(WeightsError, match="weights file not found"):
        ModelRecipe("fastsam3d", missing, device="cpu").load()
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        ModelRecipe("fastsam3d", text, device="cpu").load()
    encoder_only = tmp_path / "encoder.pth"
    torch.save(fastsam3d_seeded.image_encoder.state_dict(), encoder_only)
    with pytest.raises(IncompleteCheckpointError, match="prompt encoder and mask decoder have no"):
        ModelRecipe("fastsam3d", encoder_only, device="cpu").load()
    with pytest.raises(AdapterFileError, match="not a FastSAM3D adapter file"):
        ModelRecipe("fastsam3d", seeded_checkpoint, seeded_checkpoint, "cpu").load()
    adapter = tmp_path / "other.adapter.pt"
    other = seeded_model("fastsam3d")
    with torch.no_grad():
        other.mask_decoder.iou_token.weight.add_(1)
    save_random_adapter(other, adapter)
    with pytest.raises(AdapterMismatchError, match="trained on other fastsam3d weights"):
        ModelRecipe("fastsam3d", seeded_checkpoint, adapter, "cpu").load()


def test_the_engine_says_which_setting_to_change(tmp_path, seeded_checkpoint, fastsam3d_seeded):
    """The Slicer engine loads through the recipe and turns each step's error into advice."""
    from fastsam3d_mrml.models import ModelLoadError, load_predictor

    text = tmp_path / "notes.pth"
    text.write_text("not weights\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="notes.pth does not hold fastsam3d weights: "):
        load_predictor("fastsam3d", "cpu", text)
    encoder_only = tmp_path / "encoder.pth"
    torch.save(fastsam3d_seeded.image_encoder.state_dict(), encoder_only)
    with pytest.raises(ModelLoadError, match=r"^\S*encoder.pth: the fastsam3d model's prompt"):
        load_predictor("fastsam3d", "cpu", encoder_only)
    with pytest.raises(ModelLoadError, match="not a FastSAM3D adapter.*Clear 'Adapter file'"):
        load_predictor("fastsam3d", "cpu", seeded_checkpoint, adapter_file=seeded_checkpoint)
    predictor = load_predictor("fastsam3d", "cpu", seeded_checkpoint, precision="int8")
    assert predictor.inner.model.precision == "int8" and not predictor.fell_back
