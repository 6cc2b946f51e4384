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
    # Not the engine either: from a source checkout it is not importable before the first use
    # installs it (the next test proves the module loads then).
    heavy = HEAVY | {"fastsam3d_mrml"}
    assert not {name for name in loaded if name.split(".")[0] in heavy}, loaded


# Stand-ins for the Slicer application, which cannot run here: every name of qt, vtk, ctk and
# slicer is an object whose attributes and calls give more such objects, and the few base
# classes and decorators the module's classes are built from are the simplest that work.
APPLICATION_STUBS = {
    "anything.py": """
class Anything:
    def __getattr__(self, name):
        return Anything()

    def __call__(self, *args, **kwargs):
        return Anything()
""",
    "qt.py": "from anything import Anything\n\ndef __getattr__(name):\n    return Anything()\n",
    "vtk.py": "from anything import Anything\n\ndef __getattr__(name):\n    return Anything()\n",
    "ctk.py": "from anything import Anything\n\ndef __getattr__(name):\n    return Anything()\n",
    "slicer/__init__.py": (
        "from anything import Anything\n\ndef __getattr__(name):\n    return Anything()\n"
    ),
    "slicer/util.py": """
from anything import Anything

def __getattr__(name):
    return Anything()

class VTKObservationMixin:
    def __init__(self):
        pass

    def addObserver(self, *args):
        pass

    def removeObserver(self, *args):
        pass
""",
    "slicer/i18n.py": "def tr(text):\n    return text\n\ndef translate(context, text):\n"
    "    return text\n",
    "slicer/parameterNodeWrapper.py": """
from anything import Anything

def parameterNodeWrapper(cls):
    return lambda parameterNode: Anything()
""",
    "slicer/ScriptedLoadableModule.py": """
from anything import Anything

class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent

class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent

    def setup(self):
        self.layout = Anything()

    def resourcePath(self, name):
        return name

class ScriptedLoadableModuleLogic:
    def getParameterNode(self):
        return Anything()

class ScriptedLoadableModuleTest:
    pass
""",
}

# Run by a Python without its site-packages and PYTHONPATH (-S -E), so neither the engine, the
# core, numpy nor torch can be found, as in Slicer with the module added from a source checkout
# before its first use: the module must load and set up its panel.
LOAD_WITHOUT_THE_ENGINE = """
import importlib.util, sys
sys.path[:0] = sys.argv[1:3]
for name in ("fastsam3d_mrml", "fastsam3d_core", "numpy", "torch"):
    assert importlib.util.find_spec(name) is None, name + " is importable: the check means nothing"
import FastSAM3DSlicer
from anything import Anything
assert isinstance(FastSAM3DSlicer.FastSAM3DSlicerWidget, type)
assert isinstance(FastSAM3DSlicer.FastSAM3DSlicerLogic, type)
widget = FastSAM3DSlicer.FastSAM3DSlicerWidget(Anything())
widget.setup()
assert widget.logic.engineIfStarted() is None and not widget.modelPanel.remote()
print("set up")
"""


def load_module_without_the_engine(module_dir: Path, stubs: Path) -> subprocess.CompletedProcess:
    for name, text in APPLICATION_STUBS.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-S", "-E", "-c", LOAD_WITHOUT_THE_ENGINE, str(stubs), str(module_dir)],
        cwd=stubs,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_module_loads_and_sets_up_its_panel_where_the_engine_is_not_installed(tmp_path):
    """Slicer puts only ``FastSAM3DSlicer/`` on sys.path for a module added from a source
    checkout; ``fastsam3d_mrml`` and ``fastsam3d_core`` sit at the repository's root and are
    installed on first use, which the module must load to offer."""
    loaded = load_module_without_the_engine(MODULE, tmp_path)
    assert loaded.returncode == 0 and loaded.stdout.split() == ["set", "up"], loaded.stderr


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
    assert calls_to(function_node("updateTimer"), "_startTimer")
    assert calls_to(function_node("_startTimer"), "start")


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
    f, b, v, V, r); a main-window shortcut would take them over. The keys are the engine's
    table's (the page reads it too), and the module connects every action of it."""
    from fastsam3d_mrml.shortcuts import DRAWING_ACTIONS, SHORTCUTS

    (actions,) = [n for n in ast.walk(function_node("installShortcuts")) if isinstance(n, ast.Dict)]
    connected = {key.value for key in actions.keys} | set(DRAWING_ACTIONS)
    assert {action for _, action, _ in SHORTCUTS} == connected
    keys = [key for key, _, _ in SHORTCUTS]
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
    # One engine: the panel's, which FastSAM3DSlicerLogic.segment runs on too.
    assert len(constructions) == 1
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


def test_a_script_call_gives_the_panel_its_errors_back_when_it_ends():
    """``FastSAM3DSlicerLogic.segment`` adds its error collector to the engine's observer and
    removes it in ``finally``, also when the call fails (the behaviour of that observer is the
    next test's)."""
    segment = function_node("segment")
    added = calls_to(segment, "add")
    (guard,) = [node for node in ast.walk(segment) if isinstance(node, ast.Try)]
    removed = [call for statement in guard.finalbody for call in calls_to(statement, "remove")]
    assert len(added) == len(removed) == 1
    assert ast.unparse(added[0].args[0]) == ast.unparse(removed[0].args[0])
    assert any(calls_to(statement, "waitForIdle") for statement in guard.body)


