"""The engine's DICOM SEG: the segmentation as a DICOM Segmentation of the series it was drawn on.

A front end that opened the volume from DICOM (a folder, uploaded files, a DICOMweb series)
tells the engine which series it was (:meth:`DicomSegExport.setDicomSource`, a core
``DicomSeries``); :meth:`~.logic.InteractiveSegmentationLogic.exportSegmentation` then writes a
SEG for a ``.dcm`` path, and :meth:`DicomSegExport.dicomSegDataset` gives the same object in
memory, to be sent to a PACS (STOW-RS) without a file. The object itself is the core's
(:mod:`fastsam3d_core.io.dicom_seg`): one segment per MRML segment (its name and colour), the
algorithm being the model in use (its name, the product's version, the identity of the weights
it loaded), semi-automatic since clicks made it.

Only reading the scene must happen on the scene's thread (:meth:`DicomSegExport.dicomSegInputs`);
building the SEG (the series' headers, highdicom's encoding, hashing the weights) may run on
another, so that a front end's event loop keeps answering (:class:`SegInputs`).

Inside Slicer, DICOM export stays Slicer's own (the DICOM module): this serves the browser page
and scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastsam3d_core.io.suffixes import DICOM_SEG_SUFFIX

from . import mrml_io

# The algorithm's name when a predictor was given directly (tests, demos): its class's.
PREDICTOR_NAMES = {"OraclePredictor": "oracle"}


def is_dicom_seg_path(path: str | Path) -> bool:
    """Whether an export to ``path`` is a DICOM SEG (its name ends in ``.dcm``)."""
    return Path(path).name.lower().endswith(DICOM_SEG_SUFFIX)


@dataclass(frozen=True)
class SegInputs:
    """What a DICOM SEG is made of, read from the scene: building it from these reads no node,
    so it may run on any thread.

    Attributes:
        segments: core ``Segment``s, masks ``(I, J, K)`` bool on the volume's grid (copies).
        volume: the core ``Volume`` of the volume node (a copy).
        series: the core ``DicomSeries`` the volume was read from.
        made_by: (model name, predictor) of the predictor in use; the name None for a
            predictor given directly (see :func:`seg_algorithm`).
    """

    segments: list
    volume: Any
    series: Any
    made_by: tuple

    def dataset(self) -> Any:
        """The SEG as a ``pydicom.Dataset`` (see ``dicom_seg_dataset``)."""
        from fastsam3d_core.io.dicom_seg import dicom_seg_dataset

        return dicom_seg_dataset(self.segments, self.volume, self.series, self.algorithm())

    def write(self, path: str | Path) -> Path:
        """The SEG written to ``path`` (a ``.dcm`` file), atomically."""
        from fastsam3d_core.io.dicom_seg import write_dicom_seg

        return write_dicom_seg(Path(path), self.segments, self.volume, self.series,
                               self.algorithm())  # fmt: skip

    def algorithm(self) -> Any:
        return seg_algorithm(*self.made_by)


class DicomSegExport:
    """The engine's DICOM side: which series its volume came from, and the SEG of its
    segmentation. A mixin of :class:`~.logic.InteractiveSegmentationLogic`, which holds
    ``volumeNode``, ``segmentationNode`` and the worker's state (the predictor in use)."""

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
        """The segmentation as a DICOM SEG (a ``pydicom.Dataset``), e.g. for STOW-RS; all of
        it on this thread (:meth:`dicomSegInputs` leaves the building to another).

        Raises:
            ValueError: one line: the volume did not come from DICOM, the segmentation is
                empty, the series cannot be referenced or does not fit the volume's grid.
        """
        return self.dicomSegInputs().dataset()

    def _writeDicomSeg(self, path: str | Path) -> Path:
        """Write the segmentation as a DICOM SEG file (see :meth:`dicomSegDataset`)."""
        return self.dicomSegInputs().write(path)

    def dicomSegInputs(self) -> SegInputs:
        """The segmentation's SEG inputs, read from the scene (on the scene's thread); their
        :meth:`SegInputs.dataset` or :meth:`SegInputs.write` may then run on another.

        Raises:
            RuntimeError: no segmentation yet.
            ValueError: one line: the volume did not come from DICOM.
        """
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
        return SegInputs(segments, volume, series, self._state.made_by)


def seg_algorithm(model_name: str | None, predictor: Any) -> Any:
    """The core ``SegAlgorithm`` of the predictor that made the segments: ``model_name`` (the
    model ``setModel`` loaded it as) or, for a predictor given directly, its class's name; the
    weights' identity the predictor carries (``weights_sha256``: a local model's checkpoint
    SHA-256, with adapters the hash of both files' hashes; a remote one's as its service
    announces it), else ""."""
    from fastsam3d_core import __version__
    from fastsam3d_core.io.dicom_seg import SegAlgorithm

    if model_name is None:
        kind = type(predictor).__name__
        model_name = PREDICTOR_NAMES.get(kind, kind)
    return SegAlgorithm(model_name, __version__, weights_sha256(predictor), True)


def weights_sha256(predictor: Any) -> str:
    """The identity of the weights ``predictor`` loaded, as it carries it; "" when it carries
    none (a predictor given directly) or the file cannot be read now (the SEG is still worth
    writing, without it)."""
    try:
        announced = getattr(predictor, "weights_sha256", "")
    except OSError:
        return ""
    return announced if isinstance(announced, str) else ""
