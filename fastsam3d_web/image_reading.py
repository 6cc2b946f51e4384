"""Uploaded images read off the page's event loop by the core's reader; the scene only takes
the voxels read.

The scene's own reader (trame-slicer's: pydicom's headers, then ITK's series reader) ran on the
server's event loop, which then answered nothing, not a click, not a button, not a view's
image: 0.6-1.0 s for the 20-slice example CT series on a 2-core CPU, 0.1 s for a small NIfTI
(docs/web.md). The core's reader (:func:`fastsam3d_core.io.images.read_volume`, the command
line's) reads the same voxels and geometry on a worker thread, with the image data for the
scene built there too (:func:`read_upload`); on the loop a volume node only takes them
(:func:`volume_node`, a few milliseconds).

What the core's reader refuses (a series with a gap or a gantry tilt, which the scene's reader
opens with a transform; an RGB image; a file it does not know) is left to the scene's reader on
the loop, as before, with the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dicom_files import dicom_series_for_volume, is_dicom_file

# How the page names the user's own files in a message (not its folder's path).
UPLOADED = "the uploaded files"


@dataclass
class ReadImage:
    """An uploaded image read off the event loop.

    Attributes:
        dicom: whether the files are DICOM.
        volume: the core ``Volume`` (``array`` (I, J, K), ``ijk_to_ras`` to RAS mm), or None:
            the core's reader refused the files (the scene's reader is tried instead).
        image_data: a ``vtkImageData`` holding ``volume``'s voxels, i fastest, with spacing 1
            and origin 0 (the geometry is the node's IJK-to-RAS matrix), as Slicer keeps them.
        name: the node's name, as the scene's reader gives it (a DICOM series: "number:
            description"; else the file's name).
        series: the core ``DicomSeries`` for a DICOM SEG, or None.
        problem: why a DICOM image has no SEG, in one line, or "".
    """

    dicom: bool = False
    volume: Any = None
    image_data: Any = None
    name: str = ""
    series: Any = None
    problem: str = ""


def read_upload(paths: list[Path], folder: Path, shown: str = UPLOADED) -> ReadImage:
    """The image that the uploaded (and checked) ``paths`` in ``folder`` make, read by the core:
    a DICOM series (the folder's largest), or the first file that is an image (a MetaImage or
    NRRD header before its data file). Runs off the event loop: it touches no MRML node.
    ``shown``: what a message calls the files (a series downloaded from a PACS: its server and
    UID), not the page's folder.

    Never raises for files the core does not read: ``volume`` is None then."""
    from fastsam3d_core.io.errors import VolumeReadError
    from fastsam3d_core.io.images import read_volume

    dicom = any(is_dicom_file(path) for path in paths)
    image = ReadImage(dicom=dicom)
    target = folder if dicom else _first_image(paths)
    if target is None:
        return image
    try:
        image.volume = read_volume(target)
    except (VolumeReadError, ValueError):
        return image  # the scene's reader tries, and says why not in its own words
    image.image_data = _image_data(image.volume.array)
    if dicom:
        image.series, image.problem = dicom_series_for_volume(folder, image.volume, shown)
        image.name = _series_name(image.series.files[0] if image.series else paths[0])
    else:
        image.name = target.name
    return image


def volume_node(scene: Any, image: ReadImage) -> Any:
    """A scalar volume node in ``scene`` holding ``image`` (read by :func:`read_upload`): the
    voxels' image data as they are (no copy), the IJK-to-RAS matrix, default display nodes.
    On the scene's thread (the event loop)."""
    from fastsam3d_mrml.mrml_io import array_to_matrix

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(image.name))
    node.SetAndObserveImageData(image.image_data)
    node.SetIJKToRASMatrix(array_to_matrix(image.volume.ijk_to_ras))
    node.CreateDefaultDisplayNodes()
    return node


def _first_image(paths: list[Path]) -> Path | None:
    """The first of ``paths`` that ITK reads as an image (not a header's data file)."""
    import SimpleITK as sitk

    for path in paths:
        if sitk.ImageFileReader.GetImageIOFromFileName(str(path)):
            return path
    return None


def _image_data(array: Any) -> Any:
    """A ``vtkImageData`` holding the (I, J, K) ``array`` (copied once, i fastest)."""
    import numpy as np
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    scalars = numpy_to_vtk(np.ravel(array, order="F"), deep=True)
    scalars.SetName("ImageScalars")
    image_data = vtkImageData()
    image_data.SetDimensions(*array.shape)
    image_data.GetPointData().SetScalars(scalars)
    # The scalar range, kept by the array: the display node's automatic window/level needs it,
    # and computing it there took the loop 40 ms for a 512 x 512 x 20 CT.
    image_data.GetScalarRange()
    return image_data


def _series_name(file: Path) -> str:
    """A DICOM series' node name from one of its files, as the scene's reader makes it."""
    import pydicom

    header = pydicom.dcmread(str(file), stop_before_pixels=True, force=True)
    description = str(header.get("SeriesDescription", "") or "") or "Unnamed Series"
    number = str(header.get("SeriesNumber", "") or "")
    return f"{number}: {description}" if number else description
