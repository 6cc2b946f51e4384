"""The text embeddings an adapter file carries: its training vocabulary, synonyms included.

A model fine-tuned with ``fastsam3d finetune --text`` learned names; their text embeddings (512
values each, from the text encoder it was trained with) travel in the adapter file, so a client
segments by a known name without loading the text model. Other text needs that text model: the
same one, which the file names by its identity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..models.text_reference import TEXT_EMBED_DIM


class TextNotKnown(ValueError):
    """Text that is not in the adapter's vocabulary, with no text model to embed it."""


class TextEncoderLike(Protocol):
    """What the bank needs of a text encoder (``fastsam3d_core.text.ClipTextEncoder``)."""

    identity: Any

    def embed(self, texts: list[str]) -> torch.Tensor: ...


def text_key(text: str) -> str:
    """How names are compared and embedded: lower case, ``_`` and ``-`` as spaces, runs of
    white space as one ("Kidney_Right " -> "kidney right").

    Raises:
        ValueError: empty text (nothing but spaces and separators).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    key = " ".join(re.sub(r"[_\-]+", " ", text).lower().split())
    if not key:
        raise ValueError("empty text: give the name of a structure, e.g. 'liver'")
    return key


def _identity_name(identity: Any) -> str:
    if isinstance(identity, Mapping):
        return str(identity.get("name") or identity.get("sha256") or identity)
    return str(identity)


@dataclass(frozen=True)
class TextBank:
    """Names (:func:`text_key` form) and their text embeddings ``(512,)`` float32.

    Attributes:
        embeddings: name or synonym -> embedding.
        identity: the text encoder that made them (its ``identity``).
        synonyms: synonym -> the training name it stands for.
    """

    embeddings: dict[str, torch.Tensor]
    identity: Any = None
    synonyms: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Every name the bank knows (training names and synonyms), sorted: for the lists the
        front ends offer."""
        return sorted(self.embeddings)

    def canonical(self, text: str) -> str | None:
        """The training name ``text`` stands for (a synonym's name), or None when unknown."""
        key = text_key(text)
        if key not in self.embeddings:
            return None
        return self.synonyms.get(key, key)

    def lookup(self, text: str, encoder: TextEncoderLike | None = None) -> torch.Tensor:
        """The embedding ``(512,)`` float32 (CPU) of ``text``.

        A known name comes from the bank; other text is embedded by ``encoder``, which must be
        the text model the adapter was trained with.

        Raises:
            ValueError: empty text, or an encoder other than the adapter's (one line).
            TextNotKnown: text not in the bank and no encoder given (one line).
        """
        key = text_key(text)
        if key in self.embeddings:
            return self.embeddings[key]
        if encoder is None:
            known = ", ".join(self.names[:12]) + (", ..." if len(self.names) > 12 else "")
            raise TextNotKnown(
                f"{text!r} is not in this adapter's vocabulary ({known}); other text needs the "
                f"text model it was trained with: --text-model {_identity_name(self.identity)}"
            )
        check_same_encoder(self.identity, encoder.identity)
        embedding = encoder.embed([key])[0]
        return embedding.detach().float().cpu()

    def to_dict(self) -> dict:
        """As the adapter file stores it."""
        return {
            "identity": self.identity,
            "bank": {k: v.detach().float().cpu().clone() for k, v in self.embeddings.items()},
            "synonyms": dict(self.synonyms),
        }

    @classmethod
    def from_dict(cls, content: Mapping[str, Any]) -> TextBank:
        bank = {str(k): torch.as_tensor(v, dtype=torch.float32) for k, v in content["bank"].items()}
        for name, value in bank.items():
            if tuple(value.shape) != (TEXT_EMBED_DIM,):
                raise ValueError(f"text bank entry {name!r}: shape {tuple(value.shape)}")
        return cls(bank, content.get("identity"), dict(content.get("synonyms", {})))


def check_same_encoder(expected: Any, actual: Any) -> None:
    """Raises ValueError, in one line, when a text encoder is not the one expected."""
    if expected is not None and expected != actual:
        raise ValueError(
            f"text model {_identity_name(actual)} is not the one this adapter was trained with "
            f"({_identity_name(expected)}): give that one with --text-model"
        )


def build_bank(names: list[str], synonyms: Mapping[str, str], encoder: TextEncoderLike) -> TextBank:
    """Embed the training names and their synonyms once.

    Args:
        names: training names (any form: :func:`text_key` is applied).
        synonyms: synonym -> training name.
        encoder: the text encoder (frozen); its ``identity`` is recorded.
    """
    keys = list(dict.fromkeys(text_key(n) for n in names))
    synonym_keys = {text_key(s): text_key(n) for s, n in synonyms.items()}
    unknown = sorted(n for n in synonym_keys.values() if n not in keys)
    if unknown:
        raise ValueError(
            f"synonym for {unknown[0]!r}, which is not a training name ({', '.join(keys)})"
        )
    every = keys + [s for s in synonym_keys if s not in keys]
    with torch.no_grad():
        vectors = encoder.embed(every).detach().float().cpu()
    return TextBank(dict(zip(every, vectors)), encoder.identity, synonym_keys)
