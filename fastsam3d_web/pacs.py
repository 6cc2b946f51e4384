"""The page's PACS side: a series opened from a DICOMweb server, and its DICOM SEG downloaded or
stored back there.

With ``fastsam3d web --dicomweb URL`` a dialog lists the server's image series (QIDO-RS: patient,
study date and description, series description, modality, images), filtered by patient ID and
study date; a series clicked is downloaded (WADO-RS) into the session's folder, checked as a
DICOM folder is (a gap or mixed orientations refused in one line) and opened; an IMAGE that is a
series URL opens the same way. **Download DICOM SEG** writes the segmentation as a SEG of the
current image when it came from DICOM (a server, a folder, uploaded files); **Save to PACS** stores
that SEG (STOW-RS) on the server its series came from.

Requests run on a thread of their own, so the page keeps answering; their results are applied
on the server's event loop, which owns the scene; one at a time, which the server keeps (the
browser's ``pacs_busy`` only mirrors it). A SEG is built on a thread too: only reading the
scene happens on the loop. A series is held to the size an upload may have
(:mod:`.series_size`); one the page refuses is said in one line naming the server and the
series. The credentials stay in this process: no state the browser receives and no message
holds them, and the browser can open only the series the page listed (a URL from the browser
never makes the server fetch with them elsewhere).
"""

from __future__ import annotations

import asyncio
import functools
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from trame.widgets import html
from trame_vuetify.widgets import vuetify3 as v3

from .dicom_files import ImageSource, image_files, reworded
from .image_reading import ReadImage, read_upload
from .series_size import SeriesBudget

# The DICOM SEG download's file name.
SEG_FILE = "segmentation.dcm"
# The most series one search lists, and how long a request may go unanswered.
SEARCH_LIMIT = 100
REQUEST_TIMEOUT_S = 60
# The series list's columns: (heading, SeriesSummary field).
SERIES_COLUMNS = (
    ("Patient ID", "patient_id"),
    ("Name", "patient_name"),
    ("Study date", "study_date"),
    ("Study", "study_description"),
    ("Series", "series_description"),
    ("Modality", "modality"),
    ("Images", "instances"),
)


@dataclass(frozen=True)
class DicomwebAccess:
    """How the page reaches DICOMweb.

    Attributes:
        base: the server whose series the page lists (``--dicomweb``); None: no list.
        auth: the core's ``DicomwebAuth`` for it, and for a series URL given as IMAGE.
    """

    base: str | None = None
    auth: Any = None


