"""The house rules that keep the code readable, checked on the files themselves.

- The import contract in ``pyproject.toml`` (``[tool.importlinter]``): layers, no circles at any
  depth. ``lint-imports`` (import-linter) checks it; this file runs it as CI runs everything
  else, and checks that every module has a layer.
- Importing the package root ``fastsam3d_core`` loads none of its modules (its names load on
  first use).
- No product code imports our own packages through ``importlib.import_module`` or
  ``__import__``: such an import is hidden from import-linter, so it could climb a layer unseen.
- The Slicer module (not a package on the path, so outside import-linter's view) imports only the
  engine and the core, never the other front ends.
- No code outside the tests and ``Utilities/`` edits ``sys.path``: a package is imported by its
  name, from an installed wheel or an editable checkout.
- No product file over 500 lines, no product function over 80.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLICER_MODULE = REPO / "FastSAM3DSlicer"
# Folders whose code may edit sys.path: the tests' helpers, developer scripts.
MAY_EDIT_SYS_PATH = {"Testing", "Utilities"}
GENERATED = {"__pycache__", "build", "dist", "node_modules", "venv"}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
# Methods of a list that only read it.
READ_ONLY_LIST_METHODS = {"copy", "count", "index"}


def import_contract() -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(REPO / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["tool"]["importlinter"]


def top_level_packages() -> list[str]:
    """The checkout's importable packages: folders at its root with an ``__init__.py``."""
    return sorted(path.name for path in REPO.iterdir() if (path / "__init__.py").is_file())


def product_folders() -> list[Path]:
    """The packages a user installs, and the Slicer module."""
    return [REPO / name for name in top_level_packages()] + [SLICER_MODULE]


def is_generated(part: str) -> bool:
    """A folder of build output, caches or a virtual environment, not of sources."""
    return part.startswith(".") or part.endswith(".egg-info") or part in GENERATED


def python_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*.py")):
        if not any(is_generated(part) for part in path.relative_to(REPO).parts):
            yield path


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_lint_imports_keeps_every_contract():
    """Runs the real tool from the checkout's root, with this environment's import-linter."""
    lint_imports = Path(sysconfig.get_path("scripts")) / "lint-imports"
    if not lint_imports.exists():
        if sys.version_info < (3, 10):
            pytest.skip("import-linter needs Python 3.10 or newer")
        pytest.fail(f"{lint_imports} is missing: pip install -e '.[test]'")
    # --no-cache: the tool would otherwise write its cache into the checkout.
    # Its report has non-ASCII characters: UTF-8 both ways, whatever the machine's locale (CI
    # may have none, where Python would read the pipe as ASCII).
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_and_module_has_a_layer():
    """A new package or top-level module fails here until the contract gives it a layer."""
    contract = import_contract()
    assert sorted(contract["root_packages"]) == top_level_packages(), (
        "[tool.importlinter] root_packages must list the checkout's packages"
    )
    (layers,) = [c["layers"] for c in contract["contracts"] if c["type"] == "layers"]
    named = {part.strip() for layer in layers for part in layer.split("|")}
    unplaced = []
    for package in top_level_packages():
        if package in named:
            continue
        for path in sorted((REPO / package).iterdir()):
            is_module = path.suffix == ".py" and path.name != "__init__.py"
            if is_module or (path / "__init__.py").is_file():
                module = f"{package}.{path.stem}"
                if module not in named:
                    unplaced.append(module)
    assert not unplaced, f"modules in no layer of pyproject.toml's import contract: {unplaced}"


