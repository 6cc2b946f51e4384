"""First use: PyTorch (through the PyTorch extension) and the engine's dependencies; for the
"Remote server" device, onnxruntime instead of PyTorch.

An installed extension carries the engine (``fastsam3d_core``) beside the module, so only its
few pure-Python dependencies may be missing; a module run from a source checkout installs the
engine from that checkout.

PyTorch is installed by the PyTorch extension's public API (``PyTorchUtilsLogic.installTorch``),
which picks the build that fits the computer's GPU. A PyTorch that is already imported cannot be
upgraded in place (its files are in use; on Windows they are locked): Slicer must restart first.

The widget asks once for confirmation, installs PyTorch, then runs :func:`run_steps` on a
background thread (:class:`BackgroundSteps`), so the application stays responsive while pip
downloads; output lines go to a callback. Only the standard library is used here: this module
must import before torch, numpy, the core and the engine (``fastsam3d_mrml``) exist, and must
run on Slicer 5.6/5.8's Python 3.9.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# torch.serialization.safe_globals, which safe checkpoint loading needs, arrived in 2.5.
TORCH_MINIMUM = (2, 5)
TORCH_REQUIREMENT = ">=" + ".".join(map(str, TORCH_MINIMUM))
# The engine's own requirements in Slicer: pyproject.toml's dependencies less torch (above) and
# less COMMAND_LINE_ONLY (below). An installed extension ships the engine itself (CMake copies
# fastsam3d_core beside the module), so only these come from pip; most are already in Slicer's
# Python.
CORE_DEPENDENCIES = (
    "numpy>=1.22",
    "platformdirs>=3",
    "SimpleITK>=2.2",
    "scipy>=1.9",
    "threadpoolctl>=3.1",
    "safetensors>=0.4",  # the CLIP text weights of text prompts
)
# The core's dependencies that Slicer does without (prefixes of pyproject's lines): the command
# line's parser, and DICOM SEG and DICOMweb, which in Slicer are its own DICOM module's (with the
# NumPy bound that highdicom needs on Python 3.9).
COMMAND_LINE_ONLY = ("typer", "highdicom", "dicomweb-client", "numpy<2")
# The "Remote server" device: the service encodes, this computer decodes with onnxruntime (a
# ~20 MB wheel) instead of PyTorch, which is then not installed at all.
REMOTE_DEPENDENCIES = ("onnxruntime>=1.17",)
# Lines of installer output kept for the error message when a step fails.
ERROR_TAIL_LINES = 20

VersionLookup = Callable[[str], "str | None"]


class InstallError(RuntimeError):
    """Installation failed or cannot start; the message says what the user can do."""


class RestartRequired(InstallError):
    """An older PyTorch is loaded in this process: Slicer must restart before it is updated."""


@dataclass(frozen=True)
class InstallStep:
    """One command to run, with what it does in words."""

    description: str
    command: tuple[str, ...]


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:2])


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0]


def modules_dir() -> Path:
    """The folder that holds this module: Slicer's scripted-modules folder once installed."""
    return Path(__file__).resolve().parents[1]


def bundled_core(module_dir: Path | None = None) -> bool:
    """Whether the engine's sources were installed beside the module (an extension build)."""
    return (Path(module_dir or modules_dir()) / "fastsam3d_core" / "__init__.py").is_file()


def torch_needed(lookup: VersionLookup = installed_version) -> bool:
    """Whether PyTorch is absent or older than :data:`TORCH_REQUIREMENT`."""
    torch = lookup("torch")
    return torch is None or _release(torch) < TORCH_MINIMUM


def loaded_torch_version(modules: dict | None = None) -> str | None:
    """The version of a PyTorch already imported in this process, or None."""
    torch = (sys.modules if modules is None else modules).get("torch")
    return None if torch is None else str(getattr(torch, "__version__", "0"))


