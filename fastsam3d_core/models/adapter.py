"""Med-SA adapters: small trainable layers in a frozen model (Wu et al., Medical SAM Adapter).

In each image-encoder block (Med-SA's placement, without its depth branch: our blocks are
already 3-D):

- a *space* adapter on the attention output, with its own skip: ``x += A_s(Attn(LN1 x))``;
- an *MLP* adapter beside the MLP, scaled: ``x += MLP(n) + scale · A_m(n)``, ``n`` the MLP's input.

In each two-way block of the mask decoder, an MLP adapter beside the token MLP and a
*hyper-prompting* adapter (HyP-Adpt) on the image tokens, whose middle weights a hyper-network
computes from the prompt tokens, so the same adapter acts differently for different clicks.
The authors' code has neither (it trains the whole decoder instead, 14 % of FastSAM3D's
parameters); HyP-Adpt here is built from the paper's description.

Every adapter's last projection starts at zero (Med-SA's code keeps PyTorch's default
initialisation): attached, the adapters leave the model's output exactly as it was, and training
starts from the base model.

With ``box_corners`` (``fastsam3d finetune --prompts box``) the prompt encoder also gets learned
embeddings for a box's two corners (labels 2 and 3, which the released models lack); they are
trained and stored with the adapters, so a model with its adapter file loaded takes boxes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AdapterConfig:
    """Where adapters go and how wide they are.

    Attributes:
        ratio: adapter bottleneck width / token width. Med-SA's code uses 0.25, which is 6 % of
            FastSAM3D's parameters here (both adapters in every block of a 768-wide encoder);
            1/16 keeps the adapters near the 2 % that Med-SA reports.
        mlp_scale: weight of the MLP adapter beside the MLP (Med-SA: 0.5).
        hyper_rank: bottleneck width of the decoder's hyper-prompting adapters (0: none).
        box_corners: learned embeddings for a box's corners in the prompt encoder (labels 2
            and 3; see :meth:`~.prompt_encoder.PromptEncoder3D.add_box_corner_embeddings`).
        encoder: adapters in the image encoder's blocks too (``finetune --text`` leaves them out
            by default: the frozen encoder's outputs are then computed once per crop).
    """

    ratio: float = 0.0625
    mlp_scale: float = 0.5
    hyper_rank: int = 16
    box_corners: bool = False
    encoder: bool = True

    def to_dict(self) -> dict:
        """The configuration as an adapter file records it. Keys at their old defaults (no box
        corners, encoder adapters) are left out: such a file is what it was before them (older
        versions read it)."""
        content = asdict(self)
        if not self.box_corners:
            del content["box_corners"]
        if self.encoder:
            del content["encoder"]
        return content


class Adapter(nn.Module):
    """``x ↦ [x +] up(GELU(down(x)))`` over the last axis; ``up`` starts at zero.

    Args:
        dim: token width.
        ratio: bottleneck width / ``dim``.
        skip: add the input back (Med-SA's space adapter) or not (its MLP adapter).
    """

    def __init__(self, dim: int, ratio: float, skip: bool) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(..., dim)``. Returns the same shape."""
        out = self.up(nn.functional.gelu(self.down(x)))
        return x + out if self.skip else out


class HyperPromptAdapter(nn.Module):
    """HyP-Adpt: ``x ↦ x + up(GELU(M(p) · down(x)))`` with ``M(p)`` a ``rank × rank`` matrix that
    a linear hyper-network computes from ``p``, the mean of the prompt tokens.

    Args:
        dim: token width (the decoder's 384).
        rank: bottleneck width.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.down = nn.Linear(dim, rank)
        self.hyper = nn.Linear(dim, rank * rank)
        # Starts as the identity mixing, so the adapter is a plain bottleneck until trained.
        nn.init.zeros_(self.hyper.weight)
        with torch.no_grad():
            self.hyper.bias.copy_(torch.eye(rank).flatten())
        self.up = nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, N, dim)`` tokens; prompt ``(B, T, dim)`` prompt tokens (T ≥ 1).
        Returns ``(B, N, dim)``."""
        mixing = self.hyper(prompt.mean(dim=1)).reshape(-1, self.rank, self.rank)
        hidden = torch.bmm(self.down(x), mixing.expand(x.shape[0], -1, -1))
        return x + self.up(nn.functional.gelu(hidden))


# The modules that adapters add (the prompt encoder's box corners and the text path included):
# their weights are the adapter file's, never the base model's.
ADAPTER_KEYS = (
    "attn_adapter",
    "mlp_adapter",
    "hyper_adapter",
    "box_corner_embeddings",
    "text_reference",
)


def attach_adapters(model: nn.Module, config: AdapterConfig) -> list[nn.Parameter]:
    """Freeze ``model`` (a :class:`~fastsam3d_core.models.Sam3D`) and give it adapters (and,
    with ``config.box_corners``, its prompt encoder the box corners' embeddings).

    Returns:
        The adapters' parameters: the only ones that require a gradient.

    Raises:
        ValueError: the model has adapters already.
    """
    from .image_encoder import EncoderBlock, MLPOnlyBlock
    from .transformer import TwoWayAttentionBlock3D

    if has_adapters(model):
        raise ValueError("the model has adapters already")
    model.requires_grad_(False)
    reference = next(model.parameters())
    for module in list(model.modules()):
        if isinstance(module, EncoderBlock) and config.encoder:
            dim = module.norm1.normalized_shape[0]
            module.attn_adapter = Adapter(dim, config.ratio, skip=True)
        if isinstance(module, (EncoderBlock, MLPOnlyBlock)) and config.encoder:
            dim = module.norm2.normalized_shape[0]
            module.mlp_adapter = Adapter(dim, config.ratio, skip=False)
            module.mlp_adapter_scale = config.mlp_scale
        if isinstance(module, TwoWayAttentionBlock3D):
            dim = module.norm3.normalized_shape[0]
            module.mlp_adapter = Adapter(dim, config.ratio, skip=False)
            module.mlp_adapter_scale = config.mlp_scale
            if config.hyper_rank:
                module.hyper_adapter = HyperPromptAdapter(dim, config.hyper_rank)
    if config.box_corners:
        model.prompt_encoder.add_box_corner_embeddings().requires_grad_(True)
    model.to(device=reference.device, dtype=reference.dtype)
    model.adapter_config = config  # type: ignore[assignment]  # what adapter files record
    return adapter_parameters(model)


def has_adapters(model: nn.Module) -> bool:
    return any(getattr(m, key, None) is not None for m in model.modules() for key in ADAPTER_KEYS)


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if _is_adapter_key(name)]


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights, by their keys in the model's state dict."""
    return {k: v for k, v in model.state_dict().items() if _is_adapter_key(k)}


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's own weights, without the adapters'."""
    return {k: v for k, v in model.state_dict().items() if not _is_adapter_key(k)}


def _is_adapter_key(key: str) -> bool:
    return any(f"{name}." in key for name in ADAPTER_KEYS)
