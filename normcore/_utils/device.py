"""Compute device selection: CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch

from normcore._utils.errors import InputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available; use the device 'cpu' or 'auto'")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """Human-readable name of a device (GPU model or CPU thread count)."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype safe for the denoisers on this device (bf16 on recent GPUs, else none)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
