"""A benchmark report as a text table."""

from __future__ import annotations

import statistics
from typing import Any

from .settings import PARTS


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: medians, peak memory, GFLOPs, speed-up against reference."""
    from ..evaluation.agreement import Agreement

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
        samples = row.get("click_samples_s") or []
        if samples:  # the measure is every click, not the median alone
            spread = "/".join(f"{f(samples) * 1e3:.1f}" for f in (min, statistics.median, max))
            lines.append(f"{'':16s} click min/median/max {spread} ms over {len(samples)} clicks")
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
        f"{machine['cpu_capability']}), {machine['torch_threads']} threads, voxel loops "
        f"{machine.get('voxel_loops', 'numpy')}, "
        f"torch {machine['torch']}, {throughput}; load average {load['start']} -> {load['end']}"
    )
    return "\n".join(lines)
