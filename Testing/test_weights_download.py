"""Weights registry, cache and downloader, against a real HTTP server on 127.0.0.1.

No HTTP is mocked: every download goes over loopback to a stdlib server whose switches simulate a
dropped connection, a server that ignores ``Range``, HTTP errors and a web page sent instead of the
weights. No test reaches any other host. Tests run as root, where permissions do not stop writes, so
an unwritable cache is made of paths that fail for root too (a file where a folder should be).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer
from conftest import free_port, invoke_cli
from typer.testing import CliRunner

from fastsam3d_core.cli.weights import weights_app
from fastsam3d_core.models.build import MODEL_REGISTRY
from fastsam3d_core.weights import download as weights_download
from fastsam3d_core.weights import registry
from fastsam3d_core.weights.download import (
    MAX_ATTEMPTS,
    SIZE_TOLERANCE,
    ChecksumMismatchError,
    WeightsDownloadError,
    WeightsError,
    cached_weights_path,
    default_cache_dir,
    download_weights,
    recorded_sha256,
    recorded_sha256_path,
    resolve_weights,
    sha256_of_file,
    verify_weights,
)
from fastsam3d_core.weights.registry import WEIGHTS, WeightsEntry

PAYLOAD_BYTES = 300_000
TEST_NAME = "test-weights"
ZIP_START = b"PK\x03\x04"  # how a torch.save file starts
HTML_PAGE = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
runner = CliRunner()


@dataclasses.dataclass
class ServerState:
    """What the loopback server serves, its failure switches, and the requests it saw."""

    payload: bytes
    url: str = ""
    drops: int = 0  # the next `drops` responses stop after half their body
    ignore_range: bool = False
    status: int | None = None  # answer every request with this HTTP error
    content_type: str | None = None  # sent with successful responses when set
    ranges: list[str | None] = dataclasses.field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        requested = self.headers.get("Range")
        state.ranges.append(requested)
        if state.status is not None:
            self.send_error(state.status)
            return
        size = len(state.payload)
        start = 0
        if requested is not None and not state.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-", requested)
            if match is None:
                self.send_error(400, "only open-ended byte ranges are served")
                return
            start = int(match.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        body = state.payload[start:]
        if state.content_type is not None:
            self.send_header("Content-Type", state.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.drops > 0:
            state.drops -= 1
            body = body[: len(body) // 2]  # then the connection closes (HTTP/1.0)
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


class _Server(ThreadingHTTPServer):
    state: ServerState


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy may reroute loopback traffic, and no read may wait long."""
    for variable in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)
    monkeypatch.setattr(weights_download, "TIMEOUT_S", 5.0)


@pytest.fixture
def server() -> Iterator[ServerState]:
    payload = ZIP_START + random.Random(1234).randbytes(PAYLOAD_BYTES - len(ZIP_START))
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = ServerState(payload, f"http://127.0.0.1:{httpd.server_port}/weights.bin")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def entry(server: ServerState) -> WeightsEntry:
    return dataclasses.replace(
        WEIGHTS["sam-med3d-turbo"],
        name=TEST_NAME,
        filename="test-weights.pth",
        url=server.url,
        size=len(server.payload),
        sha256=hashlib.sha256(server.payload).hexdigest(),
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder, also set as FASTSAM3D_CACHE_DIR."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FASTSAM3D_CACHE_DIR", str(folder))
    return folder


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# Registry


def test_registry_entries_fit_the_models():
    # Text prompts' CLIP text tower and vocabulary: Testing/test_text_encoder.py checks them.
    text_entries = {"clip-vit-b-32-laion2b", "clip-bpe-vocab"}
    assert set(WEIGHTS) == {"fastsam3d", "sam-med3d-turbo"} | text_entries
    for name, entry in WEIGHTS.items():
        assert entry.name == name
        if name in text_entries:
            continue
        assert entry.architecture in MODEL_REGISTRY
        assert entry.url.startswith("https://huggingface.co/")
        assert entry.url.endswith("/resolve/main/" + entry.filename)
    assert WEIGHTS["fastsam3d"].sha256 is None
    assert WEIGHTS["sam-med3d-turbo"].sha256 == (
        "899a46d04d3b70f723282ceb489149373558bf0aaba389a346f5ab57da5cdd3c"
    )


