"""What the FastSAM3DSlicer module needs besides its main script, and that only Slicer needs.

Widget helpers (Qt): ``model_panel`` (the model fields and their settings), ``session_tools``
(the session's buttons and shortcuts), ``first_use`` (installing the dependencies). Without Qt:
``install`` (what to install, and how; standard library only), ``observers`` (the panel's
observer of the engine, and the one the engine is given), ``selftest`` (the module's self-test).

The interaction engine itself (MRML I/O, the worker and the core session on it, model loading)
is the ``fastsam3d_mrml`` package, shared with the browser page. Only ``observers`` imports it
when loaded, and the module loads ``observers`` only once the engine imports.
"""
