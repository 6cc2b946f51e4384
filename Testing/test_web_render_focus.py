"""The page's views render only what changed for a view's mouse events (fastsam3d_web/rendering.py).

trame-slicer's views, as the page makes them (axial, coronal, sagittal, 3-D) with the example CT
and a markups node in Slicer's persistent place mode, as the page's points node is: a mouse move
in the axial view moves the markups preview point, which asks every view for a frame. Only the
axial view's frame is asked for at once; the others' once the page is idle. A change that is no
mouse event asks every view, the view last under the mouse first. A click's own frame (its
point) waits a moment for the engine's result. The views here count the
frames asked of them instead of streaming them (trame-slicer's own render strategy interface).
"""

from __future__ import annotations

import asyncio

import pytest
from test_slicer_mrml import CT_IMAGE

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")

VIEWS = ("Red", "Green", "Yellow", "ThreeD")


@pytest.fixture(scope="module")
def views():
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import ScheduledRenderStrategy
    from trame_slicer.views import ViewLayoutDefinition as Layout
    from trame_slicer.views.direct_view_factory import DirectViewFactory

    asked: list[str] = []

    class CountedFrames(ScheduledRenderStrategy):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def schedule_render(self) -> None:
            asked.append(self.name)

    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(True))
    made = {}
    for layout in (Layout.axial_view(), Layout.coronal_view(), Layout.sagittal_view(),
                   Layout.threed_view()):  # fmt: skip
        view = app.view_manager.create_view(layout)
        view.set_scheduled_render(CountedFrames(layout.singleton_tag))
        view.render_window().SetSize(300, 300)
        view.interactor().UpdateSize(300, 300)
        made[layout.singleton_tag] = view
    volume = app.io_manager.load_volumes([str(CT_IMAGE)])[0]
    app.display_manager.show_volume(volume, do_reset_views=True)
    points = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    app.markups_logic.place_node(points, persistent=True)
    return app, made, asked, points


def _move(view, x: int, y: int) -> None:
    interactor = view.interactor()
    interactor.SetEventInformation(x, y, 0, 0)
    interactor.InvokeEvent("MouseMoveEvent")


def test_a_mouse_move_renders_only_its_view_and_the_others_once_idle(views):
    from fastsam3d_web import rendering

    app, made, asked, points = views

    async def scenario() -> None:
        rendering.configure_views(app.view_manager)
        asked.clear()
        _move(made["Red"], 150, 150)
        _move(made["Red"], 152, 150)
        await asyncio.sleep(0)
        assert "Red" in asked, asked  # the preview point moved in the axial view
        assert set(asked) == {"Red"}, f"frames asked while the mouse moves in Red: {asked}"
        asked.clear()
        await asyncio.sleep(4 * rendering.DEFERRED_CHECK_S)  # the page is idle meanwhile
        assert set(asked) == {"Green", "Yellow", "ThreeD"}, asked

        # Not a mouse event (as the engine's result): every view, the last under the mouse first.
        asked.clear()
        points.SetNthControlPointLabel(0, "moved")
        points.AddControlPoint(0.0, 0.0, 0.0)
        await asyncio.sleep(0.05)
        assert asked and set(asked) == {"Red"}, asked
        await asyncio.sleep(2 * rendering.FIRST_FRAME_WAIT_S)
        assert {"Green", "Yellow", "ThreeD"} <= set(asked), asked

        # A click places a point: its own frame waits for the engine's result (none here).
        await asyncio.sleep(4 * rendering.DEFERRED_CHECK_S)
        asked.clear()
        placed = points.GetNumberOfDefinedControlPoints()
        for event in ("LeftButtonPressEvent", "LeftButtonReleaseEvent"):
            made["Red"].interactor().InvokeEvent(event)
        await asyncio.sleep(0)
        assert points.GetNumberOfDefinedControlPoints() == placed + 1 and asked == [], asked
        await asyncio.sleep(rendering.PLACED_POINT_WAIT_S + 0.05)
        assert asked and set(asked) == {"Red"}, asked

    asyncio.run(scenario())
