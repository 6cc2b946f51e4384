"""Images dropped on the views (or chosen in the file chooser): one file (NRRD, NIfTI, MHA), a
DICOM series' files, or a DICOM series as a zip; received without freezing the page.

The browser reads the files and sends them in one message; meanwhile the page says so itself
(the progress line is set in the browser, before the transfer). The server then writes, unpacks
and checks them (:func:`.zip_upload.save_uploads`) on a thread of its own, so that its event
loop keeps answering the page (clicks, other buttons, the views' images); only the reading into
the MRML scene, which owns its nodes on the event loop's thread, runs there.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trame.widgets import html
from trame_vuetify.widgets import vuetify3 as v3

from .zip_upload import save_uploads

# The line the drop hint shows over the views while files are dragged there.
DROP_HINT = (
    "Drop an image to open it: NRRD, NIfTI, MHA, a DICOM series' files, or a .zip of a DICOM series"
)
# Given to the server's event loop between steps, so that it sends the progress line first.
YIELD_S = 0.05


class FileReceiver:
    """Receives the page's uploads (the file chooser's and drops on the views) and shows their
    progress; ``page`` is the :class:`~fastsam3d_web.app.SegmentationPage` (its state, its
    ``progress``, ``open_uploaded``, ``guarded``, ``work_folder``)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.receiving = False  # one upload at a time: a second waits for none, it is refused
        page.state.drop_hint = False
        page.state.sending = ""  # the browser's line while it sends; the server never sets it
        self.trigger = page.server.controller.trigger_name(self.receive)

    # -- in the browser --------------------------------------------------------------------

    def send_js(self, files: str) -> str:
        """The browser's handler that sends the FileList ``files`` (a JS expression), saying so
        in the progress line (``sending``, the browser's own) while it reads and sends them."""
        return (
            f"sending = 'Sending ' + ({files}.length === 1 ? {files}[0].name : {files}.length + "
            f"' files') + ' (' + (Array.from({files}).reduce((n, f) => n + f.size, 0) / 1e6)"
            ".toFixed(1) + ' MB) to the server...'; "
            f"trigger('{self.trigger}', [{files}]).finally(() => {{ sending = ''; }})"
        )

    def view_events(self) -> list[str]:
        """The views' container's handlers: the drop hint while files are dragged over it, and
        the drop (the browser's own handling, opening the file in the tab, prevented)."""
        dragging = "drop_hint = $event.dataTransfer.types.includes('Files')"
        return [
            f'@dragenter.prevent="{dragging}"',
            f'@dragover.prevent="{dragging}"',
            '@dragleave="drop_hint = drop_hint && '
            '$event.currentTarget.contains($event.relatedTarget)"',
            '@drop.prevent="drop_hint = false; if ($event.dataTransfer.files.length) { '
            f'{self.send_js("$event.dataTransfer.files")} }}"',
        ]

    def build_overlays(self) -> None:
        """Over the views: the drop hint, and the progress strip (line and bar)."""
        with html.Div(
            id="drop-hint",
            v_show=("drop_hint",),
            style="position: absolute; inset: 0; z-index: 20; pointer-events: none; "
            "display: flex; align-items: center; justify-content: center; "
            "border: 4px dashed #42a5f5; background: rgba(33, 150, 243, 0.25);",
        ):
            html.Span(
                DROP_HINT,
                style="background: rgba(0, 0, 0, 0.7); color: white; padding: 0.5em 1em; "
                "border-radius: 4px; font-size: 1.1em;",
            )
        with html.Div(
            id="work",
            v_show=("work || sending",),
            style="position: absolute; top: 0; left: 0; right: 0; z-index: 10; "
            "pointer-events: none; background: rgba(0, 0, 0, 0.65); color: white;",
        ):
            v3.VProgressLinear(
                id="work-bar",
                indeterminate=("!work || work_fraction === null",),
                model_value=("100 * (work_fraction || 0)",),
                color="light-blue",
                height=4,
            )
            html.Span(
                "{{ work || sending }}", id="work-text", style="padding: 0 0.5em; font-size: 0.9em;"
            )

    # -- on the server ---------------------------------------------------------------------

    async def receive(self, files: list[dict]) -> None:
        """Open the files the browser sent: written, unpacked and checked off the event loop,
        then read into the scene; a refusal is said in one line and the current image stays."""
        page, progress = self.page, self.page.progress
        if self.receiving:
            page.show_error("another upload is still being opened; drop this one once it is open")
            return
        self.receiving = True
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=page.work_folder))
        try:
            page.guarded(lambda: None)  # marks the session used and clears the last error
            paths = await self._saved(files, folder)
            if paths is not None:
                names = paths[0].name if len(paths) == 1 else f"{len(paths)} files"
                progress.show(f"Opening {names}...")
                await self._yield()
                page.guarded(lambda: page.open_uploaded(folder, lambda: paths))
        finally:
            self.receiving = False
            progress.done()
            page.state.flush()

    async def _saved(self, files: list[dict], folder: Path) -> list[Path] | None:
        """The files written and checked in ``folder`` on a worker thread; None (the error
        shown, the folder removed) when they are refused."""
        page, loop = self.page, asyncio.get_running_loop()

        def shown(line: str) -> None:
            page.progress.show(line)
            page.state.flush()  # now: the next step may follow soon

        def report(line: str) -> None:  # from the worker thread: the loop sets the state
            loop.call_soon_threadsafe(shown, line)

        page.progress.show("Receiving the files...")
        await self._yield()
        try:
            return await loop.run_in_executor(None, save_uploads, files, folder, report)
        except Exception as error:
            shutil.rmtree(folder, ignore_errors=True)
            page.show_error(error)
            return None

    async def _yield(self) -> None:
        """Send the state now and let the loop write it before the next step."""
        self.page.state.flush()
        await asyncio.sleep(YIELD_S)
