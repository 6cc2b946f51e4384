"""Attention for both models, in one place: backends, relative-position bias, sparse pattern,
and attention over a zero-padded window computed from its real tokens only."""

from .backends import BACKENDS, FLASH_ATTN_INSTALLED, AttentionConfig, attend, reference_attention
from .relative_position import relative_position_bias, relative_position_bias_reference
from .sparse import dilated_positions, sparse_attention
from .windowed import padded_key_logit, padded_window_attention

__all__ = [
    "BACKENDS",
    "FLASH_ATTN_INSTALLED",
    "AttentionConfig",
    "attend",
    "dilated_positions",
    "padded_key_logit",
    "padded_window_attention",
    "reference_attention",
    "relative_position_bias",
    "relative_position_bias_reference",
    "sparse_attention",
]