def test_registry_rejects_a_malformed_hash():
    with pytest.raises(ValueError, match="64 lower-case hex"):
        dataclasses.replace(WEIGHTS["sam-med3d-turbo"], sha256="ABC")


# Download


def test_download_streams_checks_the_hash_and_reports_progress(server, entry, cache):
    calls: list[tuple[int, int | None]] = []
    path = download_weights(entry, progress=lambda done, total: calls.append((done, total)))

    assert path == cache / entry.filename
    assert path.read_bytes() == server.payload
    assert not _part(path).exists()
    assert server.ranges == [None]
    assert calls[0] == (0, PAYLOAD_BYTES)
    assert calls[-1] == (PAYLOAD_BYTES, PAYLOAD_BYTES)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    assert all(total == PAYLOAD_BYTES for _, total in calls)


def test_dropped_connection_is_resumed_with_range(server, entry, cache):
    server.drops = 1
    calls: list[tuple[int, int | None]] = []
    path = download_weights(entry, progress=lambda done, total: calls.append((done, total)))

    half = PAYLOAD_BYTES // 2
    assert server.ranges == [None, f"bytes={half}-"]
    assert path.read_bytes() == server.payload
    assert sha256_of_file(path) == entry.sha256
    assert (half, PAYLOAD_BYTES) in calls
    assert calls[-1] == (PAYLOAD_BYTES, PAYLOAD_BYTES)


def test_interrupted_run_keeps_the_part_and_the_next_run_resumes(server, entry, cache):
    server.drops = MAX_ATTEMPTS
    with pytest.raises(WeightsDownloadError) as failure:
        download_weights(entry)
    final = cache / entry.filename
    kept = _part(final).stat().st_size
    assert kept == PAYLOAD_BYTES - PAYLOAD_BYTES // 2**MAX_ATTEMPTS
    assert not final.exists()
    assert entry.url in str(failure.value) and str(_part(final)) in str(failure.value)
    assert len(server.ranges) == MAX_ATTEMPTS

    path = download_weights(entry)  # a new run: the prefix is hashed again from the .part
    assert server.ranges[-1] == f"bytes={kept}-"
    assert path.read_bytes() == server.payload
    assert not _part(path).exists()


def test_server_that_ignores_range_restarts_cleanly(server, entry, cache):
    server.ignore_range = True
    final = cache / entry.filename
    cache.mkdir()
    _part(final).write_bytes(b"stale bytes from another file" * 100)

    path = download_weights(entry)
    assert server.ranges == [f"bytes={len(b'stale bytes from another file') * 100}-"]
    assert path.read_bytes() == server.payload


def test_server_that_ignores_range_after_a_drop(server, entry, cache):
    server.drops = 1
    server.ignore_range = True
    assert download_weights(entry).read_bytes() == server.payload
    assert server.ranges == [None, f"bytes={PAYLOAD_BYTES // 2}-"]


def test_part_longer_than_the_file_restarts(server, entry, cache):
    cache.mkdir()
    _part(cache / entry.filename).write_bytes(server.payload + b"extra")
    assert download_weights(entry).read_bytes() == server.payload
    assert server.ranges == [f"bytes={PAYLOAD_BYTES + 5}-", None]


def test_hash_mismatch_keeps_nothing(server, entry, cache):
    wrong = dataclasses.replace(entry, sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError, match="SHA-256 mismatch") as failure:
        download_weights(wrong)
    assert entry.url in str(failure.value) and entry.sha256 in str(failure.value)
    assert not (cache / entry.filename).exists()
    assert not _part(cache / entry.filename).exists()


def test_unknown_hash_is_recorded_then_verified(server, entry, cache):
    unpublished = dataclasses.replace(entry, sha256=None)
    path = download_weights(unpublished)
    expected = hashlib.sha256(server.payload).hexdigest()
    assert recorded_sha256(unpublished) == expected
    assert recorded_sha256_path(unpublished).read_text().split() == [expected, entry.filename]

    check = verify_weights(unpublished)
    assert (check.ok, check.source, check.sha256) == (True, "recorded", expected)

    tampered = bytearray(path.read_bytes())
    tampered[1000] ^= 0xFF
    path.write_bytes(bytes(tampered))
    check = verify_weights(unpublished)
    assert check.ok is False and check.expected == expected


