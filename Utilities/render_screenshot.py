#!/usr/bin/env python3
"""Render the extension's screenshot: a FastSAM3D segment over a CT in Slicer's own slice views.

Nothing here is drawn by hand: the scan is resliced and windowed by ``vtkMRMLSliceLogic``, the
segment (fill and outline) is drawn by ``vtkMRMLSegmentationsDisplayableManager2D``, the clicks
by ``vtkMRMLMarkupsDisplayableManager`` and the scale bar by ``vtkMRMLRulerDisplayableManager``,
each view in its own offscreen ``vtkRenderWindow`` (EGL or OSMesa software rendering, no display
needed), as in Slicer's slice views. The segment is made by the module's headless logic from
clicks in its positive points node, as a user makes it, with the ground truth as the model
(``OraclePredictor``) so that no weights are needed.

Usage::

    python Utilities/render_screenshot.py [-o Resources/Screenshot01.png] [--layout row]

Needs the ``slicer-core`` wheel (``pip install '.[test]'``) and the TotalSegmentator example
scan in ``../shared/data/totalseg_ct``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from scipy import ndimage
from vtk.util import numpy_support

from fastsam3d_core import Volume
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import OraclePredictor
from fastsam3d_mrml.events import ErrorCollector

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "totalseg_ct"
CT_PATH = DATA / "example_ct_3mm.nii.gz"
LABELS_PATH = DATA / "example_seg_3mm.nii.gz"
OUTPUT = REPO / "Resources" / "Screenshot01.png"
LIVER = 5  # TotalSegmentator's label value for the liver
# Slicer's "CT-Abdomen" window/level preset (Hounsfield units).
SOFT_TISSUE_WINDOW, SOFT_TISSUE_LEVEL = 350.0, 40.0
SIZE = (1280, 564)  # the whole picture, (width, height) in pixels
BAR_HEIGHT = 24  # Slicer's slice controller bar above each view
GAP = 4  # pixels between views, in the colour of Slicer's layout frame
FRAME_RGB = (48, 48, 48)
TIMEOUT_S = 120.0
# Clicks stop when what the segment still misses is thinner than this (a user would stop too).
MIN_MISSING_DEPTH_MM = 6.0
MAX_CLICKS = 6


@dataclass(frozen=True)
class ViewSpec:
    """One of Slicer's standard slice views: its layout name, orientation and colour (RGB 0-1)."""

    name: str
    orientation: str
    color: tuple[float, float, float]


# Slicer's own names and layout colours.
RED = ViewSpec("Red", "Axial", (0.952, 0.290, 0.200))
YELLOW = ViewSpec("Yellow", "Sagittal", (0.929, 0.835, 0.298))
GREEN = ViewSpec("Green", "Coronal", (0.431, 0.690, 0.294))
VIEWS = (RED, YELLOW, GREEN)
# "row": the three views side by side, as in Slicer's Conventional layout. "axial-left": the
# axial view on the left half, sagittal over coronal on the right; it suits scans that are short
# along S (the example covers 90 mm), whose sagittal and coronal slices are wide and flat.
LAYOUTS = ("axial-left", "row")


# -- the scene -------------------------------------------------------------------------------


_PROBE = """
import vtk
window = vtk.vtkRenderWindow()
window.SetOffScreenRendering(1)
window.SetSize(8, 8)
window.Render()
assert window.SupportsOpenGL()
"""


def offscreen_rendering_available(timeout_s: float = 60.0) -> bool:
    """True if VTK can render offscreen here (EGL, OSMesa or a display).

    Probed in a child process: without any OpenGL, VTK may abort the process instead of
    raising.
    """
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@dataclass
class CoreApplication:
    """What the Slicer application sets up for its scene before any view exists.

    The colour tables (the volume's grey scale), the slice orientation presets, and the markups
    logic that the markups displayable manager asks for its widgets. The application logic
    holds its module logics by weak pointer: this object keeps them alive.
    """

    scene: slicer.vtkMRMLScene
    logic: slicer.vtkSlicerApplicationLogic
    markups_logic: slicer.vtkSlicerMarkupsLogic

    @classmethod
    def create(cls, scene: slicer.vtkMRMLScene) -> CoreApplication:
        logic = slicer.vtkSlicerApplicationLogic()
        logic.SetMRMLScene(scene)
        colors = logic.GetColorLogic()
        colors.SetMRMLScene(scene)
        if scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is None:
            colors.AddDefaultColorNodes()
        logic.SetSliceLogics(vtk.vtkCollection())
        logic.SetViewLogics(vtk.vtkCollection())
        markups = slicer.vtkSlicerMarkupsLogic()
        markups.SetMRMLScene(scene)
        markups.SetMRMLApplicationLogic(logic)
        logic.SetModuleLogic("Markups", markups)
        # Patient right on the screen's left: Slicer's default (radiological) convention.
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
        return cls(scene, logic, markups)


