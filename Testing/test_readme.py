"""What the README promises: its Python examples run as written, the packaged example CT and its
spleen point are what they say, and CI runs the README's test command with the shared data."""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REQUIRE_SHARED_DATA, SHARED_DATA_DIR
from scipy import ndimage

from fastsam3d_core import build_model
from fastsam3d_core.examples import SPLEEN_LABEL, SPLEEN_POINT_RAS, example_ct_path
from fastsam3d_core.io import read_volume
from fastsam3d_core.weights.download import ENV_CACHE_DIR
from fastsam3d_core.weights.registry import WEIGHTS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"
ATTRIBUTION = REPO / "fastsam3d_core" / "examples" / "ATTRIBUTION.md"
SHARED_CT = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_3mm.nii.gz"
# TotalSegmentator's own multi-label prediction for the example CT, on its grid.
SHARED_SEG = SHARED_DATA_DIR / "totalseg_ct" / "example_seg_3mm.nii.gz"
needs_shared_scans = pytest.mark.skipif(
    not (SHARED_CT.is_file() and SHARED_SEG.is_file()),
    reason=f"shared example scans not found in {SHARED_CT.parent}",
)

PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Blocks for 3D Slicer's Python console use the application's `slicer.util`, which exists only
# inside Slicer; the Slicer logic they call is tested in Testing/test_slicer_*.py.
SLICER_CONSOLE = re.compile(r"\bslicer\.util\.")
# Seconds per README block: a FastSAM3D encoder run and 20 decoder passes on a 2-core CPU, plus
# importing torch.
BLOCK_TIMEOUT_S = 300
# How far inside the spleen its point must be: a few voxels (3 mm) from every other structure.
SPLEEN_MARGIN_MM = 15.0


def readme_blocks(pattern: re.Pattern[str]) -> list[str]:
    """The contents of the README's fenced code blocks of one language, in order."""
    return pattern.findall(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def seeded_weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights cache holding seeded FastSAM3D weights under the registry's file name.

    The real weights cannot be downloaded in tests. A cached file for which no hash is published
    (FastSAM3D's) or recorded by a first download is used as it is by ``resolve_weights``.
    """
    entry = WEIGHTS["fastsam3d"]
    assert entry.sha256 is None, "fastsam3d now has a published SHA-256: seeded weights fail it"
    cache = tmp_path_factory.mktemp("weights-cache")
    torch.manual_seed(0)
    model = build_model(entry.architecture)
    torch.save({"model_state_dict": model.state_dict()}, cache / entry.filename)
    return cache


def test_readme_python_examples_run(seeded_weights_cache: Path, tmp_path: Path) -> None:
    """Every ```python block of the README runs, as written, in a fresh interpreter."""
    blocks = readme_blocks(PYTHON_BLOCK)
    runnable = [block for block in blocks if not SLICER_CONSOLE.search(block)]
    assert len(runnable) >= 2, "the README's Python examples were not found"
    for block in blocks:
        compile(block, str(README), "exec")  # the Slicer console's blocks too
    environment = {**os.environ, ENV_CACHE_DIR: str(seeded_weights_cache)}
    failures = []
    for number, block in enumerate(runnable, 1):
        run = subprocess.run(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
        if run.returncode != 0:
            failures.append(f"block {number}:\n{block}--- exit {run.returncode}:\n{run.stderr}")
    assert not failures, "README Python examples failed:\n" + "\n".join(failures)


@needs_shared_scans
def test_packaged_example_ct_is_the_shared_scan_unmodified() -> None:
    assert filecmp.cmp(example_ct_path(), SHARED_CT, shallow=False)


def test_attribution_gives_the_packaged_file_sha256() -> None:
    digest = hashlib.sha256(example_ct_path().read_bytes()).hexdigest()
    assert f"SHA-256: `{digest}`" in ATTRIBUTION.read_text(encoding="utf-8")


@needs_shared_scans
def test_spleen_point_lies_deep_inside_the_spleen() -> None:
    ct, labels = read_volume(example_ct_path()), read_volume(SHARED_SEG)
    np.testing.assert_allclose(labels.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)  # the same grid
    spleen = labels.array == SPLEEN_LABEL
    # Padded so that the space outside the scan counts as not spleen: the spleen runs past the
    # scan's first and last slices.
    depth_mm = ndimage.distance_transform_edt(np.pad(spleen, 1), sampling=labels.spacing)
    ijk = np.round(labels.ras_to_index(np.array(SPLEEN_POINT_RAS))).astype(int)
    assert labels.contains_index(ijk)
    assert depth_mm[tuple(ijk + 1)] >= SPLEEN_MARGIN_MM


def test_ci_runs_the_readme_test_command_and_requires_shared_data() -> None:
    test_commands = [block.strip() for block in readme_blocks(BASH_BLOCK) if "pytest" in block]
    assert len(test_commands) == 1
    lines = CI_RUN.read_text(encoding="utf-8").strip().splitlines()
    assert lines[-1] == test_commands[0]
    assert f"export {REQUIRE_SHARED_DATA}=1" in lines


@pytest.mark.parametrize("shared_present", [False, True])
def test_required_shared_data_stops_the_run_only_when_missing(
    tmp_path: Path, shared_present: bool
) -> None:
    """This suite's conftest in a checkout with or without ``../shared``, the variable set."""
    testing = tmp_path / "repository" / "Testing"
    testing.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), testing)
    (testing / "test_nothing.py").write_text("def test_nothing():\n    pass\n", encoding="utf-8")
    if shared_present:
        for folder in ("golden", "data"):
            (tmp_path / "shared" / folder).mkdir(parents=True)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(testing)],
        cwd=testing.parent,
        env={**os.environ, REQUIRE_SHARED_DATA: "1"},
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    output = run.stdout + run.stderr
    if shared_present:
        assert run.returncode == 0, output
    else:
        assert run.returncode == pytest.ExitCode.USAGE_ERROR, output
        assert f"{tmp_path / 'shared' / 'golden'} and {tmp_path / 'shared' / 'data'}" in output


def test_the_client_install_line_lists_every_dependency_but_torch():
    """The README's torch-free client install: the package's dependencies less torch, plus
    onnxruntime (what Testing/test_serving.py runs without torch)."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    readme = README.read_text(encoding="utf-8")
    found = re.search(r"pip install --no-deps \. && pip install ([\w ]+)`", readme)
    assert found, "the README lost its client install line"
    declared = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in project["dependencies"]}
    assert set(found.group(1).split()) == declared - {"torch"} | {"onnxruntime"}