def test_changed_upstream_file_fails_against_the_recorded_hash(server, entry, cache):
    unpublished = dataclasses.replace(entry, sha256=None)
    path = download_weights(unpublished)
    path.unlink()
    server.payload = ZIP_START + bytes(reversed(server.payload[len(ZIP_START) :]))
    with pytest.raises(ChecksumMismatchError, match="recorded by the first download"):
        download_weights(unpublished)
    assert not path.exists() and not _part(path).exists()


def test_verify_without_any_reference(entry, cache, tmp_path):
    unpublished = dataclasses.replace(entry, sha256=None)
    weights = tmp_path / "mine.pth"
    weights.write_bytes(b"weights")
    check = verify_weights(unpublished, weights)
    assert check.ok is None and check.source == "none"
    assert check.sha256 == hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(WeightsError, match="no 'test-weights' weights file"):
        verify_weights(unpublished, tmp_path / "missing.pth")


def test_connection_refused_names_the_url_and_the_cache_path(entry, cache):
    offline = dataclasses.replace(entry, url=f"http://127.0.0.1:{free_port()}/weights.bin")
    with pytest.raises(WeightsDownloadError, match="refused") as failure:
        download_weights(offline)
    message = str(failure.value)
    assert offline.url in message
    assert str(cache / entry.filename) in message
    assert "--weights FILE" in message


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors(server, entry, cache, status):
    server.status = status
    with pytest.raises(WeightsDownloadError, match=f"HTTP {status}") as failure:
        download_weights(entry)
    assert entry.url in str(failure.value)
    assert not (cache / entry.filename).exists()
    assert not _part(cache / entry.filename).exists()
    assert len(server.ranges) == 1  # an HTTP error is not retried


# Cache folder and resolution


def test_cache_dir_comes_from_the_environment(server, entry, cache, monkeypatch):
    assert default_cache_dir() == cache
    assert cached_weights_path(entry) == cache / entry.filename
    assert download_weights(entry).parent == cache

    monkeypatch.delenv("FASTSAM3D_CACHE_DIR")
    assert default_cache_dir() != cache
    assert default_cache_dir().name.lower() in {"fastsam3d", "cache"}


def test_explicit_cache_dir_wins(server, entry, cache, tmp_path):
    other = tmp_path / "other"
    assert download_weights(entry, cache_dir=other) == other / entry.filename
    assert not cache.exists()


