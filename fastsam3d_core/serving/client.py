"""A predictor whose encoder is the service and whose decoder runs here, with onnxruntime.

Neither this module nor what it imports needs torch: the client distribution (``pip install
./client``) has none.
The session, its clicks, crops, masks and undo all stay on the client; only a new crop goes over
the network, and a failed encode is simply tried again (the service keeps nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import protocol
from .onnx_decoder import MASK_SHAPE, OnnxDecoder, decoder_cache_dir

if TYPE_CHECKING:
    from ..geometry.crop import Crop

# Connection refused or reset, and 5xx replies: a replica restarting (which takes seconds: it
# loads the model), or a network blip. Waits 0.5, 1, 2, 4, 4, … s: about 30 s in all.
RETRIES = 9
# The first contact: a wrong address should be said within seconds, not after half a minute.
FIRST_CONTACT_RETRIES = 2
BACKOFF_S = 0.5
MAX_BACKOFF_S = 4.0
# A request without an answer for this long is not retried: a server that accepts but does not
# answer is stuck or overloaded, and sending the crop again would only add to its queue. (A
# connection that is not made in time is not retried either: within one attempt the system
# already resends the connection request, after 1, 3, 7, ... s.)
TIMEOUT_S = 60.0
FIRST_CONTACT_TIMEOUT_S = 10.0


class RemoteError(RuntimeError):
    """The service cannot be reached, refuses a request, or serves another model.

    Attributes:
        status: the HTTP status of a refused request (e.g. 401 for a wrong token), else None.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ModelMismatchError(RemoteError):
    """The service encodes with other weights than the decoder here was exported from."""


