"""Slicer 5.6 and 5.8 run Python 3.9: the module and the engine must too.

A static check (vermin) covers syntax and the standard library's versioned APIs; a real Python
3.9, where one is installed, compiles every file and runs the module's first-use code, which
must work before anything else is installed (a check that catches what vermin cannot see, such
as slicing ``Path.parents``, new in 3.10). In a virtual environment of that Python holding the
package's declared dependencies (what pip picks there: highdicom 0.22, pydicom 2.4, NumPy < 2),
made once per run, every command reads its options (Typer on 3.9 does not evaluate string
annotations) and a DICOM SEG is written and read back.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA_DIR

REPO = Path(__file__).resolve().parents[1]
CHECKED = [REPO / "fastsam3d_core", REPO / "FastSAM3DSlicer", REPO / "Utilities"]
TARGET = "3.9"


def python39() -> str | None:
    """A working Python 3.9 interpreter: ``$FASTSAM3D_PYTHON39``, ``python3.9`` on the PATH,
    or one installed by pyenv."""
    candidates = [os.environ.get("FASTSAM3D_PYTHON39"), shutil.which("python3.9")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    for candidate in filter(None, candidates):
        try:
            version = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except OSError:
            continue
        if version == "(3, 9)":
            return candidate
    return None


def test_vermin_finds_nothing_newer_than_python_3_9():
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    if not Path(vermin).exists():
        pytest.fail("vermin is missing: pip install '.[test]'")
    result = subprocess.run(
        [vermin, f"--target={TARGET}-", "--violations", "--eval-annotations", "--no-tips"]
        + [str(path) for path in CHECKED if path.exists()],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def interpreter() -> str:
    found = python39()
    if found is None:
        message = "no Python 3.9 here (set FASTSAM3D_PYTHON39 to one)"
        if os.environ.get("FASTSAM3D_REQUIRE_PYTHON39"):  # CI: the check must run
            pytest.fail(message)
        pytest.skip(message + "; vermin still checks")
    return found


def test_every_file_compiles_on_python_3_9(interpreter):
    sources = [
        str(p) for root in CHECKED for p in root.rglob("*.py") if "__pycache__" not in p.parts
    ]
    code = (
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    compile(open(path, encoding='utf-8').read(), path, 'exec')\n"
    )
    result = subprocess.run([interpreter, "-c", code, *sources], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_first_use_code_runs_on_python_3_9(interpreter, tmp_path):
    """What the module runs before torch or the engine exist: install planning and the
    installer's thread; and the engine's worker thread, under Python 3.9 itself."""
    code = f"""
import sys
# Slicer puts the module's folder on the path; the engine comes from the checkout's root.
sys.path[:0] = [{str(REPO / "FastSAM3DSlicer")!r}, {str(REPO)!r}]
from pathlib import Path
from FastSAM3DSlicerLib import install
from fastsam3d_mrml.worker import Worker

assert install.source_tree() == Path({str(REPO)!r}), install.source_tree()
assert install.source_tree(Path({str(tmp_path)!r})) is None
lookup = {{"torch": "2.1.0"}}.get
assert install.missing_packages(lookup)[0] == "torch"
steps = install.plan_installation("python", lookup, source=install.source_tree())
assert steps[-1].command[-1] == {str(REPO)!r}, steps
install.check_torch_can_be_installed(lookup, {{}})
install.run_steps([install.InstallStep("hello", (sys.executable, "-c", "print(1)"))], print)
installer = install.BackgroundSteps([install.InstallStep("hi", (sys.executable, "-c", "print(1)"))])
lines = []
while not installer.poll(0.05, lines.append):
    pass
assert installer.error is None and lines == ["hi...", "1"], lines
worker = Worker()
results = []
worker.submit(lambda report: 6 * 7, results.append)
assert worker.wait(10) and results == [42]
worker.shutdown()
print("ok")
"""
    result = subprocess.run([interpreter, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.split()[-1] == "ok", result.stderr


def _declared_dependencies() -> list[str]:
    """pyproject.toml's run-time requirements, less torch (no command's --help or SEG needs it,
    and it is the largest download by far)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(REPO / "pyproject.toml", "rb") as file:
        requirements = tomllib.load(file)["project"]["dependencies"]
    return [r for r in requirements if re.match(r"[A-Za-z0-9_.-]+", r).group(0) != "torch"]


@pytest.fixture(scope="module")
def environment39(interpreter, tmp_path_factory) -> dict:
    """A Python 3.9 virtual environment with the declared dependencies from PyPI (about half a
    minute), the checkout on its path: ``{"python": ..., "env": ...}`` for subprocess.run."""
    venv = tmp_path_factory.mktemp("python39") / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"]
        + _declared_dependencies(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, "pip on Python 3.9 failed (PyPI?):\n" + install.stderr[-3000:]
    # The child writes UTF-8 whatever the locale (CI's may be ASCII: rich's help has box lines);
    # the runs below decode it so.
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1",
           "PYTHONIOENCODING": "utf-8"}  # fmt: skip
    return {"python": python, "env": env}


