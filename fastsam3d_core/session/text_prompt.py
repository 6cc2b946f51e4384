"""A text prompt: a new segment named by the text, over the whole volume (RefSAM3D, issue 29).

The text is turned into an embedding once (the adapter file's bank, or the text model), then the
volume is covered by 128³ crops (those text training cuts: the fewest that cover it). Each crop
is encoded once (through the session's embedding cache, so that later clicks inside it run the
decoder only) and the text decoded there (``decode_text``). Each crop keeps the text's logits as
its ``prior``: a click inside it refines them through the ordinary mask-prompt path, and removing
that click goes back to them. The crops are composed as any segment's crops are (where they
overlap, the latest wins), and the whole is one undoable edit.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..geometry import CropGrid, Volume
from ..geometry.tiles import text_tiles
from .composition import compose
from .crops import squeezed_logits
from .result import Result, changes_of
from .state import SEGMENT_COLORS, CropState, Edit, SegmentState, SessionState

# The session's mixin reads its crop editor, masks and history; it names the session ``Any``
# (importing session.py here would make a circle of the two modules).
Session = Any

# Called after each crop with (crops done, crops in all): the front ends show it as progress.
TextProgress = Callable[[int, int], None]

# As the model's own refusal says it (fastsam3d_core.models.text_reference, which needs torch).
NO_TEXT_PATH = (
    "this model has no text path: load an adapter file trained with 'fastsam3d finetune --text' "
    "(--adapter FILE)"
)


def checked_text(text: Any) -> str:
    """The text a user typed, stripped of surrounding spaces.

    Raises:
        ValueError: not a string, or nothing but spaces (one line).
    """
    if not isinstance(text, str):
        raise ValueError(f"a text prompt is a string (the name of a structure), not {text!r}")
    stripped = " ".join(text.split())
    if not stripped:
        raise ValueError("empty text: give the name of a structure, e.g. 'liver'")
    return stripped


def supports_text(predictor: Any) -> bool:
    """Whether a predictor can segment by text: it has ``decode_text`` and, where it says
    (``accepts_text``: a model with its adapter's text path loaded), accepts text."""
    if not callable(getattr(predictor, "decode_text", None)):
        return False
    return bool(getattr(predictor, "accepts_text", True))


class TextVocabulary:
    """What turns text into the text path's ``(512,)`` embedding: an adapter file's bank of
    known names and, for other text, the text model it was trained with.

    Args:
        bank: a :class:`~fastsam3d_core.weights.text_bank.TextBank`.
        encoder: a text encoder (``fastsam3d_core.text``), or None: known names only.
    """

    def __init__(self, bank: Any, encoder: Any = None) -> None:
        self.bank = bank
        self.encoder = encoder

    @classmethod
    def from_adapter(cls, adapter: Any, text_model: Any = None) -> TextVocabulary:
        """The bank of an adapter file, and the text model ``text_model`` (a registry name or a
        file; None: none).

        Raises:
            ValueError: an adapter file without a text path, or a text model other than the
                one it was trained with (one line each).
        """
        from ..weights.adapter_file import read_text_bank

        bank = read_text_bank(adapter)
        encoder = None
        if text_model is not None:
            from ..text import load_text_encoder
            from ..weights.text_bank import check_same_encoder

            encoder = load_text_encoder(str(text_model))
            check_same_encoder(bank.identity, encoder.identity)
        return cls(bank, encoder)

    @property
    def names(self) -> tuple[str, ...]:
        """The names known without the text model (training names and synonyms), sorted."""
        return tuple(self.bank.names)

    def embedding(self, text: str) -> Any:
        """The text's embedding ``(512,)``.

        Raises:
            ValueError: empty text; ``TextNotKnown``: not in the bank and no text model.
        """
        return self.bank.lookup(text, self.encoder)


def text_embedding_of(predictor: Any, text: str, vocabulary: TextVocabulary | None) -> Any:
    """The text's embedding for ``predictor``: from ``vocabulary``, else the predictor's own
    ``text_embedding`` (a predictor that knows names itself, e.g. the oracle's).

    Raises:
        ValueError: empty text; a model without a text path; a text neither in the vocabulary
            nor known to a text model (one line each).
    """
    text = checked_text(text)
    if not supports_text(predictor):
        raise ValueError(NO_TEXT_PATH)
    if vocabulary is not None:
        return vocabulary.embedding(text)
    own = getattr(predictor, "text_embedding", None)
    if own is None:
        raise ValueError(
            "no vocabulary for the text: load the adapter file's (TextVocabulary.from_adapter)"
        )
    return own(text)


def volume_tiles(volume: Volume) -> list[CropGrid]:
    """The crops that cover the whole volume: those text training cuts its crops from
    (:func:`~fastsam3d_core.geometry.tiles.text_tiles`: the fewest, spread evenly)."""
    return text_tiles(volume)


class TextPrompts:
    """:meth:`add_text` for :class:`~fastsam3d_core.session.Session` (a mixin: it uses the
    session's crop editor, masks and history)."""

    def add_text(
        self: Any,
        text: str,
        vocabulary: TextVocabulary | None = None,
        progress: TextProgress | None = None,
    ) -> Result:
        """Segment by name: a new segment, named by the text and made current, from the text's
        mask over the whole volume; one undoable edit. Clicks afterwards refine it (a click
        inside one of its crops runs no encoder: it decodes with the text, from the text's
        logits there, and is honoured where it landed, :mod:`..models.text_clicks`).

        Args:
            text: the structure's name, e.g. ``"liver"`` (surrounding spaces ignored).
            vocabulary: the adapter file's names (and text model) for a model's text path;
                None for a predictor that embeds text itself (``text_embedding``).
            progress: told ``(crops done, crops in all)`` after each crop.

        Raises:
            ValueError: empty text; a model without a text path; a text the model does not
                know (not in its adapter's bank and no text model loaded). One line each.
        """
        start = time.perf_counter()
        name = checked_text(text)
        embedding_of_text = text_embedding_of(self.predictor, name, vocabulary)
        grids = volume_tiles(self.volume)
        crops, encoder_ran = [], False
        for done, grid in enumerate(grids, 1):
            features, ran = _crop_features(self, grid)
            logits = self.predictor.decode_text(features, embedding_of_text, None)
            # A model's text path also decodes the later clicks here with the text.
            text = embedding_of_text if hasattr(self.predictor, "encode_features") else None
            crops.append(self._crops.text_crop(grid, squeezed_logits(logits), text))
            encoder_ran |= ran
            if progress is not None:
                progress(done, len(grids))
        return _with_text_segment(self, name, tuple(crops), grids, encoder_ran, start)


def _crop_features(session: Session, grid: CropGrid) -> tuple[Any, bool]:
    """What ``decode_text`` takes for a crop, and whether the encoder ran: a model's
    ``encode_features`` (its embedding also cached as the crop's, for later clicks), kept in
    the session's cache for another text; else the crop's embedding."""
    if not callable(getattr(session.predictor, "encode_features", None)):
        return session._crops.embedding(grid)
    return session._crops.text_features(grid)


def _with_text_segment(
    session: Session,
    name: str,
    crops: tuple[CropState, ...],
    grids: list[CropGrid],
    encoder_ran: bool,
    start: float,
) -> Result:
    """Add the segment of ``crops`` to the session, current, as one edit (undo removes the
    segment and its voxels together, as for a segment added empty)."""
    session._last_segment_id += 1
    segment_id = session._last_segment_id
    color = SEGMENT_COLORS[(segment_id - 1) % len(SEGMENT_COLORS)]
    segment = SegmentState(segment_id, name, color, crops=crops)
    before = session._state
    after = SessionState(before.segments + (segment,))
    session._masks.add(segment_id, None)
    lo, hi = session._edit_box(segment_id, grids, False, ())
    others = [s.segment_id for s in before.segments]
    new = compose(session.volume, segment, lo, hi)
    written = session._masks.write(segment, lo, hi, new, others, session.protect_other_segments)
    session._record(Edit(before, after, written.patches))
    session._current = segment_id
    latest = crops[-1] if crops else None
    return session._result(
        **changes_of(written.patches, voxels=written.voxels),
        crop=latest.grid if latest else None,
        logits=latest.logits if latest else None,
        encoder_ran=encoder_ran,
        seconds=time.perf_counter() - start,
    )