def test_importing_the_package_root_loads_none_of_its_modules():
    """Every ``import fastsam3d_core.<module>`` runs the root first: were it to import a module,
    that module (``serving``, say) would sit under every layer."""
    script = (
        "import sys\n"
        "import fastsam3d_core\n"
        "print(sorted(name for name in sys.modules if name.startswith('fastsam3d_core.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_package_root_still_gives_its_names():
    """The root imports nothing when imported (test above): its names load on first use."""
    import fastsam3d_core

    for name in fastsam3d_core.__all__:
        home = importlib.import_module(f"fastsam3d_core.{fastsam3d_core._HOMES[name]}")
        assert getattr(fastsam3d_core, name) is getattr(home, name)
    with pytest.raises(AttributeError):
        fastsam3d_core.NoSuchName  # noqa: B018


def imported_modules(path: Path) -> set[str]:
    """Every absolute import in a file, at any depth (functions too), as a dotted name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_slicer_module_imports_the_engine_and_the_core_but_no_other_front_end():
    other_front_ends = (
        "fastsam3d_web", "fastsam3d_monailabel", "fastsam3d_core.cli", "fastsam3d_core.__main__"
    )
    found = {}
    for path in python_files(SLICER_MODULE):
        for name in imported_modules(path):
            if any(name == end or name.startswith(end + ".") for end in other_front_ends):
                found.setdefault(relative(path), []).append(name)
    assert not found, f"the Slicer module imports another front end: {found}"
    packages = {
        name.split(".")[0]
        for path in python_files(SLICER_MODULE)
        for name in imported_modules(path)
    }
    assert "fastsam3d_mrml" in packages, "the Slicer module no longer imports the engine"


def our_package_names() -> set[str]:
    """What our own code is imported as: the checkout's packages and the Slicer module's."""
    return set(top_level_packages()) | {"FastSAM3DSlicer", "FastSAM3DSlicerLib"}


def is_dynamic_import(function: ast.expr) -> bool:
    """``importlib.import_module``, ``import_module``, ``__import__``, ``importlib.__import__``."""
    if isinstance(function, ast.Name):
        return function.id in {"import_module", "__import__"}
    return isinstance(function, ast.Attribute) and function.attr in {"import_module", "__import__"}


def hidden_imports_of(tree: ast.AST, packages: set[str]) -> Iterator[int]:
    """Line numbers that import one of ``packages`` by a call, out of import-linter's sight: a
    name of ours, a relative name (``"..io"``), or one computed at run time (it could be ours).
    A call naming another package (``import_module("torch")``) is not one."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and is_dynamic_import(node.func)):
            continue
        name = node.args[0] if node.args else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            yield node.lineno
        elif name.value.startswith(".") or name.value.split(".")[0] in packages:
            yield node.lineno


def test_hidden_imports_are_found():
    """The finder itself: each way of importing our code by a call is seen; imports of other
    packages and plain import statements are not."""
    ours = {"fastsam3d_core"}
    hidden = "\n".join([
        "import importlib", "importlib.import_module('..io', __package__).read_volume",
        "importlib.import_module('fastsam3d_core.serving')", "__import__('fastsam3d_core')",
        "from importlib import import_module", "import_module(f'.{name}', __name__)",
        "importlib.__import__('fastsam3d_core.io')", "import_module(name)",
    ])  # fmt: skip
    assert sorted(hidden_imports_of(ast.parse(hidden), ours)) == [2, 3, 4, 6, 7, 8]
    plain = "\n".join([
        "import importlib", "importlib.import_module('torch')", "__import__('numpy.linalg')",
        "import fastsam3d_core.io", "from .io import read_volume", "importlib.util.find_spec('x')",
    ])  # fmt: skip
    assert list(hidden_imports_of(ast.parse(plain), ours)) == []


def test_no_product_code_imports_our_packages_out_of_import_linters_sight():
    """A layer climbed through ``importlib`` would keep every contract and still be a circle."""
    found = []
    for folder in product_folders():
        for path in python_files(folder):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [f"{relative(path)}:{n}" for n in hidden_imports_of(tree, our_package_names())]
    assert not found, f"our packages imported by a call, unseen by import-linter: {found}"


def is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def sys_path_edits(tree: ast.AST) -> Iterator[int]:
    """Line numbers that change the import path: ``sys.path.insert(…)``, ``sys.path = …``,
    ``sys.path[0] = …``, ``site.addsitedir(…)``, ``from sys import path``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, owner = node.func.attr, node.func.value
            if is_sys_path(owner) and method not in READ_ONLY_LIST_METHODS:
                yield node.lineno
            if method == "addsitedir" and isinstance(owner, ast.Name) and owner.id == "site":
                yield node.lineno
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                if is_sys_path(target) or (
                    isinstance(target, ast.Subscript) and is_sys_path(target.value)
                ):
                    yield node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            if any(alias.name == "path" for alias in node.names):
                yield node.lineno


def test_sys_path_edits_are_found():
    """The finder itself: each way of editing the path is seen; reading it is not."""
    edits = "\n".join([
        "import sys, site", "sys.path.insert(0, 'x')", "sys.path.append('x')",
        "sys.path = ['x']", "sys.path[0] = 'x'", "sys.path += ['x']", "site.addsitedir('x')",
        "from sys import path", "del sys.path[0]",
    ])  # fmt: skip
    assert sorted(sys_path_edits(ast.parse(edits))) == list(range(2, 10))
    reads = "import sys\nprint(sys.path)\nsys.path.index('x')\nfirst = sys.path[0]\n"
    assert list(sys_path_edits(ast.parse(reads))) == []


def test_no_code_outside_the_tests_and_utilities_edits_sys_path():
    found = []
    for path in python_files(REPO):
        if path.relative_to(REPO).parts[0] not in MAY_EDIT_SYS_PATH:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [f"{relative(path)}:{line}" for line in sys_path_edits(tree)]
    assert not found, f"sys.path is edited outside Testing/ and Utilities/: {found}"


def test_no_product_file_is_over_500_lines():
    too_long = {}
    for folder in product_folders():
        for path in python_files(folder):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_FILE_LINES:
                too_long[relative(path)] = lines
    assert not too_long, f"product files over {MAX_FILE_LINES} lines: {too_long}"


def test_no_product_function_is_over_80_lines():
    """From the ``def`` line to the last line of the body (decorators not counted)."""
    too_long = {}
    for folder in product_folders():
        for path in python_files(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        too_long[f"{relative(path)}:{node.lineno} {node.name}"] = lines
    assert not too_long, f"product functions over {MAX_FUNCTION_LINES} lines: {too_long}"
