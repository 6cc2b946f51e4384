"""How large a DICOMweb series is, before and while the page downloads it.

A series from a PACS is held to what an upload may be (:func:`~.uploads.max_image_bytes`,
``$FASTSAM3D_WEB_MAX_IMAGE_GB``) and to the memory free, twice over (the scene's image and the
engine's copy): first by what the server says of its instances (QIDO-RS: rows, columns, bits,
samples, frames), then, whatever it said, by each instance's header as it arrives, so that a
server that tells nothing, or too little, still cannot fill the server's memory or disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .uploads import MAX_IMAGE_GB_ENV, max_image_bytes, memory_short_for

# The instance attributes that size its pixels: (keyword, DICOM tag as QIDO-RS names it).
PIXEL_ATTRIBUTES = (
    ("Rows", "00280010"),
    ("Columns", "00280011"),
    ("BitsAllocated", "00280100"),
    ("SamplesPerPixel", "00280002"),
    ("NumberOfFrames", "00280008"),
)


class SeriesTooLarge(RuntimeError):
    """A series larger than the page opens; one line naming it. Not a ValueError: the core's
    DICOMweb calls, through which the download's progress reports pass, take those for a
    malformed answer."""


def pixel_bytes(values: dict[str, Any]) -> int:
    """Bytes of one instance's pixels from its attributes (keyword -> value; missing: 0 rows,
    one sample, one frame)."""

    def number(keyword: str, default: int) -> int:
        try:
            return int(values.get(keyword) or default)
        except (TypeError, ValueError):
            return default

    bits = number("BitsAllocated", 16)
    return (number("Rows", 0) * number("Columns", 0) * number("SamplesPerPixel", 1)
            * number("NumberOfFrames", 1) * ((bits + 7) // 8))  # fmt: skip


class SeriesBudget:
    """The bytes a series may take here, checked as it is learnt.

    Args:
        shown: how messages name the series (``DICOMweb server URL, series UID``).
    """

    def __init__(self, shown: str) -> None:
        self.shown, self.limit = shown, max_image_bytes()
        self._counted: set[str] = set()
        self._arrived = 0

    def check_announced(self, client: Any, study_uid: str, series_uid: str) -> None:
        """Refuse the series if its instances, as QIDO-RS lists them, are too large. Where the
        server does not answer or tells no sizes, nothing is refused here (the download's own
        request says what is wrong, and :meth:`check_arrived` counts the instances)."""
        try:
            found = client.search_for_instances(
                study_uid, series_uid, fields=[keyword for keyword, _ in PIXEL_ATTRIBUTES]
            )
        except Exception:  # only a first estimate: the download itself decides
            return
        announced = 0
        for item in found or []:
            values = {keyword: (item.get(tag) or {}).get("Value", [None])[0]
                      for keyword, tag in PIXEL_ATTRIBUTES}  # fmt: skip
            announced += pixel_bytes(values)
        self._check(announced, "holds")

    def check_arrived(self, folder: Path) -> None:
        """Count the instances downloaded into ``folder`` since the last call (their headers);
        refuse the series once they are too large."""
        import pydicom

        for path in sorted(folder.iterdir()):
            if path.name in self._counted or not path.is_file():
                continue
            self._counted.add(path.name)
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            self._arrived += pixel_bytes(
                {keyword: header.get(keyword) for keyword, _ in PIXEL_ATTRIBUTES}
            )
        self._check(self._arrived, "has sent")

    def _check(self, size: int, said: str) -> None:
        if size > self.limit:
            raise SeriesTooLarge(
                f"{self.shown}: the series {said} {size / 1e9:.3g} GB of images, more than the "
                f"{self.limit / 1e9:g} GB this page opens ({MAX_IMAGE_GB_ENV} on the server sets "
                "it); open a smaller series"
            )
        available = memory_short_for(size)
        if available is not None:
            raise SeriesTooLarge(
                f"{self.shown}: the series {said} {size / 1e9:.3g} GB of images; opening it "
                f"needs about {2 * size / 1e9:.3g} GB of memory and the server has "
                f"{available / 1e9:.3g} GB free; open a smaller series"
            )
