"""The page's "Segment by name" field (RefSAM3D's text prompt, issue 29): a combo box offering
the names the model's adapter file knows (any other text may be typed), and its button.

The engine does the work (``addTextSegment``: a new segment named by the text over the whole
volume, on the worker, its progress on the status line) and reports what it refuses (empty
text, a name it does not know, a model without a text path) on the page's error line.
"""

from __future__ import annotations

from typing import Any

from trame.widgets import html
from trame_vuetify.widgets import vuetify3 as v3

# No model's names read yet (None is a model: a predictor given directly).
_NOT_READ = object()


class TextPanel:
    """The text field of ``page`` (a :class:`~fastsam3d_web.app.SegmentationPage`): its action
    runs through the page's ``guarded`` (an error shows on the page)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        page.state.text_prompt = ""
        page.state.text_names = []
        self._names_of: Any = _NOT_READ

    def segment(self, text: Any = None) -> None:
        """Segment the structure named ``text`` (default: the field's) as a new segment."""
        typed = self.page.state.text_prompt if text is None else text
        self.page.guarded(lambda: self.page.logic.addTextSegment(str(typed or "")))

    def refresh_names(self) -> None:
        """Offer the names of the model in use: read once per model (its adapter file)."""
        model = self.page.logic.loadedModel
        if model == self._names_of:
            return
        self._names_of = model
        # Called from the polling task: an unreadable adapter file is said on the page, and
        # the task goes on collecting results.
        try:
            self.page.state.text_names = list(self.page.logic.textNames())
        except Exception as error:
            self.page.state.text_names = []
            self.page.show_error(error)

    def build(self) -> None:
        segment = self.page.server.controller.trigger_name(self.segment)
        with html.Div(classes="d-flex align-center pa-2", id="text-prompt"):
            v3.VCombobox(
                label="Segment by name",
                id="text-field",
                v_model=("text_prompt",),
                items=("text_names",),
                hide_details=True,
                density="compact",
                title="A structure's name, e.g. liver: a new segment over the whole image "
                "(needs an adapter file trained with fastsam3d finetune --text)",
                keydown_enter=f"trigger('{segment}', [$event.target.value])",
                __events=[("keydown_enter", "keydown.enter")],
            )
            v3.VBtn("Segment", id="text-segment", variant="text", click=self.segment)