class PacsPanel:
    """The series dialog and the DICOM SEG buttons of one page (``page``: the
    :class:`~fastsam3d_web.app.SegmentationPage`, whose ``source`` is the current image's
    :class:`~fastsam3d_web.dicom_files.ImageSource`)."""

    def __init__(self, page: Any, access: DicomwebAccess | None) -> None:
        self.page, self.state = page, page.state
        self.access = access or DicomwebAccess()
        self._listed: dict[str, Any] = {}  # url -> SeriesSummary, as last listed
        # One request at a time, kept here: the browser may write any state key it likes.
        self.busy = False
        self.task: asyncio.Task | None = None  # the request running on a thread, if any
        state = self.state
        state.pacs_server = self.access.base or ""
        state.pacs_dialog = False
        state.pacs_series = []
        state.pacs_found = ""
        state.pacs_busy = False
        self.show_source(ImageSource())

    # -- actions -------------------------------------------------------------------------

    def search(self, patient_id: str | None = None, study_date: str | None = None) -> None:
        """List the server's image series of this patient ID and study date (either may be
        empty: any)."""
        from fastsam3d_core.io.dicomweb import search_series

        base, auth = self.access.base, self.access.auth
        if base is None:
            raise ValueError("no DICOMweb server to search: start the page with --dicomweb URL")
        patient_id, study_date = (patient_id or "").strip(), (study_date or "").strip()
        self._in_background(
            "Searching the PACS...",
            lambda: search_series(
                base, auth, patient_id or None, study_date or None, SEARCH_LIMIT, REQUEST_TIMEOUT_S
            ),
            self._list,
        )

    def open_series(self, url: str) -> None:
        """Open a series of the list (its URL, as listed)."""
        if url not in self._listed:  # the browser names it: only what the page offered
            raise ValueError("that series is not in the list: search again, then pick one")
        self.open_url(url)

    def open_url(self, url: str) -> None:
        """Download the series at ``url`` (a DICOMweb series URL) and open it."""
        from fastsam3d_core.io.dicomweb import SeriesURL

        series_url = SeriesURL.parse(url)
        shown = f"DICOMweb server {series_url.base}, series {series_url.series_uid}"
        self._refuse_if_busy()
        folder = Path(tempfile.mkdtemp(prefix="dicomweb-", dir=self.page.work_folder))
        files = folder / "series"
        source = ImageSource(folder=folder, server=series_url.base, shown=shown)

        def opened(downloaded: tuple[list[Path], ReadImage]) -> None:
            self.page.open_read(*downloaded, source, files)
            if source.series is None:  # no SEG to make of it: the scene holds the image
                source.discard()
            self.state.pacs_dialog = False

        say = self._reporter("Downloading the series")  # made here: it needs the loop
        download = functools.partial(self._download, series_url, files, shown, say)
        self._in_background("Downloading the series...", download, opened, folder)

    def _download(
        self, series_url: Any, files: Path, shown: str, say: Callable[[int, int], None]
    ) -> tuple[list[Path], ReadImage]:
        """On the request's thread: the series, no larger than the page opens, into ``files``
        (``say`` hears the progress); its image files, checked as any DICOM folder is (a
        refusal names the series), and the image read from them there too (the event loop
        only makes the node of it)."""
        from fastsam3d_core.io.dicomweb import download_series, open_client
        from fastsam3d_core.io.errors import VolumeReadError

        auth, budget = self.access.auth, SeriesBudget(shown)
        client = open_client(series_url.base, auth, REQUEST_TIMEOUT_S)
        budget.check_announced(client, series_url.study_uid, series_url.series_uid)

        def progress(done: int, total: int) -> None:
            budget.check_arrived(files)
            say(done, total)

        download_series(series_url, files, auth, REQUEST_TIMEOUT_S, progress)
        try:
            paths = [Path(name) for name in image_files(files)]
        except VolumeReadError as error:
            raise ValueError(reworded(error, files, shown)) from error
        return paths, read_upload(paths, files, shown)

    async def seg_bytes(self, inputs: Any = None) -> bytes:
        """The segmentation as a DICOM SEG file's bytes: the scene read here (or ``inputs``,
        the engine's ``SegInputs`` read already), the SEG built on a thread."""
        inputs = inputs or self.page.logic.dicomSegInputs()

        def encoded() -> bytes:
            buffer = io.BytesIO()
            inputs.dataset().save_as(buffer)
            return buffer.getvalue()

        return await asyncio.get_running_loop().run_in_executor(None, encoded)

    async def download_seg(self) -> Any:
        """The segmentation as a DICOM SEG file, a download attachment; None on failure."""
        inputs = self.page.guarded(self.page.logic.dicomSegInputs)  # the scene, read here
        if inputs is None:
            return None
        try:
            seg = await self.seg_bytes(inputs)
        except Exception as error:
            self.page.show_error(error)
            return None
        return self.page.server.protocol.addAttachment(seg)

    def save(self) -> None:
        """Store the SEG (STOW-RS) on the server the current series came from."""
        from fastsam3d_core.io.dicomweb import store_dataset

        server, auth = self.page.source.server, self.access.auth
        if server is None:
            raise ValueError(
                "this image did not come from a DICOMweb server: Save to PACS stores the SEG "
                "where its series is; use Download DICOM SEG instead"
            )
        self._refuse_if_busy()
        inputs = self.page.logic.dicomSegInputs()  # here: it reads the scene

        def built_and_stored() -> Any:
            dataset = inputs.dataset()
            store_dataset(server, dataset, auth, REQUEST_TIMEOUT_S)
            return dataset

        def stored(dataset: Any) -> None:
            self.state.status = f"Saved to PACS ({server}): {dataset.SeriesDescription}"

        self._in_background("Saving to PACS...", built_and_stored, stored)

    def show_source(self, source: ImageSource) -> None:
        """The buttons follow the current image: a SEG for a DICOM one, PACS for a server's."""
        self.state.dicom_source = source.series is not None
        self.state.pacs_target = source.server if source.series is not None else ""

    # -- helpers -------------------------------------------------------------------------

    def _list(self, found: list) -> None:
        self._listed = {summary.url: summary for summary in found}
        self.state.pacs_series = [
            {**{field: getattr(summary, field) for _, field in SERIES_COLUMNS}, "url": summary.url}
            for summary in found
        ]
        more = f" (the first {SEARCH_LIMIT})" if len(found) >= SEARCH_LIMIT else ""
        self.state.pacs_found = f"{len(found)} series{more}"
        self._status_back()

    def _status_back(self) -> None:
        """The status line the engine last gave, or what to do first without an image."""
        has_image = self.page.volume is not None
        self.state.status = self.page.logic.status if has_image else "Open a series"

    def _in_background(
        self,
        doing: str,
        work: Callable[[], Any],
        done: Callable[[Any], None],
        scratch: Path | None = None,
    ) -> None:
        """``work()`` on a thread, then ``done(result)`` here (on the event loop): at once when
        no loop runs (in-process tests). One at a time; an error is shown on the page and
        ``scratch`` (a folder) removed."""
        try:
            self._refuse_if_busy()
        except RuntimeError:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise
        self.state.status, self.state.error = doing, ""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._finish(work, done, scratch)
            return
        self._set_busy(True)
        self.task = loop.create_task(self._finish_later(loop, work, done, scratch))

    def _refuse_if_busy(self) -> None:
        if self.busy:
            raise RuntimeError("the PACS is still busy with the last request: wait for it")

    def _set_busy(self, busy: bool) -> None:
        self.busy = self.state.pacs_busy = busy  # the state only shows it

    async def _finish_later(self, loop, work, done, scratch) -> None:
        try:
            result = await loop.run_in_executor(None, work)
            with self.state:
                self._set_busy(False)
                self._finish(lambda: result, done, scratch)
        except Exception as error:
            with self.state:
                self._set_busy(False)
                self._failed(error, scratch)

    def _finish(self, work, done, scratch) -> None:
        try:
            done(work())
        except Exception as error:
            self._failed(error, scratch)

    def _failed(self, error: BaseException, scratch: Path | None) -> None:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        self._status_back()
        self.page.show_error(error)

    def _reporter(self, doing: str) -> Callable[[int, int], None]:
        """A progress callback for the request's thread: the status line, on the loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return lambda done, total: None

        def say(done: int, total: int) -> None:
            with self.state:
                self.state.status = f"{doing}: {done} of {total} images"

        return lambda done, total: loop.call_soon_threadsafe(say, done, total)

    # -- the page's parts ----------------------------------------------------------------

    def build_buttons(self) -> None:
        """Next to the exports: the SEG's download, and its way back to the PACS."""
        download = self.page.server.controller.trigger_name(self.download_seg)
        v3.VBtn(
            "Download DICOM SEG",
            id="export-dicom-seg",
            variant="text",
            disabled=("!dicom_source",),
            title="The segmentation as a DICOM SEG of the series (for an image from DICOM)",
            click=f"utils.download('{SEG_FILE}', trigger('{download}'), 'application/dicom')",
        )
        v3.VBtn(
            "Save to PACS",
            id="save-to-pacs",
            variant="text",
            disabled=("!pacs_target || pacs_busy",),
            title=(
                "pacs_target ? 'Store the SEG on ' + pacs_target : "
                "'For a series opened from a DICOMweb server'",
            ),  # fmt: skip
            click=lambda: self.page.guarded(self.save),
        )
        v3.VBtn(
            "Open from PACS",
            id="open-pacs",
            variant="text",
            v_show=("pacs_server",),
            click="pacs_dialog = true",
        )

    def build_dialog(self) -> None:
        """The series dialog: the filters, the search button, and the series to click."""
        search = self.page.server.controller.trigger_name(
            lambda patient, date: self.page.guarded(lambda: self.search(patient, date))
        )
        open_series = self.page.server.controller.trigger_name(
            lambda url: self.page.guarded(lambda: self.open_series(url))
        )
        searching = f"trigger('{search}', [pacs_patient_id, pacs_study_date])"
        self.state.pacs_patient_id = self.state.pacs_study_date = ""
        with v3.VDialog(v_model=("pacs_dialog",), max_width=1100, scrollable=True):
            with v3.VCard(id="pacs-dialog", title=("'Open a series from ' + pacs_server",)):
                with v3.VCardText():
                    with html.Div(classes="d-flex align-center ga-2 mb-2"):
                        for label, model, element, hint in (
                            ("Patient ID", "pacs_patient_id", "pacs-patient-id", "* and ? match"),
                            ("Study date", "pacs_study_date", "pacs-study-date",
                             "YYYYMMDD, or a range YYYYMMDD-YYYYMMDD"),
                        ):  # fmt: skip
                            v3.VTextField(
                                label=label,
                                v_model=(model,),
                                id=element,
                                hint=hint,
                                density="compact",
                                keyup_enter=searching,
                            )
                        v3.VBtn("Search", id="pacs-search", loading=("pacs_busy",),
                                click=searching)  # fmt: skip
                    html.Div("{{ pacs_found }}", id="pacs-found", classes="text-caption")
                    self._build_series_table(open_series)
                with v3.VCardActions():
                    v3.VSpacer()
                    v3.VBtn("Close", id="pacs-close", click="pacs_dialog = false")

    def _build_series_table(self, open_series: str) -> None:
        with v3.VTable(id="pacs-series", density="compact", hover=True, fixed_header=True):
            with html.Thead():
                with html.Tr():
                    for heading, _ in SERIES_COLUMNS:
                        html.Th(heading)
            with html.Tbody():
                with html.Tr(
                    v_for="series in pacs_series",
                    key="series.url",
                    classes="pacs-series-row",
                    style="cursor: pointer",
                    title="Open this series",
                    click=f"pacs_busy || trigger('{open_series}', [series.url])",
                ):
                    for _, field in SERIES_COLUMNS:
                        html.Td(f"{{{{ series.{field} }}}}")

    def start(self, image_url: str | None) -> None:
        """When the server is ready: open IMAGE's series URL, or list the server's series."""
        if image_url is not None:
            self.page.guarded(lambda: self.open_url(image_url))
        elif self.access.base is not None:
            self.state.pacs_dialog = self.page.volume is None
            self.page.guarded(lambda: self.search())
