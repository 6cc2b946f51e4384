"""The public encode/decode API: shapes, batching, defaults and input checks."""

from __future__ import annotations

import pytest
import torch

from fastsam3d_core import MODEL_REGISTRY, Sam3D, build_model


@pytest.fixture(scope="module")
def embedding() -> torch.Tensor:
    return torch.randn(1, 384, 8, 8, 8, generator=torch.Generator().manual_seed(5))


def test_registry_and_unknown_name():
    assert set(MODEL_REGISTRY) == {"fastsam3d", "sam-med3d-turbo"}
    with pytest.raises(ValueError, match="unknown model 'sam2'"):
        build_model("sam2")


@pytest.mark.parametrize(
    "name,parameters", [("fastsam3d", 53_224_240), ("sam-med3d-turbo", 100_509_232)]
)
def test_parameter_counts_match_spec(name, parameters):
    with torch.device("meta"):
        model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_decode_shapes(fastsam3d_seeded: Sam3D, embedding):
    points = torch.tensor([[[10.0, 20.0, 30.0]]])
    labels = torch.tensor([[1]])
    with torch.inference_mode():
        logits, iou = fastsam3d_seeded.decode(embedding, points, labels, None)
        multi_logits, multi_iou = fastsam3d_seeded.decode(
            embedding, points, labels, None, multimask=True
        )
        mask_only, _ = fastsam3d_seeded.decode(embedding, None, None, logits)
    assert logits.shape == (1, 1, 32, 32, 32) and iou.shape == (1, 1)
    assert multi_logits.shape == (1, 3, 32, 32, 32) and multi_iou.shape == (1, 3)
    assert mask_only.shape == (1, 1, 32, 32, 32)


def test_missing_mask_is_a_zero_mask(fastsam3d_seeded: Sam3D, embedding):
    points, labels = torch.tensor([[[64.0, 64.0, 64.0]]]), torch.tensor([[0]])
    with torch.inference_mode():
        default = fastsam3d_seeded.decode(embedding, points, labels, None)
        zeros = fastsam3d_seeded.decode(embedding, points, labels, torch.zeros(1, 1, 32, 32, 32))
    torch.testing.assert_close(default, zeros)


def test_batch_of_prompts_on_one_embedding(fastsam3d_seeded: Sam3D, embedding):
    points = torch.tensor(
        [[[10.0, 20.0, 30.0], [90.0, 9.0, 3.0]], [[64.0, 64.0, 64.0], [1.0, 2.0, 3.0]]]
    )
    labels = torch.tensor([[1, 0], [1, 1]])
    masks = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        batched, batched_iou = fastsam3d_seeded.decode(embedding, points, labels, masks)
        for i in range(2):
            single, single_iou = fastsam3d_seeded.decode(
                embedding, points[i : i + 1], labels[i : i + 1], masks[i : i + 1]
            )
            torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(batched_iou[i : i + 1], single_iou, rtol=1e-4, atol=1e-4)


def test_points_change_the_result(fastsam3d_seeded: Sam3D, embedding):
    labels = torch.tensor([[1]])
    with torch.inference_mode():
        first, _ = fastsam3d_seeded.decode(
            embedding, torch.tensor([[[10.0, 10.0, 10.0]]]), labels, None
        )
        second, _ = fastsam3d_seeded.decode(
            embedding, torch.tensor([[[100.0, 100.0, 100.0]]]), labels, None
        )
    assert (first - second).abs().max() > 1e-3


@pytest.mark.parametrize(
    "points,labels,mask,message",
    [
        (
            torch.zeros(1, 2, 2),
            torch.zeros(1, 2, dtype=torch.long),
            None,
            r"points must be \(B, N, 3\)",
        ),
        (
            torch.zeros(1, 2, 3),
            torch.zeros(1, 3, dtype=torch.long),
            None,
            r"labels must be \(B, N\)",
        ),
        (torch.zeros(1, 1, 3), torch.tensor([[2]]), None, "labels must be 1"),
        (torch.zeros(1, 1, 3), None, None, "together"),
        (None, None, torch.zeros(1, 1, 16, 16, 16), "mask_input must be"),
    ],
)
def test_decode_rejects_bad_prompts(
    fastsam3d_seeded: Sam3D, embedding, points, labels, mask, message
):
    with pytest.raises(ValueError, match=message):
        fastsam3d_seeded.decode(embedding, points, labels, mask)


def test_decode_rejects_mismatched_batches(fastsam3d_seeded: Sam3D):
    embedding = torch.zeros(2, 384, 8, 8, 8)
    with pytest.raises(ValueError, match="embedding batch 2"):
        fastsam3d_seeded.decode(
            embedding, torch.zeros(3, 1, 3), torch.ones(3, 1, dtype=torch.long), None
        )


def test_encode_rejects_wrong_image_shape(fastsam3d_seeded: Sam3D):
    with pytest.raises(ValueError, match=r"image must be \(B, 1, 128, 128, 128\)"):
        fastsam3d_seeded.encode(torch.zeros(1, 1, 64, 64, 64))


def test_build_with_dtype_and_device():
    model = build_model("fastsam3d", device="cpu", dtype=torch.float64)
    assert model.dtype == torch.float64 and model.device.type == "cpu"
    assert not model.training
    with torch.inference_mode():
        logits, _ = model.decode(torch.zeros(1, 384, 8, 8, 8), None, None, None)
    assert logits.dtype == torch.float64


def test_build_refuses_a_precision_and_says_how_to_ask_for_it():
    """A precision is chosen once the weights are loaded: build_model's old keyword says where,
    in one line, instead of a bare TypeError."""
    from fastsam3d_core.models.precision import PrecisionError

    for precision in ("auto", "bfloat16"):
        with pytest.raises(PrecisionError) as refused:
            build_model("fastsam3d", precision=precision)
        message = str(refused.value)
        assert "\n" not in message and f"precision={precision!r}" in message
        assert "ModelRecipe('fastsam3d', weights, " in message and "set_precision" in message
    with torch.device("meta"):  # float32 is what a model is built in
        assert build_model("fastsam3d", precision="float32").precision == "float32"
