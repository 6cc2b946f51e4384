"""The screenshot is rendered by Slicer's own slice views: ``Utilities/render_screenshot.py``.

Each check isolates one part of the pipeline by rendering the same scene twice, with one node
shown and hidden, and compares the pixels that change with where that node projects: the
segment (segmentations displayable manager, fill and outline in the segment's colour), the clicks
(markups displayable manager), and the CT itself (slice logic, soft-tissue window). Offscreen
rendering (EGL, OSMesa or a display) and the ``slicer-core`` wheel are needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from fastsam3d_core.io import read_volume

pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install '.[test]')")
vtk = pytest.importorskip("vtk")

UTILITIES = Path(__file__).resolve().parents[1] / "Utilities"
if str(UTILITIES) not in sys.path:
    sys.path.insert(0, str(UTILITIES))

import render_screenshot as rs  # noqa: E402

VIEW = (256, 256)  # (width, height) of one view: small, to stay fast
CHANGED = 10  # a pixel changed if a channel moved by more than this (0-255)
pytestmark = pytest.mark.skipif(
    not (rs.CT_PATH.is_file() and rs.LABELS_PATH.is_file()),
    reason=f"the example CT and labels are not in {rs.DATA}",
)


@pytest.fixture(scope="module")
def demo() -> rs.DemoScene:
    if not rs.offscreen_rendering_available():
        pytest.skip("VTK cannot render offscreen here (no EGL, OSMesa or display)")
    return rs.build_demo_scene()


def render(demo: rs.DemoScene, segment: bool, markups: bool) -> list[rs.RenderedView]:
    """The three views at VIEW size, through the first click, with the segment and the
    markups shown or hidden."""
    displays = [demo.segmented.segmentation_node.GetDisplayNode()]
    displays += [node.GetDisplayNode() for node in demo.segmented.markups_nodes]
    visible = [segment, markups, markups]
    try:
        for display, show in zip(displays, visible):
            display.SetVisibility(show)
        focus = demo.segmented.clicks_ras[0]
        return rs.render_views(demo.application, demo.volume_node, focus, [VIEW] * 3)
    finally:
        for display in displays:
            display.SetVisibility(True)


def pixel_ras(view: rs.RenderedView) -> np.ndarray:
    """RAS of every pixel's slice point: (height, width, 3), rows from the top."""
    height, width, _ = view.image.shape
    rows, columns = np.mgrid[0:height, 0:width]
    xy = np.stack([columns, height - 1 - rows, 0 * rows, 1 + 0 * rows], axis=-1)
    return (xy @ view.xy_to_ras.T)[..., :3]


