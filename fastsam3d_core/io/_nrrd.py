"""A small NRRD writer for segmentations: LPS space, gzip data, ``key:=value`` fields.

Written by hand because neither library at hand writes what 3D Slicer writes: ITK cannot mark the
layer axis ``list`` (it writes ``vector``), and pynrrd encodes headers as ASCII, which loses
segment names such as "Läsion". The format is small (http://teem.sourceforge.net/nrrd/format.html);
files are read back with SimpleITK, whose NRRD reader is teem, as in Slicer.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np

_TYPES = {
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint32): "uint32",
}


def write_nrrd(
    file: BinaryIO, data: np.ndarray, ijk_to_lps: np.ndarray, fields: Mapping[str, str]
) -> None:
    """Write an integer array as a gzip-compressed NRRD file in LPS space.

    Args:
        file: open for writing bytes.
        data: ``(I, J, K)`` indexed ``(i, j, k)``, or ``(L, I, J, K)`` with a first ``list``
            axis (kinds ``list domain domain domain``), as Slicer writes segmentation layers.
        ijk_to_lps: (4, 4) affine from (i, j, k, 1) to LPS millimetres, written exactly.
        fields: key/value pairs, written as ``key:=value`` lines (backslash and newline escaped).

    Raises:
        ValueError: ``data`` is neither 3-D nor 4-D, or of a type this writer does not handle.
    """
    dtype = np.dtype(data.dtype).newbyteorder("=")
    if data.ndim not in (3, 4) or dtype not in _TYPES:
        raise ValueError(f"cannot write a {data.ndim}-D {data.dtype} array as a NRRD segmentation")
    file.write(_header(data.shape, dtype, ijk_to_lps, fields))
    little_endian = dtype.newbyteorder("<")
    # No name and no time in the gzip header: identical segmentations give identical files.
    with gzip.GzipFile(filename="", fileobj=file, mode="wb", compresslevel=6, mtime=0) as stream:
        for k in range(data.shape[-1]):  # NRRD's last axis varies slowest: one k-slab at a time
            stream.write(data[..., k].astype(little_endian, copy=False).tobytes(order="F"))


def _header(
    shape: tuple[int, ...], dtype: np.dtype, ijk_to_lps: np.ndarray, fields: Mapping[str, str]
) -> bytes:
    layered = len(shape) == 4
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        f"type: {_TYPES[dtype]}",
        f"dimension: {len(shape)}",
        "space: left-posterior-superior",
        f"sizes: {' '.join(str(n) for n in shape)}",
        "space directions: "
        + ("none " if layered else "")
        + " ".join(_vector(ijk_to_lps[:3, axis]) for axis in range(3)),
        "kinds: " + ("list " if layered else "") + "domain domain domain",
    ]
    if dtype.itemsize > 1:
        lines.append("endian: little")
    lines += ["encoding: gzip", f"space origin: {_vector(ijk_to_lps[:3, 3])}"]
    lines += [f"{_escape(key)}:={_escape(value)}" for key, value in fields.items()]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _vector(values: np.ndarray) -> str:
    # repr() of a float64 is the shortest text that reads back as exactly the same number.
    return "(" + ",".join(repr(float(value)) for value in values) + ")"


def _escape(text: str) -> str:
    """Escape as teem does in key/value pairs, so its reader restores the text exactly."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")
