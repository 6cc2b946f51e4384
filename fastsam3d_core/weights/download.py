"""Weights cache and downloader: resumable, hash-checked, atomic.

A download streams into ``<cache>/<filename>.part``, hashing as it goes. A ``.part`` left by an
interrupted run is resumed with an HTTP ``Range`` request (a server that ignores ``Range`` sends
the whole file and the download restarts cleanly). A response that cannot be the weights (a web
page, a size far from the registry's, a file that is not a torch checkpoint) is refused and nothing
of it is kept. Only a file whose SHA-256 matches lands at the final path, through an atomic
:func:`os.replace`, so a file already there stays until its replacement is verified. For weights
whose hash is not published, the first download that passes these checks records it in
``<cache>/<filename>.sha256`` (``sha256sum`` format) and later checks compare against that record.

The cache is ``platformdirs.user_cache_dir("fastsam3d")`` unless ``FASTSAM3D_CACHE_DIR`` is set.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional

from ..io.errors import special_file_kind
from ..messages import one_line, os_error_reason
from .formats import describe_start, is_checkpoint_start, is_safetensors_start
from .registry import WeightsEntry, get_weights_entry

if TYPE_CHECKING:
    from hashlib import _Hash

# urllib (stdlib) rather than requests: it does Range, timeouts and redirects, so no dependency.

ENV_CACHE_DIR = "FASTSAM3D_CACHE_DIR"
# Seconds without progress (connecting, or waiting for the next bytes) before giving up.
TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20
# Requests per download: the first, and resumes after connections that drop mid-transfer.
MAX_ATTEMPTS = 3
PART_SUFFIX = ".part"
SHA256_SUFFIX = ".sha256"
_USER_AGENT = "fastsam3d-core (weights downloader)"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Registry sizes are as the host lists them ("638 MB", perhaps MiB), not measured here; a web page
# or a cut-off file is far outside this margin.
SIZE_TOLERANCE = 0.25
_HEAD_BYTES = 16
# Content types of the pages a proxy, login wall or API error answers with, often with HTTP 200.
_PAGE_KINDS = {
    "text/html": "an HTML page",
    "text/plain": "a text page",
    "application/json": "a JSON document",
}
_log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, Optional[int]], None]
"""Called with (bytes written so far, total bytes or None when the server does not say)."""


class WeightsError(RuntimeError):
    """Weights that cannot be found, fetched or verified."""


class WeightsDownloadError(WeightsError):
    """The server could not be reached, answered with an HTTP error, or kept dropping."""


class ChecksumMismatchError(WeightsError):
    """A file's SHA-256 differs from the published or recorded one."""