def read_ct(scene: slicer.vtkMRMLScene, path: Path = CT_PATH) -> slicer.vtkMRMLScalarVolumeNode:
    """A CT read by Slicer's own reader, shown in grey with a soft-tissue window."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise OSError(f"MRML could not read {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    display.AutoWindowLevelOff()
    display.SetWindowLevel(SOFT_TISSUE_WINDOW, SOFT_TISSUE_LEVEL)
    node.SetAndObserveDisplayNodeID(display.GetID())
    return node


def depth_mm(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` (bool, (i, j, k)) to the nearest voxel outside;
    outside the array counts as outside, so that clicks stay off the scan's edges."""
    padded = np.pad(mask, 1)
    return ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]


def next_click(
    missing: np.ndarray, spacing: np.ndarray, through: np.ndarray | None
) -> np.ndarray | None:
    """Where a user clicks next: deep inside what the segment misses; None when nothing thick
    is missed.

    Args:
        missing: bool (i, j, k), the structure's voxels the segment lacks (all of it at first).
        spacing: (3,) voxel size in mm along i, j, k.
        through: (3,) voxel index of the first click, or None; voxels on the axis-aligned planes
            through it (the slices the views show) are preferred, so that the views show the
            click.

    Returns:
        (3,) voxel index (i, j, k), or None.
    """
    depth = depth_mm(missing, spacing)
    if depth.max() < MIN_MISSING_DEPTH_MM:
        return None
    if through is not None:
        grid = np.indices(depth.shape)
        on_planes = np.any([grid[axis] == through[axis] for axis in range(3)], axis=0)
        preferred = np.where(on_planes, depth, 0.0)
        if preferred.max() >= MIN_MISSING_DEPTH_MM:
            depth = preferred
    return np.array(np.unravel_index(np.argmax(depth), depth.shape))


def segment_mask(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """The segment on the volume's voxels, by Slicer's own labelmap export: bool (i, j, k)."""
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        export = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode
        if not export(segmentation_node, ids, labelmap, volume_node):
            raise RuntimeError(f"could not export segment {segment_id}")
        # arrayFromVolume is (k, j, i).
        return slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0) != 0
    finally:
        scene.RemoveNode(labelmap)


@dataclass
class Segmented:
    """What the module's logic left in the scene."""

    segmentation_node: slicer.vtkMRMLSegmentationNode
    segment_id: str
    markups_nodes: list  # the positive and the negative points nodes
    clicks_ras: np.ndarray  # (n, 3) RAS millimetres, in click order


def module_logic_class() -> type:
    """The engine's ``InteractiveSegmentationLogic`` (the Slicer module's and the page's)."""
    from fastsam3d_mrml.logic import InteractiveSegmentationLogic

    return InteractiveSegmentationLogic


def segment_with_module_logic(
    scene: slicer.vtkMRMLScene,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    labels: Volume,
    value: int,
) -> Segmented:
    """Segment one structure with the module's logic, clicking as a user does.

    Each click goes into the logic's positive points node; the next one goes where the segment
    still misses the structure (a click outside the current 128³ crop opens a new crop), until
    nothing thick is missed. ``labels`` (on the volume's voxels) is also the model.
    """
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    node_affine = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    same_shape = tuple(volume_node.GetImageData().GetDimensions()) == labels.shape
    if not (same_shape and np.allclose(node_affine, labels.ijk_to_ras, atol=1e-3)):
        raise ValueError("the labels must be on the volume's voxels")  # compared voxel by voxel
    truth = labels.array == value
    spacing = np.linalg.norm(labels.ijk_to_ras[:3, :3], axis=0)
    observer = ErrorCollector()
    logic = module_logic_class()(scene, observer=observer)
    errors = observer.errors

    def settle() -> None:
        if not logic.waitForIdle(TIMEOUT_S):
            raise TimeoutError(f"the module's logic did not finish in {TIMEOUT_S:.0f} s")
        if errors:
            raise RuntimeError(f"the module's logic failed: {errors[0]}") from errors[0]

    try:
        logic.setPredictor(OraclePredictor(labels, value))
        logic.setInputs(volume_node)
        settle()
        clicks: list[np.ndarray] = []
        missing = truth
        while len(clicks) < MAX_CLICKS:
            index = next_click(missing, spacing, clicks[0] if clicks else None)
            if index is None:
                break
            clicks.append(index)
            ras = labels.index_to_ras(index)
            logic.positiveNode.AddControlPointWorld(vtk.vtkVector3d(*map(float, ras)), "")
            logic.synchronizePoints()  # what the module's widget does when a point is placed
            settle()
            mask = segment_mask(logic.segmentationNode, logic.currentSegmentId, volume_node)
            missing = truth & ~mask
        if not clicks:
            raise ValueError(f"label {value} has no voxel {MIN_MISSING_DEPTH_MM} mm deep")
        return Segmented(
            logic.segmentationNode,
            logic.currentSegmentId,
            [logic.positiveNode, logic.negativeNode],
            np.array([labels.index_to_ras(index) for index in clicks]),
        )
    finally:
        logic.cleanup()


