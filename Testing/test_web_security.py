"""The web page against a hostile browser: uploads that name server files or inflate without
bound.

Uploads go to a real :class:`SegmentationPage` in-process (``test_web_page``'s fixture).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_web_page
from conftest import free_port
from test_slicer_mrml import CT_IMAGE, CT_LABEL
from test_web_page import nodes, upload

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytestmark = pytest.mark.skipif(not CT_IMAGE.is_file(), reason=f"{CT_IMAGE} not found")
page = test_web_page.page  # the fixture: a SegmentationPage on the example CT
SIDE = 16  # the uploaded volumes: SIDE³ unsigned bytes
VOXELS = (np.arange(SIDE**3) % 251).astype(np.uint8).tobytes()
MHD = "ObjectType = Image\nNDims = 3\nDimSize = 16 16 16\nElementType = MET_UCHAR\n"
NHDR = "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 16 16 16\nencoding: raw\n"


def _secret_files(folder: Path) -> Path:
    """Server files that no upload may show: ``secret.raw`` and ``secret1.raw``."""
    for name in ("secret.raw", "secret1.raw"):
        (folder / name).write_bytes(VOXELS)
    return folder / "secret.raw"


def _headers_naming(secret: Path, escape: str) -> dict[str, str]:
    """Uploads (name: header) whose data file is ``secret`` by every form a header has;
    ``escape``: the relative path from an upload's folder to ``secret``."""
    numbered = str(secret.with_name("secret%d.raw"))
    return {
        "absolute.mhd": f"{MHD}ElementDataFile = {secret}\n",
        "relative.mhd": f"{MHD}ElementDataFile = {escape}\n",
        "list.mhd": f"{MHD}ElementDataFile = LIST 3\n{secret}\n",
        "numbered.mhd": f"{MHD}ElementDataFile = {numbered} 1 1 1\n",
        "absolute.nhdr": f"{NHDR}data file: {secret}\n",
        "relative.nhdr": f"{NHDR}datafile: {escape}\n",
        "list.nhdr": f"{NHDR}data file: LIST 3\n{secret}\n",
        "numbered.nhdr": f"{NHDR}data file: {numbered} 1 1 1 3\n",
    }


@pytest.mark.parametrize("name", list(_headers_naming(Path("/s"), "../s")))
def test_an_uploaded_header_naming_a_server_file_is_refused_and_the_image_stays(
    page, tmp_path: Path, name: str
):
    secret = _secret_files(tmp_path)
    uploads_folder = Path(page._export_dir.name) / "upload-x"  # where _open_upload puts them
    header = _headers_naming(secret, os.path.relpath(secret, uploads_folder))[name]
    first_volume = page.volume
    upload(page, name, header.encode())
    assert page.volume is first_volume, f"{name} showed a server file"
    assert nodes(page, "vtkMRMLScalarVolumeNode") == [first_volume]
    assert page.state.error.startswith(f"{name}: its header reads its voxels from ")
    assert "not a file uploaded with it" in page.state.error
    assert page.state.error.endswith("the current image stays")


def upload_both(page, files: dict[str, str | bytes]) -> None:
    """Upload several files at once, as a multiple file choice does."""
    entries = []
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        entries.append({"name": name, "content": data, "size": len(data), "type": ""})
    page.upload(entries)
    page.logic.waitForIdle(120)
    page.logic.processEvents(0)


def test_headers_uploaded_with_their_data_files_open(page):
    slices = {f"slice{n:02d}.raw": VOXELS[n * SIDE**2 : (n + 1) * SIDE**2] for n in range(SIDE)}
    for files in (
        {"image.mhd": f"{MHD}ElementDataFile = image.raw\n", "image.raw": VOXELS},
        {"image.nhdr": f"{NHDR}data file: image.raw\n", "image.raw": VOXELS},
        {"series.nhdr": f"{NHDR}data file: slice%02d.raw 0 15 1 2\n", **slices},
        {"list.nhdr": f"{NHDR}data file: LIST 2\n" + "\n".join(slices) + "\n", **slices},
    ):
        previous = page.volume
        upload_both(page, files)
        assert page.state.error == "", (list(files)[0], page.state.error)
        assert page.volume is not previous


def _nifti_bytes(shape: tuple[int, int, int], trailing: int = 0) -> bytes:
    """An uncompressed NIfTI-1 file of zeros, ``trailing`` more zero bytes after its voxels."""
    import nibabel

    image = nibabel.Nifti1Image(np.zeros(shape, np.int16), np.eye(4))
    return image.to_bytes() + bytes(trailing)


def test_an_upload_announcing_more_than_the_bound_is_refused_before_reading(page, monkeypatch):
    monkeypatch.setenv("FASTSAM3D_WEB_MAX_IMAGE_GB", "0.0001")  # 100 kB; the real one is 4 GB
    first_volume = page.volume
    upload(page, "big.nii.gz", gzip.compress(_nifti_bytes((64, 64, 64))))  # 512 KiB of voxels
    assert page.state.error.startswith("big.nii.gz: decompresses to more than 0.0001 GB")
    assert page.volume is first_volume


def test_a_gzip_stream_inflating_past_the_bound_is_refused(page, monkeypatch):
    monkeypatch.setenv("FASTSAM3D_WEB_MAX_IMAGE_GB", "0.001")  # 1 MB
    first_volume = page.volume
    # A 16³ image (8 KiB of voxels), then 2 MB more in the same compressed stream: 2 kB on disk.
    bomb = gzip.compress(_nifti_bytes((16, 16, 16), trailing=2_000_000))
    assert len(bomb) < 10_000
    upload(page, "bomb.nii.gz", bomb)
    assert page.state.error.startswith("bomb.nii.gz: decompresses to more than 0.001 GB")
    assert page.volume is first_volume
    upload(page, "small.nii.gz", gzip.compress(_nifti_bytes((16, 16, 16))))
    assert page.state.error == "" and page.volume is not first_volume


def test_a_bad_upload_bound_is_refused_in_one_line(tmp_path: Path):
    run = subprocess.run(
        [str(Path(sys.executable).with_name("fastsam3d")), "web", str(CT_IMAGE), "--model",
         "oracle", "--truth", str(CT_LABEL), "--port", str(free_port())],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FASTSAM3D_WEB_MAX_IMAGE_GB": "lots", "FASTSAM3D_DEBUG": ""},
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: FASTSAM3D_WEB_MAX_IMAGE_GB=lots")
