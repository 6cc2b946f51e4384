"""Reading 3-D volumes and writing labelmaps with SimpleITK, geometry exact in float64.

SimpleITK (the ITK that 3D Slicer ships) reads every format here with one library: NRRD, NIfTI,
MetaImage and DICOM series. ITK's physical space is LPS and ours RAS; :func:`flip_lps_ras` is the
one place where one becomes the other, for reading and writing alike.

Arrays are indexed ``(i, j, k)``, ITK's voxel-index order: the transpose of the ``(k, j, i)``
arrays that ``SimpleITK.GetArrayFromImage`` returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..geometry.volume import Volume
from ._atomic import write_atomically
from ._nifti import check_nifti, check_nifti_voxels
from .dicom import series_files_in_folder, series_files_of
from .errors import VolumeReadError, itk_reason, itk_warnings_as_python, special_file_kind
from .suffixes import LABELMAP_SUFFIXES, SEGMENTATION_SUFFIXES

#: ITK image readers accepted, and the formats they read.
READ_FORMATS = {
    "NrrdImageIO": "NRRD",
    "NiftiImageIO": "NIfTI",
    "MetaImageIO": "MetaImage",
    "GDCMImageIO": "DICOM",
}

_LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class ImageGeometry:
    """The voxel grid of an image without its voxels.

    Attributes:
        shape: ``(I, J, K)``, the number of voxels along i, j and k.
        ijk_to_ras: float64 (4, 4) affine from (i, j, k, 1) to RAS millimetres.
    """

    shape: tuple[int, int, int]
    ijk_to_ras: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        affine = np.array(self.ijk_to_ras, dtype=np.float64)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"a grid needs three sizes of at least 1, got {self.shape}")
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"ijk_to_ras must be a finite 4×4 matrix, got shape {affine.shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "ijk_to_ras", affine)


def flip_lps_ras(affine: np.ndarray) -> np.ndarray:
    """Re-express an affine whose output is LPS in RAS, or one whose output is RAS in LPS.

    The flip negates the first two output axes, so it is its own inverse and exact in floating
    point.

    Args:
        affine: (4, 4) matrix whose output is LPS (or RAS) millimetres.

    Returns:
        The float64 (4, 4) matrix with RAS (or LPS) output.
    """
    return _LPS_RAS_FLIP @ np.asarray(affine, dtype=np.float64)


def itk_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """The float64 (4, 4) affine from (i, j, k, 1) to RAS of a 3-D SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return flip_lps_ras(ijk_to_lps)


def set_itk_geometry(image: sitk.Image, ijk_to_ras: np.ndarray) -> None:
    """Give a 3-D SimpleITK image the spacing, origin and direction of an ijk-to-RAS affine."""
    ijk_to_lps = flip_lps_ras(ijk_to_ras)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijk_to_lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a 3-D scalar volume: NRRD, NIfTI, MetaImage, or a DICOM series.

    A DICOM series is read whole, its slices sorted along the slice normal, whether ``path`` is
    its folder or one of its files. A folder holding several series gives the one with the most
    files, with a :class:`UserWarning` that names it and the others. Subfolders are not searched.

    Args:
        path: a file, or a folder holding a DICOM series.

    Returns:
        The volume: ``array`` ``(I, J, K)`` indexed ``(i, j, k)`` in the file's own data type, and
        its float64 ``ijk_to_ras``. A single slice is a volume with one axis of size 1.

    Raises:
        VolumeReadError: the path does not exist, or is not a regular file or folder (a named
            pipe, a device); the file is not NRRD, NIfTI, MetaImage or DICOM, or is damaged or
            truncated; a folder holds no DICOM series; the image is 2-D, 4-D or has several
            values per voxel (vector, RGB); the volume is empty; a NIfTI has NaN or infinite
            voxels (which ITK would read as 0) or a zero voxel size (read as 1 mm).

    Warns:
        UserWarning: a NIfTI's qform and sform disagree (the message says which one is used).
    """
    path = Path(path)
    if path.is_dir():
        files = series_files_in_folder(path)
    elif path.is_file():
        files = _files_to_read(path)
    else:
        kind = special_file_kind(path)  # opening a named pipe would block, /dev/zero never end
        if kind is None:
            raise VolumeReadError(f"{path}: file or folder not found")
        raise VolumeReadError(
            f"{path}: not a regular file but {kind}; give an image file, or a folder holding a "
            "DICOM series"
        )
    return _volume_from_image(_read_image(files, path), path)


def _files_to_read(path: Path) -> list[str]:
    reader = sitk.ImageFileReader.GetImageIOFromFileName(str(path))
    if reader not in READ_FORMATS:
        found = (
            f"a {reader.replace('ImageIO', '')} image, a format not read here"
            if reader
            else "not a readable image (unknown format, or a damaged file)"
        )
        raise VolumeReadError(
            f"{path}: {found}; volumes are read from NRRD, NIfTI, MetaImage and DICOM files"
        )
    if reader == "GDCMImageIO":
        return series_files_of(path)
    header = _read_header(path)
    dimension, components = header.GetDimension(), header.GetNumberOfComponents()
    if header.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        components = 1  # the real and imaginary parts: Volume refuses them, saying why
    _check_scalar_volume(path, dimension, components, header.GetSize())
    _check_fits_in_memory(path, header)
    if reader == "NiftiImageIO":
        check_nifti(path, itk_ijk_to_ras(header))
    return [str(path)]


def _read_header(path: Path) -> sitk.ImageFileReader:
    """A reader that has read the file's header (not its voxels), for the checks below."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with itk_warnings_as_python(path):
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise VolumeReadError(f"{path}: unreadable header: {itk_reason(error)}") from error
    return reader


