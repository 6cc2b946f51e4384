"""Both models against the outputs of the official code on seeded weights (shared/golden)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import seeded_model

from fastsam3d_core import Sam3D, build_model
from fastsam3d_core.golden import FULL_MASK_KEY, GOLDEN_RTOL, GoldenReference
from fastsam3d_core.models import common
from fastsam3d_core.models.common import linear_path


def test_state_dict_keys_and_shapes_equal_official(golden: GoldenReference) -> None:
    ours = [
        (key, list(value.shape)) for key, value in build_model(golden.name).state_dict().items()
    ]
    official = [(entry["key"], entry["shape"]) for entry in golden.manifest["state_dict"]]
    assert ours == official


def test_every_golden_array_is_produced(golden: GoldenReference, golden_outputs) -> None:
    produced = set(golden_outputs[golden.name]) | {FULL_MASK_KEY}
    assert produced == set(golden.arrays)


def test_every_block_output(golden: GoldenReference, golden_outputs) -> None:
    blocks = {k: v for k, v in golden_outputs[golden.name].items() if k.startswith("block")}
    assert len(blocks) == {"fastsam3d": 6, "sam-med3d-turbo": 12}[golden.name]
    errors = golden.relative_errors(blocks)
    assert max(errors.values()) <= GOLDEN_RTOL, errors


def test_embedding_and_dense_pe(golden: GoldenReference, golden_outputs) -> None:
    ours = golden_outputs[golden.name]
    errors = golden.relative_errors({k: ours[k] for k in ("embedding", "dense_pe")})
    assert max(errors.values()) <= GOLDEN_RTOL, errors


def test_all_scenarios(golden: GoldenReference, golden_outputs) -> None:
    scenarios = {
        k: v for k, v in golden_outputs[golden.name].items() if k[0] == "s" and k[1].isdigit()
    }
    assert len(scenarios) == 14  # sparse and dense for s1-s3, logits and IoU for s1-s4
    errors = golden.relative_errors(scenarios)
    assert max(errors.values()) <= GOLDEN_RTOL, errors


def test_full_resolution_mask(golden: GoldenReference, golden_outputs) -> None:
    assert golden.full_mask_disagreement(golden_outputs[golden.name]) < 1e-4
    mask = np.unpackbits(golden.arrays[FULL_MASK_KEY])
    assert 0 < mask.sum() < mask.size, "the golden mask should be neither empty nor full"


def test_reference_backend_reproduces_fastsam3d(fastsam3d_seeded: Sam3D, golden_data) -> None:
    golden = golden_data["fastsam3d"]
    fastsam3d_seeded.set_attention_backend("reference")
    try:
        outputs = golden.run(fastsam3d_seeded)
    finally:
        fastsam3d_seeded.set_attention_backend("exact")
    errors = golden.relative_errors(outputs)
    assert max(errors.values()) <= GOLDEN_RTOL, errors


def test_golden_runs_compute_without_tf32_and_restore_the_settings(
    fastsam3d_seeded: Sam3D, golden_data
) -> None:
    """cuDNN's float32 convolutions default to TF32 on recent GPUs, outside the tolerance: the
    neck's convolution must run in IEEE float32, and the user's settings must come back."""
    import torch

    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    seen = []
    hook = fastsam3d_seeded.image_encoder.neck[2].register_forward_hook(  # the 3×3×3 conv
        lambda *unused: seen.append(conv.fp32_precision)
    )
    try:
        golden_data["fastsam3d"].run(fastsam3d_seeded)
    finally:
        hook.remove()
    assert seen == ["ieee"]
    assert conv.fp32_precision == before == "tf32"  # PyTorch's default


@pytest.mark.parametrize("path", ["plain", "onednn"])
def test_the_golden_references_hold_on_both_linear_paths(golden: GoldenReference, path) -> None:
    # Which path the default takes depends on the CPU (oneDNN on AVX-512, BLAS elsewhere): both
    # must reproduce the official outputs on every CPU, whichever this one is.
    model = seeded_model(golden.name, golden)
    with linear_path(path), torch.no_grad():
        if common._ONEDNN_LINEAR is not None:  # the path taken is the one asked for
            assert common._onednn_applies(torch.ones(8, 8), torch.ones(2, 8)) == (path == "onednn")
        errors = golden.relative_errors(golden.run(model))
    assert max(errors.values()) <= GOLDEN_RTOL, errors


@pytest.mark.parametrize("path", ["auto", "plain", "onednn"])
def test_the_golden_references_hold_with_the_decoders_cache(
    golden: GoldenReference, path, monkeypatch
) -> None:
    """A predictor's clicks reuse the first two-way block's products of the embedding
    (Sam3D.decoder_image_cache, terms added in another order): the golden scenarios decoded
    that way hold too, on each linear path."""
    model = seeded_model(golden.name, golden)
    decode, used = model.decode, []

    def decode_with_cache(embedding, *args, **kwargs):
        cache = model.decoder_image_cache(embedding)
        used.append(cache is not None)
        return decode(embedding, *args, image_cache=cache, **kwargs)

    monkeypatch.setattr(model, "decode", decode_with_cache)
    with linear_path(path):
        errors = golden.relative_errors(golden.run(model))
    assert used and all(used)
    assert max(errors.values()) <= GOLDEN_RTOL, errors
