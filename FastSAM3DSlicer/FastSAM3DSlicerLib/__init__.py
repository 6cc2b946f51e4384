"""What the FastSAM3DSlicer module needs besides its main script, and that only Slicer needs.

Widget helpers (Qt): ``model_panel`` (the model fields and their settings), ``session_tools``
(the session's buttons and shortcuts), ``first_use`` (installing the dependencies). Without Qt:
``install`` (what to install, and how), ``observers`` (the widget's observer of the engine),
``selftest`` (the module's self-test).

The interaction engine itself (MRML I/O, the worker, the session runner, model loading) is the
``fastsam3d_mrml`` package, shared with the browser page.
"""
