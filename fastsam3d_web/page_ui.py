"""The page's widgets: toolbar, side panel, point list, views and footer (Vuetify 3).

Kept apart from :mod:`fastsam3d_web.app`, which holds the session's behaviour: this file only
lays the widgets out and names the actions they call.
"""

from __future__ import annotations

import functools

from trame.widgets import client, html
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3

from .placement import TOOLS

# The export buttons: (label, element id) -> the file name the download gets.
EXPORT_FILES = {
    ("Export .seg.nrrd", "export-seg"): "segmentation.seg.nrrd",
    ("Export labelmap", "export-labelmap"): "labelmap.nii.gz",
}


class PageWidgets:
    """Builds :class:`fastsam3d_web.app.SegmentationPage`'s widgets (a mixin: ``self`` is the
    page, with its server, state, logic, placement, pacs and layout)."""

    def _build_point_list(self) -> None:
        """The current segment's points: kind, position, and a delete button each."""
        delete = self.server.controller.trigger_name(self.delete_point)
        with v3.VList(id="points", density="compact"):
            v3.VListSubheader("Points (drag them in 'Moving' mode)")
            with v3.VListItem(
                v_for="point in points",
                key="point.id",
                classes="point",
                title=("point.ras",),
            ):
                with v3.Template(v_slot_prepend=True):
                    v3.VIcon(
                        "{{ point.positive ? 'mdi-plus-circle' : 'mdi-minus-circle' }}",
                        color=("point.positive ? 'green' : 'red'",),
                    )
                with v3.Template(v_slot_append=True):
                    v3.VBtn(
                        icon="mdi-delete",
                        size="small",
                        variant="text",
                        classes="delete-point",
                        click=f"trigger('{delete}', [point.id])",
                    )

    def _build_tools(self) -> None:
        """The tools: points, box, scribble, lasso (one at a time; ``state.tool``)."""
        with v3.VBtnToggle(
            v_model=("tool",), id="tools", mandatory=True, density="compact", variant="outlined"
        ):
            for tool, label, icon, how in TOOLS:
                v3.VBtn(icon=icon, value=tool, id=f"tool-{tool}", title=f"{label}: {how}")

    def _build_toolbar(self) -> None:
        """The tools, the sign and mode buttons, and the logic's editing actions."""
        v3.VSpacer()
        self._build_tools()
        v3.VBtn(
            "{{ negative ? 'Negative' : 'Positive' }}",
            id="polarity",
            color=("negative ? 'red' : 'green'",),
            click=self.placement.toggle_polarity,
        )
        v3.VBtn(
            "Done ({{ drawing_points }})",
            id="finish-drawing",
            v_show=("tool === 'scribble' || tool === 'lasso'",),
            title="The scribble or lasso is complete (or right click in the view)",
            variant="tonal",
            click=self.placement.finish_drawing,
        )
        v3.VBtn(
            "{{ moving ? 'Moving' : 'Placing' }}",
            id="mode",
            variant="text",
            click=self.placement.toggle_moving,
        )
        self._action_buttons(
            ("Undo", self.logic.undo, "undo"),
            ("Redo", self.logic.redo, "redo"),
            ("Clear", self.logic.clearSegment, "clear"),
            ("Next segment", self.logic.nextSegment, "next-segment"),
        )
        self.shortcuts.build_button()

    def _build_side_actions(self) -> None:
        """The side panel's buttons: uncertainty, the suggested point, the exports (the
        toolbar has no room for them beside the tools)."""
        with html.Div(classes="d-flex flex-wrap pa-2"):
            self._action_buttons(
                ("Uncertainty", self.logic.computeUncertainty, "uncertainty"),
                ("Suggest point", self.logic.suggestNextPoint, "suggest"),
            )
            export = self.server.controller.trigger_name(self.export)
            for (label, element), name in EXPORT_FILES.items():
                v3.VBtn(
                    label,
                    id=element,
                    variant="text",
                    click=f"utils.download('{name}', trigger('{export}', ['{name}']), "
                    "'application/octet-stream')",
                )
            self.pacs.build_buttons()

    def _action_buttons(self, *actions: tuple) -> None:
        """A button for each ``(label, logic action, element id)``; an error shows on the page."""
        for label, action, element in actions:
            guarded = functools.partial(self._guarded, action)
            v3.VBtn(label, id=element, click=guarded, variant="text")

    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server) as self.ui:
            client.Style("html { overflow-y: hidden; }")
            self.ui.title.set_text("FastSAM3D")
            with self.ui.toolbar:
                self._build_toolbar()
            with self.ui.drawer:
                v3.VFileInput(
                    label="Open an image (or drop it on the views)",
                    id="upload",
                    multiple=True,  # a DICOM series' files (or its .zip)
                    hide_details=True,
                    change=self.receiver.send_js("$event.target.files"),
                )
                v3.VSelect(
                    label="Segment",
                    id="segments",
                    items=("segments",),
                    v_model=("segment_id",),
                    hide_details=True,
                )
                v3.VSlider(
                    label="Opacity",
                    id="opacity",
                    v_model=("opacity",),
                    min=0,
                    max=1,
                    step=0.05,
                    hide_details=True,
                )
                self.views_panel.build()
                self.text_panel.build()
                self._build_side_actions()
                self.segments_panel.build()
                self._build_point_list()
            self.pacs.build_dialog()
            self.shortcuts.build()
            with self.ui.content:
                with html.Div(
                    id="views",
                    style="height: calc(100vh - 96px); position: relative;",
                    raw_attrs=self.receiver.view_events(),  # drop an image on the views
                ):
                    self.layout.initialize_layout_grid(self.ui)
                    self.receiver.build_overlays()
            with self.ui.footer:
                html.Span("{{ status }}", id="status")
                html.Span("{{ error }}", id="error", style="color: #e53935; margin-left: 1em;")
                html.Span(
                    "This session closes soon without use: click or scroll to keep it.",
                    v_show=("closing",),
                    id="closing",
                    style="color: #fb8c00; margin-left: 1em;",
                )
                v3.VSpacer()
                html.Span(
                    "{{ busy ? 'working' : 'idle' }} · {{ clicks }} points, "
                    "{{ negatives }} negative, {{ drawn }} drawn",
                    id="progress",
                )