def missing_packages(
    lookup: VersionLookup = installed_version,
    module_dir: Path | None = None,
    remote: bool = False,
) -> list[str]:
    """What is absent or too old: ``torch`` (none with ``remote``), then ``fastsam3d-core``,
    then the distribution names of the engine's missing dependencies (where the engine is
    bundled with the extension, or with ``remote``) and of :data:`REMOTE_DEPENDENCIES`."""
    missing = ["torch"] if not remote and torch_needed(lookup) else []
    bundled = bundled_core(module_dir)
    installed, expected = lookup("fastsam3d-core"), core_version(module_dir)
    if not bundled and (installed is None or expected not in (None, installed)):
        missing.append("fastsam3d-core")
    # An engine installed with pip brings its own dependencies, except with remote (below).
    requirements = CORE_DEPENDENCIES if bundled or remote else ()
    requirements += REMOTE_DEPENDENCIES if remote else ()
    return missing + [_distribution(r) for r in requirements if lookup(_distribution(r)) is None]


def engine_importable() -> bool:
    """Whether the interaction engine (``fastsam3d_mrml``) can be imported: bundled beside the
    module (an extension build) or installed; a module run from a source checkout installs it
    on first use."""
    return importlib.util.find_spec("fastsam3d_mrml") is not None


def source_tree(module_dir: Path | None = None) -> Path | None:
    """The repository checkout this module runs from, when it holds the core's sources.

    A module loaded from a source checkout (developers, or an extension built from it) installs
    the core from there, so module and core always match.
    """
    start = Path(module_dir or modules_dir())
    for folder in (start, start.parent, start.parent.parent):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "fastsam3d-core"' in pyproject.read_text("utf-8"):
            return folder
    return None


def core_version(module_dir: Path | None = None) -> str | None:
    """The version of the core in the checkout this module runs from (its ``__version__``, the
    one place it is written), or None outside a checkout."""
    tree = source_tree(module_dir)
    init = tree / "fastsam3d_core" / "__init__.py" if tree is not None else None
    if init is None or not init.is_file():
        return None
    found = re.search(r'^__version__ = "(.+)"$', init.read_text("utf-8"), re.M)
    return found.group(1) if found else None


def slicer_python() -> str:
    """The Python that runs Slicer's packages (``PythonSlicer`` in an installed Slicer)."""
    return shutil.which("PythonSlicer") or sys.executable


def check_torch_can_be_installed(
    lookup: VersionLookup = installed_version, modules: dict | None = None
) -> None:
    """Refuse to install PyTorch over one this process has imported already.

    Raises:
        RestartRequired: an older PyTorch is loaded; the message says to restart first.
    """
    loaded = loaded_torch_version(modules)
    if torch_needed(lookup) and loaded is not None:
        raise RestartRequired(
            f"PyTorch {loaded} is loaded in this Slicer session, and FastSAM3D needs PyTorch "
            f"{TORCH_REQUIREMENT}. It cannot be updated while it is in use: restart Slicer, "
            "then press Start again before using other PyTorch modules."
        )


def install_torch(pytorch_utils: Any = None) -> None:
    """Install PyTorch :data:`TORCH_REQUIREMENT` through the PyTorch extension (main thread:
    it shows Slicer's progress and pumps the GUI while it runs).

    Args:
        pytorch_utils: the extension's ``PyTorchUtilsLogic`` class (found if None).

    Raises:
        InstallError: the PyTorch extension is not installed, or it installed nothing.
    """
    if pytorch_utils is None:
        try:
            import PyTorchUtils  # the PyTorch extension's module, in Slicer only
        except ImportError:
            raise InstallError(
                "FastSAM3D needs PyTorch, which Slicer gets through the PyTorch extension. "
                "Install 'PyTorch' from the Extensions Manager, restart Slicer, and try again."
            ) from None
        pytorch_utils = PyTorchUtils.PyTorchUtilsLogic
    torch = pytorch_utils().installTorch(
        askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT
    )
    if torch is None:
        raise InstallError("PyTorch was not installed; FastSAM3D cannot run without it.")
    importlib.invalidate_caches()


