"""Shared fixtures: golden references of the official models, and models with their weights."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastsam3d_core import Sam3D
from fastsam3d_core.golden import GoldenReference
from fastsam3d_core.models.precision import CPU_FLAGS_VARIABLE

# ../shared beside the checkout; FASTSAM3D_SHARED_DIR names a copy elsewhere (the GPU machine gets
# one inside the checkout: docs/benchmarks.md, "The prepared GPU check").
SHARED = Path(
    os.environ.get("FASTSAM3D_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared"
)
GOLDEN_DIR = SHARED / "golden"
SHARED_DATA_DIR = SHARED / "data"
MODEL_NAMES = ("fastsam3d", "sam-med3d-turbo")
# CI machines differ (AVX2, AVX-512, AMX): `auto` precision means float32 in every test, here and
# in the servers and programs the tests start, unless a test or the caller says otherwise.
os.environ.setdefault(CPU_FLAGS_VARIABLE, "none")
# Set by .ci/run: without the shared folder the data-dependent tests skip, and CI must not pass so.
REQUIRE_SHARED_DATA = "FASTSAM3D_REQUIRE_SHARED_DATA"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before collecting when ``$FASTSAM3D_REQUIRE_SHARED_DATA`` is set and data is missing."""
    if not os.environ.get(REQUIRE_SHARED_DATA):
        return
    missing = [str(folder) for folder in (GOLDEN_DIR, SHARED_DATA_DIR) if not folder.is_dir()]
    if missing:
        raise pytest.UsageError(
            f"{REQUIRE_SHARED_DATA} is set but the shared test data is missing: "
            f"{' and '.join(missing)} not found (expected in {SHARED}, beside the repository: "
            "golden/ holds the official models' reference outputs on seeded weights, data/ small "
            "real scans with masks); without them the data-dependent tests would skip"
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Name the native threads still running when the tests are over: libraries' threads that
    outlive their tests (Ray's gRPC threads once did) can crash the process as it exits, after
    every test passed, with no Python stack to show."""
    session.config._fastsam3d_session = session  # for pytest_unconfigure
    names = []
    for task in sorted(Path("/proc/self/task").glob("*")) if os.name == "posix" else []:
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    # Threads that never named themselves (the main one, torch's workers) carry the process's
    # name: only the others are a library's.
    own = Path("/proc/self/comm").read_text().strip() if names else ""
    named = [name for name in names if name != own]
    if named:
        import sys

        print(f"\nthreads still running at the end: {', '.join(named)}", file=sys.stderr)


# Set to let the test process exit through the native libraries' teardown (to study a crash).
NATIVE_EXIT = "FASTSAM3D_TEST_NATIVE_EXIT"


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process once its results are out, without the C/C++ teardown at exit.

    This one process holds VTK with Mesa's software OpenGL (its threads stay to the end), the
    slicer-core MRML libraries, torch and Ray's client together, which no program of ours does
    (the CLI, the servers and the page run as their own processes in the tests, and their exit
    codes are checked there). CI's process crashed in that teardown (exit 139) after every test
    had passed, twice, on a machine other than ours, with no stack from Python's fault handler: it
    ran after Python had finished. Python's own exit functions still run (pytest's cleanup of its
    temporary folders); then the process ends with pytest's exit status.
    """
    if os.environ.get(NATIVE_EXIT):
        return
    session = getattr(config, "_fastsam3d_session", None)
    if session is None:
        return
    import atexit
    import sys

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if GOLDEN_DIR.is_dir():
        return
    skip = pytest.mark.skip(reason=f"golden references not found at {GOLDEN_DIR}")
    for item in items:
        if {"golden", "golden_data", "fastsam3d_seeded"} & set(item.fixturenames):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def golden_data() -> dict[str, GoldenReference]:
    return {name: GoldenReference.load(GOLDEN_DIR, name) for name in MODEL_NAMES}


def seeded_model(name: str, golden: GoldenReference | None = None) -> Sam3D:
    """A model built afresh and loaded with the golden references' seeded weights."""
    return (golden or GoldenReference.load(GOLDEN_DIR, name)).seeded_model()


@pytest.fixture(scope="session")
def seeded_models(golden_data: dict[str, GoldenReference]) -> dict[str, Sam3D]:
    """Both models, each built once per test session and loaded with its seeded weights."""
    return {name: seeded_model(name, golden) for name, golden in golden_data.items()}


@pytest.fixture(scope="session")
def golden_outputs(
    golden_data: dict[str, GoldenReference], seeded_models: dict[str, Sam3D]
) -> dict[str, dict[str, torch.Tensor]]:
    """Our outputs for every golden array, computed once per model and session."""
    return {name: golden_data[name].run(seeded_models[name]) for name in MODEL_NAMES}


@pytest.fixture(params=MODEL_NAMES)
def golden(
    request: pytest.FixtureRequest, golden_data: dict[str, GoldenReference]
) -> GoldenReference:
    return golden_data[request.param]


@pytest.fixture(scope="session")
def fastsam3d_seeded(seeded_models: dict[str, Sam3D]) -> Sam3D:
    return seeded_models["fastsam3d"]


class CliResult:
    """What ``fastsam3d …`` printed and returned, run in this process through its entry point."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr
        self.output = stdout + stderr


def invoke_cli(arguments: list) -> CliResult:
    """Run the ``fastsam3d`` console script's :func:`main` with these arguments."""
    import contextlib
    import io

    from fastsam3d_core.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(argument) for argument in arguments])
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def free_port() -> int:
    """A loopback port that nothing listens on now: for a server a test starts, or to be
    refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def interrupt(process: subprocess.Popen, seconds: float) -> None:
    """Stop a server the tests started as a user would, with Ctrl-C (SIGINT); kill it if it is
    still running after ``seconds``."""
    import signal

    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_port(port: int, seconds: float, process: subprocess.Popen | None = None) -> None:
    """Return once something listens on 127.0.0.1:``port``; fail after ``seconds``, or as soon
    as ``process`` (the server being waited for) exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process is None or process.poll() is None, f"{process.args[:2]} exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {seconds} s")


