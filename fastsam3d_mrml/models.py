"""Loading a model for the module on the worker thread, with a CPU fallback on out-of-memory,
or connecting to a remote encoder service.

Runs on the worker thread: downloads the weights (with progress) when they are not cached,
builds the model on the chosen device and loads the checkpoint. torch and the core's model
code are imported here, inside functions, so importing the module stays fast. The "Remote
server" device needs no torch: the service (``fastsam3d serve``) encodes each crop, and the
decoder runs here with onnxruntime.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

# What the module offers, in the order the model selector shows them.
MODEL_CHOICES = (("fastsam3d", "FastSAM3D"), ("sam-med3d-turbo", "SAM-Med3D-turbo"))
REMOTE = "remote"
DEVICE_CHOICES = (
    ("auto", "Auto"),
    ("cuda", "CUDA"),
    ("cpu", "CPU"),
    ("mps", "Apple MPS"),
    (REMOTE, "Remote server"),
)
# The image encoder's precisions, with their menu labels: the names are
# fastsam3d_core.models.precision.PRECISIONS (a test holds them equal), which imports torch, and
# the widget fills its menu before the dependencies are installed.
PRECISION_CHOICES = (
    ("auto", "Auto"),
    ("float32", "float32"),
    ("bfloat16", "bfloat16"),
    ("float16", "float16 (GPU)"),
    ("int8", "int8 (CPU)"),
)
# The connection test's wait for each attempt: a wrong address is said within seconds.
CONNECTION_TEST_TIMEOUT_S = 5.0

Reporter = Callable[[str, Optional[float]], None]
"""How a worker job reports progress: (message, fraction done in 0..1 or None)."""

# Reported messages that the user must see (not just a passing status) start with this.
WARNING_PREFIX = "Warning: "


class ModelLoadError(RuntimeError):
    """The model could not be made ready; the message says what the user can do."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception is a GPU (CUDA or MPS) out-of-memory error."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class FallbackPredictor:
    """A model predictor that moves the model to the CPU when the GPU runs out of memory.

    The failed call is retried on the CPU; embeddings computed on the GPU before are moved to
    the CPU when they are next used (:class:`fastsam3d_core.session.ModelPredictor` does that).

    Args:
        model: a built, loaded :class:`fastsam3d_core.Sam3D`.
        report: where the fallback is announced (the worker's progress reporter).
        fell_back: the model is on the CPU because the chosen GPU had too little memory.
        loaded: the core's ``LoadedModel`` it came from (its weights' identity), or None.

    Attributes:
        fell_back: whether the model runs on the CPU instead of the device asked for, so that
            asking for that device again retries it.
    """

    def __init__(
        self,
        model: Any,
        report: Reporter | None = None,
        fell_back: bool = False,
        loaded: Any = None,
    ) -> None:
        from fastsam3d_core.session import ModelPredictor

        self.inner = ModelPredictor(model)
        self.report = report
        self.fell_back = fell_back
        self.loaded = loaded

    @property
    def weights_sha256(self) -> str:
        """The loaded weights' identity, as the encoder service announces it: the checkpoint's
        SHA-256, with adapters the hash of both files' hashes; "" when unknown. Hashed on first
        use (a second for the larger model), then kept."""
        return self.loaded.identity if self.loaded is not None else ""

    @property
    def device(self) -> str:
        return str(self.inner.model.device)

    def encode(self, crop: Any) -> Any:
        return self._call(lambda: self.inner.encode(crop))

    def decode(self, embedding: Any, points: Any, labels: Any, mask_input: Any) -> Any:
        return self._call(lambda: self.inner.decode(embedding, points, labels, mask_input))

    # The text path (an adapter file from ``fastsam3d finetune --text``; issue 29).
    @property
    def accepts_text(self) -> bool:
        return self.inner.accepts_text

    def encode_features(self, crop: Any) -> Any:
        return self._call(lambda: self.inner.encode_features(crop))

    def decode_text(
        self,
        features: Any,
        text_embedding: Any,
        mask_input: Any = None,
        points: Any = None,
        labels: Any = None,
    ) -> Any:
        """The inner predictor's ``decode_text``: the text alone, or clicks after it (a click
        in a text's crop decodes with the text, :mod:`fastsam3d_core.session.crops`)."""
        return self._call(
            lambda: self.inner.decode_text(features, text_embedding, mask_input, points, labels)
        )

    def _call(self, run: Callable[[], Any]) -> Any:
        try:
            return run()
        except Exception as error:
            if not is_out_of_memory(error) or self.inner.model.device.type == "cpu":
                raise
            self._fall_back(error)
            return run()

    def _fall_back(self, error: BaseException) -> None:
        import torch

        was = self.inner.model.device.type
        self.inner.model.to("cpu")
        if was == "cuda":
            torch.cuda.empty_cache()
        message = WARNING_PREFIX + (
            f"The GPU ({was}) ran out of memory ({str(error).splitlines()[0][:120]}). "
            "FastSAM3D continues on the CPU, which is slower. To use the GPU again, close other "
            "programs that use it, or choose a smaller volume, then select the device again."
        )
        self.fell_back = True
        if self.report is not None:
            self.report(message, None)


