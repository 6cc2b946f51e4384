"""Text prompts' text side: CLIP's BPE tokenizer and its ViT-B text tower (RefSAM3D).

``load_text_encoder("clip-vit-b-32-laion2b").embed(["liver"])`` -> float32 (1, 512), not
normalised. docs/text-prompts.md says where the weights and the vocabulary come from.
"""

from __future__ import annotations

from .clip_text import (
    TEXT_EMBED_DIM,
    ClipTextConfig,
    ClipTextEncoder,
    seeded_text_encoder,
)
from .text_weights import (
    DEFAULT_TEXT_MODEL,
    TextModelError,
    load_text_encoder,
    read_text_tower,
    text_model_names,
)
from .tokenizer import CONTEXT_LENGTH, END_ID, START_ID, ClipTokenizer
from .vocabulary import VocabularyError

__all__ = [
    "CONTEXT_LENGTH",
    "DEFAULT_TEXT_MODEL",
    "END_ID",
    "START_ID",
    "TEXT_EMBED_DIM",
    "ClipTextConfig",
    "ClipTextEncoder",
    "ClipTokenizer",
    "TextModelError",
    "VocabularyError",
    "load_text_encoder",
    "read_text_tower",
    "seeded_text_encoder",
    "text_model_names",
]
