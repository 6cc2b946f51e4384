"""An upload that the browser sends in slices, so that the page can show how much has gone.

trame sends a file given to ``trigger`` as one message and tells nobody how far it got: a large
upload showed only an indeterminate bar. So the browser sends each file in slices of
:data:`CHUNK_BYTES` (one ``trigger`` call each, the next once the server has answered the
last), and shows the share sent after each (``sending``, the browser's own line). Here the
server checks what the browser announces before any byte comes (names, count, total size) and
writes each slice where it belongs, in order, refusing anything else. Once every file is whole,
the unpacking and checks follow (:func:`.zip_upload.unpacked_and_checked`). Files given whole
(:func:`save_uploads`, the page's ``upload``) go through the same class in one slice each.

Every function here touches files only (no MRML): the page runs the writes off its event loop.
"""

from __future__ import annotations

import time
from pathlib import Path

from trame.app.file_upload import ClientFile

from .uploads import MAX_IMAGE_GB_ENV, UploadRefused, max_image_bytes
from .zip_upload import MAX_ZIP_ENTRIES, Reporter, unpacked_and_checked, upload_name

# The browser sends this much of a file per message (the last slice of a file may be shorter):
# small enough that a few MB show several steps, large enough that each message's round trip
# (a few ms on one computer) adds little to the transfer.
CHUNK_BYTES = 1 << 20


class ChunkedUpload:
    """One upload arriving in slices into ``folder`` (the page's own, empty).

    Args:
        folder: where the files are written, each by its own name.
        announced: the browser's list of ``{"name": str, "size": int}``, one per file.

    Raises:
        UploadRefused: a name that is no file's or comes twice, a size that is not a count of
            bytes, more files than :data:`.zip_upload.MAX_ZIP_ENTRIES`, or more bytes in all
            than :func:`.uploads.max_image_bytes`; one line.
        ValueError: no file was announced.
    """

    def __init__(self, folder: Path, announced: list) -> None:
        if not isinstance(announced, list) or not announced:
            raise ValueError("no file was uploaded")
        if len(announced) > MAX_ZIP_ENTRIES:
            raise UploadRefused(
                f"{len(announced)} files, more than the {MAX_ZIP_ENTRIES} this page opens at "
                "once; the current image stays"
            )
        self.folder = folder
        self.paths: list[Path] = []
        self.sizes: list[int] = []
        for entry in announced:
            entry = entry if isinstance(entry, dict) else {}
            path = folder / upload_name(entry.get("name"))
            size = entry.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise UploadRefused(f"{path.name}: no size in bytes came with it; try again")
            if path in self.paths:
                raise UploadRefused(
                    f"{path.name}: two files of this name came; the current image stays"
                )
            self.paths.append(path)
            self.sizes.append(size)
        limit = max_image_bytes()
        if sum(self.sizes) > limit:
            raise UploadRefused(
                f"{_shown(self.paths)}: {sum(self.sizes) / 1e9:.1f} GB, more than the "
                f"{limit / 1e9:g} GB this page opens ({MAX_IMAGE_GB_ENV} on the server sets "
                "it); the current image stays"
            )
        for path in self.paths:
            path.touch(exist_ok=False)
        self.received = [0] * len(self.paths)
        self.touched = time.monotonic()  # the last slice's time: an upload left behind ends

    def append(self, index: object, offset: object, data: object) -> int:
        """Write the slice ``data`` (bytes) of file ``index`` at ``offset``: the next bytes of
        that file, within its announced size. Returns the bytes received in all so far.

        Raises:
            UploadRefused: not the file's next slice, past its size, or not bytes.
        """
        self.touched = time.monotonic()
        if not isinstance(index, int) or not 0 <= index < len(self.paths):
            raise UploadRefused(f"file number {index!r} was not announced; try again")
        path = self.paths[index]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UploadRefused(f"{path.name}: a slice of it came without its bytes; try again")
        if offset != self.received[index]:
            raise UploadRefused(
                f"{path.name}: a slice at byte {offset!r} came where byte "
                f"{self.received[index]} was due; try again"
            )
        if self.received[index] + len(data) > self.sizes[index]:
            raise UploadRefused(
                f"{path.name}: more bytes came than the {self.sizes[index]} announced; try again"
            )
        with open(path, "ab") as file:
            file.write(data)
        self.received[index] += len(data)
        return sum(self.received)

    def complete(self) -> list[Path]:
        """The files, once each has all its announced bytes.

        Raises:
            UploadRefused: a file is short (the browser stopped sending it).
        """
        for path, size, received in zip(self.paths, self.sizes, self.received):
            if received != size:
                raise UploadRefused(f"{path.name}: {received} of its {size} bytes came; try again")
        return list(self.paths)


def save_uploads(files: list[dict], folder: Path, report: Reporter | None = None) -> list[Path]:
    """The browser's files given whole (trame's file dicts: name, content, ...) written into
    ``folder`` as an upload of one slice each, then unpacked and checked as every upload is.

    Raises:
        UploadRefused: as :class:`ChunkedUpload` and
            :func:`.zip_upload.unpacked_and_checked` refuse, or a file the browser could not
            read; one line that names the file.
        ValueError: no file came.
    """
    given = [ClientFile(entry) for entry in files or []]
    for entry in given:
        if entry.content is None:  # the browser could not read it (trame sends its error)
            name = upload_name(entry.name)
            raise UploadRefused(f"{name}: the browser could not read this file; try again")
    sizes = [{"name": entry.name, "size": len(entry.content)} for entry in given]
    upload = ChunkedUpload(folder, sizes)
    for index, entry in enumerate(given):
        upload.append(index, 0, entry.content)
    return unpacked_and_checked(upload.complete(), folder, report)


def _shown(paths: list[Path]) -> str:
    return paths[0].name if len(paths) == 1 else f"{len(paths)} files"
