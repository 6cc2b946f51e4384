"""Shared GPUs: a stateless encoder service on Ray Serve, and a client that needs no torch.

The service (:mod:`.service`, ``fastsam3d serve``) computes image embeddings of crops; the client
(:class:`RemotePredictor`) keeps the session and runs the prompt encoder and mask decoder itself,
from an ONNX export (:mod:`.onnx_decoder`) fetched from the service once.
"""

from .client import ModelMismatchError, RemoteError, RemotePredictor, display_url, served_models

__all__ = ["ModelMismatchError", "RemoteError", "RemotePredictor", "display_url", "served_models"]
