"""The Slicer extension's files: metadata, icons, module layout, and the widget's .ui wiring.

What the Extensions Index checklist asks for, checked on the files themselves; plus static checks
of the module's Python files (the main script and FastSAM3DSlicerLib), which need the Slicer
application (Qt) to import: what they import, how they talk to the engine, and that every string
they show goes through Slicer's translation function.
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
# The widget's helpers in FastSAM3DSlicerLib: the only files there that may import Qt.
WIDGET_HELPERS = {"first_use.py", "model_panel.py", "session_tools.py"}
HEAVY = {"torch", "numpy", "fastsam3d_core"}


def module_sources() -> list[Path]:
    """The main script and every file of FastSAM3DSlicerLib."""
    return [MODULE_SCRIPT, *sorted(LIB.glob("*.py"))]


def module_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in module_sources())


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


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
    used = set(re.findall(r"\bui\.(\w+)", module_text()))
    missing = used - widget_names()
    assert used and not missing, f"the module uses widgets the .ui lacks: {sorted(missing)}"


def test_ui_parameter_bindings_name_parameter_node_fields():
    tree = parsed(MODULE_SCRIPT)
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
    """Modules a file imports when it is imported (not inside functions); ``from . import x``
    in FastSAM3DSlicerLib reads as ``FastSAM3DSlicerLib.x``."""
    names = set()
    for node in parsed(path).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and path.parent == LIB:
            package = "FastSAM3DSlicerLib" + (f".{node.module}" if node.module else "")
            names |= {f"{package}.{alias.name}" for alias in node.names} | {package}
    return names


def imported_at_load() -> set[str]:
    """What Slicer imports when it loads the module: the main script's top-level imports,
    and, through the FastSAM3DSlicerLib files among them, theirs."""
    seen: set[str] = set()
    pending = [MODULE_SCRIPT]
    while pending:
        for name in top_level_imports(pending.pop()) - seen:
            seen.add(name)
            path = MODULE / (name.replace(".", "/") + ".py")
            if name.startswith("FastSAM3DSlicerLib.") and path.is_file():
                pending.append(path)
    return seen


def all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_logic_package_never_imports_qt():
    """Only the widget's helpers may import Qt; the rest of FastSAM3DSlicerLib and the engine
    run without it."""
    assert WIDGET_HELPERS <= {path.name for path in LIB.glob("*.py")}
    for path in [*LIB.glob("*.py"), *ENGINE.glob("*.py")]:
        if path.parent == LIB and path.name in WIDGET_HELPERS:
            continue
        assert not {"qt", "ctk", "PythonQt"} & all_imports(path), f"{path.name} imports Qt"


def test_module_imports_nothing_heavy_at_load():
    loaded = imported_at_load()
    assert {"FastSAM3DSlicerLib.first_use", "FastSAM3DSlicerLib.install"} <= loaded, loaded
    heavy = HEAVY | {"fastsam3d_mrml.logic", "fastsam3d_mrml.events"}
    assert not {name for name in loaded if name.split(".")[0] in heavy or name in heavy}
    # The engine modules among them import nothing heavy either (a fresh process proves it).
    engine = sorted(name for name in loaded if name.split(".")[0] == "fastsam3d_mrml")
    assert engine
    code = (
        "import importlib, sys; sys.path.insert(0, sys.argv[1]);"
        "[importlib.import_module(name) for name in sys.argv[2:]];"
        "print(*[name in sys.modules for name in ('torch', 'numpy', 'fastsam3d_core')])"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code, str(MODULE), "FastSAM3DSlicerLib.install", *engine],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert imported == ["False", "False", "False"], engine


def test_module_script_compiles():
    for path in [*module_sources(), *ENGINE.glob("*.py")]:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_mrml_calls_of_the_widget_exist_in_the_real_classes():
    """The widget needs the application, but the MRML/VTK methods it calls can be checked on
    the real classes (slicer-core): a misspelt method would only fail inside Slicer."""
    slicer = pytest.importorskip("slicer")
    text = module_text()
    called = set(re.findall(r"slicer\.util\.(\w+)", text))
    assert {"errorDisplay", "tryWithErrorDisplay", "confirmOkCancelDisplay"} <= called
    for name in called:
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
    """The one function or method of this name in the module's files."""
    (function,) = [
        node
        for path in module_sources()
        for node in ast.walk(parsed(path))
        if isinstance(node, ast.FunctionDef) and node.name == name
    ]
    return function


