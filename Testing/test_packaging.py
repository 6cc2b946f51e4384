"""The distributions built from the checkout, installed as a user installs them.

* The main wheel (``pip wheel .``) holds the core, the engine and the browser page; installed
  with its ``web`` extra into a fresh virtual environment, ``fastsam3d web`` serves the page from
  a folder outside the checkout, so nothing can come from the source tree.
* The torch-free client (``client/``, ``pip install ./client``) is the same ``fastsam3d_core``
  package with the main distribution's dependencies less torch, plus onnxruntime. Its fresh
  environment segments through a real ``fastsam3d serve`` in ``test_serving.py``.

The fresh environments install their dependencies with pip, from the indexes pip is configured
with; on a 2-core machine about 3 minutes for torch's CPU build and the web extra, and about 2
for the client.
"""

from __future__ import annotations

import email.parser
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import venv
import zipfile
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from conftest import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]
# The packages a user of the main wheel imports: the core, the engine (Qt-free MRML logic, by
# the page and the Slicer module), the page and the MONAI Label app.
PACKAGES = ("fastsam3d_core", "fastsam3d_mrml", "fastsam3d_web", "fastsam3d_monailabel")
EXAMPLE_CT = "fastsam3d_core/examples/example_ct_3mm.nii.gz"
PIP_TIMEOUT_S = 900
# Not a package of the distributions, though its name begins like one.
LEFTOVER = "fastsam3d_core_old"


def source_snapshot(folder: Path) -> Path:
    """A copy of the checkout's files as a fresh clone has them (tracked, or new and not
    ignored): no build folder whose stale files setuptools would pack, and no file that changes
    between two builds. Without git, the checkout itself."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return REPO
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in listing.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():  # a tracked file may be deleted in the work tree
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    return folder


def build_wheel(project: Path, folder: Path) -> Path:
    """``pip wheel --no-deps project`` into ``folder``: the wheel's path."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(project), "-w", folder]
    run = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    (wheel,) = folder.glob("*.whl")
    return wheel


def clean_environment() -> dict[str, str]:
    """This process's environment without what would lead another Python to this one's
    packages (an activated virtual environment, PYTHONPATH)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    bin_folder = str(Path(sys.executable).parent)
    paths = environment.get("PATH", "").split(os.pathsep)
    environment["PATH"] = os.pathsep.join(p for p in paths if p != bin_folder)
    return environment


def fresh_environment(folder: Path, *requirements: str) -> tuple[Path, float]:
    """A new virtual environment in ``folder`` with ``requirements`` installed by ONE ``pip
    install``: its Python, and the seconds the install took."""
    venv.EnvBuilder(with_pip=True).create(folder)
    python = folder / ("Scripts" if os.name == "nt" else "bin") / "python"
    command = [str(python), "-m", "pip", "install", "-q", *requirements]
    started = time.monotonic()
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        cwd=folder,
        env=clean_environment(),
    )
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    print(f"{' '.join(requirements)}: installed in {seconds:.0f} s")
    return python, seconds


def run_in(python: Path, code: str, cwd: Path) -> str:
    """``code`` run by ``python`` in ``cwd`` (outside the checkout): its standard output."""
    run = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=clean_environment(),
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def wheel_files(wheel: Path) -> dict[str, str]:
    """The wheel's files but its metadata: {path: SHA-256 of the content}."""
    with zipfile.ZipFile(wheel) as archive:
        return {
            name: hashlib.sha256(archive.read(name)).hexdigest()
            for name in archive.namelist()
            if ".dist-info/" not in name
        }


def _compiled_by_name(files: dict[str, str]) -> dict[str, str]:
    """``files`` with compiled extensions (the voxel loops, setup.py) known by name only: two
    builds of one source differ in their bytes (the build folder's path is in them)."""
    return {k: "compiled" if k.endswith((".so", ".pyd")) else v for k, v in files.items()}


def wheel_metadata(wheel: Path):
    """The wheel's METADATA, parsed (``get_all("Requires-Dist")``, ``["Version"]``)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def wheel_license(wheel: Path) -> bytes:
    """The licence file the wheel's metadata carries."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if ".dist-info/" in n and n.endswith("/LICENSE")]
        return archive.read(name)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's snapshot, with a leftover folder named like a package's beginning (an old
    copy kept by hand), which neither wheel may pack."""
    snapshot = source_snapshot(tmp_path_factory.mktemp("sources"))
    if snapshot != REPO:
        (snapshot / LEFTOVER).mkdir()
        (snapshot / LEFTOVER / "__init__.py").write_text("", encoding="utf-8")
    return snapshot


@pytest.fixture(scope="module")
def main_wheel(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(sources, tmp_path_factory.mktemp("main-wheel"))


@pytest.fixture(scope="module")
def client_wheel(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(sources / "client", tmp_path_factory.mktemp("client-wheel"))


def test_the_wheel_holds_the_core_the_engine_the_page_and_the_example(sources, main_wheel):
    files = wheel_files(main_wheel)
    assert {name.split("/")[0] for name in files} == set(PACKAGES)
    for package in PACKAGES:
        modules = {p.relative_to(sources).as_posix() for p in (sources / package).rglob("*.py")}
        assert modules <= set(files), f"left out of the wheel: {sorted(modules - set(files))}"
    assert EXAMPLE_CT in files
    if shutil.which("cc") or shutil.which("gcc"):  # the voxel loops, compiled (not their source)
        assert any(n.startswith("fastsam3d_core/geometry/_voxels.") for n in files), sorted(files)
    assert not [n for n in files if n.endswith(".c")]
    assert "fastsam3d_mrml/logic.py" in files and "fastsam3d_web/app.py" in files
    assert "fastsam3d_monailabel/monailabel_app/main.py" in files  # the file MONAI Label loads


def test_the_client_is_the_same_package_without_torch(main_wheel, client_wheel):
    """The client distribution holds the main wheel's ``fastsam3d_core``, file for file, and
    declares the main distribution's dependencies less torch, plus its ``client`` extra."""
    core = {k: v for k, v in wheel_files(main_wheel).items() if k.startswith("fastsam3d_core/")}
    assert _compiled_by_name(wheel_files(client_wheel)) == _compiled_by_name(core)
    main, client = wheel_metadata(main_wheel), wheel_metadata(client_wheel)
    assert client["Version"] == main["Version"]
    requirements = main.get_all("Requires-Dist")
    plain = [r for r in requirements if "extra ==" not in r and not r.startswith("torch")]
    extra = [r.split(";")[0].strip() for r in requirements if 'extra == "client"' in r]
    assert extra, "the main distribution lost its client extra"
    assert sorted(client.get_all("Requires-Dist")) == sorted(plain + extra)
    assert not any(r.startswith("torch") for r in client.get_all("Requires-Dist"))