@dataclass
class DemoScene:
    """The screenshot's scene: a CT, one segment made by the module, and its clicks."""

    application: CoreApplication
    volume_node: slicer.vtkMRMLScalarVolumeNode
    segmented: Segmented

    @property
    def scene(self) -> slicer.vtkMRMLScene:
        return self.application.scene


def build_demo_scene(
    ct_path: Path = CT_PATH,
    labels_path: Path = LABELS_PATH,
    value: int = LIVER,
    segment_name: str = "liver",
) -> DemoScene:
    """A scene as Slicer holds it after a user segmented one structure with the module."""
    application = CoreApplication.create(slicer.vtkMRMLScene())
    volume_node = read_ct(application.scene, ct_path)
    segmented = segment_with_module_logic(
        application.scene, volume_node, read_volume(labels_path), value
    )
    segmentation = segmented.segmentation_node.GetSegmentation()
    segmentation.GetSegment(segmented.segment_id).SetName(segment_name)
    return DemoScene(application, volume_node, segmented)


# -- the slice views -------------------------------------------------------------------------


# The slice view displayable managers that draw what the screenshot shows (Slicer registers
# more, e.g. for models and transforms, that would draw nothing here).
SLICE_DISPLAYABLE_MANAGERS = (
    "vtkMRMLSegmentationsDisplayableManager2D",
    "vtkMRMLMarkupsDisplayableManager",
    "vtkMRMLRulerDisplayableManager",
)


class SliceView:
    """One slice view, as ``qMRMLSliceView`` builds it, rendering offscreen.

    Layer 0 holds the resliced, windowed scan (the slice logic's RGBA image, drawn as a 2-D
    actor, as CTK's light box renderer manager does in Slicer) and what the displayable managers
    draw on top; layer 1 is the overlay renderer that widgets may use.
    """

    def __init__(self, application: CoreApplication, spec: ViewSpec, size: tuple[int, int]):
        self.application, self.spec, self.size = application, spec, size
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(*size)
        self.window.SetNumberOfLayers(2)
        self.window.SetMultiSamples(0)
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.renderer.SetBackground(0.0, 0.0, 0.0)
        overlay = vtk.vtkRenderer()
        overlay.SetLayer(1)
        overlay.InteractiveOff()
        overlay.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        self.window.AddRenderer(overlay)
        # Widgets (the markups) need an interactor, even if nobody interacts.
        self.interactor = vtk.vtkGenericRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)

        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(application.logic)
        self.logic.SetMRMLScene(application.scene)
        application.logic.GetSliceLogics().AddItem(self.logic)
        # Slice nodes are singletons, one per layout name: a later view takes over the node.
        existing = application.scene.GetSingletonNode(spec.name, "vtkMRMLSliceNode")
        if existing is None:
            self.node = self.logic.AddSliceNode(spec.name)
        else:
            self.logic.SetSliceNode(existing)
            self.node = existing
        self.node.SetOrientation(spec.orientation)
        self.node.SetLayoutColor(*spec.color)
        self.node.SetRulerType(slicer.vtkMRMLAbstractViewNode.RulerTypeThin)
        self.node.SetRulerColor(slicer.vtkMRMLAbstractViewNode.RulerColorWhite)

        self.image_mapper = vtk.vtkImageMapper()
        # The slice logic already applied window/level: its RGBA bytes go through unchanged.
        self.image_mapper.SetColorWindow(255.0)
        self.image_mapper.SetColorLevel(127.5)
        self.image_actor = vtk.vtkActor2D()
        self.image_actor.SetMapper(self.image_mapper)
        self.image_actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.image_actor)

        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(application.logic)
        for name in SLICE_DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)
        self.managers.SetMRMLDisplayableNode(self.node)

    def show(self, volume_node: slicer.vtkMRMLVolumeNode, focus_ras: Sequence[float]) -> None:
        """Show ``volume_node`` fitted to the view, on the slice through ``focus_ras``."""
        self.logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume_node.GetID())
        self.logic.ResizeSliceNode(*self.size)
        self.logic.FitSliceToBackground()
        # Only the slice moves ("offset" jump): the volume stays centred in the view.
        self.node.JumpSliceByOffsetting(*map(float, focus_ras))
        self.logic.UpdateImageData()
        self.image_mapper.SetInputConnection(self.logic.GetImageDataConnection())

    def render(self) -> np.ndarray:
        """The view as it is now: uint8 (height, width, 3) RGB, rows from the top."""
        self.managers.RequestRender()
        self.window.Render()
        return grab(self.window)

    def xy_to_ras(self) -> np.ndarray:
        """4×4: (x, y, 0, 1) → RAS, x pixels from the left, y pixels from the bottom."""
        matrix = self.node.GetXYToRAS()
        return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])

    def close(self) -> None:
        self.managers.SetMRMLDisplayableNode(None)
        self.application.logic.GetSliceLogics().RemoveItem(self.logic)
        self.window.Finalize()


