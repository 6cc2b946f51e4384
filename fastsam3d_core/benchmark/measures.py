"""How one call is measured: median wall time, peak memory, FLOPs; and the machine's yardstick."""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable


def synchronise(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    call: Callable[[], object], repeats: int, warmup: int, device: Any
) -> tuple[float, list[float]]:
    """Median wall time of ``call`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        call()
    synchronise(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronise(device)
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
        synchronise(device)
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
