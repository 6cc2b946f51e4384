"""Checks of NIfTI-1 (and Analyze 7.5) files for what ITK's reader gets silently wrong.

ITK reads NIfTI with niftilib, which

* replaces NaN and infinite float voxels by 0 while reading (``nifti_read_buffer``), so that a
  scan of NaN would be segmented as a scan of zeros;
* reads a zero (or NaN) voxel size as 1 mm;
* picks the qform or the sform by their codes without a word when both are set and disagree;
* reads a truncated file without complaint, the rest garbage.

So the header is read here too (348 bytes, with NumPy: its layout is fixed by the standard and
nothing beyond NumPy is needed), and the voxels are streamed through once, in chunks, to count
bytes and non-finite floats without holding a second copy of the image.
"""

from __future__ import annotations

import gzip
import math
import warnings
import zlib
from itertools import product
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import VolumeReadError

NIFTI1_HEADER_BYTES = 348
#: Largest distance between where the qform and the sform put a voxel, in mm, that passes
#: without a warning (float32 rounding and a qform approximating a slightly sheared sform).
QFORM_SFORM_TOLERANCE_MM = 1.0
# The fields used here, at their offsets in the NIfTI-1 header (the first ones are Analyze's).
_HEADER = np.dtype(
    {
        "names": ["sizeof_hdr", "dim", "datatype", "bitpix", "pixdim", "vox_offset",
                  "qform_code", "sform_code", "quatern", "qoffset", "srow", "magic"],
        "formats": ["<i4", ("<i2", (8,)), "<i2", "<i2", ("<f4", (8,)), "<f4",
                    "<i2", "<i2", ("<f4", (3,)), ("<f4", (3,)), ("<f4", (3, 4)), "S4"],
        "offsets": [0, 40, 70, 72, 76, 108, 252, 254, 256, 268, 280, 344],
        "itemsize": NIFTI1_HEADER_BYTES,
    }
)  # fmt: skip
_NIFTI_MAGIC = (b"n+1", b"ni1")  # one file, or a header beside its .img
# NIfTI datatype codes of float voxels, which niftilib turns to 0 where not finite.
_FLOAT_TYPES = {16: np.dtype("f4"), 64: np.dtype("f8")}
_CHUNK_BYTES = 1 << 24


def check_nifti(path: Path, itk_ijk_to_ras: np.ndarray) -> None:
    """Refuse or warn about what ITK would read silently wrong from a NIfTI (or Analyze) file.

    Args:
        path: the .nii, .nii.gz, .hdr (or .hdr.gz) file ITK recognised as NIfTI.
        itk_ijk_to_ras: the geometry ITK read from its header, to name the transform it chose.

    Raises:
        VolumeReadError: a zero or non-finite voxel size, a truncated file, or NaN or infinite
            voxels.
    """
    header = read_nifti_header(path)
    _check_voxel_size(path, header)
    _warn_if_qform_and_sform_disagree(path, header, itk_ijk_to_ras)
    check_nifti_voxels(path, header)


def read_nifti_header(path: Path) -> np.void:
    """The header fields used here, in the file's byte order.

    Raises:
        VolumeReadError: fewer than 348 bytes, or not a NIfTI-1/Analyze header.
    """
    try:
        with _open_maybe_compressed(path) as stream:
            block = stream.read(NIFTI1_HEADER_BYTES)
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeReadError(f"{path}: unreadable NIfTI header ({error})") from error
    if len(block) < NIFTI1_HEADER_BYTES:
        raise VolumeReadError(f"{path}: unreadable NIfTI header: the file is truncated")
    for dtype in (_HEADER, _HEADER.newbyteorder(">")):
        header = np.frombuffer(block, dtype)[0]
        if header["sizeof_hdr"] == NIFTI1_HEADER_BYTES:
            return header
    raise VolumeReadError(f"{path}: unreadable NIfTI header (not a NIfTI-1 or Analyze header)")


def _is_nifti(header: np.void) -> bool:
    return bytes(header["magic"]).rstrip(b"\0") in _NIFTI_MAGIC


def _check_voxel_size(path: Path, header: np.void) -> None:
    """Refuse a zero or non-finite voxel size, which ITK would read as 1 mm."""
    sizes = [float(value) for value in header["pixdim"][1:4]]
    if not all(math.isfinite(size) and size != 0 for size in sizes):
        raise VolumeReadError(
            f"{path}: the header gives the voxel size {sizes} mm (pixdim), which ITK would read "
            "as 1 mm; set the real voxel size and save the image again"
        )


def _qform(header: np.void) -> np.ndarray:
    """The qform (ijk to RAS), as the NIfTI-1 standard defines it from the unit quaternion."""
    b, c, d = (float(value) for value in header["quatern"])
    a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
    )
    qfac = -1.0 if header["pixdim"][0] < 0 else 1.0
    scales = np.abs(header["pixdim"][1:4].astype(np.float64)) * [1.0, 1.0, qfac]
    affine = np.eye(4)
    affine[:3, :3] = rotation * scales
    affine[:3, 3] = header["qoffset"]
    return affine


def _sform(header: np.void) -> np.ndarray:
    affine = np.eye(4)
    affine[:3] = header["srow"]
    return affine