def test_the_client_built_from_a_copy_elsewhere_says_to_upgrade_pip(tmp_path):
    """pip < 21.3 copies client/ to a temporary folder, away from ../fastsam3d_core, before it
    builds: the build stops at once with one line saying which pip it needs."""
    copy = shutil.copytree(REPO / "client", tmp_path / "client")
    run = subprocess.run([sys.executable, "setup.py", "--version"], cwd=copy, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("fastsam3d-client needs pip >= 21.3")
    assert "python -m pip install -U pip" in run.stderr


def test_both_wheels_carry_the_licence(main_wheel, client_wheel):
    """Apache-2.0 asks every copy to carry the licence: client/LICENSE (setuptools packs no file
    from outside the project's folder) is the repository's."""
    licence = (REPO / "LICENSE").read_bytes()
    assert (REPO / "client" / "LICENSE").read_bytes() == licence
    assert wheel_license(client_wheel) == licence
    assert wheel_license(main_wheel) == licence


def _page(port: int) -> tuple[str, str]:
    """Open the page as a browser tab does (the launcher's redirect to a new session, whose
    link sets its cookie): the final URL and the HTML."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(f"http://127.0.0.1:{port}/", timeout=120) as reply:
        assert reply.status == 200 and reply.headers.get_content_type() == "text/html"
        return reply.url, reply.read().decode("utf-8", "replace")


def _stop(launcher: subprocess.Popen) -> None:
    """SIGTERM the launcher, which stops its sessions; kill whatever of its process group is
    left (and fail: it should have stopped)."""
    launcher.send_signal(signal.SIGTERM)
    try:
        launcher.wait(timeout=40)
    finally:
        deadline = time.monotonic() + 10
        left = True
        while left and time.monotonic() < deadline:
            try:
                os.killpg(launcher.pid, 0)
                time.sleep(0.2)
            except ProcessLookupError:
                left = False
        if left:
            os.killpg(launcher.pid, signal.SIGKILL)
        assert not left, "SIGTERM left a session of the launcher running"


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info < (3, 10), reason="the web extra needs Python 3.10")
@pytest.mark.skipif(os.name == "nt", reason="the launcher's process group: POSIX")
def test_a_fresh_environment_with_the_wheel_serves_the_page(main_wheel, tmp_path):
    """``pip install torch <wheel>[web]`` into a new virtual environment, then ``fastsam3d web
    --example`` (the packaged example CT), started outside the checkout; the page answers on
    127.0.0.1."""
    import torch

    from fastsam3d_core import build_model

    torch_version = torch.__version__.split("+")[0]  # the build of this machine's index
    python, _ = fresh_environment(tmp_path / "env", f"torch=={torch_version}", f"{main_wheel}[web]")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    homes = run_in(python, f"import {', '.join(PACKAGES)}; " + "; ".join(
        f"print({package}.__file__)" for package in PACKAGES), outside)  # fmt: skip
    site_packages = str(tmp_path / "env")
    assert all(home.startswith(site_packages) for home in homes.split()), homes
    example = run_in(python, "from fastsam3d_core.examples import example_ct_path as p; print(p())",
                     outside).strip()  # fmt: skip
    assert example.startswith(site_packages), example  # what --example opens comes from the wheel
    weights = tmp_path / "seeded.pth"  # local weights: no download
    torch.manual_seed(0)
    torch.save({"model_state_dict": build_model("fastsam3d").state_dict()}, weights)
    port = free_port()
    command = [str(python.with_name("fastsam3d")), "web", "--example", "--weights", str(weights),
               "--port", str(port), "--sessions", "1"]  # fmt: skip
    with open(tmp_path / "web.log", "w") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=outside,
                                    env=clean_environment(), start_new_session=True)  # fmt: skip
        try:
            wait_for_port(port, seconds=120, process=launcher)
            url, html = _page(port)
        finally:
            _stop(launcher)
    assert f"127.0.0.1:{port}/" not in url, "the page comes from a session, not the launcher"
    assert "<!doctype html>" in html.lower() and "trame" in html, html[:500]