def _read_image(files: list[str], path: Path) -> sitk.Image:
    try:
        with itk_warnings_as_python(path) as messages:
            if len(files) == 1:
                return sitk.ReadImage(files[0])
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            return reader.Execute()
    except RuntimeError as error:
        # ITK's own warnings say what went wrong; its exception then often just "cannot read".
        reason = "; ".join(messages) or itk_reason(error)
        raise VolumeReadError(
            f"{path}: could not read the image (damaged or truncated?): {reason}"
        ) from error


def _check_fits_in_memory(path: Path, header: sitk.ImageFileReader) -> None:
    """Refuse an image whose header announces more voxels than this computer's memory holds.

    A small compressed file can announce gigabytes (a 16 MB .nii.gz of zeros holds a 16 GB
    volume): reading it would end with the operating system killing the process after a minute.
    Reading needs the voxels twice (ITK's buffer and the NumPy copy) and the mask one byte more.
    """
    available = available_memory()
    if available is None:
        return
    tiny = sitk.Image([1] * header.GetDimension(), header.GetPixelID())
    voxels = int(np.prod(header.GetSize(), dtype=np.float64))
    voxel_bytes = tiny.GetSizeOfPixelComponent() * header.GetNumberOfComponents()
    needed = voxels * (2 * voxel_bytes + 1)
    if needed > available:
        size = "×".join(str(n) for n in header.GetSize())
        raise VolumeReadError(
            f"{path}: the header announces a {size} image ({voxels * voxel_bytes / 2**30:.1f} GiB "
            f"of voxels); reading it needs about {needed / 2**30:.1f} GiB of memory and "
            f"{available / 2**30:.1f} GiB are available; crop or downsample it first"
        )


