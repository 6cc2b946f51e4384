"""DICOMweb in and out (fastsam3d_core.io.dicomweb) against a real Orthanc with its DICOMweb plugin.

The shared CT series (20 slices, JPEG 2000 lossless, real UIDs) is uploaded to an Orthanc the
tests start on a loopback port (Testing/orthanc_server.py); it comes back over WADO-RS, is found
by QIDO-RS, and an instance goes in by STOW-RS. Each failure (not a series URL, unknown series,
refused credentials, no answer, nothing listening, a gap) is one line naming the server, without
credentials. Bearer tokens, which Orthanc itself does not check, are checked on a small loopback
server that records the header it receives.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA_DIR, free_port
from orthanc_server import OrthancServer, running_orthanc
from pydicom.uid import generate_uid

from fastsam3d_core.io import VolumeReadError, read_volume
from fastsam3d_core.io.dicomweb import (
    DicomwebAuth,
    DicomwebError,
    SeriesURL,
    download_series,
    is_dicomweb_url,
    search_series,
    store_dataset,
)

PACS_DIR = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_dicom_pacs"
PATIENT = "FASTSAM3D-EXAMPLE"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
NO_AUTH = DicomwebAuth()
needs_data = pytest.mark.skipif(not PACS_DIR.is_dir(), reason=f"{PACS_DIR} not found")
pytestmark = needs_data


def series_url(server: OrthancServer, folder: Path) -> SeriesURL:
    header = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    return SeriesURL(server.dicomweb, header.StudyInstanceUID, header.SeriesInstanceUID)


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(DicomwebError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def shared_series(orthanc: OrthancServer) -> SeriesURL:
    """The shared series, uploaded to this module's Orthanc."""
    assert len(orthanc.upload(PACS_DIR)) == 20
    return series_url(orthanc, PACS_DIR)


def renamed_copy(source: Path, folder: Path, patient_id: str, skip: int | None = None) -> Path:
    """The series as a new study and series of another patient (new UIDs), less slice ``skip``
    (by position along the slice normal), so that it can sit beside the original in Orthanc."""
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    files = sorted(source.iterdir(), key=lambda file: float(
        pydicom.dcmread(file, stop_before_pixels=True).ImagePositionPatient[2]))
    for index, file in enumerate(files):
        if index == skip:
            continue
        dataset = pydicom.dcmread(file)
        dataset.PatientID, dataset.StudyInstanceUID, dataset.SeriesInstanceUID = (
            patient_id, study, series)
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.save_as(folder / file.name)
    return folder


def test_series_comes_back_as_the_shared_folder_reads(
    orthanc: OrthancServer, shared_series: SeriesURL, tmp_path: Path
) -> None:
    steps: list[tuple[int, int]] = []
    folder = download_series(shared_series, tmp_path / "series", NO_AUTH, progress=lambda *step:
                             steps.append(step))
    assert folder == tmp_path / "series" and len(list(folder.iterdir())) == 20
    assert steps == [(done, 20) for done in range(1, 21)]
    # As stored: Orthanc 1.10 cannot transcode JPEG 2000 (a plain request gets 500).
    first = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    assert first.file_meta.TransferSyntaxUID == JPEG_2000_LOSSLESS
    downloaded, original = read_volume(folder), read_volume(PACS_DIR)
    assert downloaded.shape == original.shape == (512, 512, 20)
    np.testing.assert_array_equal(downloaded.ijk_to_ras, original.ijk_to_ras)
    assert np.array_equal(downloaded.array, original.array)
    # The folder must be empty: other files would be read with the series.
    message = str(pytest.raises(ValueError, download_series, shared_series, folder, NO_AUTH).value)
    assert "not empty" in message


