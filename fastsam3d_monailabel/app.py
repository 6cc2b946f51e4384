"""The MONAI Label app: FastSAM3D and SAM-Med3D-turbo as interactive tasks.

MONAI Label builds the app with its ``--conf`` pairs (:mod:`.settings`). The models load here,
once, through the core's recipe (weights, adapters, precision checked at load), so the first
click runs the encoder and nothing else.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from typing import Any

from fastapi import HTTPException
from monailabel.datastore import dicom as dicomweb_datastore
from monailabel.endpoints import infer as infer_endpoint
from monailabel.interfaces.app import MONAILabelApp

from fastsam3d_core import __version__
from fastsam3d_core.io import SegAlgorithm, VolumeReadError
from fastsam3d_core.session.model_predictor import ModelPredictor
from fastsam3d_core.weights import WeightsError
from fastsam3d_core.weights.recipe import LoadedModel, ModelRecipe

from .datastore import AsStoredDICOMWebDatastore
from .infer_task import FastSAM3DInfer
from .label_files import OutputFolder, dicom_seg_of_label
from .sessions import ImageSessions
from .settings import AppSettings

logger = logging.getLogger(__name__)

#: Seconds between sweeps that drop idle sessions (their images and masks).
_EXPIRY_SWEEP_SECONDS = 60.0


class FastSAM3DApp(MONAILabelApp):
    """FastSAM3D's MONAI Label app (MONAI Label calls it with these arguments)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        try:
            self.settings = AppSettings.from_conf(conf or {})
            self.loaded = {model: self._load(model) for model in self.settings.models}
        except (ValueError, OSError, WeightsError) as error:
            # One line where the server's log would otherwise end in a long traceback.
            logger.error("FastSAM3D cannot start: %s", error)
            raise SystemExit(f"error: FastSAM3D cannot start: {error}") from None
        self.output = OutputFolder()
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="FastSAM3D",
            description="Interactive 3-D segmentation of any structure: FastSAM3D, SAM-Med3D-turbo",
            version=__version__,
            labels=list(self.settings.labels),
        )
        # MONAI Label converts labels to DICOM SEG (for output=dicom_seg, and for a final label
        # saved to the PACS) with its own writer (every segment coded as spleen, algorithm
        # "MONAILABEL", through dcmqi's program) and offers no hook: this app's SEGs go through
        # the product's writer instead (SNOMED codes by name, the model and weights identified).
        infer_endpoint.nifti_to_dicom_seg = self.dicom_seg
        dicomweb_datastore.nifti_to_dicom_seg = self.dicom_seg
        sweeper = threading.Thread(target=self._sweep_idle, name="fastsam3d-expiry", daemon=True)
        sweeper.start()

    def init_infers(self) -> dict[str, Any]:
        tasks = {}
        for model, loaded in self.loaded.items():
            sessions = ImageSessions(
                ModelPredictor(loaded.model),
                max_images=self.settings.max_images,
                idle_minutes=self.settings.idle_minutes,
            )
            algorithm = SegAlgorithm(model, __version__, loaded.identity)
            tasks[model] = FastSAM3DInfer(
                model, sessions, algorithm, self.settings.labels, self.output
            )
        return tasks

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's inference, refusing an image given as a path outside MONAI Label's own
        folders (MONAI Label would segment any file of the server a client names)."""
        image = request.get("image")
        if isinstance(image, str) and image and os.path.exists(image):
            if not any(_is_within(image, root) for root in self._image_roots()):
                raise HTTPException(status_code=400, detail=f"{image!r}: not a series UID")
        return super().infer(request, datastore)

    def _image_roots(self) -> list[str]:
        """Where an image given as a path may be: uploads and sessions (MONAI Label writes them
        there), and the studies folder of a local datastore."""
        roots = [tempfile.gettempdir(), getattr(self.sessions(), "store_path", "") or ""]
        if not self.studies.startswith(("http://", "https://")):
            roots.append(self.studies)
        return [root for root in roots if root]

    def init_datastore(self) -> Any:
        datastore = super().init_datastore()
        # MONAI Label builds its DICOMweb datastore from its settings in one method; the class is
        # changed afterwards rather than that method written out again here.
        if type(datastore) is dicomweb_datastore.DICOMWebDatastore:
            datastore.__class__ = AsStoredDICOMWebDatastore
        return datastore

    def _download_dcmqi_tools(self) -> None:
        """Nothing to fetch: MONAI Label would download dcmqi from GitHub at start (failing where
        the server has no internet) for SEGs that :meth:`dicom_seg` writes instead."""

    def dicom_seg(
        self,
        series_dir: str,
        label: str,
        label_info: Any,
        file_ext: str = "*",
        use_itk: bool = True,
    ) -> str:
        """The DICOM SEG of a label, in MONAI Label's converter's place (its signature;
        ``file_ext`` and ``use_itk`` are its options and unused here). A label this app wrote
        names its model; another (a label a user corrected and saved) the first model served."""
        tasks = self._tasks()
        task = next((t for t in tasks if t.label_name_of(label)), tasks[0])
        try:
            name = task.label_name_of(label) or "segment"
            path = dicom_seg_of_label(
                series_dir, label, label_info, task.algorithm, name, self.output
            )
        except (ValueError, VolumeReadError) as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        return str(path)

    def _load(self, model: str) -> LoadedModel:
        recipe = ModelRecipe(
            model,
            weights=self.settings.weights_of(model),
            adapter=self.settings.adapter_of(model),
            device=self.settings.device,
            precision=self.settings.precision,
        )
        logger.info("loading %s (weights: %s) ...", model, recipe.weights or "released")
        loaded = recipe.load()
        logger.info("%s loaded on %s, encoder in %s", model, loaded.recipe.device,
                    loaded.precision.precision)  # fmt: skip
        return loaded

    def _tasks(self) -> list[FastSAM3DInfer]:
        return [task for task in self._infers.values() if isinstance(task, FastSAM3DInfer)]

    def _sweep_idle(self) -> None:
        while True:
            time.sleep(_EXPIRY_SWEEP_SECONDS)
            for task in self._tasks():
                dropped = task.sessions.expire()
                if dropped:
                    logger.info("%s: %d idle session(s) dropped", task.model, dropped)


def _is_within(path: str, root: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base
