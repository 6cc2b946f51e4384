"""Small building blocks shared by the encoder and the decoder."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm3d(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, D, H, W)`` tensor, biased variance.

    Keeps ``weight`` and ``bias`` as plain parameters, as in the released state dicts.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Non-negative axes: ONNX export writes a negative one into Transpose, which ONNX forbids.
        last = x.ndim - 1
        channels_last = x.movedim(1, last)
        normed = F.layer_norm(channels_last, (x.shape[1],), self.weight, self.bias, self.eps)
        return normed.movedim(last, 1)


_ONEDNN_LINEAR = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if torch.backends.mkldnn.is_available()
    else None
)
# The dtypes whose linear layers go to oneDNN here. float32 on AVX-512 CPUs only: there oneDNN
# beats the default MKL call (about 205 against 165 GFLOP/s for the encoder's MLP products), on
# an AVX2 EPYC it loses (20 against 16 ms for 512x3072 @ 3072x768). bfloat16 where the CPU has
# AVX-512 (emulated) or native bfloat16 units; elsewhere oneDNN has no bfloat16 kernel.
# FASTSAM3D_LINEAR=plain or onednn takes one path on any CPU (default auto: as above). The two
# round differently, so a test whose claim depends on numerics runs under both (Testing/).
LINEAR_PATH_VARIABLE = "FASTSAM3D_LINEAR"
_LINEAR_PATH = os.environ.get(LINEAR_PATH_VARIABLE, "auto").strip().lower() or "auto"
if _LINEAR_PATH not in ("auto", "plain", "onednn"):
    warnings.warn(
        f"{LINEAR_PATH_VARIABLE}={_LINEAR_PATH!r} ignored: use auto, plain or onednn", stacklevel=2
    )
    _LINEAR_PATH = "auto"


def _onednn_dtypes(path: str) -> tuple[torch.dtype, ...]:
    if _ONEDNN_LINEAR is None or path == "plain":
        return ()
    onednn_float32 = path == "onednn" or torch.backends.cpu.get_cpu_capability() == "AVX512"
    bfloat16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return ((torch.float32,) if onednn_float32 else ()) + ((torch.bfloat16,) if bfloat16 else ())


_ONEDNN_DTYPES = _onednn_dtypes(_LINEAR_PATH)

# Under the auto path, float32 products of fewer rows go to the plain call. oneDNN builds (JIT)
# a kernel for every new shape, about 0.6 ms against 0.06 ms for a 20-row product here, and the
# decoder's token products take a new row count at every click (one more point): about 20 of
# them, 3-5 ms of each click. The plain call has no such cost and is as fast at these sizes.
_ONEDNN_MIN_ROWS_AUTO = 64
_ONEDNN_MIN_ROWS = _ONEDNN_MIN_ROWS_AUTO if _LINEAR_PATH == "auto" else 0


@contextlib.contextmanager
def linear_path(path: str) -> Iterator[None]:
    """Take one linear path inside the block: "plain", "onednn" or "auto" (tests that check a
    numerical claim on both)."""
    global _ONEDNN_DTYPES, _ONEDNN_MIN_ROWS
    if path not in ("auto", "plain", "onednn"):
        raise ValueError(f"linear path must be auto, plain or onednn, not {path!r}")
    previous = _ONEDNN_DTYPES, _ONEDNN_MIN_ROWS
    _ONEDNN_DTYPES = _onednn_dtypes(path)
    _ONEDNN_MIN_ROWS = _ONEDNN_MIN_ROWS_AUTO if path == "auto" else 0
    try:
        yield
    finally:
        _ONEDNN_DTYPES, _ONEDNN_MIN_ROWS = previous


# Weights of these dtypes are packed once per layer (see _packed_weight). For float32 it saves
# 2-4 % per call on AVX2/AVX-512, not worth a second copy of every weight.
_PACKED_DTYPES = (torch.bfloat16,)


def traced() -> bool:
    """Whether this call is being traced into a graph (torch.compile, ONNX export): the eager
    fast paths step aside, as the graph is made for other shapes and needs standard ops."""
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def _onednn_applies(weight: torch.Tensor, x: torch.Tensor) -> bool:
    return (
        # Under torch.compile the compiler makes its own choice (it emits this same kernel); an
        # ONNX export needs the standard op.
        not traced()
        and _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == weight.dtype
        and x.dtype in _ONEDNN_DTYPES
        and (x.dtype != torch.float32 or x.numel() >= _ONEDNN_MIN_ROWS * x.shape[-1])
        and not torch.is_autocast_enabled("cpu")
        # The fused op has no backward: keep autograd's path whenever a gradient could flow.
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
    )


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "gelu":
        return F.gelu(x)
    return F.relu(x) if activation == "relu" else x


def _onednn_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str
) -> torch.Tensor:
    algorithm = "none" if activation == "gelu" else ""
    return _ONEDNN_LINEAR(x, weight, bias, activation, [], algorithm)  # type: ignore[misc]


def fused_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str = "none",
    plain: bool = False,
) -> torch.Tensor:
    """``activation(x @ weightᵀ + bias)``; activation "none", "gelu" (exact, erf) or "relu".

    In float32 inference on AVX-512 CPUs (and in bfloat16 where oneDNN computes it) this calls
    oneDNN's linear with the activation fused, the kernel that PyTorch's own compiler emits for
    linear layers: about a quarter faster than the default BLAS call for the encoder's shapes
    there, same arithmetic up to rounding. Anywhere else (GPU, autocast,
    gradients, torch.compile, ONNX export) or with ``plain`` it is
    :func:`torch.nn.functional.linear` followed by the activation.

    Args:
        x: ``(..., in)``; weight: ``(out, in)``; bias: ``(out,)`` or None.
    """
    if not plain and _onednn_applies(weight, x):
        return _onednn_linear(x, weight, bias, activation)
    return _activate(F.linear(x, weight, bias), activation)


def _packed_weight(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The layer's weight reordered into oneDNN's blocked layout, once.

    Given a plain weight, oneDNN reorders it into the layout of its AMX/AVX-512 kernels on every
    call: a pass over the whole weight per product. The packed copy is kept on the layer and
    made again only when the weight changes (new weights loaded: its version moves on).
    """
    weight = layer.weight
    key = (weight.data_ptr(), weight._version)
    cached = layer.__dict__.get("_onednn_packed")
    if cached is None or cached[0] != key:
        rows = x.numel() // x.shape[-1]  # a size hint for oneDNN's choice of layout
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
        cached = layer.__dict__["_onednn_packed"] = (key, packed)
    return cached[1]


