"""MONAI Label's DICOMweb datastore, retrieving series as the PACS stores them.

MONAI Label 0.8.5 retrieves a series with a plain ``application/dicom`` request, which asks the
server to transcode; Orthanc cannot transcode JPEG 2000 and answers 500, so such a series could
not be opened. Here a series is retrieved as stored, by the product's own DICOMweb code (its
checks, one-line errors and timeout), into MONAI Label's cache folder, which MONAI Label then
converts and serves as before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fastapi import HTTPException
from monailabel.datastore.dicom import DICOMWebDatastore

from fastsam3d_core.io.dicomweb import DicomwebError, SeriesURL, is_uid, retrieve_series

_STUDY_UID_TAG = "0020000D"
_SERIES_UID_TAG = "0020000E"


class AsStoredDICOMWebDatastore(DICOMWebDatastore):
    """A :class:`DICOMWebDatastore` whose images are series retrieved as stored."""

    def get_image_uri(self, image_id: str) -> str:
        # The id comes from the request and names a folder: only a UID may (no "../").
        if not is_uid(image_id):
            raise HTTPException(status_code=400, detail=f"{image_id!r}: not a series UID")
        folder = Path(os.path.realpath(os.path.join(self._datastore.image_path(), image_id)))
        if not folder.is_dir() or not any(folder.iterdir()):
            self._retrieve(image_id, folder)
        uri = Path(super().get_image_uri(image_id))
        # On a series' first use MONAI Label converts it to a temporary NIfTI, copies that into
        # its cache and returns the temporary file, never deleted: patient data left in /tmp,
        # and another file name than later requests get. The cached copy is returned instead.
        cached = folder.with_name(f"{image_id}.nii.gz")
        temporary = Path(tempfile.gettempdir()).resolve()
        if uri != cached and cached.is_file() and uri.resolve().parent == temporary:
            uri.unlink(missing_ok=True)
            return str(cached)
        return str(uri)

    def _retrieve(self, series_uid: str, folder: Path) -> None:
        """The series' instances into ``folder``, whole or not at all (a partial folder would be
        taken for the cached series next time)."""
        base = str(self._client.base_url)
        try:
            found = self._client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})
        except Exception as error:  # dicomweb-client raises requests' errors as they come
            raise HTTPException(502, f"DICOMweb server {base}: {type(error).__name__}") from None
        studies = [item[_STUDY_UID_TAG]["Value"][0] for item in found
                   if item.get(_SERIES_UID_TAG, {}).get("Value") == [series_uid]]  # fmt: skip
        if not studies:
            raise HTTPException(404, f"no series {series_uid} on the DICOMweb server {base}")
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            retrieve_series(self._client, SeriesURL(base, studies[0], series_uid), partial)
        except DicomwebError as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise HTTPException(502, str(error)) from None
        if folder.is_dir():
            folder.rmdir()  # empty (checked by the caller)
        partial.rename(folder)
