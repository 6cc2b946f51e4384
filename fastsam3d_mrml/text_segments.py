"""Segment by name (RefSAM3D's text prompt, issue 29): a new segment over the whole volume.

Part of :class:`~.logic.InteractiveSegmentationLogic` (a mixin), so that every front end (the
Slicer module's text field, the browser page's, a script) runs it the same way: one job on the
worker, reporting its progress crop by crop, whose update adds a segment named by the text (one
undo step). Clicks afterwards refine it like any segment.

The names come from the adapter file of the model in use (its text bank); other text needs the
text model it was trained with (:attr:`TextSegments.textModel`). Importing this module loads
neither torch nor ``fastsam3d_core``.
"""

from __future__ import annotations

import time
from typing import Any


class TextSegments:
    """Text prompts of :class:`~.logic.InteractiveSegmentationLogic` (``self``: the logic,
    with its worker state, worker and observer).

    Attributes:
        textModel: the text model (a registry name or a file) for text the adapter's
            vocabulary does not hold; None: its names only.
    """

    textModel: str | None = None

    def textNames(self) -> tuple[str, ...]:
        """The names the model in use knows without a text model (its adapter file's bank,
        synonyms included), sorted, for a completer; () when it has none, or none is loaded."""
        adapter = self._textAdapterFile()
        if adapter is None:
            return tuple(getattr(self._state.predictor, "text_names", ()) or ())
        from fastsam3d_core.weights.adapter_file import read_text_bank

        try:
            return tuple(read_text_bank(adapter).names)
        except ValueError:  # no text path (the text field then says so when used)
            return ()

    def addTextSegment(self, text: str) -> None:
        """Queue a new segment named by ``text`` (e.g. "liver") from the model's text path over
        the whole volume; it becomes the current segment, and later points refine it. A text
        the model cannot segment (empty, not known, no text path) is reported through the
        observer in one line, as a refused point is.

        Raises:
            ValueError: empty text (at once, one line).
        """
        from fastsam3d_core.session.text_prompt import checked_text

        from .worker import update_of

        name = checked_text(text)
        state, submitted, textModel = self._state, time.perf_counter(), self.textModel
        adapter = self._textAdapterFile()

        def job(report):
            session = state.require_session()
            vocabulary = _vocabulary(adapter, textModel)

            def progress(done: int, total: int) -> None:
                report(f"Segmenting {name!r}: crop {done} of {total}", done / total)

            return update_of(session, session.add_text(name, vocabulary, progress))

        def done(update: Any) -> None:
            self.lastLatencySeconds = time.perf_counter() - submitted
            self.lastEncoderRan = update.encoder_ran
            self._applyUpdate(update)

        self._setStatus(f"Segmenting {name!r} over the whole volume...")
        self._worker.submit(job, self._forTheseInputs(done), label="text")
        self._requestPoll()

    def _textAdapterFile(self) -> str | None:
        """The adapter file of the model :meth:`setModel` loads (None for a predictor given
        directly, or none)."""
        key = self._state.model_key
        return None if key is None else key[5]


# Vocabularies read, by (adapter file, text model): reading a bank again for each text would
# cost a file read, and loading the text model seconds.
_VOCABULARIES: dict[tuple, Any] = {}


def _vocabulary(adapter: str | None, textModel: str | None) -> Any:
    """On the worker: the adapter file's vocabulary (with the text model), or None for a
    predictor that embeds text itself."""
    if adapter is None:
        return None
    from fastsam3d_core.session.text_prompt import TextVocabulary

    key = (str(adapter), textModel)
    if key not in _VOCABULARIES:
        _VOCABULARIES.clear()  # one at a time: a text model is large
        _VOCABULARIES[key] = TextVocabulary.from_adapter(adapter, textModel)
    return _VOCABULARIES[key]