def test_search_finds_the_series_by_patient_and_date(
    orthanc: OrthancServer, shared_series: SeriesURL
) -> None:
    found = search_series(orthanc.dicomweb, NO_AUTH, patient_id=PATIENT)
    ours = [summary for summary in found if summary.url == str(shared_series)]
    assert len(ours) == 1, found
    summary = ours[0]
    assert (summary.patient_id, summary.patient_name, summary.study_date) == (
        PATIENT, "Example^CT", "20221208")
    assert (summary.modality, summary.instances, summary.series_description) == (
        "CT", 20, "CT Body 3.0")
    assert SeriesURL.parse(summary.url) == shared_series
    for date in ("20221208", "2022-12-08", "20220101-20221231", "20221201-", "-20221231"):
        urls = [item.url for item in search_series(orthanc.dicomweb, NO_AUTH, study_date=date)]
        assert str(shared_series) in urls, date
    assert search_series(orthanc.dicomweb, NO_AUTH, study_date="20230101-20231231") == []
    assert search_series(orthanc.dicomweb, NO_AUTH, patient_id="SOMEONE-ELSE") == []
    with pytest.raises(ValueError, match="expected YYYYMMDD"):
        search_series(orthanc.dicomweb, NO_AUTH, study_date="last week")


def copy_of_a_slice(modality: str, description: str) -> pydicom.Dataset:
    """One slice of the shared series as a new instance of a new series of the same study."""
    dataset = pydicom.dcmread(next(PACS_DIR.iterdir()))
    dataset.SeriesInstanceUID, dataset.Modality = generate_uid(), modality
    dataset.SeriesDescription = description
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return dataset


def test_stored_instance_is_found_and_non_images_are_not_listed(
    orthanc: OrthancServer, shared_series: SeriesURL
) -> None:
    stored = copy_of_a_slice("CT", "stored by STOW-RS")
    store_dataset(orthanc.dicomweb, stored, NO_AUTH)
    segmentation_like = copy_of_a_slice("SEG", "not an image to segment")
    store_dataset(orthanc.dicomweb, segmentation_like, NO_AUTH)
    by_uid = {SeriesURL.parse(item.url).series_uid: item
              for item in search_series(orthanc.dicomweb, NO_AUTH, patient_id=PATIENT)}
    assert by_uid[stored.SeriesInstanceUID].instances == 1
    assert by_uid[stored.SeriesInstanceUID].series_description == "stored by STOW-RS"
    assert shared_series.series_uid in by_uid
    assert segmentation_like.SeriesInstanceUID not in by_uid
    # Orthanc has it (the exclusion is ours, not a failed store).
    instances = json.loads(orthanc.get(
        f"/dicom-web/studies/{shared_series.study_uid}/series/"
        f"{segmentation_like.SeriesInstanceUID}/instances"))
    assert len(instances) == 1
    assert len(search_series(orthanc.dicomweb, NO_AUTH, patient_id=PATIENT, limit=1)) == 1
    unstorable = copy_of_a_slice("CT", "no SOP instance UID")
    del unstorable.SOPInstanceUID
    message = one_line_error(store_dataset, orthanc.dicomweb, unstorable, NO_AUTH)
    assert orthanc.dicomweb in message and "400" in message and "refused the instance" in message
    assert unstorable.SeriesInstanceUID not in orthanc.get("/dicom-web/series").decode()


@pytest.mark.parametrize("url", [
    "http://pacs.example/dicom-web/studies/1.2.3",
    "http://pacs.example/dicom-web/studies/1.2.3/series/",
    "http://pacs.example/dicom-web/studies/1.2.3/series/4.5.6/instances/7.8.9",
    "http://pacs.example/dicom-web/studies/1.2.3/series/4.5.x",
    "http://pacs.example/dicom-web/studies/1.2.3/series/4.5.6?x=1",
    "ftp://pacs.example/dicom-web/studies/1.2.3/series/4.5.6",
])
def test_what_is_not_a_series_url_is_refused_in_one_line(url: str) -> None:
    message = one_line_error(SeriesURL.parse, url)
    assert "not a DICOMweb" in message and "studies/{StudyInstanceUID}" in message
    assert url.split("?")[0] in message


