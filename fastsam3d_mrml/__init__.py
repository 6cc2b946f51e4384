"""The interaction engine: MRML nodes in, live segments out, for every front end.

Markups control points become the core ``Session``'s clicks on one worker thread, and the
session's results are written into a MRML segmentation. Qt-free and application-free: the Slicer
module (``FastSAM3DSlicer``) and the browser page (``fastsam3d_web``) both import it by name.

Importing this package loads nothing heavy: torch and ``fastsam3d_core`` load when a model does,
so the Slicer module can show its panel before its dependencies are installed.
"""
