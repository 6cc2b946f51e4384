"""The Slicer extension's CMake builds the paste-back's compiled loops against Slicer's Python.

Slicer's build tree (its SDK) cannot be had here, so ``find_package(Slicer)`` is answered by a
stand-in SlicerConfig.cmake that sets what the real one sets for this part (Slicer's
PythonLibs: ``PYTHON_INCLUDE_DIR``, ``PYTHON_LIBRARY``; the scripted modules' folders) and
defines the Slicer macros the other parts call as no-ops. The configure, the compile, the
install and the import of the module are real: this Python's headers stand for Slicer's.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTED = "lib/Slicer-5.8/qt-scripted-modules"

STAND_IN = """
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "%(scripted)s")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "%(scripted)s")
set(PYTHON_INCLUDE_DIR "%(include)s")
set(PYTHON_LIBRARY "")
set(BUILD_TESTING OFF)
macro(slicerMacroBuildScriptedModule)
endmacro()
macro(ctkMacroCompilePythonScript)
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""


def cmake(*arguments: str) -> None:
    run = subprocess.run(["cmake", *arguments], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_the_extension_builds_and_installs_the_compiled_loops(tmp_path: Path) -> None:
    include = Path(sysconfig.get_paths()["include"])
    compilers = all(shutil.which(a) or shutil.which(b) for a, b in (("cc", "gcc"), ("c++", "g++")))
    if not shutil.which("cmake") or not compilers:
        pytest.skip("no cmake or C/C++ compiler here (the extension's project enables both)")
    if not (include / "Python.h").is_file():
        pytest.skip("no Python headers here")
    slicer = tmp_path / "slicer"
    slicer.mkdir()
    (slicer / "empty.cmake").write_text("")
    config = STAND_IN % {"scripted": SCRIPTED, "include": include.as_posix()}
    (slicer / "SlicerConfig.cmake").write_text(config)
    build, installed = tmp_path / "build", tmp_path / "installed"
    cmake("-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={slicer}", "-DCMAKE_BUILD_TYPE=Release")
    cmake("--build", str(build), "--target", "FastSAM3DVoxels")
    cmake("--install", str(build), "--prefix", str(installed))

    built = Path(SCRIPTED, "fastsam3d_core", "geometry", "_voxels.so")
    for root in (build, installed):
        assert (root / built).is_file(), sorted(str(p) for p in root.rglob("_voxels*"))
    module = load_extension(installed / built)
    assert module.instruction_set() in ("avx2", "scalar")
    rng = np.random.default_rng(0)
    below, above = rng.normal(size=(2, 7, 37)).astype(np.float32)
    fractions = np.array([0.2, 0.5, 0.9], np.float32)
    out = np.zeros((3, 7, 37), bool)
    module.signs_between(below, above, fractions, out)
    expected = fractions[:, None, None] * (above - below)[None] > -below[None]
    np.testing.assert_array_equal(out, expected)


def load_extension(path: Path):
    """The extension module at ``path`` under another name (the installed ``_voxels`` of
    fastsam3d_core stays as it is)."""
    spec = importlib.util.spec_from_file_location("_voxels", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("_voxels", None)
    return module