def test_resolve_explicit_file(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(WeightsError, match="weights file not found") as failure:
        resolve_weights("fastsam3d", weights_file=missing)
    assert str(missing) in str(failure.value)
    present = tmp_path / "mine.pth"
    present.write_bytes(b"x")
    assert resolve_weights("fastsam3d", weights_file=present) == present
    with pytest.raises(ValueError, match="unknown weights 'nope'"):
        resolve_weights("nope")


def test_resolve_uses_downloads_and_repairs_the_cache(server, entry, cache, monkeypatch):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    with pytest.raises(WeightsError, match="fastsam3d weights download test-weights") as failure:
        resolve_weights(TEST_NAME, download=False)
    assert str(cache / entry.filename) in str(failure.value)
    assert server.ranges == []

    path = resolve_weights(TEST_NAME)
    assert resolve_weights(TEST_NAME, download=False) == path
    assert len(server.ranges) == 1  # the second call used the cache

    path.write_bytes(b"corrupt")
    with pytest.raises(ChecksumMismatchError):
        resolve_weights(TEST_NAME, download=False)
    assert resolve_weights(TEST_NAME).read_bytes() == server.payload
    assert len(server.ranges) == 2


# Command line


def test_cli_every_command_has_help():
    group = typer.main.get_command(weights_app)
    assert group.help
    for name, command in group.commands.items():
        assert command.help, f"command {name} has no help"
        assert invoke_cli(["weights", name, "--help"]).exit_code == 0


def test_cli_list_download_verify(server, entry, cache, monkeypatch):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    result = invoke_cli(["weights", "list"])
    assert result.exit_code == 0, result.output
    assert f"cache: {cache}" in result.output
    assert "fastsam3d: " in result.output and "sam-med3d-turbo: " in result.output
    assert "sha256: unknown (recorded on first download)" in result.output
    assert f"cached: no ({cache / entry.filename})" in result.output

    result = invoke_cli(["weights", "download", TEST_NAME])
    assert result.exit_code == 0, result.output
    assert f"saved: {cache / entry.filename}" in result.output
    assert f"sha256: {entry.sha256}" in result.output
    assert "cached: yes" in invoke_cli(["weights", "list"]).output

    result = invoke_cli(["weights", "download", TEST_NAME])
    assert result.exit_code == 0 and "already cached" in result.output
    assert len(server.ranges) == 1

    result = invoke_cli(["weights", "verify", TEST_NAME])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output

    (cache / entry.filename).write_bytes(b"tampered")
    result = invoke_cli(["weights", "verify", TEST_NAME])
    assert result.exit_code == 1 and "MISMATCH" in result.output


def test_cli_download_records_an_unknown_hash(server, entry, cache, monkeypatch):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, dataclasses.replace(entry, sha256=None))
    result = invoke_cli(["weights", "download", TEST_NAME])
    assert result.exit_code == 0, result.output
    assert f"sha256: {entry.sha256}" in result.output
    assert "recorded in" in result.output
    listing = invoke_cli(["weights", "list"]).output
    assert f"sha256: {entry.sha256} (recorded on first download)" in listing


def test_cli_verify_a_file(entry, cache, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    weights = tmp_path / "mine.pth"
    weights.write_bytes(b"not the weights")
    result = invoke_cli(["weights", "verify", "--file", str(weights), "--model", TEST_NAME])
    assert result.exit_code == 1 and "MISMATCH" in result.output

    result = invoke_cli(["weights", "verify", "--file", str(weights), "--model", "fastsam3d"])
    assert result.exit_code == 2 and "nothing to compare with" in result.output

    result = invoke_cli(["weights", "verify", "--file", str(tmp_path / "missing.pth")])
    assert result.exit_code == 2  # neither NAME nor --model

    result = invoke_cli(["weights", "verify", "nope"])
    assert result.exit_code == 2 and "unknown weights" in result.output


def test_cli_download_failure_exits_1(server, entry, cache, monkeypatch):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    server.status = 404
    result = invoke_cli(["weights", "download", TEST_NAME])
    assert result.exit_code == 1
    assert "HTTP 404" in result.output and entry.url in result.output


# A wrong file in the cache is reported, and replaced only by a verified download


def test_resolve_says_the_cached_file_is_wrong_before_downloading_again(
    server, entry, cache, monkeypatch
):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    cached = cache / entry.filename
    cache.mkdir()
    cached.write_bytes(ZIP_START + b"someone else's weights")
    wrong = sha256_of_file(cached)
    notices: list[str] = []

    assert resolve_weights(TEST_NAME, notice=notices.append).read_bytes() == server.payload
    assert notices == [
        f"the cached file {cached} has SHA-256 {wrong}, expected {entry.sha256} (registry): "
        "downloading it again"
    ]


def test_the_wrong_cached_file_is_logged_by_default(server, entry, cache, monkeypatch, caplog):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    cache.mkdir()
    (cache / entry.filename).write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING, logger=weights_download.__name__):
        resolve_weights(TEST_NAME)
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.name == weights_download.__name__
    assert "has SHA-256" in record.getMessage() and "downloading it again" in record.getMessage()


def test_the_wrong_cached_file_stays_until_a_download_verifies(server, entry, cache, monkeypatch):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    cached = cache / entry.filename
    cache.mkdir()
    cached.write_bytes(b"the user's file")
    server.status = 404
    with pytest.raises(WeightsDownloadError):
        resolve_weights(TEST_NAME, notice=lambda message: None)
    assert cached.read_bytes() == b"the user's file"

    server.status = None
    wrong = dataclasses.replace(entry, sha256="0" * 64)
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, wrong)
    with pytest.raises(ChecksumMismatchError):
        resolve_weights(TEST_NAME, notice=lambda message: None)
    assert cached.read_bytes() == b"the user's file"