def grab(window: vtk.vtkRenderWindow) -> np.ndarray:
    """The window's pixels: uint8 (height, width, 3) RGB, rows from the top."""
    capture = vtk.vtkWindowToImageFilter()
    capture.SetInput(window)
    capture.SetInputBufferTypeToRGB()
    capture.ReadFrontBufferOff()
    capture.Update()
    image = capture.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return pixels.reshape(height, width, 3)[::-1].copy()  # VTK's rows run bottom-up


def controller_bar(spec: ViewSpec, position_text: str, width: int) -> np.ndarray:
    """Slicer's slice controller bar: the view's colour, its letter and the slice position.

    Returns:
        uint8 (BAR_HEIGHT, width, 3) RGB.
    """
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, BAR_HEIGHT)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(*spec.color)
    window.AddRenderer(renderer)
    for text, x, justify in (
        (f"{spec.name[0]}   {spec.orientation}", 8, "Left"),
        (position_text, width - 8, "Right"),
    ):
        actor = vtk.vtkTextActor()
        actor.SetInput(text)
        prop = actor.GetTextProperty()
        prop.SetFontSize(14)
        prop.SetColor(0.1, 0.1, 0.1)
        prop.SetVerticalJustificationToCentered()
        getattr(prop, f"SetJustificationTo{justify}")()
        actor.SetPosition(x, BAR_HEIGHT / 2)
        renderer.AddViewProp(actor)
    window.Render()
    pixels = grab(window)
    window.Finalize()
    return pixels


def slice_position_label(node: slicer.vtkMRMLSliceNode) -> str:
    """Where the slice is, anatomically, e.g. "R 95.0 mm" for a sagittal slice at x = 95."""
    slice_to_ras = node.GetSliceToRAS()
    normal = [slice_to_ras.GetElement(row, 2) for row in range(3)]
    axis = int(np.argmax(np.abs(normal)))
    position = slice_to_ras.GetElement(axis, 3)
    direction = ("RL", "AP", "SI")[axis][0 if position >= 0 else 1]
    return f"{direction} {abs(position):.1f} mm"


@dataclass
class RenderedView:
    """One rendered slice view, without its bar."""

    spec: ViewSpec
    image: np.ndarray  # uint8 (height, width, 3) RGB, rows from the top
    xy_to_ras: np.ndarray  # 4×4: (x, y, 0, 1) → RAS, x from the left, y from the bottom
    position_text: str  # e.g. "S 148.3 mm"