def _warn_if_qform_and_sform_disagree(
    path: Path, header: np.void, itk_ijk_to_ras: np.ndarray
) -> None:
    """Warn when both transforms are set and put some voxel more than the tolerance apart."""
    if not _is_nifti(header) or header["qform_code"] <= 0 or header["sform_code"] <= 0:
        return
    shape = [max(int(n), 1) for n in header["dim"][1:4]]
    corners = np.array(list(product(*[(0, n - 1) for n in shape])), dtype=np.float64)

    def placed(affine: np.ndarray) -> np.ndarray:
        return corners @ affine[:3, :3].T + affine[:3, 3]

    qform, sform, itk = placed(_qform(header)), placed(_sform(header)), placed(itk_ijk_to_ras)
    apart = float(np.max(np.linalg.norm(qform - sform, axis=1)))
    if not apart > QFORM_SFORM_TOLERANCE_MM:
        return
    # ITK chooses by the codes (and may straighten a sheared sform): the one closer to its result.
    from_qform = np.max(np.linalg.norm(itk - qform, axis=1))
    used = "qform" if from_qform < np.max(np.linalg.norm(itk - sform, axis=1)) else "sform"
    warnings.warn(
        f"{path}: its qform and sform disagree, placing voxels up to {apart:.1f} mm apart; the "
        f"{used} is used (as ITK and 3D Slicer read it): check where the image really lies",
        UserWarning,
        stacklevel=5,  # the caller of read_volume
    )


def check_nifti_voxels(path: Path, header: np.void | None = None) -> None:
    """Refuse a truncated NIfTI file, or float voxels that are NaN or infinite.

    Decompresses a ``.nii.gz`` once more (about as long as reading it); an uncompressed file is
    read once more only if its voxels are floats. A ``.hdr``/``.img`` pair keeps its voxels in
    the ``.img`` (or ``.img.gz``) beside the header.

    Raises:
        VolumeReadError: the file holds fewer bytes than the header announces, or is damaged, or
            holds NaN or infinite voxels (which ITK would read as 0).
    """
    header = read_nifti_header(path) if header is None else header
    dims = int(header["dim"][0])
    if not 1 <= dims <= 7:
        raise VolumeReadError(f"{path}: unreadable NIfTI header: {dims} dimensions")
    voxels = int(np.prod(header["dim"][1 : dims + 1].astype(np.int64)))
    offset = max(int(header["vox_offset"]), 0)
    if bytes(header["magic"]).rstrip(b"\0") == b"n+1":
        offset = max(offset, NIFTI1_HEADER_BYTES)  # as niftilib reads an offset inside the header
    expected = offset + voxels * int(header["bitpix"]) // 8
    data = nifti_voxel_file(path)
    if data is None:
        return  # no .img beside the .hdr: ITK's reading says so
    float_type = _FLOAT_TYPES.get(int(header["datatype"]))
    if float_type is not None:
        float_type = float_type.newbyteorder(header.dtype["sizeof_hdr"].byteorder)
    try:
        actual, not_finite = _scan(data, offset, voxels, float_type)
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeReadError(f"{path}: damaged or truncated compressed data ({error})") from error
    if actual < expected:
        raise VolumeReadError(
            f"{path}: the file is truncated: the header announces {expected} bytes, "
            f"{'the file' if data == path else data.name} holds {actual}"
        )
    if not_finite:
        raise VolumeReadError(
            f"{path}: {not_finite} of {voxels} voxels are NaN or infinite (ITK would read them "
            "as 0); the model needs finite values (replace them, e.g. by the background value, "
            "and save the image again)"
        )


def nifti_voxel_file(path: Path) -> Path | None:
    """The file holding a NIfTI image's voxels: the file itself, or a header's .img."""
    name = path.name.lower()
    for header_suffix in (".hdr", ".hdr.gz"):
        if name.endswith(header_suffix):
            stem = path.name[: -len(header_suffix)]
            pair = [path.with_name(stem + suffix) for suffix in (".img", ".img.gz")]
            return next((file for file in pair if file.is_file()), None)
    return path


def _scan(
    path: Path, offset: int, voxels: int, float_type: np.dtype | None
) -> tuple[int, int]:
    """The number of (decompressed) bytes in the file, and of non-finite floats among the
    ``voxels`` after ``offset`` when ``float_type`` says they are floats."""
    if float_type is None and not _is_compressed(path):
        return path.stat().st_size, 0
    size, not_finite, left = 0, 0, voxels
    item = 1 if float_type is None else float_type.itemsize
    with _open_maybe_compressed(path) as stream:
        while size < offset and (skipped := len(stream.read(min(offset - size, _CHUNK_BYTES)))):
            size += skipped
        pending = b""  # the bytes of a float cut by a chunk's end
        while chunk := stream.read(_CHUNK_BYTES):
            size += len(chunk)
            if float_type is None or left == 0:
                continue
            block = pending + chunk
            whole = min(len(block) // item, left)
            values = np.frombuffer(block, float_type, count=whole)
            not_finite += int(whole - np.count_nonzero(np.isfinite(values)))
            left -= whole
            pending = block[whole * item :] if left else b""
    return size, not_finite


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(2) == b"\x1f\x8b"


def _open_maybe_compressed(path: Path) -> BinaryIO:
    """The file's bytes, decompressed if it is gzip (whatever its name says)."""
    if _is_compressed(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")
