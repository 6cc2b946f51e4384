"""FastSAM3D as a MONAI Label app: OHIF and Slicer's MONAILabel module as clients.

MONAI Label (a server beside the PACS, with its own users, DICOMweb proxy and OHIF) loads the app
from ``monailabel_app/main.py``; ``fastsam3d monailabel`` starts it. Clicks arrive as voxel
indices of the image MONAI Label gives the task and go through the core's :class:`Session` (one
per image: crops, the embedding cache, the mask prompt), so a request adding a point to the
previous ones runs only the decoder.

The modules, lowest first: ``points`` (what a request's clicks are), ``sessions`` (requests onto
sessions, bounded and expiring), ``label_files`` (the label a client asks for, and its DICOM SEG),
``infer_task`` and ``app`` (MONAI Label's classes; only these import ``monailabel``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The app as MONAI Label loads it: its ``main.py``, copied into the app folder.
APP_MAIN = Path(__file__).resolve().parent / "monailabel_app" / "main.py"
#: The first line of that file, by which an app folder is recognised as this app's.
_APP_MARK = APP_MAIN.read_text(encoding="utf-8").splitlines()[0] if APP_MAIN.exists() else ""


def default_app_folder() -> Path:
    """Where ``fastsam3d monailabel`` keeps the app folder: the per-user data folder."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("fastsam3d")) / "monailabel-app"


def prepare_app_folder(folder: str | os.PathLike[str]) -> Path:
    """Make ``folder`` the app folder to give ``monailabel start_server --app``: it holds this
    app's ``main.py``, and MONAI Label writes its logs and models beside it, so it must be a
    folder the server may write to (not the installed package).

    Raises:
        ValueError: ``folder`` already holds another app's ``main.py`` (it is left as it is).
        OSError: the folder cannot be made or written.
    """
    folder = Path(folder)
    main = folder / "main.py"
    text = APP_MAIN.read_text(encoding="utf-8")
    if main.exists():
        current = main.read_text(encoding="utf-8", errors="replace")
        if current == text:
            return folder
        if not current.startswith(_APP_MARK):
            raise ValueError(f"{folder}: holds another MONAI Label app; choose another --app-dir")
    folder.mkdir(parents=True, exist_ok=True)
    temporary = main.with_name("main.py.partial")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(main)
    return folder