class RemotePredictor:
    """A :class:`~fastsam3d_core.session.Predictor` backed by the encoder service.

    Args:
        url: the service, e.g. ``http://127.0.0.1:8000``.
        model: the model name served there.
        token: the service's bearer token, if it has one.
        decoder: where the prompt encoder and mask decoder come from: ``"auto"`` fetches the
            service's ONNX export once and caches it by checksum; a path names a local ONNX
            export (``fastsam3d export-onnx``) or a local checkpoint (run with torch). Either
            must come from the weights the service encodes with.
        crop_dtype: ``"float32"`` (exact: masks equal the local model's) or ``"float16"`` (half
            the bytes per crop; masks differ at their borders).
        cache_dir: where the decoder is kept by checksum; default the weights cache.
        timeout_s: per request.

    Raises:
        RemoteError: the service is unreachable, does not serve ``model``, or serves other
            weights than ``decoder``'s.
    """

    def __init__(
        self,
        url: str,
        model: str = "fastsam3d",
        token: str | None = None,
        decoder: str | os.PathLike[str] = "auto",
        crop_dtype: str = "float32",
        cache_dir: str | os.PathLike[str] | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        if crop_dtype not in protocol.CROP_DTYPES:
            raise ValueError(f"crop_dtype must be one of {sorted(protocol.CROP_DTYPES)}")
        self.url = service_url(url)
        self.shown_url = display_url(self.url)  # for messages: without credentials
        self.model = model
        self.token = token
        self.crop_dtype = crop_dtype
        self.timeout_s = timeout_s
        served = served_models(url, token, min(timeout_s, FIRST_CONTACT_TIMEOUT_S))
        if model not in served:
            raise RemoteError(
                f"{self.shown_url} does not serve {model!r}; it serves {sorted(served)}"
            )
        self.weights_sha256 = served[model]["weights_sha256"]
        if str(decoder) == "auto":
            source = f"the decoder from {self.shown_url}"
            path = self._decoder_file(served[model]["decoder_sha256"], cache_dir)
        else:
            source, path = f"the decoder {decoder}", Path(decoder)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such decoder file (a checkpoint or .onnx)")
        self.decoder = (
            OnnxDecoder(path) if path.suffix == ".onnx" else CheckpointDecoder(path, model)
        )
        if self.decoder.weights_sha256 != self.weights_sha256:
            raise ModelMismatchError(
                f"model mismatch: {source} comes from weights {self.decoder.weights_sha256[:12]}…, "
                f"{self.shown_url} encodes with {self.weights_sha256[:12]}…"
            )

    def encode(self, crop: Crop) -> np.ndarray:
        """The crop's embedding ``(1, 384, 8, 8, 8)`` float32, computed by the service."""
        body = np.ascontiguousarray(crop.image, protocol.CROP_DTYPES[self.crop_dtype]).tobytes()
        data, headers = self._request(
            "POST", f"/encode?model={self.model}", body, {protocol.DTYPE_HEADER: self.crop_dtype}
        )
        if headers.get(protocol.WEIGHTS_HEADER) != self.weights_sha256:
            raise ModelMismatchError(
                f"model mismatch: {self.shown_url} now encodes with weights "
                f"{headers.get(protocol.WEIGHTS_HEADER, '?')[:12]}…, this session's decoder "
                f"has {self.weights_sha256[:12]}…; start a new session"
            )
        return np.frombuffer(data, protocol.EMBEDDING_DTYPE).reshape(protocol.EMBEDDING_SHAPE)

    def decode(
        self, embedding: Any, points: np.ndarray, labels: np.ndarray, mask_input: Any
    ) -> np.ndarray:
        """Logits ``(32, 32, 32)`` float32 for the crop, computed here (see
        ``Predictor.decode``)."""
        mask = None if mask_input is None else np.asarray(mask_input, np.float32)
        logits, _ = self.decoder.decode(np.asarray(embedding), points, labels, mask)
        return np.asarray(logits).reshape(MASK_SHAPE[2:])

    def _decoder_file(self, sha256: str, cache_dir: str | os.PathLike[str] | None) -> Path:
        folder = Path(cache_dir) if cache_dir is not None else decoder_cache_dir()
        path = folder / f"{self.model}-{sha256}.onnx"
        if path.is_file():
            return path
        data, _ = self._request("GET", f"/decoder?model={self.model}")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RemoteError(
                f"the decoder from {self.shown_url} does not match its checksum; try again"
            )
        folder.mkdir(parents=True, exist_ok=True)
        # A name of its own: several sessions of one process may fetch it at the same time.
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as temporary:
            temporary.write(data)
        os.replace(temporary.name, path)
        return path

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[bytes, Message]:
        return request(self.url, method, path, body, headers, self.token, self.timeout_s)


def served_models(
    url: str, token: str | None = None, timeout_s: float = FIRST_CONTACT_TIMEOUT_S
) -> dict[str, dict[str, str]]:
    """What the service at ``url`` serves: ``{name: {"weights_sha256": …, "decoder_sha256": …}}``.

    Quick to fail: a connection test (3 attempts, about 1.5 s, for a wrong address; one wait of
    ``timeout_s`` for a server that does not answer).

    Raises:
        RemoteError: unreachable, a refused token, or a reply that is not the service's.
    """
    data, _ = request(
        service_url(url),
        "GET",
        "/models",
        token=token,
        timeout_s=timeout_s,
        retries=FIRST_CONTACT_RETRIES,
    )
    try:
        return dict(json.loads(data)["models"])
    except (ValueError, KeyError, TypeError):
        raise RemoteError(
            f"{display_url(url)} answers, but not as a FastSAM3D service (fastsam3d serve)"
        ) from None


def service_url(url: str) -> str:
    """``url`` without a trailing slash; ``http://`` is assumed when no scheme is given.

    Raises:
        ValueError: empty, or a scheme other than http and https.
    """
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("no server address; give one like http://gpu-server:8000")
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ValueError(
            f"{display_url(url)}: the server address must start with http:// or https://"
        )
    if _broken_user_info(url):
        raise ValueError(
            f"{display_url(url)}: not a server address; write a password's '/', '?' or '#' "
            "as %2F, %3F or %23"
        )
    return url


# Query parameters whose values are secrets, by a part of their name (token=, api_key=, …).
SECRET_PARAMETER_PARTS = ("token", "key", "secret", "pass", "auth", "sig", "credential")


def display_url(url: str) -> str:
    """``url`` as it may be printed: without a ``user:password@`` and with the values of
    secret-looking query parameters replaced by ``***``."""
    # Without a scheme "user:password@host" would be read as scheme "user", path "password@…".
    bare = "://" not in url
    try:
        parts = urllib.parse.urlsplit("//" + url if bare else url)
        host = parts.netloc.rpartition("@")[2]
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: show nothing of it rather than a secret
        return "(an address that is not a URL)"
    if _broken_user_info(url):  # all up to the last '@' may be the password
        return ("" if bare else f"{parts.scheme}://") + "***@" + url.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    secret = [any(part in name.lower() for part in SECRET_PARAMETER_PARTS) for name, _ in query]
    if any(secret):
        masked = [(name, "***" if hide else value) for (name, value), hide in zip(query, secret)]
        parts = parts._replace(query=urllib.parse.urlencode(masked, safe="*/"))
    shown = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return shown[2:] if bare else shown


def _broken_user_info(url: str) -> bool:
    """Whether ``url`` has an '@' after a host part that ends early with a port that is not a
    number: "user:pa/ss@host", whose password's '/' (or '?', '#') ended the host part."""
    try:
        parts = urllib.parse.urlsplit(url if "://" in url else "//" + url)
    except ValueError:  # not a URL at all: said where it is used
        return False
    try:
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError:
        return "@" in url and "@" not in parts.netloc
    return False


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
    token: str | None = None,
    timeout_s: float = TIMEOUT_S,
    retries: int = RETRIES,
) -> tuple[bytes, Message]:
    """One API call to the service at ``url``, retried with backoff while it is unreachable or
    failing (5xx); a 4xx reply, or no answer within ``timeout_s``, raises at once.

    Raises:
        RemoteError: the message names the URL and the problem.
    """
    request_headers = dict(headers or {})
    if token:
        request_headers["Authorization"] = f"Bearer {token}"
    full_url = f"{url}{protocol.API}{path}"
    shown_url = display_url(full_url)
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S))
        call = urllib.request.Request(full_url, body, request_headers, method=method)
        try:
            with urllib.request.urlopen(call, timeout=timeout_s) as reply:
                return reply.read(), reply.headers  # names compared without case
        except urllib.error.HTTPError as error:
            problem = _http_problem(error)
            if error.code < 500:
                raise RemoteError(f"{shown_url}: {problem}", status=error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, (socket.timeout, TimeoutError)):  # distinct on Python 3.9
                raise RemoteError(
                    f"{shown_url}: no answer within {timeout_s:g} s (the server is busy or "
                    "stuck); try again later"
                ) from None
            problem = f"server unreachable ({reason})"
    raise RemoteError(f"{shown_url}: {problem}, after {retries + 1} attempts")


