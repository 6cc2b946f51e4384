"""The encoder service's HTTP interface, shared by the service and its client (no torch here).

Version 1, under ``/v1``:

* ``GET /v1/health``: ``{"status": "ok"}``.
* ``GET /v1/models``: ``{"models": {name: {"weights_sha256": …, "decoder_sha256": …}}}``.
* ``GET /v1/decoder?model=NAME``: the model's prompt encoder + mask decoder as ONNX bytes
  (:mod:`fastsam3d_core.serving.onnx_decoder`); header ``X-Decoder-SHA256``.
* ``POST /v1/encode?model=NAME``: body, one crop ``(128, 128, 128)`` (d0, d1, d2) z-normalised,
  C order, little endian, as ``float16`` or ``float32`` (header ``X-Crop-Dtype``). Reply: the
  embedding ``(1, 384, 8, 8, 8)`` float32 little endian, with headers ``X-Weights-SHA256``
  (the checkpoint's, for the client to check against its decoder's) and ``X-Shape``.

A token, when the service has one, goes in ``Authorization: Bearer TOKEN``. Errors are JSON
``{"error": "…"}`` with a 4xx status for bad requests (never a crashed replica) and 5xx for the
service's own failures, which a client may retry.
"""

from __future__ import annotations

import numpy as np

API = "/v1"
CROP_SHAPE = (128, 128, 128)
EMBEDDING_SHAPE = (1, 384, 8, 8, 8)
CROP_DTYPES: dict[str, np.dtype] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
EMBEDDING_DTYPE = np.dtype("<f4")
DTYPE_HEADER = "X-Crop-Dtype"
WEIGHTS_HEADER = "X-Weights-SHA256"
DECODER_HEADER = "X-Decoder-SHA256"


def crop_bytes(dtype_name: str) -> int:
    """The size of an encode request's body for a crop of this dtype."""
    return int(np.prod(CROP_SHAPE)) * CROP_DTYPES[dtype_name].itemsize


#: The size of an encode reply's body.
EMBEDDING_BYTES = int(np.prod(EMBEDDING_SHAPE)) * EMBEDDING_DTYPE.itemsize


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` header, or "" for none or another scheme.
    The scheme is matched in any case, as HTTP's schemes are (RFC 9110, 11.1)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
