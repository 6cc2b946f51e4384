"""The panel's "Segment by name" field (RefSAM3D's text prompt, issue 29): an editable list of
the names the model's adapter file knows, and its button.

A widget helper (it uses Qt). The engine does the work (``addTextSegment``: a new segment named
by the text, over the whole volume, on the worker, with progress on the status line) and says
through its observer what it refused (empty text, a name it does not know, a model without a text
path).
"""

from __future__ import annotations

from typing import Any

from slicer.i18n import tr as _


class TextField:
    """The text field and button of ``widget`` (the module's ``FastSAM3DSlicerWidget``)."""

    def __init__(self, widget: Any) -> None:
        self._widget = widget
        # The model (setModel's key) whose names the list holds: the adapter file is read again
        # only when another model is loaded, not at every update of the buttons.
        self._namesOf: Any = ()

    def connect(self) -> None:
        """Run the field from its button and from Enter in it."""
        ui, widget = self._widget.ui, self._widget
        run = widget.guarded(self.segmentByName, _("Failed to segment by name."))
        ui.textSegmentButton.connect("clicked(bool)", run)
        ui.textComboBox.lineEdit().connect("returnPressed()", run)

    def segmentByName(self) -> None:
        """Segment the structure named in the field (a new segment named by it)."""
        engine = self._widget.tools.engine()
        engine.addTextSegment(self._widget.ui.textComboBox.currentText)

    def update(self, engine: Any) -> None:
        """Enable the field for a started engine, and offer the names its model knows."""
        ui = self._widget.ui
        ui.textComboBox.enabled = ui.textSegmentButton.enabled = engine is not None
        model = engine.loadedModel if engine is not None else None
        if engine is None or model == self._namesOf:
            return
        self._namesOf = model
        typed = ui.textComboBox.currentText
        ui.textComboBox.clear()
        ui.textComboBox.addItems(list(engine.textNames()))
        ui.textComboBox.setEditText(typed)