def test_a_wrong_cached_file_against_the_recorded_hash(server, entry, cache, monkeypatch):
    unpublished = dataclasses.replace(entry, sha256=None)
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, unpublished)
    cached = resolve_weights(TEST_NAME)
    cached.write_bytes(b"corrupt")
    notices: list[str] = []
    resolve_weights(TEST_NAME, notice=notices.append)
    [notice] = notices
    assert f"(recorded by the first download in {_sidecar(cached)})" in notice
    assert notice.endswith(": downloading it again") and "\n" not in notice


def test_a_wrong_cached_file_without_download_is_not_said_to_be_deleted(entry, cache, monkeypatch):
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    cached = cache / entry.filename
    cache.mkdir()
    cached.write_bytes(b"corrupt")
    with pytest.raises(ChecksumMismatchError) as failure:
        resolve_weights(TEST_NAME, download=False)
    message = _one_line(failure)
    assert message.startswith(f"the cached file {cached} has SHA-256 ")
    assert "not kept" not in message and "--weights FILE" in message
    assert f"fastsam3d weights download {TEST_NAME}" in message
    assert cached.read_bytes() == b"corrupt"


# Download failures say what to do, on one line


def test_download_failure_is_one_line_that_says_where_to_put_the_file_once(entry, cache):
    offline = dataclasses.replace(entry, url=f"http://127.0.0.1:{free_port()}/weights.bin")
    with pytest.raises(WeightsDownloadError) as failure:
        download_weights(offline)
    message = _one_line(failure)
    assert message.count("put it at") == 1 and message.count("--weights FILE") == 1
    assert message.endswith(f"or put it at {cache / entry.filename}.")


def test_interrupted_download_failure_is_one_line(server, entry, cache):
    server.drops = MAX_ATTEMPTS
    with pytest.raises(WeightsDownloadError) as failure:
        download_weights(entry)
    message = _one_line(failure)
    assert "running again resumes. Download the file in a browser" in message


# Responses that are not the weights are refused before anything is kept or recorded


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("text/html; charset=utf-8", "an HTML page (text/html"),
        ("text/plain", "a text page (text/plain"),
        ("application/json", "a JSON document (application/json"),
    ],
)
def test_a_web_page_is_refused_before_it_is_written(server, entry, cache, content_type, kind):
    server.payload = HTML_PAGE
    server.content_type = content_type
    unpublished = dataclasses.replace(entry, sha256=None)
    with pytest.raises(WeightsDownloadError) as failure:
        download_weights(unpublished)
    message = _one_line(failure)
    assert f"the server sent {kind}, {len(HTML_PAGE)} bytes), not the weights" in message
    assert "Download the file in a browser and pass it with --weights FILE" in message
    final = cache / entry.filename
    assert not final.exists() and not _part(final).exists() and not _sidecar(final).exists()
    assert len(server.ranges) == 1  # not retried


def test_a_web_page_leaves_a_kept_part_untouched(server, entry, cache):
    kept = server.payload[:1000]
    cache.mkdir()
    _part(cache / entry.filename).write_bytes(kept)
    server.content_type = "text/html"
    with pytest.raises(WeightsDownloadError, match="an HTML page"):
        download_weights(entry)
    assert _part(cache / entry.filename).read_bytes() == kept


def test_a_page_sent_as_binary_is_refused_by_its_size(server, entry, cache):
    server.payload = HTML_PAGE
    server.content_type = "application/octet-stream"
    unpublished = dataclasses.replace(entry, sha256=None, size=PAYLOAD_BYTES)
    with pytest.raises(WeightsDownloadError) as failure:
        download_weights(unpublished)
    message = _one_line(failure)
    assert f"the server sent {len(HTML_PAGE)} bytes (starting {HTML_PAGE[:16]!r})" in message
    assert f"not the weights (about {PAYLOAD_BYTES:,} bytes)" in message
    final = cache / entry.filename
    assert not final.exists() and not _part(final).exists() and not _sidecar(final).exists()


