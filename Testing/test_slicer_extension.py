"""The Slicer extension's files: metadata, icons, module layout, and the widget's .ui wiring.

What the Extensions Index checklist asks for, checked on the files themselves; plus static checks
of the module script, which needs the Slicer application (Qt) to import.
"""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "FastSAM3DSlicer"
MODULE_SCRIPT = MODULE / "FastSAM3DSlicer.py"
LIB = MODULE / "FastSAM3DSlicerLib"
UI = MODULE / "Resources" / "UI" / "FastSAM3DSlicer.ui"


def cmake_values(path: Path) -> dict[str, str]:
    """``set(NAME "value")`` pairs of a CMakeLists.txt, ${...} references expanded."""
    values: dict[str, str] = {}
    for name, value in re.findall(r'set\((\w+)\s+"([^"]*)"\)', path.read_text(encoding="utf-8")):
        values[name] = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), value)
    return values


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError(f"{path} is not a PNG file")
    return struct.unpack(">II", header[16:24])


def test_extension_metadata_is_complete():
    values = cmake_values(REPO / "CMakeLists.txt")
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert values.get(key, "").strip(), f"{key} is empty"
    assert values["EXTENSION_CATEGORY"] == "Segmentation"
    assert "PyTorch" in values["EXTENSION_DEPENDS"].split()
    assert values["EXTENSION_HOMEPAGE"].startswith("https://")
    # The icon and screenshot URLs name files of this repository (on its main branch).
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in values[key].split():
            relative = url.split("/raw/main/", 1)[1]
            assert (REPO / relative).is_file(), f"{key} points to missing {relative}"
    assert png_size(REPO / values["EXTENSION_ICONURL"].split("/raw/main/", 1)[1]) == (128, 128)
    assert "add_subdirectory(FastSAM3DSlicer)" in (REPO / "CMakeLists.txt").read_text(
        encoding="utf-8"
    )
    assert (REPO / "LICENSE").is_file()


def test_module_cmake_lists_every_script_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(re.findall(r"\$\{MODULE_NAME\}(\S*\.py)", text))
    on_disk = {
        str(p.relative_to(MODULE)).replace("FastSAM3DSlicer", "", 1)
        for p in MODULE.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert listed == on_disk, "MODULE_PYTHON_SCRIPTS must list exactly the module's .py files"
    for resource in re.findall(r"(Resources/\S+)", text):
        assert (MODULE / resource.replace("${MODULE_NAME}", "FastSAM3DSlicer")).is_file()
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest" in text
    assert png_size(MODULE / "Resources/Icons/FastSAM3DSlicer.png") == (128, 128)


def test_no_generated_files_are_tracked():
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    generated = [f for f in files if re.search(r"(__pycache__|\.pyc$|\.egg-info/|^build/)", f)]
    assert generated == []


def widget_names() -> set[str]:
    root = ElementTree.parse(UI).getroot()
    return {element.get("name") for element in root.iter("widget")}


def test_the_widget_uses_only_widgets_that_the_ui_file_has():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_SCRIPT.read_text(encoding="utf-8")))
    missing = used - widget_names()
    assert not missing, f"FastSAM3DSlicer.py uses widgets the .ui lacks: {sorted(missing)}"


def test_ui_parameter_bindings_name_parameter_node_fields():
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    (wrapper,) = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    fields = {item.target.id for item in wrapper.body if isinstance(item, ast.AnnAssign)}
    root = ElementTree.parse(UI).getroot()
    bound = {
        prop.findtext("string")
        for prop in root.iter("property")
        if prop.get("name") == "SlicerParameterName"
    }
    assert bound and bound <= fields


def top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_logic_package_never_imports_qt():
    for path in LIB.glob("*.py"):
        assert not {"qt", "ctk", "PythonQt"} & all_imports(path), f"{path.name} imports Qt"


def test_module_script_imports_nothing_heavy_at_load():
    heavy = {"torch", "fastsam3d_core", "numpy", "FastSAM3DSlicerLib.logic"}
    assert not heavy & top_level_imports(MODULE_SCRIPT)
    # The Lib modules the script loads import without torch (a fresh process proves it).
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import FastSAM3DSlicerLib.install, FastSAM3DSlicerLib.models, FastSAM3DSlicerLib.worker;"
        "print('torch' in sys.modules, 'fastsam3d_core' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(MODULE)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == ["False", "False"]


def test_module_script_compiles():
    for path in [MODULE_SCRIPT, *LIB.glob("*.py")]:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_mrml_calls_of_the_widget_exist_in_the_real_classes():
    """The widget needs the application, but the MRML/VTK methods it calls can be checked on
    the real classes (slicer-core): a misspelt method would only fail inside Slicer."""
    slicer = pytest.importorskip("slicer")
    text = MODULE_SCRIPT.read_text(encoding="utf-8")
    for name in set(re.findall(r"slicer\.util\.(\w+)", text)):
        assert hasattr(slicer.util, name), f"slicer.util.{name} does not exist"
    owners = {
        "markupsLogic": slicer.vtkSlicerMarkupsLogic,
        "interaction": slicer.vtkMRMLInteractionNode,
        "selection": slicer.vtkMRMLSelectionNode,
        "node": slicer.vtkMRMLMarkupsFiducialNode,
        "slicer.mrmlScene": slicer.vtkMRMLScene,
    }
    for owner, cls in owners.items():
        for name in set(re.findall(rf"\b{re.escape(owner)}\.([A-Z]\w+)", text)):
            assert hasattr(cls, name), f"{cls.__name__}.{name} (used as {owner}.{name}) is missing"
    for name in re.findall(r"markups\.logic\(\)\.(\w+)", text):
        assert hasattr(slicer.vtkSlicerMarkupsLogic, name)
