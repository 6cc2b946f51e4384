"""The ``fastsam3d`` command line: a thin shell over the library."""

from .app import app

__all__ = ["app"]
