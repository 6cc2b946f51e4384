"""``segment``'s IMAGE from a DICOMweb server, and its SEG sent back there (``--store``).

The series is downloaded (WADO-RS) into a temporary folder that lives as long as the command,
then read like any DICOM folder, so that a series with a gap or mixed orientations is refused
the same way; the SEG is stored (STOW-RS) on the same server.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer

if TYPE_CHECKING:
    from ..io.dicomweb import DicomwebAuth, SeriesURL


# The file name of a SEG written only for --store, in a temporary folder.
STORED_ONLY = "segmentation.dcm"


@dataclass(frozen=True)
class OpenedImage:
    """The image to read (a file, or a folder of DICOM files), how messages name it, and the
    series' address where it came from a DICOMweb server."""

    path: Path
    shown: str
    url: Optional[SeriesURL] = None


def is_url(image: str) -> bool:
    from ..io.dicomweb import is_dicomweb_url

    return is_dicomweb_url(image)


@contextmanager
def opened_image(image: str, auth: Callable[[], DicomwebAuth]) -> Iterator[OpenedImage]:
    """IMAGE as a path, or a DICOMweb series URL downloaded for the time of the ``with``."""
    if not is_url(image):
        yield OpenedImage(Path(image), str(image))
        return
    from ..io.dicomweb import SeriesURL, download_series

    url = SeriesURL.parse(image)
    with tempfile.TemporaryDirectory(prefix="fastsam3d-dicomweb-") as folder:
        typer.echo(f"downloading the series from {url.base} ...")
        download_series(url, Path(folder), auth(), progress=_progress())
        yield OpenedImage(Path(folder), image, url)


@contextmanager
def outputs_to_write(
    store: bool, image: OpenedImage, outputs: Sequence[Path]
) -> Iterator[list[Path]]:
    """The outputs to write: with ``--store``, a SEG among them (a temporary one, removed
    after the ``with``, where none was asked for); ``--store`` needs a DICOMweb IMAGE."""
    if not store:
        yield list(outputs)
        return
    if image.url is None:
        raise typer.BadParameter(
            f"the SEG goes back to the DICOMweb server IMAGE came from; {image.shown} is not a "
            "DICOMweb series URL (http(s)://HOST/.../studies/UID/series/UID)",
            param_hint="--store",
        )
    if any(path.name.lower().endswith(".dcm") for path in outputs):
        yield list(outputs)
        return
    with tempfile.TemporaryDirectory(prefix="fastsam3d-seg-") as folder:
        yield [*outputs, Path(folder) / STORED_ONLY]


def saying(outputs: Sequence[Path]) -> Callable[[str], None]:
    """``typer.echo``, except that a SEG written only to be stored is not said to be written
    (its temporary file is gone when the command ends)."""
    temporary = next((str(p) for p in outputs if p.name == STORED_ONLY and
                      p.parent.name.startswith("fastsam3d-seg-")), None)  # fmt: skip

    def say(line: str) -> None:
        if temporary is None or not line.startswith(f"wrote {temporary} "):
            typer.echo(line)
        else:
            typer.echo(f"made the SEG for --store{line[len(f'wrote {temporary}'):]}")

    return say


def store_seg(outputs: Sequence[Path], image: OpenedImage, auth: Any) -> None:
    """Send the SEG written (the ``.dcm`` of ``outputs``) to the server the image came from
    (STOW-RS)."""
    import pydicom

    from ..io.dicomweb import store_dataset

    seg = next(path for path in outputs if path.name.lower().endswith(".dcm"))
    dataset = pydicom.dcmread(seg)
    store_dataset(image.url.base, dataset, auth())
    typer.echo(f"stored the SEG on {image.url.base} (series {dataset.SeriesInstanceUID})")


def _progress() -> Callable[[int, int], None]:
    shown = {"step": -1}

    def say(done: int, total: int) -> None:
        step = (10 * done) // max(total, 1)  # a line per tenth, not per file
        if step != shown["step"]:
            shown["step"] = step
            typer.echo(f"  {done}/{total} files")

    return say