def test_series_urls_parse_and_credentials_in_them_are_refused_unshown() -> None:
    text = "https://pacs.example:8443/a/dicom-web/studies/1.2.3/series/4.5.6/"
    assert is_dicomweb_url(text) and is_dicomweb_url("HTTP://host/x")
    assert not is_dicomweb_url("/data/ct") and not is_dicomweb_url("C:\\data\\ct")
    url = SeriesURL.parse(text)
    assert url == SeriesURL("https://pacs.example:8443/a/dicom-web", "1.2.3", "4.5.6")
    assert str(url) == text.rstrip("/")
    message = one_line_error(
        SeriesURL.parse, "http://alice:s3cret@pacs.example/dicom-web/studies/1.2/series/3.4")
    assert "s3cret" not in message and "alice" not in message
    assert "pacs.example" in message and "FASTSAM3D_DICOMWEB_USER" in message


def test_credentials_are_never_shown_and_options_do_not_mix_with_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = DicomwebAuth.from_options("tok3n", "alice", "s3cret")
    for shown in (repr(auth), str(auth), repr([auth])):
        assert "tok3n" not in shown and "alice" not in shown and "s3cret" not in shown
    monkeypatch.setenv("FASTSAM3D_DICOMWEB_TOKEN", "env-token")
    monkeypatch.setenv("FASTSAM3D_DICOMWEB_USER", "bob")
    assert DicomwebAuth.from_options() == DicomwebAuth("env-token", "bob", None)
    assert DicomwebAuth.from_options(user="carol", password="pw") == DicomwebAuth(
        None, "carol", "pw")
    # A user given as an option keeps the password out of the command line.
    monkeypatch.setenv("FASTSAM3D_DICOMWEB_PASSWORD", "env-pw")
    assert DicomwebAuth.from_options(user="carol") == DicomwebAuth(None, "carol", "env-pw")
    monkeypatch.delenv("FASTSAM3D_DICOMWEB_PASSWORD")
    monkeypatch.delenv("FASTSAM3D_DICOMWEB_USER")
    monkeypatch.delenv("FASTSAM3D_DICOMWEB_TOKEN")
    with pytest.raises(ValueError, match="without a user") as caught:
        DicomwebAuth.from_options(password="lonely-pw")
    assert "lonely-pw" not in str(caught.value)
    with pytest.raises(ValueError, match="spaces or control") as caught:
        DicomwebAuth.from_options(token="bad\r\ntoken")
    assert "bad" not in str(caught.value)


def test_unknown_series_is_one_line_and_nothing_is_written(
    orthanc: OrthancServer, shared_series: SeriesURL, tmp_path: Path
) -> None:
    for study, series in ((shared_series.study_uid, "1.2.3.4"), ("1.2.3", "1.2.3.4")):
        message = one_line_error(download_series, SeriesURL(orthanc.dicomweb, study, series),
                                 tmp_path, NO_AUTH)
        assert "no such series on the server" in message and orthanc.dicomweb in message
        assert not any(tmp_path.iterdir())
    message = one_line_error(search_series, f"{orthanc.rest}/no-dicom-web-here", NO_AUTH)
    assert "404" in message and "DICOMweb root" in message


@pytest.fixture(scope="module")
def secured_orthanc(tmp_path_factory) -> Iterator[OrthancServer]:
    """An Orthanc that asks for HTTP basic authentication, with the shared series."""
    users = {"alice": "s3cret-pw"}
    with running_orthanc(tmp_path_factory.mktemp("secured-orthanc"), users) as server:
        server.upload(PACS_DIR)
        yield server


