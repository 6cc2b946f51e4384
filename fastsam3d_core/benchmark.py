"""The benchmark suite behind ``fastsam3d bench``: speed, memory and FLOPs of each model, always
next to the reference path.

For every model × backend × device × precision it measures, with medians over repeats after warm-up:

* the image encoder on one 128³ crop;
* prompt encoder + mask decoder on a cached embedding (one click, single mask);
* an end-to-end click: click to updated full-resolution labelmap in a :class:`Session` on a
  CT-sized volume (default 512×512×300 voxels of 0.7×0.7×1 mm), embedding cached;
* peak memory (process RSS on the CPU, ``max_memory_allocated`` on CUDA) and FLOPs
  (``torch.utils.flop_counter``: 2 × multiply-accumulate of matrix products and convolutions).

The plain ``reference`` backend (textbook attention, padded windows, module-by-module layers) is
timed in the same run on the same weights and inputs, and every other row reports its speed-up
against it, so that no number stands alone. Weights are random: speed does not depend on them.
Rows in another precision than float32 (:mod:`.models.precision`) also report their speed-up
against the float32 row and their agreement with it (:mod:`.evaluation.agreement`): on the
benchmark's own crop, and on golden references and scans when given.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH_PRECISIONS = ("float32", "bfloat16", "float16", "int8")
PARTS = ("encoder", "decoder", "click")


@dataclass
class BenchSettings:
    """What to measure (the ``fastsam3d bench`` options).

    Attributes:
        models, backends, devices, precisions: every combination is measured (int8 on the CPU
            only), plus the reference backend of each model and device in float32.
        repeats, warmup: timed and untimed runs of each part; medians are reported.
        threads: CPU threads for torch (None: torch's default).
        volume_shape: the synthetic CT-sized volume of the click measurements, (I, J, K).
        clicks: clicks timed inside the crop (at least ``repeats``).
        new_crop_clicks: first clicks of fresh sessions timed (encoder included).
        compile: ``torch.compile`` the encoder and decoder.
        flops: count each part's FLOPs (one extra run per part, float32 rows; the FLOPs do not
            depend on the precision).
        matmul_size: side of the matrix products that measure the machine's throughput.
        golden_dir: golden references (``<model>.manifest.json``, ``.npz``) whose seeded weights,
            image and prompts the agreement of reduced precisions is also measured on.
        scans: ``(image, label, label value or None)`` files the agreement is also measured on,
            with the golden references' seeded weights (needs ``golden_dir``).
    """

    models: list[str] = field(default_factory=lambda: ["fastsam3d", "sam-med3d-turbo"])
    backends: list[str] = field(default_factory=lambda: ["exact"])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    precisions: list[str] = field(default_factory=lambda: ["float32"])
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    volume_shape: tuple[int, int, int] = (512, 512, 300)
    clicks: int = 8
    new_crop_clicks: int = 3
    compile: bool = False
    flops: bool = True
    matmul_size: int = 4096
    golden_dir: str | None = None
    scans: list[tuple[str, str, int | None]] = field(default_factory=list)

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


def matmul_gflops(size: int, repeats: int = 3, dtype: str = "float32") -> float:
    """Throughput of a ``size``² matrix product on the CPU: the machine's yardstick."""
    import torch

    a, b = (torch.randn(size, size).to(getattr(torch, dtype)) for _ in range(2))
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
    """The measurements of one model × backend × device × precision."""

    model: str
    backend: str
    device: str
    precision: str
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
    speedup_vs_float32: dict[str, float] = field(default_factory=dict)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


def _prepare_model(
    name: str, device: Any, backend: str, precision: str, settings: BenchSettings
) -> Any:
    import torch

    from .models import build_model

    torch.manual_seed(0)
    # Timing needs no trained weights; random ones do the same work.
    model = build_model(name, device=device).allow_random_weights()
    model.set_attention_backend(backend)  # type: ignore[arg-type]
    model.set_precision(precision)
    if settings.compile and backend != "reference":
        model.image_encoder.compile()
        model.mask_decoder.compile()
    return model


def measure(
    name: str, backend: str, device: Any, precision: str, settings: BenchSettings, volume: Any
) -> tuple[Row, Any, dict[str, Any]]:
    """Time, memory and FLOPs of one configuration; also returns the model and its outputs,
    for the agreement figures."""
    row = Row(name, backend, str(device), precision)
    if settings.compile and backend != "reference":
        row.note = "torch.compile"
    model = _prepare_model(name, device, backend, precision, settings)
    outputs = _measure_parts(model, row, device, settings)
    _measure_clicks(model, row, device, settings, volume)
    return row, model, outputs


