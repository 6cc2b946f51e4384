"""FastSAM3D's MONAI Label app (``fastsam3d monailabel`` writes this file into the app folder).

MONAI Label imports ``main.py`` from the folder given to ``--app`` and takes from it the class
whose direct base is ``MONAILabelApp``; the app itself lives in the installed package.
"""

from fastsam3d_monailabel.app import FastSAM3DApp

__all__ = ["FastSAM3DApp"]