def test_basic_authentication_refused_in_one_line_and_accepted(
    secured_orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = series_url(secured_orthanc, PACS_DIR)
    for auth in (NO_AUTH, DicomwebAuth.from_options(user="alice", password="wrong-pw")):
        message = one_line_error(download_series, url, tmp_path / "refused", auth)
        assert secured_orthanc.dicomweb in message and "401" in message
        assert "--dicomweb-token" in message and "FASTSAM3D_DICOMWEB_USER" in message
        assert "wrong-pw" not in message and "alice" not in message
        stored = copy_of_a_slice("CT", "refused")
        one_line_error(store_dataset, secured_orthanc.dicomweb, stored, auth)
        # Nothing went in.
        assert stored.SeriesInstanceUID not in secured_orthanc.get("/dicom-web/series").decode()
    folder = download_series(url, tmp_path / "accepted",
                             DicomwebAuth.from_options(user="alice", password="s3cret-pw"))
    assert read_volume(folder).shape == (512, 512, 20)
    monkeypatch.setenv("FASTSAM3D_DICOMWEB_USER", "alice")
    monkeypatch.setenv("FASTSAM3D_DICOMWEB_PASSWORD", "s3cret-pw")
    found = search_series(secured_orthanc.dicomweb, DicomwebAuth.from_options())
    assert [item.url for item in found] == [str(url)]


class _TokenChecker(http.server.BaseHTTPRequestHandler):
    """Answers QIDO-RS with no studies to ``Bearer right-token``, 401 to anything else, and
    records the Authorization headers it received."""

    received: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.received.append(self.headers.get("Authorization"))
        right = self.headers.get("Authorization") == "Bearer right-token"
        body = b"[]" if right else b""
        self.send_response(200 if right else 401)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_bearer_token_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenChecker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        assert search_series(base, DicomwebAuth.from_options(token="right-token")) == []
        monkeypatch.setenv("FASTSAM3D_DICOMWEB_TOKEN", "right-token")
        assert search_series(base, DicomwebAuth.from_options()) == []
        message = one_line_error(search_series, base, DicomwebAuth.from_options(token="wrong"))
        assert base in message and "401" in message and "FASTSAM3D_DICOMWEB_TOKEN" in message
        assert "wrong" not in message
    finally:
        server.shutdown()
        server.server_close()
    assert _TokenChecker.received == ["Bearer right-token"] * 2 + ["Bearer wrong"]


def test_a_server_that_never_answers_times_out_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        base = f"http://127.0.0.1:{silent.getsockname()[1]}/dicom-web"
        started = time.monotonic()
        message = one_line_error(download_series, SeriesURL(base, "1.2", "3.4"), tmp_path,
                                 NO_AUTH, timeout_s=0.5)
        assert time.monotonic() - started < 5  # one request, no retries
    assert base in message and "no answer within 0.5 s" in message


def test_nothing_listening_is_one_line(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}/dicom-web"
    message = one_line_error(search_series, base, NO_AUTH, timeout_s=5)
    assert base in message and "connection refused" in message
    dataset = copy_of_a_slice("CT", "nowhere")
    message = one_line_error(store_dataset, base, dataset, NO_AUTH, timeout_s=5)
    assert base in message and "cannot connect" in message


def test_series_with_a_gap_is_refused_as_a_folder_with_a_gap(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    gap = renamed_copy(PACS_DIR, tmp_path / "gap", "FASTSAM3D-GAP", skip=10)
    orthanc.upload(gap)
    assert [item.patient_id for item in search_series(
        orthanc.dicomweb, NO_AUTH, patient_id="FASTSAM3D-GAP")] == ["FASTSAM3D-GAP"]
    folder = download_series(series_url(orthanc, gap), tmp_path / "downloaded", NO_AUTH)
    for source in (gap, folder):
        with pytest.raises(VolumeReadError) as caught:
            read_volume(source)
        assert "expected 2 mm" in str(caught.value) and "found 4 mm" in str(caught.value)
        assert "re-export the complete series" in str(caught.value)
    shutil.rmtree(folder)