Derived = TypeVar("Derived")


def sources_key(sources: tuple[torch.Tensor, ...]) -> tuple:
    """What identifies the values of ``sources`` while their storage is held: address, version
    (inference tensors have none: they cannot change outside inference mode), dtype, device,
    shape."""
    return tuple(
        (s.data_ptr(), 0 if s.is_inference() else s._version, s.dtype, s.device, tuple(s.shape))
        for s in sources
    )


def cached_derived(
    owner: nn.Module, name: str, sources: tuple[torch.Tensor, ...], make: Callable[[], Derived]
) -> Derived:
    """``make()``, tensors computed from ``sources`` (weights, buffers), kept on ``owner`` until
    a source changes: new values loaded in place (its version moves on), replaced, moved or
    converted. The cache holds the sources' storage, so a replaced one's address cannot be
    reused by its successor. ``make`` runs outside inference mode and autograd: the value is a
    constant any later call may read, training included (where a gradient must flow to the
    sources, compute it directly instead)."""
    key = sources_key(sources)
    cached = owner.__dict__.get(name)
    if cached is None or cached[0] != key:
        with torch.inference_mode(False), torch.no_grad():
            value = make()
        cached = owner.__dict__[name] = (key, tuple(s.detach() for s in sources), value)
    return cached[2]


def _transposed_product_applies(weight: torch.Tensor, x: torch.Tensor) -> bool:
    # Fewer than 64 rows, float32 inference on the CPU (the decoder's token products).
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and 0 < x.numel() < 64 * x.shape[-1]
        and not traced()
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
    )


def _transposed_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` as ``bias + x @ weightᵀ`` with ``weightᵀ`` kept contiguous (in, out).

    For a few rows the BLAS call streams the whole weight; read in its stored (out, in) order it
    is transposed on the fly, about twice the time of the (in, out) copy here (a 12-row product
    with the decoder's 384 → 2048 MLP weight: 0.56 against 0.28 ms on one core).
    """
    weight_t = cached_derived(
        layer, "_transposed_weight", (layer.weight,), lambda: layer.weight.t().contiguous()
    )
    rows = x.reshape(-1, x.shape[-1])
    if layer.bias is None:
        out = rows @ weight_t
    else:
        out = torch.addmm(layer.bias, rows, weight_t)
    return out.view(*x.shape[:-1], weight_t.shape[1])


def linear(
    layer: nn.Module, x: torch.Tensor, activation: str = "none", plain: bool = False
) -> torch.Tensor:
    """``activation(layer(x))``: :func:`fused_linear` for an ``nn.Linear`` (with its weight
    packed once for oneDNN in bfloat16; for a product of few rows that oneDNN does not take,
    with its weight kept transposed), else the module call (quantised layers, for example)
    followed by the activation."""
    if type(layer) is not nn.Linear:
        return _activate(layer(x), activation)
    weight = layer.weight
    if plain:
        return fused_linear(x, weight, layer.bias, activation, plain)
    if _onednn_applies(weight, x):
        if weight.dtype in _PACKED_DTYPES:
            return _onednn_linear(x, _packed_weight(layer, x), layer.bias, activation)
        return _onednn_linear(x, weight, layer.bias, activation)
    if _transposed_product_applies(weight, x):
        return _activate(_transposed_linear(layer, x), activation)
    return _activate(F.linear(x, weight, layer.bias), activation)


class MLPBlock(nn.Module):
    """Two linear layers with an activation between: ``lin2(act(lin1(x)))`` over the last axis."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()
        # True: call the modules one by one (the plain path, for the reference).
        self.plain = False

    def _activation(self) -> str | None:
        if isinstance(self.act, nn.GELU) and self.act.approximate == "none":
            return "gelu"
        return "relu" if isinstance(self.act, nn.ReLU) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activation = self._activation()
        if self.plain or activation is None:
            return self.lin2(self.act(self.lin1(x)))
        return linear(self.lin2, linear(self.lin1, x, activation))


class MLPHead(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last).

    Used for the mask decoder's hypernetworks and IoU head; parameters are ``layers.{i}``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        # True: the layers' own calls (the plain path, for the reference).
        self.plain = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if self.plain:
                x = layer(x)
                x = F.relu(x) if index < last else x
            else:
                x = linear(layer, x, "relu" if index < last else "none")
        return x
