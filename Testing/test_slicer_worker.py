"""The engine's and the Slicer module's parts that need no MRML: the worker thread, the session
jobs that run on it, the install.

The worker is tested with real threads; its session jobs with the oracle on a real scan.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

MODULE_DIR = Path(__file__).resolve().parents[1] / "FastSAM3DSlicer"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from FastSAM3DSlicerLib import install  # noqa: E402

from fastsam3d_mrml.worker import Worker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = SHARED / "data"


# -- worker -----------------------------------------------------------------------------------


def test_each_job_end_is_told_on_the_worker_thread_before_any_poll():
    """The page wakes its polling task from there: the result is collected as the job ends,
    not at the next poll (a failing job too)."""
    told = []
    ended = threading.Event()

    def finished():
        told.append(threading.current_thread().name)
        ended.set()

    worker = Worker(on_finished=finished)
    worker.submit(lambda report: 1)
    assert ended.wait(10) and told == ["FastSAM3D worker"]
    ended.clear()
    worker.submit(lambda report: 1 / 0, on_error=lambda error: None)
    assert ended.wait(10) and len(told) == 2
    assert worker.pending == 2, "told before poll() handed the results back"
    assert worker.poll(1) == 2
    assert worker.shutdown()


def test_jobs_run_in_order_on_one_thread_and_results_arrive_on_poll():
    worker = Worker()
    threads, results = [], []
    gate = threading.Event()

    def job(n):
        def run(report):
            gate.wait(5)
            threads.append(threading.current_thread().name)
            report(f"job {n}", n / 10)
            return n * n

        return run

    for n in range(5):
        worker.submit(job(n), results.append)
    assert worker.pending == 5
    time.sleep(0.05)
    assert worker.poll() == 0 and results == []  # nothing finishes while the first job waits
    gate.set()
    assert worker.wait(10)
    assert results == [0, 1, 4, 9, 16]
    assert set(threads) == {"FastSAM3D worker"} and threading.current_thread().name not in threads
    assert worker.shutdown()


def test_progress_and_errors_are_delivered_on_the_polling_thread():
    progress, errors, seen_on = [], [], []
    worker = Worker(on_progress=lambda m, f: progress.append((m, f)), on_error=errors.append)

    def failing(report):
        report("halfway", 0.5)
        raise ValueError("bad point")

    worker.submit(failing)
    worker.submit(lambda report: 1, lambda value: seen_on.append(threading.current_thread()))
    assert worker.wait(10)
    assert progress == [("halfway", 0.5)]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    assert seen_on == [threading.current_thread()]  # the later job still ran
    worker.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(lambda report: None)


def test_polling_waits_for_urgent_jobs_and_only_briefly_for_background_ones():
    from fastsam3d_mrml.worker import BACKGROUND_WAIT_S

    worker = Worker()
    release = threading.Event()
    worker.submit(lambda report: release.wait(10), label="download", urgent=False)
    start = time.perf_counter()
    assert worker.poll(1.0) == 0
    assert time.perf_counter() - start < BACKGROUND_WAIT_S + 0.2, "a background job held the GUI"
    release.set()
    assert worker.wait(10)
    worker.submit(lambda report: time.sleep(0.05))
    start = time.perf_counter()
    assert worker.poll(1.0) == 1, "an urgent job's result comes within the wait"
    assert time.perf_counter() - start < 0.9
    worker.shutdown()


def test_shutdown_drops_queued_jobs_and_ends_the_thread():
    worker = Worker()
    started = threading.Event()
    worker.submit(lambda report: (started.set(), time.sleep(0.2)))
    for _ in range(3):
        worker.submit(lambda report: pytest.fail("a queued job ran after shutdown"))
    started.wait(5)
    assert worker.shutdown(timeout=5)
    assert not worker.alive


def test_shutdown_tells_idle_and_delivers_nothing_after_it():
    told: list[bool] = []
    delivered = []
    worker = Worker(on_busy=told.append)
    started = threading.Event()
    worker.submit(lambda report: (started.set(), time.sleep(0.2)), delivered.append)
    worker.submit(lambda report: None, delivered.append)
    started.wait(5)
    assert worker.shutdown(timeout=5)
    assert told == [True, False], "the front end would show busy forever"
    assert worker.pending == 0 and worker.poll() == 0 and delivered == []
    assert told == [True, False]


def test_a_callback_that_raises_still_leaves_busy_told_right():
    told: list[bool] = []
    worker = Worker(on_busy=told.append)

    def refuse(value):
        raise ValueError("a result's callback failed")

    worker.submit(lambda report: 1, refuse)
    with pytest.raises(ValueError, match="callback failed"):
        worker.wait(10)
    assert worker.pending == 0 and told == [True, False], "idle was never told"
    # With another job still pending after the failing one, busy stays, until it is delivered.
    release = threading.Event()
    worker.submit(lambda report: 1, refuse)
    worker.submit(lambda report: release.wait(10))
    with pytest.raises(ValueError):
        worker.wait(10)
    assert worker.pending == 1 and told == [True, False, True]
    release.set()
    assert worker.wait(10) and told == [True, False, True, False]
    worker.shutdown()


def test_the_engine_events_models_and_worker_import_without_numpy_torch_or_the_core():
    """The Slicer module imports these before its dependencies are installed."""
    engine = ("fastsam3d_mrml", "fastsam3d_mrml.events", "fastsam3d_mrml.models",
              "fastsam3d_mrml.worker")  # fmt: skip
    code = (
        "import importlib, sys; [importlib.import_module(name) for name in sys.argv[1:]];"
        "print(*[name in sys.modules for name in ('numpy', 'torch', 'fastsam3d_core')])"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code, *engine], capture_output=True, text=True, check=True
    ).stdout.split()
    assert imported == ["False", "False", "False"]


# -- the session on the worker -----------------------------------------------------------------


def test_busy_is_told_when_jobs_queue_and_once_all_are_delivered():
    told: list[bool] = []
    worker = Worker(on_busy=told.append)
    release = threading.Event()
    worker.submit(lambda report: release.wait(10))
    # Its callback queues one more job: idle only once that one is delivered too.
    worker.submit(lambda report: None, lambda _: worker.submit(lambda report: None))
    assert told == [True] and worker.poll() == 0
    release.set()
    assert worker.wait(10)
    assert told == [True, False]
    worker.submit(lambda report: None)
    assert worker.wait(10) and told == [True, False, True, False]
    worker.shutdown()


@pytest.mark.skipif(not DATA.is_dir(), reason="test scans not found")
def test_worker_jobs_hand_back_the_core_changes_which_later_edits_leave_as_they_were():
    from test_session import CountingPredictor, deepest_voxel

    from fastsam3d_core import Session
    from fastsam3d_core.io import read_volume
    from fastsam3d_core.session import Click, OraclePredictor
    from fastsam3d_mrml.worker import WorkerState

    image = read_volume(DATA / "totalseg_ct/example_ct_3mm.nii.gz")
    labels = read_volume(DATA / "totalseg_ct/example_seg_3mm.nii.gz")
    predictor = CountingPredictor(OraclePredictor(labels, 1))
    state = WorkerState()
    with pytest.raises(RuntimeError, match="no model is loaded yet"):
        state.require_session()
    state.session = Session(image, predictor)
    reports: list[str] = []

    def report(message, fraction=None):
        reports.append(message)

    point = image.index_to_ras(deepest_voxel(labels.array == 1))
    update = state.edit_point("add", Click(point, True, "P1"), report)
    assert update.encoder_ran and predictor.encodes == 1 and reports[0].startswith("Preparing")
    (change,) = update.changes
    full = np.zeros(image.shape, bool)
    full[tuple(slice(a, b) for a, b in zip(change.lo_ijk, change.hi_ijk))] = change.mask
    assert np.array_equal(full, state.session.mask().astype(bool))
    written = change.mask.copy()
    moved = state.edit_point("move", Click(point + [3.0, 0, 0], True, "P1"), report)
    assert predictor.encodes == 1 and len(reports) == 1  # inside its crop: decoder only
    assert moved.clicks == (Click(point + [3.0, 0, 0], True, "P1"),)
    assert moved.changes == (), "the oracle's mask does not change with the move"
    with pytest.raises(KeyError, match="no longer part of the session"):
        state.edit_point("remove", Click(point, False, "N1"), report)
    undone = state.edit(lambda session: session.undo())  # the move, in one step
    assert undone.clicks == (Click(point, True, "P1"),) and undone.changes == ()
    undone = state.edit(lambda session: session.undo())
    assert [c.segment_id for c in undone.changes] == [1] and undone.clicks == ()
    assert not any(c.mask.any() for c in undone.changes)
    assert np.array_equal(change.mask, written), "a later edit changed an update handed back"
    second = state.edit(lambda session: session.new_segment())
    assert second.current == 2 and [s[0] for s in second.segments] == [1, 2]
    assert second.clicks == () and state.rewrite(1).changes == ()
    # A point of the first segment deleted while the switch was still queued: it goes from
    # the first segment, and the second stays current.
    state.session = Session(image, predictor)
    state.edit_point("add", Click(point, True, "P1"), report)
    (whole,) = state.rewrite(1).changes  # all of the segment, for an MRML segment made again
    assert np.array_equal(
        whole.mask, full[tuple(slice(a, b) for a, b in zip(whole.lo_ijk, whole.hi_ijk))]
    )
    state.edit(lambda session: session.new_segment())
    removed = state.edit_point("remove", Click(point, True, "P1"), report)
    assert removed.current == 2 and removed.clicks == ()
    assert state.edit(lambda session: session.select_segment(1)).clicks == ()


# -- first-use installation -------------------------------------------------------------------


def versions(**installed):
    return lambda name: installed.get(name.replace("-", "_"))


def test_nothing_to_install_where_torch_and_the_core_are_there():
    assert install.plan_installation(sys.executable) == []
    assert not install.torch_needed()


def test_the_core_pin_is_the_package_version():
    import fastsam3d_core

    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = \{ attr = "fastsam3d_core.__version__" \}$', pyproject, re.M)
    assert install.core_version() == fastsam3d_core.__version__
    assert install.source_tree() == REPO


def test_a_source_checkout_installs_the_core_and_a_module_without_it_says_to_reinstall():
    lookup = versions(torch="2.13.0")
    steps = install.plan_installation("py", lookup, REPO)
    assert [s.command for s in steps] == [("py", "-m", "pip", "install", "--no-input", str(REPO))]
    with pytest.raises(install.InstallError, match="Reinstall the FastSAM3D extension"):
        install.plan_installation("py", lookup)
    old_torch = versions(torch="2.4.1+cu121", fastsam3d_core="0.1.0")
    assert install.missing_packages(old_torch) == ["torch"]
    assert install.plan_installation("py", old_torch) == [], "torch comes from PyTorchUtils"


def test_a_bundled_engine_needs_only_its_missing_dependencies(tmp_path):
    (tmp_path / "fastsam3d_core").mkdir()
    (tmp_path / "fastsam3d_core" / "__init__.py").write_text("")
    lookup = versions(torch="2.13.0", numpy="2.1", scipy="1.14", threadpoolctl="3.5",
                      safetensors="0.4")  # fmt: skip
    assert install.missing_packages(lookup, tmp_path) == ["platformdirs", "SimpleITK"]
    steps = install.plan_installation("py", lookup, module_dir=tmp_path)
    assert [s.command for s in steps] == [
        ("py", "-m", "pip", "install", "--no-input", "platformdirs>=3", "SimpleITK>=2.2")
    ]
    names = ("numpy", "scipy", "SimpleITK", "platformdirs", "threadpoolctl", "safetensors")
    everything = versions(torch="2.13.0", **{name: "1" for name in names})
    assert install.plan_installation("py", everything, module_dir=tmp_path) == []
    assert not install.bundled_core(REPO / "FastSAM3DSlicer")


def test_the_remote_server_device_installs_onnxruntime_and_no_torch(tmp_path):
    no_torch = versions(
        numpy="2.1", scipy="1.14", SimpleITK="2.4", platformdirs="4", threadpoolctl="3.5",
        safetensors="0.4",
    )
    # From a source checkout: the core without its declared dependencies (torch is one).
    assert install.missing_packages(no_torch, remote=True) == ["fastsam3d-core", "onnxruntime"]
    steps = install.plan_installation("py", no_torch, REPO, remote=True)
    assert [s.command for s in steps] == [
        ("py", "-m", "pip", "install", "--no-input", "onnxruntime>=1.17"),
        ("py", "-m", "pip", "install", "--no-input", "--no-deps", str(REPO)),
    ]
    # A bundled engine: only what is missing, and still no torch.
    (tmp_path / "fastsam3d_core").mkdir()
    (tmp_path / "fastsam3d_core" / "__init__.py").write_text("")
    bare = versions(numpy="2.1")
    assert install.missing_packages(bare, tmp_path, remote=True) == [
        "platformdirs", "SimpleITK", "scipy", "threadpoolctl", "safetensors", "onnxruntime"
    ]  # fmt: skip
    everything = versions(onnxruntime="1.20", **{k: "1" for k in ("numpy", "scipy")},
                          SimpleITK="2.4", platformdirs="4", threadpoolctl="3.5",
                          safetensors="0.4")  # fmt: skip
    assert install.plan_installation("py", everything, module_dir=tmp_path, remote=True) == []
    assert install.missing_packages(everything, tmp_path) == ["torch"], "a local device needs it"


def test_slicer_gets_the_engine_dependencies_but_not_the_command_line_ones():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    skipped = ("torch", *install.COMMAND_LINE_ONLY)
    expected = [r for r in project["dependencies"] if not r.startswith(skipped)]
    assert list(install.CORE_DEPENDENCIES) == expected
    # The engine, as the module imports it, needs none of them.
    code = (
        "import sys, fastsam3d_core, fastsam3d_core.session, fastsam3d_core.weights;"
        "import fastsam3d_core.io, fastsam3d_mrml.logic;"
        "print(sorted(set(sys.modules) & {'typer', 'highdicom', 'dicomweb_client'}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.split() == ["[]"], loaded.stderr


class PyTorchUtilsLogic:
    """The PyTorch extension's logic as Slicer loads it, with its installer's public
    signature; it records the call instead of downloading several GB."""

    calls: list = []

    def installTorch(  # noqa: N802 (the extension's name)
        self,
        askConfirmation=False,  # noqa: N803
        forceComputationBackend=None,  # noqa: N803
        torchVersionRequirement=None,  # noqa: N803
        torchvisionVersionRequirement=None,  # noqa: N803
    ):
        self.calls.append((askConfirmation, torchVersionRequirement))
        return sys.modules.get("torch")


def test_torch_comes_from_the_pytorch_extension_and_a_loaded_old_torch_needs_a_restart():
    install.install_torch(PyTorchUtilsLogic)
    assert PyTorchUtilsLogic.calls == [(False, install.TORCH_REQUIREMENT)]
    with pytest.raises(install.InstallError, match="Install 'PyTorch' from the Extensions"):
        install.install_torch()  # no PyTorchUtils outside Slicer
    old = versions(torch="2.1.0")
    fake_torch = type(sys)("torch")
    fake_torch.__version__ = "2.1.0"
    with pytest.raises(install.RestartRequired, match="PyTorch 2.1.0 is loaded.*restart Slicer"):
        install.check_torch_can_be_installed(old, {"torch": fake_torch})
    install.check_torch_can_be_installed(old, {})  # not loaded yet: it can be updated
    install.check_torch_can_be_installed(versions(torch="2.13.0"), {"torch": fake_torch})


def test_install_commands_open_no_console_window_on_windows():
    assert install.hidden_console("posix") == {}
    if sys.platform != "win32":
        pytest.skip("STARTUPINFO exists on Windows only")
    info = install.hidden_console("nt")["startupinfo"]
    assert info.dwFlags & subprocess.STARTF_USESHOWWINDOW and info.wShowWindow == 0


def test_steps_stream_their_output_and_failures_say_what_failed():
    lines = []
    ok = install.InstallStep("say hello", (sys.executable, "-c", "print('hello'); print('done')"))
    install.run_steps([ok], lines.append)
    assert lines == ["say hello...", "hello", "done"]
    bad = install.InstallStep(
        "a failing step", (sys.executable, "-c", "import sys; print('no network'); sys.exit(3)")
    )
    with pytest.raises(install.InstallError, match=r"(?s)a failing step failed.*no network"):
        install.run_steps([bad, ok], lines.append)
    with pytest.raises(install.InstallError, match="could not start"):
        install.run_steps([install.InstallStep("missing", ("/nonexistent/python",))], print)


# -- model loading ------------------------------------------------------------------------------


def test_offline_without_cached_weights_says_what_to_do(tmp_path, monkeypatch):
    from dataclasses import replace

    from fastsam3d_core.weights import registry
    from fastsam3d_mrml.models import ModelLoadError, load_predictor

    monkeypatch.setenv("FASTSAM3D_CACHE_DIR", str(tmp_path))
    # A real connection attempt that fails at once: nothing listens on port 9 here.
    entry = replace(registry.WEIGHTS["fastsam3d"], url="http://127.0.0.1:9/FastSAM3D.pth")
    monkeypatch.setitem(registry.WEIGHTS, "fastsam3d", entry)
    with pytest.raises(ModelLoadError, match=r"(?s)the download failed.*Weights file"):
        load_predictor("fastsam3d", "cpu")
    with pytest.raises(ModelLoadError, match="unknown model"):
        load_predictor("sam3", "cpu")


@pytest.mark.slow
def test_a_local_weights_file_loads_on_the_cpu_and_a_missing_device_is_explained(
    tmp_path, golden_data
):
    import torch

    from fastsam3d_mrml.models import ModelLoadError, load_predictor

    path = tmp_path / "seeded.pth"
    torch.save({"model_state_dict": golden_data["fastsam3d"].state_dict()}, path)
    messages = []
    predictor = load_predictor("fastsam3d", "cpu", path, lambda m, f: messages.append(m))
    assert predictor.device == "cpu" and any("Loading fastsam3d" in m for m in messages)
    reference = golden_data["fastsam3d"].seeded_model()
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            predictor.inner.model.state_dict().values(), reference.state_dict().values()
        )
    )
    if not torch.cuda.is_available():
        with pytest.raises(
            ModelLoadError, match="no CUDA device is available.*Choose another device"
        ):
            load_predictor("fastsam3d", "cuda", path)
    with pytest.raises(ModelLoadError, match="unknown precision 'float64'.*another 'Precision'"):
        load_predictor("fastsam3d", "cpu", path, precision="float64")


def test_a_remote_server_refuses_a_precision_of_its_own():
    from fastsam3d_mrml.models import REMOTE, ModelLoadError, load_predictor

    with pytest.raises(ModelLoadError, match="set 'Precision' to Auto.*serve --precision"):
        load_predictor("fastsam3d", REMOTE, server="http://127.0.0.1:9", precision="int8")


def test_the_precision_menu_offers_the_cores_precisions():
    from fastsam3d_core.models.precision import PRECISIONS
    from fastsam3d_mrml.models import PRECISION_CHOICES

    assert tuple(name for name, _ in PRECISION_CHOICES) == PRECISIONS
