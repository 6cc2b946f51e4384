"""FastSAM3D inside a real MONAI Label server, against a real Orthanc, both on loopback.

The shared DICOM series is stored in Orthanc; MONAI Label runs the app with the seeded FastSAM3D
(``fastsam3d monailabel``). Requests go to its REST API as OHIF and Slicer's MONAILabel module
send them, and the answers are compared with the engine's own session on the same series.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA_DIR, free_port, seeded_model, session_mask
from monailabel_server import monailabel_path, running_monailabel

from fastsam3d_core.io import DicomSeries, dicom_series_of, read_dicom_seg, read_volume

SERIES_FOLDER = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_dicom_pacs"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SERIES_FOLDER.is_dir(), reason="shared DICOM series missing"),
]
# Voxel indices (i, j, k) of the 512 x 512 x 20 series: in the liver, two points near it (in its
# crop), and one elsewhere.
LIVER = [300, 260, 10]
BESIDE = [310, 250, 10]
NEAR = [292, 270, 11]
AWAY = [200, 300, 10]


@pytest.fixture(scope="module")
def series(orthanc) -> str:
    """The series stored in Orthanc; its SeriesInstanceUID (MONAI Label's image id)."""
    orthanc.upload(SERIES_FOLDER)
    listed = json.loads(orthanc.get("/dicom-web/series"))
    return listed[0]["0020000E"]["Value"][0]


@pytest.fixture(scope="module")
def server(orthanc, series: str, seeded_checkpoint: Path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("monailabel")
    arguments = ["--weights", str(seeded_checkpoint), "--device", "cpu"]
    with running_monailabel(folder, orthanc.dicomweb, arguments, free_port()) as running:
        yield running


@pytest.fixture(scope="module")
def engine_volume():
    return read_volume(SERIES_FOLDER)


def label_of(body: bytes, folder: Path, suffix: str = ".nii.gz"):
    path = folder / f"label{suffix}"
    path.write_bytes(body)
    return read_volume(path)


def test_the_panel_lists_fastsam3d_as_an_interactive_model(server) -> None:
    status, body = server.get("/info/")
    assert status == 200
    model = json.loads(body)["models"]["fastsam3d"]
    assert model["type"] == "deepgrow" and model["dimension"] == 3
    assert "liver" in model["labels"]


def test_points_give_the_engines_mask_and_an_added_point_runs_only_the_decoder(
    server, series: str, engine_volume, fastsam3d_seeded, tmp_path: Path
) -> None:
    first = {"foreground": [LIVER], "background": [], "label": "liver"}
    status, _, body = server.infer("fastsam3d", series, first, output="image")
    assert status == 200, body[:300]
    label = label_of(body, tmp_path)
    expected = session_mask(engine_volume, fastsam3d_seeded, [(LIVER, True)])
    assert expected.any()
    assert np.allclose(label.ijk_to_ras, engine_volume.ijk_to_ras, atol=1e-3)
    assert np.array_equal(label.array, expected)

    added = {"foreground": [LIVER, BESIDE], "background": [NEAR], "label": "liver"}
    status, _, body = server.infer("fastsam3d", series, added, output="json")
    assert status == 200, body[:300]
    report = json.loads(body)["fastsam3d"]
    assert (report["decoded"], report["encoder_runs"], report["restarted"]) == (2, 0, False)
    status, _, body = server.infer("fastsam3d", series, added, output="image")
    clicks = [(LIVER, True), (BESIDE, True), (NEAR, False)]
    assert np.array_equal(label_of(body, tmp_path).array,
                          session_mask(engine_volume, fastsam3d_seeded, clicks))  # fmt: skip


def test_ohifs_request_gets_a_raw_nrrd_on_the_series_grid(
    server, series: str, engine_volume, tmp_path: Path
) -> None:
    import nrrd

    ohif = {"foreground": [LIVER], "background": [], "label": "spleen",
            "result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False,
            "restore_label_idx": False}  # fmt: skip
    status, _, body = server.infer("fastsam3d", series, ohif, output="image")
    assert status == 200, body[:300]
    (tmp_path / "label.nrrd").write_bytes(body)
    array, header = nrrd.read(str(tmp_path / "label.nrrd"))
    assert header["encoding"] == "raw" and array.dtype == np.uint8
    assert array.shape == engine_volume.shape and array.any()


def test_a_dicom_seg_is_the_products_own_and_refers_to_the_series(
    server, series: str, engine_volume, tmp_path: Path
) -> None:
    params = {"foreground": [AWAY], "background": [], "label": "liver",
              "label_info": [{"name": "liver", "color": [221, 130, 101]}]}  # fmt: skip
    status, headers, body = server.infer("fastsam3d", series, params, output="dicom_seg")
    assert status == 200, body[:300]
    assert headers["content-type"].startswith("application/dicom")
    seg = tmp_path / "liver.dcm"
    seg.write_bytes(body)
    source: DicomSeries = dicom_series_of(SERIES_FOLDER, engine_volume)
    (segment,) = read_dicom_seg(seg, engine_volume, source)
    assert segment.name == "liver" and segment.mask.any()
    # The label of the same points (the same request again: nothing is decoded).
    status, _, body = server.infer("fastsam3d", series, params, output="image")
    assert np.array_equal(segment.mask, label_of(body, tmp_path).array.astype(bool))
    import pydicom

    description = pydicom.dcmread(seg).SegmentSequence[0]
    assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # Liver
    algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "fastsam3d"


def test_one_server_serves_both_models_started_as_a_service(
    orthanc, series: str, engine_volume, tmp_path_factory
) -> None:
    """Both models, each with its own weights file, through MONAI Label's own start command
    (what docs/monailabel.md gives a department for its service)."""
    folder = tmp_path_factory.mktemp("monailabel-both")
    conf = ["--conf", "models", "fastsam3d,sam-med3d-turbo", "--conf", "device", "cpu"]
    models = {}
    for name in ("fastsam3d", "sam-med3d-turbo"):
        models[name] = seeded_model(name)
        path = folder / f"{name}.pth"
        torch.save({"model_state_dict": models[name].state_dict()}, path)
        conf += ["--conf", f"weights.{name}", str(path)]
    with running_monailabel(folder, orthanc.dicomweb, conf, free_port(), direct=True) as server:
        served = json.loads(server.get("/info/")[1])["models"]
        assert sorted(served) == ["fastsam3d", "sam-med3d-turbo"]
        params = {"foreground": [LIVER], "background": [], "label": "liver"}
        status, _, body = server.infer("sam-med3d-turbo", series, params, output="image")
        assert status == 200, body[:300]
        label = label_of(body, folder)
    expected = session_mask(engine_volume, models["sam-med3d-turbo"], [(LIVER, True)])
    assert np.array_equal(label.array, expected)


@pytest.mark.parametrize(
    ("image", "params", "status", "detail"),
    [
        ("SERIES", {"label": "liver"}, 400, "no points"),
        ("SERIES", {"foreground": [[900, 1, 1]]}, 400, "outside the image"),
        ("SERIES", {"foreground": [[1, 2]]}, 400, "voxel index [i, j, k]"),
        ("1.2.3.4", {"foreground": [[1, 1, 1]]}, 404, "no series 1.2.3.4"),
        ("..%2F..%2Fetc", {"foreground": [[1, 1, 1]]}, 400, "not a series UID"),
        ("%2Fetc%2Fhostname", {"foreground": [[1, 1, 1]]}, 400, "not a series UID"),
        ("SERIES", {"foreground": [[1, 1, 1]], "label": ["x"]}, 400, "'label' must be"),
        ("SERIES", '{"foreground": [[1, 1, 1]', 500, ""),  # not JSON: MONAI Label's own reply
    ],
)
def test_a_bad_request_gets_an_error_reply_and_the_server_keeps_serving(
    server, series: str, image: str, params, status: int, detail: str
) -> None:
    answer, _, body = server.infer("fastsam3d", series if image == "SERIES" else image, params)
    assert answer == status, body[:300]
    if detail:
        assert detail in json.loads(body)["detail"]
    assert server.get("/info/")[0] == 200
    good = {"foreground": [LIVER], "background": [], "label": "liver"}
    assert server.infer("fastsam3d", series, good)[0] == 200


def run_cli(arguments: list[str], folder: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (monailabel_path(folder), env.get("PYTHONPATH")) if p
    )
    return subprocess.run([sys.executable, "-m", "fastsam3d_core", "monailabel", *arguments],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def test_the_command_checks_before_it_starts_and_prints_the_servers_command(
    seeded_checkpoint: Path, tmp_path_factory
) -> None:
    folder = tmp_path_factory.mktemp("monailabel-cli")
    app = folder / "app"
    common = ["--studies", "http://127.0.0.1:1/dicom-web", "--app-dir", str(app)]
    dry = run_cli([*common, "--weights", str(seeded_checkpoint), "--device", "cpu",
                   "--dry-run"], folder.parent)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    command = dry.stdout.strip().splitlines()[-1]
    assert "-m fastsam3d_monailabel.launch start_server --app" in command
    assert f"--conf weights.fastsam3d {seeded_checkpoint.resolve()}" in command
    assert (app / "main.py").read_text().startswith('"""FastSAM3D\'s MONAI Label app')

    unknown = run_cli([*common, "--model", "sam2"], folder.parent)
    assert unknown.returncode == 2 and "sam2" in unknown.stderr
    two = run_cli([*common, "-m", "fastsam3d", "-m", "sam-med3d-turbo", "--weights",
                   str(seeded_checkpoint)], folder.parent)  # fmt: skip
    assert two.returncode == 2 and "one --model" in two.stderr
    broken = folder / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (monailabel_path(folder.parent), os.environ.get("PYTHONPATH")) if p))
    direct = subprocess.run(
        [sys.executable, "-m", "fastsam3d_monailabel.launch", "start_server", "--app", str(app),
         "--studies", str(folder), "--port", str(free_port()), "--conf", "weights", str(broken)],
        capture_output=True, text=True, env=env, timeout=300, cwd=folder,
    )  # fmt: skip
    assert direct.returncode != 0
    assert f"error: FastSAM3D cannot start: {broken}" in direct.stdout + direct.stderr

    other = folder / "other-app"
    other.mkdir()
    (other / "main.py").write_text("# someone else's app\n")
    refused = run_cli(["--studies", "x", "--app-dir", str(other), "--weights",
                       str(seeded_checkpoint), "--device", "cpu"], folder.parent)  # fmt: skip
    assert refused.returncode == 1 and "holds another MONAI Label app" in refused.stderr
    assert (other / "main.py").read_text() == "# someone else's app\n"