def load_predictor(
    model_name: str,
    device: str = "auto",
    weights_file: str | Path | None = None,
    report: Reporter | None = None,
    server: str | None = None,
    token: str | None = None,
    adapter_file: str | Path | None = None,
    precision: str = "auto",
) -> Any:
    """Download (if needed) and load a model's weights, or connect to the encoder service;
    return a ready predictor.

    Args:
        model_name: ``"fastsam3d"`` or ``"sam-med3d-turbo"``.
        device: ``"auto"``, ``"cuda"``, ``"cpu"``, ``"mps"``, or :data:`REMOTE`.
        weights_file: a local checkpoint to use instead of the cached download; with
            :data:`REMOTE`, the decoder's (a checkpoint or an ``.onnx`` export) instead of the
            service's.
        report: progress reporter (download percentage, loading).
        server, token: the service's address and token, for :data:`REMOTE`.
        adapter_file: adapters (``fastsam3d finetune``) for the local model.
        precision: the local model's encoder precision, a name of :data:`PRECISION_CHOICES`.

    Raises:
        ModelLoadError: unknown model or device, offline with no cached weights, a checksum
            mismatch, a checkpoint that does not fit the model, or a service that cannot be
            used; the message says what to do.
    """
    names = [name for name, _ in MODEL_CHOICES]
    if model_name not in names:
        raise ModelLoadError(f"unknown model {model_name!r}; choose one of {names}")
    if device == REMOTE:
        if adapter_file:
            raise ModelLoadError(
                "Adapters run where the encoder runs: clear 'Adapter file', and ask whoever "
                "runs the server to start it with 'fastsam3d serve --adapter FILE'."
            )
        if precision != "auto":
            raise ModelLoadError(
                "The server chooses its encoder's precision: set 'Precision' to Auto, and ask "
                "whoever runs the server to start it with 'fastsam3d serve --precision'."
            )
        return connect_remote(model_name, server, token, weights_file, report)
    return _load_local(model_name, device, weights_file, report, adapter_file, precision)


def connect_remote(
    model_name: str,
    server: str | None,
    token: str | None = None,
    weights_file: str | Path | None = None,
    report: Reporter | None = None,
) -> Any:
    """A :class:`fastsam3d_core.RemotePredictor` for the service at ``server`` (no torch).

    Raises:
        ModelLoadError: no address, the service unreachable, a refused token, another model or
            other weights there; the message says what to do.
    """
    from fastsam3d_core.serving import RemoteError, RemotePredictor, display_url

    if report is not None:
        report(f"Connecting to the FastSAM3D server at {display_url(server or '')}...", None)
    try:
        return RemotePredictor(
            server or "", model=model_name, token=token or None, decoder=weights_file or "auto"
        )
    except (RemoteError, ValueError, OSError) as error:
        raise ModelLoadError(_remote_problem(error)) from error


