"""What a benchmark ran on: the CPU, its matrix units and throughput, torch, the load."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from .measures import matmul_gflops
from .settings import BenchSettings


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

    from ..geometry.voxel_kernels import compiled_loops
    from ..models.precision import cpu_matrix_units

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
        # The click's paste-back loops: compiled (setup.py) or NumPy's, 2-3x slower on a large CT.
        "voxel_loops": compiled_loops() or "numpy",
        f"matmul_{settings.matmul_size}_fp32_gflops": round(matmul_gflops(settings.matmul_size), 1),
    }
    # Elsewhere a bfloat16 product is a scalar fallback: minutes at 4096². That includes a CPU
    # with the units whose torch is held to AVX2 (ATEN_CPU_CAPABILITY=avx2, the AVX2 path).
    if units.bfloat16 and "AVX512" in description["cpu_capability"]:
        gflops = matmul_gflops(settings.matmul_size, dtype="bfloat16")
        description[f"matmul_{settings.matmul_size}_bf16_gflops"] = round(gflops, 1)
    if torch.cuda.is_available():
        description["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return description


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
