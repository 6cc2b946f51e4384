"""What ``fastsam3d bench`` measures: its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.precision import PRECISIONS

# Every precision but auto: a benchmark row measures one arithmetic, not a choice between them.
BENCH_PRECISIONS = tuple(precision for precision in PRECISIONS if precision != "auto")
PARTS = ("encoder", "decoder", "click")


@dataclass
class BenchSettings:
    """What to measure (the ``fastsam3d bench`` options).

    Attributes:
        models, backends, devices, precisions: every combination is measured (int8 on the CPU
            only), plus the reference backend of each model and device in float32.
        repeats, warmup: timed and untimed runs of each part; medians are reported.
        threads: CPU threads for torch and for the click's paste-back and write (None: the
            defaults, torch's and the cores this process may use, at most 4).
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