def class_node(path: Path, name: str) -> ast.ClassDef:
    (cls,) = [n for n in parsed(path).body if isinstance(n, ast.ClassDef) and n.name == name]
    return cls


def calls_to(function: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == name
    ]


def test_errors_are_shown_once_and_no_wait_cursor_covers_a_dialog_or_flickers():
    # One guard, so that a failure never shows two dialogs (a guarded slot calling another).
    assert module_text().count("tryWithErrorDisplay(") == 1
    assert calls_to(function_node("guarded"), "tryWithErrorDisplay")
    cursor = {}
    for call in calls_to(function_node("setup"), "guarded"):
        slot = getattr(call.args[0], "attr", None)
        keywords = {k.arg: k.value for k in call.keywords}
        cursor[slot] = getattr(keywords.get("waitCursor"), "value", True)
    # The timer ticks every 10 ms (a wait cursor flickers); Start and Export open dialogs.
    assert [cursor.get(slot) for slot in ("onTimer", "onStart", "export")] == [False] * 3
    # After installing, Start runs from its own guarded call, not inside the timer's guard.
    (later,) = calls_to(function_node("_onInstalled"), "singleShot")
    assert calls_to(later, "guarded")


def test_the_poll_timer_keeps_running_after_an_error_in_a_result():
    # The guard shows the error and re-raises it: the timer must still be restarted (or
    # stopped) then, or the remaining jobs' results are never collected.
    (guard,) = [node for node in ast.walk(function_node("onTimer")) if isinstance(node, ast.Try)]
    assert any(calls_to(statement, "_deliverResults") for statement in guard.body)
    assert any(calls_to(statement, "updateTimer") for statement in guard.finalbody)
    assert calls_to(function_node("updateTimer"), "start")


def test_nothing_starts_another_install_while_pytorch_installs():
    # The PyTorch extension's installer processes GUI events while it downloads (gigabytes):
    # Start and Test connection must be off meanwhile, and after it the action that asked runs.
    installTorch = function_node("_installTorch")
    (guard,) = [
        n for n in ast.walk(installTorch) if isinstance(n, ast.Try) and calls_to(n, "install_torch")
    ]
    assigned = [n for n in ast.walk(installTorch) if isinstance(n, ast.Assign)]
    flag = [a for a in assigned if getattr(a.targets[0], "attr", "") == "_installingTorch"]
    assert [a.value.value for a in flag] == [True, False]
    assert any(flag[1] in ast.walk(statement) for statement in guard.finalbody)
    assert "_installingTorch" in ast.unparse(function_node("installing"))
    assert "self.installing" in ast.unparse(function_node("dependenciesReady"))
    buttons = ast.unparse(function_node("updateButtons"))
    assert "_firstUse.installing" in buttons and "testConnectionButton.enabled" in buttons
    installed = ast.unparse(function_node("_onInstalled"))
    assert "_afterInstall" in installed and "onStart" not in installed


def test_entering_the_module_shows_the_segment_points_now_go_to():
    # Points placed while the module was hidden can start a new segment (Ctrl+N, then a point):
    # the parameter node's segment must follow, or Start would reopen the old one.
    enter = function_node("enter")
    assert calls_to(enter, "initializeParameterNode") and calls_to(enter, "showCurrentSegment")


def test_help_and_tooltips_say_how_points_are_deleted_and_placement_stops():
    text = module_text() + UI.read_text(encoding="utf-8")
    assert "right-click to delete" not in text and "right-click it to delete" not in text
    assert "press Delete" in text
    assert calls_to(function_node("place"), "SwitchToViewTransformMode")


