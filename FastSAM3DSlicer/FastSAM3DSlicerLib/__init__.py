"""What the FastSAM3DSlicer module needs besides its widget, and that only Slicer needs:
installing the dependencies on first use, and the module's self-test.

The interaction engine itself (MRML I/O, the worker, the session runner, model loading) is the
``fastsam3d_mrml`` package, shared with the browser page.
"""