def check_server(server: str | None, token: str | None, model_name: str) -> str:
    """The connection test: one line on what the service at ``server`` serves.

    Raises:
        ModelLoadError: as :func:`connect_remote`, or ``model_name`` not served there.
    """
    from fastsam3d_core.serving import RemoteError, display_url, served_models

    shown = display_url(server or "")  # without a user:password@ or a token= in it
    try:
        served = served_models(server or "", token or None, CONNECTION_TEST_TIMEOUT_S)
    except (RemoteError, ValueError) as error:
        raise ModelLoadError(_remote_problem(error)) from error
    if model_name not in served:
        raise ModelLoadError(
            f"The FastSAM3D server at {shown} does not serve {model_name}; it serves "
            f"{', '.join(sorted(served)) or 'no model'}. Choose one of those models."
        )
    weights = served[model_name].get("weights_sha256", "")
    return f"Connected: {shown} serves {model_name} (weights {weights[:12]})."


def _remote_problem(error: BaseException) -> str:
    from fastsam3d_core.serving import ModelMismatchError

    text = str(error)
    if getattr(error, "status", None) == 401:
        advice = "Enter the server's token (ask whoever runs the server)."
    elif isinstance(error, ModelMismatchError):
        advice = "Clear 'Weights file', or choose the weights the server runs."
    else:
        advice = "Check the address, and that 'fastsam3d serve' runs there and is reachable."
    return f"Cannot use the FastSAM3D server: {text}\n\n{advice}"


def _load_local(
    model_name: str,
    device: str,
    weights_file: str | Path | None,
    report: Reporter | None,
    adapter_file: str | Path | None = None,
    precision: str = "auto",
) -> FallbackPredictor:
    from fastsam3d_core.weights.recipe import ModelRecipe

    def progress(done: int, total: int | None) -> None:
        if report is not None and total:
            report(
                f"Downloading {model_name} weights: {done / 2**20:.0f} of {total / 2**20:.0f} MB",
                done / total,
            )

    recipe = ModelRecipe(model_name, weights_file, adapter_file or None, device, precision)
    with _explained(recipe):
        recipe = recipe.with_weights(progress=progress)
    if report is not None:
        report(f"Loading {model_name} on {device}...", None)
    fell_back = False
    with _explained(recipe):
        try:
            loaded = recipe.load()
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            notice = WARNING_PREFIX + (
                f"The GPU has too little free memory for {model_name} ({str(error)[:120]}); it "
                "runs on the CPU instead (slower). Close other programs that use the GPU and "
                "press Start again to retry."
            )
            if report is not None:
                report(notice, None)
            # float16 has no fast CPU kernels: the CPU decides for itself.
            cpu_precision = "auto" if precision == "float16" else precision
            loaded = replace(recipe, device="cpu", precision=cpu_precision).load()
            fell_back = True
    logging.info("FastSAM3D: %s encoder precision %s", model_name, loaded.precision.describe())
    return FallbackPredictor(loaded.model, report, fell_back=fell_back, loaded=loaded)


@contextlib.contextmanager
def _explained(recipe: Any) -> Iterator[None]:
    """Turn the errors of the model recipe's steps (:class:`fastsam3d_core.weights.ModelRecipe`)
    into a :class:`ModelLoadError` that names the setting to change."""
    from fastsam3d_core.models.build import DeviceError
    from fastsam3d_core.models.precision import PrecisionError
    from fastsam3d_core.weights import WeightsDownloadError, WeightsError
    from fastsam3d_core.weights.adapter_file import AdapterFileError
    from fastsam3d_core.weights.checkpoint import CheckpointError, IncompleteCheckpointError

    try:
        yield
    except WeightsDownloadError as error:
        raise ModelLoadError(
            f"The {recipe.model} weights are not on this computer and the download failed. "
            "Download them on another computer (or in a browser) and choose the file under "
            f"'Weights file', or press Start again.\n\n{error}"
        ) from error
    except (WeightsError, IncompleteCheckpointError) as error:
        raise ModelLoadError(str(error)) from error
    except AdapterFileError as error:
        raise ModelLoadError(f"{error}. Clear 'Adapter file' or choose the one for these "
                             "weights.") from error  # fmt: skip
    except CheckpointError as error:
        raise ModelLoadError(
            f"{recipe.weights} does not hold {recipe.model} weights: {error}"
        ) from error
    except DeviceError as error:
        raise ModelLoadError(
            f"{error}. Choose another device (Auto picks one that works)."
        ) from error
    except PrecisionError as error:  # int8 on a GPU, say
        raise ModelLoadError(
            f"{error}. Choose another 'Precision' (Auto runs everywhere)."
        ) from error