class CheckpointDecoder:
    """A local checkpoint's prompt encoder and mask decoder, run with torch on the CPU.

    For a client that has torch and the weights anyway; others use the ONNX export. Same
    ``decode`` and ``weights_sha256`` as :class:`OnnxDecoder`.
    """

    def __init__(self, path: Path, model: str) -> None:
        # Here, not at the top: the client imports without torch, and only this decoder needs it.
        from ..session.model_predictor import ModelPredictor
        from ..weights.recipe import ModelRecipe

        loaded = ModelRecipe(model, path, device="cpu").load()
        self.predictor = ModelPredictor(loaded.model)
        self.weights_sha256 = loaded.checkpoint_sha256

    def decode(
        self,
        embedding: np.ndarray,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: np.ndarray | None,
    ) -> tuple[np.ndarray, None]:
        """Logits ``(32, 32, 32)`` float32; no IoU."""
        import torch

        # A copy: the embedding may be a read-only view of the reply's bytes.
        embedding_tensor = torch.tensor(np.asarray(embedding), dtype=torch.float32)
        return self.predictor.decode(embedding_tensor, points, labels, mask_input), None


def _http_problem(error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read()).get("error", "")
    except (ValueError, OSError, AttributeError):
        message = ""
    finally:
        error.close()
    return f"HTTP {error.code} {message or error.reason}"
