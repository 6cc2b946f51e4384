"""A series from a DICOMweb server (QIDO-RS search, WADO-RS retrieve) and instances back (STOW-RS).

The HTTP and multipart work is dicomweb-client's; this module adds what the command line and the
page need around it: series URLs parsed and checked, credentials from options or the environment
(never shown), a timeout on every request, and one-line errors that name the server and say what
to do. A retrieved series is written to a folder, one file per instance in the transfer syntax the
server stored it in, and read from there like any DICOM folder (``read_volume``), so a gap or a
mixed orientation is refused exactly as for a folder.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.errors import InvalidDicomError

from ._atomic import write_atomically

# Credentials have their own module (no HTTP library); their names are also taken from here.
from .dicomweb_auth import (  # noqa: F401
    _CREDENTIAL_OPTIONS,
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    USER_VARIABLE,
    DicomwebAuth,
)

#: What a refusal (401/403) tells the user to check.
_CREDENTIALS_HINT = f"check the token or user/password ({_CREDENTIAL_OPTIONS})"
_SERIES_FORM = "http(s)://HOST/.../studies/{StudyInstanceUID}/series/{SeriesInstanceUID}"
_SERIES_PATH = re.compile(r"(?P<prefix>.*?)/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)/?")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DICOM_DATE = re.compile(r"\d{8}|\d{8}-|-\d{8}|\d{8}-\d{8}")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
#: Series that are not images to segment: segmentations, reports, presentation states, key
#: object selections, RT structures and plans, encapsulated documents.
_NOT_IMAGES = frozenset({"SEG", "SR", "PR", "KO", "RTSTRUCT", "RTPLAN", "DOC"})
#: Asks for each instance in the transfer syntax the server holds, not transcoded: Orthanc 1.10
#: answers a plain "application/dicom" request for a JPEG 2000 series with 500 (it cannot
#: transcode it), and our SimpleITK/GDCM reader reads JPEG 2000 and the other common syntaxes.
_AS_STORED = (("application/dicom", "*"),)

# DICOM JSON tags (PS3.18 F.2) of the QIDO-RS results read here.
_PATIENT_ID, _PATIENT_NAME = "00100020", "00100010"
_STUDY_DATE, _STUDY_DESCRIPTION, _STUDY_UID = "00080020", "00081030", "0020000D"
_SERIES_DESCRIPTION, _MODALITY, _SERIES_UID = "0008103E", "00080060", "0020000E"
_SERIES_INSTANCES = "00201209"


class DicomwebError(ValueError):
    """A DICOMweb request that failed; one line naming the server (never credentials) and what
    to do. A :class:`ValueError`, so that code catching bad input in general catches it too."""


def _shown(url: str) -> str:
    """``url`` without user information (credentials) and control characters: safe to print."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    shown = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return re.sub(r"[\x00-\x1f\x7f]", "?", shown)