def render_views(
    application: CoreApplication,
    volume_node: slicer.vtkMRMLVolumeNode,
    focus_ras: Sequence[float],
    sizes: Sequence[tuple[int, int]],
) -> list[RenderedView]:
    """Render the views of ``VIEWS``, ``sizes[n]`` = (width, height) for the n-th, each on the
    slice through ``focus_ras``, with whatever the scene's display nodes show."""
    rendered = []
    for spec, size in zip(VIEWS, sizes):
        view = SliceView(application, spec, size)
        try:
            view.show(volume_node, focus_ras)
            image = view.render()
            rendered.append(
                RenderedView(spec, image, view.xy_to_ras(), slice_position_label(view.node))
            )
        finally:
            view.close()
    return rendered


def layout_boxes(layout: str, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Where each view of ``VIEWS`` goes, bar included: (x, y, width, height) from the top left.

    Args:
        layout: one of ``LAYOUTS``.
        size: (width, height) of the whole picture.
    """
    width, height = size
    if layout == "row":
        column = (width - 2 * GAP) // 3
        xs = [0, column + GAP, 2 * (column + GAP)]
        return [(x, 0, column, height) for x in xs[:2]] + [(xs[2], 0, width - xs[2], height)]
    if layout == "axial-left":
        left = (width - GAP + 1) // 2
        right, top = width - left - GAP, (height - GAP) // 2
        return [
            (0, 0, left, height),
            (left + GAP, 0, right, top),
            (left + GAP, top + GAP, right, height - top - GAP),
        ]
    raise ValueError(f"unknown layout {layout!r}: use one of {LAYOUTS}")


def render_slice_views(
    scene: slicer.vtkMRMLScene,
    volume_node: slicer.vtkMRMLVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    markups_nodes: Sequence,
    size: tuple[int, int] = SIZE,
    focus_ras: Sequence[float] | None = None,
    application: CoreApplication | None = None,
    layout: str = "axial-left",
) -> np.ndarray:
    """The Red (axial), Yellow (sagittal) and Green (coronal) views, each under its bar.

    Args:
        scene: the scene holding the nodes.
        volume_node: the background volume (with a display node).
        segmentation_node: drawn by the segmentations displayable manager as its display node
            says (visibility, fill, outline).
        markups_nodes: drawn by the markups displayable manager; the first control point of the
            first of them is the default ``focus_ras``.
        size: (width, height) of the whole picture in pixels.
        focus_ras: RAS millimetres that every view's slice passes through.
        application: the scene's application logics; new ones if None.
        layout: one of ``LAYOUTS``.

    Returns:
        uint8 (size[1], size[0], 3) RGB, rows from the top.
    """
    if segmentation_node.GetDisplayNode() is None:
        raise ValueError(f"{segmentation_node.GetName()} has no display node to render")
    if focus_ras is None:
        focus_ras = markups_nodes[0].GetNthControlPointPositionWorld(0)
    if application is None:
        application = CoreApplication.create(scene)
    boxes = layout_boxes(layout, size)
    sizes = [(w, h - BAR_HEIGHT) for _, _, w, h in boxes]
    picture = np.empty((size[1], size[0], 3), np.uint8)
    picture[:] = FRAME_RGB
    for (x, y, w, h), view in zip(boxes, render_views(application, volume_node, focus_ras, sizes)):
        picture[y : y + BAR_HEIGHT, x : x + w] = controller_bar(view.spec, view.position_text, w)
        picture[y + BAR_HEIGHT : y + h, x : x + w] = view.image
    return picture


def write_png(image: np.ndarray, path: Path) -> None:
    """Write uint8 (height, width, 3) RGB, rows from the top, as a PNG with VTK."""
    height, width, _ = image.shape
    data = vtk.vtkImageData()
    data.SetDimensions(width, height, 1)
    rows_bottom_up = np.ascontiguousarray(image[::-1]).reshape(-1, 3)
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(rows_bottom_up))
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(data)
    writer.Write()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help="PNG to write")
    parser.add_argument("--size", type=int, nargs=2, default=SIZE, metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--layout", choices=LAYOUTS, default=LAYOUTS[0])
    args = parser.parse_args(argv)
    if not offscreen_rendering_available():
        parser.error("VTK cannot render offscreen here (no EGL, OSMesa or display)")
    # VTK warns when it falls back from X to EGL or OSMesa; only errors matter here.
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_ERROR)
    demo = build_demo_scene()
    image = render_slice_views(
        demo.scene,
        demo.volume_node,
        demo.segmented.segmentation_node,
        demo.segmented.markups_nodes,
        size=tuple(args.size),
        application=demo.application,
        layout=args.layout,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_png(image, args.output)
    print(f"wrote {args.output}: {image.shape[1]}×{image.shape[0]}, layout {args.layout}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
