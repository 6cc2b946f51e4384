"""Every configuration of a benchmark measured, next to the reference path: the report."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .machine import load_average, machine_description
from .measures import count_gflops, median_seconds, peak_memory_mb, synchronise
from .settings import PARTS, BenchSettings
from .table import format_table


def ct_sized_volume(shape: tuple[int, int, int], seed: int = 0) -> Any:
    """A synthetic CT-like volume: int16 noise, 0.7×0.7×1.0 mm voxels, LPS-like axes."""
    import numpy as np

    from ..geometry import Volume

    rng = np.random.default_rng(seed)
    array = rng.normal(40, 200, shape).astype(np.int16)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    affine[:3, 3] = (0.35 * shape[0], 0.35 * shape[1], -0.5 * shape[2])
    return Volume(array, affine)


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

    from ..models import build_model

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

    from ..session import ModelPredictor, Session

    predictor = ModelPredictor(model)
    centre = np.array(volume.shape, dtype=float) / 2
    new_crop = []
    # Warm-up sessions first: the first one pays one-time costs (torch.compile's compilation
    # for the session's shapes: 15 s on a CPU, against 0.6 s for the click itself).
    for _ in range(settings.warmup + settings.new_crop_clicks):
        session = Session(volume, predictor)
        start = time.perf_counter()
        session.add_point_ijk(centre)
        synchronise(device)
        new_crop.append(time.perf_counter() - start)
    row.click_new_crop_s = statistics.median(new_crop[settings.warmup :])
    samples = []
    for index in range(settings.warmup + max(settings.clicks, settings.repeats)):
        offset = np.array([index % 5 - 2, (index * 3) % 7 - 3, index % 3 - 1], dtype=float)
        start = time.perf_counter()
        result = session.add_point_ijk(centre + offset, positive=index % 3 != 1)
        synchronise(device)
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
    from ..evaluation.agreement import crop_agreement

    results = [crop_agreement(fp32_model, model, outputs["image"], [outputs["prompt"]], "bench")]
    if settings.golden_dir:
        results += _seeded_agreement(model, settings.golden_dir, scans)
    return [asdict(result) for result in results]


def _seeded_agreement(model: Any, golden_dir: str, scans: list) -> list:
    """Agreement with the golden references' seeded weights: their scenarios, then the scans."""
    from ..evaluation.agreement import golden_agreement, reduced_copy, scan_agreement
    from ..golden import GoldenReference

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

    from ..io import read_volume  # only here: the GPU machines have no SimpleITK

    scans = []
    for image, label, value in settings.scans:
        labels = read_volume(label).array
        mask = labels > 0 if value is None else labels == value
        source = Path(image).name.split(".")[0] + (f" label {value}" if value else "")
        scans.append((read_volume(image), np.asarray(mask), source))
    return scans


# -- the suite -------------------------------------------------------------------------------


def run_benchmark(
    settings: BenchSettings,
    json_path: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """What ``fastsam3d bench`` does: measure (:func:`run_suite`), show the report's table
    through ``echo``, and write the report as JSON to ``json_path`` when given; returns it.

    Raises:
        ValueError, OSError: ``json_path`` cannot be written, or would replace an input; checked
            before the minutes of measuring.
    """
    from ..io._atomic import check_output_path, write_atomically

    say = echo or _quiet
    if json_path is not None:
        golden_files = list(Path(settings.golden_dir).iterdir()) if settings.golden_dir else []
        scan_files = [path for image, label, _ in settings.scans for path in (image, label)]
        check_output_path(json_path, inputs=[*golden_files, *scan_files])
    report = run_suite(settings, say)
    say(format_table(report))
    if json_path is not None:
        text = json.dumps(report, indent=2)
        write_atomically(json_path, ".json", lambda temporary: temporary.write_text(text))
        say(f"wrote {json_path}")
    return report


def run_suite(settings: BenchSettings, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every configuration and the reference path; returns the JSON-ready report.
    ``echo`` is told which configuration is being measured."""
    import torch

    from ..geometry.slabs import set_thread_count
    from ..models.build import resolve_device

    if settings.threads:
        torch.set_num_threads(settings.threads)
        set_thread_count(settings.threads)  # the click's paste-back and write, too
    load_start = load_average()
    machine = machine_description(settings)
    volume = ct_sized_volume(settings.volume_shape)
    scans = _read_scans(settings)
    rows: list[Row] = []
    for device_name in settings.devices:
        device = resolve_device(device_name)
        for name in settings.models:
            rows += _measure_model(name, device, settings, volume, scans, echo or _quiet)
    return {
        "machine": machine,
        "settings": {**asdict(settings), "volume_shape": list(settings.volume_shape)},
        "load_average_1_5_15": {"start": load_start, "end": load_average()},
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


def _quiet(message: str) -> None:
    pass
