"""``python -m fastsam3d_core``: the ``fastsam3d`` command, also from a checkout not installed."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
