"""Clicks after a text prompt honoured where they land (fastsam3d_core/models/text_clicks.py):
the rule on made-up logits and image tokens, then through a seeded model's text path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import seeded_model

from fastsam3d_core.models.text_clicks import (
    CLICK_LOGIT,
    REACH_VOXELS,
    honour_clicks,
)
from fastsam3d_core.models.text_reference import attach_text_reference

# Image tokens (1, 8, 8, 8, C): the lower half of the crop along d0 (tokens 0-3) alike, the
# upper half orthogonal to it, as two tissues the text path tells apart.
HALVES = torch.zeros(1, 8, 8, 8, 4)
HALVES[0, :4, ..., 0] = 1.0
HALVES[0, 4:, ..., 1] = 1.0


def _cells_within(point, radius: float) -> np.ndarray:
    """Bool (32, 32, 32): the logits' cells whose centre lies within ``radius`` crop voxels."""
    centres = (np.indices((32, 32, 32)).transpose(1, 2, 3, 0) + 0.5) * 4 - 0.5
    return np.linalg.norm(centres - np.asarray(point, float), axis=-1) <= radius


def test_a_negative_click_lowers_only_around_it_and_only_where_the_image_is_alike():
    logits = torch.full((1, 1, 32, 32, 32), 6.0)
    point = [56.0, 64.0, 64.0]  # in the lower half (token 3 of 8 along d0), by the border
    out = honour_clicks(logits, HALVES, torch.tensor([[point]]), torch.tensor([[0]]))[0, 0]
    assert out.shape == (32, 32, 32) and out.dtype == logits.dtype
    assert (out <= 6.0).all()  # never raised
    assert out[14, 16, 16] < 0  # the clicked cell ends on the click's side
    assert out[14, 16, 16] >= -CLICK_LOGIT - 1e-5  # pulled to the click's logit, not beyond
    far = ~_cells_within(point, 4 * REACH_VOXELS)
    assert torch.allclose(out[torch.from_numpy(far)], torch.tensor(6.0), atol=0.01)  # exp(-8)·8
    # About 18 voxels from the click on either side: its own tissue lowered, the other one (past
    # the next token's centre, where the interpolated cosine is 0) untouched.
    assert out[9, 16, 16] < 5.0 and out[18, 16, 16] == 6.0


def test_a_positive_click_raises_only_and_padding_is_skipped():
    logits = torch.full((2, 1, 32, 32, 32), -5.0)
    points = torch.tensor([[[64.0, 64.0, 64.0], [0.0, 0.0, 0.0]]] * 2)
    labels = torch.tensor([[1, -1], [-1, -1]])  # -1: no click (padding)
    out = honour_clicks(logits, HALVES, points, labels)
    assert (out[0] >= -5.0).all() and out[0, 0, 16, 16, 16] > 0
    assert torch.equal(out[1], logits[1])  # only padding: untouched


def test_a_click_already_satisfied_changes_nothing():
    logits = torch.full((1, 1, 32, 32, 32), -8.0)
    out = honour_clicks(logits, HALVES, torch.tensor([[[64.0, 64.0, 64.0]]]), torch.tensor([[0]]))
    assert torch.equal(out, logits)  # a negative click where the mask is already far outside


def test_clicks_apply_in_their_order_and_each_batch_entry_reads_its_own_tokens():
    logits = torch.zeros(2, 1, 32, 32, 32)
    # Entry 0: the two halves; entry 1: every token its own (no token resembles another).
    tokens = torch.zeros(2, 8, 8, 8, 512)
    tokens[0, ..., :4] = HALVES[0]
    tokens[1] = torch.eye(512).reshape(8, 8, 8, 512)
    here = [64.0, 64.0, 64.0]
    points = torch.tensor([[here, here]] * 2)
    last_positive = honour_clicks(logits, tokens, points, torch.tensor([[0, 1], [0, 1]]))
    last_negative = honour_clicks(logits, tokens, points, torch.tensor([[1, 0], [1, 0]]))
    assert last_positive[0, 0, 16, 16, 16] > 0 and last_negative[0, 0, 16, 16, 16] < 0
    # A click at (24, 64, 64): around it, its tissue in entry 0 only.
    low = torch.tensor([[[24.0, 64.0, 64.0]]] * 2)
    out = honour_clicks(logits, tokens, low, torch.tensor([[1], [1]]))[:, 0]
    assert out[0, 4, 16, 16] > 1.0 and out[1, 4, 16, 16] > 1.0  # the clicked place itself
    assert out[0, 1, 16, 16] > out[1, 1, 16, 16] + 0.5  # tissue alike in entry 0 only


@pytest.fixture(scope="module")
def text_model():
    """The seeded FastSAM3D with a text path whose logit prior says 'inside' everywhere."""
    torch.manual_seed(0)
    model = seeded_model("fastsam3d")
    attach_text_reference(model)
    with torch.no_grad():
        model.text_reference.logit_bias.fill_(1.0)  # +LOGIT_PRIOR_SCALE logits everywhere
    return model.eval()


def test_the_text_path_honours_clicks_and_training_reads_the_decoder_alone(text_model):
    image = torch.randn(1, 1, 128, 128, 128)
    with torch.no_grad():
        embedding, levels = text_model.encode_levels(image)
        text = torch.randn(1, 512)
        alone, _ = text_model.decode_text(embedding, levels, text)
        assert (alone > 0).float().mean() > 0.99  # the prior's "inside everywhere"
        click = torch.tensor([[[64.0, 64.0, 64.0]]])
        args = (embedding, levels, text, alone, click, torch.tensor([[0]]))
        decoder, _ = text_model.decode_text(*args, honour_clicks=False)
        honoured, _ = text_model.decode_text(*args)
    assert (decoder[0, 0, 16, 16, 16] > 0) and honoured[0, 0, 16, 16, 16] < 0
    assert (honoured <= decoder + 1e-5).all()
    changed = (honoured < decoder - 0.01)[0, 0].numpy()
    assert changed.sum() > 10
    assert not (changed & ~_cells_within([64, 64, 64], 4 * REACH_VOXELS)).any()