def plan_installation(
    python: str,
    lookup: VersionLookup = installed_version,
    source: Path | None = None,
    module_dir: Path | None = None,
    remote: bool = False,
) -> list[InstallStep]:
    """The pip commands that install what is missing besides PyTorch (see
    :func:`install_torch`), in order; empty if nothing is.

    Args:
        python: the interpreter to install into.
        lookup: installed versions by distribution name.
        source: a checkout to install the core from (see :func:`source_tree`).
        module_dir: where to look for a bundled engine (see :func:`bundled_core`).
        remote: for the "Remote server" device: no PyTorch, onnxruntime instead; the core
            from a checkout is installed without its declared dependencies (they name torch).

    Raises:
        InstallError: the engine is neither bundled nor in a source checkout.
    """
    missing = missing_packages(lookup, module_dir, remote)
    steps = []
    requirements = CORE_DEPENDENCIES + REMOTE_DEPENDENCIES
    dependencies = [r for r in requirements if _distribution(r) in missing]
    if dependencies:
        steps.append(
            InstallStep(
                "Installing the FastSAM3D engine's dependencies",
                (python, "-m", "pip", "install", "--no-input", *dependencies),
            )
        )
    if "fastsam3d-core" in missing:
        if source is None:
            raise InstallError(
                "The FastSAM3D engine (fastsam3d_core) is missing from this copy of the module, "
                "and it is not published on PyPI. Reinstall the FastSAM3D extension from the "
                "Extensions Manager, or run the module from a source checkout."
            )
        no_deps = ("--no-deps",) if remote else ()
        steps.append(
            InstallStep(
                f"Installing the FastSAM3D engine ({source})",
                (python, "-m", "pip", "install", "--no-input", *no_deps, str(source)),
            )
        )
    return steps


def hidden_console(os_name: str = os.name) -> dict[str, Any]:
    """``subprocess.Popen`` options that keep a console window from opening on Windows, as
    ``slicer.util.launchConsoleProcess`` does; none elsewhere."""
    if os_name != "nt":
        return {}
    info = subprocess.STARTUPINFO()  # type: ignore[attr-defined]
    info.dwFlags |= subprocess.STARTF_USESHOWWINDOW  # type: ignore[attr-defined]
    info.wShowWindow = 0  # SW_HIDE
    return {"startupinfo": info}


def run_steps(steps: list[InstallStep], log: Callable[[str], None]) -> None:
    """Run the steps one after another, streaming their output lines to ``log``.

    Safe to call from a background thread (no Qt, no MRML).

    Raises:
        InstallError: a step failed; the message holds the step and its last output lines.
    """
    for step in steps:
        log(step.description + "...")
        tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
        environment = dict(os.environ, PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        try:
            process = subprocess.Popen(
                step.command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=environment,
                **hidden_console(),
            )
        except OSError as error:
            raise InstallError(f"{step.description} could not start: {error}") from error
        for line in process.stdout or ():
            tail.append(line.rstrip())
            log(line.rstrip())
        if process.wait() != 0:
            raise InstallError(
                f"{step.description} failed (exit code {process.returncode}). If you are "
                "offline, connect and try again; behind a proxy, set HTTPS_PROXY.\n"
                + "\n".join(tail)
            )
    importlib.invalidate_caches()


class BackgroundSteps:
    """:func:`run_steps` on a thread of its own, started at once; the GUI thread polls it.

    Inside Slicer, Qt's event loop holds the GIL while it idles, so this thread runs (and reads
    pip's output) only while :meth:`poll` waits with the GIL released. The thread is a daemon:
    quitting Slicer does not wait for it (pip, a process of its own, ends by itself).

    Attributes:
        error: why the steps failed (an :class:`InstallError` or what else was raised), once
            :meth:`poll` said they ended; None while they run or if they succeeded.
    """

    # Ends the reports, with the error or None: (_ENDED, error). Every other report is a line.
    _ENDED = object()

    def __init__(self, steps: list[InstallStep]) -> None:
        self.error: BaseException | None = None
        self._reports: queue.Queue = queue.Queue()  # output lines, then one _ENDED
        self._ended = False
        self._thread = threading.Thread(
            target=self._run, args=(steps,), name="FastSAM3D install", daemon=True
        )
        self._thread.start()

    def _run(self, steps: list[InstallStep]) -> None:
        try:
            run_steps(steps, self._reports.put)
        except BaseException as error:  # handed to the GUI thread, which shows it
            self._reports.put((self._ENDED, error))
        else:
            self._reports.put((self._ENDED, None))

    def poll(self, wait_s: float, show: Callable[[str], None]) -> bool:
        """Hand the lines reported since the last poll to ``show``, waiting up to ``wait_s``
        for more; True once the steps ended (then :attr:`error` says how)."""
        deadline = time.monotonic() + wait_s
        while not self._ended:
            try:
                report = self._reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(report, tuple) and report[0] is self._ENDED:
                self._ended, self.error = True, report[1]
            else:
                show(report)
        return self._ended