#: Every command of ``fastsam3d`` (by its words) and its parameters as Click received them from
#: Typer: ``[kind, sorted option names]``, kind "Option" or "Argument".
COMMAND_TREE = """
import json
import typer.main
from fastsam3d_core.cli.app import app

def walk(command, words, found):
    found[" ".join(words)] = sorted(
        [type(p).__name__.replace("Typer", ""), sorted(p.opts + p.secondary_opts)]
        for p in command.params
    )
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        walk(sub, words + [name], found)
    return found

print(json.dumps(walk(typer.main.get_command(app), [], {})))
"""


def _command_tree(python: str, env: dict) -> dict:
    run = subprocess.run(
        [python, "-c", COMMAND_TREE], capture_output=True, encoding="utf-8", env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_every_command_reads_its_options_on_python_3_9(environment39):
    """Each command's options and arguments on Python 3.9 are those the tests' own Python (where
    Typer evaluates annotations) sees: a module with ``from __future__ import annotations`` that
    defines a command turned every Annotated option into a plain one, or an argument."""
    on39 = _command_tree(environment39["python"], environment39["env"])
    here = _command_tree(sys.executable, {**os.environ, "PYTHONPATH": str(REPO)})
    assert on39.keys() == here.keys()
    wrong = {words: on39[words] for words in here if on39[words] != here[words]}
    assert not wrong, f"on Python 3.9: {wrong}\nexpected: { {w: here[w] for w in wrong} }"
    assert ["Option", ["--output", "-o"]] in on39["segment"]
    assert ["Option", ["--dicomweb"]] in on39["web"]


@pytest.mark.parametrize(
    "command, options",
    [("segment", ["--output", "-o", "--store", "--point"]), ("web", ["--dicomweb", "--port"])],
)
def test_help_on_python_3_9_lists_the_options(environment39, command, options):
    run = subprocess.run(
        [environment39["python"], "-m", "fastsam3d_core", command, "--help"],
        capture_output=True,
        encoding="utf-8",
        env=environment39["env"],
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    listed = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", run.stdout))
    assert set(options) <= listed, run.stdout
    usage = next(line for line in run.stdout.splitlines() if "Usage:" in line)
    assert "OUTPUT" not in usage, usage  # -o is an option, not an argument


#: Writes a SEG of two segments on the shared DICOM series and reads it back; prints what pip
#: installed and what came back.
SEG_ROUND_TRIP = """
import sys
from pathlib import Path
import numpy as np, pydicom, highdicom
from fastsam3d_core.io import (
    SegAlgorithm, Segment, dicom_series_of, read_dicom_seg, read_volume, write_dicom_seg,
)
series_dir, path = Path(sys.argv[1]), Path(sys.argv[2])
volume = read_volume(series_dir)
series = dicom_series_of(series_dir, volume)
liver = np.zeros(volume.shape, bool)
liver[100:140, 150:200, 3:9] = True
kidney = np.zeros(volume.shape, bool)
kidney[10:30, 400:420, 12:19] = True
segments = [
    Segment("liver", (0.8, 0.2, 0.1), liver), Segment("Kidney_Left", (0.1, 0.9, 0.1), kidney)
]
write_dicom_seg(path, segments, volume, series, SegAlgorithm("fastsam3d", "0", ""))
back = read_dicom_seg(path, volume, series)
category = pydicom.dcmread(path).SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0]
print(np.__version__, pydicom.__version__, highdicom.__version__)
print([b.name for b in back], all((a.mask == b.mask).all() for a, b in zip(segments, back)))
print(category.CodeValue, category.CodeMeaning)
"""


def test_dicom_seg_round_trip_on_python_3_9(environment39, tmp_path):
    """On what pip installs for Python 3.9: pydicom 2.4 has two codes named AnatomicalStructure
    (an import of fastsam3d_core.io failed), highdicom 0.22 uses np.float_ (NumPy < 2 declared)."""
    series = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_dicom_pacs"
    if not series.is_dir():
        pytest.skip(f"shared example series not found at {series}")
    run = subprocess.run(
        [environment39["python"], "-c", SEG_ROUND_TRIP, str(series), str(tmp_path / "seg.dcm")],
        capture_output=True,
        encoding="utf-8",
        env=environment39["env"],
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    versions, segments, category = run.stdout.splitlines()[-3:]
    assert versions.split()[0].startswith("1."), versions  # NumPy < 2
    assert segments == "['liver', 'Kidney_Left'] True", run.stdout
    assert category == "91723000 Anatomical Structure"