def available_memory() -> int | None:
    """Bytes of memory available to new allocations without swapping, or None where unknown.

    Linux: the machine's ``MemAvailable`` (which counts reclaimable caches), or less where a
    container's memory limit (cgroup v2) leaves less. Elsewhere: free pages, or None.
    """
    limits = [_meminfo_available(), _cgroup_available()]
    known = [limit for limit in limits if limit is not None]
    if known:
        return min(known)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_available() -> int | None:
    folder = Path("/sys/fs/cgroup")
    try:
        limit = (folder / "memory.max").read_text().strip()
        used = int((folder / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def _volume_from_image(image: sitk.Image, path: Path) -> Volume:
    _check_scalar_volume(
        path, image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize()
    )
    try:
        return Volume(sitk.GetArrayFromImage(image).T, itk_ijk_to_ras(image))
    except ValueError as error:
        raise VolumeReadError(f"{path}: {error}") from error


def _check_scalar_volume(
    path: Path, dimension: int, components: int, shape: tuple[int, ...]
) -> None:
    """Refuse what is not a non-empty 3-D image of one value per voxel, from its header or
    the image read."""
    size = "×".join(str(n) for n in shape)
    if dimension == 2:
        raise VolumeReadError(f"{path}: a 2-D image ({size}), not a 3-D volume")
    if dimension != 3 or components != 1:
        hint = ""
        if path.name.lower().endswith(SEGMENTATION_SUFFIXES):
            hint = "; a segmentation with overlapping segments is read by read_segmentation"
        raise VolumeReadError(
            f"{path}: not a 3-D scalar volume: a {dimension}-D image ({size}) "
            f"with {components} value(s) per voxel{hint}"
        )
    if 0 in shape:
        raise VolumeReadError(f"{path}: the volume is empty ({size} voxels)")


def write_labelmap(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    reference: Volume | ImageGeometry,
    compress: bool = True,
) -> None:
    """Write a labelmap on the reference's grid to NRRD or NIfTI, atomically.

    The format follows the extension: ``.nrrd`` (gzip-compressed unless ``compress`` is False,
    for readers without gzip such as OHIF's), ``.nii`` or ``.nii.gz``. The
    file is written beside ``path`` under a temporary name and renamed into place, so a failure
    never leaves a partial file. NRRD keeps the geometry in float64; NIfTI stores it in float32.

    Args:
        path: the file to write (replaced if it exists).
        labels: integer or boolean array ``(I, J, K)`` indexed ``(i, j, k)``, the reference's
            shape; its data type is kept (booleans are written as uint8).
        reference: the volume (or grid) whose geometry the labelmap gets.

    Raises:
        ValueError: the extension is not one of these, or ``labels`` has another shape or is
            not integer.
        OSError: the folder does not exist, or writing failed.
    """
    path = Path(path)
    check_labelmap_format(path, reference.ijk_to_ras)
    suffix = _labelmap_suffix(path)
    array = _checked_labels(labels, reference.shape, path)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.T))
    set_itk_geometry(image, reference.ijk_to_ras)

    def write(temporary: Path) -> None:
        with itk_warnings_as_python(path):
            sitk.WriteImage(image, str(temporary), useCompression=compress and suffix == ".nrrd")
        if suffix != ".nrrd":  # ITK's NIfTI writer reports failed writes (disk full) on stderr only
            try:
                check_nifti_voxels(temporary)
            except VolumeReadError as error:
                raise OSError(f"could not write {path}: the file came out incomplete") from error

    write_atomically(path, suffix, write)


def check_labelmap_format(path: Path, ijk_to_ras: np.ndarray) -> None:
    """Refuse a labelmap file format that cannot hold the grid exactly.

    NIfTI stores rotations only: ITK would silently replace a sheared (non-orthogonal) grid by
    the nearest orthogonal one, moving the labels. NRRD keeps any grid.

    Raises:
        ValueError: a labelmap extension not written here, or a sheared grid for NIfTI.
    """
    suffix = _labelmap_suffix(path)
    axes = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    if suffix != ".nrrd" and not np.allclose(axes.T @ axes, np.eye(3), atol=1e-6):
        raise ValueError(
            f"{path}: NIfTI cannot store this image's sheared (non-orthogonal) grid exactly; "
            "write the labelmap as .nrrd, or the segmentation as .seg.nrrd"
        )


def _labelmap_suffix(path: Path) -> str:
    for suffix in LABELMAP_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return suffix
    raise ValueError(
        f"{path}: labelmaps are written as {', '.join(LABELMAP_SUFFIXES)}; "
        f"the extension {path.suffix or '(none)'!r} is not one of them"
    )


def _checked_labels(labels: np.ndarray, shape: tuple[int, int, int], path: Path) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != tuple(shape):
        raise ValueError(
            f"{path}: the labels have shape {array.shape}, the reference {tuple(shape)}"
        )
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integers or booleans, not {array.dtype}")
    return array.astype(array.dtype.newbyteorder("="), copy=False)
