"""The prompt encoder and mask decoder as an ONNX graph, run with onnxruntime (no torch).

A client of the encoder service keeps its session locally and decodes every click itself: this
graph is what lets it do so without torch (onnxruntime is a ~20 MB wheel, torch ~800 MB).

The graph computes :meth:`fastsam3d_core.Sam3D.decode` with ``multimask=False`` for one crop:

* inputs: ``embedding`` (1, 384, 8, 8, 8) float32, ``points`` (1, N, 3) float32 crop voxels
  (d0, d1, d2) of the 128³ input, ``labels`` (1, N) int64 (1 positive, 0 negative), and
  ``mask_input`` (1, 1, 32, 32, 32) float32 (zeros for none, which is what ``decode`` uses);
* outputs: ``logits`` (1, 1, 32, 32, 32) and ``iou`` (1, 1), float32.

N is dynamic. The file's metadata names the model and the SHA-256 of the weights it was exported
from, so that a client can check it against the encoder's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..models.sam3d import Sam3D

INPUT_NAMES = ("embedding", "points", "labels", "mask_input")
OUTPUT_NAMES = ("logits", "iou")
MODEL_KEY = "fastsam3d.model"
WEIGHTS_KEY = "fastsam3d.weights_sha256"
# The legacy TorchScript exporter: it handles the decoder's data-dependent shapes (a dynamic
# number of points) without the extra packages the dynamo exporter needs.
OPSET = 17
MASK_SHAPE = (1, 1, 32, 32, 32)


def decoder_cache_dir() -> Path:
    """Where exported decoders are kept, named by checksum: the weights cache's ``decoders``
    folder, for the service's exports and the decoders clients fetch alike."""
    from ..weights.download import default_cache_dir

    return default_cache_dir() / "decoders"


def export_decoder(model: Sam3D, path: str | os.PathLike[str], weights_sha256: str) -> Path:
    """Write ``model``'s prompt encoder and mask decoder as an ONNX graph.

    Args:
        model: a model whose weights are loaded (any device; it is exported on the CPU).
        path: the ``.onnx`` file to write (atomically).
        weights_sha256: SHA-256 of the checkpoint the weights come from, kept in the metadata.

    Returns:
        ``path`` as a :class:`Path`.
    """
    import copy
    import warnings

    import onnx
    import torch

    from ..io._atomic import write_atomically

    model.check_weights_loaded()
    graph = _DecodeGraph(copy.deepcopy(model).to("cpu", torch.float32)).eval()
    example = (
        torch.zeros(1, 384, 8, 8, 8),
        torch.full((1, 2, 3), 64.0),
        torch.tensor([[1, 0]]),
        torch.zeros(MASK_SHAPE),
    )

    def write(temporary: Path) -> None:
        with torch.inference_mode(), warnings.catch_warnings():
            # The tracer's notes on Python-level shape checks (constant for this graph), and the
            # notice that the TorchScript exporter is the older one: nothing for the user to do.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                graph,
                example,
                str(temporary),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={"points": {1: "points"}, "labels": {1: "points"}},
                opset_version=OPSET,
                dynamo=False,
            )
        proto = onnx.load(str(temporary))
        onnx.helper.set_model_props(proto, {MODEL_KEY: model.name, WEIGHTS_KEY: weights_sha256})
        onnx.save(proto, str(temporary))

    path = Path(path)
    write_atomically(path, ".onnx", write)
    return path


def _DecodeGraph(model: Sam3D) -> Any:  # noqa: N802  (a class made on demand: torch is lazy)
    import torch

    class DecodeGraph(torch.nn.Module):
        """``Sam3D.decode`` with every input given, as the ONNX graph's signature."""

        def __init__(self, sam: Sam3D) -> None:
            super().__init__()
            self.sam = sam

        def forward(self, embedding, points, labels, mask_input):  # type: ignore[no-untyped-def]
            return self.sam.decode(embedding, points, labels, mask_input)

    return DecodeGraph(model)


class OnnxDecoder:
    """An exported decoder graph, run on the CPU with onnxruntime.

    Args:
        path: the ``.onnx`` file written by :func:`export_decoder`.
        threads: intra-op threads (0: onnxruntime's default, all cores).

    Attributes:
        model: the model name in the file's metadata.
        weights_sha256: SHA-256 of the weights it was exported from.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 0) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.model = metadata.get(MODEL_KEY, "")
        self.weights_sha256 = metadata.get(WEIGHTS_KEY, "")

    def decode(
        self,
        embedding: np.ndarray,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits (1, 1, 32, 32, 32) and IoU (1, 1) for one crop; see the module for the inputs.

        ``points`` may be (N, 3) or (1, N, 3), ``labels`` (N,) or (1, N); ``mask_input`` None
        means no previous mask.
        """
        mask = np.zeros(MASK_SHAPE, np.float32) if mask_input is None else mask_input
        feeds = {
            "embedding": np.asarray(embedding, np.float32).reshape(1, 384, 8, 8, 8),
            "points": np.asarray(points, np.float32).reshape(1, -1, 3),
            "labels": np.asarray(labels, np.int64).reshape(1, -1),
            "mask_input": np.asarray(mask, np.float32).reshape(MASK_SHAPE),
        }
        logits, iou = self.session.run(list(OUTPUT_NAMES), feeds)
        return logits, iou
