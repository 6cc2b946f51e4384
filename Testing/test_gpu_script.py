"""``benchmarks/gpu.sh``, the prepared GPU check, as a GPU machine runs it: from the checkout, with
neither SimpleITK, platformdirs nor threadpoolctl importable. Here on the CPU and CI-sized."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GOLDEN_DIR

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = '''
import importlib.abc, sys

class _Missing(importlib.abc.MetaPathFinder):
    """As on the GPU machines: these packages are not installed."""
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("SimpleITK", "platformdirs", "threadpoolctl"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, _Missing())
'''


def run_gpu_script(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    """benchmarks/gpu.sh on the CPU, CI-sized, with the GPU machines' missing packages made
    unimportable; ``settings`` override its environment."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # this venv's python first
    env = {**os.environ, "PYTHONPATH": str(site), "DEVICE": "cpu", "QUICK": "1",
           "PRECISIONS": "float32 int8", "COMPILE": "0", "TRAINING_STEPS": "2",
           "GOLDEN": str(GOLDEN_DIR), "OMP_NUM_THREADS": "2", "PATH": path, **settings}  # fmt: skip
    return subprocess.run(["bash", str(ROOT / "benchmarks/gpu.sh"), str(tmp_path / "report")],
                          env=env, capture_output=True, encoding="utf-8", timeout=900)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_gpu_script_runs_with_only_torch_numpy_scipy_and_typer(tmp_path):
    run = run_gpu_script(tmp_path)
    out = tmp_path / "report"
    assert run.returncode == 0, run.stderr[-3000:]
    assert "note: a synthetic crop" in run.stdout  # SimpleITK really was missing
    golden = (out / "golden.txt").read_text(encoding="utf-8")
    assert golden.count(": OK") == 2, golden
    bench = json.loads((out / "bench-precision.json").read_text(encoding="utf-8"))
    assert bench["results"] and all(r["device"] == "cpu" for r in bench["results"])
    int8 = next(r for r in bench["results"] if r["precision"] == "int8")
    assert [a["source"] for a in int8["agreement"]] == ["bench", "golden fastsam3d"]
    training = json.loads((out / "training.json").read_text(encoding="utf-8"))
    runs = [" ".join(r["run"].split()[:2]) for r in training["rows"]]
    assert runs == ["finetune fastsam3d", "finetune sam-med3d-turbo", "finetune --text",
                    "distill sam-med3d-turbo"], runs  # fmt: skip
    assert all(r["step_s"] > 0 for r in training["rows"])
    tests = (out / "gpu-tests.txt").read_text(encoding="utf-8")
    assert "7 passed, 1 skipped" in tests, tests  # on the CPU: all but int8's refusal


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_failing_part_of_the_gpu_script_does_not_stop_the_others(tmp_path):
    run = run_gpu_script(
        tmp_path, PRECISIONS="float32 float64", GOLDEN=str(tmp_path / "none"), GPU_TESTS="0"
    )
    assert run.returncode == 1
    assert "FAILED: bench-precision" in run.stderr and "failed: bench-precision" in run.stderr
    assert not (tmp_path / "report/bench-precision.json").exists()
    assert (tmp_path / "report/training.json").is_file()  # the part after it still ran
