"""Every accepted checkpoint form, refused files, and errors for the wrong architecture."""

from __future__ import annotations

import argparse
import collections
import os
from pathlib import Path

import pytest
import torch

from fastsam3d_core import CheckpointError, Sam3D, build_model, load_checkpoint

ENCODER = "image_encoder."


@pytest.fixture(scope="module")
def source() -> Sam3D:
    torch.manual_seed(11)
    return build_model("fastsam3d")


@pytest.fixture
def target() -> Sam3D:
    torch.manual_seed(12)
    return build_model("fastsam3d")


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def training_checkpoint(model: Sam3D) -> dict:
    """A dict laid out like FastSAM3D.pth (model.md §2.2): weights, optimizer, scheduler, args."""
    parameters = list(model.mask_decoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=8e-4, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[120, 180], gamma=0.1)
    sum(p.sum() for p in parameters).backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {
        "epoch": 83,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "lr_scheduler_state_dict": scheduler.state_dict(),
        "losses": [0.5, 0.4],
        "best_loss": 0.4,
        "args": argparse.Namespace(model_type="vit_b_ori", device=torch.device("cpu"), lr=8e-4),
        "used_datas": ["brats", "amos"],
    }


def test_training_checkpoint_layout(tmp_path: Path, target: Sam3D) -> None:
    torch.manual_seed(13)
    trained = build_model("fastsam3d")
    checkpoint = training_checkpoint(trained)
    assert isinstance(checkpoint["lr_scheduler_state_dict"]["milestones"], collections.Counter)
    path = tmp_path / "FastSAM3D.pth"
    torch.save(checkpoint, path)
    report = load_checkpoint(target, path)
    assert report.layout == "full"
    assert "optimizer_state_dict" in report.extras and "args" in report.extras
    assert_same_weights(target, trained)


def test_raw_state_dict_file(tmp_path: Path, source: Sam3D, target: Sam3D) -> None:
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    assert load_checkpoint(target, path).tensors == len(source.state_dict())
    assert_same_weights(target, source)


def test_mapping_and_module_prefix(source: Sam3D, target: Sam3D) -> None:
    prefixed = {f"module.{key}": value for key, value in source.state_dict().items()}
    load_checkpoint(target, {"model_state_dict": prefixed})
    assert_same_weights(target, source)


def test_encoder_only_file_replaces_only_the_encoder(
    tmp_path: Path, source: Sam3D, target: Sam3D
) -> None:
    decoder_before = {k: v.clone() for k, v in target.mask_decoder.state_dict().items()}
    encoder_state = {
        key[len(ENCODER) :]: value
        for key, value in source.state_dict().items()
        if key.startswith(ENCODER)
    }
    path = tmp_path / "encoder.pth"
    torch.save({"model_state_dict": encoder_state, "epoch": 3}, path)
    assert load_checkpoint(target, path).layout == "encoder-only"
    assert_same_weights(target.image_encoder, source.image_encoder)
    for key, value in target.mask_decoder.state_dict().items():
        assert torch.equal(value, decoder_before[key])


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path: Path, source: Sam3D, target: Sam3D) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": source.state_dict(), "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused.*system"):
        load_checkpoint(target, path)
    assert not marker.exists()


def test_wrong_architecture_names_keys_and_cause(fastsam3d_seeded: Sam3D) -> None:
    with torch.device("meta"):
        teacher = build_model("sam-med3d-turbo")
    state = {key: torch.zeros(value.shape) for key, value in teacher.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(build_model("fastsam3d"), state)
    message = str(error.value)
    assert "missing keys: image_encoder.blocks.0.norm2.weight" not in message  # present in both
    assert "unexpected keys: image_encoder.blocks.0.norm1.weight" in message
    assert "image_encoder.blocks.2.attn.rel_pos_d (15, 64) != (15, 128)" in message
    assert "'sam-med3d-turbo' architecture" in message


def test_missing_decoder_is_reported(source: Sam3D, target: Sam3D) -> None:
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("mask_decoder.")}
    with pytest.raises(CheckpointError, match="missing keys: mask_decoder.transformer"):
        load_checkpoint(target, state)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "not a PyTorch checkpoint: the file is empty"),
        (b"PK\x03\x04 truncated", "not a readable"),
        (b"<!DOCTYPE html><html>Sign in</html>", "an HTML or XML page"),
        (b"these are not weights\n", "it is text starting 'these are not weights"),
    ],
)
def test_unreadable_file(tmp_path: Path, target: Sam3D, content: bytes, message: str) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(target, path)


def test_truncated_download(tmp_path: Path, source: Sam3D, target: Sam3D) -> None:
    path = tmp_path / "partial.pth"
    torch.save(source.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(target, path)


def test_missing_file_and_non_weights(tmp_path: Path, target: Sam3D) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(target, tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="no model weights"):
        load_checkpoint(target, {"epoch": 3, "notes": "hello"})