def ras_to_ijk(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def voxel_of_pixels(view: rs.RenderedView, volume_node) -> tuple[np.ndarray, np.ndarray]:
    """Nearest voxel (i, j, k) of each pixel, (height, width, 3), and whether it is inside the
    volume, (height, width)."""
    ras = pixel_ras(view)
    ijk = ras @ ras_to_ijk(volume_node)[:3, :3].T + ras_to_ijk(volume_node)[:3, 3]
    index = np.round(ijk).astype(int)
    shape = np.array(volume_node.GetImageData().GetDimensions())
    return index, np.all((index >= 0) & (index < shape), axis=-1)


def projection(view: rs.RenderedView, volume_node, mask: np.ndarray) -> np.ndarray:
    """Pixels whose slice point lies in ``mask`` (bool (i, j, k) on the volume's voxels)."""
    index, inside = voxel_of_pixels(view, volume_node)
    projected = np.zeros(inside.shape, dtype=bool)
    projected[inside] = mask[tuple(index[inside].T)]
    return projected


def changed(a: rs.RenderedView, b: rs.RenderedView) -> np.ndarray:
    return np.abs(a.image.astype(int) - b.image.astype(int)).max(axis=-1) > CHANGED


def screen_xy(view: rs.RenderedView, ras) -> np.ndarray:
    """(x from the left, y from the top, distance from the slice plane in mm) of a RAS point."""
    x, y, z, _ = np.linalg.solve(view.xy_to_ras, np.append(ras, 1.0))
    return np.array([x, view.image.shape[0] - 1 - y, z * np.linalg.norm(view.xy_to_ras[:3, 2])])


def test_the_segment_is_drawn_where_it_projects_in_its_colour(demo):
    segmented = demo.segmented
    mask = rs.segment_mask(segmented.segmentation_node, segmented.segment_id, demo.volume_node)
    display = segmented.segmentation_node.GetDisplayNode()
    color = 255 * np.array(
        segmented.segmentation_node.GetSegmentation().GetSegment(segmented.segment_id).GetColor()
    )
    alpha = display.GetOpacity() * display.GetOpacity2DFill()
    alpha *= display.GetSegmentOpacity2DFill(segmented.segment_id)
    shown, hidden = render(demo, True, False), render(demo, False, False)
    for with_segment, without in zip(shown, hidden):
        name = with_segment.spec.name
        projected = projection(with_segment, demo.volume_node, mask)
        assert projected.sum() > 500, f"{name}: the segment is not on the slice"
        moved = changed(with_segment, without)
        # Only where the segment is (2 pixels for the outline and rounding), and all of it.
        assert not (moved & ~ndimage.binary_dilation(projected, iterations=2)).any(), name
        inner = ndimage.binary_erosion(projected, iterations=2)
        assert moved[inner].mean() > 0.99, name
        # Inside, the fill: the segment's colour blended over the CT at the fill opacity.
        blend = (with_segment.image - (1 - alpha) * without.image.astype(float)) / alpha
        assert np.abs(np.median(blend[inner], axis=0) - color).max() < 6, name
        # On the border, the outline: the segment's colour, opaque.
        outline = np.abs(with_segment.image - color).max(axis=-1) < 20
        border = ndimage.binary_dilation(projected, iterations=2) & ~inner
        assert outline.sum() > 50, f"{name}: no outline"
        assert (outline & ~border).sum() <= 0.01 * outline.sum(), name


def test_the_ct_is_shown_in_grey_with_the_soft_tissue_window(demo):
    hu = read_volume(rs.CT_PATH)
    low = rs.SOFT_TISSUE_LEVEL - rs.SOFT_TISSUE_WINDOW / 2
    for view in render(demo, False, False):
        index, inside = voxel_of_pixels(view, demo.volume_node)
        pixels = view.image[inside].astype(float)
        assert np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max() < 2, "not grey"
        assert pixels.std() > 20 and len(np.unique(pixels[:, 0])) > 100, "uniform"
        expected = np.clip((hu.array[tuple(index[inside].T)] - low) / rs.SOFT_TISSUE_WINDOW, 0, 1)
        # Slicer interpolates linearly between voxels: the nearest voxel's grey is close.
        error = np.abs(255 * expected - pixels[:, 0])
        assert np.median(error) < 8, f"{view.spec.name}: not the soft-tissue window"


def test_the_clicks_are_drawn_where_they_are(demo):
    positive = demo.segmented.markups_nodes[0]
    color = 255 * np.array(positive.GetDisplayNode().GetSelectedColor())
    shown, hidden = render(demo, False, True), render(demo, False, False)
    for with_clicks, without in zip(shown, hidden):
        height, width, _ = with_clicks.image.shape
        near = np.zeros((height, width), dtype=bool)
        on_slice = 0
        for ras in demo.segmented.clicks_ras:
            x, y, distance = screen_xy(with_clicks, ras)
            if abs(distance) > 1.0:
                continue  # Slicer shows a click only on its slice
            on_slice += 1
            column, row = int(round(x)), int(round(y))
            patch = with_clicks.image[row - 1 : row + 2, column - 1 : column + 2]
            assert np.abs(patch - color).max() < 20, f"{with_clicks.spec.name}: no click"
            near[max(row - 24, 0) : row + 25, max(column - 24, 0) : column + 25] = True
        assert on_slice >= 1, "the views go through the first click"
        moved = changed(with_clicks, without)
        assert moved.any() and not (moved & ~near).any(), with_clicks.spec.name


def test_the_views_follow_slicers_radiological_convention(demo):
    focus = demo.segmented.clicks_ras[0]
    # Screen directions (x right, y down) of +R, +A, +S in each view, as Slicer shows them:
    # patient right on the screen's left, anterior up in axial, superior up elsewhere.
    expected = {
        "Axial": {0: (-1, 0), 1: (0, -1)},
        "Sagittal": {1: (-1, 0), 2: (0, -1)},
        "Coronal": {0: (-1, 0), 2: (0, -1)},
    }
    for view in render(demo, True, True):
        origin = screen_xy(view, focus)
        for axis, direction in expected[view.spec.orientation].items():
            moved = screen_xy(view, focus + 10.0 * np.eye(3)[axis]) - origin
            assert np.allclose(np.sign(np.round(moved[:2], 6)), direction), view.spec.name
        assert abs(origin[2]) < 1e-6, "the slice goes through the first click"


@pytest.mark.parametrize("layout", rs.LAYOUTS)
def test_the_picture_puts_each_view_under_its_bar(demo, layout):
    size = (3 * VIEW[0] + 2 * rs.GAP, VIEW[1] + rs.BAR_HEIGHT)
    segmented = demo.segmented
    picture = rs.render_slice_views(
        demo.scene,
        demo.volume_node,
        segmented.segmentation_node,
        segmented.markups_nodes,
        size=size,
        application=demo.application,
        layout=layout,
    )
    assert picture.shape == (size[1], size[0], 3) and picture.dtype == np.uint8
    frame = np.ones(picture.shape[:2], dtype=bool)
    for spec, (x, y, width, height) in zip(rs.VIEWS, rs.layout_boxes(layout, size)):
        frame[y : y + height, x : x + width] = False
        bar = picture[y : y + rs.BAR_HEIGHT, x : x + width].reshape(-1, 3)
        colour = np.round(255 * np.array(spec.color))
        assert (np.abs(bar - colour).max(axis=-1) <= 1).mean() > 0.8, spec.name
        view = picture[y + rs.BAR_HEIGHT : y + height, x : x + width]
        assert view.std() > 20, f"{spec.name}: empty view"
    assert frame.any() and (picture[frame] == rs.FRAME_RGB).all(), "views overlap the frame"


def test_a_view_open_before_a_click_shows_the_segment_after_it():
    """In Slicer (and the browser) the views are drawn while the user clicks: the segment a
    click writes must reach a view whose displayable manager drew the scene before it."""
    if not rs.offscreen_rendering_available():
        pytest.skip("VTK cannot render offscreen here (no EGL, OSMesa or display)")
    from fastsam3d_core.session import OraclePredictor

    application = rs.CoreApplication.create(rs.slicer.vtkMRMLScene())
    volume_node = rs.read_ct(application.scene)
    labels = read_volume(rs.LABELS_PATH)
    index = rs.next_click(
        labels.array == rs.LIVER, np.linalg.norm(labels.ijk_to_ras[:3, :3], axis=0), None
    )
    click_ras = labels.index_to_ras(index)
    logic = rs.module_logic_class()(application.scene)
    view = rs.SliceView(application, rs.VIEWS[0], VIEW)
    try:
        logic.setPredictor(OraclePredictor(labels, rs.LIVER))
        logic.setInputs(volume_node)
        assert logic.waitForIdle(rs.TIMEOUT_S)
        view.show(volume_node, click_ras)
        before = view.render().astype(int)
        logic.positiveNode.AddControlPointWorld(vtk.vtkVector3d(*map(float, click_ras)), "")
        logic.synchronizePoints()
        assert logic.waitForIdle(rs.TIMEOUT_S)
        after = view.render().astype(int)
    finally:
        view.close()
        logic.cleanup()
    changed = np.abs(after - before).max(axis=2) > CHANGED
    # The liver covers thousands of pixels of this view; the point alone, about a hundred.
    assert changed.sum() > 2000, changed.sum()
