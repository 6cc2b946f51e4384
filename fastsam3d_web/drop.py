"""Images dropped on the views (or chosen in the file chooser): one file (NRRD, NIfTI, MHA), a
DICOM series' files, or a DICOM series as a zip; received without freezing the page.

The browser sends the files in slices of a megabyte (:mod:`.upload_chunks`: trame sends a file
in one message and says nothing of its progress), and after each slice shows in the progress
line how much has gone (``sending``, the browser's own line, and ``sending_fraction``, the
bar). The server writes the slices, then unpacks and checks the files
(:func:`.zip_upload.unpacked_and_checked`) and reads the image (:func:`.image_reading.read_upload`)
on a thread of its own, so that its event loop keeps answering the page (clicks, other buttons,
the views' images); only putting the image into the MRML scene, which owns its nodes on the
event loop's thread, runs there.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from trame.widgets import html
from trame_vuetify.widgets import vuetify3 as v3

from .image_reading import read_upload
from .upload_chunks import CHUNK_BYTES, ChunkedUpload
from .zip_upload import Reporter, unpacked_and_checked

# The line the drop hint shows over the views while files are dragged there.
DROP_HINT = (
    "Drop an image to open it: NRRD, NIfTI, MHA, a DICOM series' files, or a .zip of a DICOM series"
)
# Given to the server's event loop between steps, so that it sends the progress line first.
YIELD_S = 0.05
# An upload sent in slices that got none for this long was left behind (a closed tab, a lost
# connection): the next upload replaces it.
LEFT_BEHIND_S = 60.0
# The browser's handler that sends the FileList FILES in slices (see the module's docstring);
# the triggers' names and CHUNK are filled in. No double quotes: it stands in an attribute;
# the template reaches only a few globals (Math, Array, String), others through `window`;
# `void` first: Vue would take a handler that starts as an arrow function for the function
# itself, and call it while rendering.
SEND_IN_SLICES = """void (async (files) => {
  const list = Array.from(files);
  const total = list.reduce((n, f) => n + f.size, 0);
  const label = 'Sending ' + (list.length === 1 ? list[0].name : list.length + ' files') +
    ' (' + (total / 1e6).toFixed(1) + ' MB) to the server';
  sending = label + '...'; sending_fraction = 0;
  let number = null;
  try {
    number = await trigger('BEGIN', [list.map((f) => ({name: f.name, size: f.size}))]);
    if (number === null) return;
    let sent = 0;
    for (let index = 0; index < list.length; index++) {
      for (let offset = 0; offset < list[index].size; offset += CHUNK) {
        const slice = list[index].slice(offset, offset + CHUNK);
        const bytes = new window.DataView(await slice.arrayBuffer());
        if (!(await trigger('SLICE', [number, index, offset, bytes]))) { number = null; return; }
        sent += bytes.byteLength;
        sending_fraction = sent / total;
        sending = label + ': ' + (sent / 1e6).toFixed(1) + ' MB (' +
          Math.floor(100 * sending_fraction) + '%)';
      }
    }
    const finished = number; number = null;
    await trigger('FINISH', [finished]);
  } catch (error) {
    if (number !== null) trigger('ABORT', [number, String(error)]);
  } finally { sending = ''; sending_fraction = null; }
})(FILES)"""


class FileReceiver:
    """Receives the page's uploads (the file chooser's and drops on the views) and shows their
    progress; ``page`` is the :class:`~fastsam3d_web.app.SegmentationPage` (its state, its
    ``progress``, ``open_uploaded``, ``guarded``, ``work_folder``)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.receiving = False  # one upload at a time: a second waits for none, it is refused
        self.chunked: ChunkedUpload | None = None  # the upload arriving in slices
        self.number = 0  # the latest upload's number: a slice names the upload it is of
        self.task: asyncio.Future | None = None  # the latest upload sent in slices, opening
        page.state.drop_hint = False
        # The browser's line and bar while it sends; the server never sets them.
        page.state.sending, page.state.sending_fraction = "", None
        controller = page.server.controller
        self.triggers = {
            "BEGIN": controller.trigger_name(self.begin),
            "SLICE": controller.trigger_name(self.append),
            "FINISH": controller.trigger_name(self.finish),
            "ABORT": controller.trigger_name(self.abort),
        }

    # -- in the browser --------------------------------------------------------------------

    def send_js(self, files: str) -> str:
        """The browser's handler that sends the FileList ``files`` (a JS expression) in slices,
        saying in the progress line how much has gone (``sending``, ``sending_fraction``)."""
        script = " ".join(line.strip() for line in SEND_IN_SLICES.splitlines())
        for name, trigger in self.triggers.items():
            script = script.replace(f"'{name}'", f"'{trigger}'")
        return script.replace("CHUNK", str(CHUNK_BYTES)).replace("FILES", files)

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
                indeterminate=("work ? work_fraction === null : sending_fraction == null",),
                model_value=("100 * ((work ? work_fraction : sending_fraction) || 0)",),
                color="light-blue",
                height=4,
            )
            html.Span(
                "{{ work || sending }}", id="work-text", style="padding: 0 0.5em; font-size: 0.9em;"
            )

    # -- on the server ---------------------------------------------------------------------

    async def begin(self, announced: list) -> int | None:
        """Start an upload sent in slices, its files ``announced`` (``{name, size}`` each) and
        made empty in a folder of its own; its number, or None when it is refused (said on
        the page)."""
        page = self.page
        page.guarded(lambda: None)  # marks the session used and clears the last error
        left_behind = self.chunked is not None and (
            time.monotonic() - self.chunked.touched > LEFT_BEHIND_S
        )
        if left_behind:
            self._end_chunked()
        if self.receiving:
            self._refuse_another()
            await self._yield()
            return None
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=page.work_folder))
        try:
            self.chunked = ChunkedUpload(folder, announced)
        except Exception as error:
            shutil.rmtree(folder, ignore_errors=True)
            page.show_error(error)
            await self._yield()
            return None
        self.receiving = True
        self.number += 1
        return self.number

    async def append(self, number: int, index: int, offset: int, data: bytes) -> bool:
        """Write a slice of upload ``number`` (off the event loop); False when it is refused
        (the upload ends, why said on the page): the browser then stops sending."""
        upload = self._chunked(number)
        if upload is None:
            return False
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, upload.append, index, offset, data
            )
        except Exception as error:
            self._end_chunked(error)
            await self._yield()
            return False
        return True

    async def finish(self, number: int) -> None:
        """Upload ``number`` has been sent: its files, once whole, are unpacked, checked and
        read off the event loop and put into the scene (:meth:`_open`), in a task of its own
        (:attr:`task`), and this returns once its progress line has gone out (:meth:`_yield`):
        wslink answers one tab's messages in turn, so the tab's next click or button would
        wait for as long as this trigger ran."""
        upload = self._chunked(number)
        if upload is None:
            return
        self.chunked = None
        folder = upload.folder
        self.page.progress.show("Receiving the files...")  # before the browser's line goes
        self.task = asyncio.ensure_future(
            self._open(
                folder, lambda report: unpacked_and_checked(upload.complete(), folder, report)
            )
        )
        await self._yield()

    def abort(self, number: int, reason: str = "") -> None:
        """The browser stopped sending upload ``number`` (a file it could not read)."""
        if self._chunked(number) is not None:
            self._end_chunked(f"the browser stopped sending the files ({reason}); try again")

    def _chunked(self, number: object) -> ChunkedUpload | None:
        """The upload arriving in slices if ``number`` is its number."""
        return self.chunked if number == self.number else None

    def _end_chunked(self, error: Any = None) -> None:
        """Drop the upload arriving in slices and its files, saying ``error`` if given."""
        if self.chunked is not None:
            shutil.rmtree(self.chunked.folder, ignore_errors=True)
        self.chunked, self.receiving = None, False
        if error is not None:
            self.page.show_error(error)
            self.page.state.flush()

    def _refuse_another(self) -> None:
        self.page.show_error("another upload is still being opened; drop this one once it is open")
        self.page.state.flush()

    async def _open(self, folder: Path, save: Callable[[Reporter], list[Path]]) -> None:
        """Open the files that ``save(report)`` writes (or completes) and checks in
        ``folder``, off the event loop, and ends the upload."""
        page, progress = self.page, self.page.progress
        try:
            page.guarded(lambda: None)  # marks the session used and clears the last error
            paths = await self._saved(save, folder)
            if paths is not None:
                names = paths[0].name if len(paths) == 1 else f"{len(paths)} files"
                progress.show(f"Opening {names}...")
                await self._yield()
                loop = asyncio.get_running_loop()
                try:
                    read = await loop.run_in_executor(None, read_upload, paths, folder)
                except Exception:  # read again on the loop, which says why in one line
                    read = None
                page.guarded(lambda: page.open_uploaded(folder, lambda: paths, read))
        finally:
            self.receiving = False
            progress.done()
            page.state.flush()

    async def _saved(self, save: Callable, folder: Path) -> list[Path] | None:
        """The files ``save(report)`` wrote and checked in ``folder``, on a worker thread; None
        (the error shown, the folder removed) when they are refused."""
        page, loop = self.page, asyncio.get_running_loop()

        def shown(line: str) -> None:
            page.progress.show(line)
            page.state.flush()  # now: the next step may follow soon

        def report(line: str) -> None:  # from the worker thread: the loop sets the state
            loop.call_soon_threadsafe(shown, line)

        page.progress.show("Receiving the files...")
        await self._yield()
        try:
            return await loop.run_in_executor(None, save, report)
        except Exception as error:
            shutil.rmtree(folder, ignore_errors=True)
            page.show_error(error)
            return None

    async def _yield(self) -> None:
        """Send the state now and let the loop write it before the next step. A trigger's
        answer goes out at once while the state is sent by a task the loop runs later, so a
        trigger that changed the state yields before it answers: otherwise the browser clears
        its sending line before the server's line (or refusal) arrives, and for a moment the
        strip says nothing while the upload is still being opened."""
        self.page.state.flush()
        await asyncio.sleep(YIELD_S)