def test_a_file_that_is_not_a_checkpoint_is_refused(server, entry, cache):
    server.payload = b"\0" * PAYLOAD_BYTES
    unpublished = dataclasses.replace(entry, sha256=None)
    with pytest.raises(WeightsDownloadError, match="not a torch checkpoint") as failure:
        download_weights(unpublished)
    assert "neither a zip nor a pickle file" in _one_line(failure)
    final = cache / entry.filename
    assert not final.exists() and not _part(final).exists() and not _sidecar(final).exists()


def test_a_legacy_pickle_checkpoint_is_accepted(server, entry, cache):
    server.payload = b"\x80\x02" + server.payload[2:]
    unpublished = dataclasses.replace(entry, sha256=None)
    assert download_weights(unpublished).read_bytes() == server.payload


def test_registry_sizes_are_approximate_unless_exact(server, entry, cache):
    near = dataclasses.replace(entry, size=int(PAYLOAD_BYTES * (1 + SIZE_TOLERANCE * 0.9)))
    assert download_weights(near).read_bytes() == server.payload

    exact = dataclasses.replace(entry, size=PAYLOAD_BYTES + 1, size_exact=True)
    with pytest.raises(
        WeightsDownloadError, match=f"not the weights \\({PAYLOAD_BYTES + 1:,} bytes\\)"
    ):
        download_weights(exact, cache_dir=cache / "exact")
    far = dataclasses.replace(entry, size=int(PAYLOAD_BYTES * (1 + SIZE_TOLERANCE) * 1.1))
    with pytest.raises(WeightsDownloadError, match="not the weights \\(about "):
        download_weights(far, cache_dir=cache / "far")


def test_the_fastsam3d_entry_records_only_a_download_that_passes_the_checks(server, cache):
    # The real entry (no published hash, about 638 MB) pointed at the loopback server.
    fastsam3d = dataclasses.replace(WEIGHTS["fastsam3d"], url=server.url)
    final = cache / fastsam3d.filename
    for content_type in ("text/html", None):
        server.content_type = content_type
        with pytest.raises(WeightsDownloadError, match="not the weights"):
            download_weights(fastsam3d)
        assert not final.exists() and not _part(final).exists() and not _sidecar(final).exists()
    assert recorded_sha256(fastsam3d) is None


# An unwritable cache says which folder and what to do


def _assert_cache_error(failure: pytest.ExceptionInfo, folder: Path) -> None:
    message = _one_line(failure)
    assert type(failure.value) is WeightsError
    assert f"cannot write to the weights cache {folder}" in message
    assert "set FASTSAM3D_CACHE_DIR to a writable folder" in message


def test_a_cache_inside_a_file_is_reported(server, entry, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    monkeypatch.setenv("FASTSAM3D_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setitem(registry.WEIGHTS, TEST_NAME, entry)
    with pytest.raises(WeightsError) as failure:
        resolve_weights(TEST_NAME)
    _assert_cache_error(failure, blocker / "cache")
    assert server.ranges == []


def test_a_part_that_cannot_be_written_is_reported(server, entry, cache):
    _part(cache / entry.filename).mkdir(parents=True)
    with pytest.raises(WeightsError) as failure:
        download_weights(entry)
    _assert_cache_error(failure, cache)
    assert str(_part(cache / entry.filename)) in str(failure.value)


def test_a_final_path_that_cannot_be_replaced_is_reported(server, entry, cache):
    (cache / entry.filename / "inside").mkdir(parents=True)
    with pytest.raises(WeightsError) as failure:
        download_weights(entry)
    _assert_cache_error(failure, cache)


def test_a_hash_that_cannot_be_recorded_is_reported_and_the_file_not_cached(server, entry, cache):
    unpublished = dataclasses.replace(entry, sha256=None)
    final = cache / entry.filename
    final.with_name(final.name + ".sha256.tmp").mkdir(parents=True)
    with pytest.raises(WeightsError) as failure:
        download_weights(unpublished)
    _assert_cache_error(failure, cache)
    assert not final.exists() and not _sidecar(final).exists()
