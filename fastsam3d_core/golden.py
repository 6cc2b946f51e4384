"""Golden references: outputs of the official model code on seeded weights.

A reference directory holds ``<model>.manifest.json`` (weight and image recipes, prompt scenarios)
and ``<model>.npz`` (the official outputs). This module rebuilds the seeded weights and image, runs
a model through the same steps, and reports how far each output is from the official one, so that
exactness can be checked on any machine and device.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .models.build import build_model
from .models.sam3d import Sam3D

# max |ours - golden| <= GOLDEN_RTOL * max |golden| for every array (the references' README).
GOLDEN_RTOL = 1e-4
FULL_MASK_KEY = "s1_mask128_packed"


@dataclass(frozen=True)
class GoldenReference:
    """One model's manifest and official output arrays."""

    name: str
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, directory: str | Path, name: str) -> GoldenReference:
        directory = Path(directory)
        manifest_path = directory / f"{name}.manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no golden manifest for {name!r} in {directory}")
        with np.load(directory / f"{name}.npz") as npz:
            arrays = {key: npz[key] for key in npz.files}
        return cls(name, json.loads(manifest_path.read_text()), arrays)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Seeded weights: ``offset + scale · N(0, 1)`` per key, in float64, cast to float32."""
        state = {}
        for entry in self.manifest["state_dict"]:
            noise = np.random.RandomState(entry["seed"]).standard_normal(entry["shape"])
            state[entry["key"]] = torch.from_numpy(
                (entry["offset"] + entry["scale"] * noise).astype(np.float32)
            )
        return state

    def seeded_model(self, device: str | torch.device | None = None) -> Sam3D:
        """The reference's model built afresh (float32, eval mode) with its seeded weights."""
        model = build_model(self.name, device=device)
        model.load_state_dict(self.state_dict(), strict=True)
        return model

    def image(self) -> torch.Tensor:
        """The input ``(1, 1, 128, 128, 128)`` float32, checked against the manifest's SHA-256."""
        rng = np.random.RandomState(self.manifest["image_seed"])
        image = rng.standard_normal((1, 1, 128, 128, 128)).astype(np.float32)
        if hashlib.sha256(image.tobytes()).hexdigest() != self.manifest["image_sha256"]:
            raise RuntimeError("the image recipe does not reproduce the manifest's image_sha256")
        return torch.from_numpy(image)

    def run(self, model: Sam3D) -> dict[str, torch.Tensor]:
        """Our outputs under the golden arrays' names (the packed full-resolution mask excluded),
        computed without TF32 (:func:`ieee_float32`)."""
        outputs: dict[str, torch.Tensor] = {}
        hooks = [
            block.register_forward_hook(
                lambda module, inputs, out, index=index: outputs.__setitem__(
                    f"block{index}_out", out
                )
            )
            for index, block in enumerate(model.image_encoder.blocks)
        ]
        try:
            with torch.inference_mode(), ieee_float32():
                embedding = model.encode(self.image())
                outputs["embedding"] = embedding
                outputs["dense_pe"] = model.prompt_encoder.get_dense_pe()
                self._run_scenarios(model, embedding, outputs)
        finally:
            for hook in hooks:
                hook.remove()
        return outputs

    def _run_scenarios(self, model: Sam3D, embedding: torch.Tensor, outputs: dict) -> None:
        for scenario in self.manifest["scenarios"]:
            name = scenario["name"]
            points = labels = None
            if scenario["points"] is not None:
                points = torch.tensor(
                    [scenario["points"]], dtype=torch.float32, device=model.device
                )
                labels = torch.tensor([scenario["labels"]], device=model.device)
            source = scenario["mask_input"]
            if source == "zeros":
                mask = embedding.new_zeros(1, 1, 32, 32, 32)
            else:
                mask = outputs[f"{source}_logits"][:, :1]  # first channel, as the README says
            if points is not None:
                sparse, dense = model.prompt_encoder(points, labels, mask.to(model.dtype))
                outputs[f"{name}_sparse"], outputs[f"{name}_dense"] = sparse, dense
            logits, iou = model.decode(
                embedding, points, labels, mask, multimask=scenario["multimask"]
            )
            outputs[f"{name}_logits"], outputs[f"{name}_iou"] = logits, iou

    def relative_errors(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """max |ours − golden| / max |golden| for every array we produced."""
        errors = {}
        for key, value in outputs.items():
            reference = self.arrays[key]
            ours = value.detach().float().cpu().numpy().astype(np.float64)
            if ours.shape != reference.shape:
                raise ValueError(f"{key}: shape {ours.shape} differs from golden {reference.shape}")
            errors[key] = float(np.abs(ours - reference).max() / np.abs(reference).max())
        return errors

    def full_mask_disagreement(self, outputs: dict[str, torch.Tensor]) -> float:
        """Largest |logit| among voxels where our 128³ mask of scenario s1 differs from golden.

        The reference allows differences only where |logit| < 1e-4.
        """
        logits = outputs["s1_one_positive_logits"].float().cpu()
        upsampled = F.interpolate(
            logits, size=(128, 128, 128), mode="trilinear", align_corners=False
        )
        ours = (upsampled > 0).numpy().ravel()
        theirs = np.unpackbits(self.arrays[FULL_MASK_KEY])[: ours.size].astype(bool)
        return float(np.abs(upsampled.numpy().ravel()[ours != theirs]).max(initial=0.0))


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Inside, CUDA computes float32 products in full float32, not TF32; outside, as before.

    cuDNN runs float32 convolutions in TF32 by default on Ampere and later GPUs (a 10-bit
    mantissa: relative errors near 1e-3, ten times the references' tolerance). The encoder's
    neck is such a convolution. On the CPU this changes nothing.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(conv, "fp32_precision"):  # torch 2.9 and later
        flags = [(conv, "fp32_precision"), (torch.backends.cuda.matmul, "fp32_precision")]
        strict: Any = "ieee"
    else:
        flags = [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]
        strict = False
    saved = [getattr(owner, name) for owner, name in flags]
    for owner, name in flags:
        setattr(owner, name, strict)
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, saved):
            setattr(owner, name, value)
