"""Adapter files with a text path for the front ends' tests (issue 29), built through the text
path's own API on the seeded FastSAM3D: random text-path weights (its prior's gain and offset set
as if trained, so that text finds voxels) and a bank of random embeddings for a few names, so no
text model (nor CLIP's vocabulary) is needed to use it."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import seeded_model

from fastsam3d_core.models.adapter import AdapterConfig, attach_adapters
from fastsam3d_core.models.sam3d import Sam3D
from fastsam3d_core.models.text_reference import TEXT_EMBED_DIM, attach_text_reference
from fastsam3d_core.weights.adapter_file import TextBank, load_adapter, save_adapter

NAMES = ("liver", "spleen")
# The text encoder the bank says it came from: a seeded one (the same words as
# fastsam3d_core.text.seeded_text_encoder's identity).
IDENTITY = {"name": "seeded", "sha256": "seeded:0"}


def save_text_adapter(path: Path, names: tuple[str, ...] = NAMES, seed: int = 0) -> Path:
    """A FastSAM3D adapter file with a text path (seeded, untrained) and a bank of ``names``."""
    model = seeded_model("fastsam3d")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the path's initial weights: the same each time
        torch.manual_seed(seed)
        attach_adapters(model, AdapterConfig())
        attach_text_reference(model)
    # As if trained: an untrained path starts with a logit offset that finds nothing, and with
    # no gain on its score; here the score, random, decides.
    reference = model.text_reference
    with torch.no_grad():
        reference.logit_bias.zero_()
        reference.logit_gain.fill_(1.0)
        for vector in (reference.inside, reference.outside):
            vector.copy_(torch.randn(vector.shape, generator=generator))
    bank = {name: torch.randn(TEXT_EMBED_DIM, generator=generator) for name in names}
    save_adapter(model, path, text_bank=TextBank(bank, IDENTITY, {}))
    return path


def model_with_adapter(path: Path) -> Sam3D:
    """The seeded FastSAM3D (a fresh copy) with the adapter file loaded."""
    model = seeded_model("fastsam3d")
    load_adapter(model, path)
    return model