def _checked_http_url(url: str) -> tuple[Any, str]:
    """The split URL and its printable form; DicomwebError unless http(s) without credentials."""
    parts, shown = urlsplit(url.strip()), _shown(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise DicomwebError(f"{shown}: not a DICOMweb URL; expected {_SERIES_FORM}")
    if "@" in parts.netloc:
        raise DicomwebError(
            f"{shown}: credentials in the URL are not used (they would show in process lists "
            f"and logs); give them with {_CREDENTIAL_OPTIONS}"
        )
    return parts, shown


def is_dicomweb_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL (rather than a file path): it is then read over
    DICOMweb, and :meth:`SeriesURL.parse` says what is wrong with it if it is not a series."""
    parts = urlsplit(str(text).strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


@dataclass(frozen=True)
class SeriesURL:
    """A series on a DICOMweb server: the service's base URL (no trailing slash) and the UIDs.

    ``str(url)`` is ``{base}/studies/{study_uid}/series/{series_uid}``.
    """

    base: str
    study_uid: str
    series_uid: str

    @classmethod
    def parse(cls, url: str) -> SeriesURL:
        """Split ``http(s)://HOST/.../studies/{S}/series/{T}``; DicomwebError (one line) when
        ``url`` is not such a URL or holds credentials."""
        parts, shown = _checked_http_url(url)
        match = _SERIES_PATH.fullmatch(parts.path)
        uids = (match["study"], match["series"]) if match else ()
        if not match or parts.query or parts.fragment or not all(map(is_uid, uids)):
            raise DicomwebError(f"{shown}: not a DICOMweb series URL; expected {_SERIES_FORM}")
        base = urlunsplit((parts.scheme.lower(), parts.netloc, match["prefix"], "", ""))
        return cls(base, match["study"], match["series"])

    def __str__(self) -> str:
        return f"{self.base}/studies/{self.study_uid}/series/{self.series_uid}"


def is_uid(text: str) -> bool:
    """Whether ``text`` is a well-formed DICOM UID (digits and dots, at most 64 characters)."""
    return len(text) <= 64 and _UID.fullmatch(text) is not None


class _TimedSession(requests.Session):
    """A session whose requests time out after ``timeout_s`` unless told otherwise: older
    dicomweb-client releases (< 0.61, those for Python 3.9) pass no timeout of their own."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().request(*args, **kwargs)


def open_client(base: str, auth: DicomwebAuth, timeout_s: float = 60) -> DICOMwebClient:
    """A dicomweb-client for the service at ``base`` with ``auth``, each request limited to
    ``timeout_s`` seconds (to connect, and between bytes received) and never retried: a failure
    is reported at once (dicomweb-client's default retries for up to half a minute).

    Raises:
        DicomwebError: ``base`` is not an http(s) URL, or holds credentials.
    """
    _, shown = _checked_http_url(base)
    session = _TimedSession(timeout_s)
    headers = {}
    if auth.token:
        headers["Authorization"] = f"Bearer {auth.token}"
    elif auth.user:
        session.auth = (auth.user, auth.password or "")
    options: dict[str, Any] = {"session": session, "headers": headers or None}
    if "timeout" in inspect.signature(DICOMwebClient.__init__).parameters:
        options["timeout"] = timeout_s
    try:
        client = DICOMwebClient(base.strip().rstrip("/"), **options)
    except ValueError as error:  # its own check of the URL's form
        raise DicomwebError(f"{shown}: not a usable DICOMweb URL ({error})") from error
    client.set_http_retry_params(retry=False)
    return client


@contextmanager
def _answers_from(
    base: str, doing: str, timeout_s: float, not_found: str | None = None, refused: str = ""
) -> Iterator[None]:
    """Turn what requests and dicomweb-client raise while ``doing`` into one DicomwebError line.

    Args:
        base: the service's URL, named in the message (without credentials).
        doing: what was asked, e.g. ``"retrieving the series"``.
        not_found: the message's end for a 404, where it means something specific.
        refused: what another 4xx answer means, where it means something specific.
    """
    server = f"DICOMweb server {_shown(base)}"
    try:
        yield
    except DicomwebError:
        raise
    except requests.HTTPError as error:
        message = _refusal(server, doing, error.response, not_found, refused)
        raise DicomwebError(message) from error
    except requests.RequestException as error:
        if _timed_out(error):
            message = (f"{server}: no answer within {timeout_s:g} s while {doing}; check that "
                       "the server is up, or allow it more time")
        else:
            message = (f"{server}: cannot connect ({_connection_failure(error)}) while {doing}; "
                       "check the URL and that the server is running and reachable")
        raise DicomwebError(message) from error
    except (ValueError, KeyError, TypeError, InvalidDicomError) as error:
        raise DicomwebError(
            f"{server}: the answer to {doing} is not DICOMweb ({type(error).__name__}); check "
            "that the URL is the server's DICOMweb root (e.g. http://HOST/dicom-web)"
        ) from error


def _refusal(
    server: str, doing: str, response: requests.Response | None, not_found: str | None,
    refused: str,
) -> str:
    status = response.status_code if response is not None else 0
    said = f"{status} {response.reason}" if response is not None else "an HTTP error"
    root_hint = "check that the URL is the server's DICOMweb root (e.g. http://HOST/dicom-web)"
    if status in (401, 403):
        return f"{server} refused access ({said} while {doing}): {_CREDENTIALS_HINT}"
    if status == 404:
        if not_found:
            return f"{server}: {not_found} ({said} while {doing}); check the URL's UIDs"
        return f"{server}: not found ({said} while {doing}); {root_hint}"
    if status in (408, 429, 502, 503, 504):
        return f"{server} is busy or unavailable ({said} while {doing}); try again later"
    if 400 <= status < 500:
        return f"{server} answered {said} while {doing}; {refused or root_hint}"
    return f"{server} answered {said} while {doing}; the server's log may say why"


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and what it wraps (urllib3 puts its exceptions in ``args`` and ``reason``)."""
    pending, seen = [error], []
    while pending:
        current = pending.pop()
        if not any(current is old for old in seen):
            seen.append(current)
            wrapped = (*current.args, getattr(current, "reason", None), current.__cause__,
                       current.__context__)
            pending += [item for item in wrapped if isinstance(item, BaseException)]
    return seen


def _timed_out(error: BaseException) -> bool:
    # A timeout while a streamed answer is read comes as a ConnectionError around urllib3's
    # ReadTimeoutError: found by its type's name.
    return any(isinstance(cause, (requests.Timeout, TimeoutError))
               or "Timeout" in type(cause).__name__ for cause in _causes(error))


def _connection_failure(error: BaseException) -> str:
    words = " ".join(f"{type(cause).__name__} {cause}" for cause in _causes(error)).lower()
    if "refused" in words:
        return "connection refused"
    if "name or service not known" in words or "nodename nor servname" in words:
        return "host name not found"
    return "unreachable"


def download_series(
    url: SeriesURL,
    folder: Path,
    auth: DicomwebAuth,
    timeout_s: float = 60,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Retrieve the series (WADO-RS) into ``folder``, one ``{SOPInstanceUID}.dcm`` per instance.

    Instances keep the transfer syntax the server sent (asked for as stored). Read the folder
    with :func:`fastsam3d_core.io.read_volume`, which checks the slices as for any folder.

    Args:
        url: the series.
        folder: an empty or missing folder (created).
        progress: called with (instances written, instances in the series) after each one; the
            total is the server's count from QIDO-RS, or the number written when it gives none.

    Returns ``folder``.

    Raises:
        DicomwebError: the server refused or did not answer, has no such series, or sent
            something else than the series' instances.
        ValueError: ``folder`` is not empty.
    """
    return retrieve_series(open_client(url.base, auth, timeout_s), url, folder, timeout_s, progress)


def retrieve_series(
    client: DICOMwebClient,
    url: SeriesURL,
    folder: Path,
    timeout_s: float = 60,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """:func:`download_series` with a client made elsewhere (MONAI Label's, which carries its
    own session and URL prefixes); ``url.base`` names the server in messages."""
    folder = _empty_folder(folder)
    missing = f"no such series on the server (study {url.study_uid}, series {url.series_uid})"
    written = 0
    # A 404 (an empty answer is a missing series) says the address is not a DICOMweb service.
    not_found = f"{missing}, or the URL is not under the server's DICOMweb root (…/dicom-web)"
    with _answers_from(url.base, "retrieving the series", timeout_s, not_found=not_found):
        total = _instance_count(client, url, missing)
        instances = client.iter_series(url.study_uid, url.series_uid, media_types=_AS_STORED)
        for instance in instances:
            if str(instance.get("SeriesInstanceUID", "")) != url.series_uid:
                raise DicomwebError(
                    f"DICOMweb server {_shown(url.base)} sent an instance of another series "
                    f"when asked for series {url.series_uid}"
                )
            _write_instance(folder, instance, written)
            written += 1
            if progress is not None:
                progress(written, max(total, written))
    if not written:
        raise DicomwebError(f"DICOMweb server {_shown(url.base)}: {missing}; check the URL's UIDs")
    return folder


def _empty_folder(folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):  # other files would be read with the series (or instead of it)
        raise ValueError(f"{folder}: not empty; a DICOMweb series is downloaded to an empty folder")
    return folder


def _instance_count(client: DICOMwebClient, url: SeriesURL, missing: str) -> int:
    """The series' number of instances by QIDO-RS (0 if not given); DicomwebError if the server
    does not know the series (a clearer answer than some servers' empty WADO-RS reply)."""
    found = client.search_for_series(
        url.study_uid,
        search_filters={"SeriesInstanceUID": url.series_uid},
        fields=["NumberOfSeriesRelatedInstances"],
    )
    if not found:
        raise DicomwebError(f"DICOMweb server {_shown(url.base)}: {missing}; check the URL's UIDs")
    count = _text(found[0], _SERIES_INSTANCES)
    return int(count) if count.isdigit() else 0


def _write_instance(folder: Path, instance: pydicom.Dataset, index: int) -> None:
    """Write one retrieved instance as it came (its file meta names its transfer syntax)."""
    uid = str(instance.get("SOPInstanceUID", ""))
    # The name comes from the server: only a well-formed UID is used in it.
    name = uid if is_uid(uid) else f"instance-{index + 1:05d}"
    path = folder / f"{name}.dcm"
    if path.exists():  # the same instance sent twice: kept, for read_volume to name
        path = folder / f"{name}-{index + 1}.dcm"
    write_atomically(path, ".dcm", lambda temporary: pydicom.dcmwrite(temporary, instance))


def store_dataset(
    base: str, dataset: pydicom.Dataset, auth: DicomwebAuth, timeout_s: float = 60
) -> None:
    """Store one instance on the server at ``base`` (STOW-RS).

    Raises:
        DicomwebError: the server refused the request or the instance, or did not answer.
    """
    client = open_client(base, auth, timeout_s)
    refused = "it refused the instance (its log may say why)"
    with _answers_from(base, "storing the instance", timeout_s, refused=refused):
        result = client.store_instances([dataset])
    failed = result.get("FailedSOPSequence") if result is not None else None
    if failed:
        reason = failed[0].get("FailureReason", "not given")
        raise DicomwebError(
            f"DICOMweb server {_shown(base)} did not store the instance (failure reason "
            f"{reason}, PS3.18 Annex I); check the server's log"
        )


@dataclass(frozen=True)
class SeriesSummary:
    """One series found by :func:`search_series`, as the page lists it; ``url`` is the series'
    DICOMweb URL (:class:`SeriesURL` text), built from the base URL searched and its UIDs."""

    patient_id: str
    patient_name: str
    study_date: str  # DICOM DA, YYYYMMDD ("" if none)
    study_description: str
    series_description: str
    modality: str
    instances: int
    url: str


def search_series(
    base: str,
    auth: DicomwebAuth,
    patient_id: str | None = None,
    study_date: str | None = None,
    limit: int = 100,
    timeout_s: float = 60,
) -> list[SeriesSummary]:
    """The image series of the studies that match (QIDO-RS: studies, then each one's series).

    Args:
        patient_id: PatientID to match (QIDO-RS wildcards ``*`` and ``?`` allowed).
        study_date: a DICOM date ``YYYYMMDD`` (or ``YYYY-MM-DD``) or range ``YYYYMMDD-YYYYMMDD``
            (either end may be left open).
        limit: at most this many series (and studies) are returned.

    Returns:
        Series in the server's order, without segmentations, reports and other non-images.

    Raises:
        DicomwebError: the server refused the request or did not answer.
        ValueError: ``study_date`` is not a date or a range of dates.
    """
    filters = {}
    if patient_id:
        filters["PatientID"] = patient_id
    if study_date:
        filters["StudyDate"] = _dicom_date(study_date)
    client = open_client(base, auth, timeout_s)
    found: list[SeriesSummary] = []
    with _answers_from(base, "searching for series", timeout_s):
        studies = client.search_for_studies(
            search_filters=filters, limit=limit, fields=["StudyDescription"]
        )
        for study in studies:
            found += _image_series(client, study)
            if len(found) >= limit:
                break
    return found[:limit]


def _image_series(client: DICOMwebClient, study: dict) -> list[SeriesSummary]:
    study_uid = str(_first(study, _STUDY_UID) or "")
    if not is_uid(study_uid):
        return []
    summaries = []
    fields = ["SeriesDescription", "NumberOfSeriesRelatedInstances"]
    for series in client.search_for_series(study_uid, fields=fields):
        modality, series_uid = _text(series, _MODALITY), _text(series, _SERIES_UID)
        if modality.upper() in _NOT_IMAGES or not is_uid(series_uid):
            continue
        count = _text(series, _SERIES_INSTANCES)
        instances = int(count) if count.isdigit() else 0
        summaries.append(SeriesSummary(
            patient_id=_text(study, _PATIENT_ID),
            patient_name=_text(study, _PATIENT_NAME),
            study_date=_text(study, _STUDY_DATE),
            study_description=_text(study, _STUDY_DESCRIPTION),
            series_description=_text(series, _SERIES_DESCRIPTION),
            modality=modality,
            instances=instances,
            # Built here, not taken from the server's RetrieveURL: Orthanc's leaves the port out
            # when dicomweb-client's requests name the host without it.
            url=str(SeriesURL(client.base_url.rstrip("/"), study_uid, series_uid)),
        ))
    return summaries


def _dicom_date(text: str) -> str:
    text = text.strip()
    iso = _ISO_DATE.fullmatch(text)
    if iso:
        text = "".join(iso.groups())
    if not _DICOM_DATE.fullmatch(text):
        raise ValueError(
            f"study date {text!r}: expected YYYYMMDD (or YYYY-MM-DD) or a range YYYYMMDD-YYYYMMDD"
        )
    return text


def _first(item: dict, tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON object, or None."""
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if values else None


def _text(item: dict, tag: str) -> str:
    value = _first(item, tag)
    if isinstance(value, dict):  # a person name: its alphabetic form
        value = value.get("Alphabetic", "")
    return "" if value is None else str(value)