def _measure_parts(model: Any, row: Row, device: Any, settings: BenchSettings) -> dict[str, Any]:
    """Encoder and decoder: time, peak memory, FLOPs; returns the outputs."""
    import torch

    generator = torch.Generator().manual_seed(1)
    image = torch.randn(1, 1, 128, 128, 128, generator=generator).to(device)
    points = torch.tensor([[[40.0, 70.0, 90.0], [64.0, 60.0, 50.0]]], device=device)
    labels = torch.tensor([[1, 0]], device=device)
    mask = torch.randn(1, 1, 32, 32, 32, generator=generator).to(device)
    repeats, warmup = settings.repeats, settings.warmup
    with torch.inference_mode():
        embedding = model.encode(image)

        def encode() -> object:
            return model.encode(image)

        def decode() -> Any:
            return model.decode(embedding, points, labels, mask)

        row.encoder_s, row.encoder_samples_s = median_seconds(encode, repeats, warmup, device)
        row.decoder_s, row.decoder_samples_s = median_seconds(decode, 4 * repeats, warmup, device)
        row.encoder_peak_mb = peak_memory_mb(encode, device)
        row.decoder_peak_mb = peak_memory_mb(decode, device)
        outputs = {"image": image, "embedding": embedding, "prompt": (points, labels)}
    if settings.flops and row.precision == "float32":
        with torch.inference_mode():
            row.encoder_gflops = count_gflops(encode)
            row.decoder_gflops = count_gflops(decode)
    return outputs


def _measure_clicks(
    model: Any, row: Row, device: Any, settings: BenchSettings, volume: Any
) -> None:
    """Clicks in a session: opening a crop (encoder runs) and inside it (cached embedding).

    The first click of a fresh session is what every click costs when the encoder re-runs (the
    authors' Slicer extension): it is timed on new sessions. The clicks inside the crop decode
    with all the crop's clicks and the previous logits, and paste back onto the volume.
    """
    import numpy as np

    from .session import ModelPredictor, Session

    predictor = ModelPredictor(model)
    centre = np.array(volume.shape, dtype=float) / 2
    new_crop = []
    # Warm-up sessions first: the first one pays one-time costs (torch.compile's compilation
    # for the session's shapes: 15 s on a CPU, against 0.6 s for the click itself).
    for _ in range(settings.warmup + settings.new_crop_clicks):
        session = Session(volume, predictor)
        start = time.perf_counter()
        session.add_point_ijk(centre)
        _synchronise(device)
        new_crop.append(time.perf_counter() - start)
    row.click_new_crop_s = statistics.median(new_crop[settings.warmup :])
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


def _agreement(
    model: Any, fp32_model: Any, outputs: dict[str, Any], settings: BenchSettings, scans: list
) -> list[dict[str, Any]]:
    """How closely a reduced-precision model reproduces the float32 one: on the benchmark's
    crop (random weights), then on the golden references and ``scans`` (:func:`_read_scans`)."""
    from .evaluation.agreement import crop_agreement

    results = [crop_agreement(fp32_model, model, outputs["image"], [outputs["prompt"]], "bench")]
    if settings.golden_dir:
        results += _seeded_agreement(model, settings.golden_dir, scans)
    return [asdict(result) for result in results]


def _seeded_agreement(model: Any, golden_dir: str, scans: list) -> list:
    """Agreement with the golden references' seeded weights: their scenarios, then the scans."""
    from .evaluation.agreement import golden_agreement, reduced_copy, scan_agreement
    from .golden import GoldenReference

    reference = GoldenReference.load(golden_dir, model.name)
    fp32_model = reference.seeded_model(model.device)
    reduced = reduced_copy(fp32_model, model.precision)
    results = [golden_agreement(reference, fp32_model, reduced)]
    for volume, mask, source in scans:
        results.append(scan_agreement(volume, mask, fp32_model, reduced, source))
    return results


def _read_scans(settings: BenchSettings) -> list[tuple[Any, Any, str]]:
    """``(volume, boolean mask, name for reports)`` of each of ``settings.scans``, read once per
    run; none without golden references, which give the scans their weights."""
    if not settings.golden_dir or not settings.scans:
        return []
    import numpy as np

    from .io import read_volume  # only here: the GPU machines have no SimpleITK

    scans = []
    for image, label, value in settings.scans:
        labels = read_volume(label).array
        mask = labels > 0 if value is None else labels == value
        source = Path(image).name.split(".")[0] + (f" label {value}" if value else "")
        scans.append((read_volume(image), np.asarray(mask), source))
    return scans


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

    from .models.precision import cpu_matrix_units

    units = cpu_matrix_units()
    description: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_matrix_units": units.describe(),
        f"matmul_{settings.matmul_size}_fp32_gflops": round(matmul_gflops(settings.matmul_size), 1),
    }
    if units.bfloat16:  # elsewhere a bfloat16 product is a scalar fallback: minutes at 4096²
        gflops = matmul_gflops(settings.matmul_size, dtype="bfloat16")
        description[f"matmul_{settings.matmul_size}_bf16_gflops"] = round(gflops, 1)
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
    scans = _read_scans(settings)
    rows: list[Row] = []
    for device_name in settings.devices:
        device = resolve_device(device_name)
        for name in settings.models:
            rows += _measure_model(name, device, settings, volume, scans, echo)
    return {
        "machine": machine,
        "settings": {**asdict(settings), "volume_shape": list(settings.volume_shape)},
        "load_average_1_5_15": {"start": load_start, "end": _load()},
        "results": [asdict(row) for row in rows],
    }


