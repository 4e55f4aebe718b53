"""Which floating-point precision to train in, and what decides it: the CPU's instruction sets
(read from ``/proc/cpuinfo``) and whether the device computes bf16 natively."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

#: ``TrainConfig.precision``'s choices.
PRECISIONS = ("auto", "bf16", "fp32")


#: The CPU flags ``cpu_info`` reports: what decides float32 and bf16 speed.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_info() -> dict:
    """``{"cpu": model name, "cpu_flags": {flag: bool for flag in ISA_FLAGS}}``.

    Read from ``/proc/cpuinfo`` (the first CPU); where there is none (not Linux) the name is
    ``platform.processor()`` and every flag is ``False``.
    """
    name, flags = "", None
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    flags = flags or set()
    return {
        "cpu": name or platform.processor() or platform.machine(),
        "cpu_flags": {flag: flag in flags for flag in ISA_FLAGS},
    }


def bf16_available(device) -> bool:
    """Whether ``device`` computes bf16 natively (so autocast to bf16 pays).

    CPU: oneDNN with bf16 support and an ``avx512_bf16`` or ``amx_bf16`` CPU flag (oneDNN
    emulates bf16 on plain AVX-512, which is slower than float32). CUDA: ``is_bf16_supported``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    flags = cpu_info()["cpu_flags"]
    return supported and (flags["avx512_bf16"] or flags["amx_bf16"])


def check_precision(precision) -> None:
    """Raise ``ValueError`` unless ``precision`` is one of ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def resolve_precision(precision: str, device) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (one of ``PRECISIONS``) means on ``device``."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if bf16_available(device) else "fp32"
    return precision


def precision_context(precision: str, device):
    """``torch.autocast`` to bf16 for ``"bf16"``, a no-op context for ``"fp32"``."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
