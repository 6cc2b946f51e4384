"""The FastSAM3DSlicer module's code that needs no widget: MRML I/O, the worker thread, the
session runner, model loading, dependency installation and the interactive logic.

Only :mod:`.logic` and :mod:`.mrml_io` import ``slicer``/``vtk``; nothing here imports Qt.
"""