def _measure_model(
    name: str,
    device: Any,
    settings: BenchSettings,
    volume: Any,
    scans: list,
    echo: Callable[[str], None],
) -> list[Row]:
    """The reference row, then each backend × precision; float32 rows before the others, so
    that those can be compared with them."""
    precisions = sorted(
        (p for p in settings.precisions if p != "int8" or device.type == "cpu"),
        key=lambda p: p != "float32",
    )
    configs = [("reference", "float32")] + [
        (b, p) for p in precisions for b in settings.backends if b != "reference"
    ]
    rows: list[Row] = []
    float32: dict[str, tuple[Row, Any]] = {}
    for backend, precision in configs:
        echo(f"measuring {name} {backend} {device} {precision} ...")
        row, model, outputs = measure(name, backend, device, precision, settings, volume)
        if rows:
            row.speedup = _speedups(rows[0], row)
            # A cached click against a click that re-runs the plain encoder.
            row.speedup["click_vs_reference_new_crop"] = rows[0].click_new_crop_s / row.click_s
        if precision == "float32":
            float32[backend] = (row, model)
        elif backend in float32:
            fp32_row, fp32_model = float32[backend]
            row.speedup_vs_float32 = _speedups(fp32_row, row)
            row.encoder_gflops, row.decoder_gflops = (
                fp32_row.encoder_gflops,
                fp32_row.decoder_gflops,
            )
            echo(f"  agreement of {precision} with float32 ...")
            row.agreement = _agreement(model, fp32_model, outputs, settings, scans)
        rows.append(row)
    return rows


def _speedups(reference: Row, row: Row) -> dict[str, float]:
    return {part: getattr(reference, f"{part}_s") / getattr(row, f"{part}_s") for part in PARTS}


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: medians, peak memory, GFLOPs, speed-up against reference."""
    from .evaluation.agreement import Agreement

    header = (
        f"{'model':16s} {'backend':9s} {'device':6s} {'precision':9s} "
        f"{'encoder':>9s} {'decoder':>9s} {'click':>9s} {'new crop':>11s} {'peak MiB':>9s} "
        f"{'GFLOP':>7s} "
        f"{'speed-up enc/dec/click':>23s}"
    )
    lines = [header, "-" * len(header)]
    for row in report["results"]:
        speedup = row["speedup"]
        ratios = "/".join(f"{speedup[p]:.2f}×" for p in PARTS) if speedup else "(reference)"
        lines.append(
            f"{row['model']:16s} {row['backend']:9s} {row['device']:6s} {row['precision']:9s} "
            f"{row['encoder_s'] * 1e3:7.1f}ms {row['decoder_s'] * 1e3:7.1f}ms "
            f"{row['click_s'] * 1e3:7.1f}ms {row['click_new_crop_s'] * 1e3:9.1f}ms "
            f"{row['encoder_peak_mb']:9.0f} "
            f"{row['encoder_gflops']:7.1f} {ratios:>23s} {row['note']}".rstrip()
        )
        if row["speedup_vs_float32"]:
            ratios = "/".join(f"{row['speedup_vs_float32'][p]:.2f}×" for p in PARTS)
            lines.append(
                f"{'':16s} against float32, same backend: {ratios} (encoder/decoder/click)"
            )
        for agreement in row["agreement"]:
            lines.append(f"{'':16s} agreement with float32, {Agreement(**agreement).describe()}")
    machine = report["machine"]
    throughput = ", ".join(
        f"{key.split('_')[2]} matmul {value} GFLOP/s"
        for key, value in machine.items()
        if key.startswith("matmul_")
    )
    load = report["load_average_1_5_15"]
    lines.append(
        f"{machine['cpu']} (matrix units: {machine['cpu_matrix_units']}, torch: "
        f"{machine['cpu_capability']}), {machine['torch_threads']} threads, "
        f"torch {machine['torch']}, {throughput}; load average {load['start']} -> {load['end']}"
    )
    return "\n".join(lines)
