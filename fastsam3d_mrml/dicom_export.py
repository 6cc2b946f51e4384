"""The engine's DICOM SEG: the segmentation as a DICOM Segmentation of the series it was drawn on.

A front end that opened the volume from DICOM (a folder, uploaded files, a DICOMweb series)
tells the engine which series it was (:meth:`DicomSegExport.setDicomSource`, a core
``DicomSeries``); :meth:`~.logic.InteractiveSegmentationLogic.exportSegmentation` then writes a
SEG for a ``.dcm`` path, and :meth:`DicomSegExport.dicomSegDataset` gives the same object in
memory, to be sent to a PACS (STOW-RS) without a file. The object itself is the core's
(:mod:`fastsam3d_core.io.dicom_seg`): one segment per MRML segment (its name and colour), the
algorithm being the model (name, the product's version, the weights' SHA-256), semi-automatic
since clicks made it.

Inside Slicer, DICOM export stays Slicer's own (the DICOM module): this serves the browser page
and scripts.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from fastsam3d_core.io.suffixes import DICOM_SEG_SUFFIX

from . import mrml_io

# The algorithm's name when a predictor was given directly (tests, demos): its class's.
PREDICTOR_NAMES = {"OraclePredictor": "oracle"}


def is_dicom_seg_path(path: str | Path) -> bool:
    """Whether an export to ``path`` is a DICOM SEG (its name ends in ``.dcm``)."""
    return Path(path).name.lower().endswith(DICOM_SEG_SUFFIX)


class DicomSegExport:
    """The engine's DICOM side: which series its volume came from, and the SEG of its
    segmentation. A mixin of :class:`~.logic.InteractiveSegmentationLogic`, which holds
    ``volumeNode``, ``segmentationNode`` and the worker's state (model key, predictor)."""

    volumeNode: Any
    segmentationNode: Any
    _state: Any
    # (volume node, core DicomSeries) as the front end set it.
    _dicomSource: tuple = (None, None)

    def setDicomSource(self, volumeNode: Any, series: Any) -> None:
        """``volumeNode`` was read from the DICOM ``series`` (a core ``DicomSeries`` whose
        files are the volume's slices; None: not from DICOM). It counts while ``volumeNode``
        is the engine's volume: :meth:`setInputs` with another volume forgets it."""
        self._dicomSource = (volumeNode, series)

    @property
    def dicomSource(self) -> Any:
        """The DICOM series the current volume was read from, or None."""
        node, series = self._dicomSource
        return series if node is not None and node is self.volumeNode else None

    def dicomSegDataset(self) -> Any:
        """The segmentation as a DICOM SEG (a ``pydicom.Dataset``), e.g. for STOW-RS.

        Raises:
            ValueError: one line: the volume did not come from DICOM, the segmentation is
                empty, the series cannot be referenced or does not fit the volume's grid.
        """
        from fastsam3d_core.io.dicom_seg import dicom_seg_dataset

        return dicom_seg_dataset(*self._segInputs())

    def _writeDicomSeg(self, path: str | Path) -> Path:
        """Write the segmentation as a DICOM SEG file (see :meth:`dicomSegDataset`)."""
        from fastsam3d_core.io.dicom_seg import write_dicom_seg

        return write_dicom_seg(Path(path), *self._segInputs())

    def _segInputs(self) -> tuple:
        """(segments with voxels, volume, series, algorithm) for the core's SEG writer."""
        if self.segmentationNode is None or self.volumeNode is None:
            raise RuntimeError("there is no segmentation to export yet")
        series = self.dicomSource
        if series is None:
            raise ValueError(
                f"{self.volumeNode.GetName()} did not come from DICOM: a DICOM SEG references "
                "the DICOM series of its image; open the image from DICOM files or a DICOMweb "
                "server, or export .seg.nrrd or a labelmap"
            )
        # Segments without voxels stay (without frames), as the .seg.nrrd keeps them.
        segments = mrml_io.segments_on_volume_grid(self.segmentationNode, self.volumeNode)
        volume = mrml_io.volume_from_node(self.volumeNode)
        return segments, volume, series, seg_algorithm(self._state.model_key, self._state.predictor)


def seg_algorithm(model_key: tuple | None, predictor: Any) -> Any:
    """The core ``SegAlgorithm`` that made the segments: ``setModel``'s model (``model_key``:
    its (name, device, weights file, ...)) or the predictor given directly."""
    from fastsam3d_core import __version__
    from fastsam3d_core.io.dicom_seg import SegAlgorithm

    if model_key is not None:
        name = model_key[0]
    else:
        kind = type(predictor).__name__
        name = PREDICTOR_NAMES.get(kind, kind)
    return SegAlgorithm(name, __version__, weights_sha256(model_key, predictor), True)


def weights_sha256(model_key: tuple | None, predictor: Any) -> str:
    """The SHA-256 of the model's weights where it is known: the encoder service's (a remote
    predictor announces it), the weights file's, or the cached download's as recorded when it
    was downloaded; "" otherwise (a predictor given directly, weights not downloaded yet)."""
    announced = getattr(predictor, "weights_sha256", None)
    if isinstance(announced, str) and announced:
        return announced
    if model_key is None:
        return ""
    name, weights_file = model_key[0], model_key[2]
    try:
        from fastsam3d_core.weights.download import recorded_sha256
        from fastsam3d_core.weights.registry import WEIGHTS

        if weights_file:
            stat = os.stat(weights_file)
            return _file_sha256(os.path.abspath(weights_file), stat.st_size, stat.st_mtime_ns)
        entry = WEIGHTS.get(name)
        # The cached download was checked against these when it was loaded.
        return (entry.sha256 or recorded_sha256(entry) or "") if entry is not None else ""
    except (ImportError, OSError, ValueError, RuntimeError):
        return ""  # unreadable now: the SEG is still worth writing, without it


@functools.lru_cache(maxsize=4)
def _file_sha256(path: str, size: int, modified_ns: int) -> str:
    """A weights file's SHA-256, read once per version of the file (a second or two for the
    larger model: not at every export)."""
    from fastsam3d_core.weights.download import sha256_of_file

    return sha256_of_file(path)
