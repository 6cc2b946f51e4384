"""Running ``fastsam3d finetune`` in tests (the fixtures ``seeded_checkpoint`` and
``liver_listing`` are in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import SHARED_DATA_DIR

CT_DIR = SHARED_DATA_DIR / "totalseg_ct"
LIVER = 5  # TotalSegmentator's liver: 15 % of its crop, large enough for a random model to learn
FASTSAM3D = str(Path(sys.executable).with_name("fastsam3d"))


def run_cli(arguments: list[str], **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", **options.pop("env", {})}
    return subprocess.run(  # the CLI writes UTF-8; CI's locale is ASCII
        arguments, capture_output=True, encoding="utf-8", timeout=600, env=env, **options
    )


def finetune_command(checkpoint: Path, listing: Path, output: Path, steps: int, *extra: str):
    return [FASTSAM3D, "finetune", str(listing), "--weights", str(checkpoint), "--label",
            str(LIVER), "--steps", str(steps), "--device", "cpu", "--clicks", "2",
            "-o", str(output), *extra]  # fmt: skip