class _Interrupted(Exception):
    """A transfer that stopped early; the ``.part`` file keeps what can be resumed."""


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify_weights`.

    Attributes:
        path: the file checked.
        sha256: its SHA-256, computed now.
        expected: the reference hash, or None when none is known.
        source: where ``expected`` comes from: ``"registry"``, ``"recorded"`` or ``"none"``.
    """

    path: Path
    sha256: str
    expected: str | None
    source: str

    @property
    def ok(self) -> bool | None:
        """True on a match, False on a mismatch, None when there is nothing to compare with."""
        return None if self.expected is None else self.sha256 == self.expected


def default_cache_dir() -> Path:
    """``$FASTSAM3D_CACHE_DIR`` if set, else the per-user cache folder from platformdirs."""
    configured = os.environ.get(ENV_CACHE_DIR)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("fastsam3d", appauthor=False))


def cached_weights_path(entry: WeightsEntry, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``entry`` lives in the cache (whether or not it is there)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / entry.filename


def recorded_sha256_path(entry: WeightsEntry, cache_dir: str | os.PathLike | None = None) -> Path:
    """The sidecar file holding the hash recorded by the first download."""
    final = cached_weights_path(entry, cache_dir)
    return final.with_name(final.name + SHA256_SUFFIX)


def recorded_sha256(entry: WeightsEntry, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The hash recorded by the first download of ``entry``, or None.

    Raises:
        WeightsError: a sidecar file that does not start with a SHA-256 hex digest.
    """
    sidecar = recorded_sha256_path(entry, cache_dir)
    if not sidecar.is_file():
        return None
    fields = sidecar.read_text(encoding="ascii", errors="replace").split()
    if not fields or not _SHA256_HEX.fullmatch(fields[0]):
        raise WeightsError(f"{sidecar} holds no SHA-256; delete it and download again")
    return fields[0]


def sha256_of_file(path: str | os.PathLike) -> str:
    """The lower-case hex SHA-256 of a file, read in chunks."""
    return _hash_file(hashlib.sha256(), path).hexdigest()


def verify_weights(
    entry: WeightsEntry,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Verification:
    """Recompute a weights file's SHA-256 and compare it with the reference.

    The reference is the registry's hash, else the one recorded by the first download.

    Args:
        entry: the weights the file should hold.
        path: the file to check; default the cached copy.
        cache_dir: cache folder; default :func:`default_cache_dir`.

    Raises:
        WeightsError: no file at ``path``.
    """
    target = Path(path) if path is not None else cached_weights_path(entry, cache_dir)
    if not target.is_file():
        raise WeightsError(f"no {entry.name!r} weights file at {target}")
    expected, source = _reference_sha256(entry, cache_dir)
    return Verification(target, sha256_of_file(target), expected, source)


def download_weights(
    entry: WeightsEntry,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download ``entry`` into the cache, resuming a partial download, and check its hash.

    Args:
        entry: what to fetch.
        cache_dir: cache folder; default :func:`default_cache_dir`.
        progress: called with (bytes done, total or None) as data arrives; a resumed or
            restarted transfer starts from the bytes already kept.

    Returns:
        The path of the verified file in the cache.

    Raises:
        WeightsDownloadError: offline, host not found, connection refused, timeout, HTTP error, a
            connection that dropped :data:`MAX_ATTEMPTS` times (what arrived is kept to resume),
            or a response that is not the weights (nothing of it is kept or recorded).
        ChecksumMismatchError: the file's hash is wrong; it is deleted and nothing is cached.
        WeightsError: the cache folder, or a file in it, cannot be created or written.
    """
    final = cached_weights_path(entry, cache_dir)
    part = final.with_name(final.name + PART_SUFFIX)
    expected, source = _reference_sha256(entry, cache_dir)
    # Network failures become WeightsDownloadError or _Interrupted where they happen, so an OSError
    # reaching this block comes from the cache's files.
    with _cache_errors(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        # Before connecting: a read-only cache should not cost a download first.
        with tempfile.NamedTemporaryFile(dir=final.parent, prefix=".write-probe-"):
            pass
        digest = _fetch_with_retries(entry, final, part, progress)
        _refuse_non_weights(entry, final, part)
        if expected is not None and digest != expected:
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                _mismatch_message(entry, digest, expected, source, cache_dir)
            )
        if expected is None:
            # Recorded before the file lands, so a cached file never lacks its reference.
            sidecar = _record_sha256(entry, digest, cache_dir)
            _log.info("recorded SHA-256 %s of %s in %s", digest, final, sidecar)
        os.replace(part, final)
    return final


def resolve_weights(
    name: str,
    weights_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    notice: Callable[[str], None] | None = None,
) -> Path:
    """The weights file to load for a registered model.

    Order: an explicit ``weights_file`` (used as is, not hash-checked); else the cached copy if it
    verifies (or if no reference hash is known yet); else a download when allowed. A cached copy
    that fails verification is reported through ``notice`` and downloaded again when allowed; it
    stays in place until the new download is verified.

    Args:
        name: a :data:`~fastsam3d_core.weights.registry.WEIGHTS` name.
        weights_file: a local file given by the user (``--weights FILE``).
        cache_dir: cache folder; default :func:`default_cache_dir`.
        download: whether a missing or bad cached copy may be downloaded.
        progress: passed to :func:`download_weights`.
        notice: called with a one-line message for the user when the cached copy fails
            verification and is downloaded again; default: logged at WARNING by this module.

    Raises:
        ValueError: unknown ``name``.
        WeightsError: ``weights_file`` does not exist, or the weights are not cached and
            ``download`` is False; plus what :func:`download_weights` raises.
        ChecksumMismatchError: the cached copy fails verification and ``download`` is False.
    """
    entry = get_weights_entry(name)
    if weights_file is not None:
        explicit = Path(weights_file).expanduser()
        if explicit.is_dir():
            raise WeightsError(f"{explicit} is a folder; give the weights file (.pth) in it")
        if not explicit.is_file():
            kind = special_file_kind(explicit)  # a named pipe would block torch.load
            if kind is not None:
                raise WeightsError(f"{explicit}: not a regular file but {kind}; give the .pth file")
            raise WeightsError(f"weights file not found: {explicit}")
        return explicit
    cached = cached_weights_path(entry, cache_dir)
    if cached.is_file():
        check = verify_weights(entry, cached, cache_dir)
        if check.ok is not False:
            return cached
        wrong = _cached_mismatch(entry, check, cache_dir)
        if not download:
            raise ChecksumMismatchError(
                f"{wrong}: run `fastsam3d weights download {name}` to download it again, "
                "or pass --weights FILE"
            )
        (notice or _log.warning)(f"{wrong}: downloading it again")
    elif not download:
        raise WeightsError(
            f"the {name!r} weights are not in the cache. Run `fastsam3d weights download {name}`, "
            f"or download {entry.url} elsewhere and pass --weights FILE or put it at {cached}"
        )
    return download_weights(entry, cache_dir, progress)


def _reference_sha256(
    entry: WeightsEntry, cache_dir: str | os.PathLike | None
) -> tuple[str | None, str]:
    if entry.sha256 is not None:
        return entry.sha256, "registry"
    recorded = recorded_sha256(entry, cache_dir)
    return (recorded, "recorded") if recorded is not None else (None, "none")


def _record_sha256(entry: WeightsEntry, digest: str, cache_dir: str | os.PathLike | None) -> Path:
    sidecar = recorded_sha256_path(entry, cache_dir)
    temporary = sidecar.with_name(sidecar.name + ".tmp")
    temporary.write_text(f"{digest}  {entry.filename}\n", encoding="ascii")
    os.replace(temporary, sidecar)
    return sidecar


def _mismatch_message(
    entry: WeightsEntry,
    digest: str,
    expected: str | None,
    source: str,
    cache_dir: str | os.PathLike | None,
) -> str:
    message = (
        f"SHA-256 mismatch for the {entry.name!r} weights ({entry.url}): got {digest}, "
        f"expected {expected}"
    )
    if source == "recorded":
        sidecar = recorded_sha256_path(entry, cache_dir)
        message += (
            f" (recorded by the first download in {sidecar}). If the published file really "
            f"changed, delete {sidecar} and download again"
        )
    return message + ". The file was not kept; run the download again."


def _cached_mismatch(
    entry: WeightsEntry, check: Verification, cache_dir: str | os.PathLike | None
) -> str:
    """What is wrong with the cached file; the caller adds what happens next."""
    reference = check.source
    if check.source == "recorded":
        sidecar = recorded_sha256_path(entry, cache_dir)
        reference = f"recorded by the first download in {sidecar}"
    return (
        f"the cached file {check.path} has SHA-256 {check.sha256}, "
        f"expected {check.expected} ({reference})"
    )


def _failure(entry: WeightsEntry, final: Path, reason: str) -> str:
    """One line: the command line prints it after "error: " and the Slicer module in a dialog."""
    part = final.with_name(final.name + PART_SUFFIX)
    kept = part.stat().st_size if part.is_file() else 0
    resume = f" {kept} bytes are kept in {part}; running again resumes." if kept else ""
    reason = one_line(reason)  # an error's own text may span lines
    return (
        f"could not download the {entry.name!r} weights from {entry.url}: {reason}.{resume} "
        f"Download the file in a browser and pass it with --weights FILE, or put it at {final}."
    )


@contextmanager
def _cache_errors(folder: Path) -> Iterator[None]:
    """Turn a file-system error in the cache (read-only, full, a file in the way) into advice."""
    try:
        yield
    except OSError as error:
        raise WeightsError(
            f"cannot write to the weights cache {folder} ({os_error_reason(error)}); "
            f"set {ENV_CACHE_DIR} to a writable folder"
        ) from error


def _refuse_page(entry: WeightsEntry, final: Path, response: http.client.HTTPResponse) -> None:
    """Refuse a web page before any of it is written over a ``.part`` that may be resumable."""
    # The raw header: get_content_type() says text/plain when the header is missing.
    content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    kind = _PAGE_KINDS.get(content_type)
    if kind is None:
        return
    length = response.headers.get("Content-Length", "")
    size = f", {length} bytes" if length.isdigit() else ""
    reason = f"the server sent {kind} ({content_type}{size}), not the weights"
    raise WeightsDownloadError(_failure(entry, final, reason))


def _refuse_non_weights(entry: WeightsEntry, final: Path, part: Path) -> None:
    """Delete and refuse a download whose size or first bytes cannot be the weights'."""
    size = part.stat().st_size
    with open(part, "rb") as stream:
        head = stream.read(_HEAD_BYTES)
    tolerance = 0 if entry.size_exact else SIZE_TOLERANCE * entry.size
    if abs(size - entry.size) > tolerance:
        expected = f"{entry.size:,} bytes" if entry.size_exact else f"about {entry.size:,} bytes"
        reason = f"the server sent {size} bytes (starting {head!r}), not the weights ({expected})"
    elif not (is_checkpoint_start(head) or is_safetensors_start(head)):
        reason = f"the server sent a file that is not a torch checkpoint: {describe_start(head)}"
    else:
        return
    part.unlink()
    raise WeightsDownloadError(_failure(entry, final, reason))


def _describe(error: OSError) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, socket.gaierror):
        return f"the host name could not be resolved (offline?): {reason}"
    if isinstance(reason, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {TIMEOUT_S:g} s"
    return str(reason)


def _fetch_with_retries(
    entry: WeightsEntry, final: Path, part: Path, progress: ProgressCallback | None
) -> str:
    """Fetch into ``part``, resuming after dropped connections; return the SHA-256."""
    reasons = []
    for _ in range(MAX_ATTEMPTS):
        try:
            return _fetch_once(entry, final, part, progress)
        except _Interrupted as interruption:
            reasons.append(str(interruption))
    raise WeightsDownloadError(
        _failure(entry, final, f"the transfer stopped {MAX_ATTEMPTS} times ({'; '.join(reasons)})")
    )


def _fetch_once(
    entry: WeightsEntry, final: Path, part: Path, progress: ProgressCallback | None
) -> str:
    """One request: resume ``part`` if the server allows, else start it again."""
    kept = part.stat().st_size if part.is_file() else 0
    with _open(entry, final, part, kept) as response:
        _refuse_page(entry, final, response)
        offset, total = _resume_point(response, part, kept)
        # The kept prefix is hashed again: the .part may come from an earlier process.
        digest = _hash_file(hashlib.sha256(), part) if offset else hashlib.sha256()
        with open(part, "ab" if offset else "wb") as out:
            done = _copy(response, out, digest, offset, total, progress)
    if total is not None and done < total:
        raise _Interrupted(f"connection closed after {done} of {total} bytes")
    return digest.hexdigest()


def _open(entry: WeightsEntry, final: Path, part: Path, offset: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(entry.url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            part.unlink()
            raise _Interrupted("the server cannot resume this partial file (HTTP 416)") from None
        reason = f"the server answered HTTP {error.code} {error.reason}"
        raise WeightsDownloadError(_failure(entry, final, reason)) from None
    except OSError as error:  # URLError, refused, unreachable, timeout
        raise WeightsDownloadError(_failure(entry, final, _describe(error))) from error


def _resume_point(
    response: http.client.HTTPResponse, part: Path, kept: int
) -> tuple[int, int | None]:
    """(offset to write from, total size or None) for this response."""
    length_header = response.headers.get("Content-Length", "")
    length = int(length_header) if length_header.isdigit() else None
    if response.status != 206:
        return 0, length  # a full body: a server that ignored Range restarts the file
    content_range = response.headers.get("Content-Range", "")
    match = _CONTENT_RANGE.fullmatch(content_range.strip())
    if kept == 0 or match is None or int(match.group(1)) != kept:
        part.unlink(missing_ok=True)
        raise _Interrupted(f"asked to resume at byte {kept}, got Content-Range {content_range!r}")
    if match.group(2) != "*":
        return kept, int(match.group(2))
    return kept, None if length is None else kept + length


def _hash_file(digest: _Hash, path: str | os.PathLike) -> _Hash:
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest


def _copy(
    response: http.client.HTTPResponse,
    out: BinaryIO,
    digest: _Hash,
    done: int,
    total: int | None,
    progress: ProgressCallback | None,
) -> int:
    """Stream the body into ``out`` and ``digest``; return the bytes now in the file."""
    if progress is not None:
        progress(done, total)
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as error:
            raise _Interrupted(f"{type(error).__name__}: {error}") from error
        if not chunk:
            return done
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, total)
