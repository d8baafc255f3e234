"""What this machine is, as cost numbers and precision choices depend on it: the CPU, the GPU, `precision=auto`,
the torch threads a step uses.
Imports torch only where a GPU must be asked about, never transformers: `main` computes evaluate's reuse key
from these, and importing the training stack there cost ~10 s before the first evaluate child."""
from __future__ import annotations

import os
import re
from pathlib import Path

from agnews.errors import PipelineError


def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run in hardware; elsewhere they are emulated and slower than fp32."""
    flags = _cpuinfo() or ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_description() -> str:
    """What the cost numbers were measured on: the CPU model and whether it runs bf16 natively."""
    info = _cpuinfo()
    if info is None:
        return "unknown"
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx2") if f" {f}" in info]
    return f"{name.group(1).strip() if name else 'unknown'}; {os.cpu_count()} cpus; {' '.join(flags) or 'no avx2'}"


def gpu_description() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def configure_threads() -> int:
    """One torch thread per core per process: more oversubscribes (1.2x slower at 4 threads on 2 cores)."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizing 1000 rows takes 0.2 s; avoid fork warnings
    if "OMP_NUM_THREADS" not in os.environ:  # torchrun and users who set it know better
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    return torch.get_num_threads()


def resolve_precision(precision: str) -> str:
    """`auto`: bf16 on a GPU that supports it or a CPU that runs it natively, else fp32."""
    if precision not in PRECISIONS:
        raise PipelineError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


PRECISIONS = ("auto", "fp32", "bf16")  # here, not in hardware.py or training.py: parsing imports no torch


def precision(value: str) -> str:
    if value not in PRECISIONS:
        raise PipelineError(f"-P precision={value!r} is unknown; use one of {', '.join(PRECISIONS)}")
    return value
