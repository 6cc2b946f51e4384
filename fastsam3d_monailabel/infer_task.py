"""FastSAM3D as MONAI Label's interactive (DEEPGROW) inference task."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from fastsam3d_core.io import SegAlgorithm, VolumeReadError

from .label_files import OutputFolder, label_format, write_label
from .points import request_label, request_points
from .sessions import ImageSessions

logger = logging.getLogger(__name__)

#: Labels written recently, remembered for a DICOM SEG asked of them (``output=dicom_seg``).
_REMEMBERED_LABELS = 64


class FastSAM3DInfer(InferTask):
    """Clicks (``foreground``/``background`` voxel indices, ``label``) to the label's mask.

    The request's image goes through ``sessions`` (one core session per image), so a request
    that adds a point to the previous ones runs only that point. Bad input (no points, a point
    outside the image, an unreadable image, a format not written) is refused with HTTP 400 and
    one line in ``detail``, as MONAI Label's endpoints refuse theirs; the server keeps serving.

    Args:
        model: the model's name, e.g. ``"fastsam3d"``.
        sessions: the sessions of this model.
        algorithm: what a DICOM SEG of its labels names as their maker.
        labels: structure names offered to clients.
        folder: where the label files go.
    """

    def __init__(
        self,
        model: str,
        sessions: ImageSessions,
        algorithm: SegAlgorithm,
        labels: Sequence[str],
        folder: OutputFolder,
    ) -> None:
        super().__init__(
            type=InferType.DEEPGROW,
            labels=list(labels),
            dimension=3,
            description=f"{model}: click-to-segment any structure in 3-D (points in, mask out)",
        )
        self.model = model
        self.sessions = sessions
        self.algorithm = algorithm
        self.folder = folder
        self._written: OrderedDict[str, str] = OrderedDict()

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            label = request_label(request)
            points = request_points(request)
            written_as = label_format(request)
            restart = str(request.get("reset_state", "")).lower() in ("true", "1")
            result = self.sessions.segment(request["image"], label, points, restart)
            path = write_label(result.mask, result.volume, written_as, self.folder)
        except (ValueError, VolumeReadError) as error:
            logger.warning("%s: request refused: %s", self.model, error)
            raise HTTPException(status_code=400, detail=str(error)) from None
        self._remember(path, label)
        logger.info(
            "%s: %d point(s) decoded (%d encoder run(s)%s) in %.0f ms",
            self.model, result.decoded, result.encoder_runs,
            ", restarted" if result.restarted else "", result.seconds * 1000,
        )  # fmt: skip
        return str(path), {
            "label_names": {label: 1},
            "fastsam3d": {
                "model": self.model,
                "decoded": result.decoded,
                "encoder_runs": result.encoder_runs,
                "restarted": result.restarted,
                "server_ms": round(result.seconds * 1000, 2),
            },
        }

    def label_name_of(self, label_file: str | Path) -> str | None:
        """The label name of a file this task wrote recently, or None."""
        return self._written.get(str(Path(label_file)))

    def _remember(self, path: Path, label: str) -> None:
        self._written[str(path)] = label
        while len(self._written) > _REMEMBERED_LABELS:
            self._written.popitem(last=False)
