"""First use: PyTorch (through the PyTorch extension) and the engine into Slicer's Python.

An installed extension carries the engine (``fastsam3d_core``) beside the module, so only its
few pure-Python dependencies may be missing; a module run from a source checkout installs the
engine from that checkout.

The widget asks once for confirmation, then runs :func:`run_steps` on a background thread, so
the application stays responsive while pip downloads; output lines go to a callback. Only the
standard library is used here: this module must import before torch and the core exist.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# torch.serialization.safe_globals, which safe checkpoint loading needs, arrived in 2.5.
TORCH_REQUIREMENT = ">=2.5"
TORCH_MINIMUM = (2, 5)
# The core release this module was written against; equal to pyproject.toml's version.
CORE_VERSION = "0.1.0"
# The engine's own requirements: pyproject.toml's dependencies less torch. An installed extension
# ships the engine itself (CMake copies fastsam3d_core beside the module), so only these come
# from pip; most are already in Slicer's Python.
CORE_DEPENDENCIES = (
    "numpy>=1.22",
    "typer>=0.12",
    "platformdirs>=3",
    "SimpleITK>=2.2",
    "scipy>=1.9",
)
# light-the-torch picks the torch build that fits the NVIDIA driver (the PyTorch extension's way).
LIGHT_THE_TORCH_REQUIREMENT = "light-the-torch>=0.5"
# Lines of installer output kept for the error message when a step fails.
ERROR_TAIL_LINES = 20

VersionLookup = Callable[[str], "str | None"]


class InstallError(RuntimeError):
    """Installation failed or cannot start; the message says what the user can do."""


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


def missing_packages(
    lookup: VersionLookup = installed_version, module_dir: Path | None = None
) -> list[str]:
    """What is absent or too old: ``torch``, then ``fastsam3d-core``, or, where the engine is
    bundled with the extension, the distribution names of its missing dependencies."""
    missing = []
    torch = lookup("torch")
    if torch is None or _release(torch) < TORCH_MINIMUM:
        missing.append("torch")
    if bundled_core(module_dir):
        missing += [_distribution(r) for r in CORE_DEPENDENCIES if lookup(_distribution(r)) is None]
    elif lookup("fastsam3d-core") != CORE_VERSION:
        missing.append("fastsam3d-core")
    return missing


def source_tree(module_dir: Path | None = None) -> Path | None:
    """The repository checkout this module runs from, when it holds the core's sources.

    A module loaded from a source checkout (developers, or an extension built from it) installs
    the core from there, so module and core always match.
    """
    start = Path(module_dir or modules_dir())
    for folder in (start, *start.parents[:2]):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "fastsam3d-core"' in pyproject.read_text("utf-8"):
            return folder
    return None


def slicer_python() -> str:
    """The Python that runs Slicer's packages (``PythonSlicer`` in an installed Slicer)."""
    return shutil.which("PythonSlicer") or sys.executable


def pytorch_extension_arguments() -> list[str] | None:
    """light-the-torch arguments as the PyTorch extension builds them; None without it."""
    try:
        import PyTorchUtils  # the PyTorch extension's module, in Slicer only
    except ImportError:
        return None
    build = getattr(PyTorchUtils.PyTorchUtilsLogic, "_getPipInstallArguments", None)
    if build is None:
        return ["install", f"torch{TORCH_REQUIREMENT}"]
    return list(build(None, TORCH_REQUIREMENT))


def plan_installation(
    python: str,
    torch_arguments: list[str] | None,
    lookup: VersionLookup = installed_version,
    source: Path | None = None,
    module_dir: Path | None = None,
) -> list[InstallStep]:
    """The commands that install what is missing, in order (empty if nothing is).

    Args:
        python: the interpreter to install into.
        torch_arguments: light-the-torch arguments from :func:`pytorch_extension_arguments`.
        lookup: installed versions by distribution name.
        source: a checkout to install the core from (see :func:`source_tree`).
        module_dir: where to look for a bundled engine (see :func:`bundled_core`).

    Raises:
        InstallError: torch is missing and the PyTorch extension is not installed, or the
            engine is neither bundled nor in a source checkout.
    """
    missing = missing_packages(lookup, module_dir)
    steps = []
    if "torch" in missing:
        if torch_arguments is None:
            raise InstallError(
                "FastSAM3D needs PyTorch, which Slicer gets through the PyTorch extension. "
                "Install 'PyTorch' from the Extensions Manager, restart Slicer, and try again."
            )
        if lookup("light-the-torch") is None:
            steps.append(
                InstallStep(
                    "Installing light-the-torch (used by the PyTorch extension)",
                    (python, "-m", "pip", "install", LIGHT_THE_TORCH_REQUIREMENT),
                )
            )
        steps.append(
            InstallStep(
                f"Installing PyTorch {TORCH_REQUIREMENT} for this computer's GPU or CPU",
                (python, "-m", "light_the_torch", *torch_arguments),
            )
        )
    dependencies = [r for r in CORE_DEPENDENCIES if _distribution(r) in missing]
    if dependencies:
        steps.append(
            InstallStep(
                "Installing the FastSAM3D engine's dependencies",
                (python, "-m", "pip", "install", *dependencies),
            )
        )
    if "fastsam3d-core" in missing:
        if source is None:
            raise InstallError(
                "The FastSAM3D engine (fastsam3d_core) is missing from this copy of the module, "
                "and it is not published on PyPI. Reinstall the FastSAM3D extension from the "
                "Extensions Manager, or run the module from a source checkout."
            )
        steps.append(
            InstallStep(
                f"Installing the FastSAM3D engine ({source})",
                (python, "-m", "pip", "install", str(source)),
            )
        )
    return steps


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


def restart_needed() -> bool:
    """Whether an old torch was already imported in this process (a restart loads the new)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return _release(getattr(torch, "__version__", "0")) < TORCH_MINIMUM
