"""One browser session: a MRML scene in trame-slicer's views, clicks to segments through the
module's logic.

Clicks in a slice view place control points of the logic's positive (or negative) markups
node, as in Slicer; the logic sends them to its worker thread and writes the segment into the
segmentation node, which the views show. A periodic task on the server's event loop collects the
worker's results (``processEvents``) and pushes the status line to the page.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from trame.app import TrameApp
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories

from fastsam3d_core.io.dicomweb import is_dicomweb_url

from .dicom_files import ImageSource, dicom_series_for, image_files, is_dicom_file
from .drop import FileReceiver
from .events import PageEvents
from .image_reading import ReadImage, read_upload, volume_node
from .pacs import DicomwebAccess, PacsPanel
from .page_ui import EXPORT_FILES, PageWidgets
from .placement import Placement
from .progress import PageProgress
from .rendering import (
    after_first_frame,
    configure_views,
    show_segments_as_surfaces,
    views_made_without_frames,
)
from .segments_panel import SegmentsPanel
from .shortcuts import PageShortcuts
from .text_panel import TextPanel
from .timeline import install_engine_hooks, install_stream_hooks, mark
from .upload_chunks import save_uploads
from .views_panel import ViewsPanel

# How often results are collected while the worker has work, and when idle. The engine wakes
# the poll when a job is queued, not when it ends: a click's result waited up to a nap (30 ms).
POLL_BUSY_S = 0.01
POLL_IDLE_S = 0.2


class SegmentationPage(PageWidgets, TrameApp):
    """The page: three slice views and a 3-D view, the tools' toolbar and the status line.

    Args:
        server: the trame server (one per browser session).
        image: the volume to open (a file, a DICOM folder), a DICOMweb series URL (opened once
            the server is ready), or None: the page starts empty (a series is opened from
            ``dicomweb``'s list, or an image uploaded).
        predictor: what ``InteractiveSegmentationLogic.setPredictor`` takes, or a
            ``(model, device, weights, server, token)`` tuple for ``setModel``.
        focus: RAS mm (3,) on which the slice views are centred; None: the volume's centre.
        idle_minutes: the server stops after this long without use (no click, button or
            scrolling); None: never.
        home: where the user gets a new session (the launcher's address), for that message.
        dicomweb: the DICOMweb server whose series the page lists, and the credentials.

    Attributes:
        source: where the current image came from (its DICOM series, for a SEG).
    """

    def __init__(
        self,
        server: Any,
        image: Path | str | None,
        predictor: Any,
        focus: tuple | None = None,
        idle_minutes: float | None = None,
        home: str | None = None,
        dicomweb: DicomwebAccess | None = None,
        model_after_first_frame: bool = False,
    ) -> None:
        super().__init__(server=server)
        self.idle_minutes = idle_minutes
        self.home = home
        self._used_at = time.monotonic()
        # Imported here: the engine imports slicer, which trame-slicer sets up first.
        from fastsam3d_mrml.logic import InteractiveSegmentationLogic as logic_class

        self.slicer = SlicerApp()
        mark("session: Slicer's application made")
        install_stream_hooks()  # $FASTSAM3D_TIMELINE only (benchmarks/bench_page.py)
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layout = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        with views_made_without_frames():  # their first frames come when the page connects
            self.layout.register_layout_dict(LayoutManager.default_grid_configuration())
            # The axial view first and largest (the others stacked beside it).
            self.layout.set_layout("Axial Primary")
        self.volume, self.source = None, ImageSource()
        self._export_dir = tempfile.TemporaryDirectory(prefix="fastsam3d-web-")
        mark("session: views made")
        self.events = PageEvents(self)
        self.logic = logic_class(self.slicer.scene, observer=self.events)
        install_engine_hooks(self.logic)
        if isinstance(predictor, tuple) and model_after_first_frame:  # the image shows sooner
            after_first_frame(self.server, lambda: self.logic.setModel(*predictor))
        elif isinstance(predictor, tuple):
            self.logic.setModel(*predictor)
        else:
            self.logic.setPredictor(predictor)
        self.state.status = "Loading..."
        self.state.error = ""
        self.state.busy = self.logic.busy
        self.progress = PageProgress(self.state)  # long work shown over the views
        self.receiver = FileReceiver(self)  # uploads, dropped or chosen, off the event loop
        self.state.clicks = 0
        self.state.negatives = 0
        self.state.closing = False
        self.state.points = []
        self._listed_clicks: tuple = ()
        self.state.opacity = 0.5
        self.state.segments = []
        self.state.segment_id = None
        self.state.change("opacity")(self._set_opacity)
        self.state.change("segment_id")(self._select_segment)
        self.placement = Placement(
            self.state,
            self.logic,
            self.slicer.markups_logic,
            self.slicer.view_manager.get_slice_views(),
            used=self._used,
            guarded=self._guarded,
        )
        self.pacs = PacsPanel(self, dicomweb)
        self.segments_panel, self.shortcuts = SegmentsPanel(self), PageShortcuts(self)
        self.views_panel = ViewsPanel(self)
        self.text_panel = TextPanel(self)  # segment by name
        url = str(image) if image is not None and is_dicomweb_url(str(image)) else None
        if image is not None and url is None:
            self._open_image(Path(image))
        if focus is not None:
            self.centre_slices(focus)
        mark("session: image opened")
        self._build_ui()
        for index in range(self.slicer.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            slice_node = self.slicer.scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
            slice_node.AddObserver("ModifiedEvent", self._used)  # scrolling, zooming, panning
        self.server.controller.on_server_ready.add(self._start_polling)
        # A session started before its tab (the launcher's spare) counts its idle time from it.
        self.server.controller.on_client_connected.add(self._used)
        self.server.controller.on_server_ready.add(lambda **_: self.pacs.start(url))

    # -- actions -------------------------------------------------------------------------

    def upload(self, files: list[dict]) -> None:
        """Open an uploaded image in this session (its points and segments start anew)."""
        self._guarded(lambda: self._open_upload(files))

    def delete_point(self, click_id: str) -> None:
        self._guarded(lambda: self.logic.deletePoint(click_id))

    def export(self, name: str) -> Any:
        """The segmentation written as ``name``, one of :data:`EXPORT_FILES` (its suffix picks
        the format), as a download attachment; None on failure (shown)."""

        def written() -> Any:
            # The name comes from the browser: only the page's own names, never a path.
            if name not in EXPORT_FILES.values():
                raise ValueError(f"{name!r}: export as one of {', '.join(EXPORT_FILES.values())}")
            path = Path(self._export_dir.name) / name
            self.logic.exportSegmentation(str(path))
            return self.server.protocol.addAttachment(path.read_bytes())

        return self._guarded(written)

    # -- helpers -------------------------------------------------------------------------

    def _open_upload(self, files: list[dict]) -> None:
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self.work_folder))
        self.open_uploaded(folder, lambda: save_uploads(files, folder))

    def open_uploaded(
        self, folder: Path, saved: Callable[[], list[Path]], read: ReadImage | None = None
    ) -> None:
        """Open the files that ``saved()`` wrote and checked (a zip unpacked) into ``folder``,
        the page's own; the folder goes with the image, or at once if nothing needs it.
        ``read``: the image as :func:`.image_reading.read_upload` read them off the event loop
        (None: read here); what the core's reader refused, the scene's reader opens."""
        source = ImageSource(folder=folder)  # a DICOM series' files stay while it is shown
        try:
            paths = saved()
            image = read_upload(paths, folder) if read is None else read
            self.open_read(paths, image, source, folder)
        except BaseException:
            source.discard()
            raise
        if source.series is None:  # the scene holds the image in memory
            source.discard()

    def open_read(
        self, paths: list[Path], image: ReadImage, source: ImageSource, folder: Path
    ) -> None:
        """Open ``image``, read off the event loop from ``paths`` in ``folder``
        (:func:`.read_upload`), from ``source``: the volume node made of it, or, where the
        core's reader refused the files, the scene's reader on them."""
        if image.volume is not None:
            source.series = image.series
            self._switch_to(volume_node(self.slicer.scene, image), source)
            if image.problem:  # the image opened, without a SEG: said once, on the page
                self.show_error(image.problem)
            return
        self.open_files([str(path) for path in paths], source, folder if image.dicom else None)

    def _open_image(self, image: Path) -> None:
        """IMAGE: a file, or a DICOM series (a folder, or a file of it)."""
        dicom = image.is_dir() or is_dicom_file(image)
        self.open_files(image_files(image), ImageSource(), image if dicom else None)

    def open_files(self, files: list[str], source: ImageSource, dicom_path=None) -> None:
        """Open the image these files make, from ``source``; with ``dicom_path`` (the DICOM
        folder or file they are of), with its DICOM series, for a SEG."""
        try:
            volumes = self.slicer.io_manager.load_volumes(files)
        except Exception:
            volumes = []
        if not volumes or volumes[0] is None:
            names = ", ".join(Path(name).name for name in files[:3])
            names = source.shown or names + (", ..." if len(files) > 3 else "")
            raise ValueError(
                f"{names}: not an image this page can open (NRRD, NIfTI, MHA/MHD, or a DICOM "
                "series' files); the current image stays"
            )
        problem = ""
        if dicom_path is not None:  # the page's own copy is named as the user knows it
            shown = source.shown or ("the uploaded files" if source.folder else None)
            source.series, problem = dicom_series_for(Path(dicom_path), volumes[0], shown)
        self._switch_to(volumes[0], source)
        if problem:  # the image opened, without a SEG: said once, on the page
            self.show_error(problem)

    @property
    def work_folder(self) -> str:
        """The session's own folder: exports, uploads, downloaded series."""
        return self._export_dir.name

    def _switch_to(self, volume: Any, source: ImageSource | None = None) -> None:
        """Segment ``volume`` (from ``source``) from now on, if the logic takes it: else it is
        removed and the current image stays. The previous image, its segmentation and its
        files leave."""
        scene, previous = self.slicer.scene, (self.volume, self.logic.segmentationNode)
        try:
            self.logic.setInputs(volume)
        except Exception:
            scene.RemoveNode(volume)
            raise
        source = source or ImageSource()
        self.logic.setDicomSource(volume, source.series)
        self.source, replaced = source, self.source
        if replaced is not source:
            replaced.discard()
        self.pacs.show_source(source)
        self.volume = volume
        self.slicer.display_manager.show_volume(volume, do_reset_views=True)
        show_segments_as_surfaces(volume, self.logic.segmentationNode)  # no volume rendering
        self.placement.restart()  # a drawing on the previous image is dropped
        for node in previous:
            if node is not None and node is not volume:
                scene.RemoveNode(node)

    def _list_points(self, clicks: tuple) -> None:
        """The point list's items (newest last) and the footer's counts."""
        if clicks == self._listed_clicks:
            return
        self._used()
        self._listed_clicks = clicks
        self.state.clicks = len(clicks)
        self.state.negatives = sum(not click.positive for click in clicks)
        self.state.points = [
            {
                "id": click.click_id,
                "positive": click.positive,
                "ras": "R {:.1f}, A {:.1f}, S {:.1f}".format(*click.point_ras),
            }
            for click in clicks
        ]

    def _select_segment(self, segment_id: str | None, **_: Any) -> None:
        if segment_id and segment_id != self.logic.currentSegmentId:
            self._guarded(lambda: self.logic.selectSegment(segment_id))

    def _set_opacity(self, opacity: float, **_: Any) -> None:
        node = self.logic.segmentationNode
        if node is not None and node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetOpacity(float(opacity))

    def centre_slices(self, ras: tuple) -> None:
        scene = self.slicer.scene
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            scene.GetNthNodeByClass(index, "vtkMRMLSliceNode").JumpSliceByCentering(*ras)

    def _guarded(self, action: Callable[[], Any]) -> Any:
        """``action()``, or None with its error on the page: the session goes on."""
        self._used()
        try:
            self.state.error = ""
            return action()
        except Exception as error:
            self.show_error(error)
            return None

    guarded = _guarded

    def _used(self, *_: Any) -> None:
        self._used_at = time.monotonic()

    def _unused_fraction(self) -> float:
        """How much of the allowed idle time has passed (≥ 1: time to close)."""
        if self.idle_minutes is None or self.logic.busy:
            return 0.0
        return (time.monotonic() - self._used_at) / (60 * self.idle_minutes)

    async def _close(self) -> None:
        """Stop this session's server (the process ends), telling the tab why first."""
        where = f"open {self.home}" if self.home else "start fastsam3d web again"
        with self.state:
            self.state.error = (
                f"This session closed after {self.idle_minutes:g} minutes without use: "
                f"{where} for a new one."
            )
        print(f"fastsam3d web: {self.state.error}", file=sys.stderr)
        await asyncio.sleep(1.0)  # the message reaches the tab before the connection closes
        self.logic.cleanup()
        await self.server.stop()

    def show_error(self, error: Any) -> None:
        """The first line of an error (or a warning's message) on the page and the log."""
        self.state.error = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"fastsam3d web: {self.state.error}", file=sys.stderr)

    def _start_polling(self, **_: Any) -> None:
        # One cheap frame per change; a view's mouse events render only it (rendering.py).
        configure_views(self.slicer.view_manager, busy=lambda: self.logic.busy)
        loop = asyncio.get_event_loop()
        loop.create_task(self._poll(self.events.listen(loop)))

    async def _poll(self, wake: asyncio.Event) -> None:
        while self._unused_fraction() < 1:
            with self.state:
                # The last fifth of the idle time: say so, so that the user can keep it open.
                self.state.closing = self._unused_fraction() > 0.8
                self.logic.processEvents(0)
                self._list_points(self.logic.clicks)
                self.placement.keep_placing()
                self.placement.show_counts()
                self.text_panel.refresh_names()
            try:
                nap = POLL_BUSY_S if self.logic.busy else POLL_IDLE_S
                await asyncio.wait_for(wake.wait(), nap)
            except asyncio.TimeoutError:
                pass
            wake.clear()
        await self._close()