def test_single_key_shortcuts_leave_slicers_slice_view_keys_alone():
    """Keys that Slicer's slice views use themselves (vtkMRMLSliceIntersectionWidget: g, t,
    f, b, v, V, r); a main-window shortcut would take them over."""
    (keys_dict,) = [
        n for n in ast.walk(function_node("installShortcuts")) if isinstance(n, ast.Dict)
    ]
    keys = [key.value for key in keys_dict.keys]
    assert {"P", "N", "Shift+T", "H", "D", "Ctrl+Z"} <= set(keys), keys
    assert not {key.lower() for key in keys if len(key) == 1} & set("gtfbvr")


# -- the engine's events -------------------------------------------------------------------


def public_methods(cls: ast.ClassDef) -> set[str]:
    return {
        node.name
        for node in cls.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    }


def test_the_module_assigns_no_engine_callback_and_gives_the_engine_an_observer():
    """Events, not attributes: the engine hears about its front end through the observer it
    is made with; nothing assigns an attribute named ``...Callback``."""
    for path in module_sources():
        for node in ast.walk(parsed(path)):
            targets = {ast.Assign: "targets", ast.AugAssign: "target", ast.AnnAssign: "target"}
            if type(node) not in targets:
                continue
            value = getattr(node, targets[type(node)])
            for target in value if isinstance(value, list) else [value]:
                for part in ast.walk(target):
                    name = getattr(part, "attr", "")
                    assert not name.endswith("Callback"), f"{path.name}:{node.lineno}: {name}"
    constructions = [
        call
        for call in ast.walk(parsed(MODULE_SCRIPT))
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", None) == "InteractiveSegmentationLogic"
    ]
    assert constructions
    assert all("observer" in {k.arg for k in call.keywords} for call in constructions)


def test_the_widget_observer_forwards_every_engine_event_to_a_widget_method():
    events = public_methods(class_node(ENGINE / "events.py", "EngineObserver"))
    observer = class_node(LIB / "observers.py", "WidgetObserver")
    assert public_methods(observer) == events
    widget = class_node(MODULE_SCRIPT, "FastSAM3DSlicerWidget")
    widgetMembers = {n.name for n in widget.body if isinstance(n, ast.FunctionDef)} | {
        node.attr
        for node in ast.walk(widget)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
    }
    # The helpers reach the widget as self._widget: every name they use must exist on it.
    for path in LIB.glob("*.py"):
        used = set(re.findall(r"self\._widget\.(\w+)", path.read_text(encoding="utf-8")))
        assert used <= widgetMembers, f"{path.name}: {sorted(used - widgetMembers)}"
    forwarded = {
        method.name: re.findall(r"_widget\.(\w+)", ast.unparse(method))
        for method in observer.body
        if isinstance(method, ast.FunctionDef) and method.name in events
    }
    assert all(len(names) == 1 for names in forwarded.values()), forwarded


def test_menu_labels_translated_by_the_panel_are_the_engines():
    """The panel translates the engine's menu labels that are words, looked up by the English
    label: a label the engine renamed would silently stay untranslated."""
    models = pytest.importorskip("fastsam3d_mrml.models")
    labels = {
        label
        for choices in (models.MODEL_CHOICES, models.DEVICE_CHOICES, models.PRECISION_CHOICES)
        for _, label in choices
    }
    (table,) = [
        node
        for node in ast.walk(function_node("translatedMenuLabels"))
        if isinstance(node, ast.Dict)
    ]
    keys = {key.value for key in table.keys}
    assert keys and keys <= labels, keys - labels


# -- translation ---------------------------------------------------------------------------