# What was read from a process's stdout beyond the lines returned so far, by process id.
_unread: dict[int, bytes] = {}


def line_within(process: subprocess.Popen, seconds: float) -> str:
    """The process's next line on stdout, or fail after ``seconds``. (Read from the pipe itself:
    a buffered reader may hold the next line where select does not see it.)"""
    assert process.stdout is not None
    pending, deadline = _unread.get(process.pid, b""), time.monotonic() + seconds
    while b"\n" not in pending:
        left = max(deadline - time.monotonic(), 0)
        ready, _, _ = select.select([process.stdout], [], [], left)
        assert ready, f"nothing printed within {seconds} s"
        chunk = os.read(process.stdout.fileno(), 65536)
        assert chunk, "the process closed its output"
        pending += chunk
    line, _, _unread[process.pid] = pending.partition(b"\n")
    return line.decode()


@contextlib.contextmanager
def running_web_page(arguments: list, folder: Path, log_name: str = "server.log"):
    """The URL of ``fastsam3d web <arguments> --port <free port>`` run as a user starts it (a
    subprocess on 127.0.0.1, in ``folder``, its output in ``folder/log_name``), once it listens;
    stopped with Ctrl-C on leaving."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("fastsam3d")), "web",
               *[str(argument) for argument in arguments], "--port", str(port)]  # fmt: skip
    with open(folder / log_name, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        try:
            wait_for_port(port, seconds=120, process=server)
            yield f"http://127.0.0.1:{port}/"
        finally:
            interrupt(server, 30)


@pytest.fixture
def start_web_page(tmp_path: Path):
    """``start(*arguments)``: the URL of a ``fastsam3d web`` started with these arguments (the
    image and options, not ``--port``) for this test; the first one's output is in
    ``tmp_path/server.log`` (the next ones' in server-2.log, ...). All stop after the test."""
    with contextlib.ExitStack() as servers:
        started = []

        def start(*arguments) -> str:
            started.append(arguments)
            log_name = "server.log" if len(started) == 1 else f"server-{len(started)}.log"
            return servers.enter_context(running_web_page(list(arguments), tmp_path, log_name))

        yield start


@contextlib.contextmanager
def chromium_browser():
    """Debian's chromium driven by Playwright, headless (Playwright's own browser download is
    not reachable from these machines)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


# -- the engine on a real MRML scene (slicer-core, imported by the fixtures that need it) ------


@pytest.fixture
def scene():
    """A new MRML scene (slicer-core) with the segmentation converters registered; skips
    without slicer-core."""
    slicer = pytest.importorskip(
        "slicer", reason="needs the slicer-core wheel (pip install '.[test]')"
    )
    from fastsam3d_mrml import mrml_io

    mrml_io.ensure_segmentation_converters()
    return slicer.vtkMRMLScene()


@pytest.fixture
def make_logic(scene):
    """``make(predictor, volume_node, **options)``: the engine's logic on ``scene`` with a
    recording observer (Testing/engine_recorder.py), its inputs set and settled; ``options`` go
    to the logic. Every logic made is cleaned up after the test."""
    from engine_recorder import TIMEOUT_S, recorded_logic

    logics = []

    def make(predictor, volume_node, **options):
        logic = recorded_logic(scene, **options)
        logic.setPredictor(predictor)
        logic.setInputs(volume_node)
        assert logic.waitForIdle(TIMEOUT_S)
        logics.append(logic)
        return logic

    yield make
    for logic in logics:
        logic.cleanup()


def session_mask(volume, model, clicks) -> np.ndarray:
    """The core session's mask after these ``(voxel index (i, j, k), positive)`` clicks, in
    order: what every front end must give for the same clicks."""
    from fastsam3d_core.session import Session

    session = Session(volume, model)
    for index, positive in clicks:
        session.add_point_ijk(index, positive)
    return np.array(session.mask())


def save_random_adapter(model: Sam3D, path: Path, scale: float = 0.02) -> Sam3D:
    """Give ``model`` adapters with random non-zero weights (as if trained), save them to
    ``path``; returns the model."""
    from fastsam3d_core.models.adapter import AdapterConfig, adapter_state, attach_adapters
    from fastsam3d_core.weights.adapter_file import save_adapter

    attach_adapters(model, AdapterConfig())
    with torch.no_grad():
        for value in adapter_state(model).values():
            value.copy_(torch.randn_like(value) * scale)
    save_adapter(model, path)
    return model


@pytest.fixture(scope="module")
def seeded_checkpoint(tmp_path_factory) -> Path:
    """FastSAM3D's seeded weights as a checkpoint file, as the released one is laid out."""
    path = tmp_path_factory.mktemp("weights") / "fastsam3d-seeded.pth"
    torch.save({"model_state_dict": seeded_model("fastsam3d").state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """Orthanc with its DICOMweb plugin on a free loopback port, empty, for this module's tests
    (Testing/orthanc_server.py: ``.dicomweb``, ``.rest``, ``.upload(folder)``); skips where
    Orthanc is not installed, fails instead under $FASTSAM3D_REQUIRE_SHARED_DATA."""
    from orthanc_server import running_orthanc

    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def liver_listing(tmp_path_factory) -> Path:
    """The shared CT and its labels as a finetune listing (``--label 5``: the liver)."""
    ct = SHARED_DATA_DIR / "totalseg_ct"
    listing = tmp_path_factory.mktemp("data") / "cases.txt"
    listing.write_text(
        f"# image label\n{ct / 'example_ct_3mm.nii.gz'} {ct / 'example_seg_3mm.nii.gz'}\n",
        encoding="utf-8",
    )
    return listing


@pytest.fixture(scope="session")
def clip_vocabulary_wheel(tmp_path_factory) -> Path:
    """The registry's CLIP vocabulary wheel (open_clip_torch's, read as data): the user's cached
    copy, else fetched with pip from the package index (the one place these machines reach).
    Fails under CI when pip cannot fetch it, skips elsewhere."""
    import sys

    from fastsam3d_core.text.vocabulary import VOCABULARY_WEIGHTS_NAME
    from fastsam3d_core.weights.download import cached_weights_path, sha256_of_file
    from fastsam3d_core.weights.registry import WEIGHTS

    entry = WEIGHTS[VOCABULARY_WEIGHTS_NAME]
    cached = cached_weights_path(entry)
    if cached.is_file() and sha256_of_file(cached) == entry.sha256:
        return cached
    folder = tmp_path_factory.mktemp("vocabulary")
    package = "open-clip-torch==" + entry.filename.split("-")[1]
    run = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         package, "-d", str(folder)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    wheel = folder / entry.filename
    if run.returncode != 0 or not wheel.is_file():
        reason = f"pip could not fetch {package}: {run.stderr.strip()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return wheel