def test_a_call_that_adds_an_observer_takes_the_engines_errors_and_the_panel_gets_them_after():
    """The engine's one observer (FanOutObserver) on the real engine with the oracle: while a
    call's collector is added, errors go to it and every other event to both; once removed,
    errors reach the panel again."""
    helpers = pytest.importorskip("test_slicer_mrml")  # slicer-core, the scans, the module path
    if not helpers.DATA.is_dir():
        pytest.skip(f"test scans not found at {helpers.DATA}")
    from FastSAM3DSlicerLib.observers import FanOutObserver

    from fastsam3d_core.io import read_volume
    from fastsam3d_core.session import OraclePredictor
    from fastsam3d_mrml.events import EngineObserver, ErrorCollector
    from fastsam3d_mrml.logic import InteractiveSegmentationLogic

    class Panel(EngineObserver):
        def __init__(self) -> None:
            self.errors, self.statuses = [], []

        def errorOccurred(self, error: BaseException) -> None:
            self.errors.append(error)

        def statusChanged(self, message: str) -> None:
            self.statuses.append(message)

    def placeOutside():
        engine.positiveNode.AddControlPointWorld(helpers.vtk.vtkVector3d(5000.0, 0.0, 0.0), "")
        assert engine.waitForIdle(120)

    helpers.mrml_io.ensure_segmentation_converters()
    scene = helpers.slicer.vtkMRMLScene()
    panel, call = Panel(), ErrorCollector()
    observers = FanOutObserver(panel)
    engine = InteractiveSegmentationLogic(scene, observer=observers)
    try:
        engine.setPredictor(OraclePredictor(read_volume(helpers.CT_LABEL), 1))
        engine.setInputs(helpers.read_volume_node(scene, helpers.CT_IMAGE))
        assert engine.waitForIdle(120) and panel.errors == []
        observers.add(call)
        try:
            panel.statuses.clear()
            placeOutside()
        finally:
            observers.remove(call)
        assert len(call.errors) == 1 and "outside the volume" in str(call.errors[0])
        assert panel.errors == [], "the call raises its errors: the panel must not show them too"
        assert panel.statuses and panel.statuses[-1].startswith("Error: ")
        placeOutside()
        assert len(call.errors) == 1 and len(panel.errors) == 1
        assert "outside the volume" in str(panel.errors[0])
        with pytest.raises(ValueError):
            observers.remove(call)  # added once, removed once
    finally:
        engine.cleanup()
    assert isinstance(FanOutObserver().main, EngineObserver), "without a panel, errors are logged"


def test_status_lines_translated_by_the_panel_are_the_engines():
    """The panel translates the engine's fixed status lines, looked up by the English line: a
    line the engine reworded would silently stay untranslated."""
    worded = {
        node.value
        for path in ENGINE.glob("*.py")
        for node in ast.walk(parsed(path))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    (table,) = [
        node
        for node in ast.walk(function_node("translatedStatusLines"))
        if isinstance(node, ast.Dict)
    ]
    keys = {key.value for key in table.keys}
    assert {"Ready", "Segmenting..."} <= keys and keys <= worded, keys - worded
    assert "translatedStatusLines" in ast.unparse(function_node("showEngineStatus"))


# -- first use, without the application ----------------------------------------------------


def module_install():
    """``FastSAM3DSlicerLib.install``, which needs only the standard library."""
    if str(MODULE) not in sys.path:
        sys.path.insert(0, str(MODULE))
    from FastSAM3DSlicerLib import install

    return install


def poll_until_ended(installer, shown: list) -> None:
    for _ in range(2000):
        if installer.poll(0.05, shown.append):
            return
    raise AssertionError("the installation did not end")


def test_the_installers_thread_reports_pip_lines_then_how_it_ended():
    """What the panel's timer polls while pip runs: a thread of the standard library (the
    engine, whose worker it used before, may not be installed yet)."""
    install = module_install()
    say = install.InstallStep("say hello", (sys.executable, "-c", "print('hello')"))
    fail = install.InstallStep("a failing step", (sys.executable, "-c", "raise SystemExit(3)"))
    shown: list = []
    installer = install.BackgroundSteps([say])
    poll_until_ended(installer, shown)
    assert installer.error is None and shown == ["say hello...", "hello"]
    assert installer.poll(0.0, shown.append) and len(shown) == 2, "it ends once"
    shown.clear()
    installer = install.BackgroundSteps([fail, say])
    poll_until_ended(installer, shown)
    assert isinstance(installer.error, install.InstallError), installer.error
    assert "a failing step failed (exit code 3)" in str(installer.error)
    assert shown == ["a failing step..."], "no step runs after a failure"


def test_the_engine_is_importable_here_and_not_without_site_packages():
    install = module_install()
    assert install.engine_importable()
    code = f"import sys; sys.path.insert(0, {str(MODULE)!r}); from FastSAM3DSlicerLib import "
    code += "install; print(install.engine_importable())"
    isolated = subprocess.run(
        [sys.executable, "-S", "-E", "-c", code],
        cwd=MODULE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert isolated.stdout.split() == ["False"], isolated.stderr


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
