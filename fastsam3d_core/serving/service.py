"""The encoder service on Ray Serve: crops in, image embeddings out, nothing kept between calls.

Every replica loads the models once and answers :mod:`~fastsam3d_core.serving.protocol`
requests. Encode requests, from any number of users, are batched (``serve.batch``) before they
reach the model, so a GPU runs several crops at once. Ray Serve brings the rest: replicas on
several machines, autoscaling, GPU fractions, and a replacement for a replica that dies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import protocol
from .request_rules import RequestError, check_length, error_body

# The Ray Serve application's name: what `fastsam3d serve` removes again on exit.
APP_NAME = "fastsam3d"


@dataclass(frozen=True)
class ServiceOptions:
    """What ``fastsam3d serve`` configures.

    Attributes:
        weights: model name -> checkpoint file, one entry per model served.
        device: torch device of each replica (``auto``: a GPU when the replica has one).
        token: the bearer token clients must send; None for none.
        max_batch_size: most crops encoded together.
        batch_wait_s: longest a crop waits for others to fill a batch.
        decoder_dir: where the exported ONNX decoders are written (once per checkpoint).
        adapters: model name -> adapter file (``fastsam3d finetune``), for the models that
            have one.
        precision: the encoders' precision (:mod:`fastsam3d_core.models.precision`).
        body_timeout_s: longest an encode request's body may take to arrive (then 408): a
            client that stalls mid-upload must not hold a request slot for long.
    """

    weights: dict[str, str]
    device: str = "auto"
    token: str | None = None
    max_batch_size: int = 4
    batch_wait_s: float = 0.01
    decoder_dir: str = field(default="")
    adapters: dict[str, str] = field(default_factory=dict)
    precision: str = "auto"
    body_timeout_s: float = 30.0


class EncoderReplica:
    """One replica's state: the loaded models and their exported decoders."""

    def __init__(self, options: ServiceOptions) -> None:
        from ..weights.recipe import ModelRecipe
        from .onnx_decoder import export_decoder

        self.options = options
        self.models: dict[str, Any] = {}
        self.identity: dict[str, dict[str, str]] = {}
        self.decoders: dict[str, bytes] = {}
        folder = Path(options.decoder_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, path in options.weights.items():
            adapter = options.adapters.get(name)
            # The encoder's precision is chosen here; clients decode in float32.
            recipe = ModelRecipe(name, path, adapter, options.device, options.precision)
            loaded = recipe.load()
            # The served model is the checkpoint and its adapters: clients match both.
            weights_sha256 = loaded.identity
            onnx_path = folder / f"{name}-{weights_sha256[:16]}.onnx"
            if not onnx_path.is_file():
                export_decoder(loaded.model, onnx_path, weights_sha256)
            self.decoders[name] = onnx_path.read_bytes()
            self.models[name] = loaded.model
            self.identity[name] = {
                "weights_sha256": weights_sha256,
                "decoder_sha256": hashlib.sha256(self.decoders[name]).hexdigest(),
            }

    def encode_batch(self, requests: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """Embeddings of crops, each ``(128, 128, 128)`` float32, grouped by model."""
        import torch

        results: list[np.ndarray] = [np.empty(0)] * len(requests)
        for name in {name for name, _ in requests}:
            indices = [i for i, (n, _) in enumerate(requests) if n == name]
            crops = np.stack([requests[i][1] for i in indices])[:, None]
            with torch.inference_mode():
                embeddings = self.models[name].encode(torch.from_numpy(crops))
            for i, embedding in zip(indices, embeddings.float().cpu().numpy()):
                results[i] = embedding[None]
        return results


def parse_crop(body: bytes, dtype_name: str) -> np.ndarray:
    """The float32 crop in an encode request's body.

    Raises:
        RequestError: an unknown dtype, a body of the wrong size, or non-finite values.
    """
    dtype = protocol.CROP_DTYPES.get(dtype_name)
    if dtype is None:
        raise RequestError(
            400, f"{protocol.DTYPE_HEADER} must be one of {sorted(protocol.CROP_DTYPES)}"
        )
    expected = protocol.crop_bytes(dtype_name)
    if len(body) != expected:
        raise RequestError(
            400,
            f"a {dtype_name} crop of {protocol.CROP_SHAPE} is {expected} bytes, got {len(body)}",
        )
    crop = np.frombuffer(body, dtype).reshape(protocol.CROP_SHAPE).astype(np.float32)
    if not np.all(np.isfinite(crop)):
        raise RequestError(400, "the crop holds NaN or infinite values")
    return crop


async def read_body(request: Any, timeout_s: float) -> bytes:
    """The request's body, refused (413) as soon as it outgrows a float32 crop: before it is
    read when it announces its length, while it is read when it does not (chunked); and
    refused (408) unless it has arrived within ``timeout_s``."""
    check_length(request.headers.get("content-length"))
    try:
        return await asyncio.wait_for(_stream_body(request), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"the body did not arrive within {timeout_s:g} s") from None


async def _stream_body(request: Any) -> bytes:
    largest, size, chunks = protocol.crop_bytes("float32"), 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > largest:
            raise RequestError(413, f"the body exceeds {largest} bytes, the most a crop takes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_embedding(embedding: np.ndarray, crop: np.ndarray) -> None:
    """Refuse (400) to answer with a non-finite embedding: finite crop values of a huge
    magnitude (a crop that is not z-normalised) overflow inside the encoder."""
    if not np.all(np.isfinite(embedding)):
        largest = float(np.abs(crop).max())
        raise RequestError(
            400,
            f"the crop's values (up to {largest:.3g} in magnitude) overflow the encoder: its "
            "embedding is not finite; send a z-normalised crop",
        )


def check_token(expected: str | None, authorization: str | None) -> None:
    """Raise 401 unless the request carries the service's token (compared in constant time)."""
    if expected is None:
        return
    given = protocol.bearer_token(authorization)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise RequestError(401, "missing or wrong token (send Authorization: Bearer TOKEN)")


def error_response(error: RequestError) -> Any:
    """The JSON reply to a bad request."""
    from starlette.responses import Response

    # A client that stalled mid-upload: its connection is not kept for another request.
    close = {"Connection": "close"} if error.status == 408 else None
    return Response(error_body(str(error)), error.status, close, media_type="application/json")


def build_app(
    options: ServiceOptions, replicas: int | dict[str, Any], gpus_per_replica: float
) -> Any:
    """The Ray Serve application: a deployment of :class:`EncoderReplica` behind HTTP.

    Args:
        options: models, device, token and batching.
        replicas: a number of replicas, or an autoscaling config
            (``{"min_replicas": …, "max_replicas": …}``).
        gpus_per_replica: GPUs reserved per replica (a fraction shares a GPU).
    """
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    scaling: dict[str, Any] = (
        {"autoscaling_config": replicas}
        if isinstance(replicas, dict)
        else {"num_replicas": replicas}
    )

    @serve.deployment(ray_actor_options={"num_gpus": gpus_per_replica}, **scaling)
    class EncoderService:
        def __init__(self, options: ServiceOptions) -> None:
            self.replica = EncoderReplica(options)
            self.token = options.token
            self.body_timeout_s = options.body_timeout_s
            self.encode.set_max_batch_size(options.max_batch_size)
            self.encode.set_batch_wait_timeout_s(options.batch_wait_s)

        @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
        async def encode(self, requests: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
            return self.replica.encode_batch(requests)

        async def __call__(self, request: Request) -> Response:
            try:
                check_token(self.token, request.headers.get("authorization"))
                return await self._route(request)
            except RequestError as error:
                return error_response(error)

        async def _route(self, request: Request) -> Response:
            path, method = request.url.path.rstrip("/"), request.method
            if path == f"{protocol.API}/health" and method == "GET":
                # The process id lets tests and operators find (and kill) a replica.
                return JSONResponse({"status": "ok", "pid": os.getpid()})
            if path == f"{protocol.API}/models" and method == "GET":
                return JSONResponse({"models": self.replica.identity})
            name = request.query_params.get("model", "")
            if path in (f"{protocol.API}/decoder", f"{protocol.API}/encode"):
                if name not in self.replica.models:
                    raise RequestError(
                        404, f"unknown model {name!r}; served: {sorted(self.replica.models)}"
                    )
            if path == f"{protocol.API}/decoder" and method == "GET":
                sha = self.replica.identity[name]["decoder_sha256"]
                return Response(
                    self.replica.decoders[name],
                    headers={protocol.DECODER_HEADER: sha},
                    media_type="application/octet-stream",
                )
            if path == f"{protocol.API}/encode" and method == "POST":
                body = await read_body(request, self.body_timeout_s)
                crop = parse_crop(body, request.headers.get(protocol.DTYPE_HEADER, ""))
                embedding = await self.encode((name, crop))
                check_embedding(embedding, crop)
                headers = {
                    protocol.WEIGHTS_HEADER: self.replica.identity[name]["weights_sha256"],
                    "X-Shape": ",".join(map(str, embedding.shape)),
                }
                data = np.ascontiguousarray(embedding, protocol.EMBEDDING_DTYPE).tobytes()
                return Response(data, headers=headers, media_type="application/octet-stream")
            raise RequestError(
                404, f"no {method} {path}; see {protocol.API}/health, /models, /decoder, /encode"
            )

    return EncoderService.bind(options)


def start_service(
    options: ServiceOptions,
    replicas: int | dict[str, Any] = 1,
    gpus_per_replica: float = 0.0,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    num_cpus: int | None = None,
) -> str:
    """Start Ray (or join the cluster at ``address``) and the service; return its URL.

    Raises:
        RuntimeError: the service does not answer at the URL it was asked to listen on.

    Stop it with ``ray.serve.shutdown()`` and ``ray.shutdown()``.
    """
    if address is None:
        _start_local_ray(options, host, num_cpus)
    else:
        import ray

        # The cluster's proxy was started by others, without the guard: the replicas check
        # the token and the body's deadline themselves (see README).
        ray.init(address=address, log_to_driver=False)
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(options, replicas, gpus_per_replica), name=APP_NAME, route_prefix="/")
    url = f"http://{host}:{port}"
    _check_answers(url, options.token)
    return url


# Ray binds its own servers (GCS, raylet, workers, agents) to the node's address, which
# ray.init will not let be loopback, unless Ray takes clusters for unsupported here: then the
# node's address is loopback. Ray reads it when it is first imported.
LOOPBACK_RAY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _start_local_ray(options: ServiceOptions, host: str, num_cpus: int | None) -> None:
    """Start a Ray instance of this process's own, with the proxy guard
    (:mod:`.proxy_guard`), and on loopback only when the service listens there and Ray is not
    imported yet (as in ``fastsam3d serve``; else Ray's choice of address stands)."""
    from .proxy_guard import proxy_environment

    # Ray's processes inherit the environment of the ones ray.init starts, the proxy included.
    environment = proxy_environment(options.token, options.body_timeout_s)
    if is_loopback(host) and "ray" not in sys.modules:
        environment[LOOPBACK_RAY_VARIABLE] = "0"
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        import ray

        # "local": a new Ray instance, never one that happens to run on this machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback interface."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_answers(url: str, token: str | None) -> None:
    """Raise unless the service answers at ``url``.

    Serve keeps the HTTP address it was first started with in a cluster: a service joining a
    cluster whose Serve listens elsewhere would be reachable there, not where it says.
    """
    from .client import RemoteError, request

    try:
        request(url, "GET", "/health", token=token, timeout_s=10, retries=2)
    except RemoteError as error:
        raise RuntimeError(
            f"the service does not answer at {url} ({error}); Ray Serve may already run in "
            "this cluster with another HTTP host or port: use those, or stop it first "
            "(serve shutdown)"
        ) from None
