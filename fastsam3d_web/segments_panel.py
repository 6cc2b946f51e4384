"""The page's segment list: each segment's colour and name, the current one highlighted; rename,
recolour, show or hide, delete (the engine's own segment edits, as the Slicer module's).

The list's items are ``state.segments`` (which the segment selector shows too), made again by
:func:`segment_items` whenever the engine says that segments changed.
"""

from __future__ import annotations

import re
from typing import Any

from trame.widgets import html
from trame_vuetify.widgets import vuetify3 as v3

# The colours offered first (any other is picked below them): Slicer's first segment colours.
SWATCHES = [
    ["#80ae80", "#f1d691", "#b17a65"],
    ["#6fb8d2", "#d8654f", "#dd8265"],
    ["#90ee90", "#c0685c", "#dcf514"],
]
HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6})")


def segment_items(logic: Any) -> list[dict]:
    """The segmentation's segments in order: ``title`` (name), ``value`` (MRML segment ID),
    ``color`` ("#rrggbb") and ``visible``; empty without a segmentation."""
    node = logic.segmentationNode
    items = []
    for segment_id in logic.segmentIds():
        segment = node.GetSegmentation().GetSegment(segment_id)
        red, green, blue = (round(255 * min(max(v, 0.0), 1.0)) for v in segment.GetColor())
        items.append(
            {
                "title": segment.GetName(),
                "value": segment_id,
                "color": f"#{red:02x}{green:02x}{blue:02x}",
                "visible": logic.segmentVisible(segment_id),
            }
        )
    return items


def rgb_of(color: str) -> tuple[float, float, float]:
    """(r, g, b) in [0, 1] of a "#rrggbb" colour (the picker may add an alpha: ignored)."""
    match = HEX_COLOR.match(str(color).strip())
    if match is None:
        raise ValueError(f"{color!r}: not a colour (#rrggbb)")
    digits = match.group(1)
    return tuple(int(digits[n : n + 2], 16) / 255 for n in (0, 2, 4))


class SegmentsPanel:
    """The segment list of ``page`` (a :class:`~fastsam3d_web.app.SegmentationPage`): its
    actions run through the page's ``guarded`` (an error shows on the page)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        page.state.renaming = None  # the segment whose name is being edited
        page.state.new_name = ""

    # -- actions -------------------------------------------------------------------------

    def rename(self, segment_id: str, name: str) -> None:
        self.page.state.renaming = None
        self.page.guarded(lambda: self.page.logic.renameSegment(segment_id, name))

    def recolour(self, segment_id: str, color: str) -> None:
        self.page.guarded(lambda: self.page.logic.setSegmentColor(segment_id, rgb_of(color)))

    def toggle_visibility(self, segment_id: str) -> None:
        logic = self.page.logic
        self.page.guarded(
            lambda: logic.setSegmentVisibility(segment_id, not logic.segmentVisible(segment_id))
        )

    def delete(self, segment_id: str) -> None:
        self.page.guarded(lambda: self.page.logic.deleteSegment(segment_id))

    # -- widgets -------------------------------------------------------------------------

    def build(self) -> None:
        """The list: a colour swatch (a picker), the name (click: current; pencil: rename),
        show or hide, delete."""
        trigger = self.page.server.controller.trigger_name
        with v3.VList(id="segment-list", density="compact"):
            v3.VListSubheader("Segments")
            with v3.VListItem(
                v_for="segment in segments",
                key="segment.value",
                classes="segment",
                active=("segment.value === segment_id",),
                click="segment_id = segment.value",
            ):
                with v3.Template(v_slot_prepend=True):
                    self._build_colour(trigger(self.recolour))
                v3.VListItemTitle(
                    "{{ segment.title }}",
                    v_if="renaming !== segment.value",
                    classes="segment-name",
                )
                v3.VTextField(
                    v_else=True,
                    v_model=("new_name",),
                    classes="segment-new-name",
                    density="compact",
                    hide_details=True,
                    autofocus=True,
                    click="$event.stopPropagation()",
                    keydown_enter=f"trigger('{trigger(self.rename)}', [segment.value, new_name])",
                    keydown_esc="renaming = null",
                    __events=[("keydown_enter", "keydown.enter"), ("keydown_esc", "keydown.esc")],
                )
                with v3.Template(v_slot_append=True):
                    self._build_buttons(trigger)

    def _build_colour(self, recolour: str) -> None:
        with v3.VMenu(close_on_content_click=False):
            with v3.Template(v_slot_activator="{ props }"):
                v3.VBtn(
                    v_bind="props",
                    icon="mdi-square",
                    color=("segment.color",),
                    size="small",
                    variant="text",
                    classes="segment-color",
                    title="Colour",
                    click="$event.stopPropagation()",
                )
            v3.VColorPicker(
                model_value=("segment.color",),
                modes=("['hex']",),
                show_swatches=True,
                swatches=("swatches", SWATCHES),
                classes="segment-color-picker",
                update_modelValue=f"trigger('{recolour}', [segment.value, $event])",
            )

    def _build_buttons(self, trigger) -> None:
        buttons = (
            ("segment.visible ? 'mdi-eye' : 'mdi-eye-off'", "segment-visibility", "Show or hide",
             f"trigger('{trigger(self.toggle_visibility)}', [segment.value])"),
            ("'mdi-pencil'", "segment-rename", "Rename",
             "renaming = segment.value; new_name = segment.title"),
            ("'mdi-delete'", "segment-delete", "Delete",
             f"trigger('{trigger(self.delete)}', [segment.value])"),
        )  # fmt: skip
        with html.Div(classes="d-flex"):
            for icon, element, title, action in buttons:
                v3.VBtn(
                    icon=(icon,),
                    size="small",
                    variant="text",
                    classes=element,
                    title=title,
                    click=f"$event.stopPropagation(); {action}",
                )
