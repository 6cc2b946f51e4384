"""MONAI Label's server, in an environment this product shares with it.

``python -m fastsam3d_monailabel.launch start_server --app DIR --studies URL ...`` takes MONAI
Label's own arguments and runs its ``monailabel`` command in this process. One thing differs:
MONAI Label 0.8.5 imports pydicom-seg at start, whose last release (0.4.1) reads
``SegmentationStorage`` from a private pydicom module that pydicom 3 removed; this product's
DICOM SEG writer (highdicom) needs pydicom 3 on Python >= 3.10. The name is given where pydicom
lacks it, in this process only, before MONAI Label is imported: no installed file is changed.
Run the server with one worker (MONAI Label's default): other workers would start without it.
"""

from __future__ import annotations

import importlib.util
import sys
import types

#: Packages installed without their declared requirements (docs/monailabel.md says why).
NO_DEPS_REQUIREMENTS = ("monailabel==0.8.5", "pydicom-seg==0.4.1")
_REMOVED_PYDICOM_MODULE = "pydicom._storage_sopclass_uids"


def install_hint() -> str:
    """The two commands that install MONAI Label beside this product (docs/monailabel.md)."""
    return (
        "pip install 'fastsam3d-core[monailabel]' && "
        f"pip install --no-deps {' '.join(NO_DEPS_REQUIREMENTS)}"
    )


def give_pydicom_seg_its_uid_module() -> None:
    """Make ``pydicom._storage_sopclass_uids`` importable where pydicom 3 dropped it."""
    try:
        found = importlib.util.find_spec(_REMOVED_PYDICOM_MODULE) is not None
    except ModuleNotFoundError:  # no pydicom at all: MONAI Label will say so itself
        return
    if found or _REMOVED_PYDICOM_MODULE in sys.modules:
        return
    import pydicom.uid

    module = types.ModuleType(_REMOVED_PYDICOM_MODULE)
    module.SegmentationStorage = pydicom.uid.SegmentationStorage  # type: ignore[attr-defined]
    sys.modules[_REMOVED_PYDICOM_MODULE] = module


def main() -> None:
    """Run ``monailabel`` with this process's arguments."""
    give_pydicom_seg_its_uid_module()
    from monailabel.main import Main

    sys.argv[0] = "monailabel"
    Main().run()


if __name__ == "__main__":
    main()
