"""The benchmark suite behind ``fastsam3d bench``: speed, memory and FLOPs of each model, always
next to the reference path.

For every model × backend × device × dtype it measures, with medians over repeats after warm-up:

* the image encoder on one 128³ crop;
* prompt encoder + mask decoder on a cached embedding (one click, single mask);
* an end-to-end click: click to updated full-resolution labelmap in a :class:`Session` on a
  CT-sized volume (default 512×512×300 voxels of 0.7×0.7×1 mm), embedding cached;
* peak memory (process RSS on the CPU, ``max_memory_allocated`` on CUDA) and FLOPs
  (``torch.utils.flop_counter``: 2 × multiply-accumulate of matrix products and convolutions).

The plain ``reference`` backend (textbook attention, padded windows, module-by-module layers) is
timed in the same run on the same weights and inputs, and every other row reports its speed-up
against it, so that no number stands alone. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

DTYPES = ("float32", "bfloat16", "float16")
PARTS = ("encoder", "decoder", "click")


@dataclass
class BenchSettings:
    """What to measure (the ``fastsam3d bench`` options).

    Attributes:
        models, backends, devices, dtypes: every combination is measured, plus the reference
            backend of each model, device and dtype.
        repeats, warmup: timed and untimed runs of each part; medians are reported.
        threads: CPU threads for torch (None: torch's default).
        volume_shape: the synthetic CT-sized volume of the click measurements, (I, J, K).
        clicks: clicks timed inside the crop (at least ``repeats``).
        new_crop_clicks: first clicks of fresh sessions timed (encoder included).
        compile: ``torch.compile`` the encoder and decoder.
        int8: also time int8 dynamic quantisation of the Linear layers (CPU).
        flops: count each part's FLOPs (one extra run per part).
        matmul_size: side of the fp32 matrix product that measures the machine's throughput.
    """

    models: list[str] = field(default_factory=lambda: ["fastsam3d", "sam-med3d-turbo"])
    backends: list[str] = field(default_factory=lambda: ["exact"])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    volume_shape: tuple[int, int, int] = (512, 512, 300)
    clicks: int = 8
    new_crop_clicks: int = 3
    compile: bool = False
    int8: bool = False
    flops: bool = True
    matmul_size: int = 4096

    def make_quick(self) -> None:
        """CI-sized: FastSAM3D only, one repeat, a 96×96×64 volume, no FLOP count."""
        self.models, self.repeats, self.warmup = ["fastsam3d"], 1, 1
        self.volume_shape, self.clicks, self.new_crop_clicks = (96, 96, 64), 2, 1
        self.flops, self.matmul_size = False, 512


# -- measuring -------------------------------------------------------------------------------


def _synchronise(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    call: Callable[[], object], repeats: int, warmup: int, device: Any
) -> tuple[float, list[float]]:
    """Median wall time of ``call`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        call()
    _synchronise(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _synchronise(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process where possible (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def peak_memory_mb(call: Callable[[], object], device: Any) -> float:
    """Peak memory while ``call`` runs: process RSS (CPU) or max allocated (CUDA), in MiB.

    On the CPU this is the whole process's resident set, weights included; where the peak mark
    cannot be reset (not Linux) it is the peak since the process started.
    """
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        call()
        _synchronise(device)
        return torch.cuda.max_memory_allocated(device) / (1 << 20)
    _reset_peak_rss()
    call()
    return _peak_rss_mb()


def count_gflops(call: Callable[[], object]) -> float:
    """FLOPs of one call (2 × multiply-accumulate of matmuls, convolutions, attention), in G."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
        # The counter knows the CUDA attention kernels but not the CPU one; same count.
        return sdpa_flop_count(query, key, value)  # shapes, as the counter passes them

    def onednn_linear(x: Any, weight: Any, *args: Any, **kwargs: Any) -> int:
        # The fused linear of models.common.linear: (…, in) @ (out, in)ᵀ.
        rows = math.prod(x[:-1])
        return 2 * rows * weight[0] * weight[1]

    mapping: dict[Any, Callable[..., int]] = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention
    }
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        mapping[torch.ops.mkldnn._linear_pointwise] = onednn_linear
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        call()
    return counter.get_total_flops() / 1e9


def matmul_gflops(size: int, repeats: int = 3) -> float:
    """Throughput of a ``size``² fp32 matrix product on the CPU: the machine's yardstick."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds, _ = median_seconds(lambda: a @ b, repeats, 1, torch.device("cpu"))
    return 2 * size**3 / seconds / 1e9


def ct_sized_volume(shape: tuple[int, int, int], seed: int = 0) -> Any:
    """A synthetic CT-like volume: int16 noise, 0.7×0.7×1.0 mm voxels, LPS-like axes."""
    import numpy as np

    from .geometry import Volume

    rng = np.random.default_rng(seed)
    array = rng.normal(40, 200, shape).astype(np.int16)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    affine[:3, 3] = (0.35 * shape[0], 0.35 * shape[1], -0.5 * shape[2])
    return Volume(array, affine)


# -- one configuration -----------------------------------------------------------------------


@dataclass
class Row:
    """The measurements of one model × backend × device × dtype."""

    model: str
    backend: str
    device: str
    dtype: str
    encoder_s: float = float("nan")
    decoder_s: float = float("nan")
    click_s: float = float("nan")
    encoder_samples_s: list[float] = field(default_factory=list)
    decoder_samples_s: list[float] = field(default_factory=list)
    click_samples_s: list[float] = field(default_factory=list)
    click_new_crop_s: float = float("nan")
    encoder_peak_mb: float = float("nan")
    decoder_peak_mb: float = float("nan")
    encoder_gflops: float = float("nan")
    decoder_gflops: float = float("nan")
    speedup: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _autocast(device: Any, dtype: str) -> contextlib.AbstractContextManager:
    import torch

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


def _prepare_model(name: str, device: Any, backend: str, settings: BenchSettings) -> Any:
    import torch

    from . import build_model

    torch.manual_seed(0)
    # Timing needs no trained weights; random ones do the same work.
    model = build_model(name, device=device).allow_random_weights()
    if backend == "int8":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        backend = "exact"
    model.set_attention_backend(backend)  # type: ignore[arg-type]
    if settings.compile and backend != "reference":
        model.image_encoder.compile()
        model.mask_decoder.compile()
    return model


def measure(
    name: str, backend: str, device: Any, dtype: str, settings: BenchSettings, volume: Any
) -> tuple[Row, dict[str, Any]]:
    """Time, memory and FLOPs of one configuration; also returns its outputs for agreement."""
    row = Row(name, backend, str(device), dtype)
    if settings.compile and backend != "reference":
        row.note = "torch.compile"
    model = _prepare_model(name, device, backend, settings)
    outputs = _measure_parts(model, row, device, dtype, settings)
    _measure_clicks(model, row, device, dtype, settings, volume)
    return row, outputs


def _measure_parts(
    model: Any, row: Row, device: Any, dtype: str, settings: BenchSettings
) -> dict[str, Any]:
    """Encoder and decoder: time, peak memory, FLOPs; returns the outputs."""
    import torch

    generator = torch.Generator().manual_seed(1)
    image = torch.randn(1, 1, 128, 128, 128, generator=generator).to(device)
    points = torch.tensor([[[40.0, 70.0, 90.0], [64.0, 60.0, 50.0]]], device=device)
    labels = torch.tensor([[1, 0]], device=device)
    mask = torch.randn(1, 1, 32, 32, 32, generator=generator).to(device)
    repeats, warmup = settings.repeats, settings.warmup
    with torch.inference_mode(), _autocast(device, dtype):
        embedding = model.encode(image)

        def encode() -> object:
            return model.encode(image)

        def decode() -> Any:
            return model.decode(embedding, points, labels, mask)

        row.encoder_s, row.encoder_samples_s = median_seconds(encode, repeats, warmup, device)
        row.decoder_s, row.decoder_samples_s = median_seconds(decode, 4 * repeats, warmup, device)
        row.encoder_peak_mb = peak_memory_mb(encode, device)
        row.decoder_peak_mb = peak_memory_mb(decode, device)
        outputs = {"embedding": embedding.float().cpu(), "logits": decode()[0].float().cpu()}
    if settings.flops:
        # Counted in fp32 (the counter does not run under autocast); FLOPs do not depend on it.
        with torch.inference_mode():
            embedding = embedding.float()
            row.encoder_gflops = count_gflops(encode)
            row.decoder_gflops = count_gflops(decode)
    return outputs


def _measure_clicks(
    model: Any, row: Row, device: Any, dtype: str, settings: BenchSettings, volume: Any
) -> None:
    """Clicks in a session: opening a crop (encoder runs) and inside it (cached embedding).

    The first click of a fresh session is what every click costs when the encoder re-runs (the
    authors' Slicer extension): it is timed on new sessions. The clicks inside the crop decode
    with all the crop's clicks and the previous logits, and paste back onto the volume.
    """
    import numpy as np

    from .session import Session

    predictor = _AutocastPredictor(model, device, dtype)
    centre = np.array(volume.shape, dtype=float) / 2
    new_crop = []
    for _ in range(settings.new_crop_clicks):
        session = Session(volume, predictor)
        start = time.perf_counter()
        session.add_point_ijk(centre)
        _synchronise(device)
        new_crop.append(time.perf_counter() - start)
    row.click_new_crop_s = statistics.median(new_crop)
    samples = []
    for index in range(settings.warmup + max(settings.clicks, settings.repeats)):
        offset = np.array([index % 5 - 2, (index * 3) % 7 - 3, index % 3 - 1], dtype=float)
        start = time.perf_counter()
        result = session.add_point_ijk(centre + offset, positive=index % 3 != 1)
        _synchronise(device)
        if result.encoder_ran:
            raise RuntimeError("a click inside the crop re-ran the encoder")
        samples.append(time.perf_counter() - start)
    row.click_samples_s = samples[settings.warmup :]
    row.click_s = statistics.median(row.click_samples_s)


class _AutocastPredictor:
    """A session's predictor that runs the model (only) under autocast to ``dtype``."""

    def __init__(self, model: Any, device: Any, dtype: str) -> None:
        from .session.model_predictor import ModelPredictor

        self.inner = ModelPredictor(model)
        self.device, self.dtype = device, dtype

    def encode(self, crop: Any) -> Any:
        with _autocast(self.device, self.dtype):
            return self.inner.encode(crop)

    def decode(self, embedding: Any, points: Any, labels: Any, mask_input: Any) -> Any:
        with _autocast(self.device, self.dtype):
            return self.inner.decode(embedding, points, labels, mask_input)


def _agreement(ours: dict[str, Any], fp32: dict[str, Any]) -> dict[str, float]:
    """How closely a configuration reproduces fp32: relative error and mask agreement."""
    embedding = (ours["embedding"] - fp32["embedding"]).abs().max() / fp32["embedding"].abs().max()
    same_sign = ((ours["logits"] > 0) == (fp32["logits"] > 0)).float().mean()
    return {
        "embedding_max_rel_error": float(embedding),
        "mask_voxel_agreement": float(same_sign),
    }


# -- the suite -------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(settings: BenchSettings) -> dict[str, Any]:
    import torch

    description: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        f"matmul_{settings.matmul_size}_fp32_gflops": round(matmul_gflops(settings.matmul_size), 1),
    }
    if torch.cuda.is_available():
        description["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return description


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_suite(settings: BenchSettings, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every configuration and the reference path; returns the JSON-ready report."""
    import torch

    from .models.build import resolve_device

    if settings.threads:
        torch.set_num_threads(settings.threads)
    load_start = _load()
    machine = machine_description(settings)
    volume = ct_sized_volume(settings.volume_shape)
    rows: list[Row] = []
    for device_name in settings.devices:
        device = resolve_device(device_name)
        for name in settings.models:
            configs = [(b, d) for b in settings.backends for d in settings.dtypes]
            configs += [("int8", "float32")] if settings.int8 and device.type == "cpu" else []
            configs = [("reference", "float32")] + [c for c in configs if c[0] != "reference"]
            fp32_outputs: dict[str, Any] | None = None
            reference: Row | None = None
            for backend, dtype in configs:
                echo(f"measuring {name} {backend} {device} {dtype} ...")
                row, outputs = measure(name, backend, device, dtype, settings, volume)
                if reference is None:
                    reference = row
                else:
                    row.speedup = {
                        part: getattr(reference, f"{part}_s") / getattr(row, f"{part}_s")
                        for part in PARTS
                    }
                    # A cached click against a click that re-runs the plain encoder.
                    row.speedup["click_vs_reference_new_crop"] = (
                        reference.click_new_crop_s / row.click_s
                    )
                if backend == "exact" and dtype == "float32":
                    fp32_outputs = outputs
                elif backend != "reference" and fp32_outputs is not None:
                    row.agreement = _agreement(outputs, fp32_outputs)
                rows.append(row)
    return {
        "machine": machine,
        "settings": {**asdict(settings), "volume_shape": list(settings.volume_shape)},
        "load_average_1_5_15": {"start": load_start, "end": _load()},
        "results": [asdict(row) for row in rows],
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: medians, peak memory, GFLOPs, speed-up against reference."""
    header = (
        f"{'model':16s} {'backend':9s} {'device':6s} {'dtype':8s} "
        f"{'encoder':>9s} {'decoder':>9s} {'click':>9s} {'new crop':>11s} {'peak MiB':>9s} "
        f"{'GFLOP':>7s} "
        f"{'speed-up enc/dec/click':>23s}"
    )
    lines = [header, "-" * len(header)]
    for row in report["results"]:
        speedup = row["speedup"]
        ratios = "/".join(f"{speedup[p]:.2f}×" for p in PARTS) if speedup else "(reference)"
        lines.append(
            f"{row['model']:16s} {row['backend']:9s} {row['device']:6s} {row['dtype']:8s} "
            f"{row['encoder_s'] * 1e3:7.1f}ms {row['decoder_s'] * 1e3:7.1f}ms "
            f"{row['click_s'] * 1e3:7.1f}ms {row['click_new_crop_s'] * 1e3:9.1f}ms "
            f"{row['encoder_peak_mb']:9.0f} "
            f"{row['encoder_gflops']:7.1f} {ratios:>23s} {row['note']}".rstrip()
        )
        if row["agreement"]:
            agreement = row["agreement"]
            lines.append(
                f"{'':16s} agreement with fp32: embedding max rel. error "
                f"{agreement['embedding_max_rel_error']:.1e}, mask voxels "
                f"{100 * agreement['mask_voxel_agreement']:.2f}% equal"
            )
    machine = report["machine"]
    gflops = next(v for k, v in machine.items() if k.startswith("matmul_"))
    load = report["load_average_1_5_15"]
    lines.append(
        f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}, "
        f"fp32 matmul {gflops} GFLOP/s; load average {load['start']} -> {load['end']}"
    )
    return "\n".join(lines)