# Calls whose arguments the user reads, and properties whose value the user reads.
SHOWN_BY_CALLS = {
    "errorDisplay",
    "warningDisplay",
    "infoDisplay",
    "confirmOkCancelDisplay",
    "confirmYesNoDisplay",
    "showStatusMessage",
    "tryWithErrorDisplay",
    "getSaveFileName",
    "getOpenFileName",
    "setText",
    "setToolTip",
    "setWindowTitle",
    "setPlaceholderText",
    "addItem",
    "insert",  # into the first-use dialog's list of packages
    "guarded",
    "showStatus",
}
SHOWN_PROPERTIES = {
    "text",
    "toolTip",
    "title",
    "categories",
    "helpText",
    "acknowledgementText",
    "placeholderText",
    "windowTitle",
    "statusTip",
}
TRANSLATION_CALLS = {"_", "translate"}


def is_translation(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) in TRANSLATION_CALLS


def untranslated_words(expression: ast.AST) -> list[str]:
    """String literals with words in ``expression`` that reach the user without passing
    through ``_()`` or ``translate()`` (whose arguments are not searched)."""
    found, pending = [], [expression]
    while pending:
        node = pending.pop()
        if is_translation(node):
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.search(r"[A-Za-z]{2}", node.value):
                found.append(node.value)
        elif isinstance(node, ast.JoinedStr):  # an f-string: its literal parts
            literal = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
            if re.search(r"[A-Za-z]{2}", literal):
                found.append(ast.unparse(node))
        else:
            pending.extend(ast.iter_child_nodes(node))
    return found


def translation_problems(tree: ast.AST) -> list[str]:
    """Every shown string that escapes translation, and every ``_()`` that lupdate cannot
    extract (its argument must be one literal, placeholders filled by ``.format``)."""
    problems = []

    def check(expression: ast.AST, where: str) -> None:
        problems.extend(f"{where}: {text}" for text in untranslated_words(expression))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in SHOWN_BY_CALLS:
                for argument in [*node.args, *(k.value for k in node.keywords)]:
                    check(argument, f"{name}() line {node.lineno}")
            else:
                for keyword in node.keywords:
                    if keyword.arg in SHOWN_PROPERTIES:
                        check(keyword.value, f"{keyword.arg}= line {node.lineno}")
            if is_translation(node) and getattr(node.func, "id", None) == "_":
                (text,) = node.args
                if not (isinstance(text, ast.Constant) and isinstance(text.value, str)):
                    problems.append(f"_() line {node.lineno}: {ast.unparse(text)}")
        elif isinstance(node, ast.Assign):
            if any(getattr(t, "attr", None) in SHOWN_PROPERTIES for t in node.targets):
                check(node.value, f"property line {node.lineno}")
        elif isinstance(node, ast.Raise) and node.exc is not None:
            check(node.exc, f"raise line {node.lineno}")  # shown by the guard's dialog
    return problems


def test_the_translation_check_finds_untranslated_strings():
    bad = """
slicer.util.errorDisplay("Oops", windowTitle="FastSAM3D")
self.ui.statusLabel.text = "Ready" if done else _("Busy")
raise ValueError(f"no volume {name}")
self.guarded(slot, _(f"{key} failed."))
listing.insert(0, "PyTorch, through the extension")
"""
    problems = translation_problems(ast.parse(bad))
    assert len(problems) == 6, problems
    good = """
slicer.util.errorDisplay(str(error), windowTitle=_("FastSAM3D"))
self.ui.statusLabel.text = _("Saved {path}").format(path=path)
self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
self.guarded(self.onSegmentSelected, "")
raise RuntimeError(str(errors[0])) from errors[0]
"""
    assert translation_problems(ast.parse(good)) == []


def test_every_string_the_module_shows_goes_through_translation():
    """As in Slicer's own modules (``from slicer.i18n import tr as _``), so the extension can
    be translated like Slicer; install.py and selftest.py run without the application (their
    messages are the installer's and the developer's)."""
    shown = [MODULE_SCRIPT, *(LIB / name for name in sorted(WIDGET_HELPERS))]
    for path in shown:
        assert "from slicer.i18n import tr as _" in path.read_text(encoding="utf-8"), path.name
        problems = translation_problems(parsed(path))
        assert problems == [], f"{path.name}: {problems}"
