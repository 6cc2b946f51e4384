"""The page's view controls: window/level presets for the image and a reset of the views.

A preset sets the volume display node's window and level (as Slicer's own presets do); "MR
auto" gives the window back to the display node's automatic one (from the image's histogram,
as when it was opened). Reset views fits every view to the volume again, as on opening.
"""

from __future__ import annotations

from typing import Any

from trame.widgets import html
from trame_vuetify.widgets import vuetify3 as v3

# (element id, label, window, level) in Hounsfield units; None: the automatic window.
WINDOW_LEVEL_PRESETS = (
    ("ct-soft-tissue", "CT soft tissue", 400.0, 40.0),
    ("ct-lung", "CT lung", 1500.0, -600.0),
    ("ct-bone", "CT bone", 1800.0, 400.0),
    ("ct-brain", "CT brain", 80.0, 40.0),
    ("mr-auto", "MR auto", None, None),
)


class ViewsPanel:
    """Window/level presets and reset views for ``page`` (a
    :class:`~fastsam3d_web.app.SegmentationPage`); ``state.window_level`` says the window in
    use ("W 400 L 40")."""

    def __init__(self, page: Any) -> None:
        self.page = page
        page.state.window_level = ""

    def apply_preset(self, name: str) -> None:
        """Show the image with one of :data:`WINDOW_LEVEL_PRESETS` (by its element id)."""
        self.page.guarded(lambda: self._apply(name))

    def _apply(self, name: str) -> None:
        presets = {preset[0]: preset for preset in WINDOW_LEVEL_PRESETS}
        if name not in presets:
            raise ValueError(f"{name!r}: not a window/level preset of this page")
        display = self._display_node()
        _, _, window, level = presets[name]
        if window is None:
            display.AutoWindowLevelOn()
        else:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(window, level)
        self.show_window_level()

    def show_window_level(self) -> None:
        display = self._display_node()
        auto = " (auto)" if display.GetAutoWindowLevel() else ""
        self.page.state.window_level = f"W {display.GetWindow():g} L {display.GetLevel():g}{auto}"

    def reset_views(self) -> None:
        """Every view fits the volume again (slices centred, the 3-D camera reset)."""
        self.page.guarded(self.page.slicer.display_manager.reset_views)

    def _display_node(self):
        volume = self.page.volume
        display = volume.GetDisplayNode() if volume is not None else None
        if display is None:
            raise RuntimeError("open an image first")
        return display

    def build(self) -> None:
        """The presets' buttons, the window in use, and Reset views."""
        with html.Div(id="window-level", classes="d-flex flex-wrap align-center pa-2"):
            html.Span("Window/level", classes="text-caption mr-2")
            for element, label, _, _ in WINDOW_LEVEL_PRESETS:
                v3.VBtn(
                    label,
                    id=f"preset-{element}",
                    size="small",
                    variant="tonal",
                    classes="ma-1",
                    click=(self.apply_preset, f"['{element}']"),
                )
            html.Span("{{ window_level }}", id="window-level-now", classes="text-caption ml-2")
            v3.VBtn(
                "Reset views",
                id="reset-views",
                prepend_icon="mdi-fit-to-screen-outline",
                size="small",
                variant="text",
                classes="ma-1",
                click=self.reset_views,
            )
