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
ENGINE = REPO / "fastsam3d_mrml"
UI = MODULE / "Resources" / "UI" / "FastSAM3DSlicer.ui"


def cmake_values(path: Path) -> dict[str, str]:
    """``set(NAME "value")`` pairs of a CMakeLists.txt, read as the Extensions Index's checker
    reads them: by a regular expression, with no variable expanded."""
    text = path.read_text(encoding="utf-8")
    return dict(re.findall(r'set\s*\((\w+)\s*"([^"]+)"[ ]*\)', text))


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
    # The Index downloads the icon and screenshots: literal http(s) URLs of this repository's
    # files on its main branch.
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_HOMEPAGE"):
        for url in values[key].split():
            assert url.startswith("https://") and "${" not in url, f"{key}: {url}"
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in values[key].split():
            relative = url.split("/main/", 1)[1]
            assert (REPO / relative).is_file(), f"{key} points to missing {relative}"
    assert png_size(REPO / values["EXTENSION_ICONURL"].split("/main/", 1)[1]) == (128, 128)
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
    for path in [*LIB.glob("*.py"), *ENGINE.glob("*.py")]:
        assert not {"qt", "ctk", "PythonQt"} & all_imports(path), f"{path.name} imports Qt"


def test_module_script_imports_nothing_heavy_at_load():
    heavy = {"torch", "fastsam3d_core", "numpy", "fastsam3d_mrml.logic"}
    assert not heavy & top_level_imports(MODULE_SCRIPT)
    # The Lib modules the script loads import without torch (a fresh process proves it).
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import FastSAM3DSlicerLib.install, fastsam3d_mrml.models, fastsam3d_mrml.worker;"
        "print('torch' in sys.modules, 'fastsam3d_core' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(MODULE)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == ["False", "False"]


def test_module_script_compiles():
    for path in [MODULE_SCRIPT, *LIB.glob("*.py"), *ENGINE.glob("*.py")]:
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


def function_node(name: str) -> ast.FunctionDef:
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    (function,) = [
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == name
    ]
    return function


def calls_to(function: ast.FunctionDef, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == name
    ]


def test_errors_are_shown_once_and_no_wait_cursor_covers_a_dialog_or_flickers():
    text = MODULE_SCRIPT.read_text(encoding="utf-8")
    # One guard, so that a failure never shows two dialogs (a guarded slot calling another).
    assert text.count("tryWithErrorDisplay(") == 1
    assert calls_to(function_node("_guarded"), "tryWithErrorDisplay")
    cursor = {}
    for call in calls_to(function_node("setup"), "_guarded"):
        slot = getattr(call.args[0], "attr", None)
        keywords = {k.arg: k.value for k in call.keywords}
        cursor[slot] = getattr(keywords.get("waitCursor"), "value", True)
    # The timer ticks every 10 ms (a wait cursor flickers); Start and Export open dialogs.
    assert [cursor.get(slot) for slot in ("onTimer", "onStart", "onExport")] == [False] * 3
    # After installing, Start runs from its own guarded call, not inside the timer's guard.
    (later,) = calls_to(function_node("_onInstalled"), "singleShot")
    assert calls_to(later, "_guarded")


def test_the_poll_timer_keeps_running_after_an_error_in_a_result():
    # The guard shows the error and re-raises it: the timer must still be restarted (or
    # stopped) then, or the remaining jobs' results are never collected.
    (guard,) = [node for node in ast.walk(function_node("onTimer")) if isinstance(node, ast.Try)]
    assert any(calls_to(statement, "_deliverResults") for statement in guard.body)
    assert any(calls_to(statement, "_updateTimer") for statement in guard.finalbody)
    assert calls_to(function_node("_updateTimer"), "start")


def test_nothing_starts_another_install_while_pytorch_installs():
    # The PyTorch extension's installer processes GUI events while it downloads (gigabytes):
    # Start and Test connection must be off meanwhile, and after it the action that asked runs.
    ready = function_node("_dependenciesReady")
    (guard,) = [
        n for n in ast.walk(ready) if isinstance(n, ast.Try) and calls_to(n, "install_torch")
    ]
    assigned = [n for n in ast.walk(ready) if isinstance(n, ast.Assign)]
    flag = [a for a in assigned if getattr(a.targets[0], "attr", "") == "_installingTorch"]
    assert [a.value.value for a in flag] == [True, False]
    assert any(flag[1] in ast.walk(statement) for statement in guard.finalbody)
    buttons = ast.unparse(function_node("updateButtons"))
    assert "_installingTorch" in buttons and "testConnectionButton.enabled" in buttons
    installed = ast.unparse(function_node("_onInstalled"))
    assert "_afterInstall" in installed and "onStart" not in installed


def test_entering_the_module_shows_the_segment_points_now_go_to():
    # Points placed while the module was hidden can start a new segment (Ctrl+N, then a point):
    # the parameter node's segment must follow, or Start would reopen the old one.
    enter = function_node("enter")
    assert calls_to(enter, "initializeParameterNode") and calls_to(enter, "_showCurrentSegment")


def test_help_and_tooltips_say_how_points_are_deleted_and_placement_stops():
    text = MODULE_SCRIPT.read_text(encoding="utf-8") + UI.read_text(encoding="utf-8")
    assert "right-click to delete" not in text and "right-click it to delete" not in text
    assert "press Delete" in text
    assert calls_to(function_node("onPlace"), "SwitchToViewTransformMode")


def test_single_key_shortcuts_leave_slicers_slice_view_keys_alone():
    """Keys that Slicer's slice views use themselves (vtkMRMLSliceIntersectionWidget: g, t,
    f, b, v, V, r); a main-window shortcut would take them over."""
    (keys_dict,) = [
        n for n in ast.walk(function_node("_installShortcuts")) if isinstance(n, ast.Dict)
    ]
    keys = [key.value for key in keys_dict.keys]
    assert {"P", "N", "Shift+T", "H", "D", "Ctrl+Z"} <= set(keys), keys
    assert not {key.lower() for key in keys if len(key) == 1} & set("gtfbvr")
