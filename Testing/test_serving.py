"""The encoder service on a real Ray Serve (127.0.0.1, started and stopped here) and its client.

One Ray instance serves seeded FastSAM3D weights for the whole module; every test talks HTTP to
it. Bounded: 2 CPUs for Ray, one replica, at most 8 concurrent sessions of 2 clicks.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port, interrupt, invoke_cli, line_within

from fastsam3d_core import Session, build_model, load_checkpoint
from fastsam3d_core.examples import SPLEEN_POINT_RAS, example_ct_path
from fastsam3d_core.io import read_segmentation, read_volume
from fastsam3d_core.serving import ModelMismatchError, RemoteError, RemotePredictor
from fastsam3d_core.serving.onnx_decoder import OnnxDecoder, export_decoder
from fastsam3d_core.weights.download import sha256_of_file

# The service runs on Ray Serve (the `serve` extra).
pytest.importorskip("ray.serve")

CLICKS = [(SPLEEN_POINT_RAS, True), ((-105.0, 110.0, 157.0), False), ((-118.0, 112.0, 163.0), True)]


@pytest.fixture(scope="module")
def seeded_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "fastsam3d-seeded.pth"
    torch.save({"model_state_dict": build_model("fastsam3d").state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def local_model(seeded_weights: Path):
    return _loaded(seeded_weights)


# The module's service's deadline for a request's body: short, so that a test of stalled uploads
# waits for their 408 briefly.
BODY_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def service(seeded_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """The URL of a running service with a token, stopped at the end of the module: ``fastsam3d
    serve`` in a process of its own, as users run it. (Not in this one: Ray's gRPC threads
    outlive ray.shutdown() and crashed this process's exit, after every test had passed.)"""
    folder = tmp_path_factory.mktemp("service")
    (folder / "token").write_text("secret\n")
    port = free_port()
    command = [str(Path(sys.executable).with_name("fastsam3d")), "serve",
               "--weights", str(seeded_weights), "--device", "cpu", "--port", str(port),
               "--token-file", str(folder / "token"),
               "--body-timeout", str(BODY_TIMEOUT_S)]  # fmt: skip
    env = {**os.environ, "FASTSAM3D_CACHE_DIR": str(folder / "cache")}
    with open(folder / "serve.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log)
    try:
        try:
            line = line_within(server, seconds=240)
        except AssertionError as error:
            raise AssertionError(f"{error}: {(folder / 'serve.log').read_text()[-2000:]}") from None
        assert line.startswith(f"serving fastsam3d at http://127.0.0.1:{port}/v1"), line
        yield f"http://127.0.0.1:{port}"
    finally:
        interrupt(server, 90)  # Ctrl-C: the service and its Ray instance stop


def _masks(predictor, clicks=CLICKS) -> list[np.ndarray]:
    session = Session(read_volume(example_ct_path()), predictor)
    return [session.add_point(point, positive).mask.copy() for point, positive in clicks]


# The ONNX decoder's float arithmetic differs from torch's by ~1e-7: a voxel whose logit is that
# close to 0 may fall on either side. Masks agree but for such voxels.
THRESHOLD_VOXELS = 10


def assert_same_masks(remote: list[np.ndarray], local: list[np.ndarray]) -> None:
    for a, b in zip(remote, local):
        assert a.shape == b.shape and int((a != b).sum()) <= THRESHOLD_VOXELS


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(np.logical_and(a, b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_the_onnx_decoder_matches_torch_on_the_golden_scenarios(golden, tmp_path):
    model = build_model(golden.name)
    model.load_state_dict(golden.state_dict())
    export_decoder(model, tmp_path / "decoder.onnx", "seeded")
    decoder = OnnxDecoder(tmp_path / "decoder.onnx")
    with torch.inference_mode():
        embedding = model.encode(golden.image())
        mask = torch.zeros(1, 1, 32, 32, 32)
        checked = 0
        for scenario in golden.manifest["scenarios"]:
            if scenario["points"] is None or scenario["multimask"]:
                continue  # the graph is for clicks with a single mask, as a session makes
            points = torch.tensor([scenario["points"]], dtype=torch.float32)
            labels = torch.tensor([scenario["labels"]])
            expected, _ = model.decode(embedding, points, labels, mask)
            logits, _ = decoder.decode(embedding.numpy(), points.numpy(), labels.numpy(), None)
            error = np.abs(logits - expected.numpy()).max()
            assert error <= 1e-4 * np.abs(expected.numpy()).max(), scenario["name"]
            assert np.array_equal(logits > 0, expected.numpy() > 0), scenario["name"]
            checked += 1
    assert checked >= 2
    assert decoder.weights_sha256 == "seeded" and decoder.model == golden.name


def test_remote_masks_equal_local_masks(service, local_model, tmp_path):
    local = _masks(local_model)
    remote = _masks(RemotePredictor(service, token="secret", cache_dir=tmp_path))
    assert_same_masks(remote, local)
    assert local[-1].sum() > 0
    half = _masks(
        RemotePredictor(service, token="secret", crop_dtype="float16", cache_dir=tmp_path)
    )
    dice = [_dice(a, b) for a, b in zip(local, half)]
    print(f"\nfloat16 crops: Dice against float32 per click {[round(d, 5) for d in dice]}")
    assert min(dice) >= 0.999


def _drawn_masks(predictor) -> list[np.ndarray]:
    """A session's masks after a positive box around the spleen, a scribble along the liver
    (another crop) and a negative lasso on one of the box's slices."""
    volume = read_volume(example_ct_path())
    session = Session(volume, predictor)

    def ras(*ijk: tuple[float, float, float]) -> np.ndarray:
        return volume.index_to_ras(np.array(ijk, dtype=float))

    box = session.add_box(*ras((12, 24, 14), (40, 55, 28)))
    masks = [box.mask.copy()]  # a view of the session's mask: copied before the next edit
    scribble = session.add_scribble(ras((70, 50, 18), (80, 58, 18), (90, 65, 19)))
    masks.append(scribble.mask.copy())
    contour = ras((18.3, 28.2, 20), (33.7, 30.1, 20), (36.2, 45.6, 20), (16.6, 40.2, 20))
    masks.append(session.add_lasso(contour, positive=False).mask.copy())
    assert box.encoder_ran and scribble.encoder_ran
    return masks


def test_remote_masks_equal_local_masks_for_a_box_a_scribble_and_a_lasso(
    service, local_model, tmp_path
):
    """Drawn prompts reach the model as points and mask prompts, decoded on the client: the
    unchanged RemotePredictor gives the local session's masks."""
    local = _drawn_masks(local_model)
    remote = _drawn_masks(RemotePredictor(service, token="secret", cache_dir=tmp_path))
    assert_same_masks(remote, local)
    assert all(mask.sum() > 0 for mask in local)
    assert not np.array_equal(local[0], local[1]) and not np.array_equal(local[1], local[2])


def test_eight_concurrent_sessions(service, local_model, tmp_path):
    local = _masks(local_model, CLICKS[:2])
    results: list[list[np.ndarray]] = [[] for _ in range(8)]

    def user(n: int) -> None:
        results[n] = _masks(
            RemotePredictor(service, token="secret", cache_dir=tmp_path), CLICKS[:2]
        )

    threads = [threading.Thread(target=user, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for result in results:
        assert len(result) == 2
        assert_same_masks(result, local)


def _call(
    url: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout_s=60
):
    request = urllib.request.Request(
        url + path, body, headers or {}, method="POST" if body else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_bad_requests_get_4xx_and_the_service_keeps_serving(service):
    auth = {"Authorization": "Bearer secret"}
    crop16 = np.zeros((128, 128, 128), "<f2").tobytes()
    # Finite, but beyond what the encoder's arithmetic holds: its embedding would be NaN.
    huge = np.where(np.random.default_rng(0).random(128**3) < 0.5, -3e38, 3e38).astype("<f4")
    cases = [
        ("/v1/models", None, {"Authorization": "Bearer wrong"}, 401),
        ("/-/routes", None, {}, 401),  # Ray's own paths ask for the token too
        ("/-/healthz", None, {"Authorization": "Bearer wrong"}, 401),
        ("/v1/encode?model=fastsam3d", crop16[:1000], {**auth, "X-Crop-Dtype": "float16"}, 400),
        ("/v1/encode?model=fastsam3d", crop16, {**auth, "X-Crop-Dtype": "int8"}, 400),
        ("/v1/encode?model=sam2", crop16, {**auth, "X-Crop-Dtype": "float16"}, 404),
        ("/v1/encode?model=fastsam3d", np.full(128**3, np.nan, "<f2").tobytes(),
         {**auth, "X-Crop-Dtype": "float16"}, 400),
        ("/v2/encode", crop16, auth, 404),
        ("/v1/encode?model=fastsam3d", huge.tobytes(), {**auth, "X-Crop-Dtype": "float32"}, 400),
    ]  # fmt: skip
    for path, body, headers, status in cases:
        code, reply = _call(service, path, body, headers)
        assert code == status, (path, code, reply)
        assert json.loads(reply)["error"]
    assert "overflow the encoder" in json.loads(reply)["error"]
    assert _call(service, "/-/routes", headers=auth)[0] == 200
    code, reply = _call(
        service, "/v1/encode?model=fastsam3d", crop16, {**auth, "X-Crop-Dtype": "float16"}
    )
    assert code == 200 and len(reply) == 384 * 8**3 * 4
    with pytest.raises(RemoteError, match="HTTP 401") as refused:
        RemotePredictor(service, token="wrong")
    assert refused.value.status == 401
    start = time.perf_counter()
    with pytest.raises(RemoteError, match="server unreachable .* after 3 attempts"):
        RemotePredictor(f"http://127.0.0.1:{free_port()}", token="secret")
    assert time.perf_counter() - start < 10  # a wrong address is said at once
    with pytest.raises(RemoteError, match="does not serve 'sam-med3d-turbo'"):
        RemotePredictor(service, model="sam-med3d-turbo", token="secret")


def test_a_chunked_body_larger_than_a_crop_is_refused_while_it_is_read(service):
    # Without Content-Length the size is only known while reading: the replica must stop at a
    # crop's size, not buffer whatever is sent.
    address = urllib.parse.urlsplit(service)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    connection.putrequest("POST", "/v1/encode?model=fastsam3d")
    for name, value in (("Authorization", "Bearer secret"), ("X-Crop-Dtype", "float32"),
                        ("Transfer-Encoding", "chunked")):  # fmt: skip
        connection.putheader(name, value)
    connection.endheaders()
    chunk = bytes(1 << 20)
    try:
        for _ in range(128**3 * 4 // len(chunk) + 2):  # one crop and 2 MiB more
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the end: as it should be
    reply = connection.getresponse()
    assert reply.status == 413, reply.read()
    assert "exceeds" in json.loads(reply.read())["error"]
    connection.close()


def test_stalled_uploads_neither_hold_the_service_nor_stay_open(service):
    """Eight clients send the headers and 100 kB of an 8 MB crop, then stall (six used to hold
    every request slot of the replica: no one was answered for minutes). Others are answered at
    once; the stalled ones get 408 after the body's deadline, and are closed."""
    address = urllib.parse.urlsplit(service)
    head = (
        b"POST /v1/encode?model=fastsam3d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        b"secret\r\nX-Crop-Dtype: float32\r\nContent-Length: %d\r\n\r\n"
    ) % (128**3 * 4)
    start = time.monotonic()
    stalled = [socket.create_connection((address.hostname, address.port)) for _ in range(8)]
    try:
        for connection in stalled:
            connection.sendall(head + bytes(100_000))
            connection.settimeout(BODY_TIMEOUT_S + 30)
        auth = {"Authorization": "Bearer secret"}
        assert _call(service, "/v1/health", headers=auth, timeout_s=5)[0] == 200
        assert not select.select(stalled, [], [], 0)[0], "answered before the health check"
        crop = np.zeros((128, 128, 128), "<f2").tobytes()
        encode = ("/v1/encode?model=fastsam3d", crop, {**auth, "X-Crop-Dtype": "float16"})
        assert _call(service, *encode)[0] == 200
        for connection in stalled:
            reply = b""
            while chunk := connection.recv(4096):  # to the end: the service closes it
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within" in reply
        assert time.monotonic() - start < BODY_TIMEOUT_S + 15
    finally:
        for connection in stalled:
            connection.close()


def test_a_server_that_never_answers_is_asked_once(tmp_path):
    # It accepts connections and stays silent (stuck, or overloaded): retrying would only
    # multiply the wait (ten times 60 s for an encode) and add to its queue.
    import socket

    from fastsam3d_core.serving.client import request

    accepted = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"

        def accept() -> None:
            while not done.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except OSError:
                    continue

        done = threading.Event()
        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with pytest.raises(RemoteError, match="no answer within 0.5 s"):
            request(url, "POST", "/encode?model=fastsam3d", b"crop", timeout_s=0.5)
        with pytest.raises(RemoteError, match="no answer within 0.5 s"):
            RemotePredictor(url, timeout_s=0.5, cache_dir=tmp_path)
        done.set()
        thread.join()
    assert len(accepted) == 2, "one connection per call: no retry"
    for connection in accepted:
        connection.close()


def test_a_killed_replica_loses_no_click(service, local_model, tmp_path):
    """The replica dies between two crops; the client's retries reach its replacement."""
    predictor = RemotePredictor(service, token="secret", cache_dir=tmp_path)
    session = Session(read_volume(example_ct_path()), predictor)
    session.add_point(SPLEEN_POINT_RAS)
    _, health = _call(service, "/v1/health", headers={"Authorization": "Bearer secret"})
    os.kill(json.loads(health)["pid"], signal.SIGKILL)
    far = (60.0, 150.0, 140.0)  # 172 mm from the first click: another crop, another encode
    result = session.add_point(far)
    assert result.encoder_ran
    expected = Session(read_volume(example_ct_path()), local_model)
    expected.add_point(SPLEEN_POINT_RAS)
    local = expected.add_point(far)
    logits = np.asarray(local.logits)
    assert np.abs(np.asarray(result.logits) - logits).max() <= 1e-4 * np.abs(logits).max()
    assert_same_masks([result.mask], [local.mask])


# Run first in a client process: any later ``import torch`` fails, as on a machine without it.
WITHOUT_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
"""


@pytest.fixture(scope="module")
def client_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the torch-free client, installed by the one command
    a user runs, ``pip install ./client`` (from a copy of the checkout as a clone has it): its
    Python."""
    from test_packaging import fresh_environment, source_snapshot

    folder = tmp_path_factory.mktemp("client")
    sources = source_snapshot(folder / "sources")
    python, _ = fresh_environment(folder / "env", str(sources / "client"))
    return python


@pytest.mark.slow
def test_the_client_installs_without_torch_and_segments_like_the_local_model(
    service, local_model, client_environment, tmp_path
):
    """In the client's own environment, where torch is not installed: a session (clicks in two
    crops, an undo) and ``fastsam3d segment --server``, both run outside the checkout."""
    from test_packaging import clean_environment, run_in

    python = client_environment
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    code = f"""
import numpy as np
import fastsam3d_core
from fastsam3d_core import RemotePredictor, Session
from fastsam3d_core.io import read_volume
from fastsam3d_core.examples import example_ct_path
print(fastsam3d_core.__file__)
predictor = RemotePredictor({service!r}, token="secret", cache_dir={str(tmp_path)!r})
session = Session(read_volume(example_ct_path()), predictor)
clicks = {[*CLICKS, ((60.0, 150.0, 140.0), True)]!r}
masks = [session.add_point(point, positive).mask.copy() for point, positive in clicks]
masks.append(session.undo().mask.copy())
np.save({str(tmp_path / "masks.npy")!r}, np.stack(masks))
"""
    home = run_in(python, code, tmp_path).strip()
    assert home.startswith(str(python.parents[1])), f"{home}: not the client's own copy"
    command = [str(python.with_name("fastsam3d")), "segment", "--example", "--server", service,
               "-o", str(tmp_path / "remote.seg.nrrd")]  # fmt: skip
    environment = {**clean_environment(), "FASTSAM3D_TOKEN": "secret",
                   "FASTSAM3D_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    segment = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment
    )
    assert segment.returncode == 0, segment.stdout + segment.stderr
    local_run = subprocess.run(command[:3] + ["-o", str(tmp_path / "local.seg.nrrd")],
                               capture_output=True, text=True, timeout=300, cwd=tmp_path,
                               env=environment)  # fmt: skip
    assert local_run.returncode == 1, local_run.stderr  # an input error, not a defect
    assert "needs torch, which is not installed here" in local_run.stderr, local_run.stderr
    session = Session(read_volume(example_ct_path()), local_model)
    local = [session.add_point(point, positive).mask.copy() for point, positive in CLICKS]
    local.append(session.add_point((60.0, 150.0, 140.0)).mask.copy())
    local.append(session.undo().mask.copy())
    remote = list(np.load(tmp_path / "masks.npy"))
    assert_same_masks(remote, local)
    assert local[-1].sum() > 0 and not np.array_equal(local[-2], local[-1])
    (segment,), _ = read_segmentation(tmp_path / "remote.seg.nrrd")
    assert_same_masks([segment.mask.astype(bool)], [local[0].astype(bool)])


def test_segment_with_server_imports_no_torch(service, local_model, tmp_path):
    """``fastsam3d segment --server`` in this checkout's Python, in a process where any import of
    torch fails (the quick check of every run; the client's own environment is checked above)."""
    output = tmp_path / "remote.seg.nrrd"
    code = f"""{WITHOUT_TORCH}
asked = []  # every import of torch tried, also one whose failure the code would let pass
class Asked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            asked.append(name)
sys.meta_path.insert(0, Asked())
from fastsam3d_core.cli import main
code = main(["segment", "--example", "--server", {service!r}, "-o", {str(output)!r}])
assert code == 0, code
assert asked == [], f"torch was imported: {{asked}}"
"""
    environment = {**os.environ, "FASTSAM3D_TOKEN": "secret",
                   "FASTSAM3D_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=environment)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    local = Session(read_volume(example_ct_path()), local_model).add_point(SPLEEN_POINT_RAS)
    (segment,), _ = read_segmentation(output)
    assert_same_masks([segment.mask.astype(bool)], [local.mask.astype(bool)])


def test_a_local_decoder_file_replaces_the_services(service, seeded_weights, tmp_path):
    export_decoder(_loaded(seeded_weights), tmp_path / "mine.onnx", sha256_of_file(seeded_weights))
    onnx = RemotePredictor(service, token="secret", decoder=tmp_path / "mine.onnx")
    checkpoint = RemotePredictor(service, token="secret", decoder=seeded_weights)
    assert not list(tmp_path.glob("*-*.onnx"))  # nothing fetched
    assert_same_masks(_masks(onnx, CLICKS[:2]), _masks(checkpoint, CLICKS[:2]))


def test_a_decoder_of_other_weights_is_refused(service, tmp_path):
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    torch.save({"model_state_dict": build_model("fastsam3d").state_dict()}, other)
    with pytest.raises(ModelMismatchError, match="model mismatch: the decoder .*other.pth"):
        RemotePredictor(service, token="secret", decoder=other)
    with pytest.raises(FileNotFoundError, match="missing.onnx: no such decoder file"):
        RemotePredictor(service, token="secret", decoder=tmp_path / "missing.onnx")


# -- the Slicer module's "Remote server" device ------------------------------------------------

MODULE_DIR = Path(__file__).resolve().parents[1] / "FastSAM3DSlicer"


def test_the_slicer_module_segments_through_the_service_without_torch(
    service, local_model, tmp_path
):
    """The module's logic on a real MRML scene, device "remote", in a process where torch
    cannot be imported; the segment equals the local model's."""
    pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    code = f"""{WITHOUT_TORCH}
sys.path.insert(0, {str(MODULE_DIR)!r})
import numpy as np, slicer, vtk
from fastsam3d_mrml.events import ErrorCollector
from fastsam3d_mrml.logic import InteractiveSegmentationLogic
from fastsam3d_core.examples import SPLEEN_POINT_RAS, example_ct_path
scene = slicer.vtkMRMLScene()
volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
storage.SetFileName(str(example_ct_path()))
assert storage.ReadData(volume)
observer = ErrorCollector()
logic = InteractiveSegmentationLogic(scene, observer=observer)
errors = observer.errors
logic.setModel("fastsam3d", "remote", server={service!r}, token="secret")
logic.setInputs(volume)
logic.positiveNode.AddControlPointWorld(vtk.vtkVector3d(*SPLEEN_POINT_RAS), "")
logic.synchronizePoints()
assert logic.waitForIdle(120) and not errors, errors
labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
ids = vtk.vtkStringArray()
ids.InsertNextValue(logic.currentSegmentId)
assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
    logic.segmentationNode, ids, labelmap, volume)
np.save({str(tmp_path / "mask.npy")!r}, slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0))
logic.cleanup()
assert "torch" not in sys.modules
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    expected = Session(read_volume(example_ct_path()), local_model).add_point(SPLEEN_POINT_RAS)
    remote = np.load(tmp_path / "mask.npy") != 0
    assert remote.sum() > 0
    assert_same_masks([remote], [expected.mask.astype(bool)])


def test_the_slicer_connection_test_says_what_to_do(service):
    sys.path.insert(0, str(MODULE_DIR))
    from fastsam3d_mrml.models import ModelLoadError, check_server, connect_remote

    assert check_server(service, "secret", "fastsam3d").startswith(f"Connected: {service} serves")
    with pytest.raises(ModelLoadError, match="(?s)HTTP 401.*Enter the server's token"):
        check_server(service, "wrong", "fastsam3d")
    with pytest.raises(ModelLoadError, match="does not serve sam-med3d-turbo; it serves fastsam3d"):
        check_server(service, "secret", "sam-med3d-turbo")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="(?s)server unreachable.*Check the address"):
        check_server(f"127.0.0.1:{free_port()}", None, "fastsam3d")  # no scheme: http
    assert time.perf_counter() - start < 10
    said = []  # what the module shows: never a password in the address
    with pytest.raises(ModelLoadError, match=r"\*\*\*@") as refused:
        server = "http://u:hunter2@127.0.0.1:1"
        connect_remote("fastsam3d", server, report=lambda *shown: said.append(shown))
    assert "hunter2" not in str(refused.value) + str(said) and "***@" in str(said)


def test_segment_with_server_refuses_a_device(service, tmp_path):
    result = invoke_cli(["segment", "--example", "--server", service, "--device", "cuda",
                         "-o", tmp_path / "out.seg.nrrd"])  # fmt: skip
    assert result.exit_code == 2 and "--device" in result.stderr, result.stderr
    assert not (tmp_path / "out.seg.nrrd").exists()


def _loaded(weights: Path):
    model = build_model("fastsam3d")
    load_checkpoint(model, weights)
    return model


def test_segment_with_server_writes_what_local_writes(service, seeded_weights, tmp_path):
    point = ",".join(map(str, SPLEEN_POINT_RAS))
    common = ["segment", "--example", "-p", point, "-p", "-105,110,157:neg"]
    local = invoke_cli([*common, "--weights", seeded_weights, "-o", tmp_path / "local.seg.nrrd"])
    remote = invoke_cli([*common, "--server", service, "--token", "secret",
                         "-o", tmp_path / "remote.seg.nrrd"])  # fmt: skip
    assert local.exit_code == 0 and remote.exit_code == 0, local.output + remote.output
    (here,), geometry = read_segmentation(tmp_path / "local.seg.nrrd")
    (there,), remote_geometry = read_segmentation(tmp_path / "remote.seg.nrrd")
    np.testing.assert_array_equal(geometry.ijk_to_ras, remote_geometry.ijk_to_ras)
    assert here.name == there.name and here.mask.sum() > 0
    assert_same_masks([there.mask], [here.mask])


def test_export_onnx_names_the_weights(seeded_weights, tmp_path):
    result = invoke_cli(["export-onnx", "--weights", seeded_weights, "-o", tmp_path / "d.onnx"])
    assert result.exit_code == 0, result.output
    decoder = OnnxDecoder(tmp_path / "d.onnx")
    assert decoder.model == "fastsam3d"
    assert decoder.weights_sha256 == sha256_of_file(seeded_weights)


def test_a_body_larger_than_a_crop_is_refused_before_it_is_read():
    from fastsam3d_core.serving.service import RequestError, check_length

    check_length(str(128**3 * 4))
    check_length(None)  # chunked: the size check after reading applies
    with pytest.raises(RequestError, match="at most") as refused:
        check_length(str(128**3 * 4 + 1))
    assert refused.value.status == 413


def test_segment_never_prints_the_credentials_in_a_server_address(service, tmp_path):
    host = urllib.parse.urlsplit(service).netloc
    for server, shown in ((f"http://user:hunter2@{host}", f"http://***@{host}"),
                          (f"user:hunter2@{host}", f"***@{host}"),  # http:// assumed
                          (f"{service}/?token=hunter2", f"{service}/?token=***")):  # fmt: skip
        result = invoke_cli(["segment", "--example", "--server", server,
                             "-o", tmp_path / "out.seg.nrrd"])  # fmt: skip
        assert result.exit_code == 1 and "hunter2" not in result.output + result.stderr
        assert f"connecting to {shown} " in result.output and shown in result.stderr
